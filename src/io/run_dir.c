#include "io/run_dir.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "util.h"

char *run_dir_checkpoint(const char *run, int step) {
    char name[32];
    snprintf(name, sizeof name, "ckpt_%06d", step);
    return path_join(run, name);
}

int run_dir_is_checkpoint(const char *name, int *step) {
    if (strncmp(name, "ckpt_", 5) || !name[5]) return 0;
    long v = 0;
    for (const char *p = name + 5; *p; p++) {
        if (*p < '0' || *p > '9' || v > 100000000) return 0;
        v = v * 10 + (*p - '0');
    }
    *step = (int)v;
    return 1;
}

static int compare_ints(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

void run_dir_list_checkpoints(const char *run, int with_state, int **steps, int *n) {
    *steps = NULL, *n = 0;
    DIR *d = opendir(run);
    if (!d) return;
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        int step;
        if (!run_dir_is_checkpoint(de->d_name, &step)) continue;
        if (with_state) {
            char *p = path_join(run, de->d_name);
            int resumable = checkpoint_has_trainer_state(p);
            free(p);
            if (!resumable) continue;
        }
        if (*n == cap) cap = cap ? 2 * cap : 16, *steps = xrealloc(*steps, sizeof(int) * (size_t)cap);
        (*steps)[(*n)++] = step;
    }
    closedir(d);
    if (*n) qsort(*steps, (size_t)*n, sizeof(int), compare_ints);
}

char *run_dir_metrics(const char *run) { return path_join(run, RUN_METRICS_NAME); }

int run_dir_metrics_step(const char *line, long *step) {
    cJSON *j = cJSON_Parse(line);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step");
    int ok = cJSON_IsObject(j) && cJSON_IsNumber(s) && s->valuedouble == (double)(long)s->valuedouble;
    if (ok) *step = (long)s->valuedouble;
    cJSON_Delete(j);
    return ok;
}

long run_dir_metrics_last_step(const char *run) {
    char *path = run_dir_metrics(run), *text = NULL;
    size_t n = 0;
    int rc = read_file(path, &text, &n);
    free(path);
    if (rc) {
        up_clear_error(); /* no log yet: no step */
        return 0;
    }
    long last = 0, step;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        if (run_dir_metrics_step(line, &step) && step > last) last = step;
    free(text);
    return last;
}

int run_dir_metrics_truncate(const char *run, int max_step) {
    char *path = run_dir_metrics(run), *text;
    size_t n;
    if (!path_exists(path)) {
        free(path);
        return 0;
    }
    if (read_file(path, &text, &n)) {
        free(path);
        return -1;
    }
    char *kept = xmalloc(n + 1);
    size_t k = 0;
    int dropped = 0;
    for (char *line = text, *next; line < text + n; line = next) {
        char *nl = memchr(line, '\n', (size_t)(text + n - line));
        next = nl ? nl + 1 : text + n;
        long step = 0;
        if (nl) *nl = 0;
        int whole = nl && run_dir_metrics_step(line, &step);
        if (nl) *nl = '\n';
        if (!whole || step > max_step) { /* a torn line, or a step after the checkpoint */
            dropped = 1;
            continue;
        }
        memcpy(kept + k, line, (size_t)(next - line));
        k += (size_t)(next - line);
    }
    int rc = dropped ? atomic_write_file(path, kept, k) : 0;
    free(kept), free(text), free(path);
    return rc;
}
