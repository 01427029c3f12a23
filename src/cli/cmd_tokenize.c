/* upcycle tokenize: text file -> DIR/{pretrain,cpt,val}.bin (+ tokenizer.json, meta.json). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "util.h"

static const char *SPLIT_NAMES[3] = {"pretrain", "cpt", "val"};

/* "pretrain=0.8,cpt=0.1,val=0.1": every name once, fractions > 0 summing to 1 */
static int parse_split(const char *spec, double fractions[3]) {
    fractions[0] = fractions[1] = fractions[2] = -1;
    char *copy = xstrdup(spec), *save = NULL;
    int rc = 0;
    for (char *part = strtok_r(copy, ",", &save); part && !rc; part = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(part, '=');
        if (!eq) {
            rc = up_error("--split '%s': part '%s' has no '='; expected pretrain=F,cpt=F,val=F", spec, part);
            break;
        }
        *eq = 0;
        int idx = -1;
        for (int i = 0; i < 3; i++)
            if (!strcmp(part, SPLIT_NAMES[i])) idx = i;
        char *end;
        double f = strtod(eq + 1, &end);
        if (idx < 0) rc = up_error("--split: unknown split '%s'; expected pretrain, cpt and val", part);
        else if (*end || !(f > 0 && f < 1)) rc = up_error("--split: %s=%s; expected a fraction in (0, 1)", part, eq + 1);
        else fractions[idx] = f;
    }
    free(copy);
    if (rc) return rc;
    double sum = 0;
    for (int i = 0; i < 3; i++) {
        if (fractions[i] < 0) return up_error("--split '%s': %s is missing; expected pretrain=F,cpt=F,val=F", spec, SPLIT_NAMES[i]);
        sum += fractions[i];
    }
    if (sum < 0.999 || sum > 1.001) return up_error("--split '%s': fractions sum to %g; expected 1", spec, sum);
    return 0;
}

static int write_meta(const char *path, const char *input, const char *kind, int vocab, const size_t counts[3],
                      const double fractions[3]) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddStringToObject(j, "source", input);
    cJSON_AddStringToObject(j, "tokenizer", kind);
    cJSON_AddNumberToObject(j, "vocab_size", vocab);
    cJSON *splits = cJSON_AddObjectToObject(j, "splits");
    for (int i = 0; i < 3; i++) {
        cJSON *s = cJSON_AddObjectToObject(splits, SPLIT_NAMES[i]);
        cJSON_AddNumberToObject(s, "fraction", fractions[i]);
        cJSON_AddNumberToObject(s, "tokens", (double)counts[i]);
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    int rc = atomic_write_file(path, text, strlen(text));
    free(text);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *input = NULL, *out = NULL, *kind = "byte", *split = "pretrain=0.8,cpt=0.1,val=0.1";
    int vocab = 2048, force = 0;
    CliOption opts[] = {
        {"input", OPT_STR, &input, "text file to tokenize (required)"},
        {"out", OPT_STR, &out, "output data directory (required; refused if it exists, unless --force)"},
        {"tokenizer", OPT_STR, &kind, "byte (vocab 256, default) or bpe (byte-level BPE trained on the pretrain part)"},
        {"vocab", OPT_INT, &vocab, "BPE vocabulary size, 257..65536 (default 2048)"},
        {"split", OPT_STR, &split, "contiguous disjoint fractions (default pretrain=0.8,cpt=0.1,val=0.1)"},
        {"force", OPT_FLAG, &force, "replace an existing output directory"},
    };
    int prc = cli_parse("tokenize", "--input FILE --out DIR [options]", argc, argv, opts, sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    if (!input || !out) return cli_usage_error("tokenize", "--input and --out are required; expected --input FILE --out DIR");
    int is_bpe = !strcmp(kind, "bpe");
    if (!is_bpe && strcmp(kind, "byte")) return cli_usage_error("tokenize", "--tokenizer %s; expected byte or bpe", kind);
    if (is_bpe && (vocab < 257 || vocab > 65536)) return cli_usage_error("tokenize", "--vocab %d; expected 257..65536", vocab);
    double fractions[3];
    if (parse_split(split, fractions)) return cli_fail();
    if (path_exists(out) && !force) {
        up_error("%s: output directory exists; expected a new path (or --force to replace it)", out);
        return cli_fail();
    }

    char *text;
    size_t n_bytes;
    if (read_file(input, &text, &n_bytes)) return cli_fail();
    if (n_bytes < 100) {
        free(text);
        up_error("%s: only %zu bytes; expected a text corpus of at least 100 bytes", input, n_bytes);
        return cli_fail();
    }
    /* the corpus is cut into byte ranges first, so BPE is trained on the pretrain part only */
    size_t cut1 = (size_t)(n_bytes * fractions[0]), cut2 = (size_t)(n_bytes * (fractions[0] + fractions[1]));
    size_t starts[3] = {0, cut1, cut2}, ends[3] = {cut1, cut2, n_bytes};
    Tokenizer *tok = NULL;
    double t0 = now_seconds();
    if (is_bpe) {
        if (tokenizer_train_bpe(&tok, (const unsigned char *)text, cut1, vocab)) {
            free(text);
            return cli_fail();
        }
    } else {
        tok = tokenizer_byte();
    }
    /* build everything in DIR.tmp.<pid>, then rename: no half-written data directory */
    size_t tn = strlen(out) + 32;
    char *tmp = xmalloc(tn);
    snprintf(tmp, tn, "%s.tmp.%ld", out, (long)getpid());
    remove_tree(tmp);
    int rc = mkdir_p(tmp);
    size_t counts[3] = {0};
    for (int s = 0; s < 3 && !rc; s++) {
        uint32_t *ids = NULL;
        size_t n_ids = 0;
        rc = tokenizer_encode(tok, (const unsigned char *)text + starts[s], ends[s] - starts[s], &ids, &n_ids);
        if (!rc) {
            char name[32];
            snprintf(name, sizeof name, "%s.bin", SPLIT_NAMES[s]);
            char *path = path_join(tmp, name);
            rc = shard_write(path, ids, n_ids, tokenizer_vocab_size(tok));
            free(path);
            counts[s] = n_ids;
        }
        free(ids);
    }
    if (!rc && is_bpe) {
        char *path = path_join(tmp, "tokenizer.json");
        rc = tokenizer_save(tok, path);
        free(path);
    }
    if (!rc) {
        char *path = path_join(tmp, "meta.json");
        rc = write_meta(path, input, kind, tokenizer_vocab_size(tok), counts, fractions);
        free(path);
    }
    if (!rc) {
        fsync_dir(tmp);
        if (path_exists(out)) remove_tree(out); /* only reached with --force */
        if (rename(tmp, out) != 0) rc = up_error("%s: cannot move the output into place; expected a writable directory", out);
    }
    if (rc) remove_tree(tmp);
    free(tmp);
    if (!rc)
        printf("tokenized %s (%zu bytes) with %s tokenizer (vocab %d) in %.2fs: pretrain %zu, cpt %zu, val %zu tokens -> %s\n",
               input, n_bytes, kind, tokenizer_vocab_size(tok), now_seconds() - t0, counts[0], counts[1], counts[2], out);
    tokenizer_free(tok);
    free(text);
    return rc ? cli_fail() : 0;
}
