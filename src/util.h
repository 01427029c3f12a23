/* util.h - errors, memory, files, strings, RNG, timing: the small things every module needs.
 *
 * Error convention: a function that can fail returns int (0 = ok, -1 = error) and
 * records one line with up_error("<file>: <what is wrong>; expected <what>").
 * The CLI prints it as "upcycle: <line>" and exits non-zero. */
#ifndef UPCYCLE_UTIL_H
#define UPCYCLE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- errors ---- */
int up_error(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* returns -1 */
const char *up_last_error(void);
void up_clear_error(void);

/* ---- memory ---- */
void *xmalloc(size_t bytes);          /* exits with a message on out-of-memory */
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t bytes);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* malloc'd, like asprintf */
void *aligned_alloc64(size_t bytes);  /* zeroed, 64-byte aligned; free with free() */

/* ---- files ---- */
/* Atomic file: writes go to "<path>.tmp.<pid>"; commit fsyncs, renames over path and
 * fsyncs the directory; abort removes the temp file. A crash leaves the old file or none. */
typedef struct {
    FILE *f;
    char *path;
    char *tmp_path;
} AtomicFile;
int atomic_open(AtomicFile *af, const char *path);
int atomic_commit(AtomicFile *af); /* checks for write errors (disk full) before renaming */
void atomic_abort(AtomicFile *af);
int atomic_write_file(const char *path, const void *data, size_t bytes);
int read_file(const char *path, char **data, size_t *bytes); /* NUL-terminated copy */
int fsync_dir(const char *dir);
int path_exists(const char *path);
int is_dir(const char *path);
int mkdir_p(const char *path);
int remove_tree(const char *path);
char *path_join(const char *a, const char *b); /* malloc'd "a/b" */
char *path_dirname(const char *path);
/* a new directory $TMPDIR/<prefix>-XXXXXX (or /tmp/...): malloc'd path, or NULL with up_error */
char *make_scratch_dir(const char *prefix);           /* malloc'd parent directory ("." if none) */
char *exe_dirname(void);                         /* malloc'd directory of the running binary, or NULL */
/* Copies the bytes of src into dst (created or truncated, mode 0644) and fsyncs dst.
 * Errors name the file: "<src>: cannot open (...)", "<dst>: write failed (...)". */
int copy_file(const char *src, const char *dst);

/* ---- mmapped files read once, front to back (checkpoints larger than memory) ---- */
/* Maps [addr, addr + len) in with one call before it is read instead of a page fault per page
 * (about 1.5x faster copies); a no-op where the kernel lacks MADV_POPULATE_READ (Linux < 5.14). */
void map_prefault(const void *addr, size_t len);
/* Drops the whole pages of a consumed range from the resident set: they are clean file pages and
 * fault back in from the file (or the page cache) if read again. */
void map_release(const void *addr, size_t len);

/* ---- strings ---- */
int str_ends_with(const char *s, const char *suffix);

/* ---- random numbers: splitmix64 seeding + xoshiro256** ---- */
typedef struct {
    uint64_t s[4];
} Rng;
void rng_seed(Rng *rng, uint64_t seed);
uint64_t rng_next(Rng *rng);
double rng_uniform(Rng *rng);          /* [0, 1) */
float rng_normal(Rng *rng);            /* N(0, 1) */
uint64_t rng_below(Rng *rng, uint64_t n); /* uniform integer in [0, n) */

/* ---- time ---- */
double now_seconds(void);
/* "AMD EPYC 7B13 (AVX2, FMA)": /proc/cpuinfo's model name and the widest vector ISA the
 * kernels use here (AVX-512 BF16, AVX-512, AVX2 with FMA, or none of them) */
void cpu_description(char *out, size_t cap);
/* "1h02m", "3m05s", "42s" (rounded to the second) */
void format_duration(double seconds, char *buf, size_t n);

#endif
