/* fuzz_tokenizer.c - libFuzzer harness for the BPE vocabulary file (src/data/tokenizer.c).
 * The input is a tokenizer.json. A vocabulary that loads must encode and decode: the text
 * round-trips exactly (decode(encode(x)) == x) and every id is below the vocab size. */
#include <string.h>

#include "data/tokenizer.h"
#include "fuzz_common.h"

static const char TEXT[] =
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n  All:\tSpeak, speak. 1234567 ==== "
    "\xc3\xa9t\xc3\xa9 \xff\xfe\x00\x01 the the the    theeee aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!!";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[128];
    fuzz_path(path, sizeof path, "tokenizer", ".json");
    fuzz_write_file(path, data, size);
    Tokenizer *tok = NULL;
    if (tokenizer_load(&tok, path) == 0) {
        int vocab = tokenizer_vocab_size(tok);
        /* the text, then the input itself as text (it holds the merges' own digits and brackets) */
        const unsigned char *texts[2] = {(const unsigned char *)TEXT, data};
        size_t lengths[2] = {sizeof TEXT - 1, size};
        for (int k = 0; k < 2; k++) {
            uint32_t *ids = NULL;
            size_t n_ids = 0;
            if (tokenizer_encode(tok, texts[k], lengths[k], &ids, &n_ids) != 0) abort();
            for (size_t i = 0; i < n_ids; i++)
                if (ids[i] >= (uint32_t)vocab) abort();
            char *back = NULL;
            size_t n_back = 0;
            if (tokenizer_decode(tok, ids, n_ids, &back, &n_back) != 0) abort();
            if (n_back != lengths[k] || memcmp(back, texts[k], n_back) != 0) abort();
            free(back);
            free(ids);
        }
        uint32_t last = (uint32_t)vocab - 1, bad = (uint32_t)vocab;
        char *text = NULL;
        if (tokenizer_decode(tok, &last, 1, &text, NULL) != 0) abort();
        free(text);
        if (tokenizer_decode(tok, &bad, 1, &text, NULL) == 0) abort(); /* out of range: an error */
        tokenizer_free(tok);
    }
    unlink(path);
    return 0;
}
