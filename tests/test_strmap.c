/* The string-keyed hash map (src/util/strmap.h): put, get, duplicates, overwrite through the
 * returned pointer, missing keys, growth from a small table, many colliding keys. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "util.h"
#include "util/strmap.h"

typedef struct {
    int file, index;
} Ref;

/* FNV-1a, the map's hash (strmap.h), to show that the test keys do collide */
static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

TEST(test_strmap_put_get_overwrite) {
    StrMap m;
    strmap_init(&m, sizeof(Ref), 4);
    CHECK(strmap_count(&m) == 0);
    CHECK(strmap_get(&m, "a") == NULL);
    Ref a = {1, 2}, b = {3, 4}, again = {9, 9};
    CHECK(strmap_put(&m, "a", &a) == NULL);
    CHECK(strmap_put(&m, "ab", &b) == NULL);
    CHECK(strmap_put(&m, "", &again) == NULL); /* the empty string is a key like any other */
    CHECK(strmap_count(&m) == 3);
    const Ref *got = strmap_get(&m, "a");
    CHECK(got && got->file == 1 && got->index == 2);
    got = strmap_get(&m, "ab");
    CHECK(got && got->file == 3 && got->index == 4);
    got = strmap_get(&m, "");
    CHECK(got && got->file == 9);
    /* a second put keeps the first value and returns it */
    char key_copy[] = "a"; /* equal string, different pointer */
    Ref *old = strmap_put(&m, key_copy, &again);
    CHECK(old && old->file == 1 && old->index == 2);
    CHECK(strmap_count(&m) == 3);
    /* overwrite through the returned pointer */
    old->index = 7;
    got = strmap_get(&m, "a");
    CHECK(got && got->index == 7);
    /* missing keys: prefixes, extensions, case */
    CHECK(strmap_get(&m, "b") == NULL);
    CHECK(strmap_get(&m, "abc") == NULL);
    CHECK(strmap_get(&m, "A") == NULL);
    strmap_free(&m);
    CHECK(m.cap == 0 && m.n == 0 && m.keys == NULL);
    CHECK(strmap_get(&m, "a") == NULL); /* a freed (zeroed) map is empty */
}

TEST(test_strmap_many_keys) {
    /* 20000 keys into a table sized for none: it grows many times, and many keys share a home
     * slot (checked below), so lookups walk probe chains */
    enum { N = 20000 };
    char (*keys)[32] = xmalloc(N * sizeof *keys);
    for (int i = 0; i < N; i++) snprintf(keys[i], sizeof keys[i], "model.layers.%d.mlp.experts.%d", i / 64, i % 64);
    StrMap m;
    strmap_init(&m, sizeof(int), 0);
    size_t first_cap = m.cap;
    for (int i = 0; i < N; i++) {
        CHECK(strmap_put(&m, keys[i], &i) == NULL);
        CHECK(2 * m.n <= m.cap);
    }
    CHECK(m.cap > first_cap);
    unsigned char *home = xcalloc(m.cap, 1);
    int shared = 0;
    for (int i = 0; i < N; i++) shared += home[fnv1a(keys[i]) & (m.cap - 1)]++ > 0;
    free(home);
    CHECK_MSG(shared > N / 10, "only %d of %d keys share a home slot; expected many collisions", shared, N);
    CHECK(strmap_count(&m) == N);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        const int *v = strmap_get(&m, keys[i]);
        bad += !v || *v != i;
        int other = -1;
        const int *dup = strmap_put(&m, keys[i], &other);
        bad += !dup || *dup != i;
    }
    CHECK_MSG(bad == 0, "%d of %d keys lost or changed", bad, N);
    CHECK(strmap_count(&m) == N);
    /* keys that are not in the map, including ones whose home slots are full */
    char probe[40];
    int found = 0;
    for (int i = 0; i < N; i++) {
        snprintf(probe, sizeof probe, "model.layers.%d.mlp.experts.%d.x", i / 64, i % 64);
        found += strmap_get(&m, probe) != NULL;
    }
    CHECK(found == 0);
    /* a map sized for its keys never rehashes */
    StrMap sized;
    strmap_init(&sized, sizeof(int), N);
    size_t cap = sized.cap;
    for (int i = 0; i < N; i++) strmap_put(&sized, keys[i], &i);
    CHECK(sized.cap == cap);
    const int *v = strmap_get(&sized, keys[N - 1]);
    CHECK(v && *v == N - 1);
    strmap_free(&sized);
    strmap_free(&m);
    free(keys);
}
