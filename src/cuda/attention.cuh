/* attention.cuh - causal attention with GQA, flash-style: the (T, T) score matrix is never
 * stored. The forward keeps an online softmax per query row and saves only its logsumexp
 * (B*H*T floats, in the `probs` buffer of the Backend contract); the backward recomputes the
 * probabilities tile by tile from q, k and that logsumexp.
 *
 * Layout: q, out (B,T,H,hd); k, v (B,T,KV,hd); query head h reads kv head h / (H/KV).
 * Kernels (fp32 on CUDA cores; 128 threads = 4 warps):
 *   forward   block = (16 query rows, head, batch); a warp owns 4 query rows, its 32 lanes take
 *             32 keys of a tile for the scores and hd/32 output dims each for P V.
 *   dq        same blocking; pass 1 computes D_i = sum_j P_ij dP_ij (= rowsum(dO * O)), pass 2
 *             dq_i = scale * sum_j P_ij (dP_ij - D_i) k_j. D is kept in scratch for dk/dv.
 *   dk, dv    block = (16 key rows, kv head, batch): a warp owns 4 key rows, lanes take 32
 *             queries of a tile, looping over the group's query heads: no atomics, dk and dv
 *             written once (overwrite). */
#pragma once

#include "common.cuh"

#define ATT_THREADS 128
#define ATT_ROWS 4                      /* rows per warp */
#define ATT_BR (ATT_ROWS * ATT_THREADS / 32) /* 16 rows per block */
#define ATT_BT 32                       /* columns of a tile: one per lane */
#define ATT_MAX_HD 256

/* R = dims per lane (hd <= 32 R) */
template <int R>
__global__ void __launch_bounds__(ATT_THREADS) attention_forward_kernel(float *out, float *lse, const float *q,
                                                                         const float *k, const float *v, int T, int H,
                                                                         int KV, int hd, float scale) {
    extern __shared__ float smem[];
    const int ld = hd + 1;
    float *Qs = smem, *Ks = Qs + ATT_BR * ld, *Vs = Ks + ATT_BT * ld;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATT_BR, g = h / (H / KV);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const size_t qs = (size_t)H * hd, kvs = (size_t)KV * hd;
    const float *Qb = q + (size_t)b * T * qs + (size_t)h * hd;
    const float *Kb = k + (size_t)b * T * kvs + (size_t)g * hd, *Vb = v + (size_t)b * T * kvs + (size_t)g * hd;

    for (int idx = threadIdx.x; idx < ATT_BR * hd; idx += ATT_THREADS) {
        int r = idx / hd, d = idx % hd, i = q0 + r;
        Qs[r * ld + d] = i < T ? Qb[(size_t)i * qs + d] : 0.0f;
    }
    float m[ATT_ROWS], l[ATT_ROWS], o[ATT_ROWS][R];
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS; rr++) {
        m[rr] = -INFINITY, l[rr] = 0.0f;
#pragma unroll
        for (int x = 0; x < R; x++) o[rr][x] = 0.0f;
    }
    const int q_last = min(T, q0 + ATT_BR) - 1;
    for (int k0 = 0; k0 <= q_last; k0 += ATT_BT) {
        __syncthreads(); /* the previous tile is consumed (and Qs is loaded) */
        for (int idx = threadIdx.x; idx < ATT_BT * hd; idx += ATT_THREADS) {
            int r = idx / hd, d = idx % hd, j = k0 + r;
            Ks[r * ld + d] = j < T ? Kb[(size_t)j * kvs + d] : 0.0f;
            Vs[r * ld + d] = j < T ? Vb[(size_t)j * kvs + d] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < ATT_ROWS; rr++) {
            const int r = warp * ATT_ROWS + rr, i = q0 + r;
            if (i >= T || k0 > i) continue; /* warp-uniform */
            const int j = k0 + lane;
            float s = -INFINITY;
            if (j <= i) {
                const float *qr = Qs + r * ld, *kr = Ks + lane * ld;
                float acc = 0.0f;
                for (int d = 0; d < hd; d++) acc += qr[d] * kr[d];
                s = acc * scale;
            }
            const float m_new = fmaxf(m[rr], warp_max(s)); /* finite: key k0 <= i is unmasked */
            const float p = j <= i ? expf(s - m_new) : 0.0f;
            const float corr = expf(m[rr] - m_new);
            l[rr] = l[rr] * corr + warp_sum(p);
            m[rr] = m_new;
#pragma unroll
            for (int x = 0; x < R; x++) o[rr][x] *= corr;
            const int jn = min(ATT_BT, i - k0 + 1);
            for (int jj = 0; jj < jn; jj++) {
                const float pj = __shfl_sync(FULL_MASK, p, jj);
                const float *vr = Vs + jj * ld;
#pragma unroll
                for (int x = 0; x < R; x++) {
                    int d = lane + 32 * x;
                    if (d < hd) o[rr][x] += pj * vr[d];
                }
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS; rr++) {
        const int i = q0 + warp * ATT_ROWS + rr;
        if (i >= T) continue;
        const float inv = 1.0f / l[rr];
        float *orow = out + (size_t)b * T * qs + (size_t)i * qs + (size_t)h * hd;
#pragma unroll
        for (int x = 0; x < R; x++) {
            int d = lane + 32 * x;
            if (d < hd) orow[d] = o[rr][x] * inv;
        }
        if (lane == 0) lse[((size_t)b * H + h) * T + i] = m[rr] + logf(l[rr]);
    }
}

template <int R>
__global__ void __launch_bounds__(ATT_THREADS) attention_backward_dq_kernel(float *dq, float *Dbuf, const float *dout,
                                                                             const float *lse, const float *q,
                                                                             const float *k, const float *v, int T,
                                                                             int H, int KV, int hd, float scale) {
    extern __shared__ float smem[];
    const int ld = hd + 1;
    float *Qs = smem, *dOs = Qs + ATT_BR * ld, *Ks = dOs + ATT_BR * ld, *Vs = Ks + ATT_BT * ld;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATT_BR, g = h / (H / KV);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const size_t qs = (size_t)H * hd, kvs = (size_t)KV * hd;
    const float *Qb = q + (size_t)b * T * qs + (size_t)h * hd, *dOb = dout + (size_t)b * T * qs + (size_t)h * hd;
    const float *Kb = k + (size_t)b * T * kvs + (size_t)g * hd, *Vb = v + (size_t)b * T * kvs + (size_t)g * hd;
    const float *lse_b = lse + ((size_t)b * H + h) * T;

    for (int idx = threadIdx.x; idx < ATT_BR * hd; idx += ATT_THREADS) {
        int r = idx / hd, d = idx % hd, i = q0 + r;
        Qs[r * ld + d] = i < T ? Qb[(size_t)i * qs + d] : 0.0f;
        dOs[r * ld + d] = i < T ? dOb[(size_t)i * qs + d] : 0.0f;
    }
    float L[ATT_ROWS], D[ATT_ROWS], acc[ATT_ROWS][R];
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS; rr++) {
        int i = q0 + warp * ATT_ROWS + rr;
        L[rr] = i < T ? lse_b[i] : 0.0f;
        D[rr] = 0.0f;
#pragma unroll
        for (int x = 0; x < R; x++) acc[rr][x] = 0.0f;
    }
    const int q_last = min(T, q0 + ATT_BR) - 1;
    for (int pass = 0; pass < 2; pass++) {
        for (int k0 = 0; k0 <= q_last; k0 += ATT_BT) {
            __syncthreads();
            for (int idx = threadIdx.x; idx < ATT_BT * hd; idx += ATT_THREADS) {
                int r = idx / hd, d = idx % hd, j = k0 + r;
                Ks[r * ld + d] = j < T ? Kb[(size_t)j * kvs + d] : 0.0f;
                Vs[r * ld + d] = j < T ? Vb[(size_t)j * kvs + d] : 0.0f;
            }
            __syncthreads();
#pragma unroll
            for (int rr = 0; rr < ATT_ROWS; rr++) {
                const int r = warp * ATT_ROWS + rr, i = q0 + r;
                if (i >= T || k0 > i) continue; /* warp-uniform */
                const int j = k0 + lane;
                float p = 0.0f, dp = 0.0f;
                if (j <= i) {
                    const float *qr = Qs + r * ld, *kr = Ks + lane * ld, *dor = dOs + r * ld, *vr = Vs + lane * ld;
                    float s = 0.0f;
                    for (int d = 0; d < hd; d++) s += qr[d] * kr[d], dp += dor[d] * vr[d];
                    p = expf(s * scale - L[rr]);
                }
                if (pass == 0) {
                    D[rr] += warp_sum(p * dp);
                    continue;
                }
                const float ds = p * (dp - D[rr]);
                const int jn = min(ATT_BT, i - k0 + 1);
                for (int jj = 0; jj < jn; jj++) {
                    const float dsj = __shfl_sync(FULL_MASK, ds, jj);
                    const float *kr = Ks + jj * ld;
#pragma unroll
                    for (int x = 0; x < R; x++) {
                        int d = lane + 32 * x;
                        if (d < hd) acc[rr][x] += dsj * kr[d];
                    }
                }
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS; rr++) {
        const int i = q0 + warp * ATT_ROWS + rr;
        if (i >= T) continue;
        float *dqr = dq + (size_t)b * T * qs + (size_t)i * qs + (size_t)h * hd;
#pragma unroll
        for (int x = 0; x < R; x++) {
            int d = lane + 32 * x;
            if (d < hd) dqr[d] = scale * acc[rr][x];
        }
        if (lane == 0) Dbuf[((size_t)b * H + h) * T + i] = D[rr];
    }
}

template <int R>
__global__ void __launch_bounds__(ATT_THREADS) attention_backward_dkdv_kernel(float *dk, float *dv, const float *dout,
                                                                               const float *lse, const float *Dbuf,
                                                                               const float *q, const float *k,
                                                                               const float *v, int T, int H, int KV,
                                                                               int hd, float scale) {
    extern __shared__ float smem[];
    const int ld = hd + 1;
    float *Ks = smem, *Vs = Ks + ATT_BR * ld, *Qs = Vs + ATT_BR * ld, *dOs = Qs + ATT_BT * ld;
    float *Ls = dOs + ATT_BT * ld, *Ds = Ls + ATT_BT;
    const int b = blockIdx.z, g = blockIdx.y, j0 = blockIdx.x * ATT_BR, group = H / KV;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const size_t qs = (size_t)H * hd, kvs = (size_t)KV * hd;
    const float *Kb = k + (size_t)b * T * kvs + (size_t)g * hd, *Vb = v + (size_t)b * T * kvs + (size_t)g * hd;

    for (int idx = threadIdx.x; idx < ATT_BR * hd; idx += ATT_THREADS) {
        int r = idx / hd, d = idx % hd, j = j0 + r;
        Ks[r * ld + d] = j < T ? Kb[(size_t)j * kvs + d] : 0.0f;
        Vs[r * ld + d] = j < T ? Vb[(size_t)j * kvs + d] : 0.0f;
    }
    float dka[ATT_ROWS][R], dva[ATT_ROWS][R];
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS; rr++)
#pragma unroll
        for (int x = 0; x < R; x++) dka[rr][x] = 0.0f, dva[rr][x] = 0.0f;

    for (int h = g * group; h < (g + 1) * group; h++) {
        const float *Qb = q + (size_t)b * T * qs + (size_t)h * hd, *dOb = dout + (size_t)b * T * qs + (size_t)h * hd;
        const float *Lb = lse + ((size_t)b * H + h) * T, *Db = Dbuf + ((size_t)b * H + h) * T;
        for (int i0 = j0; i0 < T; i0 += ATT_BT) {
            __syncthreads();
            for (int idx = threadIdx.x; idx < ATT_BT * hd; idx += ATT_THREADS) {
                int r = idx / hd, d = idx % hd, i = i0 + r;
                Qs[r * ld + d] = i < T ? Qb[(size_t)i * qs + d] : 0.0f;
                dOs[r * ld + d] = i < T ? dOb[(size_t)i * qs + d] : 0.0f;
            }
            if (threadIdx.x < ATT_BT) {
                int i = i0 + threadIdx.x;
                Ls[threadIdx.x] = i < T ? Lb[i] : 0.0f;
                Ds[threadIdx.x] = i < T ? Db[i] : 0.0f;
            }
            __syncthreads();
            const int in = min(ATT_BT, T - i0);
#pragma unroll
            for (int rr = 0; rr < ATT_ROWS; rr++) {
                const int r = warp * ATT_ROWS + rr, j = j0 + r;
                if (j >= T || i0 + in - 1 < j) continue; /* warp-uniform: no query of this tile sees key j */
                const int i = i0 + lane;
                float p = 0.0f, ds = 0.0f;
                if (i < T && i >= j) {
                    const float *qr = Qs + lane * ld, *kr = Ks + r * ld, *dor = dOs + lane * ld, *vr = Vs + r * ld;
                    float s = 0.0f, dp = 0.0f;
                    for (int d = 0; d < hd; d++) s += qr[d] * kr[d], dp += dor[d] * vr[d];
                    p = expf(s * scale - Ls[lane]);
                    ds = p * (dp - Ds[lane]);
                }
                for (int ii = 0; ii < in; ii++) {
                    const float pi = __shfl_sync(FULL_MASK, p, ii), dsi = __shfl_sync(FULL_MASK, ds, ii);
                    const float *qr = Qs + ii * ld, *dor = dOs + ii * ld;
#pragma unroll
                    for (int x = 0; x < R; x++) {
                        int d = lane + 32 * x;
                        if (d < hd) dva[rr][x] += pi * dor[d], dka[rr][x] += dsi * qr[d];
                    }
                }
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS; rr++) {
        const int j = j0 + warp * ATT_ROWS + rr;
        if (j >= T) continue;
        float *dkr = dk + (size_t)b * T * kvs + (size_t)j * kvs + (size_t)g * hd;
        float *dvr = dv + (size_t)b * T * kvs + (size_t)j * kvs + (size_t)g * hd;
#pragma unroll
        for (int x = 0; x < R; x++) {
            int d = lane + 32 * x;
            if (d < hd) dkr[d] = scale * dka[rr][x], dvr[d] = dva[rr][x];
        }
    }
}

static void attention_check_hd(int hd) {
    if (hd > ATT_MAX_HD) {
        fprintf(stderr, "upcycle: the CUDA attention kernels support head_dim <= %d, this model has %d; expected a smaller "
                        "head_dim or --device cpu\n", ATT_MAX_HD, hd);
        exit(1);
    }
}

template <int R>
static void attention_forward_launch(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                                     int H, int KV, int hd) {
    size_t smem = sizeof(float) * (size_t)(ATT_BR + 2 * ATT_BT) * (hd + 1);
    allow_smem(attention_forward_kernel<R>, smem);
    dim3 grid(cdiv(T, ATT_BR), H, B);
    attention_forward_kernel<R><<<grid, ATT_THREADS, smem, g_stream>>>(out, lse, q, k, v, T, H, KV, hd,
                                                                       1.0f / sqrtf((float)hd));
    KERNEL_CHECK();
}

template <int R>
static void attention_backward_launch(float *dq, float *dk, float *dv, float *Dbuf, const float *dout, const float *lse,
                                      const float *q, const float *k, const float *v, int B, int T, int H, int KV,
                                      int hd) {
    float scale = 1.0f / sqrtf((float)hd);
    size_t smem_dq = sizeof(float) * (size_t)(2 * ATT_BR + 2 * ATT_BT) * (hd + 1);
    allow_smem(attention_backward_dq_kernel<R>, smem_dq);
    dim3 grid_q(cdiv(T, ATT_BR), H, B);
    attention_backward_dq_kernel<R><<<grid_q, ATT_THREADS, smem_dq, g_stream>>>(dq, Dbuf, dout, lse, q, k, v, T, H, KV,
                                                                                 hd, scale);
    KERNEL_CHECK();
    size_t smem_kv = sizeof(float) * ((size_t)(2 * ATT_BR + 2 * ATT_BT) * (hd + 1) + 2 * ATT_BT);
    allow_smem(attention_backward_dkdv_kernel<R>, smem_kv);
    dim3 grid_k(cdiv(T, ATT_BR), KV, B);
    attention_backward_dkdv_kernel<R><<<grid_k, ATT_THREADS, smem_kv, g_stream>>>(dk, dv, dout, lse, Dbuf, q, k, v, T, H,
                                                                                   KV, hd, scale);
    KERNEL_CHECK();
}

/* probs: the contract's (B,H,T,T) buffer; this backend stores only the logsumexp (B*H*T) there */
static void cuda_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v, int B, int T,
                                   int H, int KV, int hd) {
    if (B <= 0 || T <= 0) return;
    attention_check_hd(hd);
    if (hd <= 32) attention_forward_launch<1>(out, probs, q, k, v, B, T, H, KV, hd);
    else if (hd <= 64) attention_forward_launch<2>(out, probs, q, k, v, B, T, H, KV, hd);
    else if (hd <= 128) attention_forward_launch<4>(out, probs, q, k, v, B, T, H, KV, hd);
    else attention_forward_launch<8>(out, probs, q, k, v, B, T, H, KV, hd);
}

static void cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs, const float *q,
                                    const float *k, const float *v, int B, int T, int H, int KV, int hd) {
    if (B <= 0 || T <= 0) return;
    attention_check_hd(hd);
    WsCarve ws = ws_begin(ws_align(sizeof(float) * (size_t)B * H * T));
    float *Dbuf = (float *)ws_take(&ws, sizeof(float) * (size_t)B * H * T);
    if (hd <= 32) attention_backward_launch<1>(dq, dk, dv, Dbuf, dout, probs, q, k, v, B, T, H, KV, hd);
    else if (hd <= 64) attention_backward_launch<2>(dq, dk, dv, Dbuf, dout, probs, q, k, v, B, T, H, KV, hd);
    else if (hd <= 128) attention_backward_launch<4>(dq, dk, dv, Dbuf, dout, probs, q, k, v, B, T, H, KV, hd);
    else attention_backward_launch<8>(dq, dk, dv, Dbuf, dout, probs, q, k, v, B, T, H, KV, hd);
}
