/* corpus.c - an index of the documents in files, directories and JSONL (streamed, never
 * copied), reading a document's text back, and the document split. */
#include "data/corpus.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define READ_CHUNK (1u << 20)

static uint32_t add_source(Corpus *c, const char *path) {
    if (c->n_sources == c->sources_capacity)
        c->sources = xrealloc(c->sources, (c->sources_capacity = c->sources_capacity ? 2 * c->sources_capacity : 64) * sizeof *c->sources);
    c->sources[c->n_sources] = xstrdup(path);
    return (uint32_t)c->n_sources++;
}

static void add_document(Corpus *c, uint32_t source, int is_jsonl, uint64_t offset, uint64_t span, uint64_t n_bytes) {
    if (n_bytes == 0) return;
    if (c->n_docs == c->capacity) c->docs = xrealloc(c->docs, (c->capacity = c->capacity ? 2 * c->capacity : 256) * sizeof *c->docs);
    c->docs[c->n_docs++] = (Document){source, (uint32_t)is_jsonl, offset, span, n_bytes};
    c->n_bytes += n_bytes;
}

/* the string field of one JSONL record, or NULL (*parsed: whether the line was JSON at all);
 * the caller deletes *json */
static const char *jsonl_field(const char *line, size_t length, const char *field, cJSON **json, int *parsed) {
    *json = cJSON_ParseWithLength(line, length);
    *parsed = *json != NULL;
    const cJSON *v = cJSON_IsObject(*json) ? cJSON_GetObjectItemCaseSensitive(*json, field) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

static int add_jsonl(Corpus *c, const char *path, FILE *f) {
    uint32_t source = add_source(c, path);
    char *line = NULL;
    size_t cap = 0, line_no = 0;
    uint64_t offset = 0;
    ssize_t got;
    int rc = 0;
    while (!rc && (got = getline(&line, &cap, f)) > 0) {
        line_no++;
        size_t length = (size_t)got - (line[got - 1] == '\n');
        if (!is_blank(line, length)) {
            cJSON *j;
            int parsed;
            const char *text = jsonl_field(line, length, c->jsonl_field, &j, &parsed);
            if (!text)
                rc = up_error("%s: line %zu: %s; expected a JSON object with a string field \"%s\" (--jsonl-field)", path, line_no,
                              parsed ? "no string field of that name" : "not valid JSON", c->jsonl_field);
            else add_document(c, source, 1, offset, length, strlen(text));
            cJSON_Delete(j);
        }
        offset += (uint64_t)got;
    }
    if (!rc && ferror(f)) rc = up_error("%s: read failed (%s); expected a readable file", path, strerror(errno));
    free(line);
    return rc;
}

/* the documents between occurrences of sep (left to right, not overlapping), in 1 MiB reads */
static int add_separated(Corpus *c, const char *path, FILE *f, const char *sep) {
    uint32_t source = add_source(c, path);
    size_t k = strlen(sep), have = 0;
    char *buf = xmalloc(READ_CHUNK + k);
    uint64_t buf_pos = 0, doc_start = 0; /* buf[0] is the file's byte buf_pos */
    for (;;) {
        size_t got = fread(buf + have, 1, READ_CHUNK, f);
        have += got;
        size_t at = doc_start > buf_pos ? (size_t)(doc_start - buf_pos) : 0;
        for (char *hit; at < have && (hit = memmem(buf + at, have - at, sep, k));) {
            uint64_t p = buf_pos + (uint64_t)(hit - buf);
            add_document(c, source, 0, doc_start, p - doc_start, p - doc_start);
            doc_start = p + k;
            at = (size_t)(hit - buf) + k;
        }
        if (got == 0) break;
        size_t keep_from = have > k - 1 ? have - (k - 1) : 0; /* a separator may straddle the next read */
        if (doc_start > buf_pos + keep_from) keep_from = (size_t)(doc_start - buf_pos);
        memmove(buf, buf + keep_from, have - keep_from);
        buf_pos += keep_from, have -= keep_from;
    }
    free(buf);
    if (ferror(f)) return up_error("%s: read failed (%s); expected a readable file", path, strerror(errno));
    uint64_t end = buf_pos + have;
    add_document(c, source, 0, doc_start, end - doc_start, end - doc_start);
    return 0;
}

static int add_file(Corpus *c, const char *path, const CorpusOptions *opt) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return up_error("%s: cannot open (%s); expected a readable regular file", path, strerror(errno));
    int jsonl = str_ends_with(path, ".jsonl"), separated = opt->doc_sep && *opt->doc_sep;
    if (!jsonl && !separated) { /* one document: its size is all the index needs */
        if (st.st_size > 0) {
            if (access(path, R_OK) != 0) return up_error("%s: cannot open (%s); expected a readable file", path, strerror(errno));
            add_document(c, add_source(c, path), 0, 0, (uint64_t)st.st_size, (uint64_t)st.st_size);
        }
        return 0;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return up_error("%s: cannot open (%s); expected a readable file", path, strerror(errno));
    int rc = jsonl ? add_jsonl(c, path, f) : add_separated(c, path, f, opt->doc_sep);
    fclose(f);
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
    if (!c->jsonl_field) c->jsonl_field = xstrdup(opt->jsonl_field ? opt->jsonl_field : "text");
    struct stat st;
    if (stat(path, &st) != 0) return up_error("%s: cannot open; expected a text file, a directory or a .jsonl file", path);
    if (S_ISDIR(st.st_mode)) return add_directory(c, path, opt, 0);
    if (!S_ISREG(st.st_mode)) return up_error("%s: not a regular file or directory; expected a text file, a directory or a .jsonl file", path);
    return add_file(c, path, opt);
}

void corpus_free(Corpus *c) {
    for (size_t i = 0; i < c->n_sources; i++) free(c->sources[i]);
    free(c->sources), free(c->docs), free(c->jsonl_field);
    memset(c, 0, sizeof *c);
}

void corpus_reader_init(CorpusReader *r) { memset(r, 0, sizeof *r), r->fd = -1; }

void corpus_reader_free(CorpusReader *r) {
    if (r->fd >= 0) close(r->fd);
    free(r->buffer);
    corpus_reader_init(r);
}

static void reserve(CorpusReader *r, size_t n) {
    if (n > r->capacity) r->buffer = xrealloc(r->buffer, r->capacity = n);
}

void corpus_doc_name(const Corpus *c, size_t d, char *out, size_t cap) {
    const Document *doc = &c->docs[d];
    if (doc->offset == 0 && !doc->is_jsonl) snprintf(out, cap, "%s", c->sources[doc->source]);
    else snprintf(out, cap, "%s at byte %llu", c->sources[doc->source], (unsigned long long)doc->offset);
}

int corpus_text(const Corpus *c, size_t d, CorpusReader *r, const char **text) {
    const Document *doc = &c->docs[d];
    const char *path = c->sources[doc->source];
    if (r->fd < 0 || r->source != doc->source) {
        if (r->fd >= 0) close(r->fd);
        r->fd = open(path, O_RDONLY | O_CLOEXEC);
        r->source = doc->source;
        if (r->fd < 0) return up_error("%s: cannot open (%s); expected the file indexed when the command started", path, strerror(errno));
    }
    reserve(r, (size_t)doc->span + 1);
    for (uint64_t done = 0; done < doc->span;) {
        ssize_t got = pread(r->fd, r->buffer + done, (size_t)(doc->span - done), (off_t)(doc->offset + done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return up_error("%s: %s at byte %llu; expected the file unchanged since the command indexed it", path,
                            got < 0 ? strerror(errno) : "shorter", (unsigned long long)(doc->offset + done));
        done += (uint64_t)got;
    }
    r->buffer[doc->span] = 0;
    if (doc->is_jsonl) {
        cJSON *j;
        int parsed;
        const char *field = jsonl_field(r->buffer, (size_t)doc->span, c->jsonl_field, &j, &parsed);
        int same = field && strlen(field) == doc->n_bytes;
        if (same) memcpy(r->buffer, field, (size_t)doc->n_bytes + 1); /* n_bytes <= span: a JSON string is no shorter than its text */
        cJSON_Delete(j);
        if (!same) return up_error("%s: the record at byte %llu changed; expected the file unchanged since the command indexed it", path,
                                   (unsigned long long)doc->offset);
    }
    *text = r->buffer;
    return 0;
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
