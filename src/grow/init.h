/* init.h - initialization heuristics for replicas (the paper's Appendix D ablation).
 *
 * When the grower replicates expert `source` into expert `replica`, the replica starts as an
 * exact copy (gate, up, down slices and router row). A heuristic then modifies the replica in
 * place; it never writes any other expert or router row, so it can be applied replica by
 * replica in any order. Plain copy is the paper's recommendation: none of these beats it by
 * more than ~1e-3 in validation loss, and the aggressive ones (svd-mix, orthogonal, drop) hurt.
 *
 * Layout of one MoE layer (fp32, row-major, Hugging Face convention), C = d_model,
 * F = expert intermediate size:  gate (E, F, C), up (E, F, C), down (E, C, F), router (E, C),
 * balancing bias (E). An expert's "parameter vector" is the concatenation of its gate, up and
 * down matrices. Hidden unit f of expert e ("column" in the paper) is gate[e][f][:],
 * up[e][f][:] and down[e][:][f]; a SwiGLU expert is invariant to permuting its hidden units
 * consistently across the three matrices.
 *
 * Neighbour expert (interpolate, svd-mix; router interpolate): init_neighbour(source) =
 * source - 1, or 1 for source 0. Why not "the next original, wrapping": the signature does not
 * carry the original expert count E, and source + 1 is a replica when source = E - 1 (replicas
 * are appended at E, E+1, ... - see plan.h). Every index below an original is an original, so
 * the previous expert always is one (for expert 0, expert 1 is one whenever E >= 2; with E = 1
 * the only "neighbour" is a copy of expert 0 and interpolation degenerates to plain copy).
 *
 * All randomness comes from the Rng passed to apply(): same seed, same result.
 *
 * Expert-level methods (spec "METHOD" or "METHOD:key=value,key=value"; defaults shown):
 *   copy                      no change.
 *   noise:sigma=0.01          per matrix M of the replica: M += N(0, (sigma * std(M_source))^2)
 *                             elementwise (relative noise; std over the whole matrix).
 *   drop:frac=0.5,init=xavier re-initialize exactly round(frac * F) hidden units chosen
 *                             uniformly without replacement, in all three matrices, with
 *                             init=xavier  U(-a, a), a = sqrt(6 / (C + F)) (fan_in + fan_out);
 *                             init=kaiming N(0, 2 / fan_in), fan_in = C for gate/up, F for down;
 *                             init=normal  N(0, std(M_source)^2) per matrix (Drop-Upcycling).
 *   shuffle                   a uniformly random permutation of the hidden units, the same for
 *                             gate, up and down: function-preserving.
 *   interpolate:alpha=0.5     replica = (1 - alpha) * source + alpha * neighbour, elementwise.
 *   orthogonal                Gram-Schmidt in the full parameter space: g ~ N(0, rms(M_source)^2)
 *                             per matrix, replica = (g - proj_source(g)) rescaled to
 *                             ||source||: orthogonal to the source, same norm (an exact copy
 *                             has no orthogonal part of its own, hence the random direction).
 *   scaled:factor=0.95        replica = factor * source.
 *   svd-perturb:sigma=0.05,drop=0.1
 *                             per matrix M = U diag(s) V^T (k = min(rows, cols) components):
 *                             s_i *= (1 + sigma * z_i), z_i ~ N(0, 1) drawn for i = 0..k-1 in
 *                             the order gate, up, down; then the round(drop * k) components
 *                             with the smallest original singular values are zeroed.
 *   svd-mix:ratio=0.3         per matrix, keep the top k - round(ratio * k) components of the
 *                             source and replace the rest by the neighbour's bottom
 *                             round(ratio * k) components, projected off the kept left and
 *                             right singular subspaces so the kept (u_i, s_i, v_i) stay exact
 *                             singular triplets of the result.
 *   sparse-code:atoms=1024,lambda=0.1,iters=5,samples=4096
 *                             hidden-unit vectors x = [gate row, up row, down column] (length
 *                             3C) of all experts with index < replica (every original, plus
 *                             earlier replicas, which are copies of originals; 0..source if
 *                             a caller ever places a replica before its source) are normalized
 *                             to unit norm; `samples` of them (uniform, without replacement)
 *                             train a dictionary of min(atoms, samples) unit atoms by `iters`
 *                             rounds of (10 ISTA steps on the codes, one gradient step on the
 *                             dictionary); each source hidden unit is then coded by 50 ISTA
 *                             steps minimizing 0.5||x - D a||^2 + lambda ||a||_1 and replaced
 *                             by its reconstruction D a times its original norm (lambda is
 *                             relative to unit-norm units).
 *
 * Router-level methods (row = router row of the replica, initially the source's row):
 *   copy                      no change.
 *   noise:sigma=0.01          row += N(0, (sigma * std(source row))^2) elementwise.
 *   interpolate:alpha=0.5     row = (1 - alpha) * source row + alpha * neighbour row.
 *   bias-only                 no change here: the only difference from copy is the balancing-
 *                             bias noise the grower adds to every replica anyway.
 *   scaled:factor=0.95        row = factor * source row.
 *   perturb-new:sigma=0.01    row += N(0, (sigma * std(source row))^2) and
 *                             bias[replica] += sigma * N(0, 1) (the bias is in logit units and
 *                             usually starts at 0, so its noise is absolute); nothing else.
 *   orthogonal                row = g - proj_source(g), g ~ N(0, 1)^C, rescaled to ||source row||.
 *   adversarial:beta=1.0      row = -beta * source row (pushes the replica's scores the
 *                             opposite way: cosine -1 with the source).
 *   temperature:tau=2.0       row = source row / tau (softer scores for the replica).
 *   svd-perturb:sigma=0.05    SVD of the whole router (n_experts x C), s_i *= (1 + sigma z_i),
 *                             z_i ~ N(0, 1); only the replica's row of the reconstruction is
 *                             written.
 */
#ifndef UPCYCLE_GROW_INIT_H
#define UPCYCLE_GROW_INIT_H

#include <stddef.h>

#include "util.h"

#define INIT_MAX_PARAMS 4

typedef enum {
    EXPERT_INIT_COPY = 0, /* a zeroed ExpertInit is plain copy */
    EXPERT_INIT_NOISE,
    EXPERT_INIT_DROP,
    EXPERT_INIT_SHUFFLE,
    EXPERT_INIT_INTERPOLATE,
    EXPERT_INIT_ORTHOGONAL,
    EXPERT_INIT_SCALED,
    EXPERT_INIT_SVD_PERTURB,
    EXPERT_INIT_SVD_MIX,
    EXPERT_INIT_SPARSE_CODE,
    EXPERT_INIT_METHODS
} ExpertInitMethod;

typedef enum {
    ROUTER_INIT_COPY = 0, /* a zeroed RouterInit is plain copy */
    ROUTER_INIT_NOISE,
    ROUTER_INIT_INTERPOLATE,
    ROUTER_INIT_BIAS_ONLY,
    ROUTER_INIT_SCALED,
    ROUTER_INIT_PERTURB_NEW,
    ROUTER_INIT_ORTHOGONAL,
    ROUTER_INIT_ADVERSARIAL,
    ROUTER_INIT_TEMPERATURE,
    ROUTER_INIT_SVD_PERTURB,
    ROUTER_INIT_METHODS
} RouterInitMethod;

/* values of drop's init= parameter, stored in p[1] */
typedef enum { DROP_INIT_XAVIER = 0, DROP_INIT_KAIMING = 1, DROP_INIT_NORMAL = 2 } DropInitKind;

/* p[] holds the method's parameters in the order listed above (noise: p[0] = sigma; drop:
 * p[0] = frac, p[1] = DropInitKind; svd-perturb: p[0] = sigma, p[1] = drop; sparse-code:
 * p[0] = atoms, p[1] = lambda, p[2] = iters, p[3] = samples). name is the method name. */
typedef struct {
    int method; /* ExpertInitMethod */
    float p[INIT_MAX_PARAMS];
    char name[32];
} ExpertInit;

typedef struct {
    int method; /* RouterInitMethod */
    float p[INIT_MAX_PARAMS];
    char name[32];
} RouterInit;

/* "METHOD" or "METHOD:key=value,key=value"; unspecified keys keep their defaults. Unknown
 * method, unknown key or a bad/out-of-range value -> -1 with a message listing the valid
 * choices; *out is written only on success. */
int expert_init_parse(const char *spec, ExpertInit *out);
int router_init_parse(const char *spec, RouterInit *out);

/* multi-line text for --help: every method, its parameters, defaults and ranges */
const char *expert_init_help(void);
const char *router_init_help(void);

/* canonical spec with every parameter ("drop:frac=0.5,init=xavier"), for logs and grow.json;
 * returns the length snprintf would write */
int expert_init_describe(const ExpertInit *init, char *buf, size_t size);
int router_init_describe(const RouterInit *init, char *buf, size_t size);

/* the neighbour expert/row used by interpolate and svd-mix (see above) */
int init_neighbour(int source);

/* Modifies replica expert `replica` (already an exact copy of expert `source`) in place.
 * gate/up/down point at the whole layer blocks sized for n_experts (neighbours are read);
 * only the replica's slices are written. -1 on bad arguments or a failed SVD. */
int expert_init_apply(const ExpertInit *init, float *gate, float *up, float *down, int n_experts, int C, int F,
                      int source, int replica, Rng *rng);

/* Modifies router row `replica` (already a copy of row `source`) of router (n_experts, C);
 * bias (n_experts, may be NULL) is modified for the replica only. */
int router_init_apply(const RouterInit *init, float *router, float *bias, int n_experts, int C, int source,
                      int replica, Rng *rng);

#endif
