/* upcycle bench tokenize: MB/s of encoding a corpus with a Hugging Face tokenizer.json, ours on
 * 1 and N threads and Hugging Face's tokenizers.js on the same documents in the same run, and
 * whether all of them gave the same ids (count and FNV-1a hash of the ids in order). */
#include <cjson/cJSON.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "data/corpus.h"
#include "data/corpus_encode.h"
#include "data/tokenizer.h"
#include "util.h"

typedef struct {
    uint64_t n;
    uint32_t hash;
} IdHash;

static int hash_ids(void *ctx, const uint32_t *ids, size_t n) {
    IdHash *h = ctx;
    for (size_t i = 0; i < n; i++) h->hash = (h->hash ^ ids[i]) * 16777619u;
    h->n += n;
    return 0;
}

static int time_ours(const Corpus *c, const Tokenizer *tok, const Segment *segs, int threads, double *seconds, IdHash *h) {
    *h = (IdHash){0, 0x811c9dc5u};
    double t0 = now_seconds();
    int rc = corpus_encode(c, tok, segs, c->n_docs, NULL, 0, threads, hash_ids, h);
    *seconds = now_seconds() - t0;
    return rc;
}

/* the documents as JSONL {"text": ...} for the reference */
static int write_documents(const Corpus *c, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return up_error("%s: cannot create; expected a writable TMPDIR", path);
    CorpusReader r;
    corpus_reader_init(&r);
    int rc = 0;
    for (size_t d = 0; d < c->n_docs && !rc; d++) {
        const char *text;
        rc = corpus_text(c, d, &r, &text);
        if (rc) break;
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "text", text);
        char *line = cJSON_PrintUnformatted(j);
        if (fputs(line, f) < 0 || fputc('\n', f) < 0) rc = up_error("%s: write failed; expected enough disk space", path);
        free(line);
        cJSON_Delete(j);
    }
    corpus_reader_free(&r);
    if (fclose(f) && !rc) rc = up_error("%s: write failed; expected enough disk space", path);
    return rc;
}

typedef struct {
    double seconds, load_seconds, bytes, ids;
    uint32_t hash;
    char version[64];
} Reference;

static int run_reference(const Corpus *c, const char *modules, const char *tok_dir, Reference *ref) {
    char script[4096];
    if (cli_repo_file("tests/hf_tokenizer_ref.mjs", "UPCYCLE_HF_TOKENIZER_REF", script, sizeof script)) return -1;
    char *dir = make_scratch_dir("upcycle-bench-tokenize");
    if (!dir) return -1;
    char *docs = path_join(dir, "documents.jsonl");
    int rc = write_documents(c, docs);
    char cmd[16384], line[4096] = "", last[4096] = "";
    snprintf(cmd, sizeof cmd, "node --version 2>&1 && node '%s' '%s' '%s' --bench '%s' 2>&1", script, modules, tok_dir, docs);
    FILE *p = rc ? NULL : popen(cmd, "r");
    if (!rc && !p) rc = up_error("cannot run node; expected Node.js (Debian's nodejs)");
    cJSON *j = NULL;
    while (p && fgets(line, sizeof line, p)) {
        if (line[0] == 'v' && !ref->version[0]) snprintf(ref->version, sizeof ref->version, "%.*s", (int)strcspn(line, "\n"), line);
        else if (line[0] == '{' && !j) j = cJSON_Parse(line);
        else snprintf(last, sizeof last, "%.*s", (int)strcspn(line, "\n"), line);
    }
    int st = p ? pclose(p) : 0;
    const char *keys[4] = {"seconds", "load_seconds", "bytes", "ids"};
    double *dst[4] = {&ref->seconds, &ref->load_seconds, &ref->bytes, &ref->ids};
    for (int k = 0; k < 4 && !rc; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[k]);
        if (cJSON_IsNumber(v)) *dst[k] = v->valuedouble;
        else rc = up_error("tokenizers.js (%s) failed (exit %d): %s; expected its JSON line with \"%s\"", script, st, last[0] ? last : "no output",
                           keys[k]);
    }
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "hash");
    if (!rc) ref->hash = cJSON_IsNumber(h) ? (uint32_t)h->valuedouble : 0;
    cJSON_Delete(j);
    remove_tree(dir);
    free(docs), free(dir);
    return rc;
}

int bench_tokenize_cmd(int argc, char **argv) {
    const char *kind = NULL, *jsonl_field = "text", *doc_sep = NULL, *modules_arg = NULL;
    static CliStrList inputs;
    inputs.n = 0;
    int threads = 0, no_reference = 0;
    CliOption opts[] = {
        {"tokenizer", OPT_STR, &kind, "hf:PATH: a Hugging Face tokenizer.json or its directory (required)"},
        {"input", OPT_STRS, &inputs, "documents as for tokenize: a text file, a directory or a .jsonl file; may repeat (required)"},
        {"jsonl-field", OPT_STR, &jsonl_field, "the field of a .jsonl record that holds the document (default text)"},
        {"doc-sep", OPT_STR, &doc_sep, "cut text files into documents at every occurrence of this string"},
        {"threads", OPT_INT, &threads, "threads of the parallel run (default: all cores)"},
        {"modules", OPT_STR, &modules_arg, "node_modules holding @huggingface/tokenizers (default $UPCYCLE_NPM_CACHE/node_modules, "
                                           "else build/npm-cache/node_modules beside the binary, as tests/hf_tokenizer_test.sh installs it)"},
        {"no-reference", OPT_FLAG, &no_reference, "time ours only"},
    };
    int prc = cli_parse("bench tokenize", "--tokenizer hf:PATH --input PATH [--input PATH ...] [--threads N]", argc, argv, opts,
                        sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    if (!kind || strncmp(kind, "hf:", 3) || !inputs.n)
        return cli_usage_error("bench tokenize", "--tokenizer hf:PATH and --input are required; expected --tokenizer hf:PATH --input PATH");
    if (threads < 0) return cli_usage_error("bench tokenize", "--threads %d; expected >= 0 (0: all cores)", threads);
    if (!threads) threads = omp_get_num_procs();

    Tokenizer *tok = NULL;
    double t0 = now_seconds();
    if (tokenizer_load_hf(&tok, kind + 3)) return cli_fail();
    double load_seconds = now_seconds() - t0;
    Corpus corpus = {0};
    CorpusOptions copt = {.jsonl_field = jsonl_field, .doc_sep = doc_sep};
    int rc = 0;
    for (int i = 0; i < inputs.n && !rc; i++) rc = corpus_add_path(&corpus, inputs.items[i], &copt);
    if (!rc && !corpus.n_docs) rc = up_error("%s: no documents; expected non-empty text files", inputs.items[0]);
    Segment *segs = rc ? NULL : xmalloc(corpus.n_docs * sizeof *segs);
    for (size_t d = 0; !rc && d < corpus.n_docs; d++) segs[d] = (Segment){d, 0, corpus.docs[d].n_bytes, 0};
    double mb = (double)corpus.n_bytes / 1e6, s1 = 0, sn = 0;
    IdHash h1, hn;
    if (!rc) rc = time_ours(&corpus, tok, segs, threads, &sn, &hn); /* untimed: reads the files into the page cache */
    if (!rc) rc = time_ours(&corpus, tok, segs, 1, &s1, &h1);
    if (!rc && threads > 1) rc = time_ours(&corpus, tok, segs, threads, &sn, &hn);
    if (rc) {
        free(segs), corpus_free(&corpus), tokenizer_free(tok);
        return cli_fail();
    }
    char cpu[256];
    cpu_description(cpu, sizeof cpu);
    printf("bench tokenize: %s, %zu documents, %.2f MB; %s; %d cores\n", tokenizer_hf_json_path(tok), corpus.n_docs, mb, cpu,
           omp_get_num_procs());
    printf("%-40s %8s %9s %12s %10s\n", "tokenizer", "load s", "MB/s", "ids", "hash");
    printf("%-40s %8.2f %9.2f %12llu   %08x\n", "upcycle, 1 thread", load_seconds, mb / s1, (unsigned long long)h1.n, h1.hash);
    if (threads > 1) {
        char label[64];
        snprintf(label, sizeof label, "upcycle, %d threads", threads);
        printf("%-40s %8.2f %9.2f %12llu   %08x\n", label, load_seconds, mb / sn, (unsigned long long)hn.n, hn.hash);
    }
    int same_threads = threads <= 1 || (hn.n == h1.n && hn.hash == h1.hash);
    double best = threads > 1 ? sn : s1;
    if (!no_reference) {
        char modules[4096];
        const char *cache = getenv("UPCYCLE_NPM_CACHE");
        char *exe = exe_dirname();
        if (modules_arg) snprintf(modules, sizeof modules, "%s", modules_arg);
        else if (cache && *cache) snprintf(modules, sizeof modules, "%s/node_modules", cache);
        else snprintf(modules, sizeof modules, "%s/build/npm-cache/node_modules", exe ? exe : ".");
        free(exe);
        char probe[4200];
        snprintf(probe, sizeof probe, "%s/@huggingface/tokenizers/package.json", modules);
        Reference ref = {0};
        char *tok_dir = path_dirname(tokenizer_hf_json_path(tok));
        if (!path_exists(probe)) {
            printf("tokenizers.js: skipped (%s not found; tests/hf_tokenizer_test.sh installs it, or --modules DIR)\n", probe);
        } else if (run_reference(&corpus, modules, tok_dir, &ref)) {
            rc = -1;
        } else {
            char label[96];
            snprintf(label, sizeof label, "tokenizers.js (node %s), 1 thread", ref.version);
            printf("%-40s %8.2f %9.2f %12.0f   %08x\n", label, ref.load_seconds, ref.bytes / 1e6 / ref.seconds, ref.ids, ref.hash);
            printf("upcycle / tokenizers.js: %.2fx on 1 thread, %.2fx on %d threads\n", ref.seconds / s1, ref.seconds / best, threads);
            if ((uint64_t)ref.ids != h1.n || ref.hash != h1.hash)
                rc = up_error("the ids differ from tokenizers.js (%.0f ids, hash %08x, against our %llu, %08x); expected the same ids",
                              ref.ids, ref.hash, (unsigned long long)h1.n, h1.hash);
            else printf("ids: identical to tokenizers.js\n");
        }
        free(tok_dir);
    }
    if (!same_threads) rc = up_error("%d threads gave other ids than 1 thread; expected the same ids on any thread count", threads);
    printf("peak resident memory: %.0f MB for %.1f MB of text\n", peak_rss_bytes() / (1 << 20), mb);
    free(segs), corpus_free(&corpus), tokenizer_free(tok);
    return rc ? cli_fail() : 0;
}
