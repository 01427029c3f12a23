#include "grow/plan.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void layer_plan_fill_sources(LayerPlan *lp) {
    int next = lp->n_old;
    for (int e = 0; e < lp->n_old; e++) lp->source[e] = e;
    for (int e = 0; e < lp->n_old; e++)
        for (int r = 1; r < lp->copies[e]; r++) lp->source[next++] = e;
}

void grow_plan_free(GrowPlan *plan) {
    for (int i = 0; i < plan->n_layers; i++) {
        free(plan->layers[i].source);
        free(plan->layers[i].copies);
        free(plan->layers[i].utility);
    }
    free(plan->layers);
    memset(plan, 0, sizeof *plan);
}

void grow_plan_print_table(const GrowPlan *plan, int utility) {
    printf("layer | experts | copies per source expert%s\n", utility ? " (utility min / max)" : "");
    for (int i = 0; i < plan->n_layers; i++) {
        const LayerPlan *lp = &plan->layers[i];
        printf("%5d | %3d->%-3d |", lp->layer, lp->n_old, lp->n_new);
        for (int e = 0; e < lp->n_old; e++) printf(" %d", lp->copies[e]);
        if (lp->utility) {
            double lo = INFINITY, hi = -INFINITY;
            for (int e = 0; e < lp->n_old; e++) lo = fmin(lo, lp->utility[e]), hi = fmax(hi, lp->utility[e]);
            printf("  (%.3g / %.3g)", lo, hi);
        }
        printf("\n");
    }
}

cJSON *grow_plan_layers_json(const GrowPlan *plan) {
    cJSON *layers = cJSON_CreateArray();
    for (int i = 0; i < plan->n_layers; i++) {
        const LayerPlan *lp = &plan->layers[i];
        cJSON *l = cJSON_CreateObject();
        cJSON_AddNumberToObject(l, "layer", lp->layer);
        cJSON_AddItemToObject(l, "source", cJSON_CreateIntArray(lp->source, lp->n_new));
        cJSON_AddItemToObject(l, "copies", cJSON_CreateIntArray(lp->copies, lp->n_old));
        if (lp->utility) cJSON_AddItemToObject(l, "utility", cJSON_CreateDoubleArray(lp->utility, lp->n_old));
        cJSON_AddItemToArray(layers, l);
    }
    return layers;
}

int allocate_uniform(LayerPlan *lp) {
    if (lp->n_new % lp->n_old)
        return up_error("uniform growth of layer %d from %d to %d experts: %d is not a multiple of %d; expected a target "
                        "divisible by the expert count (or --alloc utility for any target)",
                        lp->layer, lp->n_old, lp->n_new, lp->n_new, lp->n_old);
    for (int e = 0; e < lp->n_old; e++) lp->copies[e] = lp->n_new / lp->n_old;
    layer_plan_fill_sources(lp);
    return 0;
}

int allocate_greedy(LayerPlan *lp, const double *utility, int max_copies) {
    if (max_copies > 0 && (long)max_copies * lp->n_old < lp->n_new)
        return up_error("layer %d: --max-copies %d allows at most %d experts; expected a cap >= %d", lp->layer, max_copies,
                        max_copies * lp->n_old, (lp->n_new + lp->n_old - 1) / lp->n_old);
    for (int e = 0; e < lp->n_old; e++) lp->copies[e] = 1;
    for (int extra = lp->n_old; extra < lp->n_new; extra++) {
        int best = -1;
        double best_score = -INFINITY;
        for (int e = 0; e < lp->n_old; e++) {
            if (max_copies > 0 && lp->copies[e] >= max_copies) continue;
            double score = utility[e] / lp->copies[e];
            if (best < 0 || score > best_score) best = e, best_score = score;
        }
        lp->copies[best]++;
    }
    layer_plan_fill_sources(lp);
    return 0;
}

float grow_bias_noise_std(const float *bias, int n, float sigma) {
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += bias[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (bias[i] - mean) * (bias[i] - mean);
    double std = n > 1 ? sqrt(var / n) : 0;
    return (float)(sigma * fmax(std, 1e-3));
}
