/* backend_cuda.cu - the CUDA backend: every op of backend.h on the GPU.
 *
 * One translation unit; each op family lives in its own header with its kernels beside their
 * launchers (llm.c style):
 *   elementwise.cuh   memory, add/accumulate, sum of squares, bias over rows, clamp, SwiGLU, the
 *                     per-row sigmoid gate, AdamW, balancing bias
 *   embedding.cuh     embedding forward/backward (stable radix sort, no float atomics)
 *   matmul.cuh        dense linear layers via cuBLAS (fp32, or bf16 tensor cores)
 *   norm_rope.cuh     RMSNorm, RoPE
 *   attention.cuh     flash-style causal GQA attention (no T x T buffer)
 *   router.cuh        router softmax + bias + top-K, loads, auxiliary losses
 *   moe.cuh           permutation by expert on the device, gather, combine
 *   experts.cuh       grouped expert GEMMs reading the offsets on the device
 *   crossentropy.cuh  fused cross-entropy over the vocabulary
 * Parameters, gradients and AdamW moments are the model's contiguous device buffers. The host
 * synchronizes only in transfers (upload/download), the gradient norm (sum_squares) and, when
 * an auxiliary-loss coefficient is set, router_forward's returned value. */
#include "common.cuh"

#include "attention.cuh"
#include "crossentropy.cuh"
#include "elementwise.cuh"
#include "embedding.cuh"
#include "experts.cuh"
#include "matmul.cuh"
#include "moe.cuh"
#include "norm_rope.cuh"
#include "router.cuh"

static int cuda_set_precision(int precision) {
    if (precision != PRECISION_FP32 && precision != PRECISION_BF16)
        return up_error("precision %d; expected fp32 or bf16", precision);
    g_bf16 = precision == PRECISION_BF16;
    return 0;
}

static const Backend g_cuda_backend = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .zero = cuda_zero,
    .copy = cuda_copy,
    .set_threads = cuda_set_threads,
    .add = cuda_add,
    .accumulate = cuda_accumulate,
    .sum_squares = cuda_sum_squares,
    .embedding_forward = cuda_embedding_forward,
    .embedding_backward = cuda_embedding_backward,
    .matmul_forward = cuda_matmul_forward,
    .matmul_backward = cuda_matmul_backward,
    .rmsnorm_forward = cuda_rmsnorm_forward,
    .rmsnorm_backward = cuda_rmsnorm_backward,
    .rope_forward = cuda_rope_forward,
    .rope_backward = cuda_rope_backward,
    .attention_forward = cuda_attention_forward,
    .attention_backward = cuda_attention_backward,
    .bias_add_forward = cuda_bias_add_forward,
    .bias_add_backward = cuda_bias_add_backward,
    .clamp_forward = cuda_clamp_forward,
    .clamp_backward = cuda_clamp_backward,
    .sigmoid_gate_forward = cuda_sigmoid_gate_forward,
    .sigmoid_gate_backward = cuda_sigmoid_gate_backward,
    .swiglu_forward = cuda_swiglu_forward,
    .swiglu_backward = cuda_swiglu_backward,
    .router_forward = cuda_router_forward,
    .router_backward = cuda_router_backward,
    .moe_permute = cuda_moe_permute,
    .moe_gather_forward = cuda_moe_gather_forward,
    .moe_gather_backward = cuda_moe_gather_backward,
    .experts_forward = cuda_experts_forward,
    .experts_backward = cuda_experts_backward,
    .moe_combine_forward = cuda_moe_combine_forward,
    .moe_combine_backward = cuda_moe_combine_backward,
    .crossentropy_forward = cuda_crossentropy_forward,
    .crossentropy_backward = cuda_crossentropy_backward,
    .adamw_update = cuda_adamw_update,
    .balance_bias_update = cuda_balance_bias_update,
    .set_precision = cuda_set_precision,
    .runs_on_host = 0,
    .experimental = 1, /* until make test-cuda has passed on a GPU */
};

/* 1: ready; 0: no usable device (no driver, no GPU, too old, or cuBLAS failed) */
static int cuda_init(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
        cudaGetLastError(); /* clear the sticky "no device / no driver" error */
        return 0;
    }
    cudaDeviceProp prop;
    if (cudaSetDevice(0) != cudaSuccess || cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    if (prop.major < 8) return 0; /* the build carries sm_80 / sm_90a code (and compute_80 PTX) */
    if (cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    if (cublasCreate(&g_cublas) != CUBLAS_STATUS_SUCCESS) return 0;
    cublasSetStream(g_cublas, g_stream);
    cublasSetMathMode(g_cublas, CUBLAS_DEFAULT_MATH); /* no TF32 in fp32 mode */
    g_sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    g_device_sm80 = prop.major >= 8;
    const char *gemm = getenv("UPCYCLE_EXPERT_GEMM");
    g_expert_cublas = gemm && !strcmp(gemm, "cublas");
    return 1;
}

extern "C" const Backend *upcycle_plugin_backend_cuda(void) {
    static int state = -1; /* -1 not probed yet */
    if (state < 0) state = cuda_init();
    return state ? &g_cuda_backend : NULL;
}
