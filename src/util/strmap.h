/* strmap.h - a hash map from C strings to fixed-size values (open addressing, FNV-1a).
 *
 * The contract:
 *   - keys are borrowed, not copied: a key must stay valid and unchanged while the map lives
 *     (e.g. the tensor names of an open StFile);
 *   - values are copied in, each val_size bytes (strmap_init), suitably aligned for any type
 *     of that size;
 *   - strmap_put never replaces: a key already present keeps its value and put returns it, so
 *     the caller can report the duplicate or overwrite the value through the pointer;
 *   - keys are whole strings compared with strcmp (no hashing collisions can merge two keys);
 *   - the table grows itself (load kept at most 1/2); n_expected only sizes the first table,
 *     and a map sized for its keys never rehashes;
 *   - a pointer returned by put or get stays valid until the next put of a new key.
 * There is no removal: the maps we build are filled once and then read. */
#ifndef UPCYCLE_UTIL_STRMAP_H
#define UPCYCLE_UTIL_STRMAP_H

#include <stddef.h>

typedef struct {
    const char **keys;   /* (cap) NULL = empty slot */
    unsigned char *vals; /* (cap * val_size) */
    size_t val_size;
    size_t cap;          /* a power of two, or 0 before strmap_init */
    size_t n;            /* keys in the map */
} StrMap;

void strmap_init(StrMap *m, size_t val_size, size_t n_expected);
void strmap_free(StrMap *m); /* frees the table (not the keys); the map is zeroed */
/* Inserts key -> *val and returns NULL; if key is already present, returns its value unchanged. */
void *strmap_put(StrMap *m, const char *key, const void *val);
void *strmap_get(const StrMap *m, const char *key); /* NULL if absent (or the map is zeroed) */
size_t strmap_count(const StrMap *m);

#endif
