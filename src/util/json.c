/* json.c - see json.h. Every getter is a lookup followed by take(), which holds the one rule. */
#include "util/json.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ------------------------------------------------------------------ files */

cJSON *json_parse(const char *text, size_t n, const char *origin, const char *expected) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!root) {
        int line = 1;
        if (end && end >= text && end <= text + n)
            for (const char *p = text; p < end; p++) line += *p == '\n';
        up_error("%s: invalid JSON (parse error near line %d); expected %s", origin, line, expected);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        up_error("%s: top level is not a JSON object; expected %s", origin, expected);
        return NULL;
    }
    return root;
}

cJSON *json_load_file(const char *path, const char *expected) {
    char *text = NULL;
    size_t n = 0;
    if (read_file(path, &text, &n)) return NULL;
    cJSON *root = json_parse(text, n, path, expected);
    free(text);
    return root;
}

/* ------------------------------------------------------------------ the rule */

enum { K_NUMBER, K_NUMBER_OR_NULL, K_INT, K_STRING, K_BOOL, K_OBJECT, K_ARRAY };
static const char *const EXPECTED[] = {"a number", "a number or null", "an integer", "a string", "true or false", "an object", "an array"};

typedef union {
    double d;
    int i;
    const char *s;
    const cJSON *j;
} Value;

static const char *what_is(const cJSON *it) {
    if (cJSON_IsNull(it)) return "null";
    if (cJSON_IsTrue(it)) return "true";
    if (cJSON_IsFalse(it)) return "false";
    if (cJSON_IsNumber(it)) return "a number";
    if (cJSON_IsString(it)) return "a string";
    if (cJSON_IsArray(it)) return "an array";
    if (cJSON_IsObject(it)) return "an object";
    return "not a JSON value";
}

/* the item (NULL: missing) as a value of this kind, or -1 with the message */
static int take(const char *file, const char *name, const cJSON *it, int kind, Value *v) {
    if (!it) return up_error("%s: field %s: missing; expected %s", file, name, EXPECTED[kind]);
    switch (kind) {
    case K_NUMBER_OR_NULL:
        if (cJSON_IsNull(it)) {
            v->d = NAN;
            return 0;
        }
        /* fall through */
    case K_NUMBER:
        if (!cJSON_IsNumber(it)) break;
        if (!isfinite(it->valuedouble)) return up_error("%s: field %s: is not a finite number; expected %s", file, name, EXPECTED[kind]);
        v->d = it->valuedouble;
        return 0;
    case K_INT: {
        if (!cJSON_IsNumber(it)) break;
        double d = it->valuedouble; /* compared as doubles: (int)1e10 is undefined */
        if (!isfinite(d) || d != floor(d)) return up_error("%s: field %s: is %g; expected an integer", file, name, d);
        if (d < INT_MIN || d > INT_MAX)
            return up_error("%s: field %s: is %g, out of range; expected an integer", file, name, d);
        v->i = (int)d;
        return 0;
    }
    case K_STRING:
        if (!cJSON_IsString(it) || !it->valuestring) break;
        v->s = it->valuestring;
        return 0;
    case K_BOOL:
        if (!cJSON_IsBool(it)) break;
        v->i = cJSON_IsTrue(it);
        return 0;
    case K_OBJECT:
        if (!cJSON_IsObject(it)) break;
        v->j = it;
        return 0;
    case K_ARRAY:
        if (!cJSON_IsArray(it)) break;
        v->j = it;
        return 0;
    }
    return up_error("%s: field %s: is %s; expected %s", file, name, what_is(it), EXPECTED[kind]);
}

static const cJSON *lookup(const cJSON *obj, const char *name) {
    if (!cJSON_IsObject(obj)) return NULL;
    const char *dot = strrchr(name, '.');
    return cJSON_GetObjectItemCaseSensitive(obj, dot ? dot + 1 : name);
}

int json_has(const cJSON *obj, const char *name) { return lookup(obj, name) != NULL; }

static int get(const char *file, const cJSON *obj, const char *name, int kind, Value *v) {
    return take(file, name, lookup(obj, name), kind, v);
}

/* 1: absent or null (the caller keeps its default), 0: taken, -1: error */
static int opt(const char *file, const cJSON *obj, const char *name, int kind, Value *v) {
    const cJSON *it = lookup(obj, name);
    if (!it || cJSON_IsNull(it)) return 1;
    return take(file, name, it, kind, v);
}

static int elem(const char *file, const cJSON *arr, const char *name, int i, int kind, Value *v) {
    char label[256];
    snprintf(label, sizeof label, "%s[%d]", name, i);
    const cJSON *it = cJSON_IsArray(arr) && i >= 0 ? cJSON_GetArrayItem(arr, i) : NULL;
    return take(file, label, it, kind, v);
}

/* ------------------------------------------------------------------ getters */

#define GETTER(fn, T, kind, member)                                                          \
    int fn(const char *file, const cJSON *obj, const char *name, T *out) {                   \
        Value v = {0};                                                                       \
        if (get(file, obj, name, kind, &v)) return -1;                                       \
        *out = v.member;                                                                     \
        return 0;                                                                            \
    }
GETTER(json_get_number, double, K_NUMBER, d)
GETTER(json_get_number_or_null, double, K_NUMBER_OR_NULL, d)
GETTER(json_get_int, int, K_INT, i)
GETTER(json_get_string, const char *, K_STRING, s)
GETTER(json_get_bool, int, K_BOOL, i)
GETTER(json_get_object, const cJSON *, K_OBJECT, j)
GETTER(json_get_array, const cJSON *, K_ARRAY, j)
#undef GETTER

#define OPTIONAL(fn, T, kind, member)                                                        \
    int fn(const char *file, const cJSON *obj, const char *name, T dflt, T *out) {           \
        Value v = {0};                                                                       \
        int rc = opt(file, obj, name, kind, &v);                                             \
        if (rc < 0) return -1;                                                               \
        *out = rc ? dflt : v.member;                                                         \
        return 0;                                                                            \
    }
OPTIONAL(json_opt_number, double, K_NUMBER, d)
OPTIONAL(json_opt_int, int, K_INT, i)
OPTIONAL(json_opt_string, const char *, K_STRING, s)
OPTIONAL(json_opt_bool, int, K_BOOL, i)
#undef OPTIONAL

int json_opt_object(const char *file, const cJSON *obj, const char *name, const cJSON **out) {
    Value v = {0};
    int rc = opt(file, obj, name, K_OBJECT, &v);
    if (rc < 0) return -1;
    *out = rc ? NULL : v.j;
    return 0;
}

int json_opt_array(const char *file, const cJSON *obj, const char *name, const cJSON **out) {
    Value v = {0};
    int rc = opt(file, obj, name, K_ARRAY, &v);
    if (rc < 0) return -1;
    *out = rc ? NULL : v.j;
    return 0;
}

#define ELEMENT(fn, T, kind, member)                                                         \
    int fn(const char *file, const cJSON *arr, const char *name, int i, T *out) {            \
        Value v = {0};                                                                       \
        if (elem(file, arr, name, i, kind, &v)) return -1;                                   \
        *out = v.member;                                                                     \
        return 0;                                                                            \
    }
ELEMENT(json_elem_number, double, K_NUMBER, d)
ELEMENT(json_elem_number_or_null, double, K_NUMBER_OR_NULL, d)
ELEMENT(json_elem_int, int, K_INT, i)
ELEMENT(json_elem_string, const char *, K_STRING, s)
ELEMENT(json_elem_object, const cJSON *, K_OBJECT, j)
ELEMENT(json_elem_array, const cJSON *, K_ARRAY, j)
#undef ELEMENT

int json_token_ids(const char *file, const cJSON *arr, const char *name, int vocab, int32_t *out) {
    int i = 0;
    for (const cJSON *elem = arr->child; elem; elem = elem->next, i++) { /* in order: cJSON_GetArrayItem is linear */
        int id = 0;
        if (cJSON_IsNumber(elem) && elem->valuedouble >= -2147483648.0 && elem->valuedouble <= 2147483647.0 &&
            elem->valuedouble == (double)(int)elem->valuedouble)
            id = (int)elem->valuedouble;
        else if (json_elem_int(file, arr, name, i, &id)) /* not a whole number: its message */
            return -1;
        if (id < 0 || id >= vocab) return up_error("%s: field %s[%d] is %d; expected a token id in [0, %d)", file, name, i, id, vocab);
        out[i] = id;
    }
    return 0;
}

/* the first byte at or after i that is not JSON whitespace */
static size_t skip_space(const char *text, size_t n, size_t i) {
    while (i < n && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) i++;
    return i;
}

char *json_text_set_top_int(const char *text, size_t n, const char *key, long long value) {
    size_t klen = strlen(key);
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = text[i];
        if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') depth--;
        else if (ch == '"') {
            size_t start = i + 1, end = start;
            while (end < n && text[end] != '"') end += text[end] == '\\' ? 2 : 1;
            size_t j = skip_space(text, n, end + 1);
            int is_key = j < n && text[j] == ':';
            if (depth == 1 && is_key && end - start == klen && !memcmp(text + start, key, klen)) {
                j = skip_space(text, n, j + 1);
                size_t v = j;
                while (v < n && text[v] && strchr("+-0123456789.eE", text[v])) v++; /* strchr finds a NUL too */
                if (v == j) return NULL;
                char num[32];
                int len = snprintf(num, sizeof num, "%lld", value);
                char *out = xmalloc(n - (v - j) + (size_t)len + 1);
                memcpy(out, text, j);
                memcpy(out + j, num, (size_t)len);
                memcpy(out + j + len, text + v, n - v);
                out[n - (v - j) + len] = 0;
                return out;
            }
            i = end;
        }
    }
    return NULL;
}
