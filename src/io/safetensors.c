/* safetensors.c - safetensors reading (mmap + full header validation) and streaming writing.
 *
 * The reader trusts nothing in the file: every length, offset and shape is checked against
 * the file size before any tensor byte is touched, so a corrupt or truncated checkpoint gives
 * a one-line error instead of a crash. The writer computes the whole header up front, so
 * tensor data can be streamed straight to disk without holding the model twice in memory. */
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference implementation refuses headers above 100 MB; a larger one is corrupt. */
#define ST_MAX_HEADER_BYTES 100000000ULL
/* JSON numbers are doubles in cJSON; integers above 2^53 cannot be represented exactly. */
#define ST_MAX_JSON_INT 9007199254740992.0
#define ST_METADATA_KEY "__metadata__"

/* ------------------------------------------------------------------ dtypes */

static const struct {
    const char *name;
    size_t size;
} DTYPES[] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_F64] = {"F64", 8},
    [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4}, [ST_I16] = {"I16", 2},   [ST_I8] = {"I8", 1},
    [ST_U8] = {"U8", 1},   [ST_BOOL] = {"BOOL", 1}, [ST_U16] = {"U16", 2}, [ST_U32] = {"U32", 4},
    [ST_U64] = {"U64", 8}, [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};
#define N_DTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

static int dtype_is_valid(StDtype d) { return (int)d >= 0 && (int)d < N_DTYPES; }

const char *st_dtype_name(StDtype d) { return dtype_is_valid(d) ? DTYPES[d].name : "?"; }

int st_dtype_from_name(const char *name, StDtype *out) {
    for (int i = 0; i < N_DTYPES; i++) {
        if (strcmp(DTYPES[i].name, name) == 0) {
            *out = (StDtype)i;
            return 0;
        }
    }
    return -1; /* callers know the file and tensor, so they word the error */
}

size_t st_dtype_size(StDtype d) { return dtype_is_valid(d) ? DTYPES[d].size : 0; }

int64_t st_numel(const StTensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* ------------------------------------------------------------------ number conversions */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    /* Rounding a NaN could carry into the exponent and turn it into infinity; keep it a
     * (quiet) NaN with its sign and top payload bits instead. */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    /* Round to nearest, ties to even: add just under half, plus one if the kept LSB is odd.
     * A carry out of the mantissa correctly bumps the exponent (up to infinity). */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0x1f) return f32_from_bits(sign | 0x7f800000u | (mantissa << 13)); /* inf/NaN */
    if (exponent != 0) return f32_from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
    /* zero or subnormal: mantissa * 2^-24 is exact in float32 */
    float magnitude = (float)mantissa * 0x1p-24f;
    return sign ? -magnitude : magnitude;
}

float f8e4m3_to_f32(uint8_t b) {
    int exponent = (b >> 3) & 0xf, mantissa = b & 7;
    float magnitude;
    if (exponent == 0xf && mantissa == 7) magnitude = NAN;
    else if (exponent == 0) magnitude = (float)mantissa * 0x1p-9f; /* subnormal: mantissa/8 * 2^-6 */
    else magnitude = ldexpf(1.0f + (float)mantissa / 8.0f, exponent - 7);
    return b & 0x80 ? -magnitude : magnitude;
}

float f8e5m2_to_f32(uint8_t b) { return f16_to_f32((uint16_t)((uint16_t)b << 8)); }

int st_dtype_is_float(StDtype d) {
    return d == ST_F32 || d == ST_F16 || d == ST_BF16 || d == ST_F8_E4M3 || d == ST_F8_E5M2;
}

float st_element_f32(StDtype d, const void *p) {
    uint16_t h;
    switch (d) {
    case ST_F32: {
        float f;
        memcpy(&f, p, sizeof f);
        return f;
    }
    case ST_F16: memcpy(&h, p, sizeof h); return f16_to_f32(h);
    case ST_BF16: memcpy(&h, p, sizeof h); return bf16_to_f32(h);
    case ST_F8_E4M3: return f8e4m3_to_f32(*(const uint8_t *)p);
    case ST_F8_E5M2: return f8e5m2_to_f32(*(const uint8_t *)p);
    default: return NAN;
    }
}

/* Shifts right by `shift` (1..31) rounding to nearest, ties to even. */
static uint32_t shift_round_even(uint32_t value, int shift) {
    uint32_t kept = value >> shift, rest = value & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (kept & 1u))) kept++;
    return kept;
}

uint16_t f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t magnitude = u & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return sign | 0x7e00u | (uint16_t)((magnitude >> 13) & 0x3ffu); /* NaN stays NaN */
    if (magnitude >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to infinity */
    if (magnitude <= 0x33000000u) return sign;            /* <= 2^-25 rounds to zero (tie to even) */
    if (magnitude < 0x38800000u) {                        /* below 2^-14: f16 subnormal */
        int exponent = (int)(magnitude >> 23);
        uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
        /* result = significand * 2^(exponent-150) * 2^24, i.e. significand >> (126-exponent);
         * rounding up to 0x400 correctly yields the smallest normal. */
        return sign | (uint16_t)shift_round_even(significand, 126 - exponent);
    }
    /* normal: rebias the exponent (127 -> 15) and drop 13 mantissa bits; a rounding carry
     * moves into the exponent, which stays below infinity thanks to the check above. */
    return sign | (uint16_t)shift_round_even(magnitude - 0x38000000u, 13);
}

/* ------------------------------------------------------------------ reader */

void st_format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, "]");
}

/* Opens, sizes and mmaps the file; fills f->path, f->map, f->file_bytes. */
static int map_file(StFile *f, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return up_error("%s: cannot open (%s); expected a readable safetensors file", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return up_error("%s: not a regular file; expected a safetensors file", path);
    }
    if (st.st_size < 8) {
        close(fd);
        return up_error("%s: file is %lld bytes, too short for the 8-byte header length; expected a safetensors file",
                        path, (long long)st.st_size);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) return up_error("%s: cannot mmap (%s); expected a readable file", path, strerror(map_errno));
    f->map = map;
    f->file_bytes = (size_t)st.st_size;
    return 0;
}

/* Checks the header length and parses the header into a JSON object. */
static int parse_header(StFile *f, cJSON **root_out) {
    const unsigned char *bytes = f->map;
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; i--) header_bytes = (header_bytes << 8) | bytes[i]; /* little-endian */
    if (header_bytes > ST_MAX_HEADER_BYTES)
        return up_error("%s: header length %" PRIu64 " exceeds the %llu-byte limit; expected a safetensors file",
                        f->path, header_bytes, ST_MAX_HEADER_BYTES);
    if (header_bytes > f->file_bytes - 8)
        return up_error("%s: header length %" PRIu64 " runs past the end of the %zu-byte file; expected a safetensors file",
                        f->path, header_bytes, f->file_bytes);
    f->data_offset = 8 + (size_t)header_bytes;
    const char *text = (const char *)bytes + 8, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)header_bytes, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - text) : 0;
        return up_error("%s: header is not valid JSON (error near byte %zu of %" PRIu64 "); expected a JSON object",
                        f->path, at, header_bytes);
    }
    /* cJSON stops after the value; only the spaces writers pad with may follow it. */
    for (const char *p = end; p < text + header_bytes; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0') {
            cJSON_Delete(root);
            return up_error("%s: header has trailing bytes after its JSON (at byte %zu); expected only space padding",
                            f->path, (size_t)(p - text));
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return up_error("%s: header is JSON but not an object; expected {\"tensor name\": {...}, ...}", f->path);
    }
    *root_out = root;
    return 0;
}

/* A JSON number that is a non-negative integer exactly representable in a double. */
static int json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return -1;
    double d = item->valuedouble;
    if (!(d >= 0 && d <= ST_MAX_JSON_INT) || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_metadata(StFile *f, const cJSON *meta) {
    if (f->meta_keys) return up_error("%s: header has two %s entries; expected at most one", f->path, ST_METADATA_KEY);
    if (!cJSON_IsObject(meta))
        return up_error("%s: %s is not an object; expected {\"key\": \"value\", ...}", f->path, ST_METADATA_KEY);
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = xcalloc((size_t)n + 1, sizeof *f->meta_keys);
    f->meta_values = xcalloc((size_t)n + 1, sizeof *f->meta_values);
    for (const cJSON *item = meta->child; item; item = item->next) {
        if (!cJSON_IsString(item))
            return up_error("%s: metadata %s is not a string; expected string values only", f->path, item->string);
        f->meta_keys[f->n_meta] = xstrdup(item->string);
        f->meta_values[f->n_meta++] = xstrdup(item->valuestring);
    }
    return 0;
}

static int parse_dtype(const StFile *f, const char *name, const cJSON *entry, StDtype *out) {
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    if (!cJSON_IsString(dtype))
        return up_error("%s: tensor %s has no dtype string; expected \"dtype\": \"F32\" or similar", f->path, name);
    if (st_dtype_from_name(dtype->valuestring, out) != 0) {
        char known[256] = "";
        for (int i = 0; i < N_DTYPES; i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", DTYPES[i].name);
        return up_error("%s: tensor %s has unknown dtype \"%.32s\"; expected one of %s", f->path, name,
                        dtype->valuestring, known);
    }
    return 0;
}

static int parse_shape(const StFile *f, const char *name, const cJSON *entry, StTensor *t) {
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    if (!cJSON_IsArray(shape))
        return up_error("%s: tensor %s has no shape array; expected \"shape\": [d0, d1, ...]", f->path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return up_error("%s: tensor %s has %d dimensions; expected at most %d", f->path, name, ndim, ST_MAX_DIMS);
    t->ndim = 0;
    for (const cJSON *dim = shape->child; dim; dim = dim->next) {
        uint64_t value;
        if (json_uint(dim, &value) != 0)
            return up_error("%s: tensor %s has shape entry %d that is not a non-negative integer; expected a shape "
                            "of non-negative integers", f->path, name, t->ndim);
        t->shape[t->ndim++] = (int64_t)value;
    }
    return 0;
}

/* Checks data_offsets against the data buffer and against numel * dtype size. */
static int parse_offsets(const StFile *f, const char *name, const cJSON *entry, StTensor *t) {
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 || json_uint(offsets->child, &begin) != 0 ||
        json_uint(offsets->child->next, &end) != 0)
        return up_error("%s: tensor %s has malformed data_offsets; expected \"data_offsets\": [begin, end] with "
                        "non-negative integers", f->path, name);
    uint64_t data_bytes = f->file_bytes - f->data_offset;
    if (begin > end || end > data_bytes)
        return up_error("%s: tensor %s has data_offsets [%" PRIu64 ", %" PRIu64 "] outside the %" PRIu64
                        "-byte data buffer; expected 0 <= begin <= end <= %" PRIu64 " (file truncated?)",
                        f->path, name, begin, end, data_bytes, data_bytes);
    uint64_t expected = st_dtype_size(t->dtype);
    int overflow = 0;
    /* Every prefix product must fit an int64, even when a later dimension is 0: st_numel
     * multiplies the same prefixes in int64 (the reference implementation rejects such shapes
     * too). Saturating and then multiplying by 0 used to accept [2^53, 2^53, 0]. */
    for (int i = 0; i < t->ndim; i++)
        overflow |= __builtin_mul_overflow(expected, (uint64_t)t->shape[i], &expected) || expected > INT64_MAX;
    if (overflow) expected = UINT64_MAX; /* never equals end - begin: reported as a size mismatch */
    if (end - begin != expected) {
        char shape_text[256];
        st_format_shape(shape_text, sizeof shape_text, t->ndim, t->shape);
        return up_error("%s: tensor %s spans %" PRIu64 " bytes; expected %" PRIu64 " for %s shape %s", f->path, name,
                        end - begin, expected, st_dtype_name(t->dtype), shape_text);
    }
    t->begin = begin;
    t->end = end;
    return 0;
}

static int parse_tensor(const StFile *f, const cJSON *entry, StTensor *t) {
    const char *name = entry->string;
    if (!cJSON_IsObject(entry))
        return up_error("%s: tensor %s is not an object; expected {\"dtype\", \"shape\", \"data_offsets\"}", f->path,
                        name);
    t->name = xstrdup(name);
    if (parse_dtype(f, name, entry, &t->dtype) != 0) return -1;
    if (parse_shape(f, name, entry, t) != 0) return -1;
    return parse_offsets(f, name, entry, t);
}

static int compare_offsets(const void *a, const void *b) {
    const StTensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1; /* empty tensors first at a shared offset */
    return 0;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* cJSON keeps duplicate keys, which would make st_find ambiguous. */
static int check_unique_names(const StFile *f) {
    if (f->n_tensors < 2) return 0;
    char **names = xmalloc((size_t)f->n_tensors * sizeof *names);
    for (int i = 0; i < f->n_tensors; i++) names[i] = f->tensors[i].name;
    qsort(names, (size_t)f->n_tensors, sizeof *names, compare_names);
    int rc = 0;
    for (int i = 1; i < f->n_tensors && rc == 0; i++) {
        if (strcmp(names[i - 1], names[i]) == 0)
            rc = up_error("%s: tensor %s appears twice in the header; expected unique names", f->path, names[i]);
    }
    free(names);
    return rc;
}

/* Sorts tensors by offset and rejects any two whose byte ranges overlap. */
static int check_layout(StFile *f) {
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, compare_offsets);
    int widest = -1; /* the earlier tensor reaching furthest, so nested ranges are caught too */
    for (int i = 0; i < f->n_tensors; i++) {
        const StTensor *t = &f->tensors[i];
        if (widest >= 0 && t->begin < f->tensors[widest].end)
            return up_error("%s: tensor %s [%" PRIu64 ", %" PRIu64 ") overlaps tensor %s [%" PRIu64 ", %" PRIu64
                            "); expected disjoint data_offsets", f->path, t->name, t->begin, t->end,
                            f->tensors[widest].name, f->tensors[widest].begin, f->tensors[widest].end);
        if (widest < 0 || t->end > f->tensors[widest].end) widest = i;
    }
    return check_unique_names(f);
}

static int parse_entries(StFile *f, const cJSON *root) {
    int n = cJSON_GetArraySize(root);
    f->tensors = xcalloc((size_t)n + 1, sizeof *f->tensors);
    for (const cJSON *entry = root->child; entry; entry = entry->next) {
        if (strcmp(entry->string, ST_METADATA_KEY) == 0) {
            if (parse_metadata(f, entry) != 0) return -1;
            continue;
        }
        /* count the tensor before parsing so st_close frees its name on failure */
        if (parse_tensor(f, entry, &f->tensors[f->n_tensors++]) != 0) return -1;
    }
    return check_layout(f);
}

int st_open(StFile *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = xstrdup(path);
    cJSON *root = NULL;
    if (map_file(f, path) != 0 || parse_header(f, &root) != 0) {
        st_close(f);
        return -1;
    }
    int rc = parse_entries(f, root);
    cJSON_Delete(root);
    if (rc != 0) st_close(f);
    return rc;
}

void st_close(StFile *f) {
    if (f->map) munmap(f->map, f->file_bytes);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const void *st_data(const StFile *f, const StTensor *t) {
    return (const unsigned char *)f->map + f->data_offset + t->begin;
}

const char *st_meta(const StFile *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

static int shape_matches(const StTensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

/* Converts n 16-bit values; memcpy because the data buffer need not be 2-byte aligned. */
static void convert_16bit(const unsigned char *src, float *dst, int64_t n, float (*to_f32)(uint16_t)) {
#pragma omp parallel for if (n >= 65536)
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, sizeof h);
        dst[i] = to_f32(h);
    }
}

int st_read_f32(const StFile *f, const char *name, float *dst, int ndim, const int64_t *shape) {
    const StTensor *t = st_find(f, name);
    if (!t) return up_error("%s: tensor %s not found; expected it for this config", f->path, name);
    if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16)
        return up_error("%s: tensor %s has dtype %s; expected F32, BF16 or F16", f->path, name, st_dtype_name(t->dtype));
    if (!shape_matches(t, ndim, shape)) {
        char have[256], want[256];
        st_format_shape(have, sizeof have, t->ndim, t->shape);
        st_format_shape(want, sizeof want, ndim, shape);
        return up_error("%s: tensor %s has shape %s; expected %s", f->path, name, have, want);
    }
    int64_t n = st_numel(t);
    const unsigned char *src = st_data(f, t);
    if (t->dtype == ST_F32) memcpy(dst, src, (size_t)n * sizeof *dst); /* little-endian host assumed */
    else convert_16bit(src, dst, n, t->dtype == ST_BF16 ? bf16_to_f32 : f16_to_f32);
    return 0;
}

int st_read_f32_span(const StFile *f, const StTensor *t, uint64_t first, uint64_t count, float *dst) {
    if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16)
        return up_error("%s: tensor %s has dtype %s; expected F32, BF16 or F16", f->path, t->name, st_dtype_name(t->dtype));
    if (first + count > (uint64_t)st_numel(t) || first + count < first)
        return up_error("%s: tensor %s: elements [%llu, %llu) are past its %lld; expected a span inside it", f->path, t->name,
                        (unsigned long long)first, (unsigned long long)(first + count), (long long)st_numel(t));
    const unsigned char *src = (const unsigned char *)st_data(f, t) + first * st_dtype_size(t->dtype);
    if (t->dtype == ST_F32) memcpy(dst, src, count * sizeof *dst);
    else convert_16bit(src, dst, (int64_t)count, t->dtype == ST_BF16 ? bf16_to_f32 : f16_to_f32);
    return 0;
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t bytes;
} WriterTensor;

struct StWriter {
    WriterTensor *tensors;
    int n_tensors, cap_tensors;
    char **meta_keys, **meta_values;
    int n_meta, cap_meta;
    /* add/meta/write cannot always report errors themselves; the first problem is kept
     * (without the path prefix) and reported by open or commit. */
    char *error;
    char *path;
    AtomicFile file;
    int is_open;
    uint64_t total_bytes, written_bytes;
};

StWriter *st_writer_new(void) { return xcalloc(1, sizeof(StWriter)); }

static void writer_defer_error(StWriter *w, const char *message) {
    if (!w->error) w->error = xstrdup(message);
}

/* Computes an added tensor's byte size; on a bad dtype or shape records the problem, returns -1. */
static int writer_tensor_bytes(StWriter *w, const WriterTensor *t, uint64_t *bytes) {
    char message[512];
    if (!dtype_is_valid(t->dtype)) {
        snprintf(message, sizeof message, "tensor %s has invalid dtype %d; expected an StDtype", t->name, (int)t->dtype);
        writer_defer_error(w, message);
        return -1;
    }
    *bytes = st_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0 || __builtin_mul_overflow(*bytes, (uint64_t)t->shape[i], bytes)) {
            snprintf(message, sizeof message, "tensor %s has dimension %d = %" PRId64 "; expected a non-negative size",
                     t->name, i, t->shape[i]);
            writer_defer_error(w, message);
            return -1;
        }
    }
    return 0;
}

void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape) {
    char message[512];
    if (w->is_open) {
        snprintf(message, sizeof message, "tensor %s added after st_writer_open; expected all tensors added first", name);
        writer_defer_error(w, message);
        return;
    }
    if (ndim < 0 || ndim > ST_MAX_DIMS) {
        snprintf(message, sizeof message, "tensor %s has %d dimensions; expected 0 to %d", name, ndim, ST_MAX_DIMS);
        writer_defer_error(w, message);
        return;
    }
    if (w->n_tensors == w->cap_tensors) {
        w->cap_tensors = w->cap_tensors ? 2 * w->cap_tensors : 16;
        w->tensors = xrealloc(w->tensors, (size_t)w->cap_tensors * sizeof *w->tensors);
    }
    WriterTensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    w->n_tensors++;
    if (writer_tensor_bytes(w, t, &t->bytes) != 0) t->bytes = 0;
}

void st_writer_meta(StWriter *w, const char *key, const char *value) {
    for (int i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_keys[i], key) == 0) { /* the last value set wins */
            free(w->meta_values[i]);
            w->meta_values[i] = xstrdup(value);
            return;
        }
    }
    if (w->n_meta == w->cap_meta) {
        w->cap_meta = w->cap_meta ? 2 * w->cap_meta : 8;
        w->meta_keys = xrealloc(w->meta_keys, (size_t)w->cap_meta * sizeof *w->meta_keys);
        w->meta_values = xrealloc(w->meta_values, (size_t)w->cap_meta * sizeof *w->meta_values);
    }
    w->meta_keys[w->n_meta] = xstrdup(key);
    w->meta_values[w->n_meta++] = xstrdup(value);
}

/* A JSON integer written verbatim: cJSON prints doubles, which would lose exactness above
 * 2^53 and switch to exponent notation at 1e15. */
static cJSON *json_integer(uint64_t value) {
    char text[32];
    snprintf(text, sizeof text, "%" PRIu64, value);
    return cJSON_CreateRaw(text);
}

static cJSON *tensor_json(const WriterTensor *t, uint64_t begin) {
    cJSON *entry = cJSON_CreateObject(), *shape = cJSON_CreateArray(), *offsets = cJSON_CreateArray();
    cJSON_AddStringToObject(entry, "dtype", st_dtype_name(t->dtype));
    for (int i = 0; i < t->ndim; i++) cJSON_AddItemToArray(shape, json_integer((uint64_t)t->shape[i]));
    cJSON_AddItemToObject(entry, "shape", shape);
    cJSON_AddItemToArray(offsets, json_integer(begin));
    cJSON_AddItemToArray(offsets, json_integer(begin + t->bytes));
    cJSON_AddItemToObject(entry, "data_offsets", offsets);
    return entry;
}

/* Builds the header JSON with tensors laid out contiguously in add order. */
static char *writer_header_json(StWriter *w) {
    cJSON *root = cJSON_CreateObject();
    if (w->n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, ST_METADATA_KEY);
        for (int i = 0; i < w->n_meta; i++) cJSON_AddStringToObject(meta, w->meta_keys[i], w->meta_values[i]);
    }
    uint64_t offset = 0;
    for (int i = 0; i < w->n_tensors; i++) {
        cJSON_AddItemToObject(root, w->tensors[i].name, tensor_json(&w->tensors[i], offset));
        offset += w->tensors[i].bytes;
    }
    w->total_bytes = offset;
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) {
        fprintf(stderr, "upcycle: out of memory printing a safetensors header\n");
        exit(3);
    }
    return text;
}

/* Name checks that need the whole list: duplicates and the reserved metadata key. */
static void writer_check_names(StWriter *w) {
    char message[512];
    for (int i = 0; i < w->n_tensors; i++) {
        if (strcmp(w->tensors[i].name, ST_METADATA_KEY) == 0) {
            snprintf(message, sizeof message, "tensor name %s is reserved; expected another name", ST_METADATA_KEY);
            writer_defer_error(w, message);
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(w->tensors[i].name, w->tensors[j].name) == 0) {
                snprintf(message, sizeof message, "tensor %s added twice; expected unique names", w->tensors[i].name);
                writer_defer_error(w, message);
            }
        }
    }
}

static int write_header(StWriter *w) {
    char *json = writer_header_json(w);
    size_t json_bytes = strlen(json), header_bytes = (json_bytes + 7) & ~(size_t)7;
    unsigned char length[8];
    for (int i = 0; i < 8; i++) length[i] = (unsigned char)((uint64_t)header_bytes >> (8 * i));
    int ok = fwrite(length, 1, 8, w->file.f) == 8 && fwrite(json, 1, json_bytes, w->file.f) == json_bytes;
    for (size_t i = json_bytes; ok && i < header_bytes; i++) ok = fputc(' ', w->file.f) != EOF;
    free(json);
    if (!ok) return up_error("%s: cannot write the header (%s); expected enough disk space", w->path, strerror(errno));
    return 0;
}

int st_writer_open(StWriter *w, const char *path) {
    if (w->is_open) return up_error("%s: st_writer_open called twice; expected one open per writer", path);
    writer_check_names(w);
    if (w->error) return up_error("%s: %s", path, w->error);
    if (atomic_open(&w->file, path) != 0) return -1;
    w->path = xstrdup(path);
    w->is_open = 1;
    if (write_header(w) != 0) {
        writer_defer_error(w, up_last_error());
        return -1;
    }
    return 0;
}

int st_writer_write(StWriter *w, const void *data, size_t bytes) {
    if (!w->is_open) return up_error("safetensors writer: write before st_writer_open; expected open first");
    if (w->error) return up_error("%s: %s", w->path, w->error);
    char message[512];
    if (bytes > w->total_bytes - w->written_bytes) {
        snprintf(message, sizeof message, "writing %zu bytes at data offset %" PRIu64 " runs past the declared %" PRIu64
                 " bytes; expected exactly the tensor sizes given to st_writer_add", bytes, w->written_bytes, w->total_bytes);
        writer_defer_error(w, message);
        return up_error("%s: %s", w->path, message);
    }
    if (bytes && fwrite(data, 1, bytes, w->file.f) != bytes) {
        snprintf(message, sizeof message, "write failed (%s); expected enough disk space", strerror(errno));
        writer_defer_error(w, message);
        return up_error("%s: %s", w->path, message);
    }
    w->written_bytes += bytes;
    return 0;
}

/* Names the tensor that was being written when the data stopped, for the error message. */
static const char *writer_incomplete_tensor(const StWriter *w) {
    uint64_t offset = 0;
    for (int i = 0; i < w->n_tensors; i++) {
        offset += w->tensors[i].bytes;
        if (w->written_bytes < offset) return w->tensors[i].name;
    }
    return "?";
}

static void writer_free(StWriter *w) {
    for (int i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->tensors);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->meta_keys);
    free(w->meta_values);
    free(w->error);
    free(w->path);
    free(w);
}

int st_writer_commit(StWriter *w) {
    int rc;
    if (!w->is_open) {
        rc = up_error("safetensors writer: commit before st_writer_open; expected open first");
    } else if (w->error) {
        rc = up_error("%s: %s", w->path, w->error);
        atomic_abort(&w->file);
    } else if (w->written_bytes != w->total_bytes) {
        rc = up_error("%s: wrote %" PRIu64 " of %" PRIu64 " data bytes (tensor %s incomplete); expected exactly the "
                      "declared tensor data", w->path, w->written_bytes, w->total_bytes, writer_incomplete_tensor(w));
        atomic_abort(&w->file);
    } else {
        rc = atomic_commit(&w->file);
    }
    writer_free(w);
    return rc;
}

void st_writer_abort(StWriter *w) {
    if (!w) return;
    if (w->is_open) atomic_abort(&w->file);
    writer_free(w);
}
