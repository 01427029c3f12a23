/* corpus.c - gathering documents from files, directories and JSONL, and the document split. */
#include "data/corpus.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

static void add_document(Corpus *c, const char *text, size_t n_bytes) {
    if (n_bytes == 0) return;
    if (c->n_docs == c->capacity) {
        c->capacity = c->capacity ? 2 * c->capacity : 256;
        c->docs = xrealloc(c->docs, c->capacity * sizeof *c->docs);
    }
    Document *d = &c->docs[c->n_docs++];
    d->text = xmalloc(n_bytes + 1);
    memcpy(d->text, text, n_bytes);
    d->text[n_bytes] = 0;
    d->n_bytes = n_bytes;
    c->n_bytes += n_bytes;
}

static int add_jsonl(Corpus *c, const char *path, const char *text, size_t n_bytes, const char *field) {
    size_t line_no = 0;
    for (const char *line = text; line < text + n_bytes;) {
        const char *end = memchr(line, '\n', (size_t)(text + n_bytes - line));
        if (!end) end = text + n_bytes;
        line_no++;
        size_t length = (size_t)(end - line);
        int blank = 1;
        for (size_t i = 0; i < length && blank; i++) blank = line[i] == ' ' || line[i] == '\t' || line[i] == '\r';
        if (!blank) {
            cJSON *j = cJSON_ParseWithLength(line, length);
            const cJSON *v = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, field) : NULL;
            if (!cJSON_IsString(v)) {
                int parsed = j != NULL;
                cJSON_Delete(j);
                return up_error("%s: line %zu: %s; expected a JSON object with a string field \"%s\" (--jsonl-field)", path, line_no,
                                parsed ? "no string field of that name" : "not valid JSON", field);
            }
            add_document(c, v->valuestring, strlen(v->valuestring));
            cJSON_Delete(j);
        }
        line = end + 1;
    }
    return 0;
}

static void add_text(Corpus *c, const char *text, size_t n_bytes, const char *sep) {
    size_t k = sep ? strlen(sep) : 0;
    if (!k) {
        add_document(c, text, n_bytes);
        return;
    }
    const char *at = text, *end = text + n_bytes;
    for (;;) {
        const char *hit = memmem(at, (size_t)(end - at), sep, k);
        if (!hit) break;
        add_document(c, at, (size_t)(hit - at));
        at = hit + k;
    }
    add_document(c, at, (size_t)(end - at));
}

static int add_file(Corpus *c, const char *path, const CorpusOptions *opt) {
    char *text;
    size_t n;
    if (read_file(path, &text, &n)) return -1;
    int rc = 0;
    if (str_ends_with(path, ".jsonl")) rc = add_jsonl(c, path, text, n, opt->jsonl_field ? opt->jsonl_field : "text");
    else add_text(c, text, n, opt->doc_sep);
    free(text);
    return rc;
}

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int add_directory(Corpus *c, const char *path, const CorpusOptions *opt, int depth) {
    if (depth > 64) return up_error("%s: directories nested more than 64 deep; expected a corpus tree", path);
    DIR *d = opendir(path);
    if (!d) return up_error("%s: cannot open the directory; expected a readable directory of documents", path);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (n == cap) names = xrealloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    if (n > 1) qsort(names, n, sizeof *names, compare_names); /* names is NULL for an empty directory */
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char *child = path_join(path, names[i]);
        struct stat st;
        if (!rc && stat(child, &st) == 0) {
            if (S_ISDIR(st.st_mode)) rc = add_directory(c, child, opt, depth + 1);
            else if (S_ISREG(st.st_mode)) rc = add_file(c, child, opt);
        }
        free(child);
        free(names[i]);
    }
    free(names);
    return rc;
}

int corpus_add_path(Corpus *c, const char *path, const CorpusOptions *opt) {
    struct stat st;
    if (stat(path, &st) != 0) return up_error("%s: cannot open; expected a text file, a directory or a .jsonl file", path);
    if (S_ISDIR(st.st_mode)) return add_directory(c, path, opt, 0);
    if (!S_ISREG(st.st_mode)) return up_error("%s: not a regular file or directory; expected a text file, a directory or a .jsonl file", path);
    return add_file(c, path, opt);
}

void corpus_free(Corpus *c) {
    for (size_t i = 0; i < c->n_docs; i++) free(c->docs[i].text);
    free(c->docs);
    memset(c, 0, sizeof *c);
}

void corpus_split_documents(const Corpus *c, const double fractions[3], uint64_t seed, size_t *order, int *split) {
    size_t n = c->n_docs;
    for (size_t i = 0; i < n; i++) order[i] = i;
    Rng rng;
    rng_seed(&rng, seed);
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rng_below(&rng, i), t = order[i - 1];
        order[i - 1] = order[j], order[j] = t;
    }
    double total = (double)c->n_bytes, cut1 = fractions[0], cut2 = fractions[0] + fractions[1], before = 0;
    size_t count[3] = {0};
    for (size_t i = 0; i < n; i++) {
        double size = (double)c->docs[order[i]].n_bytes, middle = total > 0 ? (before + size / 2) / total : 0;
        int s = middle < cut1 ? 0 : middle < cut2 ? 1 : 2;
        split[order[i]] = s;
        count[s]++;
        before += size;
    }
    /* a split left empty by one large document takes the last documents of the order */
    for (int s = 2; s >= 0 && n >= 3; s--) {
        if (count[s]) continue;
        for (size_t i = n; i-- > 0;) {
            int from = split[order[i]];
            if (from != s && count[from] > 1) {
                split[order[i]] = s, count[from]--, count[s]++;
                break;
            }
        }
    }
}
