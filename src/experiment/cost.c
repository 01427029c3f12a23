/* cost.c - the compute formula and the cluster cost model (see cost.h). */
#include "experiment/cost.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "util.h"

double cost_saving(double tau_frac, double ratio) { return 1.0 - (tau_frac + (1.0 - tau_frac) * ratio) / ratio; }

double cost_sunk_saving(double tau_frac) { return tau_frac; }

/* saving = tau_frac (1 - 1/ratio)  =>  ratio = tau_frac / (tau_frac - saving) */
double cost_implied_ratio(double tau_frac, double saving) {
    if (!(tau_frac > 0 && tau_frac < 1) || !(saving < tau_frac)) return NAN;
    return tau_frac / (tau_frac - saving);
}

int cost_parse_cluster(const char *spec, ClusterShape *c) {
    *c = (ClusterShape){0, 0, 0, 400, 3350, 80};
    char *copy = xstrdup(spec), *save = NULL;
    int rc = 0;
    for (char *part = strtok_r(copy, ",", &save); part && !rc; part = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(part, '='), *end;
        if (!eq) {
            rc = up_error("--cluster %s: '%s' has no '='; expected gpus=G,ep=D,link=GB/s[,tflops=T,hbm=GB/s,mem=GB]", spec, part);
            break;
        }
        *eq = 0;
        double v = strtod(eq + 1, &end);
        if (*end || !(v > 0) || !isfinite(v)) {
            rc = up_error("--cluster %s: %s=%s; expected a positive number", spec, part, eq + 1);
            break;
        }
        int is_count = !strcmp(part, "gpus") || !strcmp(part, "ep");
        if (is_count && (v != floor(v) || v > 1e6)) {
            rc = up_error("--cluster %s: %s=%g; expected an integer up to 1000000", spec, part, v);
            break;
        }
        if (!strcmp(part, "gpus")) c->gpus = (int)v;
        else if (!strcmp(part, "ep")) c->ep = (int)v;
        else if (!strcmp(part, "link")) c->link_gbs = v;
        else if (!strcmp(part, "tflops")) c->tflops = v;
        else if (!strcmp(part, "hbm")) c->hbm_gbs = v;
        else if (!strcmp(part, "mem")) c->mem_gb = v;
        else rc = up_error("--cluster %s: unknown key '%s'; expected gpus, ep, link, tflops, hbm or mem", spec, part);
    }
    free(copy);
    if (rc) return rc;
    if (!c->gpus || !c->ep || !c->link_gbs)
        return up_error("--cluster %s: gpus, ep and link are required; expected e.g. gpus=64,ep=8,link=50", spec);
    if (c->gpus % c->ep) return up_error("--cluster %s: ep=%d does not divide gpus=%d; expected a divisor", spec, c->ep, c->gpus);
    return 0;
}

StepCost cost_model_step(const ModelConfig *mc, int tokens_per_step, int seq_len, const ClusterShape *c) {
    StepCost s = {0};
    ParamInfo *table = NULL;
    int n = model_full_table(mc, &table);
    double expert = 0, dense = 0;
    for (int i = 0; i < n; i++) {
        if (table[i].expert >= 0) expert += (double)table[i].numel;
        else dense += (double)table[i].numel;
    }
    free(table);
    double G = c->gpus, ep = c->ep, replicas = G / ep, tokens = tokens_per_step;
    double flops = 3.0 * model_flops_per_token(mc, seq_len) * tokens;
    s.compute = flops / (G * c->tflops * 1e12);
    double rows = tokens / G * (mc->n_experts ? mc->top_k : 0);
    s.all_to_all = model_config_n_moe_layers(mc) * 4.0 * rows * mc->d_model * 2.0 * (ep - 1) / ep / (c->link_gbs * 1e9);
    double ring_dense = G > 1 ? 2.0 * (G - 1) / G : 0, ring_expert = replicas > 1 ? 2.0 * (replicas - 1) / replicas : 0;
    s.grad_sync = (ring_dense * dense + ring_expert * expert / ep) * 4.0 / (c->link_gbs * 1e9);
    s.params_per_gpu = dense + expert / ep;
    s.optimizer = 28.0 * s.params_per_gpu / (c->hbm_gbs * 1e9);
    s.total = s.compute + s.all_to_all + s.grad_sync + s.optimizer;
    s.fits = 16.0 * s.params_per_gpu <= c->mem_gb * 1e9;
    return s;
}
