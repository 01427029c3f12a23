/* corpus_encode.c - a corpus's segments encoded by OpenMP threads in batches, emitted in order. */
#include "data/corpus_encode.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct {
    uint32_t *ids;
    size_t n_ids;
    int rc;
    char error[512];
} Encoded;

static void encode_one(const Corpus *c, const Tokenizer *tok, const Segment *seg, CorpusReader *r, Encoded *e) {
    const char *text;
    e->ids = NULL, e->n_ids = 0;
    e->rc = corpus_text(c, seg->doc, r, &text);
    if (!e->rc)
        e->rc = tokenizer_encode(tok, (const unsigned char *)text + seg->offset, (size_t)seg->n_bytes, &e->ids, &e->n_ids);
    if (e->rc) {
        char name[400];
        corpus_doc_name(c, seg->doc, name, sizeof name);
        snprintf(e->error, sizeof e->error, "%s: %s", name, up_last_error());
    }
}

int corpus_encode(const Corpus *c, const Tokenizer *tok, const Segment *segs, size_t n_segs, const uint32_t *eod, size_t n_eod,
                  int n_threads, IdSink sink, void *ctx) {
    if (n_threads <= 0) n_threads = omp_get_max_threads();
    CorpusReader *readers = xmalloc((size_t)n_threads * sizeof *readers);
    for (int t = 0; t < n_threads; t++) corpus_reader_init(&readers[t]);
    Encoded *batch = NULL;
    size_t batch_cap = 0;
    int rc = 0;
    for (size_t begin = 0; begin < n_segs && !rc;) {
        size_t end = begin, bytes = 0;
        while (end < n_segs && (end == begin || bytes + segs[end].n_bytes <= CORPUS_ENCODE_BATCH_BYTES)) bytes += segs[end++].n_bytes;
        size_t n = end - begin;
        if (n > batch_cap) batch = xrealloc(batch, (batch_cap = n) * sizeof *batch);
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
        for (size_t i = 0; i < n; i++) encode_one(c, tok, &segs[begin + i], &readers[omp_get_thread_num()], &batch[i]);
        for (size_t i = 0; i < n; i++) {
            if (!rc && batch[i].rc) rc = up_error("%s", batch[i].error);
            if (!rc) rc = sink(ctx, batch[i].ids, batch[i].n_ids);
            if (!rc && segs[begin + i].eod_after && n_eod) rc = sink(ctx, eod, n_eod);
            free(batch[i].ids);
        }
        begin = end;
    }
    for (int t = 0; t < n_threads; t++) corpus_reader_free(&readers[t]);
    free(readers), free(batch);
    return rc;
}
