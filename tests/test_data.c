/* test_data.c - tokenizers (byte, BPE, tokenizer.json) and shards (files, validation, loader). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/corpus.h"
#include "data/corpus_encode.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "test.h"
#include "util.h"

#define SHAKESPEARE "data/tinyshakespeare.txt"

/* ---- helpers ---- */

static char *tmp_path(const char *name) { return path_join(test_tmpdir(), name); }

static int error_mentions(const char *text) { return strstr(up_last_error(), text) != NULL; }

/* Encodes then decodes; returns 1 when the bytes come back unchanged. */
static int round_trips(const Tokenizer *tok, const unsigned char *text, size_t n_bytes) {
    uint32_t *ids = NULL;
    size_t n_ids = 0, n_out = 0;
    char *out = NULL;
    if (tokenizer_encode(tok, text, n_bytes, &ids, &n_ids)) return 0;
    int ok = tokenizer_decode(tok, ids, n_ids, &out, &n_out) == 0 && n_out == n_bytes &&
             memcmp(out, text, n_bytes) == 0 && out[n_out] == 0;
    free(ids);
    free(out);
    return ok;
}

static unsigned char *random_bytes(size_t n, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    unsigned char *bytes = xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) bytes[i] = (unsigned char)rng_next(&rng);
    return bytes;
}

static char *shakespeare(size_t *n_bytes) {
    char *text = NULL;
    if (read_file(SHAKESPEARE, &text, n_bytes)) return NULL;
    return text;
}

/* The first `limit` bytes of Shakespeare trained to vocab_size; NULL (and a failed check) on error. */
static Tokenizer *train_shakespeare(size_t limit, int vocab_size) {
    size_t n_bytes;
    char *text = shakespeare(&n_bytes);
    CHECK_MSG(text, "%s", up_last_error());
    if (!text) return NULL;
    Tokenizer *tok = NULL;
    int rc = tokenizer_train_bpe(&tok, (unsigned char *)text, n_bytes < limit ? n_bytes : limit, vocab_size, 0);
    CHECK_MSG(rc == 0, "%s", up_last_error());
    free(text);
    return tok;
}

static int same_encoding(const Tokenizer *a, const Tokenizer *b, const unsigned char *text, size_t n_bytes) {
    uint32_t *ids_a, *ids_b;
    size_t n_a, n_b;
    tokenizer_encode(a, text, n_bytes, &ids_a, &n_a);
    tokenizer_encode(b, text, n_bytes, &ids_b, &n_b);
    int same = n_a == n_b && memcmp(ids_a, ids_b, n_a * sizeof *ids_a) == 0;
    free(ids_a);
    free(ids_b);
    return same;
}

/* ---- byte tokenizer ---- */

TEST(byte_tokenizer_round_trip) {
    Tokenizer *tok = tokenizer_byte();
    CHECK(tokenizer_vocab_size(tok) == 256);
    CHECK(!tokenizer_is_bpe(tok));
    unsigned char all[256];
    for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
    uint32_t *ids;
    size_t n_ids;
    CHECK(tokenizer_encode(tok, all, sizeof all, &ids, &n_ids) == 0);
    CHECK(n_ids == 256);
    for (int i = 0; i < 256 && n_ids == 256; i++) CHECK(ids[i] == (uint32_t)i);
    free(ids);
    CHECK(round_trips(tok, all, sizeof all));
    CHECK(round_trips(tok, (const unsigned char *)"", 0));
    uint32_t bad = 256;
    char *text;
    size_t n_bytes;
    CHECK(tokenizer_decode(tok, &bad, 1, &text, &n_bytes) == -1);
    CHECK(error_mentions("256"));
    tokenizer_free(tok);
}

TEST(tokenizer_load_dir_without_json_is_byte) {
    Tokenizer *tok = NULL;
    CHECK(tokenizer_load_dir(&tok, test_tmpdir()) == 0);
    CHECK(tok && !tokenizer_is_bpe(tok) && tokenizer_vocab_size(tok) == 256);
    tokenizer_free(tok);
}

/* ---- BPE ---- */

TEST(bpe_round_trip_shakespeare) {
    size_t n_bytes;
    char *text = shakespeare(&n_bytes);
    CHECK_MSG(text, "%s", up_last_error());
    if (!text) return;
    Tokenizer *tok = NULL;
    double t0 = now_seconds();
    CHECK(tokenizer_train_bpe(&tok, (unsigned char *)text, n_bytes, 8192, 0) == 0);
    double t1 = now_seconds();
    if (!tok) {
        free(text);
        return;
    }
    CHECK(tokenizer_vocab_size(tok) == 8192 && tokenizer_is_bpe(tok));
    uint32_t *ids;
    size_t n_ids;
    CHECK(tokenizer_encode(tok, (unsigned char *)text, n_bytes, &ids, &n_ids) == 0);
    double t2 = now_seconds();
    printf("    bpe vocab 8192 on %zu bytes: train %.2fs, encode %.3fs, %zu tokens (%.2f bytes/token)\n", n_bytes,
           t1 - t0, t2 - t1, n_ids, (double)n_bytes / (double)n_ids);
    CHECK_MSG(t1 - t0 < 10.0, "training took %.2fs", t1 - t0);
    CHECK_MSG(t2 - t1 < 2.0, "encoding took %.2fs", t2 - t1);
    free(ids);
    CHECK(round_trips(tok, (unsigned char *)text, n_bytes));
    tokenizer_free(tok);
    free(text);
}

TEST(bpe_round_trip_binary) {
    Tokenizer *tok = train_shakespeare(200000, 1024);
    if (!tok) return;
    /* random bytes: invalid UTF-8, NUL bytes, every byte value */
    for (size_t n = 0; n < 300; n += 7) {
        unsigned char *bytes = random_bytes(n, n + 1);
        CHECK_MSG(round_trips(tok, bytes, n), "random bytes of length %zu", n);
        free(bytes);
    }
    unsigned char *big = random_bytes(1 << 20, 99);
    CHECK(round_trips(tok, big, 1 << 20));
    /* long runs of one class are cut into bounded chunks, and still round-trip */
    memset(big, '=', 20000);
    memset(big + 20000, ' ', 20000);
    memset(big + 40000, 'a', 20000);
    memset(big + 60000, 0, 20000);
    CHECK(round_trips(tok, big, 80000));
    free(big);
    tokenizer_free(tok);

    /* a tokenizer trained on binary data also round-trips */
    unsigned char *train = random_bytes(50000, 7);
    Tokenizer *binary = NULL;
    CHECK_MSG(tokenizer_train_bpe(&binary, train, 50000, 600, 0) == 0, "%s", up_last_error());
    if (binary) CHECK(round_trips(binary, train, 50000));
    tokenizer_free(binary);
    free(train);
}

TEST(bpe_deterministic) {
    Tokenizer *a = train_shakespeare(300000, 1500), *b = train_shakespeare(300000, 1500);
    if (!a || !b) {
        tokenizer_free(a);
        tokenizer_free(b);
        return;
    }
    size_t n_bytes;
    char *text = shakespeare(&n_bytes);
    if (!text) return;
    CHECK(same_encoding(a, b, (unsigned char *)text, n_bytes));
    char *path_a = tmp_path("a.json"), *path_b = tmp_path("b.json");
    CHECK(tokenizer_save(a, path_a) == 0 && tokenizer_save(b, path_b) == 0);
    char *json_a = NULL, *json_b = NULL;
    size_t bytes_a = 0, bytes_b = 0;
    CHECK(read_file(path_a, &json_a, &bytes_a) == 0 && read_file(path_b, &json_b, &bytes_b) == 0);
    CHECK_MSG(json_a && json_b && bytes_a == bytes_b && memcmp(json_a, json_b, bytes_a) == 0,
              "two trainings saved different merges");
    Tokenizer *loaded = NULL;
    CHECK_MSG(tokenizer_load(&loaded, path_a) == 0, "%s", up_last_error());
    if (loaded) {
        CHECK(tokenizer_vocab_size(loaded) == 1500 && tokenizer_is_bpe(loaded));
        CHECK(same_encoding(a, loaded, (unsigned char *)text, n_bytes));
        unsigned char *bytes = random_bytes(5000, 3);
        CHECK(same_encoding(a, loaded, bytes, 5000));
        free(bytes);
    }
    /* load_dir picks up DIR/tokenizer.json */
    char *dir_json = tmp_path("tokenizer.json");
    CHECK(tokenizer_save(a, dir_json) == 0);
    Tokenizer *from_dir = NULL;
    CHECK(tokenizer_load_dir(&from_dir, test_tmpdir()) == 0);
    CHECK(from_dir && tokenizer_is_bpe(from_dir) && tokenizer_vocab_size(from_dir) == 1500);
    tokenizer_free(from_dir);
    free(dir_json);
    tokenizer_free(loaded);
    free(json_a);
    free(json_b);
    free(path_a);
    free(path_b);
    free(text);
    tokenizer_free(a);
    tokenizer_free(b);
}

TEST(bpe_compresses) {
    size_t n_bytes;
    char *text = shakespeare(&n_bytes);
    if (!text) {
        CHECK_MSG(0, "%s", up_last_error());
        return;
    }
    Tokenizer *tok = NULL;
    CHECK(tokenizer_train_bpe(&tok, (unsigned char *)text, n_bytes, 2048, 0) == 0);
    if (tok) {
        uint32_t *ids;
        size_t n_ids;
        CHECK(tokenizer_encode(tok, (unsigned char *)text, n_bytes, &ids, &n_ids) == 0);
        CHECK_MSG(n_ids < n_bytes / 2, "%zu tokens for %zu bytes", n_ids, n_bytes);
        for (size_t i = 0; i < n_ids; i++)
            if (ids[i] >= 2048) {
                CHECK_MSG(0, "id %u >= vocab", ids[i]);
                break;
            }
        free(ids);
    }
    tokenizer_free(tok);
    free(text);
}

TEST(bpe_training_arguments) {
    Tokenizer *tok = NULL;
    const unsigned char text[] = "abababab";
    CHECK(tokenizer_train_bpe(&tok, text, 8, 256, 0) == -1 && !tok);
    CHECK(tokenizer_train_bpe(&tok, text, 8, 65537, 0) == -1 && !tok);
    /* "abababab" has pairs (a,b), (b,a), then few more: a large vocab cannot be learned */
    CHECK(tokenizer_train_bpe(&tok, text, 8, 1000, 0) == -1 && !tok);
    CHECK(error_mentions("expected"));
    CHECK(tokenizer_train_bpe(&tok, text, 8, 257, 0) == 0);
    if (tok) {
        uint32_t *ids;
        size_t n_ids;
        tokenizer_encode(tok, text, 8, &ids, &n_ids);
        CHECK(n_ids == 4 && ids[0] == 256);
        free(ids);
    }
    tokenizer_free(tok);
}

/* ---- tokenizer.json validation ---- */

/* Writes json to DIR/tokenizer.json and expects tokenizer_load to fail naming the file and `what`. */
static void expect_load_error(const char *json, const char *what) {
    char *path = tmp_path("tokenizer.json");
    CHECK(atomic_write_file(path, json, strlen(json)) == 0);
    Tokenizer *tok = (Tokenizer *)1;
    up_clear_error();
    CHECK_MSG(tokenizer_load(&tok, path) == -1, "loading %s succeeded", json);
    CHECK(tok == NULL);
    CHECK_MSG(error_mentions(path) && error_mentions(what), "error \"%s\" for %s; expected the file and %s",
              up_last_error(), json, what);
    free(path);
}

TEST(tokenizer_json_errors) {
    expect_load_error("{\"type\": \"bpe\", \"version\": 1, ", "invalid JSON");
    expect_load_error("", "invalid JSON");
    expect_load_error("[1, 2]", "not a JSON object");
    expect_load_error("{\"type\": \"wordpiece\", \"version\": 1, \"vocab_size\": 256, \"merges\": []}", "field type");
    expect_load_error("{\"type\": \"bpe\", \"version\": 2, \"vocab_size\": 256, \"merges\": []}", "field version");
    expect_load_error("{\"type\": \"bpe\", \"version\": 1, \"vocab_size\": 300, \"merges\": [[1, 2]]}",
                      "field vocab_size");
    expect_load_error("{\"type\": \"bpe\", \"version\": 1, \"vocab_size\": \"257\", \"merges\": [[1, 2]]}",
                      "field vocab_size");
    expect_load_error("{\"type\": \"bpe\", \"version\": 1, \"vocab_size\": 257}", "field merges");
    expect_load_error("{\"type\": \"bpe\", \"version\": 1, \"vocab_size\": 260, "
                      "\"merges\": [[1, 2], [3, 256], [257, 4], [900, 5]]}",
                      "field merges[3]: id 900 out of range; expected an id < 259");
    expect_load_error("{\"type\": \"bpe\", \"version\": 1, \"vocab_size\": 257, \"merges\": [[1, 256]]}",
                      "merges[0]: id 256");
    expect_load_error("{\"type\": \"bpe\", \"version\": 1, \"vocab_size\": 257, \"merges\": [[-1, 2]]}", "merges[0]");
    expect_load_error("{\"type\": \"bpe\", \"version\": 1, \"vocab_size\": 257, \"merges\": [[1.5, 2]]}", "merges[0]");
    expect_load_error("{\"type\": \"bpe\", \"version\": 1, \"vocab_size\": 257, \"merges\": [[1, 2, 3]]}", "merges[0]");
    expect_load_error("{\"type\": \"bpe\", \"version\": 1, \"vocab_size\": 258, \"merges\": [[1, 2], [1, 2]]}",
                      "merges[1]: pair [1, 2] repeats merges[0]");
    expect_load_error("{\"type\": \"byte\", \"version\": 1, \"vocab_size\": 257, \"merges\": [[1, 2]]}",
                      "field vocab_size");

    /* doubling merges would build an astronomically long token: rejected, not built */
    char json[1 << 14];
    int at = snprintf(json, sizeof json, "{\"type\": \"bpe\", \"version\": 1, \"vocab_size\": %d, \"merges\": [[97, 97]",
                      256 + 40);
    for (int m = 1; m < 40; m++) at += snprintf(json + at, sizeof json - (size_t)at, ", [%d, %d]", 255 + m, 255 + m);
    snprintf(json + at, sizeof json - (size_t)at, "]}");
    expect_load_error(json, "bytes long");

    /* a missing file names the file too */
    Tokenizer *tok = NULL;
    char *missing = tmp_path("missing.json");
    CHECK(tokenizer_load(&tok, missing) == -1 && error_mentions(missing));
    free(missing);

    /* load_dir reports a corrupt DIR/tokenizer.json rather than falling back to bytes */
    char *path = tmp_path("tokenizer.json");
    CHECK(atomic_write_file(path, "{", 1) == 0);
    CHECK(tokenizer_load_dir(&tok, test_tmpdir()) == -1 && error_mentions(path));
    free(path);
}

TEST(tokenizer_json_byte_round_trip) {
    Tokenizer *tok = tokenizer_byte(), *loaded = NULL;
    char *path = tmp_path("tokenizer.json");
    CHECK(tokenizer_save(tok, path) == 0);
    CHECK_MSG(tokenizer_load(&loaded, path) == 0, "%s", up_last_error());
    CHECK(loaded && !tokenizer_is_bpe(loaded) && tokenizer_vocab_size(loaded) == 256);
    tokenizer_free(loaded);
    tokenizer_free(tok);
    free(path);
}

/* ---- shards ---- */

static void check_shard_round_trip(int vocab_size, int expected_width) {
    enum { N = 100003 };
    uint32_t *tokens = xmalloc(N * sizeof *tokens);
    Rng rng;
    rng_seed(&rng, (uint64_t)vocab_size);
    for (int i = 0; i < N; i++) tokens[i] = (uint32_t)rng_below(&rng, (uint64_t)vocab_size);
    tokens[0] = (uint32_t)vocab_size - 1;
    char *path = tmp_path("train.bin");
    CHECK_MSG(shard_write(path, tokens, N, vocab_size) == 0, "%s", up_last_error());
    Shard s;
    CHECK_MSG(shard_open(&s, path) == 0, "%s", up_last_error());
    CHECK(s.n_tokens == N && s.vocab_size == vocab_size && s.bytes_per_token == expected_width);
    CHECK(s.map_bytes == SHARD_HEADER_BYTES + (size_t)N * (size_t)expected_width);
    int mismatches = 0;
    for (uint64_t i = 0; i < s.n_tokens; i++) mismatches += shard_token(&s, i) != tokens[i];
    CHECK(mismatches == 0);
    shard_close(&s);
    shard_close(&s); /* closing twice is harmless */
    free(path);
    free(tokens);
}

TEST(shard_round_trip_uint16) { check_shard_round_trip(50257, 2); }
TEST(shard_round_trip_uint16_full_range) { check_shard_round_trip(65536, 2); }
TEST(shard_round_trip_uint32) { check_shard_round_trip(100000, 4); }

TEST(shard_empty_and_bad_writes) {
    char *path = tmp_path("empty.bin");
    CHECK(shard_write(path, NULL, 0, 256) == 0);
    Shard s;
    CHECK(shard_open(&s, path) == 0 && s.n_tokens == 0);
    shard_close(&s);
    uint32_t tokens[3] = {1, 2, 300};
    char *bad = tmp_path("bad.bin");
    CHECK(shard_write(bad, tokens, 3, 256) == -1 && error_mentions(bad) && error_mentions("300"));
    CHECK(!path_exists(bad));
    CHECK(shard_write(bad, tokens, 3, 0) == -1);
    free(bad);
    free(path);
}

/* Writes a valid shard of n tokens, lets `corrupt` edit its bytes, and expects shard_open to
 * fail with a message naming the file and containing `what`. */
static void expect_shard_error(void (*corrupt)(unsigned char *bytes, size_t *n_bytes), const char *what) {
    uint32_t tokens[500];
    for (int i = 0; i < 500; i++) tokens[i] = (uint32_t)(i % 256);
    char *path = tmp_path("val.bin");
    CHECK(shard_write(path, tokens, 500, 256) == 0);
    char *bytes = NULL;
    size_t n_bytes = 0;
    CHECK(read_file(path, &bytes, &n_bytes) == 0);
    if (!bytes) {
        free(path);
        return;
    }
    corrupt((unsigned char *)bytes, &n_bytes);
    CHECK(atomic_write_file(path, bytes, n_bytes) == 0);
    Shard s;
    up_clear_error();
    CHECK_MSG(shard_open(&s, path) == -1, "corrupt shard opened; expected \"%s\"", what);
    CHECK(s.map == NULL && s.path == NULL);
    CHECK_MSG(error_mentions(path) && error_mentions(what), "error \"%s\"; expected the file and \"%s\"",
              up_last_error(), what);
    free(bytes);
    free(path);
}

static void truncate_to_100(unsigned char *bytes, size_t *n_bytes) { *n_bytes = 100; }
static void truncate_to_10(unsigned char *bytes, size_t *n_bytes) { *n_bytes = 10; }
static void bad_magic(unsigned char *bytes, size_t *n_bytes) { bytes[0] = 'X'; }
static void bad_version(unsigned char *bytes, size_t *n_bytes) { bytes[8] = 7; }
static void bad_width(unsigned char *bytes, size_t *n_bytes) { bytes[12] = 3; }
static void zero_vocab(unsigned char *bytes, size_t *n_bytes) { memset(bytes + 24, 0, 4); }
static void token_too_big(unsigned char *bytes, size_t *n_bytes) { bytes[32 + 2 * 123 + 1] = 1; } /* 256 + x */
static void count_past_end(unsigned char *bytes, size_t *n_bytes) { bytes[16] = 0xf5, bytes[17] = 0x01; } /* 501 */
static void count_huge(unsigned char *bytes, size_t *n_bytes) { memset(bytes + 16, 0xff, 8); }
static void trailing_bytes(unsigned char *bytes, size_t *n_bytes) { *n_bytes -= 2, bytes[16] = 0xf0; } /* 496 */

TEST(shard_corrupt_files) {
    expect_shard_error(truncate_to_100, "file is 100 bytes but header says 500 tokens of 2 bytes; expected 1032 bytes");
    expect_shard_error(truncate_to_10, "expected at least the 32-byte shard header");
    expect_shard_error(bad_magic, "magic");
    expect_shard_error(bad_version, "version");
    expect_shard_error(bad_width, "bytes per token");
    expect_shard_error(zero_vocab, "vocab size");
    expect_shard_error(token_too_big, "token 379 at index 123");
    expect_shard_error(count_past_end, "header says 501 tokens");
    expect_shard_error(count_huge, "header says 18446744073709551615 tokens");
    expect_shard_error(trailing_bytes, "header says 496 tokens of 2 bytes; expected 1024 bytes");
    Shard s;
    char *missing = tmp_path("nope.bin");
    CHECK(shard_open(&s, missing) == -1 && error_mentions(missing) && error_mentions("cannot open"));
    free(missing);
}

/* ---- loader ---- */

/* DIR/<split>.bin holding tokens 0..n-1 modulo vocab_size (so windows are recognizable). */
static uint32_t *write_counting_shard(const char *split, size_t n_tokens, int vocab_size) {
    uint32_t *tokens = xmalloc(n_tokens * sizeof *tokens);
    for (size_t i = 0; i < n_tokens; i++) tokens[i] = (uint32_t)(i * 7919 % (size_t)vocab_size);
    char name[64];
    snprintf(name, sizeof name, "%s.bin", split);
    char *path = tmp_path(name);
    CHECK_MSG(shard_write(path, tokens, n_tokens, vocab_size) == 0, "%s", up_last_error());
    free(path);
    return tokens;
}

/* The window a row came from, found from its first tokens; -1 when the row matches none. */
static int64_t window_of_row(const int32_t *row, const uint32_t *tokens, uint64_t n_windows, int seq_len) {
    for (uint64_t w = 0; w < n_windows; w++) {
        int match = 1;
        for (int i = 0; i <= seq_len && match; i++) match = row[i] == (int32_t)tokens[w * (uint64_t)seq_len + (uint64_t)i];
        if (match) return (int64_t)w;
    }
    return -1;
}

TEST(loader_epoch_visits_every_window_once) {
    enum { T = 16, B = 4, N = 16 * 50 + 1 + 9 }; /* 50 windows: (N - 1) / T */
    uint32_t *tokens = write_counting_shard("pretrain", N, 70000); /* uint32 shard; unique windows */
    Loader ld;
    CHECK_MSG(loader_open(&ld, test_tmpdir(), "pretrain", B, T, 1234, 1) == 0, "%s", up_last_error());
    CHECK(ld.n_windows == 50);
    int seen[50] = {0}, in_order = 1;
    int32_t batch[B * (T + 1)];
    int64_t rows = 0;
    while (ld.epoch == 0) {
        loader_next(&ld, batch);
        for (int b = 0; b < B; b++, rows++) {
            int64_t w = window_of_row(batch + b * (T + 1), tokens, 50, T);
            CHECK_MSG(w >= 0, "row %d does not match any window", b);
            if (w < 0) continue;
            if (rows < 50) {
                seen[w]++;
                in_order &= w == rows;
            }
        }
    }
    for (int w = 0; w < 50; w++) CHECK_MSG(seen[w] == 1, "window %d seen %d times in epoch 0", w, seen[w]);
    CHECK_MSG(!in_order, "a shuffled epoch came out in order");
    /* 52 rows taken: the position is 2 windows into epoch 1 */
    CHECK(ld.epoch == 1 && ld.cursor == 2);
    loader_close(&ld);
    free(tokens);
}

TEST(loader_rows_equal_shard_windows) {
    enum { T = 8, B = 3, N = 1000 }; /* 124 windows, so a batch crosses at most one epoch end */
    uint32_t *tokens = write_counting_shard("cpt", N, 500);
    Loader ld;
    CHECK(loader_open(&ld, test_tmpdir(), "cpt", B, T, 5, 1) == 0);
    uint64_t *previous_order = xmalloc(ld.n_windows * sizeof *previous_order);
    int32_t batch[B * (T + 1)];
    int mismatches = 0;
    for (int step = 0; step < 100; step++) {
        uint64_t cursor = ld.cursor;
        memcpy(previous_order, ld.order, ld.n_windows * sizeof *previous_order);
        loader_next(&ld, batch);
        for (int b = 0; b < B; b++) {
            /* rows past the epoch end come from the next epoch's order, now in ld.order */
            uint64_t at = cursor + (uint64_t)b;
            uint64_t window = at < ld.n_windows ? previous_order[at] : ld.order[at - ld.n_windows];
            for (int i = 0; i <= T; i++)
                mismatches += batch[b * (T + 1) + i] != (int32_t)tokens[window * T + (uint64_t)i];
        }
    }
    CHECK(ld.epoch == 2); /* 300 rows over 124 windows */
    CHECK_MSG(mismatches == 0, "%d tokens differ from the shard windows", mismatches);
    free(previous_order);
    loader_close(&ld);
    free(tokens);
}

TEST(loader_resume_same_stream) {
    enum { T = 8, B = 5, N = 8 * 37 + 1 };
    uint32_t *tokens = write_counting_shard("pretrain", N, 1000);
    Loader a, b;
    CHECK(loader_open(&a, test_tmpdir(), "pretrain", B, T, 77, 1) == 0);
    CHECK(loader_open(&b, test_tmpdir(), "pretrain", B, T, 77, 1) == 0);
    int32_t batch_a[B * (T + 1)], batch_b[B * (T + 1)];
    for (int step = 0; step < 23; step++) loader_next(&a, batch_a);
    uint64_t epoch = a.epoch, cursor = a.cursor;
    CHECK(epoch >= 2); /* 115 rows over 37 windows: the position crossed epochs */
    loader_set_position(&b, epoch, cursor);
    int same = 1;
    for (int step = 0; step < 40; step++) {
        loader_next(&a, batch_a);
        loader_next(&b, batch_b);
        same &= memcmp(batch_a, batch_b, sizeof batch_a) == 0;
    }
    CHECK_MSG(same, "a loader set to (%llu, %llu) produced a different stream", (unsigned long long)epoch,
              (unsigned long long)cursor);
    /* reset replays from the start; a fresh loader with the same seed agrees */
    Loader c;
    CHECK(loader_open(&c, test_tmpdir(), "pretrain", B, T, 77, 1) == 0);
    loader_reset(&a);
    loader_next(&a, batch_a);
    loader_next(&c, batch_b);
    CHECK(memcmp(batch_a, batch_b, sizeof batch_a) == 0);
    /* a different seed gives a different order */
    Loader d;
    CHECK(loader_open(&d, test_tmpdir(), "pretrain", B, T, 78, 1) == 0);
    CHECK(memcmp(c.order, d.order, c.n_windows * sizeof *c.order) != 0);
    /* a cursor past the end of an epoch normalizes into later epochs */
    loader_set_position(&d, 0, 37 * 2 + 3);
    CHECK(d.epoch == 2 && d.cursor == 3);
    loader_close(&a);
    loader_close(&b);
    loader_close(&c);
    loader_close(&d);
    free(tokens);
}

TEST(loader_no_shuffle_is_sequential) {
    enum { T = 4, B = 3, N = 4 * 10 + 1 };
    uint32_t *tokens = write_counting_shard("val", N, 300);
    Loader ld;
    CHECK(loader_open(&ld, test_tmpdir(), "val", B, T, 1, 0) == 0);
    int32_t batch[B * (T + 1)];
    for (int step = 0; step < 8; step++) {
        loader_next(&ld, batch);
        for (int b = 0; b < B; b++) {
            uint64_t window = (uint64_t)(step * B + b) % 10;
            for (int i = 0; i <= T; i++) CHECK(batch[b * (T + 1) + i] == (int32_t)tokens[window * T + (uint64_t)i]);
        }
    }
    loader_close(&ld);
    free(tokens);
}

TEST(loader_errors) {
    Loader ld;
    CHECK(loader_open(&ld, test_tmpdir(), "val", 2, 8, 0, 1) == -1);
    char *path = tmp_path("val.bin");
    CHECK_MSG(error_mentions(path) && error_mentions("cannot open") &&
                  error_mentions("expected a shard written by `upcycle tokenize`"),
              "%s", up_last_error());
    uint32_t tokens[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(shard_write(path, tokens, 8, 16) == 0);
    CHECK(loader_open(&ld, test_tmpdir(), "val", 2, 8, 0, 1) == -1);
    CHECK_MSG(error_mentions(path) && error_mentions("8 tokens") && error_mentions("9"), "%s", up_last_error());
    CHECK(ld.order == NULL && ld.shard.map == NULL);
    CHECK(loader_open(&ld, test_tmpdir(), "val", 2, 7, 0, 1) == 0 && ld.n_windows == 1);
    loader_close(&ld);
    CHECK(loader_open(&ld, test_tmpdir(), "val", 0, 7, 0, 1) == -1);
    free(path);
}

/* ---- documents and their split ---- */

static void write_text(const char *dir, const char *name, const char *text) {
    char *path = path_join(dir, name);
    CHECK(atomic_write_file(path, text, strlen(text)) == 0);
    free(path);
}

static int doc_is(const Corpus *c, size_t d, const char *want) {
    CorpusReader r;
    corpus_reader_init(&r);
    const char *text;
    int same = d < c->n_docs && corpus_text(c, d, &r, &text) == 0 && c->docs[d].n_bytes == strlen(want) && !strcmp(text, want);
    corpus_reader_free(&r);
    return same;
}

TEST(corpus_directory_jsonl_and_separator) {
    char *dir = tmp_path("corpus_docs"), *sub = path_join(dir, "a");
    remove_tree(dir);
    CHECK(mkdir_p(sub) == 0);
    write_text(dir, "b.txt", "second document");
    write_text(sub, "c.txt", "first document");
    write_text(sub, "d.txt", ""); /* empty: dropped */
    write_text(dir, "x.jsonl", "{\"text\": \"third\", \"id\": 1}\n\n{\"text\": \"fourth\\nline\"}\n");
    Corpus c = {0};
    CorpusOptions opt = {0};
    CHECK_MSG(corpus_add_path(&c, dir, &opt) == 0, "%s", up_last_error());
    /* sorted paths: a/c.txt, a/d.txt (empty), b.txt, x.jsonl */
    CHECK(c.n_docs == 4);
    if (c.n_docs == 4) {
        CHECK(doc_is(&c, 0, "first document") && doc_is(&c, 1, "second document"));
        CHECK(doc_is(&c, 2, "third") && doc_is(&c, 3, "fourth\nline"));
    }
    CHECK(c.n_bytes == strlen("first document") + strlen("second document") + 5 + 11);
    corpus_free(&c);
    /* --doc-sep cuts a text file; the JSONL field is chosen */
    write_text(dir, "sep.txt", "one<sep>two<sep><sep>three");
    char *sep_file = path_join(dir, "sep.txt");
    opt.doc_sep = "<sep>";
    CHECK(corpus_add_path(&c, sep_file, &opt) == 0 && c.n_docs == 3 && doc_is(&c, 0, "one") && doc_is(&c, 2, "three"));
    corpus_free(&c);
    /* bad JSONL: the file, the line and the field */
    write_text(dir, "bad.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n");
    char *bad = path_join(dir, "bad.jsonl");
    CHECK(corpus_add_path(&c, bad, &opt) == -1 && error_mentions("bad.jsonl: line 2") && error_mentions("\"text\""));
    corpus_free(&c);
    CorpusOptions field = {.jsonl_field = "body"};
    write_text(dir, "body.jsonl", "{\"body\": \"no text\"}\nnot json\n");
    char *body = path_join(dir, "body.jsonl");
    CHECK(corpus_add_path(&c, body, &field) == -1 && error_mentions("line 2: not valid JSON"));
    corpus_free(&c);
    char *missing = path_join(dir, "missing.txt");
    CHECK(corpus_add_path(&c, missing, &opt) == -1 && error_mentions("missing.txt"));
    corpus_free(&c);
    /* a file that changed after indexing is an error naming it, not a silent other text */
    write_text(dir, "grow.txt", "0123456789");
    char *grow = path_join(dir, "grow.txt");
    CHECK(corpus_add_path(&c, grow, &(CorpusOptions){0}) == 0 && c.n_docs == 1);
    write_text(dir, "grow.txt", "01234");
    CorpusReader r;
    corpus_reader_init(&r);
    const char *text;
    CHECK(corpus_text(&c, 0, &r, &text) == -1 && error_mentions("grow.txt") && error_mentions("unchanged"));
    corpus_reader_free(&r);
    corpus_free(&c);
    remove_tree(dir);
    free(dir), free(sub), free(sep_file), free(bad), free(body), free(missing), free(grow);
}

/* --doc-sep on a file read in 1 MiB pieces: separators that straddle a piece boundary, at
 * its start and end, adjacent ones (an empty document, dropped), against an in-memory split */
TEST(corpus_separator_streamed_across_reads) {
    char *path = tmp_path("corpus_sep_big.txt");
    const char *sep = "<|sep|>";
    size_t k = strlen(sep), n = (3u << 20) + 77;
    char *text = xmalloc(n + 1);
    Rng rng;
    rng_seed(&rng, 7);
    for (size_t i = 0; i < n; i++) text[i] = (char)('a' + rng_below(&rng, 26));
    size_t at[] = {0, 1000, (1u << 20) - 3, (1u << 20) + 4, (2u << 20) - k, (2u << 20) - k + k, (3u << 20) - 1, n - k};
    for (size_t i = 0; i < sizeof at / sizeof *at; i++) memcpy(text + at[i], sep, k);
    text[n] = 0;
    CHECK(atomic_write_file(path, text, n) == 0);
    Corpus c = {0};
    CHECK_MSG(corpus_add_path(&c, path, &(CorpusOptions){.doc_sep = sep}) == 0, "%s", up_last_error());
    /* the expected documents: memmem over the whole text */
    size_t expect = 0, ok = 1;
    CorpusReader r;
    corpus_reader_init(&r);
    for (const char *p = text, *end = text + n;;) {
        const char *hit = memmem(p, (size_t)(end - p), sep, k);
        size_t len = (size_t)((hit ? hit : end) - p);
        if (len) {
            const char *doc;
            ok &= expect < c.n_docs && c.docs[expect].n_bytes == len && corpus_text(&c, expect, &r, &doc) == 0 && !memcmp(doc, p, len);
            expect++;
        }
        if (!hit) break;
        p = hit + k;
    }
    CHECK_MSG(ok && c.n_docs == expect && expect == 5, "ok %zu, %zu documents, expected %zu", ok, c.n_docs, expect);
    corpus_reader_free(&r);
    corpus_free(&c);
    unlink(path);
    free(path), free(text);
}



static void corpus_of_sizes(Corpus *c, const size_t *sizes, size_t n) {
    memset(c, 0, sizeof *c);
    c->docs = xcalloc(n, sizeof *c->docs);
    for (size_t i = 0; i < n; i++) c->docs[i].n_bytes = sizes[i], c->n_bytes += sizes[i];
    c->n_docs = c->capacity = n;
}

TEST(document_split_whole_disjoint_seeded) {
    enum { N = 400 };
    size_t sizes[N];
    Rng rng;
    rng_seed(&rng, 3);
    for (int i = 0; i < N; i++) sizes[i] = 1 + rng_below(&rng, 5000);
    Corpus c;
    corpus_of_sizes(&c, sizes, N);
    double fr[3] = {0.8, 0.1, 0.1};
    size_t order[N], order2[N];
    int split[N], split2[N], seen[N] = {0};
    corpus_split_documents(&c, fr, 1, order, split);
    double bytes[3] = {0};
    int count[3] = {0};
    for (int i = 0; i < N; i++) {
        CHECK(order[i] < N);
        seen[order[i]]++;
        CHECK(split[i] >= 0 && split[i] <= 2);
        bytes[split[i]] += sizes[i], count[split[i]]++;
    }
    for (int i = 0; i < N; i++) CHECK_MSG(seen[i] == 1, "document %d appears %d times in the order", i, seen[i]);
    for (int s = 0; s < 3; s++)
        CHECK_MSG(fabs(bytes[s] / c.n_bytes - fr[s]) < 0.02, "split %d holds %.3f of the bytes, expected %.2f", s, bytes[s] / c.n_bytes, fr[s]);
    /* the shuffle is not the identity, the seed reproduces it, another seed changes it */
    int moved = 0;
    for (int i = 0; i < N; i++) moved += order[i] != (size_t)i;
    CHECK(moved > N / 2);
    corpus_split_documents(&c, fr, 1, order2, split2);
    CHECK(!memcmp(order, order2, sizeof order) && !memcmp(split, split2, sizeof split));
    corpus_split_documents(&c, fr, 2, order2, split2);
    CHECK(memcmp(split, split2, sizeof split) != 0);
    corpus_free(&c);
    /* one huge document and two small ones: no split is left empty */
    size_t lopsided[3] = {100000, 10, 10};
    corpus_of_sizes(&c, lopsided, 3);
    corpus_split_documents(&c, fr, 5, order, split);
    int has[3] = {0};
    for (int i = 0; i < 3; i++) has[split[i]]++;
    CHECK(has[0] == 1 && has[1] == 1 && has[2] == 1);
    corpus_free(&c);
    /* a huge document whose middle lies past a small pretrain fraction: pretrain still gets one */
    size_t huge_first[4] = {100000, 10, 10, 10};
    double small_pretrain[3] = {0.3, 0.3, 0.4};
    corpus_of_sizes(&c, huge_first, 4);
    for (uint64_t seed = 1; seed <= 20; seed++) {
        corpus_split_documents(&c, small_pretrain, seed, order, split);
        int per[3] = {0};
        for (int i = 0; i < 4; i++) per[split[i]]++;
        CHECK_MSG(per[0] && per[1] && per[2], "seed %llu: splits hold %d/%d/%d documents", (unsigned long long)seed, per[0], per[1], per[2]);
    }
    corpus_free(&c);
}

TEST(bpe_end_of_document_id) {
    size_t n_bytes;
    char *text = shakespeare(&n_bytes);
    Tokenizer *tok = NULL;
    CHECK(tokenizer_train_bpe(&tok, (unsigned char *)text, n_bytes < 200000 ? n_bytes : 200000, 300, 1) == 0);
    CHECK(tokenizer_vocab_size(tok) == 300 && tokenizer_eod_id(tok) == 299);
    uint32_t *ids;
    size_t n_ids;
    CHECK(tokenizer_encode(tok, (unsigned char *)text, 20000, &ids, &n_ids) == 0);
    int eod_seen = 0;
    for (size_t i = 0; i < n_ids; i++) eod_seen |= ids[i] == 299;
    CHECK(!eod_seen);
    free(ids);
    uint32_t eod = 299;
    char *out;
    size_t n_out;
    CHECK(tokenizer_decode(tok, &eod, 1, &out, &n_out) == 0 && !strcmp(out, "<|endoftext|>"));
    free(out);
    char *path = tmp_path("eod_tokenizer.json");
    CHECK(tokenizer_save(tok, path) == 0);
    Tokenizer *back = NULL;
    CHECK_MSG(tokenizer_load(&back, path) == 0, "%s", up_last_error());
    CHECK(back && tokenizer_eod_id(back) == 299 && tokenizer_vocab_size(back) == 300);
    CHECK(round_trips(back, (unsigned char *)text, 5000));
    tokenizer_free(back);
    /* an eod_id that is not the last id is refused, naming the field */
    char *json;
    size_t n_json;
    CHECK(read_file(path, &json, &n_json) == 0);
    char *at = strstr(json, "\"eod_id\":");
    CHECK(at != NULL);
    if (at) {
        memcpy(at, "\"eod_id\":\t12,", 13);
        for (char *p = at + 13; *p && *p != '\n'; p++) *p = ' ';
        CHECK(atomic_write_file(path, json, n_json) == 0);
        CHECK(tokenizer_load(&back, path) == -1 && error_mentions("eod_id"));
    }
    free(json);
    tokenizer_free(tok);
    free(path);
    free(text);
}

TEST(loader_check_vocab_names_the_shard) {
    const char *dir = test_tmpdir();
    uint32_t ids[64];
    for (int i = 0; i < 64; i++) ids[i] = (uint32_t)(i * 7 % 300);
    char *path = path_join(dir, "val.bin");
    CHECK(shard_write(path, ids, 64, 300) == 0);
    Loader ld;
    CHECK(loader_open(&ld, dir, "val", 2, 8, 0, 0) == 0);
    CHECK(loader_check_vocab(&ld, 300) == 0 && loader_check_vocab(&ld, 4096) == 0);
    up_clear_error();
    CHECK(loader_check_vocab(&ld, 256) == -1);
    CHECK_MSG(strstr(up_last_error(), path) && strstr(up_last_error(), "vocabulary 300") && strstr(up_last_error(), "vocab_size 256"),
              "message: %s", up_last_error());
    loader_close(&ld);
    free(path);
}

typedef struct {
    uint32_t *ids;
    size_t n, cap;
} Collected;

static int collect(void *ctx, const uint32_t *ids, size_t n) {
    Collected *c = ctx;
    if (c->n + n > c->cap) c->ids = xrealloc(c->ids, (c->cap = 2 * (c->n + n)) * sizeof *c->ids);
    memcpy(c->ids + c->n, ids, n * sizeof *ids);
    c->n += n;
    return 0;
}

/* corpus_encode: the ids of each segment in segment order, the end-of-document ids after the
 * segments that end a document, the same on 1 and 3 threads as one tokenizer_encode per segment;
 * a segment that fails names its file */
TEST(corpus_encode_in_order_on_any_thread_count) {
    char *dir = tmp_path("encode_docs");
    CHECK(mkdir_p(dir) == 0);
    Rng rng;
    rng_seed(&rng, 3);
    for (int i = 0; i < 40; i++) {
        char name[32], text[600];
        size_t n = 1 + rng_below(&rng, sizeof text - 1);
        for (size_t j = 0; j < n; j++) text[j] = (char)('a' + rng_below(&rng, 26));
        text[n] = 0;
        snprintf(name, sizeof name, "d%02d.txt", i);
        write_text(dir, name, text);
    }
    Corpus c = {0};
    CHECK_MSG(corpus_add_path(&c, dir, &(CorpusOptions){0}) == 0 && c.n_docs == 40, "%s", up_last_error());
    Segment segs[60];
    size_t n_segs = 0;
    for (size_t d = 0; d < c.n_docs; d++) {
        uint64_t half = c.docs[d].n_bytes / 2;
        if (d % 3 == 0 && half) { /* a document cut in two, as a contiguous split does */
            segs[n_segs++] = (Segment){d, 0, half, 0};
            segs[n_segs++] = (Segment){d, half, c.docs[d].n_bytes - half, 1};
        } else {
            segs[n_segs++] = (Segment){d, 0, c.docs[d].n_bytes, 1};
        }
    }
    Tokenizer *tok = tokenizer_byte();
    uint32_t eod[2] = {10, 10};
    Collected want = {0};
    CorpusReader r;
    corpus_reader_init(&r);
    for (size_t i = 0; i < n_segs; i++) {
        const char *text;
        uint32_t *ids;
        size_t n;
        CHECK(corpus_text(&c, segs[i].doc, &r, &text) == 0);
        CHECK(tokenizer_encode(tok, (const unsigned char *)text + segs[i].offset, (size_t)segs[i].n_bytes, &ids, &n) == 0);
        collect(&want, ids, n);
        if (segs[i].eod_after) collect(&want, eod, 2);
        free(ids);
    }
    corpus_reader_free(&r);
    for (int threads = 1; threads <= 3; threads += 2) {
        Collected got = {0};
        CHECK_MSG(corpus_encode(&c, tok, segs, n_segs, eod, 2, threads, collect, &got) == 0, "%s", up_last_error());
        CHECK_MSG(got.n == want.n && !memcmp(got.ids, want.ids, want.n * sizeof *want.ids), "%d threads: %zu ids, expected %zu", threads,
                  got.n, want.n);
        free(got.ids);
    }
    /* a document that shrank after indexing: the error names its file */
    write_text(dir, "d07.txt", "x");
    Collected got = {0};
    CHECK(corpus_encode(&c, tok, segs, n_segs, eod, 2, 2, collect, &got) == -1 && error_mentions("d07.txt"));
    free(got.ids), free(want.ids);
    tokenizer_free(tok);
    corpus_free(&c);
    remove_tree(dir);
    free(dir);
}
