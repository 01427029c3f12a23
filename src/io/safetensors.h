/* safetensors.h - reading (mmap, fully validated) and streaming writing of safetensors files.
 *
 * Format: uint64 LE header length N, N bytes of JSON {name: {"dtype", "shape",
 * "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the data buffer; offsets
 * are relative to the data buffer. We write the header padded with spaces to a multiple of 8
 * and tensors in the order they were added. */
#ifndef UPCYCLE_SAFETENSORS_H
#define UPCYCLE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* F8_E4M3 (the "fn" variant: no infinities, 0x7f/0xff are NaN) and F8_E5M2 are the FP8 formats of
 * quantized checkpoints (DeepSeek-V3: F8_E4M3 weights with F32 block scales). */
typedef enum {
    ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL, ST_U16, ST_U32, ST_U64,
    ST_F8_E4M3, ST_F8_E5M2,
} StDtype;

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end; /* byte offsets into the data buffer */
} StTensor;

typedef struct {
    char *path;
    void *map;
    size_t file_bytes;
    size_t data_offset; /* 8 + header length */
    int n_tensors;
    StTensor *tensors;  /* in file (offset) order */
    int n_meta;
    char **meta_keys, **meta_values;
} StFile;

const char *st_dtype_name(StDtype d);     /* "F32", "BF16", ... */
int st_dtype_from_name(const char *name, StDtype *out);
size_t st_dtype_size(StDtype d);
int64_t st_numel(const StTensor *t);
/* "[2, 3]" into buf (truncated to cap), the form every shape takes in our error messages */
void st_format_shape(char *buf, size_t cap, int ndim, const int64_t *shape);

/* Validation on open: file at least 8 bytes, header length within the file, header is a JSON
 * object, every entry has a known dtype (an unknown one is named, with the list of known ones), a shape of non-negative ints, offsets within the data
 * buffer whose length equals numel * dtype size, and no two tensors overlap. */
int st_open(StFile *f, const char *path);
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
const void *st_data(const StFile *f, const StTensor *t);
const char *st_meta(const StFile *f, const char *key); /* NULL if absent */
/* Reads tensor `name` into dst as float32 (converting F32/BF16/F16), after checking it exists
 * and has exactly the expected shape. Errors: "<file>: tensor <name> ...; expected ...". */
int st_read_f32(const StFile *f, const char *name, float *dst, int ndim, const int64_t *shape);
/* Elements [first, first + count) of tensor t (row-major, flattened) into dst as float32: a
 * slice of a packed tensor, such as one expert's rows. */
int st_read_f32_span(const StFile *f, const StTensor *t, uint64_t first, uint64_t count, float *dst);

/* Streaming writer: add every tensor, then open (writes the header), then write the data of
 * each tensor in add order, then commit (atomic rename) or abort. */
typedef struct StWriter StWriter;
StWriter *st_writer_new(void);
void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape);
void st_writer_meta(StWriter *w, const char *key, const char *value);
int st_writer_open(StWriter *w, const char *path);
int st_writer_write(StWriter *w, const void *data, size_t bytes);
int st_writer_commit(StWriter *w); /* fails unless exactly the declared bytes were written; frees w */
void st_writer_abort(StWriter *w); /* removes the temp file; frees w */

/* number conversions */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f); /* round to nearest even */
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float f8e4m3_to_f32(uint8_t b); /* exact; 0x7f and 0xff are NaN */
float f8e5m2_to_f32(uint8_t b); /* exact: the top byte of an F16 */
/* 1 for the floating-point dtypes st_element_f32 converts: F32, F16, BF16, F8_E4M3, F8_E5M2 */
int st_dtype_is_float(StDtype d);
/* The element at p (of a float dtype, see st_dtype_is_float) as float32; NAN for other dtypes. */
float st_element_f32(StDtype d, const void *p);

#endif
