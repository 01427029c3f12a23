/* upcycle convert: load a checkpoint through the engine and write it again, optionally in
 * another dtype, expert layout or shard size. The weights pass through the engine's float32
 * parameters: bf16, fp16 and fp32 values come back bit for bit in their own dtype. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "io/checkpoint.h"
#include "model.h"
#include "util.h"

int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *save_dtype = NULL, *shard_size = NULL, *layout = NULL;
    CliOption opts[] = {
        {"in", OPT_STR, &in, "checkpoint directory to read (ours or a Hugging Face one of a family the engine runs)"},
        {"out", OPT_STR, &out, "checkpoint directory to write (replaced whole)"},
        {"save-dtype", OPT_STR, &save_dtype, CLI_SAVE_DTYPE_HELP},
        {"shard-size", OPT_STR, &shard_size, CLI_SHARD_SIZE_HELP},
        {"layout", OPT_STR, &layout, "experts: per-expert or packed (transformers 5's experts.gate_up_proj, down_proj); default: the input's"},
    };
    int prc = cli_parse("convert", "--in DIR --out DIR [--save-dtype fp32|bf16|fp16] [--layout per-expert|packed] [--shard-size S]",
                        argc, argv, opts, sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    if (!in || !out) return cli_usage_error("convert", "--in and --out are required; expected --in DIR --out DIR");
    int weight_dtype;
    if (cli_save_format("convert", save_dtype, shard_size, &weight_dtype)) return 2;
    if (layout && strcmp(layout, "per-expert") && strcmp(layout, "packed"))
        return cli_usage_error("convert", "--layout %s; expected per-expert or packed", layout);
    Model m;
    int has_optimizer = 0;
    if (checkpoint_load_model(in, &m, 1, &has_optimizer)) return cli_fail();
    if (weight_dtype >= 0) m.cfg.weight_dtype = weight_dtype;
    if (layout) m.cfg.packed_experts = !strcmp(layout, "packed");
    /* the training state travels too: the optimizer moments, the trainer state when there is one */
    TrainerState st;
    int has_state = checkpoint_has_trainer_state(in);
    if (has_state && trainer_state_load(in, &st)) {
        model_free(&m);
        return cli_fail();
    }
    int rc = checkpoint_save(out, &m, has_state ? &st : NULL, has_optimizer);
    if (!rc)
        printf("converted %s -> %s (%s, %s experts, %s)\n", in, out, config_family_model_type(&m.cfg),
               m.cfg.packed_experts ? "packed" : "per-expert",
               m.cfg.weight_dtype == WEIGHT_BF16 ? "bf16" : m.cfg.weight_dtype == WEIGHT_F16 ? "fp16" : "fp32");
    model_free(&m);
    return rc ? cli_fail() : 0;
}
