/* norm_rope.cuh - RMSNorm (one warp per row) and rotate-half RoPE. */
#pragma once

#include "common.cuh"

/* ---- RMSNorm: out = x * rstd * weight, rstd = (mean(x^2) + eps)^-1/2 ---- */

__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                                       float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C;
    float *o = out + (size_t)row * C;
    float ss = 0;
    for (int c = lane; c < C; c += 32) ss += x[c] * x[c];
    ss = warp_sum(ss);
    float r = 1.0f / sqrtf(ss / C + eps);
    for (int c = lane; c < C; c += 32) o[c] = x[c] * r * weight[c];
    if (lane == 0) rstd[row] = r;
}

/* dx += r (dy w) - x r^3 mean(dy w x) */
__global__ void rmsnorm_backward_dx_kernel(float *dinp, const float *dout, const float *inp, const float *weight,
                                           const float *rstd, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
    float *dx = dinp + (size_t)row * C;
    float r = rstd[row], dot = 0;
    for (int c = lane; c < C; c += 32) dot += dy[c] * weight[c] * x[c];
    dot = warp_sum(dot);
    float k = dot * r * r * r / C;
    for (int c = lane; c < C; c += 32) dx[c] += dy[c] * weight[c] * r - x[c] * k;
}

#define RMS_DW_ROWS 256 /* token block of the dweight reduction (as the CPU backend) */

/* grid (ceil(C/256), n_blocks): partial[b][c] = sum over rows of block b of dy x r */
__global__ void rmsnorm_backward_dw_partial_kernel(float *partial, const float *dout, const float *inp,
                                                   const float *rstd, int N, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (c >= C) return;
    int end = min(N, (b + 1) * RMS_DW_ROWS);
    float p = 0;
    for (int t = b * RMS_DW_ROWS; t < end; t++) p += dout[(size_t)t * C + c] * inp[(size_t)t * C + c] * rstd[t];
    partial[(size_t)b * C + c] = p;
}

static void cuda_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps) {
    if (N <= 0) return;
    rmsnorm_forward_kernel<<<cdiv(N, 8), 256, 0, g_stream>>>(out, rstd, inp, weight, N, C, eps);
    KERNEL_CHECK();
}

static void cuda_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                                  const float *rstd, int N, int C) {
    if (N <= 0) return;
    rmsnorm_backward_dx_kernel<<<cdiv(N, 8), 256, 0, g_stream>>>(dinp, dout, inp, weight, rstd, N, C);
    KERNEL_CHECK();
    if (!dweight) return;
    int n_blocks = (int)cdiv(N, RMS_DW_ROWS);
    WsCarve ws = ws_begin(ws_align(sizeof(float) * (size_t)n_blocks * C));
    float *partial = (float *)ws_take(&ws, sizeof(float) * (size_t)n_blocks * C);
    dim3 grid(cdiv(C, 256), (unsigned)n_blocks);
    rmsnorm_backward_dw_partial_kernel<<<grid, 256, 0, g_stream>>>(partial, dout, inp, rstd, N, C);
    KERNEL_CHECK();
    column_partials_add_kernel<<<cdiv(C, 256), 256, 0, g_stream>>>(dweight, partial, n_blocks, C);
    KERNEL_CHECK();
}

/* ---- RoPE (rotate-half): pairs (i, i + hd/2) rotate by t * theta^(-2i/hd); angles as the CPU
 *      backend computes them (inv_freq in fp32, then angle in fp32) ---- */

__global__ void rope_kernel(float *x, int B, int T, int n_heads, int head_dim, float theta, float direction) {
    int half = head_dim / 2;
    size_t n = (size_t)B * T * n_heads * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t row = idx / half; /* (b, t, h) */
        int t = (int)((row / n_heads) % T);
        float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
        float angle = (float)t * inv_freq;
        float cs = cosf(angle), sn = direction * sinf(angle);
        float *v = x + row * head_dim;
        float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * cs - x2 * sn;
        v[i + half] = x2 * cs + x1 * sn;
    }
}

static void cuda_rope_forward(float *x, int B, int T, int n_heads, int head_dim, float theta) {
    size_t n = (size_t)B * T * n_heads * (head_dim / 2);
    if (!n) return;
    rope_kernel<<<grid_for(n), 256, 0, g_stream>>>(x, B, T, n_heads, head_dim, theta, 1.0f);
    KERNEL_CHECK();
}

/* the rotation is orthogonal: its gradient is the inverse rotation */
static void cuda_rope_backward(float *dx, int B, int T, int n_heads, int head_dim, float theta) {
    size_t n = (size_t)B * T * n_heads * (head_dim / 2);
    if (!n) return;
    rope_kernel<<<grid_for(n), 256, 0, g_stream>>>(dx, B, T, n_heads, head_dim, theta, -1.0f);
    KERNEL_CHECK();
}
