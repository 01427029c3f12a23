/* corpus.h - the documents a data directory is made from, their split, and reading them back.
 *
 * Inputs are files, directories (every regular file a document, recursively, in sorted byte
 * order of the path; a *.jsonl file among them is read as JSONL), or JSONL files (*.jsonl: one
 * JSON object per line, the document in a string field). A separator cuts a text file into
 * several documents. Empty documents are dropped.
 *
 * The corpus is an index, not a copy: each document is a (file, offset, length) reference
 * (for JSONL: the line), read again when it is encoded (corpus_text). Indexing streams every
 * file in 1 MiB pieces, so memory is the index (about 40 bytes a document), not the text;
 * a corpus larger than RAM is fine. A file that changes between indexing and reading is an
 * error naming it.
 *
 * Splits: by document (each whole document goes to pretrain, cpt or val by a seeded shuffle)
 * or contiguous (the documents joined in input order, cut at byte fractions: for time-ordered
 * text, and the only choice for a single document). */
#ifndef UPCYCLE_CORPUS_H
#define UPCYCLE_CORPUS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t source;   /* index into Corpus.sources */
    uint32_t is_jsonl; /* the span is a JSONL line; the text is its field */
    uint64_t offset;   /* of the span in the source file */
    uint64_t span;     /* bytes of the span */
    uint64_t n_bytes;  /* bytes of the document's text */
} Document;

typedef struct {
    Document *docs;
    size_t n_docs, capacity;
    size_t n_bytes; /* sum over documents */
    char **sources; /* file paths */
    size_t n_sources, sources_capacity;
    char *jsonl_field;
} Corpus;

typedef struct {
    const char *jsonl_field; /* field of a JSONL record holding the text (default "text") */
    const char *doc_sep;     /* cuts text files into documents at every occurrence (NULL: none) */
} CorpusOptions;

/* Appends the documents of a file, a directory or a JSONL file. Errors name the file (and for
 * JSONL the line and field). */
int corpus_add_path(Corpus *c, const char *path, const CorpusOptions *opt);
void corpus_free(Corpus *c);

/* A reader of document texts: one per thread. It keeps the last file open and a buffer that
 * grows to the largest document read. */
typedef struct {
    int fd;
    uint32_t source;
    char *buffer;
    size_t capacity;
} CorpusReader;

void corpus_reader_init(CorpusReader *r);
void corpus_reader_free(CorpusReader *r);
/* Document d's text (doc.n_bytes bytes, NUL-terminated) in *text, valid until the next call.
 * Errors name the file and what changed. */
int corpus_text(const Corpus *c, size_t d, CorpusReader *r, const char **text);
/* "PATH" or "PATH at byte OFFSET" (a document of a JSONL or separated file): for messages */
void corpus_doc_name(const Corpus *c, size_t d, char *out, size_t cap);

/* Document split: a Fisher-Yates shuffle of the document indices seeded by `seed`, then the
 * documents in that order go to pretrain while the bytes before a document's middle are below
 * fractions[0] of the total, then to cpt below fractions[0] + fractions[1], then to val. With
 * at least 3 documents no split is left empty (the last document of the order that can be spared
 * moves to an empty val, then cpt, then pretrain). order (n) receives the shuffled indices, split (n) each document's split
 * (0 pretrain, 1 cpt, 2 val). Pure: the same sizes, fractions and seed give the same split. */
void corpus_split_documents(const Corpus *c, const double fractions[3], uint64_t seed, size_t *order, int *split);

#endif
