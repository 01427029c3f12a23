/* hf_tokenizer.c - Hugging Face tokenizer.json (byte-level BPE): loading and validating each
 * component, then encoding as the `tokenizers` library does:
 *
 *   raw text -> split around added tokens (normalized: false) -> normalizer
 *            -> split around added tokens (normalized: true) -> pre-tokenizer steps (pieces)
 *            -> byte-level mapping -> BPE merges by rank inside each piece -> ids
 *
 * and decoding ids back through the byte-level map. Anything the file asks for that is not
 * implemented here is refused at load time, so a tokenization is either right or refused. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "data/hf_tokenizer.h"

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "util.h"
#include "util/json.h"
#include "util/strbuf.h"
#include "util/strmap.h"

/* the GPT-2 pattern ByteLevel uses when use_regex is true */
#define GPT2_PATTERN "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

/* ---------------------------------------------------------------------------------------- */
/* a map from a pair of ids to (rank, merged id)                                            */
/* ---------------------------------------------------------------------------------------- */

#define MERGE_EMPTY UINT64_MAX
typedef struct {
    uint64_t *keys;   /* (cap) left << 32 | right, MERGE_EMPTY = free slot */
    uint64_t *values; /* (cap) rank << 32 | merged id */
    size_t cap, n;    /* cap is a power of two */
} MergeMap;

static size_t merge_slot(const MergeMap *map, uint64_t key) {
    uint64_t h = key * 0x9e3779b97f4a7c15ULL;
    size_t mask = map->cap - 1, i = (size_t)(h ^ h >> 29) & mask;
    while (map->keys[i] != key && map->keys[i] != MERGE_EMPTY) i = (i + 1) & mask;
    return i;
}

static void merge_map_init(MergeMap *map, size_t expected) {
    map->cap = 16;
    while (map->cap < expected * 2) map->cap *= 2;
    map->n = 0;
    map->keys = xmalloc(map->cap * sizeof *map->keys);
    map->values = xmalloc(map->cap * sizeof *map->values);
    for (size_t i = 0; i < map->cap; i++) map->keys[i] = MERGE_EMPTY;
}

/* keeps the first value of a key (the lower rank); the map was sized for every merge */
static void merge_map_put(MergeMap *map, uint64_t key, uint64_t value) {
    size_t i = merge_slot(map, key);
    if (map->keys[i] != MERGE_EMPTY) return;
    map->keys[i] = key;
    map->values[i] = value;
    map->n++;
}

static const uint64_t *merge_map_get(const MergeMap *map, uint64_t key) {
    size_t i = merge_slot(map, key);
    return map->keys[i] == key ? &map->values[i] : NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* the tokenizer                                                                            */
/* ---------------------------------------------------------------------------------------- */

enum { PRE_SPLIT, PRE_BYTE_LEVEL, PRE_DIGITS };
typedef struct {
    int kind;
    pcre2_code *regex; /* PRE_SPLIT, and PRE_BYTE_LEVEL with use_regex */
    int removed;       /* Split: behavior Removed (else Isolated) */
    int invert;        /* Split */
    int add_prefix_space; /* ByteLevel */
    int individual_digits; /* Digits */
} PreStep;

typedef struct {
    char *content;
    char *match;   /* what is matched: content, or for a normalized token its normalized content */
    size_t length; /* of match */
    uint32_t id;
    int lstrip, rstrip, single_word, normalized;
} AddedToken;

struct HfTokenizer {
    char *json_path;
    int vocab_size;
    char **id_token;   /* (vocab_size) the token's text in the vocabulary (byte-level mapped), or NULL */
    const char **id_text; /* (vocab_size) what the decoder reads: an added token's content, else id_token */
    StrMap vocab;      /* model vocabulary: text -> int id (keys are id_token strings) */
    MergeMap merges;
    int utf8proc_options; /* 0: no normalizer */
    PreStep *steps;
    int n_steps;
    int ignore_merges, byte_fallback;
    int unk_id;        /* -1: none */
    AddedToken *added; /* sorted longest first */
    int n_added;
    unsigned char added_first_byte[2][256]; /* [normalized]: some token of that pass starts with the byte */
    int eos_id;
    char byte_char[256][3]; /* the byte-level map: byte -> its character, UTF-8, NUL-terminated */
    int char_byte[512];     /* code point -> byte, or -1 */
};

static void build_byte_map(HfTokenizer *tok) {
    int n = 0;
    for (int i = 0; i < 512; i++) tok->char_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = printable ? b : 256 + n++;
        tok->char_byte[cp] = b;
        utf8proc_ssize_t len = utf8proc_encode_char(cp, (utf8proc_uint8_t *)tok->byte_char[b]);
        tok->byte_char[b][len] = 0;
    }
}

void hf_tokenizer_free(HfTokenizer *tok) {
    if (!tok) return;
    for (int i = 0; i < tok->vocab_size; i++) free(tok->id_token[i]);
    free(tok->id_token);
    free(tok->id_text);
    strmap_free(&tok->vocab);
    free(tok->merges.keys);
    free(tok->merges.values);
    for (int i = 0; i < tok->n_steps; i++) pcre2_code_free(tok->steps[i].regex);
    free(tok->steps);
    for (int i = 0; i < tok->n_added; i++) {
        if (tok->added[i].match != tok->added[i].content) free(tok->added[i].match);
        free(tok->added[i].content);
    }
    free(tok->added);
    free(tok->json_path);
    free(tok);
}

int hf_tokenizer_vocab_size(const HfTokenizer *tok) { return tok->vocab_size; }
int hf_tokenizer_eos_id(const HfTokenizer *tok) { return tok->eos_id; }
const char *hf_tokenizer_json_path(const HfTokenizer *tok) { return tok->json_path; }

int hf_tokenizer_token_id(const HfTokenizer *tok, const char *text) {
    for (int i = 0; i < tok->n_added; i++)
        if (!strcmp(tok->added[i].content, text)) return (int)tok->added[i].id;
    const int *id = strmap_get(&tok->vocab, text);
    return id ? *id : -1;
}

/* ---------------------------------------------------------------------------------------- */
/* loading                                                                                  */
/* ---------------------------------------------------------------------------------------- */

static int compile_regex(const char *file, const char *field, const char *pattern, int literal, pcre2_code **out) {
    int code;
    PCRE2_SIZE at;
    uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL admits no UCP */
    *out = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, options, &code, &at, NULL);
    if (!*out) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(code, message, sizeof message);
        return up_error("%s: field %s: PCRE2 cannot compile the pattern at offset %zu (%s); expected a regex PCRE2 "
                        "reads like Oniguruma", file, field, (size_t)at, (char *)message);
    }
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); /* optional: matching works without it */
    return 0;
}

static int refuse_type(const char *file, const char *field, const char *type, const char *expected) {
    return up_error("%s: field %s is \"%s\"; expected %s (upcycle implements only byte-level BPE tokenizers)", file,
                    field, type, expected);
}

/* a component's "type" string, named "<field>.type" in errors; and its refusal */
static int component_type(const char *file, const cJSON *node, const char *field, const char **type) {
    char *type_field = xasprintf("%s.type", field);
    int rc = json_get_string(file, node, type_field, type);
    free(type_field);
    return rc;
}

static int refuse_component(const char *file, const char *field, const char *type, const char *expected) {
    char *type_field = xasprintf("%s.type", field);
    int rc = refuse_type(file, type_field, type, expected);
    free(type_field);
    return rc;
}

typedef int (*LoadStep)(HfTokenizer *tok, const char *file, const cJSON *node, const char *field);

/* a Sequence's steps (normalizers or pre-tokenizers): each element of node[key], in order,
 * named "<field>.<key>[i]" in messages */
static int load_sequence(HfTokenizer *tok, const char *file, const cJSON *node, const char *field, const char *key,
                         LoadStep load) {
    const cJSON *list = NULL;
    char *list_field = xasprintf("%s.%s", field, key);
    int rc = json_get_array(file, node, list_field, &list), i = 0;
    for (const cJSON *child = list ? list->child : NULL; !rc && child; child = child->next, i++) {
        char *child_field = xasprintf("%s[%d]", list_field, i);
        rc = load(tok, file, child, child_field);
        free(child_field);
    }
    free(list_field);
    return rc;
}

static int load_normalizer(HfTokenizer *tok, const char *file, const cJSON *node, const char *field) {
    if (!node || cJSON_IsNull(node)) return 0;
    const char *type;
    if (component_type(file, node, field, &type)) return -1;
    int opts = 0;
    if (!strcmp(type, "NFC")) opts = UTF8PROC_COMPOSE;
    else if (!strcmp(type, "NFD")) opts = UTF8PROC_DECOMPOSE;
    else if (!strcmp(type, "NFKC")) opts = UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    else if (!strcmp(type, "NFKD")) opts = UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    else if (!strcmp(type, "Sequence")) return load_sequence(tok, file, node, field, "normalizers", load_normalizer);
    else return refuse_component(file, field, type, "NFC, NFD, NFKC, NFKD, Sequence or null");
    if (tok->utf8proc_options)
        return up_error("%s: field %s: a second Unicode normalization in the sequence; expected at most one", file,
                        field);
    tok->utf8proc_options = opts | UTF8PROC_STABLE;
    return 0;
}

static int add_step(HfTokenizer *tok, PreStep step) {
    tok->steps = xrealloc(tok->steps, (size_t)(tok->n_steps + 1) * sizeof *tok->steps);
    tok->steps[tok->n_steps++] = step;
    return 0;
}

static int load_pre_tokenizer(HfTokenizer *tok, const char *file, const cJSON *node, const char *field) {
    if (!node || cJSON_IsNull(node)) return 0;
    const char *type;
    if (component_type(file, node, field, &type)) return -1;
    int rc = 0;
    PreStep step = {0};
    if (!strcmp(type, "Sequence")) return load_sequence(tok, file, node, field, "pretokenizers", load_pre_tokenizer);
    if (!strcmp(type, "Split")) {
        const cJSON *pattern = NULL;
        const char *behavior, *regex = NULL, *literal = NULL;
        char *pf = xasprintf("%s.pattern", field), *bf = xasprintf("%s.behavior", field);
        char *rf = xasprintf("%s.pattern.Regex", field), *sf = xasprintf("%s.pattern.String", field);
        char *inf = xasprintf("%s.invert", field);
        rc = json_get_object(file, node, pf, &pattern);
        if (!rc) rc = json_opt_string(file, pattern, rf, NULL, &regex);
        if (!rc) rc = json_opt_string(file, pattern, sf, NULL, &literal);
        if (!rc && !regex == !literal)
            rc = up_error("%s: field %s: %s; expected one of Regex or String", file, pf,
                          regex ? "both Regex and String" : "neither Regex nor String");
        if (!rc) rc = json_get_string(file, node, bf, &behavior);
        if (!rc) {
            if (!strcmp(behavior, "Removed")) step.removed = 1;
            else if (strcmp(behavior, "Isolated")) rc = refuse_type(file, bf, behavior, "Isolated or Removed");
        }
        if (!rc) rc = json_opt_bool(file, node, inf, 0, &step.invert);
        if (!rc) rc = compile_regex(file, regex ? rf : sf, regex ? regex : literal, !regex, &step.regex);
        free(pf), free(bf), free(rf), free(sf), free(inf);
        if (rc) return -1;
        step.kind = PRE_SPLIT;
        return add_step(tok, step);
    }
    if (!strcmp(type, "ByteLevel")) {
        int use_regex = 1;
        char *af = xasprintf("%s.add_prefix_space", field), *uf = xasprintf("%s.use_regex", field);
        rc = json_opt_bool(file, node, af, 1, &step.add_prefix_space);
        if (!rc) rc = json_opt_bool(file, node, uf, 1, &use_regex);
        if (!rc && use_regex) rc = compile_regex(file, uf, GPT2_PATTERN, 0, &step.regex);
        free(af), free(uf);
        if (rc) return -1;
        step.kind = PRE_BYTE_LEVEL;
        return add_step(tok, step);
    }
    if (!strcmp(type, "Digits")) {
        char *df = xasprintf("%s.individual_digits", field);
        rc = json_opt_bool(file, node, df, 0, &step.individual_digits);
        free(df);
        if (rc) return -1;
        step.kind = PRE_DIGITS;
        return add_step(tok, step);
    }
    return refuse_component(file, field, type, "Split, ByteLevel, Digits or Sequence");
}

static int check_decoder(const char *file, const cJSON *node) {
    if (!node || cJSON_IsNull(node)) return 0;
    const char *type;
    if (json_get_string(file, node, "decoder.type", &type)) return -1;
    if (strcmp(type, "ByteLevel")) return refuse_type(file, "decoder.type", type, "ByteLevel or null");
    return 0;
}

/* Grows the id tables to hold id. */
static void ensure_id(HfTokenizer *tok, int id) {
    if (id < tok->vocab_size) return;
    int n = id + 1;
    tok->id_token = xrealloc(tok->id_token, (size_t)n * sizeof *tok->id_token);
    tok->id_text = xrealloc(tok->id_text, (size_t)n * sizeof *tok->id_text);
    for (int i = tok->vocab_size; i < n; i++) tok->id_token[i] = NULL, tok->id_text[i] = NULL;
    tok->vocab_size = n;
}

static int load_vocab(HfTokenizer *tok, const char *file, const cJSON *model) {
    const cJSON *vocab;
    if (json_get_object(file, model, "model.vocab", &vocab)) return -1;
    int n = cJSON_GetArraySize(vocab), max_id = -1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 1 << 30 || e->valuedouble != (int)e->valuedouble)
            return up_error("%s: field model.vocab[\"%s\"]: not an id; expected an integer in [0, 2^30]", file,
                            e->string);
        if (e->valueint > max_id) max_id = e->valueint;
    }
    ensure_id(tok, max_id);
    strmap_init(&tok->vocab, sizeof(int), (size_t)n);
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int id = e->valueint;
        if (tok->id_token[id])
            return up_error("%s: field model.vocab: id %d given to both \"%s\" and \"%s\"; expected each id once", file,
                            id, tok->id_token[id], e->string);
        tok->id_token[id] = xstrdup(e->string);
        tok->id_text[id] = tok->id_token[id];
        if (strmap_put(&tok->vocab, tok->id_token[id], &id))
            return up_error("%s: field model.vocab: \"%s\" twice; expected each token once", file, e->string);
    }
    return 0;
}

static int vocab_id(const HfTokenizer *tok, const char *text) {
    const int *id = strmap_get(&tok->vocab, text);
    return id ? *id : -1;
}

static int load_merges(HfTokenizer *tok, const char *file, const cJSON *model) {
    const cJSON *merges;
    if (json_get_array(file, model, "model.merges", &merges)) return -1;
    int n = cJSON_GetArraySize(merges), i = 0;
    merge_map_init(&tok->merges, (size_t)n);
    Strbuf joined = {0};
    int rc = 0;
    for (const cJSON *m = merges->child; m && !rc; m = m->next, i++) {
        const char *left = NULL, *right = NULL;
        char *split = NULL;
        if (cJSON_IsString(m)) {
            const char *space = strchr(m->valuestring, ' ');
            if (space && space != m->valuestring && space[1] && !strchr(space + 1, ' ')) {
                split = xstrdup(m->valuestring);
                split[space - m->valuestring] = 0;
                left = split, right = split + (space - m->valuestring) + 1;
            }
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            left = m->child->valuestring, right = m->child->next->valuestring;
        }
        if (!left) {
            rc = up_error("%s: field model.merges[%d]: not a merge; expected \"a b\" or [\"a\", \"b\"]", file, i);
            break;
        }
        joined.len = 0;
        sb_put(&joined, left);
        sb_put(&joined, right);
        int l = vocab_id(tok, left), r = vocab_id(tok, right), merged = vocab_id(tok, joined.s);
        if (l < 0 || r < 0 || merged < 0)
            rc = up_error("%s: field model.merges[%d]: \"%s\" is not in model.vocab; expected merges of vocabulary "
                          "tokens into a vocabulary token", file, i, l < 0 ? left : r < 0 ? right : joined.s);
        else merge_map_put(&tok->merges, (uint64_t)l << 32 | (uint32_t)r, (uint64_t)i << 32 | (uint32_t)merged);
        free(split);
    }
    sb_free(&joined);
    return rc;
}

static int load_model(HfTokenizer *tok, const char *file, const cJSON *root) {
    const cJSON *model;
    const char *type, *unk = NULL, *prefix = NULL, *suffix = NULL;
    double dropout = 0;
    if (json_get_object(file, root, "model", &model) || json_get_string(file, model, "model.type", &type)) return -1;
    if (strcmp(type, "BPE")) return refuse_type(file, "model.type", type, "BPE");
    if (json_opt_number(file, model, "model.dropout", 0, &dropout) ||
        json_opt_string(file, model, "model.continuing_subword_prefix", "", &prefix) ||
        json_opt_string(file, model, "model.end_of_word_suffix", "", &suffix) ||
        json_opt_string(file, model, "model.unk_token", NULL, &unk) ||
        json_opt_bool(file, model, "model.ignore_merges", 0, &tok->ignore_merges) ||
        json_opt_bool(file, model, "model.byte_fallback", 0, &tok->byte_fallback))
        return -1;
    if (dropout != 0)
        return up_error("%s: field model.dropout is %g; expected null or 0 (BPE dropout is not implemented)", file,
                        dropout);
    if (prefix[0] || suffix[0])
        return up_error("%s: field model.%s is \"%s\"; expected \"\" (not implemented for byte-level BPE)", file,
                        prefix[0] ? "continuing_subword_prefix" : "end_of_word_suffix", prefix[0] ? prefix : suffix);
    if (load_vocab(tok, file, model) || load_merges(tok, file, model)) return -1;
    tok->unk_id = unk ? vocab_id(tok, unk) : -1;
    if (unk && tok->unk_id < 0)
        return up_error("%s: field model.unk_token: \"%s\" is not in model.vocab; expected a vocabulary token", file,
                        unk);
    return 0;
}

static int added_longer_first(const void *a, const void *b) {
    const AddedToken *x = a, *y = b;
    if (x->length != y->length) return x->length < y->length ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int load_added_tokens(HfTokenizer *tok, const char *file, const cJSON *root) {
    const cJSON *list = NULL;
    if (json_opt_array(file, root, "added_tokens", &list)) return -1;
    int n = list ? cJSON_GetArraySize(list) : 0;
    tok->added = xcalloc((size_t)(n ? n : 1), sizeof *tok->added);
    for (int i = 0; i < n; i++) {
        const cJSON *entry;
        const char *content;
        int id, special = 0, normalized = 0;
        AddedToken *t = &tok->added[i];
        if (json_elem_object(file, list, "added_tokens", i, &entry) ||
            json_get_string(file, entry, "added_tokens[].content", &content) ||
            json_get_int(file, entry, "added_tokens[].id", &id) ||
            json_opt_bool(file, entry, "added_tokens[].special", 0, &special) ||
            json_opt_bool(file, entry, "added_tokens[].normalized", 0, &normalized) ||
            json_opt_bool(file, entry, "added_tokens[].lstrip", 0, &t->lstrip) ||
            json_opt_bool(file, entry, "added_tokens[].rstrip", 0, &t->rstrip) ||
            json_opt_bool(file, entry, "added_tokens[].single_word", 0, &t->single_word))
            return -1;
        if (id < 0 || id > 1 << 30 || !content[0])
            return up_error("%s: field added_tokens[%d]: %s; expected a non-empty content and an id in [0, 2^30]",
                            file, i, content[0] ? "id out of range" : "empty content");
        t->content = xstrdup(content);
        t->normalized = normalized;
        t->match = t->content;
        tok->n_added = i + 1;
        if (normalized && tok->utf8proc_options) { /* matched in the normalized text, as its normalized form */
            utf8proc_uint8_t *form = NULL;
            utf8proc_ssize_t len = utf8proc_map((const utf8proc_uint8_t *)content, 0, &form,
                                                (utf8proc_option_t)(tok->utf8proc_options | UTF8PROC_NULLTERM));
            if (len <= 0) {
                free(form);
                return up_error("%s: field added_tokens[%d].content: not normalizable (%s); expected UTF-8 text", file, i,
                                len < 0 ? utf8proc_errmsg(len) : "empty after normalization");
            }
            t->match = (char *)form;
        }
        t->length = strlen(t->match);
        t->id = (uint32_t)id;
        ensure_id(tok, id);
        tok->id_text[id] = t->content;
        tok->added_first_byte[normalized][(unsigned char)t->match[0]] = 1;
    }
    qsort(tok->added, (size_t)tok->n_added, sizeof *tok->added, added_longer_first);
    return 0;
}

/* the added token "<|endoftext|>", else tokenizer_config.json's eos_token (a string or {content}) */
static int find_eos(HfTokenizer *tok, const char *config_path) {
    tok->eos_id = -1;
    for (int i = 0; i < tok->n_added; i++)
        if (!strcmp(tok->added[i].content, "<|endoftext|>")) tok->eos_id = (int)tok->added[i].id;
    if (tok->eos_id >= 0 || !path_exists(config_path)) return 0;
    cJSON *config = json_load_file(config_path, "a Hugging Face tokenizer_config.json");
    if (!config) return -1;
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(config, "eos_token");
    const char *text = cJSON_IsString(eos) ? eos->valuestring : NULL;
    if (cJSON_IsObject(eos) && json_get_string(config_path, eos, "eos_token.content", &text)) {
        cJSON_Delete(config);
        return -1;
    }
    if (text) tok->eos_id = hf_tokenizer_token_id(tok, text);
    cJSON_Delete(config);
    return 0;
}

int hf_tokenizer_load(HfTokenizer **out, const char *path) {
    *out = NULL;
    HfTokenizer *tok = xcalloc(1, sizeof *tok);
    tok->json_path = is_dir(path) ? path_join(path, "tokenizer.json") : xstrdup(path);
    const char *file = tok->json_path;
    build_byte_map(tok);
    cJSON *root = json_load_file(file, "a Hugging Face tokenizer.json");
    int rc = root ? 0 : -1;
    if (!rc) rc = load_normalizer(tok, file, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizer");
    if (!rc) rc = load_pre_tokenizer(tok, file, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pre_tokenizer");
    if (!rc && (tok->n_steps == 0 || tok->steps[tok->n_steps - 1].kind != PRE_BYTE_LEVEL))
        rc = up_error("%s: field pre_tokenizer: %s; expected ByteLevel as the last step (a byte-level BPE)", file,
                      tok->n_steps ? "the last step is not ByteLevel" : "no ByteLevel step");
    for (int i = 0; !rc && i + 1 < tok->n_steps; i++)
        if (tok->steps[i].kind == PRE_BYTE_LEVEL)
            rc = up_error("%s: field pre_tokenizer: ByteLevel before step %d; expected ByteLevel only as the last step",
                          file, i + 1);
    if (!rc) rc = check_decoder(file, cJSON_GetObjectItemCaseSensitive(root, "decoder"));
    if (!rc) rc = load_model(tok, file, root);
    if (!rc) rc = load_added_tokens(tok, file, root);
    cJSON_Delete(root);
    if (!rc) {
        char *dir = path_dirname(file), *config = path_join(dir, "tokenizer_config.json");
        rc = find_eos(tok, config);
        free(dir), free(config);
    }
    if (rc) {
        hf_tokenizer_free(tok);
        return -1;
    }
    *out = tok;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* encoding                                                                                 */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
    uint32_t *items;
    size_t n, cap;
} Ids;

static void ids_push(Ids *ids, uint32_t id) {
    if (ids->n == ids->cap) {
        ids->cap = ids->cap ? ids->cap * 2 : 256;
        ids->items = xrealloc(ids->items, ids->cap * sizeof *ids->items);
    }
    ids->items[ids->n++] = id;
}

/* Pieces of text after pre-tokenization: byte ranges into one arena. */
typedef struct {
    Strbuf arena;
    size_t *start, *length;
    size_t n, cap;
} Pieces;

static void pieces_add(Pieces *p, const char *s, size_t n, int prefix_space) {
    if (!n && !prefix_space) return;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->start = xrealloc(p->start, p->cap * sizeof *p->start);
        p->length = xrealloc(p->length, p->cap * sizeof *p->length);
    }
    p->start[p->n] = p->arena.len;
    if (prefix_space) sb_putn(&p->arena, " ", 1);
    sb_putn(&p->arena, s, n);
    p->length[p->n++] = n + (size_t)prefix_space;
}

static void pieces_free(Pieces *p) {
    sb_free(&p->arena);
    free(p->start);
    free(p->length);
    memset(p, 0, sizeof *p);
}

static size_t utf8_char_length(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* Cuts s into the regex's matches and the gaps between them; keeps both (Isolated) or only
 * the gaps (Removed; with invert, only the matches). Empty matches cut nothing. */
static void split_regex(const PreStep *step, pcre2_match_data *md, const char *s, size_t n, Pieces *out) {
    size_t at = 0, gap = 0;
    while (at <= n) {
        int rc = pcre2_match(step->regex, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty: step one character */
            if (ms >= n) break;
            at = ms + utf8_char_length((unsigned char)s[ms]);
            continue;
        }
        int keep_match = !step->removed || step->invert, keep_gap = !step->removed || !step->invert;
        if (keep_gap) pieces_add(out, s + gap, ms - gap, 0);
        if (keep_match) pieces_add(out, s + ms, me - ms, 0);
        gap = at = me;
    }
    if (!step->removed || !step->invert) pieces_add(out, s + gap, n - gap, 0);
}

static void split_digits(const PreStep *step, const char *s, size_t n, Pieces *out) {
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        int digit = s[i] >= '0' && s[i] <= '9';
        if (digit && step->individual_digits) j = i + 1;
        else
            while (j < n && (s[j] >= '0' && s[j] <= '9') == digit) j++;
        pieces_add(out, s + i, j - i, 0);
        i = j;
    }
}

/* A candidate merge of the symbols at left and next[left], ordered by (rank, left): the
 * lowest rank first, the leftmost of equal ranks, as the tokenizers library merges. */
typedef struct {
    uint32_t rank, left, left_id, right_id, merged;
} Candidate;

typedef struct {
    Candidate *items;
    size_t n, cap;
    uint32_t *id;     /* (n_symbols) symbol ids; a merged-away symbol keeps its slot */
    int64_t *next, *prev; /* (n_symbols) neighbours, -1 at the ends */
    size_t n_symbols_cap;
} BpeScratch;

static int candidate_before(const Candidate *a, const Candidate *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

static void heap_push(BpeScratch *h, Candidate c) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->items = xrealloc(h->items, h->cap * sizeof *h->items);
    }
    size_t i = h->n++;
    while (i > 0 && candidate_before(&c, &h->items[(i - 1) / 2])) {
        h->items[i] = h->items[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->items[i] = c;
}

static Candidate heap_pop(BpeScratch *h) {
    Candidate top = h->items[0], last = h->items[--h->n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n) break;
        if (child + 1 < h->n && candidate_before(&h->items[child + 1], &h->items[child])) child++;
        if (!candidate_before(&h->items[child], &last)) break;
        h->items[i] = h->items[child];
        i = child;
    }
    if (h->n) h->items[i] = last;
    return top;
}

static void consider_pair(const HfTokenizer *tok, BpeScratch *h, int64_t left) {
    if (left < 0 || h->next[left] < 0) return;
    uint32_t l = h->id[left], r = h->id[h->next[left]];
    const uint64_t *v = merge_map_get(&tok->merges, (uint64_t)l << 32 | r);
    if (v) heap_push(h, (Candidate){(uint32_t)(*v >> 32), (uint32_t)left, l, r, (uint32_t)*v});
}

static void bpe_scratch_free(BpeScratch *h) {
    free(h->items);
    free(h->id);
    free(h->next);
    free(h->prev);
    memset(h, 0, sizeof *h);
}

/* BPE on one piece (bytes): the byte-level symbols, then the lowest-ranked adjacent pair is
 * merged (leftmost first) until no pair has a merge; O(n log n) in the piece's length. */
static int bpe_piece(const HfTokenizer *tok, const unsigned char *bytes, size_t n, Strbuf *scratch, BpeScratch *h,
                     Ids *out) {
    if (tok->ignore_merges) {
        scratch->len = 0;
        for (size_t i = 0; i < n; i++) sb_put(scratch, tok->byte_char[bytes[i]]);
        int id = vocab_id(tok, scratch->s);
        if (id >= 0) {
            ids_push(out, (uint32_t)id);
            return 0;
        }
    }
    if (h->n_symbols_cap < n) {
        h->n_symbols_cap = n * 2;
        h->id = xrealloc(h->id, h->n_symbols_cap * sizeof *h->id);
        h->next = xrealloc(h->next, h->n_symbols_cap * sizeof *h->next);
        h->prev = xrealloc(h->prev, h->n_symbols_cap * sizeof *h->prev);
    }
    for (size_t i = 0; i < n; i++) {
        int id = vocab_id(tok, tok->byte_char[bytes[i]]);
        if (id < 0 && tok->byte_fallback) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", bytes[i]);
            id = vocab_id(tok, name);
        }
        if (id < 0) id = tok->unk_id;
        if (id < 0)
            return up_error("%s: byte 0x%02x has no token in model.vocab and there is no unk_token; expected a "
                            "byte-level vocabulary", tok->json_path, bytes[i]);
        h->id[i] = (uint32_t)id;
        h->prev[i] = (int64_t)i - 1;
        h->next[i] = i + 1 < n ? (int64_t)i + 1 : -1;
    }
    h->n = 0;
    for (size_t i = 0; i + 1 < n; i++) consider_pair(tok, h, (int64_t)i);
    while (h->n) {
        Candidate c = heap_pop(h);
        int64_t right = h->next[c.left];
        /* stale: one side was merged away or changed since the candidate was pushed */
        if (h->prev[c.left] == -2 || right < 0 || h->id[c.left] != c.left_id || h->id[right] != c.right_id) continue;
        h->id[c.left] = c.merged;
        h->next[c.left] = h->next[right];
        if (h->next[right] >= 0) h->prev[h->next[right]] = c.left;
        h->prev[right] = -2; /* gone */
        consider_pair(tok, h, h->prev[c.left]);
        consider_pair(tok, h, c.left);
    }
    for (int64_t i = 0; i >= 0; i = h->next[i]) ids_push(out, h->id[i]);
    return 0;
}

/* normalized text between added tokens: pre-tokenize, BPE */
static int encode_pieces(const HfTokenizer *tok, const char *text, size_t n, pcre2_match_data *md, Ids *out) {
    if (!n) return 0;
    Pieces current = {0}, next = {0};
    pieces_add(&current, text, n, 0);
    for (int s = 0; s < tok->n_steps; s++) {
        const PreStep *step = &tok->steps[s];
        for (size_t i = 0; i < current.n; i++) {
            const char *p = current.arena.s + current.start[i];
            size_t len = current.length[i];
            if (step->kind == PRE_SPLIT) split_regex(step, md, p, len, &next);
            else if (step->kind == PRE_DIGITS) split_digits(step, p, len, &next);
            else {
                int prefix = step->add_prefix_space && p[0] != ' ';
                if (!step->regex) pieces_add(&next, p, len, prefix);
                else if (!prefix) split_regex(step, md, p, len, &next);
                else {
                    Strbuf spaced = {0};
                    sb_putn(&spaced, " ", 1);
                    sb_putn(&spaced, p, len);
                    split_regex(step, md, spaced.s, spaced.len, &next);
                    sb_free(&spaced);
                }
            }
        }
        pieces_free(&current);
        current = next;
        memset(&next, 0, sizeof next);
    }
    Strbuf scratch = {0};
    BpeScratch heap = {0};
    int rc = 0;
    for (size_t i = 0; !rc && i < current.n; i++)
        rc = bpe_piece(tok, (const unsigned char *)current.arena.s + current.start[i], current.length[i], &scratch,
                       &heap, out);
    sb_free(&scratch);
    bpe_scratch_free(&heap);
    pieces_free(&current);
    return rc;
}

static int next_added(const HfTokenizer *tok, int normalized, const char *text, size_t n, size_t from, size_t *start, size_t *end);

/* raw text between the tokens matched before normalization: normalize, then the normalized
 * tokens (matched in the normalized text), and the pieces between them */
static int encode_segment(const HfTokenizer *tok, const char *text, size_t n, pcre2_match_data *md, Ids *out) {
    if (!n) return 0;
    utf8proc_uint8_t *normalized = NULL;
    if (tok->utf8proc_options) {
        utf8proc_ssize_t len = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)n, &normalized,
                                            (utf8proc_option_t)tok->utf8proc_options);
        if (len < 0) return up_error("input: Unicode normalization failed (%s); expected UTF-8 text", utf8proc_errmsg(len));
        text = (const char *)normalized;
        n = (size_t)len;
    }
    size_t pos = 0, start, end;
    int rc = 0;
    while (!rc && pos < n) {
        int t = next_added(tok, 1, text, n, pos, &start, &end);
        if (t < 0) start = end = n;
        rc = encode_pieces(tok, text + pos, start - pos, md, out);
        if (t >= 0) ids_push(out, tok->added[t].id);
        pos = end;
    }
    free(normalized);
    return rc;
}

/* the code point that starts at s[i] (valid UTF-8), and its start before i */
static int32_t char_at(const char *s, size_t n, size_t i) {
    utf8proc_int32_t cp = -1;
    utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
    return cp;
}

static size_t char_start_before(const char *s, size_t i) {
    do i--;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80);
    return i;
}

static int is_space(int32_t cp) {
    if (cp == ' ' || (cp >= '\t' && cp <= '\r') || cp == 0x85) return 1;
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

static int is_word(int32_t cp) {
    if (cp == '_') return 1;
    utf8proc_category_t c = utf8proc_category(cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) || (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}

/* The first added token of one pass (normalized: 0, the tokens matched in the raw text; 1, those
 * matched in the normalized text) in text[from..n) (leftmost, then longest): its extent with
 * lstrip and rstrip whitespace included. Returns the token's index, or -1. */
static int next_added(const HfTokenizer *tok, int normalized, const char *text, size_t n, size_t from, size_t *start, size_t *end) {
    for (size_t i = from; i < n; i++) {
        if (!tok->added_first_byte[normalized][(unsigned char)text[i]]) continue;
        for (int t = 0; t < tok->n_added; t++) {
            const AddedToken *a = &tok->added[t];
            if (a->normalized != normalized || a->length > n - i || memcmp(text + i, a->match, a->length)) continue;
            size_t s = i, e = i + a->length;
            if (a->single_word && ((s > 0 && is_word(char_at(text, n, char_start_before(text, s)))) ||
                                   (e < n && is_word(char_at(text, n, e)))))
                continue;
            if (a->lstrip)
                while (s > from) {
                    size_t b = char_start_before(text, s);
                    if (!is_space(char_at(text, n, b))) break;
                    s = b;
                }
            if (a->rstrip)
                while (e < n && is_space(char_at(text, n, e))) e += utf8_char_length((unsigned char)text[e]);
            *start = s, *end = e;
            return t;
        }
    }
    return -1;
}

int hf_tokenizer_encode(const HfTokenizer *tok, const unsigned char *text, size_t n_bytes, uint32_t **ids,
                        size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    for (size_t i = 0; i < n_bytes;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t len = utf8proc_iterate(text + i, (utf8proc_ssize_t)(n_bytes - i), &cp);
        if (len <= 0)
            return up_error("input: invalid UTF-8 at byte %zu; expected UTF-8 text (a Hugging Face tokenizer reads "
                            "text, not bytes)", i);
        i += (size_t)len;
    }
    const char *s = (const char *)text;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    Ids out = {0};
    size_t pos = 0, start, end;
    int rc = 0;
    while (!rc && pos < n_bytes) {
        int t = next_added(tok, 0, s, n_bytes, pos, &start, &end);
        if (t < 0) start = end = n_bytes;
        rc = encode_segment(tok, s + pos, start - pos, md, &out);
        if (t >= 0) ids_push(&out, tok->added[t].id);
        pos = end;
    }
    pcre2_match_data_free(md);
    if (rc) {
        free(out.items);
        return -1;
    }
    *ids = out.items ? out.items : xmalloc(sizeof **ids);
    *n_ids = out.n;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* decoding                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* ByteLevel decoder: a token whose every character is in the byte-level map decodes to those
 * bytes, any other token (most added tokens) to its own UTF-8 text; byte_fallback's <0xXX>
 * tokens to their byte. */
static void decode_token(const HfTokenizer *tok, const char *token, Strbuf *out) {
    unsigned int byte;
    if (tok->byte_fallback && strlen(token) == 6 && sscanf(token, "<0x%2X>", &byte) == 1) {
        char c = (char)byte;
        sb_putn(out, &c, 1);
        return;
    }
    size_t n = strlen(token), start = out->len;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t len = utf8proc_iterate((const utf8proc_uint8_t *)token + i, (utf8proc_ssize_t)(n - i), &cp);
        if (len <= 0 || cp >= 512 || tok->char_byte[cp] < 0) {
            out->len = start;
            if (out->s) out->s[start] = 0;
            sb_putn(out, token, n);
            return;
        }
        char c = (char)tok->char_byte[cp];
        sb_putn(out, &c, 1);
        i += (size_t)len;
    }
}

int hf_tokenizer_decode(const HfTokenizer *tok, const uint32_t *ids, size_t n_ids, char **text, size_t *n_bytes) {
    *text = NULL;
    if (n_bytes) *n_bytes = 0;
    Strbuf out = {0};
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] >= (uint32_t)tok->vocab_size || !tok->id_text[ids[i]]) {
            sb_free(&out);
            return up_error("tokenizer: token id %u at position %zu has no token in %s; expected an id < %d that the "
                            "vocabulary or added_tokens name", ids[i], i, tok->json_path, tok->vocab_size);
        }
        decode_token(tok, tok->id_text[ids[i]], &out);
    }
    if (!out.s) out.s = xcalloc(1, 1);
    *text = out.s;
    if (n_bytes) *n_bytes = out.len;
    return 0;
}
