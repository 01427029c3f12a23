/* upcycle eval / sample / inspect: read-only uses of a checkpoint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "grow/hf.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "io/checkpoint.h"
#include "model.h"
#include "train.h"
#include "util.h"
#include "util/json.h"

static int load_model(const char *ckpt, Model *m) { return checkpoint_load_model(ckpt, m, 0, NULL); }
static int load_model_on(const char *ckpt, const Backend *be, Model *m) {
    return checkpoint_load_model_on(ckpt, be, m, 0, NULL);
}

/* batch shape: the checkpoint's training shape unless given */
static void default_shape(const char *ckpt, int *batch, int *seq) {
    TrainerState st;
    int have = trainer_state_load(ckpt, &st) == 0;
    if (*batch <= 0) *batch = have ? st.train.batch_size : 8;
    if (*seq <= 0) *seq = have ? st.train.seq_len : 128;
}

/* --ids FILE: a JSON array of token ids, or an array of equally long arrays (a batch); at least
 * 2 ids a row. tokens gets (rows, len) ids; 0 or up_error naming the file and the element. */
static int read_ids(const char *path, int vocab, int32_t **tokens, int *rows, int *len) {
    char *text = NULL;
    size_t n = 0;
    if (read_file(path, &text, &n)) return -1;
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    int nested = cJSON_IsArray(j) && cJSON_IsArray(cJSON_GetArrayItem(j, 0));
    *rows = nested ? cJSON_GetArraySize(j) : 1;
    *len = cJSON_GetArraySize(nested ? cJSON_GetArrayItem(j, 0) : j);
    int rc = 0;
    if (!cJSON_IsArray(j) || *len < 2)
        rc = up_error("%s: %s; expected a JSON array of at least 2 token ids, or an array of such arrays", path,
                      cJSON_IsArray(j) ? "fewer than 2 ids" : "not a JSON array");
    *tokens = rc ? NULL : xmalloc(sizeof(int32_t) * (size_t)*rows * *len);
    for (int r = 0; !rc && r < *rows; r++) {
        const cJSON *row = nested ? cJSON_GetArrayItem(j, r) : j;
        char name[32];
        snprintf(name, sizeof name, "row %d: ids", r);
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != *len)
            rc = up_error("%s: row %d is not an array of %d ids; expected rows of equal length", path, r, *len);
        else rc = json_token_ids(path, row, name, vocab, *tokens + (size_t)r * *len);
    }
    cJSON_Delete(j);
    if (rc) free(*tokens), *tokens = NULL;
    return rc;
}

/* eval --ids: the loss of the rows' next-token predictions (positions 0..len-2 predict 1..len-1,
 * as transformers' labels=input_ids), routing without the balancing biases; optionally the
 * logits (rows, len-1, V) and each MoE layer's top-K experts (n_moe, rows*(len-1), K) as raw
 * little-endian float32 / int32 files, for comparison with transformers. */
static int eval_ids(Model *m, const char *ids_path, const char *logits_path, const char *topk_path, int json) {
    int32_t *tokens;
    int rows, len;
    if (read_ids(ids_path, m->cfg.vocab_size, &tokens, &rows, &len)) return -1;
    int T = len - 1, K = m->cfg.top_k, n_moe = model_config_n_moe_layers(&m->cfg);
    if (T > m->cfg.max_seq_len) {
        free(tokens);
        return up_error("%s: rows of %d ids; expected at most max_position_embeddings + 1 = %d", ids_path, len, m->cfg.max_seq_len + 1);
    }
    model_set_batch(m, rows, T);
    size_t N = (size_t)rows * T, n_bias = (size_t)n_moe * m->cfg.n_experts;
    float *bias = xcalloc(n_bias + 1, sizeof(float));
    model_balance_bias_get(m, bias);
    int has_bias = 0;
    for (size_t i = 0; i < n_bias; i++) has_bias |= bias[i] != 0;
    model_balance_bias_set(m, NULL);
    double loss = model_forward(m, tokens, 0, 0);
    int rc = 0;
    if (logits_path) {
        float *logits = xmalloc(sizeof(float) * N * m->cfg.vocab_size);
        m->be->download(logits, m->logits, sizeof(float) * N * m->cfg.vocab_size);
        rc = atomic_write_file(logits_path, logits, sizeof(float) * N * m->cfg.vocab_size);
        free(logits);
    }
    int32_t *topk = xmalloc(sizeof(int32_t) * (N * K * n_moe + 1));
    for (int l = 0, q = 0; l < m->cfg.n_layers; l++)
        if (layer_is_moe(&m->cfg, l)) model_layer_topk(m, l, topk + N * K * q++);
    if (!rc && topk_path) rc = atomic_write_file(topk_path, topk, sizeof(int32_t) * N * K * n_moe);
    double loss_bias = loss, agree = 1;
    if (!rc && has_bias) {
        model_balance_bias_set(m, bias);
        loss_bias = model_forward(m, tokens, 0, 0);
        int32_t *biased = xmalloc(sizeof(int32_t) * N * K);
        size_t same = 0;
        for (int l = 0, q = 0; l < m->cfg.n_layers; l++)
            if (layer_is_moe(&m->cfg, l)) model_layer_topk(m, l, biased), same += topk_same_sets(topk + N * K * q++, biased, N, K);
        agree = (double)same / ((double)N * n_moe);
        free(biased);
    }
    if (!rc && json) {
        printf("{\"loss\": %.8f, \"tokens\": %zu, \"rows\": %d", loss, N, rows);
        if (has_bias) printf(", \"loss_with_balance_bias\": %.8f, \"topk_agreement\": %.6f", loss_bias, agree);
        printf("}\n");
    } else if (!rc) {
        printf("%s: loss %.6f over %zu predicted tokens (%d rows)\n", ids_path, loss, N, rows);
        if (has_bias)
            printf("with the balancing biases (training's routing): loss %.6f; top-K expert sets agree on %.1f%% of (token, MoE layer) pairs\n",
                   loss_bias, 100 * agree);
    }
    free(topk), free(bias), free(tokens);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    const char *ckpt = NULL, *data = NULL, *split = "val", *ids = NULL, *logits = NULL, *router_topk = NULL;
    const char *device = "auto";
    int json = 0, batches = 0, batch = 0, seq = 0, threads = 0;
    CliOption opts[] = {
        {"ckpt", OPT_STR, &ckpt, "checkpoint directory (required)"},
        {"data", OPT_STR, &data, "data directory (required unless --ids)"},
        {"split", OPT_STR, &split, "val (default), cpt or pretrain"},
        {"batches", OPT_INT, &batches, "0 (default): every window of the split once; N: N batches of windows strided evenly over the split"},
        {"batch-size", OPT_INT, &batch, "sequences per batch (default: the checkpoint's training batch)"},
        {"seq-len", OPT_INT, &seq, "tokens per sequence (default: the checkpoint's training length)"},
        {"ids", OPT_STR, &ids, "instead of --data: a JSON array of token ids (or an array of equally long arrays); the loss of their next-token predictions"},
        {"logits", OPT_STR, &logits, "with --ids: write the logits (rows, len-1, vocab) as raw float32"},
        {"router-topk", OPT_STR, &router_topk, "with --ids: write each MoE layer's top-K experts (MoE layers, rows*(len-1), K) as raw int32"},
        {"json", OPT_FLAG, &json, "print one JSON object"},
        {"threads", OPT_COUNT, &threads, "threads"},
        {"device", OPT_STR, &device, CLI_DEVICE_HELP},
    };
    int prc = cli_parse("eval", "--ckpt DIR --data DIR [options]  |  --ckpt DIR --ids FILE [--logits F --router-topk F]", argc, argv,
                        opts, sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    if (!ckpt || (!data && !ids)) return cli_usage_error("eval", "--ckpt and --data (or --ids) are required; expected --ckpt DIR --data DIR");
    if (data && ids) return cli_usage_error("eval", "--data and --ids together; expected one of them");
    if ((logits || router_topk) && !ids) return cli_usage_error("eval", "--logits and --router-topk need --ids; expected --ids FILE with them");
    if (batches < 0) return cli_usage_error("eval", "--batches %d; expected 0 (the whole split) or a count >= 1", batches);
    const Backend *be;
    int brc = cli_backend("eval", device, &be);
    if (brc) return brc;
    cli_set_threads(threads);
    Model m;
    if (load_model_on(ckpt, be, &m)) return cli_fail();
    if (ids) {
        int rc = eval_ids(&m, ids, logits, router_topk, json);
        model_free(&m);
        return rc ? cli_fail() : 0;
    }
    default_shape(ckpt, &batch, &seq);
    if (seq > m.cfg.max_seq_len) {
        int max = m.cfg.max_seq_len;
        model_free(&m);
        return cli_usage_error("eval", "--seq-len %d exceeds the model's max_position_embeddings %d; expected <= %d", seq, max, max);
    }
    Loader ld;
    if (loader_open(&ld, data, split, batch, seq, 0, 0)) {
        model_free(&m);
        return cli_fail();
    }
    if (loader_check_vocab(&ld, m.cfg.vocab_size)) {
        loader_close(&ld);
        model_free(&m);
        return cli_fail();
    }
    model_set_batch(&m, batch, seq);
    /* the function the directory computes in transformers: routing without the balancing biases */
    BiasEffect bias;
    EvalResult r = evaluate_split_unbiased(&m, &ld, batches, &bias);
    int whole = r.windows == (long long)ld.n_windows;
    if (json) {
        printf("{\"loss\": %.6f, \"std_error\": %.6f, \"perplexity\": %.4f, \"tokens\": %lld, \"windows\": %lld, "
               "\"split_windows\": %llu, \"split\": \"%s\"",
               r.loss, r.std_error, exp(r.loss), r.tokens, r.windows, (unsigned long long)ld.n_windows, split);
        if (bias.has_bias)
            printf(", \"loss_with_balance_bias\": %.6f, \"topk_agreement\": %.6f, \"max_abs_balance_bias\": %.6f", bias.loss_with_bias,
                   bias.topk_agreement, bias.max_abs_bias);
        printf("}\n");
    } else {
        printf("%s: %s loss %.4f (standard error %.4f over windows), perplexity %.2f over %lld tokens (%s)\n", ckpt, split, r.loss,
               r.std_error, exp(r.loss), r.tokens, whole ? "the whole split" : "windows strided over the split");
        if (bias.has_bias)
            printf("the loss is the model as transformers computes it, without the balancing biases (largest |bias| %.4f); "
                   "with them (training's routing): %.4f, top-K expert sets agree on %.1f%% of (token, MoE layer) pairs\n",
                   bias.max_abs_bias, bias.loss_with_bias, 100 * bias.topk_agreement);
    }
    loader_close(&ld);
    model_free(&m);
    return 0;
}

/* tokenizer: --data DIR, else the training data directory recorded in trainer.json, else bytes */
static int find_tokenizer(const char *ckpt, const char *data, int vocab, Tokenizer **tok) {
    if (data) return tokenizer_load_dir(tok, data);
    TrainerState st;
    if (trainer_state_load(ckpt, &st) == 0 && st.data_dir[0] && is_dir(st.data_dir)) return tokenizer_load_dir(tok, st.data_dir);
    if (vocab == 256) {
        *tok = tokenizer_byte();
        return 0;
    }
    return up_error("%s: cannot find the tokenizer of this %d-token vocabulary; expected --data DIR with tokenizer.json", ckpt, vocab);
}

int cmd_sample(int argc, char **argv) {
    const char *ckpt = NULL, *prompt = "\n", *data = NULL, *seed_str = NULL;
    const char *device = "auto";
    int n_tokens = 200, top_k = 40, threads = 0, context = 0;
    float temperature = 0.8f;
    CliOption opts[] = {
        {"ckpt", OPT_STR, &ckpt, "checkpoint directory (required)"},
        {"prompt", OPT_STR, &prompt, "text to continue (default: a newline)"},
        {"tokens", OPT_INT, &n_tokens, "tokens to generate (default 200)"},
        {"temperature", OPT_FLOAT, &temperature, "softmax temperature; 0 = greedy (default 0.8)"},
        {"top-k", OPT_INT, &top_k, "sample among the k most likely tokens; 0 = all (default 40)"},
        {"seed", OPT_STR, &seed_str, "sampling seed (default 1)"},
        {"data", OPT_STR, &data, "data directory whose tokenizer.json to use (default: the training data)"},
        {"context", OPT_INT, &context, "context window (default: the training sequence length)"},
        {"threads", OPT_COUNT, &threads, "threads"},
        {"device", OPT_STR, &device, CLI_DEVICE_HELP},
    };
    int prc = cli_parse("sample", "--ckpt DIR [--prompt TEXT] [options]", argc, argv, opts, sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    if (!ckpt) return cli_usage_error("sample", "--ckpt is required; expected --ckpt DIR");
    if (n_tokens < 0 || temperature < 0 || top_k < 0) return cli_usage_error("sample", "--tokens, --temperature and --top-k are negative; expected values >= 0");
    unsigned long long seed = 1;
    if (seed_str) {
        char *end;
        seed = strtoull(seed_str, &end, 10);
        if (!*seed_str || *end) return cli_usage_error("sample", "--seed %s; expected a non-negative integer", seed_str);
    }
    const Backend *be;
    int brc = cli_backend("sample", device, &be);
    if (brc) return brc;
    cli_set_threads(threads);
    int batch = 1;
    default_shape(ckpt, &batch, &context);
    Model m;
    if (load_model_on(ckpt, be, &m)) return cli_fail();
    if (context > m.cfg.max_seq_len) context = m.cfg.max_seq_len;
    Tokenizer *tok;
    if (find_tokenizer(ckpt, data, m.cfg.vocab_size, &tok)) {
        model_free(&m);
        return cli_fail();
    }
    uint32_t *ids;
    size_t n_ids;
    if (tokenizer_encode(tok, (const unsigned char *)prompt, strlen(prompt), &ids, &n_ids)) {
        tokenizer_free(tok), model_free(&m);
        return cli_fail();
    }
    size_t total = n_ids + (size_t)n_tokens;
    ids = xrealloc(ids, sizeof(uint32_t) * (total ? total : 1));
    int V = m.cfg.vocab_size;
    model_set_batch(&m, 1, context);
    int32_t *window = xcalloc(context, sizeof(int32_t));
    float *logits = xmalloc(sizeof(float) * V), *probs = xmalloc(sizeof(float) * V);
    Rng rng;
    rng_seed(&rng, seed);
    printf("%s", prompt);
    fflush(stdout);
    /* causal attention: a window padded on the right gives the same logits at its last real token */
    for (size_t i = n_ids; i < total; i++) {
        size_t start = i > (size_t)context ? i - context : 0, len = i - start;
        if (len == 0) {
            ids[i] = 0;
            continue;
        }
        memset(window, 0, sizeof(int32_t) * context);
        for (size_t j = 0; j < len; j++) window[j] = (int32_t)ids[start + j];
        model_forward_logits(&m, window);
        m.be->download(logits, m.logits + (len - 1) * (size_t)V, sizeof(float) * V);
        int next = 0;
        if (temperature == 0) {
            for (int v = 1; v < V; v++) next = logits[v] > logits[next] ? v : next;
        } else {
            /* keep the top_k logits (by threshold), softmax at temperature, draw */
            float threshold = -INFINITY;
            if (top_k > 0 && top_k < V) {
                memcpy(probs, logits, sizeof(float) * V);
                for (int k = 0; k < top_k; k++) {
                    int best = -1;
                    for (int v = 0; v < V; v++)
                        if (probs[v] != -INFINITY && (best < 0 || probs[v] > probs[best])) best = v;
                    threshold = probs[best];
                    probs[best] = -INFINITY;
                }
            }
            float mx = -INFINITY;
            for (int v = 0; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
            double sum = 0;
            for (int v = 0; v < V; v++) sum += (probs[v] = logits[v] >= threshold ? expf((logits[v] - mx) / temperature) : 0);
            double r = rng_uniform(&rng) * sum, acc = 0;
            next = V - 1;
            for (int v = 0; v < V; v++) {
                acc += probs[v];
                if (probs[v] > 0 && acc >= r) {
                    next = v;
                    break;
                }
            }
        }
        ids[i] = (uint32_t)next;
        char *piece;
        size_t piece_len;
        if (tokenizer_decode(tok, ids + i, 1, &piece, &piece_len) == 0) {
            fwrite(piece, 1, piece_len, stdout);
            fflush(stdout);
            free(piece);
        }
    }
    printf("\n");
    free(window), free(logits), free(probs), free(ids);
    tokenizer_free(tok);
    model_free(&m);
    return 0;
}

int cmd_inspect(int argc, char **argv) {
    const char *ckpt = NULL;
    CliOption opts[] = {{"ckpt", OPT_STR, &ckpt, "checkpoint directory (required)"}};
    int prc = cli_parse("inspect", "--ckpt DIR", argc, argv, opts, 1);
    if (prc) return prc == 1 ? 0 : prc;
    if (!ckpt) return cli_usage_error("inspect", "--ckpt is required; expected --ckpt DIR");
    Model m;
    if (load_model(ckpt, &m)) {
        /* a family the engine does not run (DeepSeek, GPT-OSS): what the streaming grower sees */
        char engine_error[1024];
        snprintf(engine_error, sizeof engine_error, "%s", up_last_error());
        HfMoeInfo info;
        if (!strstr(engine_error, "does not train or evaluate") || hf_inspect(ckpt, &info)) {
            up_error("%s", engine_error);
            return cli_fail();
        }
        printf("checkpoint %s\nformat: %s (grown by copy; the engine does not run it), %s, %s\n", ckpt, info.model_type, info.dtype,
               info.sharded ? "sharded" : "one file");
        printf("MoE layers: %d of %d, %d experts (%s) top-%d, %d tensors per expert, %.3f GB of tensors\n", info.n_moe_layers,
               info.n_layers, info.n_experts, info.experts_key, info.n_experts_per_tok, info.n_expert_tensors, info.total_bytes / 1e9);
        hf_info_free(&info);
        return 0;
    }
    const ModelConfig *c = &m.cfg;
    size_t total, active, embedding;
    model_param_counts(&m, &total, &active, &embedding);
    printf("checkpoint %s\n", ckpt);
    printf("format: %s (%s), weights %s, experts %s\n", config_family_model_type(&m.cfg), config_family_architecture(&m.cfg),
           m.cfg.weight_dtype == WEIGHT_BF16 ? "bf16" : m.cfg.weight_dtype == WEIGHT_F16 ? "fp16" : "fp32",
           m.cfg.packed_experts ? "packed (gate_up_proj, down_proj)" : "per expert");
    model_config_print(c, stdout);
    printf("params: %zu total (%.3fM), %zu active per token (%.3fM), %zu embedding; %.1f MFLOP/token forward at T=256\n",
           total, total / 1e6, active, active / 1e6, embedding, model_flops_per_token(c, 256) / 1e6);
    TrainerState st;
    if (trainer_state_load(ckpt, &st) == 0)
        printf("trainer: step %d, %lld tokens seen, data %s (epoch %llu, cursor %llu)\n", st.step, st.tokens_seen,
               st.data_dir, (unsigned long long)st.data_epoch, (unsigned long long)st.data_cursor);
    float *host = xmalloc(m.n_floats * sizeof(float));
    m.be->download(host, m.param_mem, m.n_floats * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        const LayerParams *L = &m.layers[l];
        if (!L->is_moe) {
            printf("layer %2d: dense FFN (%d)\n", l, c->intermediate_size);
            continue;
        }
        printf("layer %2d: MoE, %d experts, top-%d\n", l, c->n_experts, c->top_k);
        const float *bias = host + m.params[L->expert_bias].offset;
        printf("  balancing bias:");
        for (int e = 0; e < c->n_experts; e++) printf(" %+.4f", bias[e]);
        printf("\n  expert norms (gate/up/down Frobenius):");
        size_t per = (size_t)c->moe_intermediate_size * c->d_model;
        for (int e = 0; e < c->n_experts; e++) {
            double ss = 0;
            for (int part = 0; part < 3; part++) {
                int first = part == 0 ? L->expert_gate : part == 1 ? L->expert_up : L->expert_down;
                const float *w = host + m.params[first].offset + e * per;
                for (size_t i = 0; i < per; i++) ss += (double)w[i] * w[i];
            }
            printf(" %.3f", sqrt(ss));
        }
        printf("\n");
    }
    free(host);
    model_free(&m);
    return 0;
}
