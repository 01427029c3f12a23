/* test_safetensors.c - round trips, spec compliance, number conversions, and every corrupt
 * input the reader must reject with a message naming the file. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "test.h"
#include "util.h"

/* ------------------------------------------------------------------ helpers */

static char *tmp_path(const char *name) { return path_join(test_tmpdir(), name); }

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(d);
    return n;
}

static int error_mentions(const char *a, const char *b) {
    const char *e = up_last_error();
    return strstr(e, a) != NULL && (!b || strstr(e, b) != NULL);
}

/* Writes "<uint64 LE length><header><data>" by hand, so tests can build invalid files. */
static void write_raw(const char *path, uint64_t header_length, const char *header, const void *data, size_t data_bytes) {
    size_t header_bytes = strlen(header);
    size_t total = 8 + header_bytes + data_bytes;
    unsigned char *buf = xmalloc(total);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(header_length >> (8 * i));
    memcpy(buf + 8, header, header_bytes);
    if (data_bytes) memcpy(buf + 8 + header_bytes, data, data_bytes);
    CHECK(atomic_write_file(path, buf, total) == 0);
    free(buf);
}

static void write_with_header(const char *path, const char *header, size_t data_bytes) {
    unsigned char *data = xcalloc(data_bytes ? data_bytes : 1, 1);
    write_raw(path, strlen(header), header, data, data_bytes);
    free(data);
}

/* st_open must fail, name the file, mention `what`, and leave a zeroed StFile. */
static void check_open_fails(const char *path, const char *what) {
    StFile f;
    up_clear_error();
    int rc = st_open(&f, path);
    CHECK_MSG(rc == -1, "st_open(%s) returned %d; expected -1 (%s)", path, rc, what);
    if (rc == 0) {
        st_close(&f);
        return;
    }
    CHECK_MSG(error_mentions(path, what), "error \"%s\" lacks the path or \"%s\"", up_last_error(), what);
    CHECK(f.map == NULL && f.tensors == NULL && f.path == NULL && f.n_tensors == 0);
    st_close(&f); /* closing a failed open must be harmless */
}

/* ------------------------------------------------------------------ round trip */

typedef struct {
    const char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[3];
} Spec;

static const Spec ROUND_TRIP[] = {
    {"model.embed_tokens.weight", ST_F32, 2, {3, 5}},
    {"layers.0.odd_bytes", ST_U8, 1, {7}}, /* leaves later tensors unaligned */
    {"layers.0.bf16", ST_BF16, 3, {2, 3, 2}},
    {"layers.0.counts", ST_I64, 1, {3}},
    {"layers.0.half", ST_F16, 2, {2, 2}},
    {"scalar", ST_F32, 0, {0}},
    {"empty", ST_F32, 2, {0, 4}},
    {"flags", ST_BOOL, 1, {2}},
    {"i32", ST_I32, 1, {3}},
};
#define N_ROUND_TRIP ((int)(sizeof ROUND_TRIP / sizeof ROUND_TRIP[0]))

static size_t spec_bytes(const Spec *s) {
    size_t n = st_dtype_size(s->dtype);
    for (int i = 0; i < s->ndim; i++) n *= (size_t)s->shape[i];
    return n;
}

static void fill_pattern(unsigned char *buf, size_t n, int seed) {
    for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(seed * 31 + i * 7 + 1);
}

static void write_round_trip_file(const char *path) {
    StWriter *w = st_writer_new();
    for (int i = 0; i < N_ROUND_TRIP; i++)
        st_writer_add(w, ROUND_TRIP[i].name, ROUND_TRIP[i].dtype, ROUND_TRIP[i].ndim, ROUND_TRIP[i].shape);
    st_writer_meta(w, "format", "pt");
    st_writer_meta(w, "note", "quote \" backslash \\ utf8 \xc3\xa9");
    st_writer_meta(w, "format", "pt"); /* setting a key twice keeps one entry */
    CHECK(st_writer_open(w, path) == 0);
    for (int i = 0; i < N_ROUND_TRIP; i++) {
        size_t n = spec_bytes(&ROUND_TRIP[i]);
        unsigned char *buf = xmalloc(n ? n : 1);
        fill_pattern(buf, n, i);
        /* write in two pieces to exercise streaming */
        CHECK(st_writer_write(w, buf, n / 2) == 0);
        CHECK(st_writer_write(w, buf + n / 2, n - n / 2) == 0);
        free(buf);
    }
    CHECK_MSG(st_writer_commit(w) == 0, "commit: %s", up_last_error());
}

static void check_round_trip_tensor(const StFile *f, const Spec *s, int index, uint64_t expected_begin) {
    const StTensor *t = st_find(f, s->name);
    CHECK_MSG(t != NULL, "tensor %s missing", s->name);
    if (!t) return;
    CHECK(t->dtype == s->dtype);
    CHECK(t->ndim == s->ndim);
    for (int d = 0; d < s->ndim; d++) CHECK(t->shape[d] == s->shape[d]);
    size_t n = spec_bytes(s);
    CHECK(st_numel(t) * (int64_t)st_dtype_size(t->dtype) == (int64_t)n);
    CHECK_MSG(t->begin == expected_begin && t->end == expected_begin + n, "%s at [%llu, %llu); expected begin %llu",
              s->name, (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)expected_begin);
    unsigned char *expected = xmalloc(n ? n : 1);
    fill_pattern(expected, n, index);
    CHECK_MSG(memcmp(st_data(f, t), expected, n) == 0, "bytes of %s differ", s->name);
    free(expected);
}

TEST(safetensors_round_trip) {
    char *path = tmp_path("model.safetensors");
    write_round_trip_file(path);
    StFile f;
    CHECK_MSG(st_open(&f, path) == 0, "open: %s", up_last_error());
    CHECK(f.n_tensors == N_ROUND_TRIP);
    uint64_t offset = 0;
    for (int i = 0; i < N_ROUND_TRIP; i++) {
        check_round_trip_tensor(&f, &ROUND_TRIP[i], i, offset);
        offset += spec_bytes(&ROUND_TRIP[i]);
    }
    CHECK(f.file_bytes == f.data_offset + offset); /* contiguous, nothing after the data */
    for (int i = 1; i < f.n_tensors; i++) CHECK(f.tensors[i - 1].begin <= f.tensors[i].begin);
    CHECK(f.n_meta == 2);
    CHECK(st_meta(&f, "format") && strcmp(st_meta(&f, "format"), "pt") == 0);
    CHECK(st_meta(&f, "note") && strcmp(st_meta(&f, "note"), "quote \" backslash \\ utf8 \xc3\xa9") == 0);
    CHECK(st_meta(&f, "absent") == NULL);
    CHECK(st_find(&f, "absent") == NULL);
    CHECK(count_dir_entries(test_tmpdir()) == 1); /* no temp file left behind */
    st_close(&f);
    free(path);
}

TEST(safetensors_header_follows_spec) {
    char *path = tmp_path("model.safetensors");
    write_round_trip_file(path);
    char *bytes;
    size_t n;
    CHECK(read_file(path, &bytes, &n) == 0);
    uint64_t header_length = 0;
    for (int i = 7; i >= 0; i--) header_length = (header_length << 8) | (unsigned char)bytes[i];
    CHECK(header_length % 8 == 0);
    CHECK(8 + header_length <= n);
    CHECK(bytes[8] == '{');
    cJSON *root = cJSON_ParseWithLength(bytes + 8, header_length);
    CHECK(cJSON_IsObject(root));
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(meta, "format")));
    const cJSON *embed = cJSON_GetObjectItemCaseSensitive(root, "model.embed_tokens.weight");
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(embed, "dtype")));
    CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(embed, "dtype")->valuestring, "F32") == 0);
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(embed, "data_offsets");
    CHECK(cJSON_GetArraySize(offsets) == 2 && offsets->child->valuedouble == 0 && offsets->child->next->valuedouble == 60);
    const cJSON *scalar = cJSON_GetObjectItemCaseSensitive(root, "scalar");
    CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(scalar, "shape")));
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(scalar, "shape")) == 0);
    cJSON_Delete(root);
    /* the JSON ends before the header does only by the space padding, fewer than 8 bytes */
    const char *json_end = NULL;
    root = cJSON_ParseWithLengthOpts(bytes + 8, header_length, &json_end, 0);
    CHECK(root != NULL && json_end != NULL);
    if (json_end) {
        size_t padding = (size_t)(bytes + 8 + header_length - json_end);
        CHECK(padding < 8);
        for (size_t i = 0; i < padding; i++) CHECK(json_end[i] == ' ');
    }
    cJSON_Delete(root);
    free(bytes);
    free(path);
}

TEST(safetensors_empty_writer) {
    char *path = tmp_path("empty.safetensors");
    StWriter *w = st_writer_new();
    CHECK(st_writer_open(w, path) == 0);
    CHECK(st_writer_commit(w) == 0);
    StFile f;
    CHECK_MSG(st_open(&f, path) == 0, "%s", up_last_error());
    CHECK(f.n_tensors == 0 && f.n_meta == 0 && f.data_offset == 16);
    st_close(&f);
    free(path);
}

/* ------------------------------------------------------------------ st_read_f32 */

static const float SAMPLE[6] = {1.0f, -2.5f, 0.1f, 3.14159265f, -1e-3f, 65504.0f};

static void write_float_file(const char *path) {
    int64_t shape[2] = {2, 3};
    uint16_t as_bf16[6], as_f16[6];
    int32_t ints[6] = {1, 2, 3, 4, 5, 6};
    for (int i = 0; i < 6; i++) as_bf16[i] = f32_to_bf16(SAMPLE[i]), as_f16[i] = f32_to_f16(SAMPLE[i]);
    StWriter *w = st_writer_new();
    st_writer_add(w, "f32", ST_F32, 2, shape);
    st_writer_add(w, "bf16", ST_BF16, 2, shape);
    st_writer_add(w, "f16", ST_F16, 2, shape);
    st_writer_add(w, "ints", ST_I32, 2, shape);
    CHECK(st_writer_open(w, path) == 0);
    CHECK(st_writer_write(w, SAMPLE, sizeof SAMPLE) == 0);
    CHECK(st_writer_write(w, as_bf16, sizeof as_bf16) == 0);
    CHECK(st_writer_write(w, as_f16, sizeof as_f16) == 0);
    CHECK(st_writer_write(w, ints, sizeof ints) == 0);
    CHECK(st_writer_commit(w) == 0);
}

TEST(safetensors_read_f32_converts) {
    char *path = tmp_path("floats.safetensors");
    write_float_file(path);
    StFile f;
    CHECK_MSG(st_open(&f, path) == 0, "%s", up_last_error());
    int64_t shape[2] = {2, 3};
    float got[6];
    CHECK(st_read_f32(&f, "f32", got, 2, shape) == 0);
    for (int i = 0; i < 6; i++) CHECK(got[i] == SAMPLE[i]);
    CHECK(st_read_f32(&f, "bf16", got, 2, shape) == 0);
    for (int i = 0; i < 6; i++) {
        CHECK_CLOSE(got[i], SAMPLE[i], 0x1p-8);
        CHECK(got[i] == bf16_to_f32(f32_to_bf16(SAMPLE[i])));
    }
    CHECK(st_read_f32(&f, "f16", got, 2, shape) == 0);
    for (int i = 0; i < 6; i++) {
        CHECK_CLOSE(got[i], SAMPLE[i], 0x1p-11 + 1e-6); /* -1e-3 is a normal f16; 1e-6 covers its ulp */
        CHECK(got[i] == f16_to_f32(f32_to_f16(SAMPLE[i])));
    }
    CHECK(got[5] == 65504.0f && got[0] == 1.0f && got[1] == -2.5f);
    st_close(&f);
    free(path);
}

TEST(safetensors_read_f32_errors) {
    char *path = tmp_path("m.safetensors");
    write_float_file(path);
    StFile f;
    CHECK(st_open(&f, path) == 0);
    float got[128];
    int64_t wrong[1] = {128}, right[2] = {2, 3}, wrong_rank[3] = {2, 3, 1};
    CHECK(st_read_f32(&f, "f32", got, 1, wrong) == -1);
    CHECK_MSG(error_mentions(path, "tensor f32 has shape [2, 3]; expected [128]"), "%s", up_last_error());
    CHECK(st_read_f32(&f, "bf16", got, 3, wrong_rank) == -1);
    CHECK_MSG(error_mentions(path, "tensor bf16 has shape [2, 3]; expected [2, 3, 1]"), "%s", up_last_error());
    CHECK(st_read_f32(&f, "model.norm.weight", got, 2, right) == -1);
    CHECK_MSG(error_mentions(path, "tensor model.norm.weight not found; expected it for this config"), "%s",
              up_last_error());
    CHECK(st_read_f32(&f, "ints", got, 2, right) == -1);
    CHECK_MSG(error_mentions(path, "tensor ints has dtype I32; expected F32, BF16 or F16"), "%s", up_last_error());
    st_close(&f);
    free(path);
}

/* ------------------------------------------------------------------ conversions */

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Reference conversions computed a different way (double arithmetic, nearbyint in the
 * default round-to-nearest-even mode) so the bit tricks are checked independently. */
static uint16_t reference_bf16(float f) {
    double a = fabs((double)f);
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    if (a >= 0x1p128 - 0x1p119) return sign | 0x7f80; /* at or past the halfway point to 2^128 */
    if (a < 0x1p-126) return sign | (uint16_t)nearbyint(a * 0x1p133);
    int e;
    double q = nearbyint(ldexp(frexp(a, &e), 8)); /* 8 significant bits: [128, 256] */
    int exponent = e - 1 + 127;
    if (q == 256) q = 128, exponent++;
    return sign | (uint16_t)(exponent << 7) | (uint16_t)(q - 128);
}

static uint16_t reference_f16(float f) {
    double a = fabs((double)f);
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    if (a >= 65520.0) return sign | 0x7c00;
    if (a < 0x1p-14) return sign | (uint16_t)nearbyint(a * 0x1p24);
    int e;
    double q = nearbyint(ldexp(frexp(a, &e), 11)); /* 11 significant bits: [1024, 2048] */
    int exponent = e - 1 + 15;
    if (q == 2048) q = 1024, exponent++;
    return sign | (uint16_t)(exponent << 10) | (uint16_t)(q - 1024);
}

TEST(bf16_special_values) {
    CHECK(f32_to_bf16(0.0f) == 0x0000 && f32_to_bf16(-0.0f) == 0x8000);
    CHECK(f32_to_bf16(1.0f) == 0x3f80 && f32_to_bf16(-2.0f) == 0xc000);
    CHECK(f32_to_bf16(INFINITY) == 0x7f80 && f32_to_bf16(-INFINITY) == 0xff80);
    CHECK(f32_to_bf16(FLT_MAX) == 0x7f80);                     /* past the last bf16: rounds to inf */
    CHECK(f32_to_bf16(float_of(0x3f808000)) == 0x3f80);        /* tie: to even (down) */
    CHECK(f32_to_bf16(float_of(0x3f818000)) == 0x3f82);        /* tie: to even (up) */
    CHECK(f32_to_bf16(float_of(0x3f808001)) == 0x3f81);        /* just above the tie */
    CHECK(f32_to_bf16(float_of(0x00000001)) == 0x0000);        /* tiny subnormal */
    CHECK(f32_to_bf16(float_of(0x00018000)) == 0x0002);        /* subnormal tie to even */
    CHECK(f32_to_bf16(float_of(0x007fffff)) == 0x0080);        /* rounds up to the smallest normal */
    uint16_t nan = f32_to_bf16(NAN);
    CHECK(isnan(bf16_to_f32(nan)));
    CHECK(isnan(bf16_to_f32(f32_to_bf16(float_of(0x7f800001))))); /* payload only in the low bits */
    CHECK(isnan(bf16_to_f32(f32_to_bf16(float_of(0x7fffffff))))); /* would carry into inf if rounded */
    CHECK(f32_to_bf16(float_of(0xffc00000)) & 0x8000);            /* sign of a NaN kept */
    CHECK(bf16_to_f32(0x3f80) == 1.0f);
    CHECK(isinf(bf16_to_f32(0xff80)) && bf16_to_f32(0xff80) < 0);
}

TEST(bf16_sweep) {
    /* every bf16 value survives bf16 -> f32 -> bf16 exactly */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_f32((uint16_t)h);
        if (isnan(f)) CHECK(isnan(bf16_to_f32(f32_to_bf16(f))));
        else CHECK_MSG(f32_to_bf16(f) == h, "bf16 0x%04x did not round-trip", h);
    }
    /* a sweep of f32 bit patterns (stride prime to 2^32) against the reference and the
     * 2^-8 relative error bound; plus each pattern's neighbourhood of the rounding tie */
    int mismatches = 0;
    for (uint64_t u = 0; u < (1ull << 32); u += 997) {
        uint32_t around[4] = {(uint32_t)u, ((uint32_t)u & ~0xffffu) | 0x8000u, ((uint32_t)u & ~0xffffu) | 0x7fffu,
                              ((uint32_t)u & ~0xffffu) | 0x8001u};
        for (int k = 0; k < 4; k++) {
            float f = float_of(around[k]);
            uint16_t got = f32_to_bf16(f);
            if (isnan(f)) {
                mismatches += !isnan(bf16_to_f32(got));
                continue;
            }
            mismatches += got != reference_bf16(f);
            float back = bf16_to_f32(got);
            if (fabsf(f) >= 0x1p-126f && !isinf(back)) mismatches += fabs((double)back - f) > 0x1p-8 * fabs((double)f);
        }
    }
    CHECK_MSG(mismatches == 0, "%d bf16 conversions disagree with the reference", mismatches);
}

TEST(f16_special_values) {
    CHECK(f32_to_f16(0.0f) == 0x0000 && f32_to_f16(-0.0f) == 0x8000);
    CHECK(f32_to_f16(1.0f) == 0x3c00 && f32_to_f16(-2.0f) == 0xc000);
    CHECK(f32_to_f16(65504.0f) == 0x7bff && f32_to_f16(65519.0f) == 0x7bff);
    CHECK(f32_to_f16(65520.0f) == 0x7c00 && f32_to_f16(-1e6f) == 0xfc00);
    CHECK(f32_to_f16(INFINITY) == 0x7c00 && f32_to_f16(-INFINITY) == 0xfc00);
    CHECK(f32_to_f16(0x1p-14f) == 0x0400);          /* smallest normal */
    CHECK(f32_to_f16(0x1p-24f) == 0x0001);          /* smallest subnormal */
    CHECK(f32_to_f16(0x1p-25f) == 0x0000);          /* tie between 0 and 2^-24: to even */
    CHECK(f32_to_f16(0x1.8p-25f) == 0x0001);        /* above the tie */
    CHECK(f32_to_f16(0x1.8p-24f) == 0x0002);        /* 1.5 ulp: tie to even (up) */
    CHECK(f32_to_f16(0x1.ff8p-15f) == 0x03ff);      /* largest subnormal */
    CHECK(f32_to_f16(0x1.ffcp-15f) == 0x0400);      /* tie: to even, up into the normals */
    CHECK(f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);   /* tie: to even (down) */
    CHECK(f32_to_f16(1.0f + 0x3p-11f) == 0x3c02);   /* tie: to even (up) */
    CHECK(f32_to_f16(1.0f / 3.0f) == 0x3555);
    CHECK(f16_to_f32(0x0001) == 0x1p-24f && f16_to_f32(0x03ff) == 0x1.ff8p-15f && f16_to_f32(0x8001) == -0x1p-24f);
    CHECK(f16_to_f32(0x7bff) == 65504.0f && isinf(f16_to_f32(0x7c00)) && f16_to_f32(0xfc00) < 0);
    CHECK(isnan(f16_to_f32(f32_to_f16(NAN))) && isnan(f16_to_f32(0x7c01)));
    CHECK(isnan(f16_to_f32(f32_to_f16(float_of(0x7f800001))))); /* payload only in dropped bits */
    CHECK(f32_to_f16(float_of(0xffc00000)) & 0x8000);
}

/* FP8 by its definition: E4M3 ("fn": bias 7, no infinities, S.1111.111 is NaN), E5M2 (bias 15,
 * IEEE-like); every code against sign * (1 + m/2^M) * 2^(e - bias), subnormals m/2^M * 2^(1 - bias). */
static double fp8_reference(unsigned b, int e_bits, int m_bits) {
    int bias = (1 << (e_bits - 1)) - 1, e = (int)(b >> m_bits) & ((1 << e_bits) - 1), m = (int)b & ((1 << m_bits) - 1);
    double sign = b & 0x80 ? -1.0 : 1.0, frac = (double)m / (1 << m_bits);
    if (e_bits == 4 && e == 15 && m == 7) return NAN;
    if (e_bits == 5 && e == 31) return m ? NAN : sign * INFINITY;
    return sign * (e == 0 ? ldexp(frac, 1 - bias) : ldexp(1.0 + frac, e - bias));
}

TEST(fp8_conversions) {
    int mismatches = 0;
    for (unsigned b = 0; b < 256; b++) {
        double want4 = fp8_reference(b, 4, 3), want5 = fp8_reference(b, 5, 2);
        float got4 = f8e4m3_to_f32((uint8_t)b), got5 = f8e5m2_to_f32((uint8_t)b);
        mismatches += isnan(want4) ? !isnan(got4) : (double)got4 != want4;
        mismatches += isnan(want5) ? !isnan(got5) : (double)got5 != want5;
        unsigned char byte = (unsigned char)b;
        float via4 = st_element_f32(ST_F8_E4M3, &byte), via5 = st_element_f32(ST_F8_E5M2, &byte);
        mismatches += !(via4 == got4 || (isnan(via4) && isnan(got4))) + !(via5 == got5 || (isnan(via5) && isnan(got5)));
    }
    CHECK_MSG(mismatches == 0, "%d FP8 codes decode wrongly", mismatches);
    CHECK(f8e4m3_to_f32(0x38) == 1.0f && f8e4m3_to_f32(0x7e) == 448.0f && f8e4m3_to_f32(0x01) == 0x1p-9f);
    CHECK(f8e4m3_to_f32(0xfe) == -448.0f && isnan(f8e4m3_to_f32(0x7f)) && isnan(f8e4m3_to_f32(0xff)));
    CHECK(f8e5m2_to_f32(0x3c) == 1.0f && f8e5m2_to_f32(0x7b) == 57344.0f && isinf(f8e5m2_to_f32(0x7c)));
    /* the other float dtypes through st_element_f32; integers are not floats */
    float f = 2.5f;
    uint16_t bf = f32_to_bf16(-3.0f), h = f32_to_f16(0.5f);
    CHECK(st_element_f32(ST_F32, &f) == 2.5f && st_element_f32(ST_BF16, &bf) == -3.0f && st_element_f32(ST_F16, &h) == 0.5f);
    int32_t i = 7;
    CHECK(isnan(st_element_f32(ST_I32, &i)) && !st_dtype_is_float(ST_I32) && !st_dtype_is_float(ST_U8));
    CHECK(st_dtype_is_float(ST_F8_E4M3) && st_dtype_is_float(ST_F8_E5M2) && st_dtype_is_float(ST_BF16));
}

/* FP8 tensors open (element size 1), round-trip through the writer byte for byte, and are not
 * read as float32 without their scales. */
TEST(safetensors_fp8_tensors) {
    char *path = tmp_path("fp8.safetensors");
    StDtype d;
    CHECK(st_dtype_from_name("F8_E4M3", &d) == 0 && d == ST_F8_E4M3 && st_dtype_size(d) == 1);
    CHECK(st_dtype_from_name("F8_E5M2", &d) == 0 && d == ST_F8_E5M2 && st_dtype_size(d) == 1);
    CHECK(strcmp(st_dtype_name(ST_F8_E4M3), "F8_E4M3") == 0 && strcmp(st_dtype_name(ST_F8_E5M2), "F8_E5M2") == 0);
    const char *header = "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,3],\"data_offsets\":[0,6]},"
                         "\"v\":{\"dtype\":\"F8_E5M2\",\"shape\":[2],\"data_offsets\":[6,8]}}";
    unsigned char data[8] = {0x38, 0x7e, 0x01, 0x80, 0xb8, 0x40, 0x3c, 0x7b};
    write_raw(path, strlen(header), header, data, sizeof data);
    StFile f;
    CHECK_MSG(st_open(&f, path) == 0, "%s", up_last_error());
    if (f.map) {
        const StTensor *w = st_find(&f, "w"), *v = st_find(&f, "v");
        CHECK(w && w->dtype == ST_F8_E4M3 && st_numel(w) == 6 && w->end - w->begin == 6);
        CHECK(v && v->dtype == ST_F8_E5M2 && memcmp(st_data(&f, v), data + 6, 2) == 0);
        float out[6];
        int64_t shape[2] = {2, 3};
        CHECK(st_read_f32(&f, "w", out, 2, shape) != 0 && strstr(up_last_error(), "F8_E4M3"));
        char *copy = tmp_path("fp8-copy.safetensors");
        StWriter *wr = st_writer_new();
        st_writer_add(wr, "w", ST_F8_E4M3, 2, w->shape);
        st_writer_add(wr, "v", ST_F8_E5M2, 1, v->shape);
        CHECK(st_writer_open(wr, copy) == 0 && st_writer_write(wr, st_data(&f, w), 6) == 0 &&
              st_writer_write(wr, st_data(&f, v), 2) == 0 && st_writer_commit(wr) == 0);
        StFile g;
        CHECK_MSG(st_open(&g, copy) == 0, "%s", up_last_error());
        if (g.map) {
            const StTensor *gw = st_find(&g, "w");
            CHECK(gw && gw->dtype == ST_F8_E4M3 && memcmp(st_data(&g, gw), data, 6) == 0);
            st_close(&g);
        }
        free(copy);
        st_close(&f);
    }
    free(path);
}

TEST(f16_sweep) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_f32((uint16_t)h);
        if (isnan(f)) CHECK(isnan(f16_to_f32(f32_to_f16(f))));
        else CHECK_MSG(f32_to_f16(f) == h, "f16 0x%04x did not round-trip", h);
    }
    int mismatches = 0;
    for (uint64_t u = 0; u < (1ull << 32); u += 997) {
        uint32_t around[4] = {(uint32_t)u, ((uint32_t)u & ~0x1fffu) | 0x1000u, ((uint32_t)u & ~0x1fffu) | 0x0fffu,
                              ((uint32_t)u & ~0x1fffu) | 0x1001u};
        for (int k = 0; k < 4; k++) {
            float f = float_of(around[k]);
            uint16_t got = f32_to_f16(f);
            if (isnan(f)) mismatches += !isnan(f16_to_f32(got));
            else mismatches += got != reference_f16(f);
        }
    }
    /* every f16 subnormal tie: (2k+1) * 2^-25 */
    for (int k = 0; k < 1024; k++) {
        float f = (float)(2 * k + 1) * 0x1p-25f;
        mismatches += f32_to_f16(f) != reference_f16(f);
    }
    CHECK_MSG(mismatches == 0, "%d f16 conversions disagree with the reference", mismatches);
}

/* ------------------------------------------------------------------ corrupt inputs */

TEST(safetensors_rejects_short_files) {
    char *path = tmp_path("tiny.safetensors");
    CHECK(atomic_write_file(path, "abc", 3) == 0);
    check_open_fails(path, "3 bytes");
    CHECK(atomic_write_file(path, "", 0) == 0);
    check_open_fails(path, "0 bytes");
    free(path);
    char *missing = tmp_path("missing.safetensors");
    check_open_fails(missing, "cannot open");
    free(missing);
    check_open_fails(test_tmpdir(), "not a regular file");
}

TEST(safetensors_rejects_header_past_eof) {
    char *path = tmp_path("m.safetensors");
    char header[1192 + 1];
    memset(header, ' ', 1192);
    header[0] = '{', header[1] = '}', header[1192] = 0;
    write_raw(path, 999999, header, NULL, 0); /* 1200 bytes in all */
    char expected[1024];
    snprintf(expected, sizeof expected,
             "%s: header length 999999 runs past the end of the 1200-byte file; expected a safetensors file", path);
    StFile f;
    CHECK(st_open(&f, path) == -1);
    CHECK_MSG(strcmp(up_last_error(), expected) == 0, "got \"%s\"", up_last_error());
    write_raw(path, 1ull << 40, header, NULL, 0); /* absurd length: refused before anything else */
    check_open_fails(path, "limit");
    write_raw(path, UINT64_MAX, header, NULL, 0);
    check_open_fails(path, "limit");
    free(path);
}

TEST(safetensors_rejects_truncated_data) {
    char *path = tmp_path("cut.safetensors");
    write_round_trip_file(path);
    char *bytes;
    size_t n;
    CHECK(read_file(path, &bytes, &n) == 0);
    CHECK(atomic_write_file(path, bytes, n - 5) == 0); /* cut into the last tensor */
    check_open_fails(path, "i32");
    check_open_fails(path, "truncated");
    free(bytes);
    free(path);
}

typedef struct {
    const char *header;
    size_t data_bytes;
    const char *expect; /* a fragment of the error besides the path */
} BadHeader;

static const BadHeader BAD_HEADERS[] = {
    {"not json at all", 0, "not valid JSON"},
    {"{\"a\": {\"dtype\": \"F32\"", 0, "not valid JSON"},
    {"[1, 2, 3]", 0, "not an object"},
    {"\"text\"", 0, "not an object"},
    {"{} trailing", 0, "trailing"},
    {"{\"w\": {\"dtype\": \"F33\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "tensor w has unknown dtype \"F33\""},
    {"{\"w\": {\"dtype\": \"F8_E3M4\", \"shape\": [2], \"data_offsets\": [0, 2]}}", 2,
     "unknown dtype \"F8_E3M4\"; expected one of F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL, U16, U32, U64, F8_E4M3, "
     "F8_E5M2"},
    {"{\"w\": {\"dtype\": 4, \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "tensor w has no dtype"},
    {"{\"w\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "tensor w has no dtype"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8, "tensor w spans 8 bytes; expected 12"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 6]}}", 8, "tensor w spans 6 bytes"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8, "tensor w has shape entry 0"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 8]}}", 8, "tensor w has shape entry 0"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}}", 8, "tensor w has shape entry"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": 2, \"data_offsets\": [0, 8]}}", 8, "tensor w has no shape"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,2], \"data_offsets\": [0, 8]}}", 8, "9 dimensions"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 8]}}", 8,
     "tensor w spans 8 bytes"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 16]}}", 8, "outside the 8-byte data buffer"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", 8, "data_offsets [8, 0]"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", 8, "tensor w has malformed data_offsets"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, -8]}}", 8, "malformed data_offsets"},
    {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8, "malformed data_offsets"},
    {"{\"w\": [1, 2]}", 8, "tensor w is not an object"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
     " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12, "tensor b [4, 12) overlaps tensor a"},
    {"{\"a\": {\"dtype\": \"U8\", \"shape\": [16], \"data_offsets\": [0, 16]},"
     " \"b\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [2, 4]},"
     " \"c\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [6, 8]}}", 16, "overlaps tensor a"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
     " \"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}", 16, "tensor a appears twice"},
    {"{\"__metadata__\": {\"k\": 3}}", 0, "metadata k is not a string"},
    {"{\"__metadata__\": [\"k\"]}", 0, "__metadata__ is not an object"},
};

TEST(safetensors_rejects_bad_headers) {
    char *path = tmp_path("bad.safetensors");
    for (size_t i = 0; i < sizeof BAD_HEADERS / sizeof BAD_HEADERS[0]; i++) {
        write_with_header(path, BAD_HEADERS[i].header, BAD_HEADERS[i].data_bytes);
        check_open_fails(path, BAD_HEADERS[i].expect);
    }
    free(path);
}

TEST(safetensors_accepts_foreign_layouts) {
    /* valid files other writers may produce: unpadded header, out-of-order offsets,
     * empty tensors sharing an offset, trailing newline padding, unknown extra keys */
    char *path = tmp_path("foreign.safetensors");
    const char *header =
        "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8],\"extra\":1},"
        "\"z\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[4,4]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"__metadata__\":{}}\n";
    float values[2] = {1.5f, -7.0f};
    write_raw(path, strlen(header), header, values, sizeof values);
    StFile f;
    CHECK_MSG(st_open(&f, path) == 0, "%s", up_last_error());
    CHECK(f.n_tensors == 3 && strcmp(f.tensors[0].name, "a") == 0 && strcmp(f.tensors[1].name, "z") == 0);
    float got;
    int64_t one = 1;
    CHECK(st_read_f32(&f, "b", &got, 1, &one) == 0 && got == -7.0f);
    CHECK(st_read_f32(&f, "a", &got, 1, &one) == 0 && got == 1.5f);
    st_close(&f);
    free(path);
}

/* ------------------------------------------------------------------ writer failures */

TEST(safetensors_writer_short_commit_leaves_nothing) {
    char *path = tmp_path("short.safetensors");
    int64_t shape[1] = {4};
    float data[4] = {1, 2, 3, 4};
    StWriter *w = st_writer_new();
    st_writer_add(w, "a", ST_F32, 1, shape);
    st_writer_add(w, "b", ST_F32, 1, shape);
    CHECK(st_writer_open(w, path) == 0);
    CHECK(st_writer_write(w, data, sizeof data) == 0);
    CHECK(st_writer_write(w, data, 8) == 0);
    CHECK(st_writer_commit(w) == -1);
    CHECK_MSG(error_mentions(path, "wrote 24 of 32 data bytes (tensor b incomplete)"), "%s", up_last_error());
    CHECK(!path_exists(path));
    CHECK(count_dir_entries(test_tmpdir()) == 0);
    free(path);
}

TEST(safetensors_writer_overlong_write_fails) {
    char *path = tmp_path("long.safetensors");
    int64_t shape[1] = {2};
    float data[4] = {1, 2, 3, 4};
    StWriter *w = st_writer_new();
    st_writer_add(w, "a", ST_F32, 1, shape);
    CHECK(st_writer_open(w, path) == 0);
    CHECK(st_writer_write(w, data, sizeof data) == -1);
    CHECK_MSG(error_mentions(path, "runs past the declared 8 bytes"), "%s", up_last_error());
    CHECK(st_writer_write(w, data, 8) == -1); /* the writer stays failed */
    CHECK(st_writer_commit(w) == -1);
    CHECK(!path_exists(path));
    CHECK(count_dir_entries(test_tmpdir()) == 0);
    free(path);
}

TEST(safetensors_writer_abort_leaves_nothing) {
    char *path = tmp_path("aborted.safetensors");
    int64_t shape[1] = {2};
    float data[2] = {1, 2};
    StWriter *w = st_writer_new();
    st_writer_add(w, "a", ST_F32, 1, shape);
    CHECK(st_writer_open(w, path) == 0);
    CHECK(st_writer_write(w, data, sizeof data) == 0);
    CHECK(count_dir_entries(test_tmpdir()) == 1); /* the temp file, until abort */
    st_writer_abort(w);
    CHECK(!path_exists(path));
    CHECK(count_dir_entries(test_tmpdir()) == 0);
    st_writer_abort(st_writer_new()); /* abort before open only frees */
    st_writer_abort(NULL);
    /* a failed commit must not touch an existing file at the destination */
    CHECK(atomic_write_file(path, "old", 3) == 0);
    w = st_writer_new();
    st_writer_add(w, "a", ST_F32, 1, shape);
    CHECK(st_writer_open(w, path) == 0);
    CHECK(st_writer_commit(w) == -1);
    char *old;
    CHECK(read_file(path, &old, NULL) == 0 && strcmp(old, "old") == 0);
    free(old);
    CHECK(count_dir_entries(test_tmpdir()) == 1);
    free(path);
}

TEST(safetensors_writer_rejects_bad_tensors) {
    char *path = tmp_path("bad.safetensors");
    int64_t shape[1] = {2}, negative[1] = {-1};
    const struct {
        const char *name;
        int ndim;
        const int64_t *shape;
        const char *duplicate;
        const char *expect;
    } cases[] = {
        {"a", 1, shape, "a", "tensor a added twice"},
        {"__metadata__", 1, shape, NULL, "reserved"},
        {"neg", 1, negative, NULL, "tensor neg has dimension 0 = -1"},
        {"deep", 9, shape, NULL, "tensor deep has 9 dimensions"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        StWriter *w = st_writer_new();
        st_writer_add(w, cases[i].name, ST_F32, cases[i].ndim, cases[i].shape);
        if (cases[i].duplicate) st_writer_add(w, cases[i].duplicate, ST_F32, 1, shape);
        CHECK(st_writer_open(w, path) == -1);
        CHECK_MSG(error_mentions(path, cases[i].expect), "%s", up_last_error());
        st_writer_abort(w);
    }
    StWriter *w = st_writer_new();
    CHECK(st_writer_open(w, path) == 0);
    st_writer_add(w, "late", ST_F32, 1, shape);
    CHECK(st_writer_commit(w) == -1);
    CHECK_MSG(error_mentions(path, "tensor late added after st_writer_open"), "%s", up_last_error());
    CHECK(count_dir_entries(test_tmpdir()) == 0);
    free(path);
}

/* ------------------------------------------------------------------ interop with PyTorch */

static const char PYTHON_READER[] =
    "import json, struct, sys, torch\n"
    "blob = open(sys.argv[1], 'rb').read()\n"
    "(n,) = struct.unpack('<Q', blob[:8])\n"
    "assert n % 8 == 0, n\n"
    "header = json.loads(blob[8:8 + n])\n"
    "data = bytearray(blob[8 + n:])\n"
    "kinds = {'F32': torch.float32, 'BF16': torch.bfloat16, 'F16': torch.float16, 'I64': torch.int64}\n"
    "def load(name):\n"
    "    entry = header[name]\n"
    "    begin, end = entry['data_offsets']\n"
    "    kind = kinds[entry['dtype']]\n"
    "    size = torch.empty(0, dtype=kind).element_size()\n"
    "    raw = bytearray(data[begin:end])\n"
    "    return torch.frombuffer(raw, dtype=kind, count=(end - begin) // size).reshape(entry['shape'])\n"
    "assert header['__metadata__'] == {'format': 'pt', 'step': '42'}, header['__metadata__']\n"
    "values = torch.tensor([0.1, -1/3, 1e-3, 3.14159, 65504.0, 70000.0, 1e-6, -0.0, 1e30, 5.96e-8])\n"
    "a = load('a')\n"
    "assert a.shape == (2, 5) and torch.equal(a, values.reshape(2, 5)), a\n"
    "b = load('b')\n"
    "assert b.shape == (10,) and torch.equal(b.view(torch.int16), values.to(torch.bfloat16).view(torch.int16)), b\n"
    "c = load('c')\n"
    "assert c.shape == (5, 2) and torch.equal(c.view(torch.int16), values.to(torch.float16).view(torch.int16).reshape(5, 2)), c\n"
    "d = load('d')\n"
    "assert torch.equal(d, torch.tensor([-3, 0, 1 << 40, -(1 << 62)])), d\n"
    "print('python check ok')\n";

static void write_interop_file(const char *path) {
    const float values[10] = {0.1f, -1.0f / 3, 1e-3f, 3.14159f, 65504.0f, 70000.0f, 1e-6f, -0.0f, 1e30f, 5.96e-8f};
    uint16_t bf16[10], f16[10];
    for (int i = 0; i < 10; i++) bf16[i] = f32_to_bf16(values[i]), f16[i] = f32_to_f16(values[i]);
    int64_t ints[4] = {-3, 0, 1ll << 40, -(1ll << 62)};
    int64_t shape_a[2] = {2, 5}, shape_b[1] = {10}, shape_c[2] = {5, 2}, shape_d[1] = {4};
    StWriter *w = st_writer_new();
    st_writer_add(w, "a", ST_F32, 2, shape_a);
    st_writer_add(w, "b", ST_BF16, 1, shape_b);
    st_writer_add(w, "c", ST_F16, 2, shape_c);
    st_writer_add(w, "d", ST_I64, 1, shape_d); /* at offset 80: offsets need not be aligned for the reader */
    st_writer_meta(w, "format", "pt");
    st_writer_meta(w, "step", "42");
    CHECK(st_writer_open(w, path) == 0);
    CHECK(st_writer_write(w, values, sizeof values) == 0);
    CHECK(st_writer_write(w, bf16, sizeof bf16) == 0);
    CHECK(st_writer_write(w, f16, sizeof f16) == 0);
    CHECK(st_writer_write(w, ints, sizeof ints) == 0);
    CHECK(st_writer_commit(w) == 0);
}

TEST(safetensors_python_torch_reads_our_file) {
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
        printf("    skipped: python3-torch not installed\n");
        return;
    }
    char *path = tmp_path("interop.safetensors"), *script = tmp_path("check.py"), *log = tmp_path("python.log");
    write_interop_file(path);
    CHECK(atomic_write_file(script, PYTHON_READER, strlen(PYTHON_READER)) == 0);
    char command[4096];
    snprintf(command, sizeof command, "/usr/bin/python3 '%s' '%s' >'%s' 2>&1", script, path, log);
    int rc = system(command);
    char *output = NULL;
    if (read_file(log, &output, NULL) != 0) output = xstrdup("(no output)");
    CHECK_MSG(rc == 0 && strstr(output, "python check ok"), "python reader failed (rc %d):\n%s", rc, output);
    free(output);
    free(path);
    free(script);
    free(log);
}

/* ------------------------------------------------------------------ robustness */

/* Random byte flips in the length and header, and random truncations, must each either
 * open cleanly or fail with a message naming the file - never crash (run under ASan). */
TEST(safetensors_survives_random_corruption) {
    char *good = tmp_path("good.safetensors"), *path = tmp_path("fuzz.safetensors");
    write_round_trip_file(good);
    char *original;
    size_t n;
    CHECK(read_file(good, &original, &n) == 0);
    size_t header_end = 8 + (size_t)(unsigned char)original[0] + 256 * (size_t)(unsigned char)original[1];
    unsigned char *copy = xmalloc(n);
    Rng rng;
    rng_seed(&rng, 1234);
    const char *json_chars = "{}[]\":,0123456789-.eE \\u";
    int failures_without_path = 0;
    for (int iteration = 0; iteration < 3000; iteration++) {
        memcpy(copy, original, n);
        size_t length = n;
        if (iteration % 4 == 3) length = (size_t)rng_below(&rng, n);
        int flips = 1 + (int)rng_below(&rng, 4);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)rng_below(&rng, header_end);
            copy[at] = rng_below(&rng, 2) ? (unsigned char)rng_next(&rng) : (unsigned char)json_chars[rng_below(&rng, 25)];
        }
        CHECK(atomic_write_file(path, copy, length) == 0);
        StFile f;
        if (st_open(&f, path) == 0) {
            volatile unsigned sum = 0; /* touch every byte the reader claims is there */
            for (int i = 0; i < f.n_tensors; i++) {
                const unsigned char *data = st_data(&f, &f.tensors[i]);
                for (uint64_t b = 0; b < f.tensors[i].end - f.tensors[i].begin; b++) sum += data[b];
            }
            CHECK(f.data_offset <= f.file_bytes);
            st_close(&f);
        } else {
            failures_without_path += strstr(up_last_error(), path) == NULL;
        }
    }
    CHECK_MSG(failures_without_path == 0, "%d errors did not name the file", failures_without_path);
    free(copy);
    free(original);
    free(good);
    free(path);
}
