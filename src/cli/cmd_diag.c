/* upcycle diag: replica diagnostics of a grown checkpoint (weight cosines, token overlap, load). */
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "experiment/diag.h"
#include "util.h"

int cmd_diag(int argc, char **argv) {
    const char *ckpt = NULL, *source = NULL, *grow_json = NULL, *data = NULL;
    int probe_batches = 2, json = 0, threads = 0;
    CliOption opts[] = {
        {"ckpt", OPT_STR, &ckpt, "grown (or grown-then-trained) checkpoint directory (required)"},
        {"source", OPT_STR, &source, "the pre-growth checkpoint: adds cosine of every member to its source expert"},
        {"grow-json", OPT_STR, &grow_json, "grow.json describing the replica groups (default: CKPT/grow.json)"},
        {"data", OPT_STR, &data, "data directory: routing statistics on its val split (default: weights only)"},
        {"probe-batches", OPT_INT, &probe_batches, "val batches in the probe (default 2; batch shape from trainer.json)"},
        {"json", OPT_FLAG, &json, "print one JSON object"},
        {"threads", OPT_COUNT, &threads, "threads"},
    };
    int prc = cli_parse("diag", "--ckpt DIR [--source DIR] [--grow-json FILE] [--data DIR] [options]", argc, argv, opts,
                        sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    if (!ckpt) return cli_usage_error("diag", "--ckpt is required; expected --ckpt DIR");
    if (probe_batches < 1) return cli_usage_error("diag", "--probe-batches %d; expected >= 1", probe_batches);
    cli_set_threads(threads);
    cJSON *d = diag_checkpoint(ckpt, grow_json, source, data, probe_batches);
    if (!d) return cli_fail();
    if (json) {
        char *text = cJSON_Print(d);
        printf("%s\n", text);
        free(text);
    } else {
        printf("checkpoint %s\n", ckpt);
        if (diag_print(d, stdout)) {
            cJSON_Delete(d);
            return cli_fail();
        }
    }
    cJSON_Delete(d);
    return 0;
}
