/* corpus_encode.h - encoding a corpus's documents in parallel, in order, in bounded memory.
 *
 * The segments (whole documents, or pieces of them where a contiguous split cuts one) are taken
 * in batches of at most CORPUS_ENCODE_BATCH_BYTES of text; the documents of a batch are read
 * and encoded by OpenMP threads (dynamic schedule: one segment each), then handed to the sink
 * in segment order. Memory is one batch of text and ids per call, whatever the corpus size;
 * the ids are those of encoding each segment alone, so any thread count gives the same ids. */
#ifndef UPCYCLE_CORPUS_ENCODE_H
#define UPCYCLE_CORPUS_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "data/corpus.h"
#include "data/tokenizer.h"

#define CORPUS_ENCODE_BATCH_BYTES ((size_t)32 << 20)

/* bytes [offset, offset + n_bytes) of document doc; eod_after: the document ends here */
typedef struct {
    size_t doc;
    uint64_t offset, n_bytes;
    int eod_after;
} Segment;

/* receives a segment's ids (and separately the end-of-document ids after it); non-zero stops */
typedef int (*IdSink)(void *ctx, const uint32_t *ids, size_t n_ids);

/* n_threads <= 0: OpenMP's default (OMP_NUM_THREADS). eod (n_eod ids) follows every segment
 * with eod_after. An encoding error names the document (corpus_doc_name). */
int corpus_encode(const Corpus *c, const Tokenizer *tok, const Segment *segs, size_t n_segs, const uint32_t *eod, size_t n_eod,
                  int n_threads, IdSink sink, void *ctx);

#endif
