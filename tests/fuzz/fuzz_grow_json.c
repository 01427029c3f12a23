/* fuzz_grow_json.c - libFuzzer harness for grow.json as `upcycle diag` reads it
 * (src/experiment/diag.c, through diag_check_grow_json: the same parser and checks as
 * diag_checkpoint, against a model configuration instead of a loaded checkpoint).
 * Every input is checked against three configurations: the tiny preset grown to 16 and to 12
 * experts (MoE layers 1 and 3) and a 3-layer every-layer-MoE model with 4 experts. */
#include "config.h"
#include "experiment/diag.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[128];
    fuzz_path(path, sizeof path, "grow_json", ".json");
    fuzz_write_file(path, data, size);
    ModelConfig configs[3];
    configs[0] = preset_find("tiny")->model;
    configs[0].n_experts = 16;
    configs[1] = configs[0];
    configs[1].n_experts = 12;
    configs[2] = preset_find("fullmoe")->model;
    configs[2].n_layers = 3, configs[2].n_experts = 4;
    for (int i = 0; i < 3; i++) (void)diag_check_grow_json(path, &configs[i]);
    unlink(path);
    return 0;
}
