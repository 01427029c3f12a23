/* corpus.h - the documents a data directory is made from, and their split.
 *
 * Inputs are files, directories (every regular file a document, recursively, in sorted byte
 * order of the path; a *.jsonl file among them is read as JSONL), or JSONL files (*.jsonl: one
 * JSON object per line, the document in a string field). A separator cuts a text file into several documents. Empty documents are
 * dropped.
 *
 * Splits: by document (each whole document goes to pretrain, cpt or val by a seeded shuffle)
 * or contiguous (the documents joined in input order, cut at byte fractions: for time-ordered
 * text, and the only choice for a single document). */
#ifndef UPCYCLE_CORPUS_H
#define UPCYCLE_CORPUS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *text;     /* malloc'd, NUL-terminated */
    size_t n_bytes;
} Document;

typedef struct {
    Document *docs;
    size_t n_docs, capacity;
    size_t n_bytes;    /* sum over documents */
} Corpus;

typedef struct {
    const char *jsonl_field; /* field of a JSONL record holding the text (default "text") */
    const char *doc_sep;     /* cuts text files into documents at every occurrence (NULL: none) */
} CorpusOptions;

/* Appends the documents of a file, a directory or a JSONL file. Errors name the file (and for
 * JSONL the line and field). */
int corpus_add_path(Corpus *c, const char *path, const CorpusOptions *opt);
void corpus_free(Corpus *c);

/* Document split: a Fisher-Yates shuffle of the document indices seeded by `seed`, then the
 * documents in that order go to pretrain while the bytes before a document's middle are below
 * fractions[0] of the total, then to cpt below fractions[0] + fractions[1], then to val. With
 * at least 3 documents no split is left empty (the last document of the order that can be spared
 * moves to an empty val, then cpt, then pretrain). order (n) receives the shuffled indices, split (n) each document's split
 * (0 pretrain, 1 cpt, 2 val). Pure: the same sizes, fractions and seed give the same split. */
void corpus_split_documents(const Corpus *c, const double fractions[3], uint64_t seed, size_t *order, int *split);

#endif
