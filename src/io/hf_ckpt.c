/* hf_ckpt.c - reading a Hugging Face checkpoint directory (see hf_ckpt.h). */
#include "io/hf_ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static void close_weights(HfCkpt *ck) {
    for (int f = 0; f < ck->n_files; f++) {
        if (ck->st) st_close(&ck->st[f]);
        free(ck->files[f]);
    }
    free(ck->st);
    free(ck->files);
    strmap_free(&ck->names);
    cJSON_Delete(ck->index);
    ck->st = NULL;
    ck->files = NULL;
    ck->n_files = 0;
    ck->index = NULL;
    ck->sharded = 0;
}

void hf_ckpt_close(HfCkpt *ck) {
    close_weights(ck);
    cJSON_Delete(ck->config);
    free(ck->config_path);
    free(ck->dir);
    memset(ck, 0, sizeof *ck);
}

int hf_ckpt_open_config(const char *dir, HfCkpt *ck) {
    memset(ck, 0, sizeof *ck);
    ck->dir = xstrdup(dir);
    if (!is_dir(dir)) {
        up_error("%s: no such directory; expected a Hugging Face checkpoint directory with config.json", dir);
        goto fail;
    }
    ck->config_path = path_join(dir, HF_CONFIG_NAME);
    if (!path_exists(ck->config_path)) {
        up_error("%s: missing; expected a Hugging Face checkpoint directory with config.json and %s (or shards with "
                 "%s)", ck->config_path, HF_SINGLE_NAME, HF_INDEX_NAME);
        goto fail;
    }
    char *text = NULL;
    if (read_file(ck->config_path, &text, NULL) != 0) goto fail;
    ck->config = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(ck->config)) {
        up_error("%s: not a JSON object; expected a Hugging Face config.json", ck->config_path);
        goto fail;
    }
    return 0;
fail:
    hf_ckpt_close(ck);
    return -1;
}

static int compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Fills ck->files / n_files from the index (sorted distinct file names) or the single file. */
static int list_weight_files(HfCkpt *ck) {
    char *index_path = path_join(ck->dir, HF_INDEX_NAME), *single_path = path_join(ck->dir, HF_SINGLE_NAME);
    int rc = 0;
    if (path_exists(index_path)) {
        ck->sharded = 1;
        char *text = NULL;
        if (read_file(index_path, &text, NULL) != 0) {
            rc = -1;
            goto done;
        }
        ck->index = cJSON_Parse(text);
        free(text);
        const cJSON *wm = ck->index ? cJSON_GetObjectItemCaseSensitive(ck->index, "weight_map") : NULL;
        if (!cJSON_IsObject(ck->index) || !cJSON_IsObject(wm) || !wm->child) {
            rc = up_error("%s: not a JSON object with a non-empty \"weight_map\"; expected {\"metadata\": {...}, "
                          "\"weight_map\": {\"tensor name\": \"model-00001-of-0000N.safetensors\", ...}}",
                          index_path);
            goto done;
        }
        int n = cJSON_GetArraySize(wm), count = 0;
        char **names = xcalloc((size_t)n, sizeof *names);
        for (const cJSON *e = wm->child; e; e = e->next) {
            if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/') ||
                !str_ends_with(e->valuestring, ".safetensors")) {
                free(names);
                rc = up_error("%s: weight_map entry %s is not a plain *.safetensors file name; expected \"name\": "
                              "\"model-00001-of-0000N.safetensors\"", index_path, e->string);
                goto done;
            }
            names[count++] = e->valuestring;
        }
        qsort(names, (size_t)count, sizeof *names, compare_strings);
        ck->files = xcalloc((size_t)count, sizeof *ck->files);
        for (int i = 0; i < count; i++)
            if (i == 0 || strcmp(names[i], names[i - 1]) != 0) ck->files[ck->n_files++] = xstrdup(names[i]);
        free(names);
    } else if (path_exists(single_path)) {
        ck->files = xcalloc(1, sizeof *ck->files);
        ck->files[ck->n_files++] = xstrdup(HF_SINGLE_NAME);
    } else {
        rc = up_error("%s: missing, and no %s beside it; expected Hugging Face safetensors weights (a single file or "
                      "shards with an index)", single_path, HF_INDEX_NAME);
    }
done:
    free(index_path);
    free(single_path);
    return rc;
}

/* The index's weight_map against the shards: every entry names a tensor of the file it says,
 * and every tensor has an entry. */
static int check_index(const HfCkpt *ck) {
    char *index_path = path_join(ck->dir, HF_INDEX_NAME);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(ck->index, "weight_map");
    int rc = 0, listed = 0;
    for (const cJSON *e = wm->child; e && rc == 0; e = e->next) {
        const HfTensorRef *r = strmap_get(&ck->names, e->string);
        if (!r)
            rc = up_error("%s: weight_map lists tensor %s in %s, but no file has it; expected the index to match the "
                          "shards", index_path, e->string, e->valuestring);
        else if (strcmp(ck->files[r->file], e->valuestring) != 0)
            rc = up_error("%s: weight_map puts tensor %s in %s, but it is in %s; expected the index to match the shards",
                          index_path, e->string, e->valuestring, ck->files[r->file]);
        else
            listed++;
    }
    if (rc == 0 && (size_t)listed != strmap_count(&ck->names)) {
        for (HfTensorRef r = HF_TENSOR_BEGIN; rc == 0 && hf_ckpt_next(ck, &r);) {
            const StTensor *t = hf_ckpt_tensor(ck, r);
            if (!cJSON_GetObjectItemCaseSensitive(wm, t->name))
                rc = up_error("%s: tensor %s is not in the weight_map of %s; expected the index to list every tensor",
                              ck->st[r.file].path, t->name, index_path);
        }
        if (rc == 0)
            rc = up_error("%s: weight_map has %d entries for %zu tensors (duplicate names?); expected one entry per "
                          "tensor", index_path, listed, strmap_count(&ck->names));
    }
    free(index_path);
    return rc;
}

/* Opens every weight file and indexes tensor names; checks the index against the files. */
static int open_weights(HfCkpt *ck) {
    if (list_weight_files(ck) != 0) return -1;
    ck->st = xcalloc((size_t)ck->n_files, sizeof *ck->st);
    size_t total = 0;
    for (int f = 0; f < ck->n_files; f++) {
        char *path = path_join(ck->dir, ck->files[f]);
        int rc = st_open(&ck->st[f], path);
        free(path);
        if (rc != 0) return -1;
        total += (size_t)ck->st[f].n_tensors;
    }
    strmap_init(&ck->names, sizeof(HfTensorRef), total);
    for (HfTensorRef r = HF_TENSOR_BEGIN; hf_ckpt_next(ck, &r);) {
        const char *name = hf_ckpt_tensor(ck, r)->name;
        const HfTensorRef *old = strmap_put(&ck->names, name, &r);
        if (old)
            return up_error("%s: tensor %s is also in %s; expected each tensor in exactly one file", ck->st[r.file].path,
                            name, ck->st[old->file].path);
    }
    return ck->sharded ? check_index(ck) : 0;
}

int hf_ckpt_open_weights(HfCkpt *ck) {
    if (open_weights(ck) == 0) return 0;
    close_weights(ck);
    return -1;
}

int hf_ckpt_open(const char *dir, HfCkpt *ck) {
    if (hf_ckpt_open_config(dir, ck) != 0) return -1;
    if (hf_ckpt_open_weights(ck) == 0) return 0;
    hf_ckpt_close(ck);
    return -1;
}

const StTensor *hf_ckpt_find(const HfCkpt *ck, const char *name, const StFile **file) {
    const HfTensorRef *r = strmap_get(&ck->names, name);
    if (file) *file = r ? &ck->st[r->file] : NULL;
    return r ? hf_ckpt_tensor(ck, *r) : NULL;
}

int hf_ckpt_next(const HfCkpt *ck, HfTensorRef *r) {
    if (r->file < 0) return 0;
    r->index++;
    while (r->file < ck->n_files && r->index >= ck->st[r->file].n_tensors) r->file++, r->index = 0;
    if (r->file < ck->n_files) return 1;
    *r = HF_TENSOR_NONE;
    return 0;
}

uint64_t hf_ckpt_tensor_bytes(const HfCkpt *ck) {
    uint64_t bytes = 0;
    for (HfTensorRef r = HF_TENSOR_BEGIN; hf_ckpt_next(ck, &r);) {
        const StTensor *t = hf_ckpt_tensor(ck, r);
        bytes += t->end - t->begin;
    }
    return bytes;
}

int hf_ckpt_write_json(const char *dir, const char *name, const cJSON *root) {
    char *text = cJSON_Print(root);
    if (!text) {
        fprintf(stderr, "upcycle: out of memory printing JSON\n");
        exit(3);
    }
    size_t n = strlen(text);
    text = xrealloc(text, n + 2); /* cJSON_Print uses malloc */
    text[n] = '\n';
    text[n + 1] = 0;
    char *path = path_join(dir, name);
    int rc = atomic_write_file(path, text, n + 1);
    free(path);
    free(text);
    return rc;
}
