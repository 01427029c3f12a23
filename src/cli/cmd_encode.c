/* upcycle encode / decode: text -> token ids as one JSON array on stdout, and back (for
 * scripting and tokenizer parity checks). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "data/tokenizer.h"
#include "util.h"
#include "util/json.h"

#define TOKENIZER_HELP                                                                                         \
    "byte (default), a data directory from `upcycle tokenize` (its tokenizer.json, else bytes), or hf:PATH (a Hugging " \
    "Face byte-level BPE tokenizer.json or its directory)"

/* --tokenizer: "byte", a data directory, or hf:PATH */
static int open_tokenizer(const char *command, const char *spec, Tokenizer **tok) {
    if (!strncmp(spec, "hf:", 3)) return tokenizer_load_hf(tok, spec + 3) ? cli_fail() : 0;
    if (!strcmp(spec, "byte")) {
        *tok = tokenizer_byte();
        return 0;
    }
    if (!is_dir(spec)) return cli_usage_error(command, "--tokenizer %s; expected byte or a data directory from `upcycle tokenize`", spec);
    return tokenizer_load_dir(tok, spec) ? cli_fail() : 0;
}

/* the whole input: a file, or standard input for "-" */
static int read_input(const char *path, char **text, size_t *n) {
    if (strcmp(path, "-")) return read_file(path, text, n);
    size_t cap = 1 << 16;
    *text = xmalloc(cap + 1), *n = 0;
    for (size_t got; (got = fread(*text + *n, 1, cap - *n, stdin)) > 0;) {
        *n += got;
        if (*n == cap) *text = xrealloc(*text, (cap *= 2) + 1);
    }
    if (ferror(stdin)) {
        free(*text);
        return up_error("standard input: read failed; expected readable input");
    }
    (*text)[*n] = 0;
    return 0;
}

int cmd_encode(int argc, char **argv) {
    const char *spec = "byte", *input = NULL;
    CliOption opts[] = {
        {"tokenizer", OPT_STR, &spec, TOKENIZER_HELP},
        {"input", OPT_STR, &input, "text file to encode, or - for standard input (required)"},
    };
    int prc = cli_parse("encode", "--input FILE [--tokenizer byte|DATA_DIR|hf:PATH]", argc, argv, opts, 2);
    if (prc) return prc == 1 ? 0 : prc;
    if (!input) return cli_usage_error("encode", "--input is required; expected --input FILE (or - for standard input)");
    Tokenizer *tok;
    int rc = open_tokenizer("encode", spec, &tok);
    if (rc) return rc;
    char *text = NULL;
    size_t n = 0;
    uint32_t *ids = NULL;
    size_t n_ids = 0;
    rc = read_input(input, &text, &n) || tokenizer_encode(tok, (const unsigned char *)text, n, &ids, &n_ids);
    if (!rc) {
        fputc('[', stdout);
        for (size_t i = 0; i < n_ids; i++) printf(i ? ", %u" : "%u", ids[i]);
        fputs("]\n", stdout);
    }
    free(text);
    free(ids);
    tokenizer_free(tok);
    return rc ? cli_fail() : 0;
}

int cmd_decode(int argc, char **argv) {
    const char *spec = "byte", *input = "-";
    CliOption opts[] = {
        {"tokenizer", OPT_STR, &spec, TOKENIZER_HELP},
        {"input", OPT_STR, &input, "a JSON array of token ids (as encode prints), or - for standard input (default)"},
    };
    int prc = cli_parse("decode", "[--input FILE] [--tokenizer byte|DATA_DIR|hf:PATH]", argc, argv, opts, 2);
    if (prc) return prc == 1 ? 0 : prc;
    Tokenizer *tok;
    int rc = open_tokenizer("decode", spec, &tok);
    if (rc) return rc;
    const char *origin = strcmp(input, "-") ? input : "standard input";
    char *text = NULL, *out = NULL;
    size_t n = 0, n_out = 0;
    int32_t *ids = NULL; /* ids are >= 0: the same bits as the tokenizer's uint32_t */
    cJSON *j = NULL;
    rc = read_input(input, &text, &n);
    if (!rc) {
        j = cJSON_ParseWithLength(text, n);
        if (!cJSON_IsArray(j)) rc = up_error("%s: not a JSON array; expected token ids as `upcycle encode` prints them", origin);
    }
    int count = j ? cJSON_GetArraySize(j) : 0;
    if (!rc) ids = xmalloc(sizeof *ids * (size_t)(count ? count : 1));
    if (!rc) rc = json_token_ids(origin, j, "ids", tokenizer_vocab_size(tok), ids);
    if (!rc) rc = tokenizer_decode(tok, (const uint32_t *)ids, (size_t)count, &out, &n_out);
    if (!rc && fwrite(out, 1, n_out, stdout) != n_out) rc = up_error("standard output: write failed; expected a writable output");
    cJSON_Delete(j);
    free(out);
    free(ids);
    free(text);
    tokenizer_free(tok);
    return rc ? cli_fail() : 0;
}
