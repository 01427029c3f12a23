/* hf.h - Expert Upcycling on Hugging Face MoE checkpoint directories.
 *
 * A checkpoint directory holds config.json and either model.safetensors or shards named in
 * model.safetensors.index.json (io/hf_ckpt.h reads it); io/hf_family.h says which families are
 * supported and what their MoE layers are. Shared experts and dense layers are ordinary tensors
 * and are copied unchanged.
 *
 * hf_grow applies the growth operator of a GrowPlan (see plan.h for the expert order: the
 * originals keep their indices, replicas are appended):
 *   - every tensor that is neither a router nor an expert is byte-identical in the output;
 *   - router weight [E, C] -> [E', C], row j = row source[j] (bytes, original dtype);
 *   - bias [E] -> [E']: originals byte-identical, replica j = bias[source[j]] + N(0, s^2) with
 *     s = grow_bias_noise_std(layer biases, E, bias_noise), computed in float and stored in the
 *     bias dtype. One Rng seeded with `seed` draws one normal per replica, layers in ascending
 *     layer order, replicas in index order (so the result does not depend on the sharding);
 *     bias_noise == 0 gives exact byte copies;
 *   - replica j >= E of every expert tensor is a byte copy of expert source[j]'s tensor;
 *   - config.json: the expert count key is set to E' (every other key kept; cJSON round trip);
 *   - sharding: same shard file names, each output shard holds the tensors of the matching
 *     input shard, and a layer's replicas go into the shard holding that layer's router weight;
 *     the index's weight_map and metadata.total_size are rewritten (other keys kept);
 *   - other top-level regular files (tokenizer.json, generation_config.json, ...) are copied;
 *     skipped: *.safetensors other than the model's (e.g. our optimizer.safetensors), the index,
 *     subdirectories and weight files of other formats (*.bin, *.pt, *.pth, *.ckpt, *.gguf,
 *     *.h5, *.msgpack), which would hold ungrown weights.
 * Streaming: inputs are mmapped and copied in chunks (pages dropped after use), so memory stays
 * at a few MB whatever the checkpoint size. The output is written to "<out>.tmp.<pid>" and
 * renamed to out when complete; an existing out is refused unless force (then replaced only
 * after the new one is complete). Any failure removes the temporary directory. */
#ifndef UPCYCLE_GROW_HF_H
#define UPCYCLE_GROW_HF_H

#include "grow/plan.h"
#include "io/hf_family.h"

typedef struct {
    char model_type[64];
    int family;               /* HF_FAMILY_* */
    int n_layers;             /* config num_hidden_layers */
    int n_moe_layers;
    int *moe_layers;          /* (n_moe_layers) ascending layer indices that have a router; may include
                               * layers >= n_layers (DeepSeek-V3's multi-token-prediction layer) */
    int n_experts;            /* E, from the config, checked against every router */
    const char *experts_key;  /* "num_experts", "num_local_experts" or "n_routed_experts" */
    int n_experts_per_tok;    /* top-K from the config (0 if absent) */
    int has_bias;             /* some MoE layer has gate.e_score_correction_bias */
    char dtype[8];            /* dtype of the expert weights, e.g. "BF16" */
    long long total_bytes;    /* tensor data bytes of the whole checkpoint */
    const char *moe_prefix;   /* "mlp" or "block_sparse_moe" */
    int hidden;               /* router columns C */
    int n_expert_tensors;     /* tensors per expert (3 for gate/up/down) */
    long long expert_bytes;   /* bytes of one expert's tensors (first MoE layer) */
    int n_group;              /* DeepSeek group-limited routing groups (0 if none): E' must divide */
    int sharded;              /* 1 = index + shards, 0 = model.safetensors */
    int n_files;
    char **files;             /* (n_files) safetensors file names relative to the directory */
} HfMoeInfo;

/* Reads config.json and the safetensors headers (no tensor data) and validates the MoE
 * structure. Errors: missing config.json; unknown architecture (lists model_type, the config
 * keys and the supported families); no MoE layers (suggests --from-dense); experts of unequal
 * shapes or dtypes, missing experts, router/bias shapes (name the tensors). */
int hf_inspect(const char *dir, HfMoeInfo *info);
void hf_info_free(HfMoeInfo *info);

/* A plan growing every MoE layer of info uniformly to n_new experts (allocate_uniform). */
int hf_plan_uniform(const HfMoeInfo *info, int n_new, GrowPlan *plan);

typedef struct {
    float bias_noise;           /* sigma of grow_bias_noise_std */
    unsigned long long seed;
    int force;                  /* replace an existing out */
} HfGrowOptions;

/* The plan must cover every MoE layer exactly once, with n_old == E and the same n_new in
 * every layer (a Hugging Face config has one expert count). */
int hf_grow(const char *in_dir, const char *out_dir, const GrowPlan *plan, const HfGrowOptions *opt);

/* Writes a synthetic BF16 qwen3_moe checkpoint of about `gigabytes` (4 layers, 32 experts,
 * hidden 1024, expert width chosen to reach the size, F32 balancing biases), sharded into
 * max(2, ceil(gigabytes)) files with an index, for `bench grow`. dir is created (mkdir -p). */
int hf_bench_make_checkpoint(const char *dir, double gigabytes);

#endif
