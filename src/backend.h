/* backend.h - the one contract between the model and the hardware.
 *
 * A backend owns memory (alloc/free/upload/download) and implements every op a training
 * step calls, as forward/backward pairs on tensors in its own memory. The model (model.c)
 * calls only these functions; it never includes a backend's headers. The CPU backend
 * (src/cpu/) uses OpenBLAS + OpenMP (fp32, and bf16 GEMMs on AVX-512 BF16 CPUs); the CUDA
 * backend (src/cuda/: cuBLAS and kernels, fp32 and bf16) implements the same table and has
 * not yet run on a GPU (experimental). Ops that both share bit for bit, such as the router's
 * top-K selection, live in headers both compile (src/router_math.h).
 *
 * Conventions: N = B*T tokens, C = d_model, row-major, weights in Hugging Face layout
 * (out_features, in_features). Backward ops ACCUMULATE (+=) into dinp and dweight unless a
 * comment says "overwrite"; the caller zeroes gradient buffers first. */
#ifndef UPCYCLE_BACKEND_H
#define UPCYCLE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

/* compute precision of a backend (TrainConfig.precision, --precision) */
typedef enum { PRECISION_FP32 = 0, PRECISION_BF16 = 1 } Precision;

typedef struct Backend {
    const char *name;

    /* ---- memory ---- */
    void *(*alloc)(size_t bytes); /* zeroed; exits on out-of-memory */
    void (*free)(void *ptr);
    void (*upload)(void *dst, const void *host_src, size_t bytes);
    void (*download)(void *host_dst, const void *src, size_t bytes);
    void (*zero)(void *ptr, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);
    void (*set_threads)(int n_threads);

    /* ---- elementwise ---- */
    void (*add)(float *out, const float *a, const float *b, size_t n);   /* out = a + b (may alias) */
    void (*accumulate)(float *acc, const float *x, size_t n);            /* acc += x */
    double (*sum_squares)(const float *x, size_t n);

    /* ---- embedding: out (N,C) = table[tokens]; dtable (V,C) += scatter of dout ---- */
    void (*embedding_forward)(float *out, const int32_t *tokens, const float *table, int N, int C);
    void (*embedding_backward)(float *dtable, const float *dout, const int32_t *tokens, int N, int C, int V);

    /* ---- linear: out (N,n_out) = inp (N,n_in) @ weight (n_out,n_in)^T ---- */
    void (*matmul_forward)(float *out, const float *inp, const float *weight, int N, int n_in, int n_out);
    /* dinp (N,n_in) += dout @ weight (skipped if NULL); dweight (n_out,n_in) += dout^T @ inp */
    void (*matmul_backward)(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                            int N, int n_in, int n_out);

    /* ---- RMSNorm over the last dim C of (N,C): out = x * rstd * weight, rstd (N) saved ---- */
    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps);
    void (*rmsnorm_backward)(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                             const float *rstd, int N, int C);

    /* ---- RoPE, rotate-half form, in place on x (B,T,n_heads,head_dim); position = t ---- */
    void (*rope_forward)(float *x, int B, int T, int n_heads, int head_dim, float theta);
    void (*rope_backward)(float *dx, int B, int T, int n_heads, int head_dim, float theta); /* in place */

    /* ---- causal attention with GQA: q (B,T,H,hd), k/v (B,T,KV,hd), out (B,T,H,hd),
     *      lse (B,H,T) the saved logsumexp of each row of scaled scores; the backward
     *      recomputes the softmax from it (no T x T buffer). Backward overwrites dq, dk, dv. ---- */
    void (*attention_forward)(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                              int H, int KV, int head_dim);
    void (*attention_backward)(float *dq, float *dk, float *dv, const float *dout, const float *lse, const float *q,
                               const float *k, const float *v, int B, int T, int H, int KV, int head_dim);

    /* ---- bias over rows: x (N,C) += bias (C), in place; backward dbias (C) += the column sums
     *      of dout (N,C), each summed in row order (q/k/v biases, Qwen2-MoE) ---- */
    void (*bias_add_forward)(float *x, const float *bias, int N, int C);
    void (*bias_add_backward)(float *dbias, const float *dout, int N, int C);

    /* ---- clamp, elementwise over n: out = min(max(inp, -limit), limit) (out may alias inp);
     *      backward overwrites dinp = dout where -limit <= inp <= limit, else 0 (dinp may alias
     *      dout; inp is the clamp's input, as torch.clamp's gradient) (clip_qkv, OLMoE) ---- */
    void (*clamp_forward)(float *out, const float *inp, size_t n, float limit);
    void (*clamp_backward)(float *dinp, const float *dout, const float *inp, size_t n, float limit);

    /* ---- per-row sigmoid gate: out (N,C) += sigmoid(logit[t]) * y (N,C), logit (N) (the
     *      shared expert's gate, Qwen2-MoE); backward overwrites dy (N,C) = sigmoid(logit) * dout
     *      and dlogit (N) = sigmoid'(logit[t]) * (dout[t] . y[t]) ---- */
    void (*sigmoid_gate_forward)(float *out, const float *y, const float *logit, int N, int C);
    void (*sigmoid_gate_backward)(float *dy, float *dlogit, const float *dout, const float *y, const float *logit, int N,
                                  int C);

    /* ---- SwiGLU: out = silu(gate) * up, elementwise over n; backward overwrites ---- */
    void (*swiglu_forward)(float *out, const float *gate, const float *up, size_t n);
    void (*swiglu_backward)(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n);

    /* ---- router (per-token math in src/router_math.h): probs (N,E) = softmax(logits); top-K of (probs + bias) -> topk (N,K),
     *      gates (N,K) = selected unbiased probs, renormalized if norm_topk; loads (E) counts
     *      of (token, slot) selections. Returns the auxiliary losses' value:
     *      aux_coef * E * sum_e f_e P_e + z_coef * mean_t logsumexp(logits_t)^2. ---- */
    double (*router_forward)(float *probs, int32_t *topk, float *gates, int32_t *loads, const float *logits,
                             const float *bias, int N, int E, int K, int norm_topk, float aux_coef, float z_coef);
    /* dlogits (N,E) overwrite, from dgates (N,K) and the auxiliary losses' gradients */
    void (*router_backward)(float *dlogits, const float *dgates, const float *probs, const int32_t *topk,
                            const float *logits, const int32_t *loads, int N, int E, int K, int norm_topk,
                            float aux_coef, float z_coef);

    /* ---- dispatch: sort the N*K (token, slot) pairs by expert (stable: by token within an
     *      expert). offsets (E+1) prefix sums of loads; token_of (N*K) the token at each
     *      position; position_of (N*K) the position of pair (t, k). ---- */
    void (*moe_permute)(int32_t *offsets, int32_t *token_of, int32_t *position_of, const int32_t *topk,
                        const int32_t *loads, int N, int E, int K);
    /* xg (N*K, C) = x[token_of]; backward: dx[t] += sum_k dxg[position_of[t,k]] */
    void (*moe_gather_forward)(float *xg, const float *x, const int32_t *token_of, int NK, int C);
    void (*moe_gather_backward)(float *dx, const float *dxg, const int32_t *position_of, int N, int K, int C);
    /* grouped expert SwiGLU over contiguous row groups [offsets[e], offsets[e+1]):
     *   g = xg W_gate[e]^T, u = xg W_up[e]^T, h = silu(g) * u (all (N*K, F)), yg = h W_down[e]^T.
     *   w_gate, w_up: (E, F, C); w_down: (E, C, F) contiguous per expert. */
    void (*experts_forward)(float *yg, float *g, float *u, float *h, const float *xg, const int32_t *offsets,
                            const float *w_gate, const float *w_up, const float *w_down, int E, int C, int F);
    /* dxg (N*K,C) overwrite; dw_* accumulate; scratch dg, du, dh (N*K, F) */
    void (*experts_backward)(float *dxg, float *dw_gate, float *dw_up, float *dw_down, float *dg, float *du,
                             float *dh, const float *dyg, const float *g, const float *u, const float *h,
                             const float *xg, const int32_t *offsets, const float *w_gate, const float *w_up,
                             const float *w_down, int E, int C, int F);
    /* out (N,C) = sum_k gates[t,k] * yg[position_of[t,k]] (overwrite) */
    void (*moe_combine_forward)(float *out, const float *yg, const float *gates, const int32_t *position_of, int N,
                                int K, int C);
    /* dyg overwrite; dgates (N,K) overwrite */
    void (*moe_combine_backward)(float *dyg, float *dgates, const float *dout, const float *yg, const float *gates,
                                 const int32_t *position_of, int N, int K, int C);

    /* ---- cross-entropy: losses (N) = -log softmax(logits)[target]; backward writes
     *      dlogits (may alias logits) = scale * (softmax - onehot) ---- */
    void (*crossentropy_forward)(float *losses, const float *logits, const int32_t *targets, int N, int V);
    void (*crossentropy_backward)(float *dlogits, const float *logits, const int32_t *targets, int N, int V,
                                  float scale);

    /* ---- optimizer: AdamW on n entries with bias correction at step t (1-based);
     *      the gradient is multiplied by grad_scale first (global-norm clipping) ---- */
    void (*adamw_update)(float *param, const float *grad, float *m, float *v, size_t n, float lr, float beta1,
                         float beta2, float eps, float weight_decay, float grad_scale, int t);
    /* loss-free balancing: bias[e] += rate * sign(mean(loads) - loads[e]) */
    void (*balance_bias_update)(float *bias, const int32_t *loads, int E, float rate);

    /* ---- configuration ---- */
    /* Precision of the GEMMs that follow (process-wide): 0, or -1 with up_error when this
     * backend cannot run it here (the CPU runs bf16 only on AVX-512 BF16 CPUs). NULL: fp32
     * only, no check. */
    int (*set_precision)(int precision);

    /* ---- capabilities: callers ask these, never which backend it is ---- */
    /* 1: buffers are host memory and the ops run on this process's CPU threads (set_threads),
     * so MPI can send the buffers as they are (data and expert parallelism) and forked worker
     * processes can each run one (experiment --jobs). 0: device memory (CUDA). */
    int runs_on_host;
    /* 1: not yet verified on its hardware; the CLI says so whenever it is chosen */
    int experimental;
} Backend;

const Backend *backend_cpu(void);
/* The CUDA backend, or NULL when no device is usable (no driver, no GPU). Exists only in
 * builds with CUDA (UPCYCLE_CUDA defined); code outside src/cuda/ calls backend_select. */
const Backend *backend_cuda(void);
/* --device: "cpu", "cuda" (NULL with up_error when no CUDA device is visible or the build has
 * no CUDA) or "auto" (CUDA when a device is visible, else the CPU; then, in builds with CUDA,
 * notice receives "upcycle: no CUDA device visible; running on the CPU", else ""). Unknown
 * names: NULL with up_error. */
const Backend *backend_select(const char *device, char *notice, size_t notice_size);

#endif
