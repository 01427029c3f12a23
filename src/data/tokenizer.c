/* tokenizer.c - byte tokenizer and byte-level BPE: pre-tokenization, training, encoding by
 * merge rank, decoding, and tokenizer.json I/O.
 *
 * Text is first cut into chunks (pre-tokens); merges never cross a chunk boundary, so a chunk
 * can be encoded on its own and its encoding cached. Chunks partition the input exactly, which
 * makes decode(encode(x)) == x for any byte string. */
#include "data/tokenizer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/hf_tokenizer.h"
#include "util.h"

#define BYTE_VOCAB 256
#define MAX_VOCAB 65536
#define TOKENIZER_VERSION 1
/* Long runs of one character class are cut into chunks of at most this many bytes. This bounds
 * the cost of training and encoding on pathological input (a megabyte of '='), and bounds every
 * token's length: a token never spans more than one chunk. */
#define MAX_CHUNK_BYTES 4096
/* what the end-of-document id decodes to */
#define EOD_TEXT "<|endoftext|>"

/* ---------------------------------------------------------------------------------------- */
/* hashing and hash maps                                                                    */
/* ---------------------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* FNV-1a then a final mix: fixed across machines, so nothing depends on the platform. */
static uint64_t hash_bytes(const unsigned char *bytes, size_t length) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < length; i++) h = (h ^ bytes[i]) * 0x100000001b3ULL;
    return mix64(h ^ length);
}

static uint64_t pair_key(uint32_t left, uint32_t right) { return (uint64_t)left << 32 | right; }
static uint32_t pair_left(uint64_t key) { return (uint32_t)(key >> 32); }
static uint32_t pair_right(uint64_t key) { return (uint32_t)key; }

/* Open-addressing map from a pair key to a uint32. Ids are < 65536, so UINT64_MAX is never a
 * real key and marks an empty slot. */
#define PAIR_EMPTY UINT64_MAX
typedef struct {
    uint64_t *keys;
    uint32_t *values;
    size_t capacity, count; /* capacity is a power of two */
} PairMap;

static void pair_map_init(PairMap *map, size_t expected) {
    size_t capacity = 16;
    while (capacity < expected * 2) capacity *= 2;
    map->capacity = capacity;
    map->count = 0;
    map->keys = xmalloc(capacity * sizeof *map->keys);
    map->values = xmalloc(capacity * sizeof *map->values);
    for (size_t i = 0; i < capacity; i++) map->keys[i] = PAIR_EMPTY;
}

static void pair_map_free(PairMap *map) {
    free(map->keys);
    free(map->values);
    memset(map, 0, sizeof *map);
}

static size_t pair_map_slot(const PairMap *map, uint64_t key) {
    size_t mask = map->capacity - 1, i = (size_t)mix64(key) & mask;
    while (map->keys[i] != key && map->keys[i] != PAIR_EMPTY) i = (i + 1) & mask;
    return i;
}

static const uint32_t *pair_map_find(const PairMap *map, uint64_t key) {
    if (!map->capacity) return NULL;
    size_t i = pair_map_slot(map, key);
    return map->keys[i] == key ? &map->values[i] : NULL;
}

static void pair_map_grow(PairMap *map) {
    PairMap bigger;
    pair_map_init(&bigger, map->capacity);
    for (size_t i = 0; i < map->capacity; i++) {
        if (map->keys[i] == PAIR_EMPTY) continue;
        size_t j = pair_map_slot(&bigger, map->keys[i]);
        bigger.keys[j] = map->keys[i];
        bigger.values[j] = map->values[i];
    }
    bigger.count = map->count;
    pair_map_free(map);
    *map = bigger;
}

/* Returns the value slot for key, inserting `value` first if key is new (*inserted = 1). */
static uint32_t *pair_map_insert(PairMap *map, uint64_t key, uint32_t value, int *inserted) {
    if ((map->count + 1) * 2 > map->capacity) pair_map_grow(map);
    size_t i = pair_map_slot(map, key);
    *inserted = map->keys[i] == PAIR_EMPTY;
    if (*inserted) {
        map->keys[i] = key;
        map->values[i] = value;
        map->count++;
    }
    return &map->values[i];
}

/* Open-addressing map from a byte string (borrowed: it points into the caller's text) to a
 * uint64. A NULL key marks an empty slot; chunks are never empty. */
typedef struct {
    const unsigned char *key;
    uint64_t hash;
    uint32_t length;
    uint64_t value;
} ByteEntry;
typedef struct {
    ByteEntry *entries;
    size_t capacity, count;
} ByteMap;

static void byte_map_init(ByteMap *map, size_t expected) {
    size_t capacity = 64;
    while (capacity < expected * 2) capacity *= 2;
    map->entries = xcalloc(capacity, sizeof *map->entries);
    map->capacity = capacity;
    map->count = 0;
}

static void byte_map_free(ByteMap *map) {
    free(map->entries);
    memset(map, 0, sizeof *map);
}

static size_t byte_map_slot(const ByteMap *map, const unsigned char *key, size_t length, uint64_t hash) {
    size_t mask = map->capacity - 1, i = (size_t)hash & mask;
    for (;; i = (i + 1) & mask) {
        const ByteEntry *e = &map->entries[i];
        if (!e->key) return i;
        if (e->hash == hash && e->length == length && memcmp(e->key, key, length) == 0) return i;
    }
}

static void byte_map_grow(ByteMap *map) {
    ByteMap bigger;
    byte_map_init(&bigger, map->capacity);
    for (size_t i = 0; i < map->capacity; i++) {
        const ByteEntry *e = &map->entries[i];
        if (e->key) bigger.entries[byte_map_slot(&bigger, e->key, e->length, e->hash)] = *e;
    }
    bigger.count = map->count;
    byte_map_free(map);
    *map = bigger;
}

static ByteEntry *byte_map_find(const ByteMap *map, const unsigned char *key, size_t length, uint64_t hash) {
    ByteEntry *e = &map->entries[byte_map_slot(map, key, length, hash)];
    return e->key ? e : NULL;
}

/* Inserts key with `value` if absent; returns the entry either way. */
static ByteEntry *byte_map_insert(ByteMap *map, const unsigned char *key, size_t length, uint64_t hash,
                                  uint64_t value) {
    if ((map->count + 1) * 2 > map->capacity) byte_map_grow(map);
    ByteEntry *e = &map->entries[byte_map_slot(map, key, length, hash)];
    if (!e->key) {
        e->key = key;
        e->length = (uint32_t)length;
        e->hash = hash;
        e->value = value;
        map->count++;
    }
    return e;
}

/* ---------------------------------------------------------------------------------------- */
/* pre-tokenization                                                                         */
/* ---------------------------------------------------------------------------------------- */

enum { CLASS_LETTER, CLASS_DIGIT, CLASS_SPACE, CLASS_OTHER };

/* Bytes >= 0x80 count as letters so that a UTF-8 multi-byte character stays in one chunk with
 * the word around it; everything that is not a letter, digit or whitespace is "other". */
static int byte_class(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return CLASS_LETTER;
    if (c >= '0' && c <= '9') return CLASS_DIGIT;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') return CLASS_SPACE;
    return CLASS_OTHER;
}

/* Length (>= 1) of the chunk at the start of text[0..n). A chunk is an optional single leading
 * space plus a run of one class, or a run of whitespace. Like GPT-2, a whitespace run gives its
 * last space to the following word, so " the" is the same chunk after one space or after many. */
static size_t next_chunk(const unsigned char *text, size_t n) {
    size_t limit = n < MAX_CHUNK_BYTES ? n : MAX_CHUNK_BYTES, i = 0;
    int cls = byte_class(text[0]);
    if (cls == CLASS_SPACE) {
        if (text[0] == ' ' && limit > 1 && byte_class(text[1]) != CLASS_SPACE) {
            cls = byte_class(text[1]);
            i = 1;
        } else {
            while (i < limit && byte_class(text[i]) == CLASS_SPACE) i++;
            if (i >= 2 && i < n && text[i - 1] == ' ' && byte_class(text[i]) != CLASS_SPACE) i--;
            return i;
        }
    }
    while (i < limit && byte_class(text[i]) == cls) i++;
    return i;
}

/* ---------------------------------------------------------------------------------------- */
/* the tokenizer object                                                                     */
/* ---------------------------------------------------------------------------------------- */

struct Tokenizer {
    int vocab_size;
    int is_bpe;
    int n_merges;
    int eod_id;                 /* the reserved end-of-document id (256 + n_merges), or -1 */
    uint32_t *merges;           /* 2 * n_merges ids: merge i joins merges[2i], merges[2i+1] into 256 + i */
    uint32_t *token_offset;     /* vocab_size + 1 offsets into token_bytes */
    unsigned char *token_bytes; /* the bytes every id decodes to, back to back */
    PairMap merge_rank;         /* (left, right) -> merge index */
    HfTokenizer *hf;            /* a Hugging Face tokenizer.json: every call goes to it */
};

/* Builds a tokenizer from merges that are already known to be valid (ids in range, each pair
 * once, tokens at most MAX_CHUNK_BYTES long). Takes ownership of merges. With has_eod, the id
 * after the merges is the end-of-document token: encoding never produces it from text, and it
 * decodes to EOD_TEXT. */
static Tokenizer *tokenizer_from_merges(uint32_t *merges, int n_merges, int is_bpe, int has_eod) {
    Tokenizer *tok = xcalloc(1, sizeof *tok);
    int n_plain = BYTE_VOCAB + n_merges;
    tok->vocab_size = n_plain + (has_eod ? 1 : 0);
    tok->eod_id = has_eod ? n_plain : -1;
    tok->is_bpe = is_bpe;
    tok->n_merges = n_merges;
    tok->merges = merges;
    tok->token_offset = xmalloc((size_t)(tok->vocab_size + 1) * sizeof *tok->token_offset);
    uint64_t total = 0;
    for (int id = 0; id < tok->vocab_size; id++) {
        tok->token_offset[id] = (uint32_t)total;
        if (id < BYTE_VOCAB) total += 1;
        else if (id == tok->eod_id) total += strlen(EOD_TEXT);
        else {
            uint32_t left = merges[2 * (id - BYTE_VOCAB)], right = merges[2 * (id - BYTE_VOCAB) + 1];
            total += (tok->token_offset[left + 1] - tok->token_offset[left]) +
                     (tok->token_offset[right + 1] - tok->token_offset[right]);
        }
        tok->token_offset[id + 1] = (uint32_t)total; /* lets later ids read this length */
    }
    tok->token_bytes = xmalloc(total ? total : 1);
    for (int id = 0; id < tok->vocab_size; id++) {
        unsigned char *dst = tok->token_bytes + tok->token_offset[id];
        if (id < BYTE_VOCAB) {
            *dst = (unsigned char)id;
            continue;
        }
        if (id == tok->eod_id) {
            memcpy(dst, EOD_TEXT, strlen(EOD_TEXT));
            continue;
        }
        uint32_t left = merges[2 * (id - BYTE_VOCAB)], right = merges[2 * (id - BYTE_VOCAB) + 1];
        size_t left_length = tok->token_offset[left + 1] - tok->token_offset[left];
        memcpy(dst, tok->token_bytes + tok->token_offset[left], left_length);
        memcpy(dst + left_length, tok->token_bytes + tok->token_offset[right],
               tok->token_offset[right + 1] - tok->token_offset[right]);
    }
    pair_map_init(&tok->merge_rank, (size_t)n_merges);
    for (int m = 0; m < n_merges; m++) {
        int inserted;
        pair_map_insert(&tok->merge_rank, pair_key(merges[2 * m], merges[2 * m + 1]), (uint32_t)m, &inserted);
    }
    return tok;
}

Tokenizer *tokenizer_byte(void) { return tokenizer_from_merges(NULL, 0, 0, 0); }

void tokenizer_free(Tokenizer *tok) {
    if (!tok) return;
    hf_tokenizer_free(tok->hf);
    free(tok->merges);
    free(tok->token_offset);
    free(tok->token_bytes);
    pair_map_free(&tok->merge_rank);
    free(tok);
}

int tokenizer_vocab_size(const Tokenizer *tok) { return tok->hf ? hf_tokenizer_vocab_size(tok->hf) : tok->vocab_size; }
int tokenizer_is_bpe(const Tokenizer *tok) { return tok->hf || tok->is_bpe; }
int tokenizer_eod_id(const Tokenizer *tok) { return tok->hf ? hf_tokenizer_eos_id(tok->hf) : tok->eod_id; }
int tokenizer_is_hf(const Tokenizer *tok) { return tok->hf != NULL; }
const char *tokenizer_hf_json_path(const Tokenizer *tok) { return tok->hf ? hf_tokenizer_json_path(tok->hf) : NULL; }
int tokenizer_token_id(const Tokenizer *tok, const char *text) {
    return tok->hf ? hf_tokenizer_token_id(tok->hf, text) : tok->eod_id >= 0 && !strcmp(text, EOD_TEXT) ? tok->eod_id : -1;
}

int tokenizer_load_hf(Tokenizer **out, const char *path) {
    *out = NULL;
    HfTokenizer *hf;
    if (hf_tokenizer_load(&hf, path)) return -1;
    Tokenizer *tok = xcalloc(1, sizeof *tok);
    tok->hf = hf;
    tok->is_bpe = 1;
    tok->eod_id = -1;
    *out = tok;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* training                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* The unique chunks of the text ("words") with their counts; symbols are rewritten in place as
 * merges are applied, so a word only ever shrinks. */
typedef struct {
    uint32_t *symbols; /* all words back to back */
    size_t *start;
    uint32_t *length;
    int64_t *count;
    size_t n_words;
} WordTable;

typedef struct {
    uint32_t *items;
    uint32_t length, capacity;
} WordList;

/* Every adjacent pair seen so far: its count over the text, and the words it may occur in
 * (a superset: entries go stale when a pair disappears from a word, and are skipped then). */
typedef struct {
    PairMap index; /* pair key -> pair number */
    uint64_t *key;
    int64_t *count;
    WordList *words;
    uint32_t *touched_at; /* merge step that last incremented the pair, to list it once */
    size_t n_pairs, capacity;
    uint32_t *touched; /* pairs incremented during the current merge step */
    size_t n_touched, touched_capacity;
} PairTable;

typedef struct {
    int64_t count;
    uint64_t key;
} HeapEntry;

/* Max-heap on count; equal counts put the lowest (left, right) first, which makes the choice
 * of merge deterministic. */
typedef struct {
    HeapEntry *entries;
    size_t length, capacity;
} PairHeap;

static int heap_before(HeapEntry a, HeapEntry b) { return a.count != b.count ? a.count > b.count : a.key < b.key; }

static void heap_push(PairHeap *heap, HeapEntry entry) {
    if (heap->length == heap->capacity) {
        heap->capacity = heap->capacity ? heap->capacity * 2 : 1024;
        heap->entries = xrealloc(heap->entries, heap->capacity * sizeof *heap->entries);
    }
    size_t i = heap->length++;
    while (i > 0 && heap_before(entry, heap->entries[(i - 1) / 2])) {
        heap->entries[i] = heap->entries[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap->entries[i] = entry;
}

static HeapEntry heap_pop(PairHeap *heap) {
    HeapEntry top = heap->entries[0], last = heap->entries[--heap->length];
    size_t i = 0, n = heap->length;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && heap_before(heap->entries[child + 1], heap->entries[child])) child++;
        if (!heap_before(heap->entries[child], last)) break;
        heap->entries[i] = heap->entries[child];
        i = child;
    }
    if (n) heap->entries[i] = last;
    return top;
}

static void word_list_add(WordList *list, uint32_t word) {
    if (list->length && list->items[list->length - 1] == word) return; /* same word, same pass */
    if (list->length == list->capacity) {
        list->capacity = list->capacity ? list->capacity * 2 : 4;
        list->items = xrealloc(list->items, list->capacity * sizeof *list->items);
    }
    list->items[list->length++] = word;
}

static uint32_t pair_table_get(PairTable *pairs, uint32_t left, uint32_t right) {
    int inserted;
    uint32_t *slot = pair_map_insert(&pairs->index, pair_key(left, right), (uint32_t)pairs->n_pairs, &inserted);
    if (inserted) {
        if (pairs->n_pairs == pairs->capacity) {
            pairs->capacity = pairs->capacity ? pairs->capacity * 2 : 4096;
            pairs->key = xrealloc(pairs->key, pairs->capacity * sizeof *pairs->key);
            pairs->count = xrealloc(pairs->count, pairs->capacity * sizeof *pairs->count);
            pairs->words = xrealloc(pairs->words, pairs->capacity * sizeof *pairs->words);
            pairs->touched_at = xrealloc(pairs->touched_at, pairs->capacity * sizeof *pairs->touched_at);
        }
        size_t p = pairs->n_pairs++;
        pairs->key[p] = pair_key(left, right);
        pairs->count[p] = 0;
        pairs->touched_at[p] = 0;
        memset(&pairs->words[p], 0, sizeof pairs->words[p]);
    }
    return *slot;
}

static void pair_table_free(PairTable *pairs) {
    for (size_t p = 0; p < pairs->n_pairs; p++) free(pairs->words[p].items);
    free(pairs->key);
    free(pairs->count);
    free(pairs->words);
    free(pairs->touched_at);
    free(pairs->touched);
    pair_map_free(&pairs->index);
}

/* Adds a pair occurrence in `word` during merge step `step` (1-based) and remembers the pair
 * so its new count goes on the heap once the step is done. */
static void pair_table_add(PairTable *pairs, uint32_t left, uint32_t right, uint32_t word, int64_t count,
                           uint32_t step) {
    uint32_t p = pair_table_get(pairs, left, right);
    pairs->count[p] += count;
    word_list_add(&pairs->words[p], word);
    if (pairs->touched_at[p] == step) return;
    pairs->touched_at[p] = step;
    if (pairs->n_touched == pairs->touched_capacity) {
        pairs->touched_capacity = pairs->touched_capacity ? pairs->touched_capacity * 2 : 1024;
        pairs->touched = xrealloc(pairs->touched, pairs->touched_capacity * sizeof *pairs->touched);
    }
    pairs->touched[pairs->n_touched++] = p;
}

static void pair_table_remove(PairTable *pairs, uint32_t left, uint32_t right, int64_t count) {
    const uint32_t *p = pair_map_find(&pairs->index, pair_key(left, right));
    if (p) pairs->count[*p] -= count;
}

/* Counts the unique chunks of the text into words whose symbols are the chunk's bytes. */
static void build_word_table(WordTable *words, const unsigned char *text, size_t n_bytes) {
    ByteMap chunks;
    byte_map_init(&chunks, 1 << 14);
    size_t capacity = 1 << 14, symbol_total = 0;
    memset(words, 0, sizeof *words);
    words->start = xmalloc(capacity * sizeof *words->start);
    words->length = xmalloc(capacity * sizeof *words->length);
    words->count = xmalloc(capacity * sizeof *words->count);
    for (size_t pos = 0; pos < n_bytes;) {
        size_t length = next_chunk(text + pos, n_bytes - pos);
        ByteEntry *e = byte_map_insert(&chunks, text + pos, length, hash_bytes(text + pos, length), words->n_words);
        if (e->value == words->n_words) { /* a new chunk */
            if (words->n_words == capacity) {
                capacity *= 2;
                words->start = xrealloc(words->start, capacity * sizeof *words->start);
                words->length = xrealloc(words->length, capacity * sizeof *words->length);
                words->count = xrealloc(words->count, capacity * sizeof *words->count);
            }
            words->start[words->n_words] = symbol_total;
            words->length[words->n_words] = (uint32_t)length;
            words->count[words->n_words] = 0;
            words->n_words++;
            symbol_total += length;
        }
        words->count[e->value]++;
        pos += length;
    }
    words->symbols = xmalloc((symbol_total ? symbol_total : 1) * sizeof *words->symbols);
    for (size_t i = 0; i < chunks.capacity; i++) {
        const ByteEntry *e = &chunks.entries[i];
        if (!e->key) continue;
        uint32_t *dst = words->symbols + words->start[e->value];
        for (uint32_t j = 0; j < e->length; j++) dst[j] = e->key[j];
    }
    byte_map_free(&chunks);
}

static void word_table_free(WordTable *words) {
    free(words->symbols);
    free(words->start);
    free(words->length);
    free(words->count);
}

/* Replaces every (left, right) in one word by new_id, leftmost first, and updates the pair
 * counts by the difference alone: pairs that touched a merge site are removed, pairs that
 * touch a new symbol are added. `site` is scratch of at least the word's length. */
static void merge_in_word(WordTable *words, PairTable *pairs, uint32_t word, uint32_t left, uint32_t right,
                          uint32_t new_id, uint32_t step, unsigned char *site) {
    uint32_t *s = words->symbols + words->start[word];
    uint32_t length = words->length[word], out = 0;
    int64_t count = words->count[word];
    int found = 0;
    /* site[i]: 1 = a merge starts here, 2 = second half of a merge, 0 = untouched */
    for (uint32_t i = 0; i < length;) {
        if (i + 1 < length && s[i] == left && s[i + 1] == right) {
            site[i] = 1, site[i + 1] = 2, i += 2, found = 1;
        } else {
            site[i++] = 0;
        }
    }
    if (!found) return; /* a stale entry in the pair's word list */
    for (uint32_t i = 0; i + 1 < length; i++)
        if (site[i] || site[i + 1]) pair_table_remove(pairs, s[i], s[i + 1], count);
    for (uint32_t i = 0; i < length;) {
        if (site[i] == 1) s[out++] = new_id, i += 2;
        else s[out++] = s[i++];
    }
    words->length[word] = out;
    for (uint32_t i = 0; i + 1 < out; i++)
        if (s[i] == new_id || s[i + 1] == new_id) pair_table_add(pairs, s[i], s[i + 1], word, count, step);
}

static void count_initial_pairs(const WordTable *words, PairTable *pairs, PairHeap *heap) {
    for (size_t w = 0; w < words->n_words; w++) {
        const uint32_t *s = words->symbols + words->start[w];
        for (uint32_t i = 0; i + 1 < words->length[w]; i++)
            pair_table_add(pairs, s[i], s[i + 1], (uint32_t)w, words->count[w], 0);
    }
    for (size_t p = 0; p < pairs->n_pairs; p++) heap_push(heap, (HeapEntry){pairs->count[p], pairs->key[p]});
    pairs->n_touched = 0;
}

/* Pops the most frequent pair. Heap counts are upper bounds (a pair's count only grows in the
 * step that creates it, and only shrinks after), so an entry whose count is stale is pushed
 * back with its true count; the first entry that is current is the true maximum. */
static int pop_best_pair(PairHeap *heap, const PairTable *pairs, uint32_t *best) {
    while (heap->length) {
        HeapEntry top = heap_pop(heap);
        const uint32_t *p = pair_map_find(&pairs->index, top.key);
        int64_t actual = pairs->count[*p];
        if (actual == top.count && actual > 0) {
            *best = *p;
            return 1;
        }
        if (actual > 0) heap_push(heap, (HeapEntry){actual, top.key});
    }
    return 0;
}

int tokenizer_train_bpe(Tokenizer **out, const unsigned char *text, size_t n_bytes, int vocab_size, int with_eod) {
    *out = NULL;
    if (vocab_size < BYTE_VOCAB + 1 + (with_eod ? 1 : 0) || vocab_size > MAX_VOCAB)
        return up_error("tokenizer: vocab_size %d out of range; expected %d..%d", vocab_size, BYTE_VOCAB + 1 + (with_eod ? 1 : 0),
                        MAX_VOCAB);
    int n_merges = vocab_size - BYTE_VOCAB - (with_eod ? 1 : 0);
    WordTable words;
    PairTable pairs = {0};
    PairHeap heap = {0};
    build_word_table(&words, text, n_bytes);
    pair_map_init(&pairs.index, 1 << 16);
    count_initial_pairs(&words, &pairs, &heap);
    uint32_t *merges = xmalloc((size_t)n_merges * 2 * sizeof *merges);
    unsigned char *site = xmalloc(MAX_CHUNK_BYTES);
    int learned = 0;
    for (uint32_t best; learned < n_merges && pop_best_pair(&heap, &pairs, &best); learned++) {
        uint32_t left = pair_left(pairs.key[best]), right = pair_right(pairs.key[best]);
        uint32_t new_id = (uint32_t)(BYTE_VOCAB + learned), step = (uint32_t)learned + 1;
        merges[2 * learned] = left;
        merges[2 * learned + 1] = right;
        WordList list = pairs.words[best]; /* taken: the merged pair never occurs again */
        memset(&pairs.words[best], 0, sizeof pairs.words[best]);
        for (uint32_t i = 0; i < list.length; i++)
            merge_in_word(&words, &pairs, list.items[i], left, right, new_id, step, site);
        free(list.items);
        for (size_t t = 0; t < pairs.n_touched; t++) {
            uint32_t p = pairs.touched[t];
            if (pairs.count[p] > 0) heap_push(&heap, (HeapEntry){pairs.count[p], pairs.key[p]});
        }
        pairs.n_touched = 0;
    }
    free(site);
    free(heap.entries);
    pair_table_free(&pairs);
    word_table_free(&words);
    if (learned < n_merges) {
        free(merges);
        return up_error("tokenizer: the training text (%zu bytes) allows only %d merges (vocab size %d); "
                        "expected more text or a vocab_size <= %d",
                        n_bytes, learned, BYTE_VOCAB + learned, BYTE_VOCAB + learned);
    }
    *out = tokenizer_from_merges(merges, n_merges, 1, with_eod);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* encoding and decoding                                                                    */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
    uint32_t *items;
    size_t length, capacity;
} IdBuffer;

static void id_buffer_append(IdBuffer *buffer, const uint32_t *ids, size_t n) {
    if (buffer->length + n > buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity : 1024;
        while (capacity < buffer->length + n) capacity *= 2;
        buffer->items = xrealloc(buffer->items, capacity * sizeof *buffer->items);
        buffer->capacity = capacity;
    }
    memcpy(buffer->items + buffer->length, ids, n * sizeof *ids);
    buffer->length += n;
}

#define DEAD_SYMBOL UINT32_MAX

/* Scratch for encoding one chunk: the symbols as a linked list, and a min-heap of candidate
 * merges keyed by (rank, position of the left symbol). */
typedef struct {
    uint32_t ids[MAX_CHUNK_BYTES];
    uint32_t next[MAX_CHUNK_BYTES], prev[MAX_CHUNK_BYTES];
    uint64_t heap[3 * MAX_CHUNK_BYTES]; /* each merge pushes at most two candidates */
    size_t heap_length;
} ChunkScratch;

static void candidate_push(ChunkScratch *sc, uint64_t key) {
    size_t i = sc->heap_length++;
    while (i > 0 && key < sc->heap[(i - 1) / 2]) {
        sc->heap[i] = sc->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    sc->heap[i] = key;
}

static uint64_t candidate_pop(ChunkScratch *sc) {
    uint64_t top = sc->heap[0], last = sc->heap[--sc->heap_length];
    size_t i = 0, n = sc->heap_length;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && sc->heap[child + 1] < sc->heap[child]) child++;
        if (sc->heap[child] >= last) break;
        sc->heap[i] = sc->heap[child];
        i = child;
    }
    if (n) sc->heap[i] = last;
    return top;
}

/* Queues the merge of the symbols at positions left and right if there is one. */
static void candidate_consider(const Tokenizer *tok, ChunkScratch *sc, uint32_t left, uint32_t right) {
    const uint32_t *rank = pair_map_find(&tok->merge_rank, pair_key(sc->ids[left], sc->ids[right]));
    if (rank) candidate_push(sc, (uint64_t)*rank << 32 | left);
}

/* Applies merges to one chunk lowest rank first (leftmost first within a rank), which is the
 * order training learned them in. Writes the ids to out; returns how many. */
static size_t encode_chunk(const Tokenizer *tok, const unsigned char *chunk, uint32_t length, ChunkScratch *sc,
                           uint32_t *out) {
    sc->heap_length = 0;
    for (uint32_t i = 0; i < length; i++) {
        sc->ids[i] = chunk[i];
        sc->next[i] = i + 1;
        sc->prev[i] = i - 1; /* wraps to UINT32_MAX for the first symbol: "none" */
    }
    for (uint32_t i = 0; i + 1 < length; i++) candidate_consider(tok, sc, i, i + 1);
    while (sc->heap_length) {
        uint64_t key = candidate_pop(sc);
        uint32_t rank = (uint32_t)(key >> 32), left = (uint32_t)key, right = sc->next[left];
        /* skip candidates made stale by an earlier merge */
        if (sc->ids[left] == DEAD_SYMBOL || right >= length) continue;
        if (sc->ids[left] != tok->merges[2 * rank] || sc->ids[right] != tok->merges[2 * rank + 1]) continue;
        sc->ids[left] = BYTE_VOCAB + rank;
        sc->ids[right] = DEAD_SYMBOL;
        sc->next[left] = sc->next[right];
        if (sc->next[left] < length) sc->prev[sc->next[left]] = left;
        if (sc->prev[left] < length) candidate_consider(tok, sc, sc->prev[left], left);
        if (sc->next[left] < length) candidate_consider(tok, sc, left, sc->next[left]);
    }
    size_t n = 0;
    for (uint32_t i = 0; i < length; i = sc->next[i]) out[n++] = sc->ids[i];
    return n;
}

/* Chunk encodings are cached; the cache stops growing past these sizes so that huge inputs
 * of mostly unique chunks (random bytes) do not exhaust memory. */
#define CACHE_MAX_ENTRIES (1u << 20)
#define CACHE_MAX_IDS (1u << 24)

static void encode_bpe(const Tokenizer *tok, const unsigned char *text, size_t n_bytes, IdBuffer *result) {
    ChunkScratch *sc = xmalloc(sizeof *sc);
    uint32_t chunk_ids[MAX_CHUNK_BYTES];
    ByteMap cache;
    IdBuffer cached = {0}; /* the cached encodings back to back */
    byte_map_init(&cache, 1 << 12);
    for (size_t pos = 0; pos < n_bytes;) {
        size_t length = next_chunk(text + pos, n_bytes - pos);
        uint64_t hash = hash_bytes(text + pos, length);
        const ByteEntry *hit = length > 1 ? byte_map_find(&cache, text + pos, length, hash) : NULL;
        if (hit) { /* value: offset into `cached` << 16 | number of ids (<= MAX_CHUNK_BYTES) */
            id_buffer_append(result, cached.items + (hit->value >> 16), hit->value & 0xffff);
        } else {
            size_t n = encode_chunk(tok, text + pos, (uint32_t)length, sc, chunk_ids);
            id_buffer_append(result, chunk_ids, n);
            if (length > 1 && cache.count < CACHE_MAX_ENTRIES && cached.length + n <= CACHE_MAX_IDS) {
                byte_map_insert(&cache, text + pos, length, hash, (uint64_t)cached.length << 16 | n);
                id_buffer_append(&cached, chunk_ids, n);
            }
        }
        pos += length;
    }
    free(cached.items);
    byte_map_free(&cache);
    free(sc);
}

int tokenizer_encode(const Tokenizer *tok, const unsigned char *text, size_t n_bytes, uint32_t **ids,
                     size_t *n_ids) {
    if (tok->hf) return hf_tokenizer_encode(tok->hf, text, n_bytes, ids, n_ids);
    IdBuffer result = {0};
    if (tok->is_bpe) {
        encode_bpe(tok, text, n_bytes, &result);
    } else {
        result.items = xmalloc((n_bytes ? n_bytes : 1) * sizeof *result.items);
        for (size_t i = 0; i < n_bytes; i++) result.items[i] = text[i];
        result.length = n_bytes;
    }
    if (!result.items) result.items = xmalloc(sizeof *result.items); /* empty input: still malloc'd */
    *ids = result.items;
    *n_ids = result.length;
    return 0;
}

int tokenizer_decode(const Tokenizer *tok, const uint32_t *ids, size_t n_ids, char **text, size_t *n_bytes) {
    if (tok->hf) return hf_tokenizer_decode(tok->hf, ids, n_ids, text, n_bytes);
    *text = NULL;
    if (n_bytes) *n_bytes = 0;
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] >= (uint32_t)tok->vocab_size)
            return up_error("tokenizer: token id %u at position %zu out of range; expected an id < %d", ids[i], i,
                            tok->vocab_size);
        total += tok->token_offset[ids[i] + 1] - tok->token_offset[ids[i]];
    }
    char *buffer = xmalloc(total + 1);
    size_t at = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t length = tok->token_offset[ids[i] + 1] - tok->token_offset[ids[i]];
        memcpy(buffer + at, tok->token_bytes + tok->token_offset[ids[i]], length);
        at += length;
    }
    buffer[total] = 0;
    *text = buffer;
    if (n_bytes) *n_bytes = total;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* tokenizer.json                                                                           */
/* ---------------------------------------------------------------------------------------- */

int tokenizer_save(const Tokenizer *tok, const char *path) {
    if (tok->hf) return copy_file(hf_tokenizer_json_path(tok->hf), path);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "type", tok->is_bpe ? "bpe" : "byte");
    cJSON_AddNumberToObject(root, "version", TOKENIZER_VERSION);
    cJSON_AddNumberToObject(root, "vocab_size", tok->vocab_size);
    if (tok->eod_id >= 0) cJSON_AddNumberToObject(root, "eod_id", tok->eod_id);
    cJSON *merges = cJSON_AddArrayToObject(root, "merges");
    for (int m = 0; m < tok->n_merges; m++) {
        int pair[2] = {(int)tok->merges[2 * m], (int)tok->merges[2 * m + 1]};
        cJSON_AddItemToArray(merges, cJSON_CreateIntArray(pair, 2));
    }
    char *json = cJSON_Print(root);
    cJSON_Delete(root);
    if (!json) return up_error("%s: cannot format the tokenizer as JSON (out of memory); expected free memory", path);
    size_t length = strlen(json);
    char *with_newline = xmalloc(length + 2);
    memcpy(with_newline, json, length);
    with_newline[length] = '\n';
    cJSON_free(json);
    int rc = atomic_write_file(path, with_newline, length + 1);
    free(with_newline);
    return rc;
}

/* An integral JSON number that fits an int. */
static int json_int(const cJSON *item, int *value) {
    if (!cJSON_IsNumber(item)) return -1;
    double d = item->valuedouble;
    if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != floor(d)) return -1;
    *value = (int)d;
    return 0;
}

static int check_header(const cJSON *root, const char *path, int *is_bpe, int *vocab_size) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    if (!cJSON_IsString(type) || (strcmp(type->valuestring, "bpe") && strcmp(type->valuestring, "byte")))
        return up_error("%s: field type: missing or not \"bpe\"/\"byte\"; expected \"type\": \"bpe\"", path);
    *is_bpe = strcmp(type->valuestring, "bpe") == 0;
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
    int version_value;
    if (json_int(version, &version_value) || version_value != TOKENIZER_VERSION)
        return up_error("%s: field version: missing or unsupported; expected %d", path, TOKENIZER_VERSION);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(root, "vocab_size");
    if (json_int(vocab, vocab_size) || *vocab_size < BYTE_VOCAB || *vocab_size > MAX_VOCAB)
        return up_error("%s: field vocab_size: missing or out of range; expected an integer in %d..%d", path,
                        BYTE_VOCAB, MAX_VOCAB);
    return 0;
}

/* Validates merges[m] and stores it; token_length tracks byte lengths so that no token can
 * exceed the longest chunk (a longer one could never be produced and might be enormous). */
static int check_merge(const cJSON *item, const char *path, int m, uint32_t *merges, uint32_t *token_length,
                       const PairMap *seen) {
    int ids[2], new_id = BYTE_VOCAB + m;
    if (!cJSON_IsArray(item) || cJSON_GetArraySize(item) != 2)
        return up_error("%s: field merges[%d]: not a pair; expected [left_id, right_id]", path, m);
    for (int k = 0; k < 2; k++) {
        const cJSON *id = cJSON_GetArrayItem(item, k);
        if (json_int(id, &ids[k]))
            return up_error("%s: field merges[%d]: element %d is not an integer; expected a token id", path, m, k);
        if (ids[k] < 0 || ids[k] >= new_id)
            return up_error("%s: field merges[%d]: id %d out of range; expected an id < %d", path, m, ids[k], new_id);
    }
    const uint32_t *earlier = pair_map_find(seen, pair_key((uint32_t)ids[0], (uint32_t)ids[1]));
    if (earlier)
        return up_error("%s: field merges[%d]: pair [%d, %d] repeats merges[%u]; expected each pair once", path, m,
                        ids[0], ids[1], *earlier);
    token_length[new_id] = token_length[ids[0]] + token_length[ids[1]];
    if (token_length[new_id] > MAX_CHUNK_BYTES)
        return up_error("%s: field merges[%d]: token would be %u bytes long; expected at most %d bytes", path, m,
                        token_length[new_id], MAX_CHUNK_BYTES);
    merges[2 * m] = (uint32_t)ids[0];
    merges[2 * m + 1] = (uint32_t)ids[1];
    return 0;
}

static int check_merges(const cJSON *root, const char *path, int is_bpe, int vocab_size, int has_eod, uint32_t **out) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "merges");
    /* a byte tokenizer may leave merges out */
    if ((list || is_bpe) && !cJSON_IsArray(list))
        return up_error("%s: field merges: missing or not an array; expected a list of [left_id, right_id] pairs",
                        path);
    int n_merges = list ? cJSON_GetArraySize(list) : 0;
    if (!is_bpe && (n_merges || vocab_size != BYTE_VOCAB))
        return up_error("%s: field vocab_size: %d with %d merges for type \"byte\"; expected 256 and no merges", path,
                        vocab_size, n_merges);
    if (vocab_size != BYTE_VOCAB + n_merges + has_eod)
        return up_error("%s: field vocab_size: %d but merges has %d entries%s; expected vocab_size = %d", path,
                        vocab_size, n_merges, has_eod ? " and eod_id is set" : "", BYTE_VOCAB + n_merges + has_eod);
    uint32_t *merges = xmalloc(((size_t)n_merges * 2 + 1) * sizeof *merges);
    uint32_t *token_length = xmalloc((size_t)vocab_size * sizeof *token_length);
    for (int id = 0; id < BYTE_VOCAB; id++) token_length[id] = 1;
    PairMap seen;
    pair_map_init(&seen, (size_t)n_merges);
    int m = 0, rc = 0, inserted;
    for (const cJSON *item = list ? list->child : NULL; item; item = item->next, m++) {
        if ((rc = check_merge(item, path, m, merges, token_length, &seen))) break;
        pair_map_insert(&seen, pair_key(merges[2 * m], merges[2 * m + 1]), (uint32_t)m, &inserted);
    }
    pair_map_free(&seen);
    free(token_length);
    if (rc) {
        free(merges);
        return -1;
    }
    *out = merges;
    return 0;
}

/* allow_hf: a Hugging Face tokenizer.json (a "model" object, no "type") is read as one */
static int load_json(Tokenizer **out, const char *path, int allow_hf) {
    *out = NULL;
    char *data;
    size_t n_bytes;
    if (read_file(path, &data, &n_bytes)) return -1;
    const char *error_at = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, n_bytes, &error_at, 0);
    size_t error_offset = error_at && error_at >= data ? (size_t)(error_at - data) : 0;
    free(data);
    if (!root)
        return up_error("%s: invalid JSON at byte %zu; expected a tokenizer.json written by `upcycle tokenize`", path,
                        error_offset);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return up_error("%s: not a JSON object; expected a tokenizer.json written by `upcycle tokenize`", path);
    }
    if (allow_hf && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "model")) && !cJSON_HasObjectItem(root, "type")) {
        cJSON_Delete(root); /* a Hugging Face tokenizer.json (copied there by tokenize --tokenizer hf:PATH) */
        return tokenizer_load_hf(out, path);
    }
    int is_bpe = 0, vocab_size = 0;
    uint32_t *merges = NULL;
    int rc = check_header(root, path, &is_bpe, &vocab_size);
    /* optional: the reserved end-of-document id, always the last id */
    const cJSON *eod = cJSON_GetObjectItemCaseSensitive(root, "eod_id");
    int eod_id = -1, has_eod = eod != NULL;
    if (!rc && has_eod && (!is_bpe || json_int(eod, &eod_id) || eod_id != vocab_size - 1))
        rc = up_error("%s: field eod_id: %s; expected the last id of a BPE vocabulary, %d", path,
                      !is_bpe ? "set for a byte tokenizer" : json_int(eod, &eod_id) ? "not an integer" : "not the last id", vocab_size - 1);
    if (!rc) rc = check_merges(root, path, is_bpe, vocab_size, has_eod, &merges);
    cJSON_Delete(root);
    if (rc) return -1;
    *out = tokenizer_from_merges(merges, vocab_size - BYTE_VOCAB - has_eod, is_bpe, has_eod);
    return 0;
}

int tokenizer_load(Tokenizer **out, const char *path) { return load_json(out, path, 0); }

int tokenizer_load_dir(Tokenizer **out, const char *data_dir) {
    char *path = path_join(data_dir, "tokenizer.json");
    int rc = 0;
    if (path_exists(path)) rc = load_json(out, path, 1);
    else *out = tokenizer_byte();
    free(path);
    return rc;
}
