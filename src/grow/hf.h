/* hf.h - Expert Upcycling on Hugging Face MoE checkpoint directories: the API of `upcycle grow`
 * (and `bench grow`) for them.
 *
 * The layers below, each with its own contract: io/hf_ckpt.h reads a checkpoint directory
 * (config.json, model.safetensors or shards with model.safetensors.index.json); io/hf_family.h
 * knows the supported families (Qwen2/3-MoE, OLMoE, Mixtral, DeepSeek-V2/V3), their tensor
 * names and a checkpoint's MoE layers (router, optional balancing bias, experts);
 * grow/hf_plan.h inspects a checkpoint (hf_inspect) and plans uniform growth. Shared experts
 * and dense layers are ordinary tensors and are copied unchanged.
 *
 * hf_grow applies the growth operator of a GrowPlan (see plan.h for the expert order: the
 * originals keep their indices, replicas are appended):
 *   - every tensor that is neither a router nor an expert is byte-identical in the output;
 *   - router weight [E, C] -> [E', C], row j = row source[j] (bytes, original dtype); likewise
 *     GPT-OSS's router bias [E] -> [E'];
 *   - balancing bias [E] -> [E']: originals byte-identical, replica j = bias[source[j]] + N(0, s^2)
 *     with s = grow_bias_noise_std(layer biases, E, bias_noise), computed in float and stored in
 *     the bias dtype. One Rng seeded with `seed` draws one normal per replica, layers in
 *     ascending layer order, replicas in index order (so the result does not depend on the
 *     sharding); bias_noise == 0 gives exact byte copies;
 *   - per-expert layout: replica j >= E of every expert tensor (FP8 scales included) is a byte
 *     copy of expert source[j]'s tensor; packed layout: every packed tensor [E, ...] becomes
 *     [E', ...] whose slice j is slice source[j] (GPT-OSS's biases and MXFP4 blocks/scales too);
 *   - layout: the input's, unless opt->layout asks for the other one (not for GPT-OSS or
 *     experts with other tensors than gate/up/down weights): per-expert -> packed writes each
 *     layer's gate_up_proj [E', 2I, H] (slice j: source[j]'s gate rows, then its up rows) and
 *     down_proj [E', H, I] after its router; packed -> per-expert writes experts.{j}.<gate>,
 *     <up> in place of gate_up_proj and experts.{j}.<down> in place of down_proj, each a slice of
 *     source[j]'s; Mixtral's block is block_sparse_moe per-expert and mlp packed, so its router
 *     (and bias) names follow;
 *   - config.json: the expert-count key is set to E' (every other key kept; cJSON round trip);
 *   - sharding: same shard file names, each output shard holds the tensors of the matching
 *     input shard, and a layer's replicas (or converted packed tensors) go into the shard
 *     holding that layer's router weight; the index's weight_map and metadata.total_size are
 *     rewritten (other keys kept);
 *   - with opt->record, OUT/grow.json records the growth as the engine's grow does: "layers"
 *     (per layer source, copies, utility), experts_before/after, alloc, utility, bias_noise,
 *     seed, the output layout and model_type (an input's grow.json is then not copied);
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

#include "grow/hf_plan.h"
#include "grow/plan.h"

enum { HF_GROW_LAYOUT_KEEP = 0, HF_GROW_LAYOUT_PER_EXPERT, HF_GROW_LAYOUT_PACKED };

typedef struct {
    float bias_noise;           /* sigma of grow_bias_noise_std */
    unsigned long long seed;
    int force;                  /* replace an existing out */
    int layout;                 /* HF_GROW_LAYOUT_*: the output's expert layout (KEEP: the input's) */
    int record;                 /* also write OUT/grow.json (below) */
    const char *utility;        /* for grow.json: what the plan's utilities are, e.g. "weight-norm" */
} HfGrowOptions;

/* The plan must cover every MoE layer exactly once, with n_old == E and the same n_new in
 * every layer (a Hugging Face config has one expert count); hf_plan_check says what else.
 * Copies per expert may differ from layer to layer (hf_plan_utility). */
int hf_grow(const char *in_dir, const char *out_dir, const GrowPlan *plan, const HfGrowOptions *opt);

#endif
