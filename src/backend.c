/* backend.c - picks the backend for --device (cpu, cuda, auto). */
#include "backend.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

const Backend *backend_select(const char *device, char *notice, size_t notice_size) {
    if (notice && notice_size) notice[0] = '\0';
    if (!device || !strcmp(device, "auto")) {
#ifdef UPCYCLE_CUDA
        const Backend *be = backend_cuda();
        if (be) return be;
        if (notice && notice_size) snprintf(notice, notice_size, "upcycle: no CUDA device visible; running on the CPU");
#endif
        return backend_cpu();
    }
    if (!strcmp(device, "cpu")) return backend_cpu();
    if (!strcmp(device, "cuda")) {
        const Backend *be = NULL;
#ifdef UPCYCLE_CUDA
        be = backend_cuda();
#endif
        if (!be) up_error("--device cuda: no CUDA device is visible (or this build has no CUDA); expected a GPU or --device cpu");
        return be;
    }
    up_error("--device %s; expected auto, cpu or cuda", device);
    return NULL;
}
