/* backend.c - picks the backend for --device (cpu, cuda, auto). */
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef UPCYCLE_CUDA
#include <dlfcn.h>
#endif

#include "util.h"

#ifdef UPCYCLE_CUDA
/* The CUDA backend lives in a plugin, build/libupcycle_cuda.so, loaded on first use: linking
 * cuBLAS into every command would cost ~0.4 s and ~200 MB resident at each start. Searched at
 * $UPCYCLE_CUDA_PLUGIN, then beside the running binary and in its build/ directory. Without an
 * NVIDIA driver (/dev/nvidiactl, or /dev/dxg under WSL) there is no GPU and nothing is loaded. */
static char g_plugin_error[512];

static void *open_cuda_plugin(void) {
    const char *env = getenv("UPCYCLE_CUDA_PLUGIN");
    if (env && *env) {
        void *h = dlopen(env, RTLD_NOW | RTLD_LOCAL);
        if (!h) snprintf(g_plugin_error, sizeof g_plugin_error, "%s", dlerror());
        return h;
    }
    char *dir = exe_dirname();
    if (!dir) return NULL;
    const char *candidates[] = {"libupcycle_cuda.so", "build/libupcycle_cuda.so"};
    void *h = NULL;
    snprintf(g_plugin_error, sizeof g_plugin_error, "%s/build/libupcycle_cuda.so not found", dir);
    for (int i = 0; i < 2 && !h; i++) {
        char *path = path_join(dir, candidates[i]);
        if (path_exists(path)) {
            h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            if (!h) snprintf(g_plugin_error, sizeof g_plugin_error, "%s", dlerror());
        }
        free(path);
    }
    free(dir);
    return h;
}

const Backend *backend_cuda(void) {
    static int probed = 0;
    static const Backend *be = NULL;
    if (probed) return be;
    probed = 1;
    if (access("/dev/nvidiactl", F_OK) != 0 && access("/dev/dxg", F_OK) != 0 && !getenv("UPCYCLE_CUDA_PLUGIN")) {
        snprintf(g_plugin_error, sizeof g_plugin_error, "no NVIDIA driver device");
        return NULL;
    }
    void *h = open_cuda_plugin();
    if (!h) return NULL;
    const Backend *(*get)(void) = (const Backend *(*)(void))dlsym(h, "upcycle_plugin_backend_cuda");
    be = get ? get() : NULL;
    return be;
}
#endif

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
#ifdef UPCYCLE_CUDA
        if (!be && g_plugin_error[0] && strcmp(g_plugin_error, "no NVIDIA driver device"))
            up_error("--device cuda: the CUDA plugin did not load (%s); expected `make` to have built build/libupcycle_cuda.so", g_plugin_error);
        else
#endif
        if (!be) up_error("--device cuda: no CUDA device is visible (or this build has no CUDA); expected a GPU or --device cpu");
        return be;
    }
    up_error("--device %s; expected auto, cpu or cuda", device);
    return NULL;
}
