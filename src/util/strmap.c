/* strmap.c - see strmap.h. Linear probing in a power-of-two table. */
#include "util/strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t find_slot(const StrMap *m, const char *key) {
    size_t i = hash_str(key) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], key) != 0) i = (i + 1) & (m->cap - 1);
    return i;
}

static void alloc_table(StrMap *m, size_t cap) {
    m->cap = cap;
    m->keys = xcalloc(cap, sizeof *m->keys);
    m->vals = xcalloc(cap, m->val_size);
}

void strmap_init(StrMap *m, size_t val_size, size_t n_expected) {
    size_t cap = 16;
    while (cap < 2 * n_expected + 2) cap *= 2;
    m->val_size = val_size ? val_size : 1;
    m->n = 0;
    alloc_table(m, cap);
}

void strmap_free(StrMap *m) {
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static void grow(StrMap *m) {
    StrMap old = *m;
    alloc_table(m, 2 * old.cap);
    for (size_t i = 0; i < old.cap; i++) {
        if (!old.keys[i]) continue;
        size_t j = find_slot(m, old.keys[i]);
        m->keys[j] = old.keys[i];
        memcpy(m->vals + j * m->val_size, old.vals + i * m->val_size, m->val_size);
    }
    free(old.keys);
    free(old.vals);
}

void *strmap_put(StrMap *m, const char *key, const void *val) {
    size_t i = find_slot(m, key);
    if (m->keys[i]) return m->vals + i * m->val_size;
    if (2 * (m->n + 1) > m->cap) {
        grow(m);
        i = find_slot(m, key);
    }
    m->keys[i] = key;
    memcpy(m->vals + i * m->val_size, val, m->val_size);
    m->n++;
    return NULL;
}

void *strmap_get(const StrMap *m, const char *key) {
    if (!m->cap) return NULL;
    size_t i = find_slot(m, key);
    return m->keys[i] ? m->vals + i * m->val_size : NULL;
}

size_t strmap_count(const StrMap *m) { return m->n; }
