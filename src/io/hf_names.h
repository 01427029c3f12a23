/* hf_names.h - where a tensor of the engine's parameter table lives in a Hugging Face
 * checkpoint of its family.
 *
 * The engine names its parameters as Qwen3-MoE does ("model.layers.{l}.mlp.experts.{e}.
 * gate_proj.weight", ...). Qwen2-MoE and OLMoE use the same names; Mixtral's MoE block is
 * "block_sparse_moe" with experts' w1 (gate), w3 (up) and w2 (down). transformers 5 may keep a
 * layer's experts packed instead: "<block>.experts.gate_up_proj" [E, 2*I, C] (expert e's gate
 * rows, then its up rows) and "<block>.experts.down_proj" [E, C, I]; one expert's projection
 * is then a span of consecutive elements of the packed tensor. */
#ifndef UPCYCLE_IO_HF_NAMES_H
#define UPCYCLE_IO_HF_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define HF_NAME_MAX 160

/* family's name for our parameter name ours (unchanged where the names agree), in the
 * per-expert layout, or with packed experts (Mixtral's block is then mlp too) */
void hf_names_family(int family, int packed, const char *ours, char *out, size_t n);

typedef struct {
    char name[HF_NAME_MAX]; /* the packed tensor */
    uint64_t first, count;  /* the span of its elements that is our parameter */
} HfPackedSpan;

/* For an expert projection of ours (numel elements): its span in the packed layout; 1 if ours
 * is an expert projection, else 0. c gives E, I and C. */
int hf_names_packed(const ModelConfig *c, const char *ours, HfPackedSpan *span);

/* names of derived buffers some checkpoints carry and a loader skips (RoPE's inv_freq) */
int hf_names_is_derived(const char *name);

#endif
