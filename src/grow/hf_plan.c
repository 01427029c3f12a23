/* hf_plan.c - inspecting a Hugging Face MoE checkpoint and planning its growth (see hf_plan.h). */
#include "grow/hf_plan.h"

#include <math.h>
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

/* Uniform (utility NULL) or greedy on utility (n_moe_layers x E). */
static int plan_layers(const HfMoeInfo *info, int n_new, const double *utility, int max_copies, GrowPlan *plan) {
    memset(plan, 0, sizeof *plan);
    if (n_new < info->n_experts)
        return up_error("grow to %d experts: fewer than the %d the checkpoint has; expected a target >= %d", n_new,
                        info->n_experts, info->n_experts);
    int E = info->n_experts;
    plan->n_layers = info->n_moe_layers;
    plan->layers = xcalloc((size_t)info->n_moe_layers, sizeof *plan->layers);
    for (int i = 0; i < info->n_moe_layers; i++) {
        LayerPlan *lp = &plan->layers[i];
        lp->layer = info->moe_layers[i];
        lp->n_old = E;
        lp->n_new = n_new;
        lp->source = xcalloc((size_t)n_new, sizeof *lp->source);
        lp->copies = xcalloc((size_t)E, sizeof *lp->copies);
        int rc;
        if (utility) {
            lp->utility = xmalloc((size_t)E * sizeof *lp->utility);
            memcpy(lp->utility, utility + (size_t)i * E, (size_t)E * sizeof *lp->utility);
            rc = allocate_greedy(lp, lp->utility, max_copies);
        } else {
            rc = allocate_uniform(lp);
        }
        if (rc != 0) {
            grow_plan_free(plan);
            return -1;
        }
    }
    return 0;
}

int hf_plan_uniform(const HfMoeInfo *info, int n_new, GrowPlan *plan) { return plan_layers(info, n_new, NULL, 0, plan); }

int hf_plan_utility(const HfMoeInfo *info, int n_new, const double *utility, int max_copies, GrowPlan *plan) {
    return plan_layers(info, n_new, utility, max_copies, plan);
}

/* ------------------------------------------------------------------ weight norms */

/* Sum of squares of a projection's dequantized elements, in storage order (the larger stride
 * outside, so GPT-OSS's transposed projections stream too); *lo, *hi: the bytes it read. */
static double proj_sum_sq(const HfMoeCkpt *mc, const HfProj *p, const unsigned char **lo, const unsigned char **hi) {
    const HfCkpt *ck = &mc->ck;
    const unsigned char *data = st_data(hf_ckpt_file(ck, p->weight), hf_ckpt_tensor(ck, p->weight));
    size_t size = st_dtype_size(p->dtype);
    const unsigned char *sdata = NULL;
    StDtype sdtype = ST_F32;
    if (p->scale.file >= 0) {
        sdata = st_data(hf_ckpt_file(ck, p->scale), hf_ckpt_tensor(ck, p->scale));
        sdtype = hf_ckpt_tensor(ck, p->scale)->dtype;
    }
    int out_outer = p->stride_out >= p->stride_in;
    int64_t n_outer = out_outer ? p->out : p->in, n_inner = out_outer ? p->in : p->out;
    int64_t s_outer = out_outer ? p->stride_out : p->stride_in, s_inner = out_outer ? p->stride_in : p->stride_out;
    const unsigned char *first = data + (size_t)p->offset * size;
    const unsigned char *last = first + (size_t)((p->out - 1) * p->stride_out + (p->in - 1) * p->stride_in + 1) * size;
    map_prefault(first, (size_t)(last - first));
    double sum = 0;
    for (int64_t a = 0; a < n_outer; a++) {
        const unsigned char *row = first + (size_t)(a * s_outer) * size;
        double row_sum = 0;
        if (!sdata) {
            for (int64_t b = 0; b < n_inner; b++) {
                double v = st_element_f32(p->dtype, row + (size_t)(b * s_inner) * size);
                row_sum += v * v;
            }
        } else { /* FP8: each element times the scale of its block */
            for (int64_t b = 0; b < n_inner; b++) {
                int64_t o = out_outer ? a : b, i = out_outer ? b : a;
                int64_t k = p->scale_offset + ((p->row0 + o) / p->block[0]) * p->scale_cols + i / p->block[1];
                double v = (double)st_element_f32(p->dtype, row + (size_t)(b * s_inner) * size) *
                           st_element_f32(sdtype, sdata + (size_t)k * st_dtype_size(sdtype));
                row_sum += v * v;
            }
        }
        sum += row_sum;
    }
    *lo = first, *hi = last;
    return sum;
}

int hf_weight_norms(const char *dir, double *utility) {
    HfMoeCkpt mc;
    if (hf_moe_open(dir, &mc) != 0) return -1;
    int E = mc.n_experts, rc = 0;
    for (int m = 0; m < mc.n_moe && rc == 0; m++) {
        /* the projections of every expert first, so that errors come before any data is read */
        HfProj *proj = xmalloc((size_t)E * 3 * sizeof *proj);
        for (int e = 0; e < E && rc == 0; e++)
            for (int k = 0; k < 3 && rc == 0; k++) rc = hf_expert_proj(&mc, m, e, k, &proj[e * 3 + k]);
        if (rc == 0) {
#pragma omp parallel for schedule(dynamic)
            for (int e = 0; e < E; e++) {
                const unsigned char *lo[3], *hi[3];
                double sum = 0;
                for (int k = 0; k < 3; k++) sum += proj_sum_sq(&mc, &proj[e * 3 + k], &lo[k], &hi[k]);
                for (int k = 0; k < 3; k++) map_release(lo[k], (size_t)(hi[k] - lo[k]));
                utility[(size_t)m * E + e] = sqrt(sum);
            }
        }
        free(proj);
    }
    hf_moe_close(&mc);
    return rc;
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
