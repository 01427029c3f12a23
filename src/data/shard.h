/* shard.h - token shards and the training data loader.
 *
 * Shard file (little-endian):
 *   offset 0  char[8]  magic "UPCYTOK\0"
 *          8  uint32   version (1)
 *         12  uint32   bytes per token (2 or 4)
 *         16  uint64   token count
 *         24  uint32   vocab size (every token is < vocab size)
 *         28  uint32   reserved (0)
 *         32  tokens
 * A data directory holds pretrain.bin, cpt.bin, val.bin (disjoint contiguous parts of the
 * corpus), tokenizer.json for BPE, and meta.json describing the split. */
#ifndef UPCYCLE_SHARD_H
#define UPCYCLE_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define SHARD_MAGIC "UPCYTOK"
#define SHARD_VERSION 1
#define SHARD_HEADER_BYTES 32

typedef struct {
    char *path;
    uint64_t n_tokens;
    int bytes_per_token;
    int vocab_size;
    void *map;
    size_t map_bytes;
    const unsigned char *tokens; /* points into map */
} Shard;

/* Writes atomically; uses uint16 when vocab_size <= 65536, else uint32. */
int shard_write(const char *path, const uint32_t *tokens, size_t n_tokens, int vocab_size);
/* The same, streamed: open, append any number of times, commit (or abort). A failed call
 * aborts the writer (no file left behind); errors name the file, and a token >= vocab_size
 * its index. */
typedef struct {
    AtomicFile af;
    int width, vocab_size, open;
    uint64_t n_tokens;
} ShardWriter;
int shard_writer_open(ShardWriter *w, const char *path, int vocab_size);
int shard_writer_append(ShardWriter *w, const uint32_t *tokens, size_t n_tokens);
int shard_writer_commit(ShardWriter *w);
void shard_writer_abort(ShardWriter *w);
/* mmaps and validates: magic, version, width, token count against file size, a vocab size,
 * and every token < vocab size. Errors name the file and what was expected. */
int shard_open(Shard *s, const char *path);
uint32_t shard_token(const Shard *s, uint64_t i);
void shard_close(Shard *s);

/* Loader: the shard is cut into windows of T+1 tokens starting at multiples of T
 * (n_windows = (n_tokens - 1) / T). With shuffle, each epoch visits the windows in a
 * permutation drawn from (seed, epoch); without, in order. A batch is B consecutive
 * entries of that order. The position (epoch, cursor) is all the state a resumed run needs. */
typedef struct {
    Shard shard;
    int batch_size, seq_len, shuffle;
    uint64_t seed;
    uint64_t n_windows;
    uint64_t epoch, cursor; /* next window is order(epoch)[cursor] */
    uint64_t *order;        /* permutation for the current epoch */
} Loader;

/* split: "pretrain", "cpt" or "val"; opens DATA_DIR/<split>.bin. Fails if the shard holds
 * fewer than T+1 tokens. */
int loader_open(Loader *ld, const char *data_dir, const char *split, int batch_size, int seq_len,
                uint64_t seed, int shuffle);
/* 0 when the shard's tokens are ids of a model with model_vocab ids (its vocab size <=
 * model_vocab), else an error naming the shard file and both sizes */
int loader_check_vocab(const Loader *ld, int model_vocab);
/* tokens: (B, T+1) int32, row b = window tokens; inputs are [:, :T], targets [:, 1:]. */
void loader_next(Loader *ld, int32_t *tokens);
/* tokens (T+1): window `window` (< n_windows) of the shard, in shard order; no state change */
void loader_copy_window(const Loader *ld, uint64_t window, int32_t *tokens);
void loader_set_position(Loader *ld, uint64_t epoch, uint64_t cursor);
void loader_reset(Loader *ld); /* epoch 0, cursor 0 */
void loader_close(Loader *ld);

#endif
