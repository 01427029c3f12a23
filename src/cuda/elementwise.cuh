/* elementwise.cuh - memory ops, add/accumulate, sum of squares, SwiGLU, AdamW, balancing bias. */
#pragma once

#include "common.cuh"

/* ---- memory ---- */

static void *cuda_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        fprintf(stderr, "upcycle: CUDA out of memory allocating %.1f MB (%.1f MB free of %.1f MB); expected a smaller model "
                        "or batch, or --device cpu\n", bytes / 1e6, free_b / 1e6, total_b / 1e6);
        exit(1);
    }
    /* on g_stream, which does not synchronize with the legacy default stream */
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes ? bytes : 1, g_stream));
    CUDA_CHECK(cudaStreamSynchronize(g_stream));
    return p;
}

static void cuda_free(void *p) {
    if (!p) return;
    CUDA_CHECK(cudaStreamSynchronize(g_stream)); /* no queued kernel may still use it */
    CUDA_CHECK(cudaFree(p));
}

static void cuda_upload(void *dst, const void *host_src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, g_stream));
    CUDA_CHECK(cudaStreamSynchronize(g_stream)); /* the caller may free host_src right away */
}

static void cuda_download(void *host_dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, g_stream));
    CUDA_CHECK(cudaStreamSynchronize(g_stream));
}

static void cuda_zero(void *p, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, g_stream));
}

static void cuda_copy(void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g_stream));
}

static void cuda_set_threads(int n) { (void)n; /* host threads do no work on this backend */ }

/* ---- add / accumulate ---- */

__global__ void add_kernel(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

__global__ void accumulate_kernel(float *acc, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        acc[i] += x[i];
}

static void cuda_add(float *out, const float *a, const float *b, size_t n) {
    if (!n) return;
    add_kernel<<<grid_for(n), 256, 0, g_stream>>>(out, a, b, n);
    KERNEL_CHECK();
}

static void cuda_accumulate(float *acc, const float *x, size_t n) {
    if (!n) return;
    accumulate_kernel<<<grid_for(n), 256, 0, g_stream>>>(acc, x, n);
    KERNEL_CHECK();
}

/* ---- sum of squares: fixed chunks per block (depending on n only), partials summed in order ---- */

__global__ void sumsq_partial_kernel(double *partial, const float *x, size_t n, size_t chunk) {
    size_t lo = blockIdx.x * chunk, hi = lo + chunk < n ? lo + chunk : n;
    double s = 0;
    for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        double v = x[i];
        s += v * v;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sumsq_final_kernel(double *out, const double *partial, int n) {
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
    s = block_sum(s);
    if (threadIdx.x == 0) *out = s;
}

static double cuda_sum_squares(const float *x, size_t n) {
    if (!n) return 0;
    size_t blocks = (n + 8191) / 8192;
    if (blocks > 1024) blocks = 1024;
    size_t chunk = (n + blocks - 1) / blocks;
    WsCarve ws = ws_begin(ws_align(sizeof(double) * blocks) + ws_align(sizeof(double)));
    double *partial = (double *)ws_take(&ws, sizeof(double) * blocks), *result = (double *)ws_take(&ws, sizeof(double));
    sumsq_partial_kernel<<<(unsigned)blocks, 256, 0, g_stream>>>(partial, x, n, chunk);
    KERNEL_CHECK();
    sumsq_final_kernel<<<1, 1024, 0, g_stream>>>(result, partial, (int)blocks);
    KERNEL_CHECK();
    double host = 0;
    cuda_download(&host, result, sizeof host);
    return host;
}

/* ---- SwiGLU ---- */

__device__ __forceinline__ void swiglu_grad(float dout, float gate, float up, float *dgate, float *dup) {
    float s = sigmoid_f(gate), silu = gate * s;
    *dup = dout * silu;
    *dgate = dout * up * s * (1.0f + gate * (1.0f - s));
}

/* n_rows_dev: when non-NULL, n = (*n_rows_dev) * row_len is read on the device (expert rows) */
__global__ void swiglu_forward_kernel(float *out, const float *gate, const float *up, size_t n, const int32_t *n_rows_dev,
                                      int row_len) {
    if (n_rows_dev) n = (size_t)*n_rows_dev * row_len;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = gate[i] * sigmoid_f(gate[i]) * up[i];
}

__global__ void swiglu_backward_kernel(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                                       size_t n, const int32_t *n_rows_dev, int row_len) {
    if (n_rows_dev) n = (size_t)*n_rows_dev * row_len;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        swiglu_grad(dout[i], gate[i], up[i], &dgate[i], &dup[i]);
}

static void cuda_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    if (!n) return;
    swiglu_forward_kernel<<<grid_for(n), 256, 0, g_stream>>>(out, gate, up, n, NULL, 0);
    KERNEL_CHECK();
}

static void cuda_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
    if (!n) return;
    swiglu_backward_kernel<<<grid_for(n), 256, 0, g_stream>>>(dgate, dup, dout, gate, up, n, NULL, 0);
    KERNEL_CHECK();
}

/* ---- AdamW: the same float arithmetic as the CPU backend (and torch.optim.AdamW) ---- */

__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n, float beta1, float beta2,
                             float eps, float grad_scale, float step_size, float bc2_sqrt, float decay) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] = param[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}

static void cuda_adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr, float beta1,
                              float beta2, float eps, float weight_decay, float grad_scale, int t) {
    if (!n) return;
    float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    float step_size = lr / bc1, bc2_sqrt = sqrtf(bc2), decay = 1.0f - lr * weight_decay;
    adamw_kernel<<<grid_for(n), 256, 0, g_stream>>>(param, grad, m, v, n, beta1, beta2, eps, grad_scale, step_size,
                                                    bc2_sqrt, decay);
    KERNEL_CHECK();
}

/* ---- loss-free balancing: bias[e] += rate * sign(mean(loads) - loads[e]); E is small ---- */

__global__ void balance_bias_kernel(float *bias, const int32_t *loads, int E, float rate) {
    __shared__ double mean;
    if (threadIdx.x == 0) {
        double total = 0;
        for (int e = 0; e < E; e++) total += loads[e];
        mean = total / E;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        double diff = mean - loads[e];
        bias[e] += rate * (float)((diff > 0) - (diff < 0));
    }
}

static void cuda_balance_bias_update(float *bias, const int32_t *loads, int E, float rate) {
    if (E <= 0) return;
    balance_bias_kernel<<<1, 256, 0, g_stream>>>(bias, loads, E, rate);
    KERNEL_CHECK();
}
