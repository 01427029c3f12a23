/* attention.h - causal softmax attention with grouped-query heads on the CPU (forward, backward).
 *
 * The CPU backend's attention_forward / attention_backward (backend.h has the contract):
 * q, out, dq, dout are (B, T, H, hd); k, v, dk, dv are (B, T, KV, hd), query head h reading kv
 * head h / (H / KV); lse is (B, H, T), each query row's logsumexp of its scaled scores, written
 * by the forward and read by the backward, which recomputes the probabilities from it. */
#ifndef UPCYCLE_CPU_ATTENTION_H
#define UPCYCLE_CPU_ATTENTION_H

void cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int H,
                           int KV, int hd);
void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *lse, const float *q,
                            const float *k, const float *v, int B, int T, int H, int KV, int hd);

/* The vector width the kernels run at: "avx512", "avx2", "sse2" or "scalar", the widest this
 * CPU has of those the build holds. On x86-64 the portable build (make PORTABLE=1) holds the
 * SSE2, AVX2 + FMA and AVX-512 kernels; a native build (-march=native) its own width and the
 * narrower ones (SSE2, and AVX2 under AVX-512), which only the tests select. */
const char *cpu_attention_width(void);
/* Run the kernels of width `name` (NULL: the widest this CPU has); 0, or -1 when this build does
 * not hold them or this CPU cannot run them (then nothing changes). For tests and benchmarks. */
int cpu_attention_use_width(const char *name);

#endif
