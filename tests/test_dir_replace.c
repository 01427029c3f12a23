/* util/dir_replace: OUT is replaced whole or not at all; leftovers of ended processes are
 * cleaned up by the next writer (a live process's are left alone). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "util.h"
#include "util/dir_replace.h"

static void put(const char *dir, const char *name, const char *text) {
    char *p = path_join(dir, name);
    CHECK(atomic_write_file(p, text, strlen(text)) == 0);
    free(p);
}

/* the text of DIR/NAME, or "" when missing (static buffer) */
static const char *text_of(const char *dir, const char *name) {
    static char buf[256];
    char *p = path_join(dir, name), *t;
    size_t n;
    buf[0] = 0;
    if (read_file(p, &t, &n) == 0) snprintf(buf, sizeof buf, "%s", t), free(t);
    free(p);
    return buf;
}

static int n_entries_like(const char *dir, const char *prefix) {
    char cmd[1024];
    int n = 0;
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c '^%s'", dir, prefix);
    FILE *f = popen(cmd, "r");
    if (f && fscanf(f, "%d", &n) != 1) n = -1;
    if (f) pclose(f);
    return n;
}

TEST(dir_replace_swaps_whole_directories) {
    char *out = path_join(test_tmpdir(), "out");
    DirReplace d;
    CHECK(dir_replace_begin(&d, out) == 0); /* OUT does not exist yet: a plain rename */
    put(d.tmp, "a", "first");
    put(d.tmp, "b", "first-b");
    CHECK(dir_replace_commit(&d) == 0);
    CHECK(!strcmp(text_of(out, "a"), "first") && !strcmp(text_of(out, "b"), "first-b"));
    CHECK(d.tmp == NULL && d.out == NULL);

    CHECK(dir_replace_begin(&d, out) == 0); /* replace: the old files do not survive */
    put(d.tmp, "a", "second");
    CHECK(!strcmp(text_of(out, "a"), "first")); /* untouched until commit */
    CHECK(dir_replace_commit(&d) == 0);
    CHECK(!strcmp(text_of(out, "a"), "second") && !strcmp(text_of(out, "b"), ""));

    CHECK(dir_replace_begin(&d, out) == 0); /* abort: OUT stays, no temporary entry */
    put(d.tmp, "a", "third");
    dir_replace_abort(&d);
    CHECK(!strcmp(text_of(out, "a"), "second"));
    CHECK_MSG(n_entries_like(test_tmpdir(), "out\\.") == 0, "temporary entries left after abort");
    free(out);
}

TEST(dir_replace_cleans_up_after_ended_processes_only) {
    const char *dir = test_tmpdir();
    char *out = path_join(dir, "ck"), *dead_tmp = path_join(dir, "ck.tmp.999999999"),
         *dead_old = path_join(dir, "ck.old.999999998"), *live = xmalloc(strlen(dir) + 64), *other = path_join(dir, "ck2.tmp.999999999");
    sprintf(live, "%s/ck.tmp.%ld", dir, (long)getppid()); /* a process that is running */
    CHECK(mkdir_p(dead_tmp) == 0 && mkdir_p(dead_old) == 0 && mkdir_p(live) == 0 && mkdir_p(other) == 0);
    put(dead_old, "a", "old");
    /* OUT is missing and an ended process left it aside: it comes back, the rest goes */
    CHECK(dir_replace_clean_stale(out) == 2);
    CHECK(!strcmp(text_of(out, "a"), "old"));
    CHECK(!path_exists(dead_tmp) && !path_exists(dead_old));
    CHECK_MSG(path_exists(live), "a running process's temporary directory was removed");
    CHECK_MSG(path_exists(other), "another directory's leftover was removed");
    CHECK(dir_replace_clean_stale(out) == 0);
    /* dir_remove leaves nothing under the name, and is 0 for a missing path */
    CHECK(dir_remove(out) == 0 && !path_exists(out) && dir_remove(out) == 0);
    free(out), free(dead_tmp), free(dead_old), free(live), free(other);
}
