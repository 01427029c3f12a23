/* fuzz_hf_tokenizer.c - libFuzzer harness for Hugging Face tokenizer.json (src/data/hf_tokenizer.c).
 * Each input is used twice:
 *   - as text, encoded with a fixed byte-level BPE (no normalizer, added tokens without strip):
 *     encoding succeeds exactly when the input is valid UTF-8, every id is below the vocab size,
 *     and decode(encode(x)) == x;
 *   - as a tokenizer.json: one that loads must encode a fixed text and the input (refusing only
 *     invalid UTF-8), with ids below the vocab size that decode. */
#include <string.h>
#include <utf8proc.h>

#include "data/tokenizer.h"
#include "util.h"
#include "fuzz_common.h"

static const char TEXT[] =
    "First Citizen:\nBefore we proceed, hear me speak.\r\n\t 1234567 \xc3\xa9t\xc3\xa9 e\xcc\x81 \xe6\x97\xa5\xe6\x9c\xac "
    "\xf0\x9f\xa4\x96 <|endoftext|>the<|im_end|>    they're THE'LL  \xc2\xa0\xe3\x80\x80 x";

/* the fixed tokenizer: bytes 0..255 in the GPT-2 map, a few merges, two added tokens */
static Tokenizer *fixed_tokenizer(void) {
    static Tokenizer *tok;
    if (tok) return tok;
    char *json = malloc(1 << 16), *at = json;
    at += sprintf(at, "{\"added_tokens\":[{\"id\":300,\"content\":\"<|endoftext|>\",\"special\":true},"
                      "{\"id\":301,\"content\":\"<|im_end|>\",\"special\":true,\"single_word\":true}],"
                      "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
                      "{\"type\":\"Digits\",\"individual_digits\":false},"
                      "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|"
                      "\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
                      "\"behavior\":\"Isolated\",\"invert\":false},"
                      "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}]},"
                      "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{");
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        unsigned char c[4] = {0};
        utf8proc_encode_char(printable ? b : 256 + n++, c);
        at += sprintf(at, "%s\"%s%s\":%d", b ? "," : "", b == '"' || b == '\\' ? "\\" : "", (char *)c, b);
    }
    at += sprintf(at, ",\"th\":256,\"the\":257,\"\xc4\xa0the\":258,\"er\":259,\"\xc4\xa0\xc4\xa0\":260},"
                      "\"merges\":[\"t h\",[\"th\",\"e\"],\"\xc4\xa0 the\",\"e r\",\"\xc4\xa0 \xc4\xa0\"]}}");
    char path[128];
    fuzz_path(path, sizeof path, "hf_tokenizer_fixed", ".json");
    fuzz_write_file(path, (const uint8_t *)json, (size_t)(at - json));
    free(json);
    if (tokenizer_load_hf(&tok, path) != 0) {
        fprintf(stderr, "fuzz: the fixed tokenizer does not load: %s\n", up_last_error());
        abort();
    }
    unlink(path);
    return tok;
}

static int valid_utf8(const uint8_t *data, size_t size) {
    for (size_t i = 0; i < size;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate(data + i, (utf8proc_ssize_t)(size - i), &cp);
        if (n <= 0) return 0;
        i += (size_t)n;
    }
    return 1;
}

/* encodes; returns 1 if it succeeded (ids checked and decoded), 0 if it was refused */
static int encode_checked(const Tokenizer *tok, const uint8_t *text, size_t size, int exact) {
    uint32_t *ids = NULL;
    size_t n_ids = 0;
    if (tokenizer_encode(tok, text, size, &ids, &n_ids) != 0) return 0;
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] >= (uint32_t)tokenizer_vocab_size(tok)) abort();
    char *back = NULL;
    size_t n_back = 0;
    if (tokenizer_decode(tok, ids, n_ids, &back, &n_back) != 0) abort();
    if (exact && (n_back != size || memcmp(back, text, size) != 0)) abort();
    free(back);
    free(ids);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (encode_checked(fixed_tokenizer(), data, size, 1) != valid_utf8(data, size)) abort();
    char path[128];
    fuzz_path(path, sizeof path, "hf_tokenizer", ".json");
    fuzz_write_file(path, data, size);
    Tokenizer *tok = NULL;
    if (tokenizer_load_hf(&tok, path) == 0) {
        encode_checked(tok, (const uint8_t *)TEXT, sizeof TEXT - 1, 0);
        encode_checked(tok, data, size, 0);
        tokenizer_free(tok);
    }
    unlink(path);
    return 0;
}
