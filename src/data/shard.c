/* shard.c - token shard files (atomic write, mmap'd validated read) and the window loader. */
#include "data/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* ---- little-endian fields: explicit, so shards move between machines ---- */

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

/* ---- writing ---- */

static int shard_width(int vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

/* Streams the tokens through a small buffer in the file's width. */
static int write_tokens(FILE *f, const uint32_t *tokens, size_t n_tokens, int width) {
    unsigned char buffer[1 << 16];
    size_t per_buffer = sizeof buffer / (size_t)width;
    for (size_t begin = 0; begin < n_tokens; begin += per_buffer) {
        size_t count = n_tokens - begin < per_buffer ? n_tokens - begin : per_buffer;
        for (size_t i = 0; i < count; i++) {
            uint32_t t = tokens[begin + i];
            for (int b = 0; b < width; b++) buffer[i * (size_t)width + (size_t)b] = (unsigned char)(t >> (8 * b));
        }
        if (fwrite(buffer, (size_t)width, count, f) != count) return -1;
    }
    return 0;
}

int shard_writer_open(ShardWriter *w, const char *path, int vocab_size) {
    memset(w, 0, sizeof *w);
    if (vocab_size <= 0) return up_error("%s: vocab size %d; expected a vocab size > 0", path, vocab_size);
    w->width = shard_width(vocab_size);
    w->vocab_size = vocab_size;
    unsigned char header[SHARD_HEADER_BYTES] = {0};
    memcpy(header, SHARD_MAGIC, sizeof SHARD_MAGIC); /* 7 letters and the NUL: 8 bytes */
    put_u32(header + 8, SHARD_VERSION);
    put_u32(header + 12, (uint32_t)w->width);
    put_u32(header + 24, (uint32_t)vocab_size); /* the count (offset 16) is written by commit */
    if (atomic_open(&w->af, path)) return -1;
    if (fwrite(header, 1, sizeof header, w->af.f) != sizeof header) {
        int e = errno;
        shard_writer_abort(w);
        return up_error("%s: write failed (%s); expected enough disk space", path, strerror(e));
    }
    w->open = 1;
    return 0;
}

int shard_writer_append(ShardWriter *w, const uint32_t *tokens, size_t n_tokens) {
    const char *path = w->af.path;
    for (size_t i = 0; i < n_tokens; i++)
        if (tokens[i] >= (uint32_t)w->vocab_size) {
            up_error("%s: token %u at index %llu is not below the vocab size %d; expected every token < %d", path, tokens[i],
                     (unsigned long long)(w->n_tokens + i), w->vocab_size, w->vocab_size);
            shard_writer_abort(w);
            return -1;
        }
    if (write_tokens(w->af.f, tokens, n_tokens, w->width)) {
        int e = errno;
        up_error("%s: write failed (%s); expected enough disk space", path, strerror(e));
        shard_writer_abort(w);
        return -1;
    }
    w->n_tokens += n_tokens;
    return 0;
}

int shard_writer_commit(ShardWriter *w) {
    unsigned char count[8];
    put_u64(count, w->n_tokens);
    if (fseek(w->af.f, 16, SEEK_SET) != 0 || fwrite(count, 1, sizeof count, w->af.f) != sizeof count) {
        int e = errno;
        up_error("%s: write failed (%s); expected enough disk space", w->af.path, strerror(e));
        shard_writer_abort(w);
        return -1;
    }
    w->open = 0;
    return atomic_commit(&w->af);
}

void shard_writer_abort(ShardWriter *w) {
    if (w->open || w->af.f) atomic_abort(&w->af);
    w->open = 0;
}

int shard_write(const char *path, const uint32_t *tokens, size_t n_tokens, int vocab_size) {
    ShardWriter w;
    if (shard_writer_open(&w, path, vocab_size) || shard_writer_append(&w, tokens, n_tokens)) return -1;
    return shard_writer_commit(&w);
}

/* ---- reading ---- */

uint32_t shard_token(const Shard *s, uint64_t i) {
    const unsigned char *p = s->tokens + i * (uint64_t)s->bytes_per_token;
    return s->bytes_per_token == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : get_u32(p);
}

static int check_header(Shard *s) {
    const unsigned char *h = s->map;
    size_t file_bytes = s->map_bytes;
    if (memcmp(h, SHARD_MAGIC, sizeof SHARD_MAGIC) != 0)
        return up_error("%s: bad magic; expected \"UPCYTOK\" (a shard written by `upcycle tokenize`)", s->path);
    uint32_t version = get_u32(h + 8), width = get_u32(h + 12), vocab_size = get_u32(h + 24);
    uint64_t n_tokens = get_u64(h + 16);
    if (version != SHARD_VERSION)
        return up_error("%s: shard version %u; expected version %d", s->path, version, SHARD_VERSION);
    if (width != 2 && width != 4) return up_error("%s: %u bytes per token; expected 2 or 4", s->path, width);
    uint64_t payload = file_bytes - SHARD_HEADER_BYTES;
    if (n_tokens > (UINT64_MAX - SHARD_HEADER_BYTES) / width)
        return up_error("%s: file is %zu bytes but header says %llu tokens of %u bytes; expected a token count "
                        "that fits the file",
                        s->path, file_bytes, (unsigned long long)n_tokens, width);
    if (n_tokens * width != payload)
        return up_error("%s: file is %zu bytes but header says %llu tokens of %u bytes; expected %llu bytes", s->path,
                        file_bytes, (unsigned long long)n_tokens, width,
                        (unsigned long long)(SHARD_HEADER_BYTES + n_tokens * width));
    if (vocab_size == 0 || vocab_size > INT32_MAX)
        return up_error("%s: vocab size %u in header; expected 1..%d", s->path, vocab_size, INT32_MAX);
    s->n_tokens = n_tokens;
    s->bytes_per_token = (int)width;
    s->vocab_size = (int)vocab_size;
    s->tokens = h + SHARD_HEADER_BYTES;
    return 0;
}

/* A bad token would index past the embedding table far from here; catch it at open. */
static int check_tokens(const Shard *s) {
    if (s->bytes_per_token == 2 && s->vocab_size >= 65536) return 0; /* every uint16 fits */
    for (uint64_t i = 0; i < s->n_tokens; i++) {
        uint32_t t = shard_token(s, i);
        if (t >= (uint32_t)s->vocab_size)
            return up_error("%s: token %u at index %llu is not below the vocab size %d; expected every token < %d",
                            s->path, t, (unsigned long long)i, s->vocab_size, s->vocab_size);
    }
    return 0;
}

int shard_open(Shard *s, const char *path) {
    memset(s, 0, sizeof *s);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return up_error("%s: cannot open (%s); expected a shard written by `upcycle tokenize`", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return up_error("%s: not a regular file; expected a shard written by `upcycle tokenize`", path);
    }
    size_t file_bytes = (size_t)st.st_size;
    if (file_bytes < SHARD_HEADER_BYTES) {
        close(fd);
        return up_error("%s: file is %zu bytes; expected at least the %d-byte shard header", path, file_bytes,
                        SHARD_HEADER_BYTES);
    }
    void *map = mmap(NULL, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) return up_error("%s: cannot mmap (%s); expected a readable file", path, strerror(e));
    s->map = map;
    s->map_bytes = file_bytes;
    s->path = xstrdup(path);
    if (check_header(s) || check_tokens(s)) {
        shard_close(s);
        return -1;
    }
    return 0;
}

void shard_close(Shard *s) {
    if (s->map) munmap(s->map, s->map_bytes);
    free(s->path);
    memset(s, 0, sizeof *s);
}

/* ---- loader ---- */

/* A seed per (seed, epoch) pair; the mix keeps nearby seeds and epochs unrelated. */
static uint64_t epoch_seed(uint64_t seed, uint64_t epoch) {
    uint64_t x = seed ^ (epoch + 0x9e3779b97f4a7c15ULL) * 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 31;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 29);
}

/* Fills ld->order for ld->epoch: identity, or a Fisher-Yates shuffle of it. */
static void build_order(Loader *ld) {
    for (uint64_t i = 0; i < ld->n_windows; i++) ld->order[i] = i;
    if (!ld->shuffle) return;
    Rng rng;
    rng_seed(&rng, epoch_seed(ld->seed, ld->epoch));
    for (uint64_t i = ld->n_windows; i > 1; i--) {
        uint64_t j = rng_below(&rng, i);
        uint64_t t = ld->order[i - 1];
        ld->order[i - 1] = ld->order[j];
        ld->order[j] = t;
    }
}

int loader_open(Loader *ld, const char *data_dir, const char *split, int batch_size, int seq_len, uint64_t seed,
                int shuffle) {
    memset(ld, 0, sizeof *ld);
    if (batch_size <= 0 || seq_len <= 0)
        return up_error("loader: batch_size %d, seq_len %d; expected both > 0", batch_size, seq_len);
    size_t name_bytes = strlen(split) + 5;
    char *name = xmalloc(name_bytes);
    snprintf(name, name_bytes, "%s.bin", split);
    char *path = path_join(data_dir, name);
    free(name);
    int rc = shard_open(&ld->shard, path);
    if (!rc && ld->shard.n_tokens < (uint64_t)seq_len + 1)
        rc = up_error("%s: holds %llu tokens; expected at least seq_len + 1 = %d (more data or a shorter seq_len)",
                      path, (unsigned long long)ld->shard.n_tokens, seq_len + 1);
    free(path);
    if (rc) {
        shard_close(&ld->shard);
        return -1;
    }
    ld->batch_size = batch_size;
    ld->seq_len = seq_len;
    ld->shuffle = shuffle;
    ld->seed = seed;
    ld->n_windows = (ld->shard.n_tokens - 1) / (uint64_t)seq_len;
    ld->order = xmalloc(ld->n_windows * sizeof *ld->order);
    build_order(ld);
    return 0;
}

static void copy_window(const Shard *s, uint64_t first, int n, int32_t *out) {
    if (s->bytes_per_token == 2) {
        const unsigned char *p = s->tokens + first * 2;
        for (int i = 0; i < n; i++) out[i] = (int32_t)((uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8);
    } else {
        for (int i = 0; i < n; i++) out[i] = (int32_t)shard_token(s, first + (uint64_t)i);
    }
}

void loader_next(Loader *ld, int32_t *tokens) {
    int row = ld->seq_len + 1;
    for (int b = 0; b < ld->batch_size; b++) {
        uint64_t window = ld->order[ld->cursor];
        copy_window(&ld->shard, window * (uint64_t)ld->seq_len, row, tokens + (size_t)b * (size_t)row);
        /* advance now, so the saved position never has cursor == n_windows */
        if (++ld->cursor == ld->n_windows) {
            ld->epoch++;
            ld->cursor = 0;
            build_order(ld);
        }
    }
}

void loader_copy_window(const Loader *ld, uint64_t window, int32_t *tokens) {
    copy_window(&ld->shard, window * (uint64_t)ld->seq_len, ld->seq_len + 1, tokens);
}

void loader_set_position(Loader *ld, uint64_t epoch, uint64_t cursor) {
    ld->epoch = epoch + cursor / ld->n_windows;
    ld->cursor = cursor % ld->n_windows;
    build_order(ld);
}

void loader_reset(Loader *ld) { loader_set_position(ld, 0, 0); }

void loader_close(Loader *ld) {
    shard_close(&ld->shard);
    free(ld->order);
    memset(ld, 0, sizeof *ld);
}

int loader_check_vocab(const Loader *ld, int model_vocab) {
    if (ld->shard.vocab_size <= model_vocab) return 0;
    return up_error("%s: vocabulary %d is larger than the model's vocab_size %d; expected data tokenized with the model's tokenizer",
                    ld->shard.path, ld->shard.vocab_size, model_vocab);
}
