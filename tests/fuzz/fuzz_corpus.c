/* fuzz_corpus.c - libFuzzer harness for the corpus index (src/data/corpus.c): the input as a
 * .jsonl file and as a text file cut by a separator. JSONL either is refused with an error or
 * gives documents that read back with the indexed length; the separated file gives exactly the
 * non-empty pieces of a memmem split of the whole input, whatever the 1 MiB read boundaries. */
#include <string.h>

#include "data/corpus.h"
#include "fuzz_common.h"

static const char SEP[] = "<s>\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[128];
    fuzz_path(path, sizeof path, "corpus", ".jsonl");
    fuzz_write_file(path, data, size);
    Corpus c = {0};
    CorpusReader r;
    corpus_reader_init(&r);
    if (corpus_add_path(&c, path, &(CorpusOptions){0}) == 0) {
        for (size_t d = 0; d < c.n_docs; d++) {
            const char *text;
            if (corpus_text(&c, d, &r, &text) != 0 || strlen(text) != c.docs[d].n_bytes || c.docs[d].n_bytes == 0) abort();
        }
    }
    corpus_free(&c);
    unlink(path);

    fuzz_path(path, sizeof path, "corpus", ".txt");
    fuzz_write_file(path, data, size);
    if (corpus_add_path(&c, path, &(CorpusOptions){.doc_sep = SEP}) != 0) abort(); /* any bytes are text */
    size_t k = sizeof SEP - 1, expect = 0;
    const char *at = (const char *)data, *end = at + size;
    for (;;) {
        const char *hit = size ? memmem(at, (size_t)(end - at), SEP, k) : NULL;
        size_t len = (size_t)((hit ? hit : end) - at);
        if (len) {
            const char *text;
            if (expect >= c.n_docs || c.docs[expect].n_bytes != len || corpus_text(&c, expect, &r, &text) != 0 || memcmp(text, at, len))
                abort();
            expect++;
        }
        if (!hit) break;
        at = hit + k;
    }
    if (expect != c.n_docs) abort();
    corpus_reader_free(&r);
    corpus_free(&c);
    unlink(path);
    return 0;
}
