/* upcycle sample: generate text from a checkpoint. */
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
    cli_default_shape(ckpt, &batch, &context);
    Model m;
    if (checkpoint_load_model_on(ckpt, be, &m, 0, NULL)) return cli_fail();
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
