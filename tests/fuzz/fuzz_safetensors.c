/* fuzz_safetensors.c - libFuzzer harness for the safetensors reader (src/io/safetensors.c).
 * The input is a whole .safetensors file: 8-byte header length, JSON header, data buffer.
 * st_open must either fail with an error or return a file whose every tensor lies inside the
 * mapping; on success every tensor is looked up and, for float dtypes, read and converted. */
#include <math.h>

#include "fuzz_common.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[128];
    fuzz_path(path, sizeof path, "safetensors", ".safetensors");
    fuzz_write_file(path, data, size);
    StFile f;
    if (st_open(&f, path) == 0) {
        (void)st_meta(&f, "format");
        for (int i = 0; i < f.n_tensors; i++) {
            const StTensor *t = &f.tensors[i];
            if (st_find(&f, t->name) == NULL) abort(); /* names were checked unique */
            int64_t n = st_numel(t);
            size_t bytes = (size_t)(t->end - t->begin);
            if (n < 0 || (uint64_t)n * st_dtype_size(t->dtype) != bytes) abort();
            if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16) {
                /* touch the raw bytes: they must be inside the mapping */
                const unsigned char *p = st_data(&f, t);
                volatile unsigned char sink = 0;
                for (size_t b = 0; b < bytes; b++) sink ^= p[b];
                (void)sink;
                continue;
            }
            float *dst = malloc((size_t)n * sizeof *dst + 1);
            if (!dst) abort();
            if (st_read_f32(&f, t->name, dst, t->ndim, t->shape) != 0) abort();
            int64_t wrong[ST_MAX_DIMS] = {n + 1};
            (void)st_read_f32(&f, t->name, dst, 1, wrong); /* a shape mismatch is an error, not a crash */
            free(dst);
        }
        st_close(&f);
    }
    unlink(path);
    return 0;
}
