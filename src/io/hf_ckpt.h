/* hf_ckpt.h - reading a Hugging Face checkpoint directory: config.json and its safetensors weights.
 *
 * A checkpoint directory holds config.json and either model.safetensors (one file) or shards
 * named in model.safetensors.index.json: {"metadata": {"total_size": N, ...},
 * "weight_map": {"tensor name": "model-00001-of-0000N.safetensors", ...}}. Other files
 * (tokenizer.json, ...) are not read. Nothing here knows model families (see hf_family.h).
 *
 * The contract of an open HfCkpt (fields are read-only to callers):
 *   - config is config.json parsed, a JSON object;
 *   - files are the distinct weight file names relative to dir, sorted: the index's files, or
 *     "model.safetensors"; st[f] is files[f] opened (mmapped, header validated by st_open);
 *   - every tensor name is in exactly one file and, when sharded, the index's weight_map lists
 *     exactly the tensors of the shards, each in the file that holds it;
 *   - the order of tensors is fixed: files in order, each file's tensors in data offset order
 *     (StFile.tensors); hf_ckpt_next walks it;
 *   - opening reads headers only, never tensor data; everything stays valid until hf_ckpt_close.
 * Opening takes two steps so that a caller can judge the config (say, an unknown
 * architecture) before any weight file is read: hf_ckpt_open_config, then
 * hf_ckpt_open_weights; hf_ckpt_open does both. Errors are one up_error line naming the file,
 * e.g. "<dir>/config.json: missing; expected ..." or "<index>: weight_map puts tensor X in
 * A, but it is in B; expected the index to match the shards". */
#ifndef UPCYCLE_IO_HF_CKPT_H
#define UPCYCLE_IO_HF_CKPT_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "util/strmap.h"

#define HF_CONFIG_NAME "config.json"
#define HF_INDEX_NAME "model.safetensors.index.json"
#define HF_SINGLE_NAME "model.safetensors"

typedef struct {
    int file;  /* index into HfCkpt.st, -1 = none */
    int index; /* index into st[file].tensors */
} HfTensorRef;

#define HF_TENSOR_NONE ((HfTensorRef){-1, -1})
#define HF_TENSOR_BEGIN ((HfTensorRef){0, -1}) /* the cursor before the first tensor (hf_ckpt_next) */

typedef struct {
    char *dir;
    char *config_path; /* dir/config.json */
    cJSON *config;
    int sharded;       /* 1 = index + shards, 0 = model.safetensors */
    cJSON *index;      /* the parsed index when sharded, else NULL */
    int n_files;
    char **files;      /* (n_files) */
    StFile *st;        /* (n_files); NULL until the weights are open */
    StrMap names;      /* tensor name -> HfTensorRef */
} HfCkpt;

/* Checks that dir is a directory with a config.json holding a JSON object, and parses it.
 * On error ck is closed. */
int hf_ckpt_open_config(const char *dir, HfCkpt *ck);
/* Opens the weights of a checkpoint whose config is open, and checks the index against the
 * shards. On error the weights are closed again; the config stays open (hf_ckpt_close it). */
int hf_ckpt_open_weights(HfCkpt *ck);
int hf_ckpt_open(const char *dir, HfCkpt *ck); /* both steps; on error ck is closed */
void hf_ckpt_close(HfCkpt *ck);                /* also on a zeroed or closed ck */

/* A tensor by name and the file holding it (*file may be NULL); NULL if no file has it. */
const StTensor *hf_ckpt_find(const HfCkpt *ck, const char *name, const StFile **file);
static inline const StTensor *hf_ckpt_tensor(const HfCkpt *ck, HfTensorRef r) { return &ck->st[r.file].tensors[r.index]; }
static inline const StFile *hf_ckpt_file(const HfCkpt *ck, HfTensorRef r) { return &ck->st[r.file]; }
/* Advances *r to the next tensor in the fixed order; 0 after the last. Start at HF_TENSOR_BEGIN:
 *   for (HfTensorRef r = HF_TENSOR_BEGIN; hf_ckpt_next(ck, &r);) use(hf_ckpt_tensor(ck, r)); */
int hf_ckpt_next(const HfCkpt *ck, HfTensorRef *r);
uint64_t hf_ckpt_tensor_bytes(const HfCkpt *ck); /* tensor data bytes of all files (no headers) */

/* Writes root to dir/name atomically as we write a checkpoint's JSON files (config.json, the
 * index): cJSON_Print's indented form and a final newline. */
int hf_ckpt_write_json(const char *dir, const char *name, const cJSON *root);

#endif
