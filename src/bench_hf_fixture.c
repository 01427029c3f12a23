/* bench_hf_fixture.c - the synthetic Hugging Face checkpoint that `upcycle bench grow` grows
 * (see bench.h): a qwen3_moe directory of a requested size, written in chunks so that memory
 * stays small whatever the size. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "io/hf_ckpt.h"
#include "io/safetensors.h"
#include "util.h"

#define FILL_CHUNK ((size_t)8 << 20) /* bytes generated per write */

typedef struct {
    char name[96];
    StDtype dtype;
    int ndim;
    int64_t shape[2];
    int fill; /* 0 random bf16, 1 ones (norms), 2 small f32 bias */
    uint64_t bytes;
    int shard;
} BenchTensor;

static void bench_fill(const BenchTensor *t, Rng *rng, unsigned char *buf, size_t n) {
    if (t->fill == 1) {
        for (size_t i = 0; i + 1 < n; i += 2) buf[i] = 0x80, buf[i + 1] = 0x3f; /* bf16 1.0 */
    } else if (t->fill == 2) {
        for (size_t i = 0; i + 3 < n; i += 4) {
            float v = (float)(rng_uniform(rng) - 0.5) * 0.02f;
            memcpy(buf + i, &v, 4);
        }
    } else {
        /* bf16 with random sign and mantissa, magnitude 2^-9 .. 2^-5: fast and weight-like */
        for (size_t i = 0; i + 7 < n; i += 8) {
            uint64_t r = rng_next(rng);
            for (int k = 0; k < 4; k++, r >>= 16) {
                uint16_t h = (uint16_t)((r & 0x8000u) | ((118u + ((r >> 7) & 3u)) << 7) | (r & 0x7fu));
                memcpy(buf + i + 2 * k, &h, 2);
            }
        }
        for (size_t i = n & ~(size_t)7; i < n; i++) buf[i] = 0;
    }
}

int hf_bench_make_checkpoint(const char *dir, double gigabytes) {
    const int L = 4, E = 32, H = 1024, heads = 16, kv = 4, hd = 64;
    const double target = gigabytes * 1e9;
    /* embeddings and lm_head take about 5% of the size, like a real checkpoint */
    long V = (long)(target * 0.025 / (2.0 * H) / 256.0) * 256;
    if (V < 256) V = 256;
    if (V > 151936) V = 151936;
    double fixed = 2.0 * V * H * 2 + L * ((double)2 * H * heads * hd + 2.0 * H * kv * hd) * 2;
    double per_width = (double)L * E * 3 * H * 2;
    long I = (long)((target - fixed) / per_width / 64.0 + 0.5) * 64;
    if (I < 64) I = 64;
    if (mkdir_p(dir) != 0) return -1;

    size_t n = 0, cap = 64;
    BenchTensor *ts = xcalloc(cap, sizeof *ts);
#define ADD(fill_, dtype_, d0, d1, ...)                                                         \
    do {                                                                                        \
        if (n == cap) ts = xrealloc(ts, (cap *= 2) * sizeof *ts);                               \
        BenchTensor *t_ = &ts[n++];                                                             \
        memset(t_, 0, sizeof *t_);                                                              \
        snprintf(t_->name, sizeof t_->name, __VA_ARGS__);                                       \
        t_->fill = fill_;                                                                       \
        t_->dtype = dtype_;                                                                     \
        t_->shape[0] = d0;                                                                      \
        t_->shape[1] = d1;                                                                      \
        t_->ndim = (d1) != 0 ? 2 : 1;                                                                \
        t_->bytes = (uint64_t)(d0) * ((d1) != 0 ? (uint64_t)(d1) : 1) * st_dtype_size(dtype_);             \
    } while (0)
    ADD(0, ST_BF16, V, H, "model.embed_tokens.weight");
    for (int l = 0; l < L; l++) {
        ADD(1, ST_BF16, H, 0, "model.layers.%d.input_layernorm.weight", l);
        ADD(0, ST_BF16, heads * hd, H, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(0, ST_BF16, kv * hd, H, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(0, ST_BF16, kv * hd, H, "model.layers.%d.self_attn.v_proj.weight", l);
        ADD(0, ST_BF16, H, heads * hd, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(1, ST_BF16, hd, 0, "model.layers.%d.self_attn.q_norm.weight", l);
        ADD(1, ST_BF16, hd, 0, "model.layers.%d.self_attn.k_norm.weight", l);
        ADD(1, ST_BF16, H, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(0, ST_BF16, E, H, "model.layers.%d.mlp.gate.weight", l);
        ADD(2, ST_F32, E, 0, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
        for (int e = 0; e < E; e++) {
            ADD(0, ST_BF16, I, H, "model.layers.%d.mlp.experts.%d.gate_proj.weight", l, e);
            ADD(0, ST_BF16, I, H, "model.layers.%d.mlp.experts.%d.up_proj.weight", l, e);
            ADD(0, ST_BF16, H, I, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, e);
        }
    }
    ADD(1, ST_BF16, H, 0, "model.norm.weight");
    ADD(0, ST_BF16, V, H, "lm_head.weight");
#undef ADD
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) total += ts[i].bytes;
    int n_shards = (int)ceil(gigabytes);
    if (n_shards < 2) n_shards = 2;
    uint64_t before = 0;
    for (size_t i = 0; i < n; i++) {
        int s = (int)((double)before / (double)total * n_shards);
        ts[i].shard = s < n_shards ? s : n_shards - 1;
        before += ts[i].bytes;
    }

    int rc = 0;
    Rng rng;
    rng_seed(&rng, 12345);
    size_t buf_cap = FILL_CHUNK;
    unsigned char *buf = xmalloc(buf_cap);
    cJSON *index = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(index, "metadata");
    char number[32];
    snprintf(number, sizeof number, "%" PRIu64, total);
    cJSON_AddItemToObject(meta, "total_size", cJSON_CreateRaw(number));
    cJSON *wm = cJSON_AddObjectToObject(index, "weight_map");
    for (int s = 0; s < n_shards && rc == 0; s++) {
        char file[64];
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        StWriter *w = st_writer_new();
        st_writer_meta(w, "format", "pt");
        for (size_t i = 0; i < n; i++)
            if (ts[i].shard == s) {
                st_writer_add(w, ts[i].name, ts[i].dtype, ts[i].ndim, ts[i].shape);
                cJSON_AddStringToObject(wm, ts[i].name, file);
            }
        char *path = path_join(dir, file);
        rc = st_writer_open(w, path);
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (ts[i].shard != s) continue;
            for (uint64_t off = 0; off < ts[i].bytes && rc == 0;) {
                size_t len = ts[i].bytes - off < buf_cap ? (size_t)(ts[i].bytes - off) : buf_cap;
                bench_fill(&ts[i], &rng, buf, len);
                rc = st_writer_write(w, buf, len);
                off += len;
            }
        }
        free(path);
        if (rc == 0) rc = st_writer_commit(w);
        else st_writer_abort(w);
    }
    free(buf);
    free(ts);
    if (rc == 0) {
        rc = hf_ckpt_write_json(dir, HF_INDEX_NAME, index);
    }
    cJSON_Delete(index);
    if (rc == 0) {
        cJSON *c = cJSON_CreateObject();
        cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
        cJSON_AddItemToArray(arch, cJSON_CreateString("Qwen3MoeForCausalLM"));
        cJSON_AddStringToObject(c, "model_type", "qwen3_moe");
        cJSON_AddNumberToObject(c, "hidden_size", H);
        cJSON_AddNumberToObject(c, "intermediate_size", 4 * H);
        cJSON_AddNumberToObject(c, "moe_intermediate_size", (double)I);
        cJSON_AddNumberToObject(c, "num_experts", E);
        cJSON_AddNumberToObject(c, "num_experts_per_tok", 4);
        cJSON_AddNumberToObject(c, "num_hidden_layers", L);
        cJSON_AddNumberToObject(c, "num_attention_heads", heads);
        cJSON_AddNumberToObject(c, "num_key_value_heads", kv);
        cJSON_AddNumberToObject(c, "head_dim", hd);
        cJSON_AddNumberToObject(c, "vocab_size", V);
        cJSON_AddNumberToObject(c, "decoder_sparse_step", 1);
        cJSON_AddItemToObject(c, "mlp_only_layers", cJSON_CreateArray());
        cJSON_AddBoolToObject(c, "norm_topk_prob", 1);
        cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-6);
        cJSON_AddNumberToObject(c, "rope_theta", 1000000);
        cJSON_AddNumberToObject(c, "max_position_embeddings", 4096);
        cJSON_AddBoolToObject(c, "tie_word_embeddings", 0);
        cJSON_AddStringToObject(c, "torch_dtype", "bfloat16");
        rc = hf_ckpt_write_json(dir, HF_CONFIG_NAME, c);
        cJSON_Delete(c);
    }
    return rc;
}
