/* upcycle tokenize: documents (files, directories, JSONL) -> DIR/{pretrain,cpt,val}.bin (+ tokenizer.json, meta.json). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "data/corpus.h"
#include "data/corpus_encode.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "util.h"
#include "util/dir_replace.h"

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

/* "\n", "\t", "\\" in a separator given on the command line */
static char *unescape(const char *s) {
    char *out = xmalloc(strlen(s) + 1), *o = out;
    for (; *s; s++) {
        if (*s == '\\' && (s[1] == 'n' || s[1] == 't' || s[1] == '\\')) {
            s++;
            *o++ = *s == 'n' ? '\n' : *s == 't' ? '\t' : '\\';
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
    return out;
}

typedef struct {
    Segment *items;
    size_t n, capacity, n_docs, n_bytes;
} SegmentList;

static void segment_add(SegmentList *l, size_t doc, uint64_t offset, uint64_t n, int eod_after) {
    if (n == 0 && !eod_after) return;
    if (l->n == l->capacity) l->items = xrealloc(l->items, (l->capacity = l->capacity ? 2 * l->capacity : 256) * sizeof *l->items);
    l->items[l->n++] = (Segment){doc, offset, n, eod_after};
    l->n_bytes += n;
    l->n_docs += eod_after;
}

/* a cut inside a document moves back to the start of the UTF-8 character it falls in */
static int char_boundary(const Corpus *c, size_t d, uint64_t *cut, CorpusReader *r) {
    const char *text;
    if (corpus_text(c, d, r, &text)) return -1;
    while (*cut > 0 && *cut < c->docs[d].n_bytes && ((unsigned char)text[*cut] & 0xC0) == 0x80) (*cut)--;
    return 0;
}

/* contiguous: the documents in input order as one stream, cut at byte fractions (a document may
 * straddle a cut); a single document is cut exactly as before documents existed (no end mark) */
static int split_contiguous(const Corpus *c, const double fractions[3], SegmentList lists[3]) {
    uint64_t cuts[2] = {(uint64_t)(c->n_bytes * fractions[0]), (uint64_t)(c->n_bytes * (fractions[0] + fractions[1]))};
    int marks = c->n_docs > 1;
    uint64_t at = 0;
    int s = 0;
    CorpusReader r;
    corpus_reader_init(&r);
    for (size_t d = 0; d < c->n_docs; d++) {
        uint64_t n = c->docs[d].n_bytes, off = 0;
        while (s < 2 && cuts[s] < at + n) {
            uint64_t cut = cuts[s] > at + off ? cuts[s] - at : off;
            if (char_boundary(c, d, &cut, &r)) {
                corpus_reader_free(&r);
                return -1;
            }
            if (cut < off) cut = off;
            segment_add(&lists[s], d, off, cut - off, 0);
            off = cut;
            s++;
        }
        segment_add(&lists[s], d, off, n - off, marks);
        at += n;
    }
    corpus_reader_free(&r);
    return 0;
}

static void split_by_document(const Corpus *c, const double fractions[3], uint64_t seed, SegmentList lists[3]) {
    size_t *order = xmalloc(c->n_docs * sizeof *order);
    int *split = xmalloc(c->n_docs * sizeof *split);
    corpus_split_documents(c, fractions, seed, order, split);
    for (size_t i = 0; i < c->n_docs; i++) segment_add(&lists[split[order[i]]], order[i], 0, c->docs[order[i]].n_bytes, 1);
    free(order), free(split);
}

/* the pretrain part's bytes, for BPE training (documents joined by a blank line) */
static int join_segments(const Corpus *c, const SegmentList *l, unsigned char **out, size_t *n_bytes) {
    unsigned char *text = xmalloc(l->n_bytes + 2 * l->n + 1), *at = text;
    CorpusReader r;
    corpus_reader_init(&r);
    for (size_t i = 0; i < l->n; i++) {
        const char *doc;
        if (corpus_text(c, l->items[i].doc, &r, &doc)) {
            corpus_reader_free(&r), free(text);
            return -1;
        }
        memcpy(at, doc + l->items[i].offset, (size_t)l->items[i].n_bytes);
        at += l->items[i].n_bytes;
        if (l->items[i].eod_after && i + 1 < l->n) *at++ = '\n', *at++ = '\n';
    }
    corpus_reader_free(&r);
    *out = text, *n_bytes = (size_t)(at - text);
    return 0;
}

static int to_shard(void *ctx, const uint32_t *ids, size_t n_ids) { return shard_writer_append(ctx, ids, n_ids); }

/* eod: the id that ends each document, or -1 to end it with eod_text's encoding; the split's
 * ids stream into path */
static int encode_split(const Corpus *c, const Tokenizer *tok, const SegmentList *l, int eod, const char *eod_text, const char *path,
                        size_t *n_ids) {
    uint32_t *eod_ids = NULL;
    size_t n_eod = 0;
    if (eod >= 0) eod_ids = xmalloc(sizeof *eod_ids), eod_ids[0] = (uint32_t)eod, n_eod = 1;
    else if (tokenizer_encode(tok, (const unsigned char *)eod_text, strlen(eod_text), &eod_ids, &n_eod)) return -1;
    ShardWriter w;
    int rc = shard_writer_open(&w, path, tokenizer_vocab_size(tok));
    if (!rc) rc = corpus_encode(c, tok, l->items, l->n, eod_ids, n_eod, 0, to_shard, &w);
    *n_ids = (size_t)w.n_tokens;
    if (!rc) rc = shard_writer_commit(&w);
    else shard_writer_abort(&w);
    free(eod_ids);
    return rc;
}

static int write_meta(const char *path, const CliStrList *inputs, const char *kind, int vocab, int by_document, uint64_t split_seed,
                      const Tokenizer *tok, int eod_id, const char *eod_text, int marks, const SegmentList lists[3], const size_t counts[3],
                      const double fractions[3]) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "version", 2);
    cJSON_AddStringToObject(j, "source", inputs->items[0]);
    cJSON *in = cJSON_AddArrayToObject(j, "inputs");
    for (int i = 0; i < inputs->n; i++) cJSON_AddItemToArray(in, cJSON_CreateString(inputs->items[i]));
    if (tokenizer_is_hf(tok)) {
        cJSON_AddStringToObject(j, "tokenizer", "hf");
        cJSON_AddStringToObject(j, "hf_tokenizer", tokenizer_hf_json_path(tok)); /* copied to tokenizer.json */
    } else {
        cJSON_AddStringToObject(j, "tokenizer", kind);
    }
    cJSON_AddNumberToObject(j, "vocab_size", vocab);
    cJSON_AddStringToObject(j, "split_by", by_document ? "document" : "contiguous");
    if (by_document) {
        char seed_text[32];
        snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)split_seed);
        cJSON_AddRawToObject(j, "split_seed", seed_text); /* exact, also above 2^53 */
    }
    else cJSON_AddNullToObject(j, "split_seed");
    cJSON *eod = cJSON_AddObjectToObject(j, "end_of_document");
    if (!marks) cJSON_AddStringToObject(eod, "kind", "none (a single document)");
    else if (eod_id >= 0) {
        cJSON_AddStringToObject(eod, "kind", "id");
        cJSON_AddNumberToObject(eod, "id", eod_id);
        if (tokenizer_is_hf(tok)) cJSON_AddStringToObject(eod, "text", eod_text); /* the token's text */
    }
    else cJSON_AddStringToObject(eod, "kind", "text"), cJSON_AddStringToObject(eod, "text", eod_text);
    cJSON *splits = cJSON_AddObjectToObject(j, "splits");
    for (int i = 0; i < 3; i++) {
        cJSON *s = cJSON_AddObjectToObject(splits, SPLIT_NAMES[i]);
        cJSON_AddNumberToObject(s, "fraction", fractions[i]);
        cJSON_AddNumberToObject(s, "documents", (double)lists[i].n_docs);
        cJSON_AddNumberToObject(s, "bytes", (double)lists[i].n_bytes);
        cJSON_AddNumberToObject(s, "tokens", (double)counts[i]);
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    int rc = atomic_write_file(path, text, strlen(text));
    free(text);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *out = NULL, *kind = "byte", *split = "pretrain=0.8,cpt=0.1,val=0.1", *split_by = NULL;
    const char *doc_sep_arg = NULL, *jsonl_field = "text", *eod_arg = "\\n\\n", *eos_token = NULL;
    static CliStrList inputs;
    inputs.n = 0;
    unsigned long long split_seed = 1;
    int vocab = 2048, force = 0;
    CliOption opts[] = {
        {"input", OPT_STRS, &inputs, "a text file, a directory (every regular file one document, recursively, in sorted path order) "
                                     "or a .jsonl file (one document per line); may be given several times (required)"},
        {"out", OPT_STR, &out, "output data directory (required; refused if it exists, unless --force)"},
        {"tokenizer", OPT_STR, &kind, "byte (vocab 256, default), bpe (byte-level BPE trained on the pretrain part) or hf:PATH (a Hugging "
                                      "Face byte-level BPE tokenizer.json or its directory; copied into the data directory)"},
        {"vocab", OPT_INT, &vocab, "BPE vocabulary size, 257..65536, the end-of-document id included (default 2048)"},
        {"split", OPT_STR, &split, "disjoint fractions (default pretrain=0.8,cpt=0.1,val=0.1)"},
        {"split-by", OPT_STR, &split_by, "document (each whole document to one split by a seeded shuffle; the default with several "
                                         "documents) or contiguous (the text in input order cut at the fractions; time-ordered text)"},
        {"split-seed", OPT_U64, &split_seed, "seed of the document shuffle (default 1)"},
        {"doc-sep", OPT_STR, &doc_sep_arg, "cut text files into documents at every occurrence of this string (\\n, \\t escapes)"},
        {"jsonl-field", OPT_STR, &jsonl_field, "the field of a .jsonl record that holds the document (default text)"},
        {"eod-text", OPT_STR, &eod_arg, "byte tokenizer: the text that ends every document (default \\n\\n); BPE reserves an id"},
        {"eos-token", OPT_STR, &eos_token, "hf:PATH: the token that ends every document (default: <|endoftext|> if the file has it, "
                                           "else tokenizer_config.json's eos_token)"},
        {"force", OPT_FLAG, &force, "replace an existing output directory"},
    };
    int prc = cli_parse("tokenize", "--input PATH [--input PATH ...] --out DIR [options]", argc, argv, opts, sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    if (!inputs.n || !out) return cli_usage_error("tokenize", "--input and --out are required; expected --input PATH --out DIR");
    int is_bpe = !strcmp(kind, "bpe"), is_hf = !strncmp(kind, "hf:", 3);
    if (!is_bpe && !is_hf && strcmp(kind, "byte")) return cli_usage_error("tokenize", "--tokenizer %s; expected byte, bpe or hf:PATH", kind);
    if (eos_token && !is_hf) return cli_usage_error("tokenize", "--eos-token with --tokenizer %s; expected --tokenizer hf:PATH", kind);
    if (is_bpe && (vocab < 257 || vocab > 65536)) return cli_usage_error("tokenize", "--vocab %d; expected 257..65536", vocab);
    if (split_by && strcmp(split_by, "document") && strcmp(split_by, "contiguous"))
        return cli_usage_error("tokenize", "--split-by %s; expected document or contiguous", split_by);
    if (doc_sep_arg && !*doc_sep_arg) return cli_usage_error("tokenize", "--doc-sep is empty; expected a separator string");
    double fractions[3];
    if (parse_split(split, fractions)) return cli_fail();
    if (path_exists(out) && !force) {
        up_error("%s: output directory exists; expected a new path (or --force to replace it)", out);
        return cli_fail();
    }

    char *doc_sep = doc_sep_arg ? unescape(doc_sep_arg) : NULL, *eod_text = unescape(eod_arg);
    CorpusOptions copt = {.jsonl_field = jsonl_field, .doc_sep = doc_sep};
    Corpus corpus = {0};
    int rc = 0;
    for (int i = 0; i < inputs.n && !rc; i++) rc = corpus_add_path(&corpus, inputs.items[i], &copt);
    if (!rc && corpus.n_docs == 0)
        rc = up_error("%s: no documents (empty files are skipped); expected at least one non-empty text file", inputs.items[0]);
    if (!rc && corpus.n_bytes < 100)
        rc = up_error("%s: only %zu bytes; expected a text corpus of at least 100 bytes", inputs.items[0], corpus.n_bytes);
    int by_document = split_by ? !strcmp(split_by, "document") : corpus.n_docs > 1;
    if (!rc && by_document && corpus.n_docs < 3)
        rc = up_error("%s: %zu document(s); expected at least 3 for --split-by document (or --split-by contiguous)", inputs.items[0],
                      corpus.n_docs);
    free(doc_sep);
    if (rc) {
        corpus_free(&corpus), free(eod_text);
        return cli_fail();
    }
    int marks = corpus.n_docs > 1; /* documents are joined by an end-of-document mark */
    if (is_bpe && marks && vocab < 258) {
        corpus_free(&corpus), free(eod_text);
        return cli_usage_error("tokenize", "--vocab %d with %zu documents; expected 258..65536 (one id is the end-of-document token)", vocab,
                               corpus.n_docs);
    }
    SegmentList lists[3] = {0};
    if (by_document) split_by_document(&corpus, fractions, split_seed, lists);
    else rc = split_contiguous(&corpus, fractions, lists);
    for (int s = 0; s < 3 && !rc; s++)
        if (lists[s].n_bytes == 0) rc = up_error("%s: the %s split is empty; expected larger fractions or more text", inputs.items[0], SPLIT_NAMES[s]);

    /* BPE is trained on the pretrain part only */
    Tokenizer *tok = NULL;
    double t0 = now_seconds();
    int eod_id = -1; /* the id that ends each document (BPE: reserved; hf: the end-of-text token) */
    if (!rc && is_hf) {
        rc = tokenizer_load_hf(&tok, kind + 3);
        if (!rc) eod_id = eos_token ? tokenizer_token_id(tok, eos_token) : tokenizer_eod_id(tok);
        if (!rc && eos_token && eod_id < 0)
            rc = up_error("%s: --eos-token %s is not a token of this tokenizer; expected an added token such as <|endoftext|>",
                          tokenizer_hf_json_path(tok), eos_token);
        else if (!rc && marks && eod_id < 0)
            rc = up_error("%s: no <|endoftext|> token and no eos_token in tokenizer_config.json; expected --eos-token TEXT to end "
                          "each of the %zu documents", tokenizer_hf_json_path(tok), corpus.n_docs);
        if (!rc && eod_id >= 0) {
            char *text;
            uint32_t id = (uint32_t)eod_id;
            rc = tokenizer_decode(tok, &id, 1, &text, NULL);
            if (!rc) free(eod_text), eod_text = text; /* meta.json names the token */
        }
    } else if (!rc && is_bpe) {
        size_t n_train;
        unsigned char *train;
        rc = join_segments(&corpus, &lists[0], &train, &n_train);
        if (!rc) {
            rc = tokenizer_train_bpe(&tok, train, n_train, vocab, marks);
            free(train);
        }
    } else if (!rc) {
        tok = tokenizer_byte();
    }
    if (!rc && is_bpe) eod_id = tokenizer_eod_id(tok);
    /* build everything in OUT.tmp.<pid>, then swap it into place: no half-written data
     * directory, and with --force the old one stays until the new one is complete */
    DirReplace d = {0};
    if (!rc) rc = dir_replace_begin(&d, out);
    const char *tmp = d.tmp;
    size_t counts[3] = {0};
    for (int s = 0; s < 3 && !rc; s++) {
        char name[32];
        snprintf(name, sizeof name, "%s.bin", SPLIT_NAMES[s]);
        char *path = path_join(tmp, name);
        rc = encode_split(&corpus, tok, &lists[s], eod_id, eod_text, path, &counts[s]);
        free(path);
        if (rc) {
            char why[768];
            snprintf(why, sizeof why, "%s", up_last_error());
            rc = up_error("the %s split: %s", SPLIT_NAMES[s], why);
        }
    }
    if (!rc && (is_bpe || is_hf)) {
        char *path = path_join(tmp, "tokenizer.json");
        rc = tokenizer_save(tok, path);
        free(path);
    }
    if (!rc && is_hf) { /* beside it, so that the eos_token default reads the same there */
        char *dir = path_dirname(tokenizer_hf_json_path(tok)), *config = path_join(dir, "tokenizer_config.json");
        if (path_exists(config)) {
            char *copy = path_join(tmp, "tokenizer_config.json");
            rc = copy_file(config, copy);
            free(copy);
        }
        free(dir), free(config);
    }
    if (!rc) {
        char *path = path_join(tmp, "meta.json");
        rc = write_meta(path, &inputs, kind, tokenizer_vocab_size(tok), by_document, split_seed, tok, eod_id, eod_text, marks, lists, counts,
                        fractions);
        free(path);
    }
    if (d.tmp) {
        if (rc) dir_replace_abort(&d);
        else rc = dir_replace_commit(&d);
    }
    if (!rc)
        printf("tokenized %s%s (%zu documents, %zu bytes, split by %s) with %s tokenizer (vocab %d) in %.2fs: "
               "pretrain %zu, cpt %zu, val %zu tokens (%zu, %zu, %zu documents) -> %s\n",
               inputs.items[0], inputs.n > 1 ? " and more" : "", corpus.n_docs, corpus.n_bytes, by_document ? "document" : "contiguous",
               kind, tokenizer_vocab_size(tok), now_seconds() - t0, counts[0], counts[1], counts[2], lists[0].n_docs, lists[1].n_docs,
               lists[2].n_docs, out);
    tokenizer_free(tok);
    for (int s = 0; s < 3; s++) free(lists[s].items);
    corpus_free(&corpus);
    free(eod_text);
    return rc ? cli_fail() : 0;
}
