/* fuzz_config.c - libFuzzer harness for config.json and --config parsing (src/config.c).
 * The same input is read as a checkpoint's config.json (model_config_load_json), as a
 * `train --config FILE` ({"model": {...}, "train": {...}} or a bare Hugging Face config:
 * train_config_load_json) and as bare training keys (train_config_load_bare_json). A config
 * that loads must validate, and a model config must survive a save/load round trip. */
#include <cjson/cJSON.h>
#include <string.h>

#include "config.h"
#include "fuzz_common.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[128];
    fuzz_path(path, sizeof path, "config", ".json");
    fuzz_write_file(path, data, size);

    ModelConfig mc;
    if (model_config_load_json(&mc, path) == 0) {
        if (model_config_validate(&mc, "fuzz") != 0) abort();
        char *text = model_config_to_json_string(&mc);
        cJSON *j = cJSON_Parse(text);
        ModelConfig back;
        model_config_defaults(&back);
        if (!j || model_config_overlay_json(&back, j, "round trip") != 0) abort();
        cJSON_Delete(j);
        free(text);
    }

    TrainConfig tc;
    model_config_defaults(&mc);
    train_config_defaults(&tc);
    if (train_config_load_json(&mc, &tc, path) == 0) {
        if (model_config_validate(&mc, "fuzz") != 0) abort();
    }

    train_config_defaults(&tc);
    if (train_config_load_bare_json(&tc, path) == 0) {
        if (train_config_validate(&tc, "fuzz") != 0) abort();
    }
    unlink(path);
    return 0;
}
