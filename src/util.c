#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char g_error[1024];

int up_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    return -1;
}

const char *up_last_error(void) { return g_error[0] ? g_error : "unknown error"; }
void up_clear_error(void) { g_error[0] = 0; }

static void out_of_memory(size_t bytes) {
    fprintf(stderr, "upcycle: out of memory allocating %zu bytes; expected a smaller model or batch\n", bytes);
    exit(3);
}

void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) out_of_memory(bytes);
    return p;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) out_of_memory(n * size);
    return p;
}

void *xrealloc(void *p, size_t bytes) {
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) out_of_memory(bytes);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

char *xasprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        fprintf(stderr, "upcycle: out of memory formatting a name\n");
        exit(3);
    }
    return s;
}

void *aligned_alloc64(size_t bytes) {
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) out_of_memory(bytes);
    memset(p, 0, rounded ? rounded : 64);
    return p;
}

/* ---- files ---- */

int atomic_open(AtomicFile *af, const char *path) {
    memset(af, 0, sizeof *af);
    size_t n = strlen(path) + 32;
    af->path = xstrdup(path);
    af->tmp_path = xmalloc(n);
    snprintf(af->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    af->f = fopen(af->tmp_path, "wb");
    if (!af->f) {
        int e = errno;
        free(af->path);
        free(af->tmp_path);
        memset(af, 0, sizeof *af);
        return up_error("%s: cannot create file (%s); expected a writable directory", path, strerror(e));
    }
    return 0;
}

char *path_dirname(const char *path) {
    char *d = xstrdup(path);
    char *slash = strrchr(d, '/');
    if (!slash) {
        free(d);
        return xstrdup(".");
    }
    if (slash == d) slash[1] = 0;
    else *slash = 0;
    return d;
}

char *exe_dirname(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return NULL;
    exe[n] = 0;
    return path_dirname(exe);
}

int atomic_commit(AtomicFile *af) {
    int failed = 0, err = 0;
    if (fflush(af->f) != 0 || ferror(af->f)) failed = 1, err = errno;
    if (!failed && fsync(fileno(af->f)) != 0) failed = 1, err = errno;
    if (fclose(af->f) != 0 && !failed) failed = 1, err = errno;
    af->f = NULL;
    if (!failed && rename(af->tmp_path, af->path) != 0) failed = 1, err = errno;
    if (failed) {
        unlink(af->tmp_path);
        up_error("%s: write failed (%s); expected enough disk space and a writable directory", af->path,
                 strerror(err));
    } else {
        char *d = path_dirname(af->path);
        fsync_dir(d);
        free(d);
    }
    free(af->path);
    free(af->tmp_path);
    af->path = af->tmp_path = NULL;
    return failed ? -1 : 0;
}

void atomic_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    if (af->tmp_path) unlink(af->tmp_path);
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
}

int atomic_write_file(const char *path, const void *data, size_t bytes) {
    AtomicFile af;
    if (atomic_open(&af, path)) return -1;
    if (bytes && fwrite(data, 1, bytes, af.f) != bytes) {
        int e = errno;
        atomic_abort(&af);
        return up_error("%s: write failed (%s); expected enough disk space", path, strerror(e));
    }
    return atomic_commit(&af);
}

int read_file(const char *path, char **data, size_t *bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) return up_error("%s: cannot open (%s); expected an existing readable file", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return up_error("%s: not a regular file; expected a readable file", path);
    }
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return up_error("%s: cannot seek; expected a regular file", path);
    }
    long n = ftell(f);
    if (n < 0) {
        fclose(f);
        return up_error("%s: cannot determine size; expected a regular file", path);
    }
    rewind(f);
    char *buf = xmalloc((size_t)n + 1);
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return up_error("%s: short read; expected %ld bytes", path, n);
    }
    buf[n] = 0;
    fclose(f);
    *data = buf;
    if (bytes) *bytes = (size_t)n;
    return 0;
}

int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int mkdir_p(const char *path) {
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                int e = errno;
                free(p);
                return up_error("%s: cannot create directory (%s); expected a writable location", path, strerror(e));
            }
            *s = '/';
        }
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        int e = errno;
        free(p);
        return up_error("%s: cannot create directory (%s); expected a writable location", path, strerror(e));
    }
    free(p);
    if (!is_dir(path)) return up_error("%s: exists and is not a directory; expected a directory", path);
    return 0;
}

int remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return 0;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
                char *child = path_join(path, de->d_name);
                remove_tree(child);
                free(child);
            }
            closedir(d);
        }
        return rmdir(path);
    }
    return unlink(path);
}

char *path_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = xmalloc(n);
    size_t la = strlen(a);
    snprintf(p, n, (la && a[la - 1] == '/') ? "%s%s" : "%s/%s", a, b);
    return p;
}

/* ---- rng ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rng_seed(Rng *rng, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_next(Rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double rng_uniform(Rng *rng) { return (double)(rng_next(rng) >> 11) * 0x1.0p-53; }

float rng_normal(Rng *rng) {
    double u1 = rng_uniform(rng), u2 = rng_uniform(rng);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint64_t rng_below(Rng *rng, uint64_t n) { return n ? rng_next(rng) % n : 0; }

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void format_duration(double seconds, char *buf, size_t n) {
    int s = (int)(seconds + 0.5);
    if (s >= 3600) snprintf(buf, n, "%dh%02dm", s / 3600, (s / 60) % 60);
    else if (s >= 60) snprintf(buf, n, "%dm%02ds", s / 60, s % 60);
    else snprintf(buf, n, "%ds", s);
}

int copy_file(const char *src, const char *dst) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return up_error("%s: cannot open (%s); expected a readable file", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = errno;
        close(in);
        return up_error("%s: cannot create (%s); expected a writable directory", dst, strerror(e));
    }
    size_t cap = (size_t)1 << 20;
    char *buf = xmalloc(cap);
    int rc = 0;
    for (;;) {
        ssize_t n = read(in, buf, cap);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = up_error("%s: read failed (%s); expected a readable file", src, strerror(errno));
            break;
        }
        if (n == 0) break;
        for (ssize_t done = 0; done < n;) {
            ssize_t k = write(out, buf + done, (size_t)(n - done));
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) {
                rc = up_error("%s: write failed (%s); expected enough disk space", dst, strerror(errno));
                break;
            }
            done += k;
        }
        if (rc) break;
    }
    free(buf);
    if (rc == 0 && fsync(out) != 0) rc = up_error("%s: fsync failed (%s); expected enough disk space", dst, strerror(errno));
    if (close(out) != 0 && rc == 0) rc = up_error("%s: write failed (%s); expected enough disk space", dst, strerror(errno));
    close(in);
    return rc;
}

int str_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static size_t page_size(void) {
    static size_t page;
    if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
    return page;
}

void map_prefault(const void *addr, size_t len) {
#ifdef MADV_POPULATE_READ
    uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(page_size() - 1), b = (uintptr_t)addr + len;
    if (len) madvise((void *)a, b - a, MADV_POPULATE_READ);
#else
    (void)addr;
    (void)len;
#endif
}

void map_release(const void *addr, size_t len) {
    size_t page = page_size();
    uintptr_t a = (uintptr_t)addr, b = a + len;
    a = (a + page - 1) & ~(uintptr_t)(page - 1);
    b &= ~(uintptr_t)(page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

void cpu_description(char *out, size_t cap) {
    char model[256] = "unknown CPU", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            const char *v = strchr(line, ':') + 1;
            while (*v == ' ' || *v == '\t') v++;
            snprintf(model, sizeof model, "%.*s", (int)strcspn(v, "\n"), v);
            break;
        }
    if (f) fclose(f);
    const char *isa = "no AVX2";
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16")) isa = "AVX-512 with BF16";
    else if (__builtin_cpu_supports("avx512f")) isa = "AVX-512";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = "AVX2, FMA";
#else
    isa = "not x86-64";
#endif
    snprintf(out, cap, "%s (%s)", model, isa);
}

char *make_scratch_dir(const char *prefix) {
    const char *tmp = getenv("TMPDIR");
    char *dir = xasprintf("%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    if (!mkdtemp(dir)) {
        up_error("%s: cannot create a scratch directory (%s); expected a writable TMPDIR", dir, strerror(errno));
        free(dir);
        return NULL;
    }
    return dir;
}
