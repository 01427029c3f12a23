/* hf_plan.c - inspecting a Hugging Face MoE checkpoint and planning its growth (see hf_plan.h). */
#include "grow/hf_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int hf_inspect(const char *dir, HfMoeInfo *info) {
    memset(info, 0, sizeof *info);
    HfMoeCkpt mc;
    if (hf_moe_open(dir, &mc) != 0) return -1;
    const HfCkpt *ck = &mc.ck;
    snprintf(info->model_type, sizeof info->model_type, "%s", mc.fam->model_type);
    info->family = mc.fam->family;
    info->n_layers = mc.n_layers;
    info->n_moe_layers = mc.n_moe;
    info->moe_layers = xcalloc((size_t)mc.n_moe, sizeof *info->moe_layers);
    for (int i = 0; i < mc.n_moe; i++) {
        info->moe_layers[i] = mc.moe[i].layer;
        if (mc.moe[i].bias.file >= 0) info->has_bias = 1;
    }
    info->n_experts = mc.n_experts;
    info->experts_key = mc.experts_key;
    info->n_experts_per_tok = mc.n_experts_per_tok;
    info->moe_prefix = mc.prefix;
    info->layout = mc.layout;
    info->n_group = mc.n_group;
    const HfMoeLayer *first = &mc.moe[0];
    const StTensor *t0 = hf_ckpt_tensor(ck, first->experts[0]);
    int mxfp4 = t0->dtype == ST_U8 && str_ends_with(first->suffix[0], "_blocks"); /* GPT-OSS's 4-bit blocks */
    snprintf(info->dtype, sizeof info->dtype, "%s", mxfp4 ? "MXFP4" : st_dtype_name(t0->dtype));
    info->hidden = (int)hf_ckpt_tensor(ck, first->router)->shape[1];
    info->n_expert_tensors = first->n_suffix;
    info->expert_bytes = (long long)hf_moe_expert_bytes(&mc, 0);
    info->total_bytes = (long long)hf_ckpt_tensor_bytes(ck);
    info->sharded = ck->sharded;
    info->n_files = ck->n_files;
    info->files = xcalloc((size_t)ck->n_files, sizeof *info->files);
    for (int f = 0; f < ck->n_files; f++) info->files[f] = xstrdup(ck->files[f]);
    hf_moe_close(&mc);
    return 0;
}

void hf_info_free(HfMoeInfo *info) {
    free(info->moe_layers);
    for (int f = 0; f < info->n_files; f++) free(info->files[f]);
    free(info->files);
    memset(info, 0, sizeof *info);
}

int hf_plan_uniform(const HfMoeInfo *info, int n_new, GrowPlan *plan) {
    memset(plan, 0, sizeof *plan);
    if (n_new < info->n_experts)
        return up_error("grow to %d experts: fewer than the %d the checkpoint has; expected a target >= %d", n_new,
                        info->n_experts, info->n_experts);
    plan->n_layers = info->n_moe_layers;
    plan->layers = xcalloc((size_t)info->n_moe_layers, sizeof *plan->layers);
    for (int i = 0; i < info->n_moe_layers; i++) {
        LayerPlan *lp = &plan->layers[i];
        lp->layer = info->moe_layers[i];
        lp->n_old = info->n_experts;
        lp->n_new = n_new;
        lp->source = xcalloc((size_t)n_new, sizeof *lp->source);
        lp->copies = xcalloc((size_t)info->n_experts, sizeof *lp->copies);
        if (allocate_uniform(lp) != 0) {
            grow_plan_free(plan);
            return -1;
        }
    }
    return 0;
}

static int check_plan(const HfMoeCkpt *mc, const GrowPlan *plan, const LayerPlan **by_moe, int *n_new) {
    const char *dir = mc->ck.dir, *key = mc->fam->experts_key;
    int E = mc->n_experts;
    for (int i = 0; i < plan->n_layers; i++) {
        const LayerPlan *lp = &plan->layers[i];
        int m = 0;
        while (m < mc->n_moe && mc->moe[m].layer != lp->layer) m++;
        if (m == mc->n_moe)
            return up_error("%s: the growth plan names layer %d, which has no MoE block (no model.layers.%d.%s.gate."
                            "weight); expected only MoE layers", dir, lp->layer, lp->layer, mc->fam->prefix);
        if (by_moe[m])
            return up_error("%s: the growth plan names layer %d twice; expected each MoE layer once", dir, lp->layer);
        if (lp->n_old != E)
            return up_error("%s: the growth plan for layer %d starts from %d experts; expected %d (%s in config.json)",
                            dir, lp->layer, lp->n_old, E, key);
        if (lp->n_new < lp->n_old || !lp->source)
            return up_error("%s: the growth plan for layer %d goes from %d to %d experts; expected at least %d with a "
                            "source for each", dir, lp->layer, lp->n_old, lp->n_new, lp->n_old);
        if (i > 0 && lp->n_new != plan->layers[0].n_new)
            return up_error("%s: the growth plan grows layer %d to %d experts but layer %d to %d; expected one expert "
                            "count for every layer (a Hugging Face config has a single %s)", dir, lp->layer,
                            lp->n_new, plan->layers[0].layer, plan->layers[0].n_new, key);
        for (int j = 0; j < lp->n_new; j++) {
            int ok = j < lp->n_old ? lp->source[j] == j : lp->source[j] >= 0 && lp->source[j] < lp->n_old;
            if (!ok)
                return up_error("%s: the growth plan for layer %d gives new expert %d source %d; expected %s", dir,
                                lp->layer, j, lp->source[j], j < lp->n_old ? "originals to keep their index" :
                                                                          "a source below the old expert count");
        }
        by_moe[m] = lp;
    }
    for (int m = 0; m < mc->n_moe; m++)
        if (!by_moe[m])
            return up_error("%s: the growth plan has no entry for MoE layer %d; expected every MoE layer (the config "
                            "has one %s for all layers)", dir, mc->moe[m].layer, key);
    *n_new = mc->n_moe ? by_moe[0]->n_new : E;
    if (mc->n_group > 1 && *n_new % mc->n_group != 0)
        return up_error("%s: growing to %d experts with n_group = %d expert groups in config.json; expected a multiple "
                        "of %d (group-limited routing splits the experts into equal groups)", dir, *n_new, mc->n_group,
                        mc->n_group);
    return 0;
}

int hf_plan_check(const HfMoeCkpt *mc, const GrowPlan *plan, const LayerPlan ***by_moe, int *n_new) {
    const LayerPlan **plans = xcalloc((size_t)mc->n_moe, sizeof *plans);
    *n_new = 0;
    if (check_plan(mc, plan, plans, n_new) != 0) {
        free(plans);
        *by_moe = NULL;
        return -1;
    }
    *by_moe = plans;
    return 0;
}
