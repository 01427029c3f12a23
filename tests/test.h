/* test.h - a minimal test runner: TEST(name) registers a test; CHECK* record failures.
 * The runner prints one line per failing check and closes with "N passed, N failed, N skipped". */
#ifndef UPCYCLE_TEST_H
#define UPCYCLE_TEST_H

#include <math.h>
#include <stdio.h>

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn);
void test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *test_tmpdir(void); /* a fresh directory for the current test */
const char *test_run_dir(void); /* a directory kept for the whole run (caches), removed at its end */
/* marks the current test skipped (neither passed nor failed) and says why, e.g. "no CUDA
 * device"; the caller returns. A failure recorded in the same test still fails it. */
void test_skip(const char *why);

#define TEST(name)                                                                    \
    static void name(void);                                                           \
    __attribute__((constructor)) static void register_##name(void) {                  \
        test_register(#name, name);                                                   \
    }                                                                                 \
    static void name(void)

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);               \
    } while (0)

#define CHECK_MSG(cond, ...)                                                          \
    do {                                                                              \
        if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__);                      \
    } while (0)

/* relative-or-absolute closeness: |a-b| <= tol * max(1, |a|, |b|) */
#define CHECK_CLOSE(a, b, tol)                                                        \
    do {                                                                              \
        double a_ = (a), b_ = (b), m_ = fmax(1.0, fmax(fabs(a_), fabs(b_)));          \
        if (!(fabs(a_ - b_) <= (tol) * m_))                                           \
            test_fail(__FILE__, __LINE__, "%s = %.9g vs %s = %.9g (tol %g)", #a, a_,  \
                      #b, b_, (double)(tol));                                         \
    } while (0)

#endif
