#include "test.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#ifndef MAX_TESTS
#define MAX_TESTS 512 /* tests/test_main.c only; -DMAX_TESTS=N to check the overflow error */
#endif
static struct {
    const char *name;
    test_fn fn;
} g_tests[MAX_TESTS];
static int g_count, g_dropped, g_current_failed; /* g_dropped: registered past MAX_TESTS, a failure */
static const char *g_current_skip; /* set by test_skip: the current test is skipped */
static char g_tmpdir[512], g_rundir[512];

void test_register(const char *name, test_fn fn) {
    if (g_count < MAX_TESTS) g_tests[g_count].name = name, g_tests[g_count++].fn = fn;
    else g_dropped++;
}

void test_fail(const char *file, int line, const char *fmt, ...) {
    if (g_current_failed < 5) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stdout, "    %s:%d: ", file, line);
        vfprintf(stdout, fmt, ap);
        fprintf(stdout, "\n");
        va_end(ap);
    }
    g_current_failed++;
}

const char *test_tmpdir(void) { return g_tmpdir; }

const char *test_run_dir(void) {
    if (!is_dir(g_rundir)) mkdir_p(g_rundir);
    return g_rundir;
}

void test_skip(const char *why) { g_current_skip = why; }

int main(int argc, char **argv) {
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    /* UPCYCLE_TEST_SKIP=a,b: skip the tests whose name contains a or b (the sanitizer suite
     * skips the slow PyTorch parity tests, which the normal build runs) */
    const char *skip = getenv("UPCYCLE_TEST_SKIP");
    int passed = 0, failed = 0, skipped = 0;
    snprintf(g_rundir, sizeof g_rundir, "%s/upcycle-run-%ld", base, (long)getpid());
    if (g_dropped) {
        printf("FAIL test registry: %d tests registered past MAX_TESTS (%d) would not run; expected MAX_TESTS >= %d (tests/test_main.c)\n",
               g_dropped, MAX_TESTS, g_count + g_dropped);
        failed++;
    }
    int selected = 0;
    for (int i = 0; i < g_count; i++) {
        if (argc > 1) {
            int match = 0;
            for (int a = 1; a < argc; a++) match |= strstr(g_tests[i].name, argv[a]) != NULL;
            if (!match) continue;
        }
        selected++;
        if (skip && *skip) {
            char list[512];
            snprintf(list, sizeof list, "%s", skip);
            int match = 0;
            for (char *save = NULL, *w = strtok_r(list, ",", &save); w; w = strtok_r(NULL, ",", &save))
                match |= strstr(g_tests[i].name, w) != NULL;
            if (match) {
                printf("skip %s (UPCYCLE_TEST_SKIP)\n", g_tests[i].name);
                skipped++;
                continue;
            }
        }
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s/upcycle-test-%ld-%s", base, (long)getpid(), g_tests[i].name);
        remove_tree(g_tmpdir);
        mkdir_p(g_tmpdir);
        g_current_failed = 0;
        g_current_skip = NULL;
        double t0 = now_seconds();
        g_tests[i].fn();
        double dt = now_seconds() - t0;
        if (g_current_skip && !g_current_failed) {
            skipped++;
            printf("skip %s (skipped: %s)\n", g_tests[i].name, g_current_skip);
            remove_tree(g_tmpdir);
        } else if (g_current_failed) {
            failed++;
            printf("FAIL %s (%.2fs)\n", g_tests[i].name, dt);
        } else {
            passed++;
            printf("ok   %s (%.2fs)\n", g_tests[i].name, dt);
            remove_tree(g_tmpdir);
        }
        fflush(stdout);
    }
    remove_tree(g_rundir);
    if (argc > 1 && !selected) {
        printf("FAIL no test name contains");
        for (int a = 1; a < argc; a++) printf(" '%s'", argv[a]);
        printf("; expected substrings of test names (each test's name is printed after ok/FAIL)\n");
        failed++;
    }
    printf("unit: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
