/* fuzz_shard.c - libFuzzer harness for token shards (src/data/shard.c).
 * The input is a whole shard file (32-byte header, tokens). It is opened directly
 * (shard_open) and, as DIR/pretrain.bin of a data directory, through the window loader
 * (loader_open, loader_next, loader_set_position) with a short sequence length. */
#include "data/shard.h"
#include "fuzz_common.h"
#include "util.h"

static char dir[128];
static void remove_dir(void) { rmdir(dir); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[192];
    if (!dir[0]) { /* once per process: mkdir and rmdir cost a millisecond each on ext4 */
        fuzz_path(dir, sizeof dir, "shard", ".d");
        mkdir(dir, 0700);
        atexit(remove_dir);
    }
    snprintf(path, sizeof path, "%s/pretrain.bin", dir);
    fuzz_write_file(path, data, size);

    Shard s;
    if (shard_open(&s, path) == 0) {
        if (s.n_tokens * (uint64_t)s.bytes_per_token + SHARD_HEADER_BYTES != size) abort();
        for (uint64_t i = 0; i < s.n_tokens; i++)
            if (shard_token(&s, i) >= (uint32_t)s.vocab_size) abort();
        shard_close(&s);
    }

    Loader ld;
    int seq_len = size > 0 ? 1 + data[size - 1] % 5 : 1;
    if (loader_open(&ld, dir, "pretrain", 2, seq_len, 7, 1) == 0) {
        int32_t tokens[2 * 6];
        for (int step = 0; step < 3; step++) {
            loader_next(&ld, tokens);
            for (int i = 0; i < 2 * (seq_len + 1); i++)
                if (tokens[i] < 0 || tokens[i] >= ld.shard.vocab_size) abort();
        }
        loader_set_position(&ld, 3, 1000003);
        loader_next(&ld, tokens);
        loader_reset(&ld);
        loader_next(&ld, tokens);
        loader_close(&ld);
    }
    unlink(path);
    return 0;
}
