/* elementwise.cuh - memory ops, add/accumulate, sum of squares, bias over rows, clamp, SwiGLU,
 * the per-row sigmoid gate, AdamW, balancing bias. */
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

/* ---- bias over rows: x (N,C) += bias; dbias += column sums (fixed row blocks, summed in order) ---- */

__global__ void bias_add_forward_kernel(float *x, const float *bias, int N, int C) {
    size_t n = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] += bias[i % C];
}

#define BIAS_DW_ROWS 256 /* row block of the column sums */

/* grid (ceil(C/256), n_blocks): partial[b][c] = sum of dout[t][c] over the rows t of block b */
__global__ void bias_add_backward_partial_kernel(float *partial, const float *dout, int N, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (c >= C) return;
    int end = min(N, (b + 1) * BIAS_DW_ROWS);
    float p = 0;
    for (int t = b * BIAS_DW_ROWS; t < end; t++) p += dout[(size_t)t * C + c];
    partial[(size_t)b * C + c] = p;
}

static void cuda_bias_add_forward(float *x, const float *bias, int N, int C) {
    if (N <= 0 || C <= 0) return;
    bias_add_forward_kernel<<<grid_for((size_t)N * C), 256, 0, g_stream>>>(x, bias, N, C);
    KERNEL_CHECK();
}

static void cuda_bias_add_backward(float *dbias, const float *dout, int N, int C) {
    if (N <= 0 || C <= 0) return;
    int n_blocks = (int)cdiv(N, BIAS_DW_ROWS);
    WsCarve ws = ws_begin(ws_align(sizeof(float) * (size_t)n_blocks * C));
    float *partial = (float *)ws_take(&ws, sizeof(float) * (size_t)n_blocks * C);
    dim3 grid(cdiv(C, 256), (unsigned)n_blocks);
    bias_add_backward_partial_kernel<<<grid, 256, 0, g_stream>>>(partial, dout, N, C);
    KERNEL_CHECK();
    column_partials_add_kernel<<<cdiv(C, 256), 256, 0, g_stream>>>(dbias, partial, n_blocks, C);
    KERNEL_CHECK();
}

/* ---- clamp to [-limit, limit]; the gradient passes where the input was inside ---- */

__global__ void clamp_forward_kernel(float *out, const float *inp, size_t n, float limit) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = inp[i];
        out[i] = x < -limit ? -limit : x > limit ? limit : x; /* NaN stays NaN */
    }
}

__global__ void clamp_backward_kernel(float *dinp, const float *dout, const float *inp, size_t n, float limit) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = inp[i];
        dinp[i] = x >= -limit && x <= limit ? dout[i] : 0.0f;
    }
}

static void cuda_clamp_forward(float *out, const float *inp, size_t n, float limit) {
    if (!n) return;
    clamp_forward_kernel<<<grid_for(n), 256, 0, g_stream>>>(out, inp, n, limit);
    KERNEL_CHECK();
}

static void cuda_clamp_backward(float *dinp, const float *dout, const float *inp, size_t n, float limit) {
    if (!n) return;
    clamp_backward_kernel<<<grid_for(n), 256, 0, g_stream>>>(dinp, dout, inp, n, limit);
    KERNEL_CHECK();
}

/* ---- per-row sigmoid gate: out += sigmoid(logit[t]) y[t]; one warp per row in the backward ---- */

__global__ void sigmoid_gate_forward_kernel(float *out, const float *y, const float *logit, int N, int C) {
    size_t n = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] += sigmoid_f(logit[i / C]) * y[i];
}

__global__ void sigmoid_gate_backward_kernel(float *dy, float *dlogit, const float *dout, const float *y,
                                             const float *logit, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float *d = dout + (size_t)row * C, *yt = y + (size_t)row * C;
    float *dyt = dy + (size_t)row * C;
    float s = sigmoid_f(logit[row]), dot = 0.0f;
    for (int c = lane; c < C; c += 32) {
        dot += d[c] * yt[c];
        dyt[c] = s * d[c];
    }
    dot = warp_sum(dot);
    if (lane == 0) dlogit[row] = s * (1.0f - s) * dot;
}

static void cuda_sigmoid_gate_forward(float *out, const float *y, const float *logit, int N, int C) {
    if (N <= 0 || C <= 0) return;
    sigmoid_gate_forward_kernel<<<grid_for((size_t)N * C), 256, 0, g_stream>>>(out, y, logit, N, C);
    KERNEL_CHECK();
}

static void cuda_sigmoid_gate_backward(float *dy, float *dlogit, const float *dout, const float *y, const float *logit,
                                       int N, int C) {
    if (N <= 0) return;
    sigmoid_gate_backward_kernel<<<cdiv(N, 8), 256, 0, g_stream>>>(dy, dlogit, dout, y, logit, N, C);
    KERNEL_CHECK();
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
