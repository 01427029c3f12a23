/* test_hf_tokenizer.c - the Hugging Face tokenizer.json reader on a small hand-made byte-level
 * BPE: merges by rank, both merge forms, added tokens (lstrip/rstrip, single_word), NFC,
 * ignore_merges, decoding, and one-line refusals of what is not implemented. Parity with
 * Hugging Face's Rust tokenizers on real tokenizer files is tests/hf_tokenizer_test.sh. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer.h"
#include "test.h"
#include "util.h"

static int error_mentions(const char *text) { return strstr(up_last_error(), text) != NULL; }

/* the GPT-2 byte-level map: byte -> its character (UTF-8) */
static void byte_char(int b, char out[3]) {
    static int map[256], built;
    if (!built) {
        int n = 0;
        for (int i = 0; i < 256; i++) {
            int printable = (i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF);
            map[i] = printable ? i : 256 + n++;
        }
        built = 1;
    }
    int cp = map[b];
    if (cp < 0x80) out[0] = (char)cp, out[1] = 0;
    else out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
}

/* A byte-level BPE: ids 0..255 are the bytes, merges make "he" 256, "ll" 257, "hell" 258,
 * "hello" 259, "Ġh" 260 (ranked last, so " hello" is Ġ + hello); "ab" 264 has no merge.
 * Added: <|endoftext|> 261, <tag> 262 (lstrip, rstrip), word 263 (single_word). */
static cJSON *fixture(int pair_merges) {
    cJSON *root = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(root, "model");
    cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
    cJSON_AddStringToObject(norm, "type", "NFC");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON *steps = cJSON_AddArrayToObject(pre, "pretokenizers");
    cJSON *split = cJSON_CreateObject(), *pattern = cJSON_AddObjectToObject(split, "pattern");
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON_AddStringToObject(pattern, "Regex", " ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+");
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddFalseToObject(split, "invert");
    cJSON_AddItemToArray(steps, split);
    cJSON *byte_level = cJSON_CreateObject();
    cJSON_AddStringToObject(byte_level, "type", "ByteLevel");
    cJSON_AddFalseToObject(byte_level, "add_prefix_space");
    cJSON_AddFalseToObject(byte_level, "use_regex");
    cJSON_AddItemToArray(steps, byte_level);
    cJSON *decoder = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(decoder, "type", "ByteLevel");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddFalseToObject(model, "ignore_merges");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int b = 0; b < 256; b++) {
        char c[3];
        byte_char(b, c);
        cJSON_AddNumberToObject(vocab, c, b);
    }
    const char *merged[][3] = {{"h", "e", "he"}, {"l", "l", "ll"}, {"he", "ll", "hell"}, {"hell", "o", "hello"},
                               {"\xc4\xa0", "h", "\xc4\xa0h"}};
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    for (int i = 0; i < 5; i++) {
        cJSON_AddNumberToObject(vocab, merged[i][2], 256 + i);
        if (pair_merges) {
            const char *pair[2] = {merged[i][0], merged[i][1]};
            cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pair, 2));
        } else {
            char *text = xasprintf("%s %s", merged[i][0], merged[i][1]);
            cJSON_AddItemToArray(merges, cJSON_CreateString(text));
            free(text);
        }
    }
    cJSON_AddNumberToObject(vocab, "ab", 264);
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    const char *content[3] = {"<|endoftext|>", "<tag>", "word"};
    for (int i = 0; i < 3; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", 261 + i);
        cJSON_AddStringToObject(t, "content", content[i]);
        cJSON_AddBoolToObject(t, "single_word", i == 2);
        cJSON_AddBoolToObject(t, "lstrip", i == 1);
        cJSON_AddBoolToObject(t, "rstrip", i == 1);
        cJSON_AddFalseToObject(t, "normalized");
        cJSON_AddBoolToObject(t, "special", i < 2);
        cJSON_AddItemToArray(added, t);
    }
    return root;
}

/* writes root (freed) to the test directory's tokenizer.json and loads it */
static int load_json(cJSON *root, Tokenizer **tok) {
    char *text = cJSON_PrintUnformatted(root), *path = path_join(test_tmpdir(), "tokenizer.json");
    cJSON_Delete(root);
    int rc = atomic_write_file(path, text, strlen(text));
    free(text);
    if (!rc) rc = tokenizer_load_hf(tok, path);
    free(path);
    return rc;
}

/* encodes text and compares with the expected ids */
static int encodes_to(const Tokenizer *tok, const char *text, const uint32_t *expected, size_t n_expected) {
    uint32_t *ids;
    size_t n;
    if (tokenizer_encode(tok, (const unsigned char *)text, strlen(text), &ids, &n)) return 0;
    int ok = n == n_expected && (n == 0 || !memcmp(ids, expected, n * sizeof *ids));
    if (!ok) {
        printf("    %s ->", text);
        for (size_t i = 0; i < n; i++) printf(" %u", ids[i]);
        printf("\n");
    }
    free(ids);
    return ok;
}

TEST(hf_tokenizer_merges_by_rank) {
    for (int pair_merges = 0; pair_merges < 2; pair_merges++) {
        Tokenizer *tok = NULL;
        CHECK_MSG(load_json(fixture(pair_merges), &tok) == 0, "%s", up_last_error());
        if (!tok) return;
        CHECK(tokenizer_is_hf(tok) && tokenizer_is_bpe(tok));
        CHECK(tokenizer_vocab_size(tok) == 265);
        CHECK(tokenizer_eod_id(tok) == 261);
        CHECK(tokenizer_token_id(tok, "<tag>") == 262 && tokenizer_token_id(tok, "hello") == 259);
        CHECK(encodes_to(tok, "hello hello", (uint32_t[]){259, 32, 259}, 3));
        CHECK(encodes_to(tok, "", NULL, 0));
        tokenizer_free(tok);
    }
}

TEST(hf_tokenizer_added_tokens) {
    Tokenizer *tok = NULL;
    CHECK_MSG(load_json(fixture(0), &tok) == 0, "%s", up_last_error());
    if (!tok) return;
    CHECK(encodes_to(tok, "a<|endoftext|>b", (uint32_t[]){97, 261, 98}, 3));
    CHECK(encodes_to(tok, "x  <tag>\ty", (uint32_t[]){120, 262, 121}, 3));          /* lstrip, rstrip */
    CHECK(encodes_to(tok, "<|endoftext|<tag", (uint32_t[]){60, 124, 101, 110, 100, 111, 102, 116, 101, 120, 116, 124, 60,
                                                           116, 97, 103}, 16)); /* partial tokens are text */
    CHECK(encodes_to(tok, "words word", (uint32_t[]){119, 111, 114, 100, 115, 32, 263}, 7)); /* single_word */
    tokenizer_free(tok);
}

static void add_token(cJSON *root, int id, const char *content, int normalized) {
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "id", id);
    cJSON_AddStringToObject(t, "content", content);
    cJSON_AddBoolToObject(t, "normalized", normalized);
    cJSON_AddItemToArray(cJSON_GetObjectItem(root, "added_tokens"), t);
}

/* As the Rust library: tokens with normalized false are matched in the raw text first; the
 * text between them is normalized, and tokens with normalized true are matched in that, as
 * their own normalized form. */
TEST(hf_tokenizer_normalized_added_tokens_match_after_normalization) {
    cJSON *root = fixture(0);
    add_token(root, 265, "e\xcc\x81", 1); /* e + combining acute: NFC makes it U+00E9 */
    add_token(root, 266, "xy", 0);
    add_token(root, 267, "wx", 1);
    Tokenizer *tok = NULL;
    CHECK_MSG(load_json(root, &tok) == 0, "%s", up_last_error());
    if (!tok) return;
    CHECK(encodes_to(tok, "caf\xc3\xa9", (uint32_t[]){99, 97, 102, 265}, 4));  /* precomposed é in the text */
    CHECK(encodes_to(tok, "cafe\xcc\x81", (uint32_t[]){99, 97, 102, 265}, 4)); /* decomposed: normalized first */
    CHECK(encodes_to(tok, "wxy", (uint32_t[]){119, 266}, 2)); /* the raw pass takes xy before wx is looked for */
    CHECK(encodes_to(tok, "wxz", (uint32_t[]){267, 122}, 2));
    uint32_t id = 265;
    char *text;
    CHECK(tokenizer_decode(tok, &id, 1, &text, NULL) == 0 && !strcmp(text, "e\xcc\x81")); /* decodes to its content */
    free(text);
    tokenizer_free(tok);
}

TEST(hf_tokenizer_nfc_and_ignore_merges) {
    Tokenizer *tok = NULL;
    CHECK_MSG(load_json(fixture(0), &tok) == 0, "%s", up_last_error());
    if (!tok) return;
    CHECK(encodes_to(tok, "e\xcc\x81", (uint32_t[]){0xc3, 0xa9}, 2)); /* NFC: e + acute is é */
    CHECK(encodes_to(tok, "ab", (uint32_t[]){97, 98}, 2));
    tokenizer_free(tok);
    cJSON *root = fixture(0);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(root, "model"), "ignore_merges", cJSON_CreateTrue());
    CHECK_MSG(load_json(root, &tok) == 0, "%s", up_last_error());
    if (!tok) return;
    CHECK(encodes_to(tok, "ab ab", (uint32_t[]){264, 32, 97, 98}, 4)); /* the whole piece, if in the vocab */
    tokenizer_free(tok);
}

TEST(hf_tokenizer_decode_round_trip) {
    Tokenizer *tok = NULL;
    CHECK_MSG(load_json(fixture(0), &tok) == 0, "%s", up_last_error());
    if (!tok) return;
    const char *texts[] = {"hello hello", "  spaces\t\n\r\nand 123 digits", "日本語 🤖 café <tag> x<|endoftext|>"};
    for (int i = 0; i < 3; i++) {
        uint32_t *ids;
        size_t n, n_out;
        char *out;
        CHECK(tokenizer_encode(tok, (const unsigned char *)texts[i], strlen(texts[i]), &ids, &n) == 0);
        CHECK(tokenizer_decode(tok, ids, n, &out, &n_out) == 0);
        /* lstrip/rstrip swallow the whitespace around <tag>: that text does not come back */
        const char *expected = i == 2 ? "日本語 🤖 café<tag>x<|endoftext|>" : texts[i];
        CHECK_MSG(n_out == strlen(expected) && !memcmp(out, expected, n_out), "%s", out);
        free(ids);
        free(out);
    }
    char *out;
    CHECK(tokenizer_decode(tok, (uint32_t[]){265}, 1, &out, NULL) == -1 && error_mentions("265"));
    const unsigned char bad[] = {'o', 'k', 0xff, 'x'};
    uint32_t *ids;
    size_t n;
    CHECK(tokenizer_encode(tok, bad, sizeof bad, &ids, &n) == -1 && error_mentions("invalid UTF-8 at byte 2"));
    tokenizer_free(tok);
}

TEST(hf_tokenizer_load_dir_and_save) {
    Tokenizer *tok = NULL, *again = NULL;
    CHECK_MSG(load_json(fixture(0), &tok) == 0, "%s", up_last_error());
    if (!tok) return;
    char *dir = path_join(test_tmpdir(), "data"), *copy = path_join(dir, "tokenizer.json");
    CHECK(mkdir_p(dir) == 0 && tokenizer_save(tok, copy) == 0);
    CHECK_MSG(tokenizer_load_dir(&again, dir) == 0, "%s", up_last_error());
    CHECK(again && tokenizer_is_hf(again) && tokenizer_vocab_size(again) == 265);
    if (again) CHECK(encodes_to(again, "hello hello", (uint32_t[]){259, 32, 259}, 3));
    tokenizer_free(again);
    tokenizer_free(tok);
    free(dir);
    free(copy);
}

/* one field changed: load refuses in one line naming it */
static void check_refused(const char *object, const char *field, cJSON *value, const char *expected_text) {
    cJSON *root = fixture(0), *parent = root;
    if (!strcmp(object, "split"))
        parent = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "pre_tokenizer"), "pretokenizers"), 0);
    else if (object[0]) parent = cJSON_GetObjectItem(root, object);
    cJSON_ReplaceItemInObject(parent, field, value);
    Tokenizer *tok = NULL;
    CHECK_MSG(load_json(root, &tok) == -1, "%s.%s accepted", object, field);
    CHECK_MSG(error_mentions(expected_text) && !strchr(up_last_error(), '\n'), "%s", up_last_error());
    tokenizer_free(tok);
}

TEST(hf_tokenizer_refuses_what_is_not_implemented) {
    check_refused("model", "type", cJSON_CreateString("WordPiece"), "field model.type is \"WordPiece\"; expected BPE");
    check_refused("normalizer", "type", cJSON_CreateString("Lowercase"), "field normalizer.type is \"Lowercase\"");
    check_refused("pre_tokenizer", "type", cJSON_CreateString("Metaspace"), "field pre_tokenizer.type is \"Metaspace\"");
    check_refused("split", "behavior", cJSON_CreateString("MergedWithPrevious"), "behavior is \"MergedWithPrevious\"");
    check_refused("decoder", "type", cJSON_CreateString("WordPiece"), "field decoder.type is \"WordPiece\"");
    check_refused("model", "dropout", cJSON_CreateNumber(0.1), "field model.dropout");
    check_refused("model", "merges", cJSON_CreateStringArray((const char *[]){"h zz"}, 1), "model.merges[0]: \"zz\"");
    check_refused("", "pre_tokenizer", cJSON_CreateNull(), "no ByteLevel step");
    cJSON *pattern = cJSON_CreateObject();
    cJSON_AddStringToObject(pattern, "Regex", "(unclosed");
    check_refused("split", "pattern", pattern, "PCRE2 cannot compile");
}

TEST(hf_tokenizer_split_string_removed_and_invert) {
    cJSON *root = fixture(0);
    cJSON *split = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "pre_tokenizer"), "pretokenizers"), 0);
    cJSON *pattern = cJSON_CreateObject();
    cJSON_AddStringToObject(pattern, "String", " ");
    cJSON_ReplaceItemInObject(split, "pattern", pattern);
    cJSON_ReplaceItemInObject(split, "behavior", cJSON_CreateString("Removed"));
    Tokenizer *tok = NULL;
    CHECK_MSG(load_json(root, &tok) == 0, "%s", up_last_error());
    if (!tok) return;
    CHECK(encodes_to(tok, "hello  hello", (uint32_t[]){259, 259}, 2)); /* the spaces are removed */
    tokenizer_free(tok);
    root = fixture(0);
    split = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "pre_tokenizer"), "pretokenizers"), 0);
    pattern = cJSON_CreateObject();
    cJSON_AddStringToObject(pattern, "Regex", "\\p{L}+");
    cJSON_ReplaceItemInObject(split, "pattern", pattern);
    cJSON_ReplaceItemInObject(split, "behavior", cJSON_CreateString("Removed"));
    cJSON_ReplaceItemInObject(split, "invert", cJSON_CreateTrue());
    CHECK_MSG(load_json(root, &tok) == 0, "%s", up_last_error());
    if (!tok) return;
    CHECK(encodes_to(tok, "hello, 12 hello!", (uint32_t[]){259, 259}, 2)); /* only the matches are kept */
    tokenizer_free(tok);
}
