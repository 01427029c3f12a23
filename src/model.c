#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "util.h"

/* ---- parameter table ---- */

static int add_param(Model *m, int *capacity, int trainable, int ndim, int64_t d0, int64_t d1, const char *fmt, ...) {
    if (m->n_params == *capacity) {
        *capacity = *capacity ? 2 * *capacity : 64;
        m->params = xrealloc(m->params, sizeof(ParamInfo) * *capacity);
    }
    ParamInfo *p = &m->params[m->n_params];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim > 1 ? d1 : 1;
    p->numel = (size_t)d0 * (ndim > 1 ? (size_t)d1 : 1);
    p->offset = m->n_floats;
    p->trainable = trainable;
    p->decay = trainable && ndim >= 2;
    p->expert = -1;
    m->n_floats += p->numel;
    return m->n_params++;
}

/* an expert's weight: held by one rank under expert parallelism */
static int add_expert_param(Model *m, int *capacity, int e, int first, int64_t d0, int64_t d1, const char *what, int l) {
    int i = add_param(m, capacity, 1, 2, d0, d1, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, what);
    m->params[i].expert = e;
    m->params[i].sharded = m->ep_size > 1;
    return e == first ? i : -1;
}

static void build_param_table(Model *m) {
    const ModelConfig *c = &m->cfg;
    int cap = 0, C = c->d_model, hd = c->head_dim;
    m->embed = add_param(m, &cap, 1, 2, c->vocab_size, C, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        LayerParams *L = &m->layers[l];
        memset(L, 0xff, sizeof *L); /* every index -1 */
        L->is_moe = layer_is_moe(c, l);
        const char *pre = "model.layers";
        L->input_norm = add_param(m, &cap, 1, 1, C, 0, "%s.%d.input_layernorm.weight", pre, l);
        int q_width = c->n_heads * hd, kv_width = c->n_kv_heads * hd;
        L->q_proj = add_param(m, &cap, 1, 2, q_width, C, "%s.%d.self_attn.q_proj.weight", pre, l);
        if (c->attention_bias) L->q_bias = add_param(m, &cap, 1, 1, q_width, 0, "%s.%d.self_attn.q_proj.bias", pre, l);
        L->k_proj = add_param(m, &cap, 1, 2, kv_width, C, "%s.%d.self_attn.k_proj.weight", pre, l);
        if (c->attention_bias) L->k_bias = add_param(m, &cap, 1, 1, kv_width, 0, "%s.%d.self_attn.k_proj.bias", pre, l);
        L->v_proj = add_param(m, &cap, 1, 2, kv_width, C, "%s.%d.self_attn.v_proj.weight", pre, l);
        if (c->attention_bias) L->v_bias = add_param(m, &cap, 1, 1, kv_width, 0, "%s.%d.self_attn.v_proj.bias", pre, l);
        L->o_proj = add_param(m, &cap, 1, 2, C, q_width, "%s.%d.self_attn.o_proj.weight", pre, l);
        if (c->qk_norm) { /* per head (hd), or over the whole projection (OLMoE) */
            L->q_norm = add_param(m, &cap, 1, 1, c->qk_norm_full ? q_width : hd, 0, "%s.%d.self_attn.q_norm.weight", pre, l);
            L->k_norm = add_param(m, &cap, 1, 1, c->qk_norm_full ? kv_width : hd, 0, "%s.%d.self_attn.k_norm.weight", pre, l);
        }
        L->post_norm = add_param(m, &cap, 1, 1, C, 0, "%s.%d.post_attention_layernorm.weight", pre, l);
        if (!L->is_moe) {
            int I = c->intermediate_size;
            L->gate_proj = add_param(m, &cap, 1, 2, I, C, "%s.%d.mlp.gate_proj.weight", pre, l);
            L->up_proj = add_param(m, &cap, 1, 2, I, C, "%s.%d.mlp.up_proj.weight", pre, l);
            L->down_proj = add_param(m, &cap, 1, 2, C, I, "%s.%d.mlp.down_proj.weight", pre, l);
        } else {
            int E = c->n_experts, F = c->moe_intermediate_size;
            L->router = add_param(m, &cap, 1, 2, E, C, "%s.%d.mlp.gate.weight", pre, l);
            L->expert_bias = add_param(m, &cap, 0, 1, E, 0, "%s.%d.mlp.gate.e_score_correction_bias", pre, l);
            if (c->shared_expert_size > 0) { /* before the experts: they are the layer's tail (expert parallel) */
                int S = c->shared_expert_size;
                L->shared_gate = add_param(m, &cap, 1, 2, S, C, "%s.%d.mlp.shared_expert.gate_proj.weight", pre, l);
                L->shared_up = add_param(m, &cap, 1, 2, S, C, "%s.%d.mlp.shared_expert.up_proj.weight", pre, l);
                L->shared_down = add_param(m, &cap, 1, 2, C, S, "%s.%d.mlp.shared_expert.down_proj.weight", pre, l);
                L->shared_expert_gate = add_param(m, &cap, 1, 2, 1, C, "%s.%d.mlp.shared_expert_gate.weight", pre, l);
            }
            /* this rank's experts (all of them without expert parallelism), by global index */
            int first = m->first_expert, last = first + m->n_local_experts;
            for (int e = first; e < last; e++) {
                int i = add_expert_param(m, &cap, e, first, F, C, "gate_proj", l);
                if (i >= 0) L->expert_gate = i;
            }
            for (int e = first; e < last; e++) {
                int i = add_expert_param(m, &cap, e, first, F, C, "up_proj", l);
                if (i >= 0) L->expert_up = i;
            }
            for (int e = first; e < last; e++) {
                int i = add_expert_param(m, &cap, e, first, C, F, "down_proj", l);
                if (i >= 0) L->expert_down = i;
            }
        }
    }
    m->final_norm = add_param(m, &cap, 1, 1, C, 0, "model.norm.weight");
    m->lm_head = c->tie_embeddings ? m->embed : add_param(m, &cap, 1, 2, c->vocab_size, C, "lm_head.weight");
}

static void set_expert_shard(Model *m, int ep_rank, int ep_size) {
    m->ep_rank = ep_rank, m->ep_size = ep_size;
    m->n_local_experts = m->cfg.n_experts / ep_size;
    m->first_expert = ep_rank * m->n_local_experts;
}

int model_create_ep(Model *m, const ModelConfig *cfg, const Backend *be, int ep_rank, int ep_size) {
    memset(m, 0, sizeof *m);
    if (model_config_validate(cfg, "model config")) return -1;
    if (ep_size > 1) {
        if (cfg->n_experts == 0)
            return up_error("expert parallel over %d ranks: the model has no experts; expected a MoE model (num_experts > 0)", ep_size);
        if (cfg->n_experts % ep_size)
            return up_error("expert parallel: num_experts %d over %d ranks; expected a multiple of the number of ranks",
                            cfg->n_experts, ep_size);
        if (ep_size > MAX_EP_RANKS)
            return up_error("expert parallel over %d ranks; expected at most %d", ep_size, MAX_EP_RANKS);
        if (!be->runs_on_host)
            return up_error("expert parallel runs on the CPU backend (%s given); expected --device cpu", be->name);
    }
    m->cfg = *cfg;
    m->be = be;
    m->loss_scale = 1.0f;
    set_expert_shard(m, ep_rank, ep_size);
    build_param_table(m);
    size_t bytes = m->n_floats * sizeof(float);
    m->param_mem = be->alloc(bytes);
    m->grad_mem = be->alloc(bytes);
    m->adam_m = be->alloc(bytes);
    m->adam_v = be->alloc(bytes);
    if (ep_size > 1) {
        m->ep = xcalloc((size_t)cfg->n_layers, sizeof(LayerEp));
        for (int l = 0; l < cfg->n_layers; l++) ep_exchange_init(&m->ep[l].ex, ep_size, m->n_local_experts);
    }
    return 0;
}

int model_create(Model *m, const ModelConfig *cfg, const Backend *be) { return model_create_ep(m, cfg, be, 0, 1); }

int model_full_table(const ModelConfig *cfg, ParamInfo **out) {
    Model t;
    memset(&t, 0, sizeof t);
    t.cfg = *cfg;
    set_expert_shard(&t, 0, 1);
    build_param_table(&t);
    *out = t.params;
    return t.n_params;
}

int model_param_owner(const Model *m, const ParamInfo *p) {
    return p->expert < 0 || m->ep_size <= 1 ? -1 : p->expert / m->n_local_experts;
}

int model_local_param(const Model *m, const ParamInfo *p, int *cursor) {
    if (*cursor >= m->n_params || strcmp(m->params[*cursor].name, p->name)) return -1;
    return (*cursor)++;
}

size_t model_max_numel(const ParamInfo *table, int n) {
    size_t max = 0;
    for (int i = 0; i < n; i++) max = table[i].numel > max ? table[i].numel : max;
    return max;
}

int model_sharded_run(const Model *m, int i, size_t *offset, size_t *count) {
    int j = i + 1;
    while (j < m->n_params && m->params[j].sharded == m->params[i].sharded) j++;
    *offset = m->params[i].offset;
    *count = m->params[j - 1].offset + m->params[j - 1].numel - *offset;
    return j;
}

int model_find_param(const Model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) return i;
    return -1;
}

float *model_param(const Model *m, int index) { return m->param_mem + m->params[index].offset; }
float *model_grad(const Model *m, int index) { return m->grad_mem + m->params[index].offset; }

/* N(0, std) matrices, with the residual-branch outputs (o_proj, down projections) scaled by
 * 1/sqrt(2 L) as in GPT-2; norms 1; q/k/v and balancing biases 0. */
void model_init_weights(Model *m, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    float *host = xmalloc(m->n_floats * sizeof(float));
    float residual_scale = 1.0f / sqrtf(2.0f * m->cfg.n_layers);
    /* the random stream runs over the whole model's table, so that an expert parallel rank
     * draws its experts' weights as one process holding every expert would */
    ParamInfo *full;
    int n_full = model_full_table(&m->cfg, &full), cursor = 0;
    float *elsewhere = m->ep_size > 1 ? xmalloc(model_max_numel(full, n_full) * sizeof(float)) : NULL;
    for (int i = 0; i < n_full; i++) {
        ParamInfo *p = &full[i];
        int here = model_local_param(m, p, &cursor);
        float *w = here >= 0 ? host + m->params[here].offset : elsewhere;
        if (!p->trainable) {
            memset(w, 0, p->numel * sizeof(float));
        } else if (p->ndim == 1) {
            float value = str_ends_with(p->name, ".bias") ? 0.0f : 1.0f; /* biases 0, norms 1 */
            for (size_t k = 0; k < p->numel; k++) w[k] = value;
        } else {
            float std = m->cfg.init_std;
            if (strstr(p->name, "o_proj") || strstr(p->name, "down_proj")) std *= residual_scale;
            for (size_t k = 0; k < p->numel; k++) w[k] = std * rng_normal(&rng);
        }
    }
    free(elsewhere);
    free(full);
    m->be->upload(m->param_mem, host, m->n_floats * sizeof(float));
    free(host);
    m->be->zero(m->adam_m, m->n_floats * sizeof(float));
    m->be->zero(m->adam_v, m->n_floats * sizeof(float));
    m->step = 0;
}

/* ---- activations: laid out by one function run twice (measure, then carve) ---- */

typedef struct {
    char *base;
    size_t used;
} Arena;

static void *carve(Arena *a, size_t bytes) {
    void *p = a->base ? a->base + a->used : NULL;
    a->used += (bytes + 63) & ~(size_t)63;
    return p;
}

#define CARVE_F(a, n) ((float *)carve((a), sizeof(float) * (size_t)(n)))
#define CARVE_I(a, n) ((int32_t *)carve((a), sizeof(int32_t) * (size_t)(n)))

static void layout_activations(Model *m, Arena *a) {
    const ModelConfig *c = &m->cfg;
    size_t N = (size_t)m->B * m->T, C = c->d_model, hd = c->head_dim, H = c->n_heads, KV = c->n_kv_heads;
    size_t E = c->n_experts, K = c->top_k, F = c->moe_intermediate_size, I = c->intermediate_size;
    size_t S = c->shared_expert_size, max_ffn = 0;
    for (int l = 0; l < c->n_layers; l++) {
        LayerActs *A = &m->acts[l];
        A->x_in = CARVE_F(a, N * C);
        A->ln1 = CARVE_F(a, N * C);
        A->ln1_rstd = CARVE_F(a, N);
        A->q_pre = CARVE_F(a, N * H * hd);
        A->k_pre = CARVE_F(a, N * KV * hd);
        A->q_rstd = CARVE_F(a, N * H);
        A->k_rstd = CARVE_F(a, N * KV);
        A->q = CARVE_F(a, N * H * hd);
        A->k = CARVE_F(a, N * KV * hd);
        A->v = CARVE_F(a, N * KV * hd);
        if (c->clip_qkv > 0) { /* the clamp's inputs, for its backward */
            A->q_unclipped = c->qk_norm ? CARVE_F(a, N * H * hd) : A->q_pre;
            A->k_unclipped = c->qk_norm ? CARVE_F(a, N * KV * hd) : A->k_pre;
            A->v_unclipped = CARVE_F(a, N * KV * hd);
        }
        A->att_lse = CARVE_F(a, (size_t)m->B * H * m->T);
        A->att_out = CARVE_F(a, N * H * hd);
        A->x_mid = CARVE_F(a, N * C);
        A->ln2 = CARVE_F(a, N * C);
        A->ln2_rstd = CARVE_F(a, N);
        A->ffn_out = CARVE_F(a, N * C);
        if (!m->layers[l].is_moe) {
            A->ffn_gate = CARVE_F(a, N * I);
            A->ffn_up = CARVE_F(a, N * I);
            A->ffn_h = CARVE_F(a, N * I);
            max_ffn = I > max_ffn ? I : max_ffn;
        } else {
            A->router_logits = CARVE_F(a, N * E);
            A->router_probs = CARVE_F(a, N * E);
            A->topk = CARVE_I(a, N * K);
            A->loads = CARVE_I(a, E);
            A->gates = CARVE_F(a, N * K);
            A->offsets = CARVE_I(a, E + 1);
            A->token_of = CARVE_I(a, N * K);
            A->position_of = CARVE_I(a, N * K);
            A->xg = CARVE_F(a, N * K * C);
            if (m->ep_size <= 1) { /* expert parallel: the expert activations live in m->ep */
                A->eg = CARVE_F(a, N * K * F);
                A->eu = CARVE_F(a, N * K * F);
                A->eh = CARVE_F(a, N * K * F);
            }
            A->yg = CARVE_F(a, N * K * C);
            if (S) {
                A->sh_gate = CARVE_F(a, N * S);
                A->sh_up = CARVE_F(a, N * S);
                A->sh_h = CARVE_F(a, N * S);
                A->sh_y = CARVE_F(a, N * C);
                A->sh_logit = CARVE_F(a, N);
                max_ffn = S > max_ffn ? S : max_ffn;
            }
        }
    }
    m->x_final = CARVE_F(a, N * C);
    m->lnf = CARVE_F(a, N * C);
    m->lnf_rstd = CARVE_F(a, N);
    m->logits = CARVE_F(a, N * c->vocab_size);
    m->losses = CARVE_F(a, N);
    m->inputs = CARVE_I(a, N);
    m->targets = CARVE_I(a, N);
    m->d_resid = CARVE_F(a, N * C);
    m->d_ln = CARVE_F(a, N * C);
    m->d_q = CARVE_F(a, N * H * hd);
    m->d_k = CARVE_F(a, N * KV * hd);
    m->d_v = CARVE_F(a, N * KV * hd);
    m->d_att = CARVE_F(a, N * H * hd);
    m->d_ffn_a = CARVE_F(a, N * (max_ffn > KV * hd ? max_ffn : KV * hd));
    m->d_ffn_b = CARVE_F(a, N * max_ffn);
    m->d_ffn_c = CARVE_F(a, N * max_ffn);
    if (E) {
        m->d_router = CARVE_F(a, N * E);
        m->d_gates = CARVE_F(a, N * K);
        m->d_xg = CARVE_F(a, N * K * C);
        m->d_yg = CARVE_F(a, N * K * C);
        if (m->ep_size <= 1) {
            m->d_eg = CARVE_F(a, N * K * F);
            m->d_eu = CARVE_F(a, N * K * F);
            m->d_eh = CARVE_F(a, N * K * F);
        }
        if (S) {
            m->d_sh_y = CARVE_F(a, N * C);
            m->d_sh_logit = CARVE_F(a, N);
        }
    }
}


void model_set_batch(Model *m, int B, int T) {
    if (m->B == B && m->T == T) return;
    if (m->acts[0].x_in) m->be->free(m->acts[0].x_in); /* the first carve is the block's base */
    m->B = B, m->T = T;
    Arena a = {0};
    layout_activations(m, &a);
    a.base = m->be->alloc(a.used);
    m->act_bytes = a.used;
    free(m->host_tokens), free(m->host_losses);
    m->host_tokens = xmalloc(sizeof(int32_t) * 2 * (size_t)B * T);
    m->host_losses = xmalloc(sizeof(float) * (size_t)B * T);
    a.used = 0;
    layout_activations(m, &a);
}

void model_free(Model *m) {
    const Backend *be = m->be;
    if (!be) return;
    if (m->acts[0].x_in) be->free(m->acts[0].x_in);
    be->free(m->param_mem);
    be->free(m->grad_mem);
    be->free(m->adam_m);
    be->free(m->adam_v);
    free(m->params);
    free(m->host_tokens), free(m->host_losses);
    if (m->ep) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            LayerEp *X = &m->ep[l];
            ep_exchange_free(&X->ex);
            free(X->xe), free(X->eg), free(X->eu), free(X->eh);
        }
        free(m->ep);
        free(m->ep_scratch);
    }
    memset(m, 0, sizeof *m);
}

/* ---- forward ---- */

#define P(i) model_param(m, (i))
#define G(i) model_grad(m, (i))

/* ---- expert parallel: this rank's experts on the rows of every rank (CPU backend, host
 * memory); the exchange itself is dist/expert_parallel's ---- */

static void ep_reserve(Model *m, LayerEp *X, int rows) {
    size_t C = m->cfg.d_model, F = m->cfg.moe_intermediate_size;
    if (rows > X->cap) {
        int cap = rows + rows / 4 + 16;
        free(X->xe), free(X->eg), free(X->eu), free(X->eh);
        X->xe = xmalloc(sizeof(float) * cap * C);
        X->eg = xmalloc(sizeof(float) * cap * F), X->eu = xmalloc(sizeof(float) * cap * F);
        X->eh = xmalloc(sizeof(float) * cap * F);
        X->cap = cap;
    }
    if ((size_t)X->cap > m->ep_scratch_cap) {
        free(m->ep_scratch);
        m->ep_scratch_cap = X->cap;
        m->ep_scratch = xmalloc(sizeof(float) * m->ep_scratch_cap * 3 * (C + F));
    }
}

/* scratch: three (cap, C) row buffers, then three (cap, F) */
static float *ep_rows(const Model *m, int i) { return m->ep_scratch + (size_t)i * m->ep_scratch_cap * m->cfg.d_model; }
static float *ep_frows(const Model *m, int i) {
    return m->ep_scratch + m->ep_scratch_cap * (3 * (size_t)m->cfg.d_model + (size_t)i * m->cfg.moe_intermediate_size);
}

static void ep_forward(Model *m, int l) {
    const Backend *be = m->be;
    const LayerParams *L = &m->layers[l];
    LayerActs *A = &m->acts[l];
    LayerEp *X = &m->ep[l];
    int El = m->n_local_experts, C = m->cfg.d_model, F = m->cfg.moe_intermediate_size;
    ep_exchange_plan(&X->ex, A->loads, A->offsets, C > F ? C : F, (size_t)m->B * m->T * m->cfg.top_k, C);
    int rows = X->ex.rows;
    ep_reserve(m, X, rows);
    float *grouped = ep_rows(m, 0), *ye = ep_rows(m, 1);
    ep_exchange_rows(&X->ex, A->offsets, A->xg, grouped, C, 1, "the expert parallel dispatch");
    be->moe_gather_forward(X->xe, grouped, X->ex.perm, rows, C);
    be->experts_forward(ye, X->eg, X->eu, X->eh, X->xe, X->ex.offsets, P(L->expert_gate), P(L->expert_up),
                        P(L->expert_down), El, C, F);
    be->moe_gather_forward(grouped, ye, X->ex.inv, rows, C);
    ep_exchange_rows(&X->ex, A->offsets, A->yg, grouped, C, 0, "the expert parallel combine");
}

/* d_yg (local layout) -> d_xg (local layout), expert weight gradients of this rank's experts */
static void ep_backward(Model *m, int l) {
    const Backend *be = m->be;
    const LayerParams *L = &m->layers[l];
    LayerActs *A = &m->acts[l];
    LayerEp *X = &m->ep[l];
    int El = m->n_local_experts, C = m->cfg.d_model, F = m->cfg.moe_intermediate_size, rows = X->ex.rows;
    float *grouped = ep_rows(m, 0), *dye = ep_rows(m, 1), *dxe = ep_rows(m, 2);
    ep_exchange_rows(&X->ex, A->offsets, m->d_yg, grouped, C, 1, "the expert parallel backward dispatch");
    be->moe_gather_forward(dye, grouped, X->ex.perm, rows, C);
    be->experts_backward(dxe, G(L->expert_gate), G(L->expert_up), G(L->expert_down), ep_frows(m, 0), ep_frows(m, 1),
                         ep_frows(m, 2), dye, X->eg, X->eu, X->eh, X->xe, X->ex.offsets, P(L->expert_gate),
                         P(L->expert_up), P(L->expert_down), El, C, F);
    be->moe_gather_forward(grouped, dxe, X->ex.inv, rows, C);
    ep_exchange_rows(&X->ex, A->offsets, m->d_xg, grouped, C, 0, "the expert parallel backward combine");
}

/* ---- layer pieces shared by forward and backward ---- */

/* SwiGLU MLP (dense FFN, shared expert): out (N,C) = (silu(x Wg^T) * (x Wu^T)) Wd^T for x (N,C),
 * width F; gate, up, h (N,F) kept for the backward */
static void swiglu_mlp_forward(Model *m, float *out, float *gate, float *up, float *h, const float *x, int wg, int wu,
                               int wd, int N, int F) {
    const Backend *be = m->be;
    int C = m->cfg.d_model;
    be->matmul_forward(gate, x, P(wg), N, C, F);
    be->matmul_forward(up, x, P(wu), N, C, F);
    be->swiglu_forward(h, gate, up, (size_t)N * F);
    be->matmul_forward(out, h, P(wd), N, F, C);
}

/* dx (N,C) += d x from dout (N,C); weight gradients accumulate; scratch d_ffn_a/b/c */
static void swiglu_mlp_backward(Model *m, float *dx, const float *dout, const float *gate, const float *up,
                                const float *h, const float *x, int wg, int wu, int wd, int N, int F) {
    const Backend *be = m->be;
    int C = m->cfg.d_model;
    size_t NF = (size_t)N * F;
    be->zero(m->d_ffn_c, NF * sizeof(float));
    be->matmul_backward(m->d_ffn_c, G(wd), dout, h, P(wd), N, F, C);
    be->swiglu_backward(m->d_ffn_a, m->d_ffn_b, m->d_ffn_c, gate, up, NF);
    be->matmul_backward(dx, G(wg), m->d_ffn_a, x, P(wg), N, C, F);
    be->matmul_backward(dx, G(wu), m->d_ffn_b, x, P(wu), N, C, F);
}

/* q, k, v of layer l from ln1: projections (+ biases), q/k norm (per head or over the whole
 * projection), clamp to +-clip_qkv, RoPE on q and k (HF order: OLMoE clamps after the norm) */
static void qkv_forward(Model *m, int l) {
    const Backend *be = m->be;
    const ModelConfig *c = &m->cfg;
    const LayerParams *L = &m->layers[l];
    LayerActs *A = &m->acts[l];
    int B = m->B, T = m->T, N = B * T, C = c->d_model, hd = c->head_dim, H = c->n_heads, KV = c->n_kv_heads;
    int clip = c->clip_qkv > 0;
    float *v_proj = clip ? A->v_unclipped : A->v;
    be->matmul_forward(A->q_pre, A->ln1, P(L->q_proj), N, C, H * hd);
    be->matmul_forward(A->k_pre, A->ln1, P(L->k_proj), N, C, KV * hd);
    be->matmul_forward(v_proj, A->ln1, P(L->v_proj), N, C, KV * hd);
    if (c->attention_bias) {
        be->bias_add_forward(A->q_pre, P(L->q_bias), N, H * hd);
        be->bias_add_forward(A->k_pre, P(L->k_bias), N, KV * hd);
        be->bias_add_forward(v_proj, P(L->v_bias), N, KV * hd);
    }
    if (c->qk_norm) { /* rows of one head (hd), or of the whole projection */
        int full = c->qk_norm_full;
        be->rmsnorm_forward(clip ? A->q_unclipped : A->q, A->q_rstd, A->q_pre, P(L->q_norm), full ? N : N * H,
                            full ? H * hd : hd, c->rms_norm_eps);
        be->rmsnorm_forward(clip ? A->k_unclipped : A->k, A->k_rstd, A->k_pre, P(L->k_norm), full ? N : N * KV,
                            full ? KV * hd : hd, c->rms_norm_eps);
    } else if (!clip) {
        be->copy(A->q, A->q_pre, sizeof(float) * N * H * hd);
        be->copy(A->k, A->k_pre, sizeof(float) * N * KV * hd);
    }
    if (clip) {
        be->clamp_forward(A->q, A->q_unclipped, (size_t)N * H * hd, c->clip_qkv);
        be->clamp_forward(A->k, A->k_unclipped, (size_t)N * KV * hd, c->clip_qkv);
        be->clamp_forward(A->v, A->v_unclipped, (size_t)N * KV * hd, c->clip_qkv);
    }
    be->rope_forward(A->q, B, T, H, hd, c->rope_theta);
    be->rope_forward(A->k, B, T, KV, hd, c->rope_theta);
}

/* From d q, d k, d v (m->d_q, d_k, d_v, after attention_backward) to m->d_ln (overwrite) and
 * the gradients of the projections, biases and q/k norms of layer l */
static void qkv_backward(Model *m, int l) {
    const Backend *be = m->be;
    const ModelConfig *c = &m->cfg;
    const LayerParams *L = &m->layers[l];
    const LayerActs *A = &m->acts[l];
    int B = m->B, T = m->T, N = B * T, C = c->d_model, hd = c->head_dim, H = c->n_heads, KV = c->n_kv_heads;
    size_t nq = (size_t)N * H * hd, nkv = (size_t)N * KV * hd;
    be->rope_backward(m->d_q, B, T, H, hd, c->rope_theta);
    be->rope_backward(m->d_k, B, T, KV, hd, c->rope_theta);
    if (c->clip_qkv > 0) { /* in place: zero where clamped */
        be->clamp_backward(m->d_q, m->d_q, A->q_unclipped, nq, c->clip_qkv);
        be->clamp_backward(m->d_k, m->d_k, A->k_unclipped, nkv, c->clip_qkv);
        be->clamp_backward(m->d_v, m->d_v, A->v_unclipped, nkv, c->clip_qkv);
    }
    float *dq = m->d_q, *dk = m->d_k;
    if (c->qk_norm) {
        int full = c->qk_norm_full;
        /* d_att is free again: it receives d q_pre; d_ffn_a (>= N*KV*hd) receives d k_pre */
        be->zero(m->d_att, nq * sizeof(float));
        be->rmsnorm_backward(m->d_att, G(L->q_norm), m->d_q, A->q_pre, P(L->q_norm), A->q_rstd, full ? N : N * H,
                             full ? H * hd : hd);
        be->zero(m->d_ffn_a, nkv * sizeof(float));
        be->rmsnorm_backward(m->d_ffn_a, G(L->k_norm), m->d_k, A->k_pre, P(L->k_norm), A->k_rstd, full ? N : N * KV,
                             full ? KV * hd : hd);
        dq = m->d_att, dk = m->d_ffn_a;
    }
    if (c->attention_bias) {
        be->bias_add_backward(G(L->q_bias), dq, N, H * hd);
        be->bias_add_backward(G(L->k_bias), dk, N, KV * hd);
        be->bias_add_backward(G(L->v_bias), m->d_v, N, KV * hd);
    }
    be->zero(m->d_ln, (size_t)N * C * sizeof(float));
    be->matmul_backward(m->d_ln, G(L->q_proj), dq, A->ln1, P(L->q_proj), N, C, H * hd);
    be->matmul_backward(m->d_ln, G(L->k_proj), dk, A->ln1, P(L->k_proj), N, C, KV * hd);
    be->matmul_backward(m->d_ln, G(L->v_proj), m->d_v, A->ln1, P(L->v_proj), N, C, KV * hd);
}

/* Qwen2-MoE's shared expert: ffn_out (N,C) += sigmoid(ln2 . w_sg) * shared_expert(ln2) */
static void shared_expert_forward(Model *m, int l) {
    const LayerParams *L = &m->layers[l];
    LayerActs *A = &m->acts[l];
    int N = m->B * m->T, C = m->cfg.d_model;
    swiglu_mlp_forward(m, A->sh_y, A->sh_gate, A->sh_up, A->sh_h, A->ln2, L->shared_gate, L->shared_up, L->shared_down,
                       N, m->cfg.shared_expert_size);
    m->be->matmul_forward(A->sh_logit, A->ln2, P(L->shared_expert_gate), N, C, 1);
    m->be->sigmoid_gate_forward(A->ffn_out, A->sh_y, A->sh_logit, N, C);
}

/* m->d_ln += d ln2 of the shared expert and its gate, from d ffn_out (m->d_resid) */
static void shared_expert_backward(Model *m, int l) {
    const LayerParams *L = &m->layers[l];
    const LayerActs *A = &m->acts[l];
    int N = m->B * m->T, C = m->cfg.d_model;
    m->be->sigmoid_gate_backward(m->d_sh_y, m->d_sh_logit, m->d_resid, A->sh_y, A->sh_logit, N, C);
    m->be->matmul_backward(m->d_ln, G(L->shared_expert_gate), m->d_sh_logit, A->ln2, P(L->shared_expert_gate), N, C, 1);
    swiglu_mlp_backward(m, m->d_ln, m->d_sh_y, A->sh_gate, A->sh_up, A->sh_h, A->ln2, L->shared_gate, L->shared_up,
                        L->shared_down, N, m->cfg.shared_expert_size);
}

static void forward_body(Model *m, float aux_coef, float z_coef) {
    const Backend *be = m->be;
    const ModelConfig *c = &m->cfg;
    int B = m->B, T = m->T, N = B * T, C = c->d_model, hd = c->head_dim, H = c->n_heads, KV = c->n_kv_heads;
    int E = c->n_experts, K = c->top_k, F = c->moe_intermediate_size, I = c->intermediate_size;
    double aux = 0;
    be->embedding_forward(m->acts[0].x_in, m->inputs, P(m->embed), N, C);
    for (int l = 0; l < c->n_layers; l++) {
        LayerParams *L = &m->layers[l];
        LayerActs *A = &m->acts[l];
        float *out = l + 1 < c->n_layers ? m->acts[l + 1].x_in : m->x_final;
        /* attention block */
        be->rmsnorm_forward(A->ln1, A->ln1_rstd, A->x_in, P(L->input_norm), N, C, c->rms_norm_eps);
        qkv_forward(m, l);
        be->attention_forward(A->att_out, A->att_lse, A->q, A->k, A->v, B, T, H, KV, hd);
        be->matmul_forward(A->x_mid, A->att_out, P(L->o_proj), N, H * hd, C);
        be->add(A->x_mid, A->x_mid, A->x_in, (size_t)N * C);
        /* feed-forward block */
        be->rmsnorm_forward(A->ln2, A->ln2_rstd, A->x_mid, P(L->post_norm), N, C, c->rms_norm_eps);
        if (!L->is_moe) {
            swiglu_mlp_forward(m, A->ffn_out, A->ffn_gate, A->ffn_up, A->ffn_h, A->ln2, L->gate_proj, L->up_proj,
                               L->down_proj, N, I);
        } else {
            be->matmul_forward(A->router_logits, A->ln2, P(L->router), N, C, E);
            aux += be->router_forward(A->router_probs, A->topk, A->gates, A->loads, A->router_logits,
                                      P(L->expert_bias), N, E, K, c->norm_topk_prob, aux_coef, z_coef);
            be->moe_permute(A->offsets, A->token_of, A->position_of, A->topk, A->loads, N, E, K);
            be->moe_gather_forward(A->xg, A->ln2, A->token_of, N * K, C);
            if (m->ep_size > 1) ep_forward(m, l);
            else be->experts_forward(A->yg, A->eg, A->eu, A->eh, A->xg, A->offsets, P(L->expert_gate), P(L->expert_up),
                                     P(L->expert_down), E, C, F);
            be->moe_combine_forward(A->ffn_out, A->yg, A->gates, A->position_of, N, K, C);
            if (c->shared_expert_size > 0) shared_expert_forward(m, l);
        }
        be->add(out, A->x_mid, A->ffn_out, (size_t)N * C);
    }
    be->rmsnorm_forward(m->lnf, m->lnf_rstd, m->x_final, P(m->final_norm), N, C, c->rms_norm_eps);
    be->matmul_forward(m->logits, m->lnf, P(m->lm_head), N, C, c->vocab_size);
    m->last_aux_loss = aux;
}

double model_forward(Model *m, const int32_t *tokens, float aux_coef, float z_coef) {
    int B = m->B, T = m->T, N = B * T;
    /* host staging, sized with the activations (no allocation per step) */
    int32_t *inputs = m->host_tokens, *targets = m->host_tokens + N;
    float *losses = m->host_losses;
    for (int b = 0; b < B; b++) {
        memcpy(inputs + (size_t)b * T, tokens + (size_t)b * (T + 1), sizeof(int32_t) * T);
        memcpy(targets + (size_t)b * T, tokens + (size_t)b * (T + 1) + 1, sizeof(int32_t) * T);
    }
    m->be->upload(m->inputs, inputs, sizeof(int32_t) * N);
    m->be->upload(m->targets, targets, sizeof(int32_t) * N);
    forward_body(m, aux_coef, z_coef);
    m->be->crossentropy_forward(m->losses, m->logits, m->targets, N, m->cfg.vocab_size);
    m->be->download(losses, m->losses, sizeof(float) * N);
    double sum = 0;
    for (int i = 0; i < N; i++) sum += losses[i];
    m->last_ce_loss = sum / N;
    return m->last_ce_loss + m->last_aux_loss;
}

void model_forward_logits(Model *m, const int32_t *inputs) {
    m->be->upload(m->inputs, inputs, sizeof(int32_t) * m->B * m->T);
    forward_body(m, 0, 0);
}

void model_zero_grad(Model *m) { m->be->zero(m->grad_mem, m->n_floats * sizeof(float)); }

/* ---- backward ---- */

/* data parallel: the gradients of [offset, end) are final (experts: this rank's expert shard) */
static void grad_ready(Model *m, size_t offset, size_t end, int experts) {
    if (m->grad_ready && end > offset) m->grad_ready(m->grad_ready_ctx, offset, end - offset, experts);
}

/* first float of layer l's parameters in the buffers (the table is in layer order) */
static size_t layer_begin(const Model *m, int l) {
    return l < m->cfg.n_layers ? m->params[m->layers[l].input_norm].offset : m->params[m->final_norm].offset;
}

void model_backward(Model *m, float aux_coef, float z_coef) {
    const Backend *be = m->be;
    const ModelConfig *c = &m->cfg;
    int B = m->B, T = m->T, N = B * T, C = c->d_model, hd = c->head_dim, H = c->n_heads, KV = c->n_kv_heads;
    int E = c->n_experts, K = c->top_k, F = c->moe_intermediate_size, I = c->intermediate_size, V = c->vocab_size;
    size_t NC = (size_t)N * C * sizeof(float);
    aux_coef *= m->loss_scale, z_coef *= m->loss_scale;

    float *dlogits = m->logits; /* in place: the logits are not needed after this */
    be->crossentropy_backward(dlogits, m->logits, m->targets, N, V, m->loss_scale / N);
    be->zero(m->d_ln, NC);
    be->matmul_backward(m->d_ln, G(m->lm_head), dlogits, m->lnf, P(m->lm_head), N, C, V);
    be->zero(m->d_resid, NC);
    be->rmsnorm_backward(m->d_resid, G(m->final_norm), m->d_ln, m->x_final, P(m->final_norm), m->lnf_rstd, N, C);
    grad_ready(m, layer_begin(m, c->n_layers), m->n_floats, 0); /* final norm (+ untied head) */

    for (int l = c->n_layers - 1; l >= 0; l--) {
        LayerParams *L = &m->layers[l];
        LayerActs *A = &m->acts[l];
        /* out = x_mid + ffn(ln2(x_mid)); d_resid holds d out */
        be->zero(m->d_ln, NC);
        if (!L->is_moe) {
            swiglu_mlp_backward(m, m->d_ln, m->d_resid, A->ffn_gate, A->ffn_up, A->ffn_h, A->ln2, L->gate_proj,
                                L->up_proj, L->down_proj, N, I);
        } else {
            if (c->shared_expert_size > 0) shared_expert_backward(m, l);
            be->moe_combine_backward(m->d_yg, m->d_gates, m->d_resid, A->yg, A->gates, A->position_of, N, K, C);
            if (m->ep_size > 1) {
                ep_backward(m, l);
                /* expert parallel: this rank's experts (the tail of the layer's range) are final;
                 * their replicas in other expert groups, if any, sum them */
                grad_ready(m, m->params[L->expert_gate].offset, layer_begin(m, l + 1), 1);
            }
            else be->experts_backward(m->d_xg, G(L->expert_gate), G(L->expert_up), G(L->expert_down), m->d_eg, m->d_eu,
                                      m->d_eh, m->d_yg, A->eg, A->eu, A->eh, A->xg, A->offsets, P(L->expert_gate),
                                      P(L->expert_up), P(L->expert_down), E, C, F);
            be->moe_gather_backward(m->d_ln, m->d_xg, A->position_of, N, K, C);
            be->router_backward(m->d_router, m->d_gates, A->router_probs, A->topk, A->router_logits, A->loads, N, E,
                                K, c->norm_topk_prob, aux_coef, z_coef);
            be->matmul_backward(m->d_ln, G(L->router), m->d_router, A->ln2, P(L->router), N, C, E);
        }
        be->rmsnorm_backward(m->d_resid, G(L->post_norm), m->d_ln, A->x_mid, P(L->post_norm), A->ln2_rstd, N, C);

        /* x_mid = x_in + o_proj(attention(ln1(x_in))); d_resid holds d x_mid */
        be->zero(m->d_att, (size_t)N * H * hd * sizeof(float));
        be->matmul_backward(m->d_att, G(L->o_proj), m->d_resid, A->att_out, P(L->o_proj), N, H * hd, C);
        be->attention_backward(m->d_q, m->d_k, m->d_v, m->d_att, A->att_lse, A->q, A->k, A->v, B, T, H, KV, hd);
        qkv_backward(m, l);
        be->rmsnorm_backward(m->d_resid, G(L->input_norm), m->d_ln, A->x_in, P(L->input_norm), A->ln1_rstd, N, C);
        /* expert parallel: the experts (the tail of the layer's range) went above */
        grad_ready(m, layer_begin(m, l), m->ep_size > 1 && L->is_moe ? m->params[L->expert_gate].offset : layer_begin(m, l + 1), 0);
    }
    be->embedding_backward(G(m->embed), m->d_resid, m->inputs, N, C, V);
    grad_ready(m, 0, layer_begin(m, 0), 0); /* the embedding (and a tied head) */
}

/* ---- optimizer ---- */

double model_grad_norm(const Model *m) {
    if (m->ep_size <= 1) return sqrt(m->be->sum_squares(m->grad_mem, m->n_floats));
    /* expert parallel: replicated tensors count once, each rank's experts are summed over ranks */
    double ss[2] = {0, 0};
    for (int i = 0, j; i < m->n_params; i = j) {
        size_t off, n;
        j = model_sharded_run(m, i, &off, &n);
        ss[m->params[i].sharded] += m->be->sum_squares(m->grad_mem + off, n);
    }
    dist_sum_doubles_ep(&ss[1], 1, "the expert gradient norm"); /* over the expert group */
    return sqrt(ss[0] + ss[1]);
}

double model_optimizer_step(Model *m, const TrainConfig *t, float lr) {
    double norm = model_grad_norm(m);
    model_optimizer_step_with_norm(m, t, lr, norm);
    return norm;
}

void model_optimizer_step_with_norm(Model *m, const TrainConfig *t, float lr, double norm) {
    /* torch.nn.utils.clip_grad_norm_: scale = min(1, max_norm / (norm + 1e-6)) */
    float scale = 1.0f;
    if (t->grad_clip > 0 && isfinite(norm)) {
        double s = t->grad_clip / (norm + 1e-6);
        scale = s < 1.0 ? (float)s : 1.0f;
    }
    m->step++;
    /* one update per run of adjacent tensors with the same decay setting */
    for (int i = 0; i < m->n_params;) {
        int j = i + 1;
        if (!m->params[i].trainable) {
            i = j;
            continue;
        }
        while (j < m->n_params && m->params[j].trainable && m->params[j].decay == m->params[i].decay) j++;
        size_t off = m->params[i].offset, n = m->params[j - 1].offset + m->params[j - 1].numel - off;
        m->be->adamw_update(m->param_mem + off, m->grad_mem + off, m->adam_m + off, m->adam_v + off, n, lr, t->beta1,
                            t->beta2, t->adam_eps, m->params[i].decay ? t->weight_decay : 0.0f, scale, m->step);
        i = j;
    }
    if (t->bias_update_rate > 0)
        for (int l = 0; l < m->cfg.n_layers; l++)
            if (m->layers[l].is_moe)
                m->be->balance_bias_update(P(m->layers[l].expert_bias), m->acts[l].loads, m->cfg.n_experts,
                                           t->bias_update_rate);
}

/* ---- locating non-finite values (error messages) ---- */

static int tensor_nonfinite(const Model *m, const float *x, size_t n) { return !isfinite(m->be->sum_squares(x, n)); }

static int find_nonfinite_param(const Model *m, const float *mem, int backward, char *out, size_t cap) {
    int count = 0;
    if (cap) out[0] = 0;
    for (int k = 0; k < m->n_params; k++) {
        int i = backward ? m->n_params - 1 - k : k;
        if (!tensor_nonfinite(m, mem + m->params[i].offset, m->params[i].numel)) continue;
        if (count++ == 0) snprintf(out, cap, "%s", m->params[i].name);
    }
    return count;
}

int model_find_nonfinite_weight(const Model *m, char *out, size_t cap) {
    return find_nonfinite_param(m, m->param_mem, 0, out, cap);
}

int model_find_nonfinite_grad(const Model *m, char *out, size_t cap) {
    return find_nonfinite_param(m, m->grad_mem, 1, out, cap);
}

int model_find_nonfinite_activation(const Model *m, char *out, size_t cap) {
    const ModelConfig *c = &m->cfg;
    size_t N = (size_t)m->B * m->T, C = c->d_model, HD = (size_t)c->n_heads * c->head_dim;
    int count = 0;
    if (cap) out[0] = 0;
#define ACT(ptr, n, ...)                                                                                               \
    do {                                                                                                               \
        if (tensor_nonfinite(m, (ptr), (n)) && count++ == 0) snprintf(out, cap, __VA_ARGS__);                         \
    } while (0)
    ACT(m->acts[0].x_in, N * C, "token embeddings");
    for (int l = 0; l < c->n_layers; l++) {
        const LayerActs *A = &m->acts[l];
        ACT(A->ln1, N * C, "layer %d attention input (RMSNorm)", l);
        ACT(A->att_out, N * HD, "layer %d attention output", l);
        ACT(A->x_mid, N * C, "layer %d residual after attention", l);
        if (m->layers[l].is_moe) ACT(A->router_logits, N * c->n_experts, "layer %d router logits", l);
        if (A->sh_y) ACT(A->sh_y, N * C, "layer %d shared expert output", l);
        ACT(A->ffn_out, N * C, "layer %d %s output", l, m->layers[l].is_moe ? "MoE" : "FFN");
    }
    ACT(m->lnf, N * C, "final RMSNorm");
    ACT(m->logits, N * c->vocab_size, "logits");
#undef ACT
    return count;
}

void model_layer_loads(const Model *m, int layer, int32_t *loads) {
    m->be->download(loads, m->acts[layer].loads, sizeof(int32_t) * m->cfg.n_experts);
}

void model_layer_topk(const Model *m, int layer, int32_t *topk) {
    m->be->download(topk, m->acts[layer].topk, sizeof(int32_t) * (size_t)m->B * m->T * m->cfg.top_k);
}

void model_moe_topk(const Model *m, int32_t *topk) {
    size_t NK = (size_t)m->B * m->T * m->cfg.top_k;
    for (int l = 0, q = 0; l < m->cfg.n_layers; l++)
        if (m->layers[l].is_moe) model_layer_topk(m, l, topk + NK * q++);
}

float *model_balance_bias_copy(const Model *m, double *largest) {
    size_t n = (size_t)model_config_n_moe_layers(&m->cfg) * m->cfg.n_experts;
    float *bias = n ? xmalloc(n * sizeof(float)) : NULL;
    if (bias) model_balance_bias_get(m, bias);
    *largest = 0;
    for (size_t i = 0; i < n; i++) *largest = fmax(*largest, fabs(bias[i]));
    return bias;
}

void model_balance_bias_get(const Model *m, float *out) {
    size_t E = (size_t)m->cfg.n_experts, at = 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (m->layers[l].is_moe) m->be->download(out + at, P(m->layers[l].expert_bias), E * sizeof(float)), at += E;
}

void model_balance_bias_set(Model *m, const float *in) {
    size_t E = (size_t)m->cfg.n_experts, at = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        if (!m->layers[l].is_moe) continue;
        if (in) m->be->upload(P(m->layers[l].expert_bias), in + at, E * sizeof(float));
        else m->be->zero(P(m->layers[l].expert_bias), E * sizeof(float));
        at += E;
    }
}

/* ---- accounting ---- */

void model_param_counts(const Model *m, size_t *total, size_t *active, size_t *embedding) {
    const ModelConfig *c = &m->cfg;
    size_t t = 0;
    ParamInfo *full; /* the whole model's, also on an expert parallel rank */
    int n = model_full_table(c, &full);
    for (int i = 0; i < n; i++) t += full[i].trainable ? full[i].numel : 0;
    free(full);
    size_t per_expert = 3 * (size_t)c->moe_intermediate_size * c->d_model;
    size_t inactive = (size_t)model_config_n_moe_layers(c) * (c->n_experts - c->top_k) * per_expert;
    if (total) *total = t;
    if (active) *active = t - inactive;
    if (embedding) *embedding = (size_t)c->vocab_size * c->d_model;
}

double model_flops_per_token(const ModelConfig *c, int T) {
    double C = c->d_model, hd = c->head_dim, H = c->n_heads, KV = c->n_kv_heads;
    double matmul_params = (double)c->vocab_size * C; /* LM head */
    for (int l = 0; l < c->n_layers; l++) {
        matmul_params += C * hd * (2 * H + 2 * KV);
        if (layer_is_moe(c, l))
            matmul_params += C * c->n_experts + 3.0 * c->top_k * c->moe_intermediate_size * C +
                             (c->shared_expert_size > 0 ? (3.0 * c->shared_expert_size + 1) * C : 0);
        else
            matmul_params += 3.0 * c->intermediate_size * C;
    }
    /* causal attention: QK^T and PV over (T+1)/2 keys on average */
    double attention = c->n_layers * 2.0 * 2.0 * H * hd * (T + 1) / 2.0;
    return 2.0 * matmul_params + attention;
}
