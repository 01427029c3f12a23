/* diag.h - replica diagnostics on a grown checkpoint (and optionally its growth source):
 * do replicas diverge during continued pre-training, and do they receive different tokens? */
#ifndef UPCYCLE_DIAG_H
#define UPCYCLE_DIAG_H

#include <cjson/cJSON.h>
#include <stdio.h>

#include "config.h"

/* ckpt: a checkpoint whose directory (or an ancestor stage) holds grow.json describing the
 * replica groups; grow_json: path of that grow.json (NULL: ckpt/grow.json); source: the
 * checkpoint the replicas were copied from (NULL: skip cosine-to-source); data_dir: probe
 * batch from its val split (NULL: skip routing statistics). probe_batches: batches of the
 * probe (default 2). Returns a JSON object (caller frees) or NULL with up_error set:
 * {
 *   "layers": [{
 *     "layer": 1, "n_experts": 16,
 *     "groups": [{"source": 0, "members": [0, 8], "pairwise_cosine": [..], "cosine_to_source": [..],
 *                 "jaccard": [..] }],          // per pair of members; per member
 *     "replica_cosine_mean": x, "cosine_to_source_mean": x, "jaccard_mean": x,
 *     "routing_entropy": x,                    // mean over tokens of the entropy of router probs (nats)
 *     "load": {"min": n, "max": n, "std": x, "max_violation": x},  // max_violation = max/mean - 1
 *     "dead_experts": [e, ...]                 // experts that receive no tokens on the probe
 *   }],
 *   "probe_tokens": N, "val_loss": x
 * }
 * An undefined statistic (a mean over no pairs, the loss of a diverged checkpoint) is null. */
cJSON *diag_checkpoint(const char *ckpt, const char *grow_json, const char *source, const char *data_dir,
                       int probe_batches);
/* The grow.json checks of diag_checkpoint alone, against a model configuration (layer count,
 * which layers are MoE, expert count) instead of a loaded checkpoint: 0, or -1 with up_error.
 * Exported so that the parser can be fuzzed without a checkpoint (tests/fuzz/fuzz_grow_json.c). */
int diag_check_grow_json(const char *path, const ModelConfig *cfg);
/* one-paragraph-per-layer text summary of a diag_checkpoint result; 0, or -1 with up_error
 * ("diagnostics: field ...") when diag is not in the format above */
int diag_print(const cJSON *diag, FILE *f);

#endif
