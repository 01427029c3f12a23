/* upcycle bench tokenize: MB/s of encoding a corpus with a Hugging Face tokenizer.json, ours on
 * 1 and N threads and Hugging Face's tokenizers (the Rust library, from PyPI) on the same
 * documents with the same thread counts in the same run, and whether all of them gave the same
 * ids (count and FNV-1a hash of the ids in order). Loading is timed apart from encoding. */
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

/* the Rust library on docs (JSONL) with RAYON_NUM_THREADS=threads */
static int run_reference(const char *python, const char *docs, const char *tok_dir, int threads, Reference *ref) {
    char script[4096];
    if (cli_repo_file("tests/hf_tokenizer_ref.py", "UPCYCLE_HF_TOKENIZER_REF", script, sizeof script)) return -1;
    char cmd[16384], line[4096] = "", last[4096] = "";
    snprintf(cmd, sizeof cmd, "RAYON_NUM_THREADS=%d TOKENIZERS_PARALLELISM=true '%s' '%s' '%s' --bench '%s' --rounds 3 2>&1", threads,
             python, script, tok_dir, docs);
    FILE *p = popen(cmd, "r");
    if (!p) return up_error("cannot run %s; expected the Python of scripts/pyenv.sh", python);
    cJSON *j = NULL;
    while (fgets(line, sizeof line, p)) {
        if (line[0] == '{' && !j) j = cJSON_Parse(line);
        else snprintf(last, sizeof last, "%.*s", (int)strcspn(line, "\n"), line);
    }
    int st = pclose(p), rc = 0;
    const char *keys[4] = {"seconds", "load_seconds", "bytes", "ids"};
    double *dst[4] = {&ref->seconds, &ref->load_seconds, &ref->bytes, &ref->ids};
    for (int k = 0; k < 4 && !rc; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[k]);
        if (cJSON_IsNumber(v)) *dst[k] = v->valuedouble;
        else rc = up_error("tokenizers (%s) failed (exit %d): %s; expected its JSON line with \"%s\"", script, st, last[0] ? last : "no output",
                           keys[k]);
    }
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "hash"), *v = cJSON_GetObjectItemCaseSensitive(j, "version");
    if (!rc) ref->hash = cJSON_IsNumber(h) ? (uint32_t)h->valuedouble : 0;
    if (!rc) snprintf(ref->version, sizeof ref->version, "%s", cJSON_IsString(v) ? v->valuestring : "?");
    cJSON_Delete(j);
    return rc;
}

int bench_tokenize_cmd(int argc, char **argv) {
    const char *kind = NULL, *jsonl_field = "text", *doc_sep = NULL;
    static CliStrList inputs;
    inputs.n = 0;
    int threads = 0, no_reference = 0;
    CliOption opts[] = {
        {"tokenizer", OPT_STR, &kind, "hf:PATH: a Hugging Face tokenizer.json or its directory (required)"},
        {"input", OPT_STRS, &inputs, "documents as for tokenize: a text file, a directory or a .jsonl file; may repeat (required)"},
        {"jsonl-field", OPT_STR, &jsonl_field, "the field of a .jsonl record that holds the document (default text)"},
        {"doc-sep", OPT_STR, &doc_sep, "cut text files into documents at every occurrence of this string"},
        {"threads", OPT_COUNT, &threads, "threads of the parallel run (default: all cores)"},
        {"no-reference", OPT_FLAG, &no_reference, "time ours only (default: also Hugging Face's tokenizers from the pinned PyPI "
                                                  "environment, scripts/pyenv.sh, or $UPCYCLE_TOKENIZERS_PYTHON)"},
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
        char python[4096], why[4096];
        char *tok_dir = path_dirname(tokenizer_hf_json_path(tok)), *dir = NULL, *docs = NULL;
        if (cli_pyenv_python("tf5", "UPCYCLE_TOKENIZERS_PYTHON", python, sizeof python, why, sizeof why)) {
            printf("tokenizers (Rust): skipped (%s)\n", why);
        } else if (!(dir = make_scratch_dir("upcycle-bench-tokenize")) || write_documents(&corpus, docs = path_join(dir, "documents.jsonl"))) {
            rc = -1;
        } else {
            /* the same thread counts as ours: 1, then N */
            int counts[2] = {1, threads};
            double ours[2] = {s1, best};
            IdHash *mine[2] = {&h1, threads > 1 ? &hn : &h1};
            for (int k = 0; k < (threads > 1 ? 2 : 1) && !rc; k++) {
                Reference ref = {0};
                if (run_reference(python, docs, tok_dir, counts[k], &ref)) {
                    rc = -1;
                    break;
                }
                char label[96];
                snprintf(label, sizeof label, "tokenizers %s (Rust), %d thread%s", ref.version, counts[k], counts[k] > 1 ? "s" : "");
                printf("%-40s %8.2f %9.2f %12.0f   %08x\n", label, ref.load_seconds, ref.bytes / 1e6 / ref.seconds, ref.ids, ref.hash);
                printf("upcycle / tokenizers on %d thread%s: %.2fx\n", counts[k], counts[k] > 1 ? "s" : "", ref.seconds / ours[k]);
                if ((uint64_t)ref.ids != mine[k]->n || ref.hash != mine[k]->hash)
                    rc = up_error("the ids differ from tokenizers' on %d threads (%.0f ids, hash %08x, against our %llu, %08x); expected the "
                                  "same ids", counts[k], ref.ids, ref.hash, (unsigned long long)mine[k]->n, mine[k]->hash);
            }
            if (!rc) printf("ids: identical to tokenizers (Rust)\n");
        }
        if (dir) remove_tree(dir);
        free(docs), free(dir), free(tok_dir);
    }
    if (!same_threads) rc = up_error("%d threads gave other ids than 1 thread; expected the same ids on any thread count", threads);
    printf("peak resident memory: %.0f MB for %.1f MB of text\n", peak_rss_bytes() / (1 << 20), mb);
    free(segs), corpus_free(&corpus), tokenizer_free(tok);
    return rc ? cli_fail() : 0;
}
