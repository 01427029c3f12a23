/* upcycle eval: the validation loss of a checkpoint as its family computes it, or the loss and
 * logits of given token ids. */
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
    size_t N = (size_t)rows * T;
    double largest;
    float *bias = model_balance_bias_copy(m, &largest);
    int has_bias = largest > 0;
    if (has_bias) model_balance_bias_set(m, NULL);
    double loss = model_forward(m, tokens, 0, 0);
    int rc = 0;
    if (logits_path) {
        float *logits = xmalloc(sizeof(float) * N * m->cfg.vocab_size);
        m->be->download(logits, m->logits, sizeof(float) * N * m->cfg.vocab_size);
        rc = atomic_write_file(logits_path, logits, sizeof(float) * N * m->cfg.vocab_size);
        free(logits);
    }
    int32_t *topk = xmalloc(sizeof(int32_t) * (N * K * n_moe + 1));
    model_moe_topk(m, topk);
    if (!rc && topk_path) rc = atomic_write_file(topk_path, topk, sizeof(int32_t) * N * K * n_moe);
    double loss_bias = loss, agree = 1;
    if (!rc && has_bias) {
        model_balance_bias_set(m, bias);
        loss_bias = model_forward(m, tokens, 0, 0);
        int32_t *biased = xmalloc(sizeof(int32_t) * N * K * n_moe);
        model_moe_topk(m, biased);
        agree = (double)topk_same_sets(topk, biased, N * n_moe, K) / ((double)N * n_moe);
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
    if (checkpoint_load_model_on(ckpt, be, &m, 0, NULL)) return cli_fail();
    if (ids) {
        int rc = eval_ids(&m, ids, logits, router_topk, json);
        model_free(&m);
        return rc ? cli_fail() : 0;
    }
    cli_default_shape(ckpt, &batch, &seq);
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

