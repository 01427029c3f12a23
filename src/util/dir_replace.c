#include "util/dir_replace.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

static char *with_suffix(const char *out, const char *kind, long pid) {
    size_t n = strlen(out) + strlen(kind) + 32;
    char *p = xmalloc(n);
    snprintf(p, n, "%s.%s.%ld", out, kind, pid);
    return p;
}

static void dir_replace_free(DirReplace *d) {
    free(d->out);
    free(d->tmp);
    free(d->old);
    d->out = d->tmp = d->old = NULL;
}

/* the pid of NAME if it is BASE.KIND.<digits>, else 0 */
static long stale_pid(const char *name, const char *base, const char *kind) {
    size_t nb = strlen(base), nk = strlen(kind);
    if (strncmp(name, base, nb) || name[nb] != '.' || strncmp(name + nb + 1, kind, nk) || name[nb + 1 + nk] != '.') return 0;
    const char *digits = name + nb + nk + 2;
    if (!*digits || strspn(digits, "0123456789") != strlen(digits)) return 0;
    return atol(digits);
}

static int process_ended(long pid) {
    return pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

int dir_replace_clean_stale(const char *out) {
    char *trimmed = xstrdup(out);
    for (size_t n = strlen(trimmed); n > 1 && trimmed[n - 1] == '/'; n--) trimmed[n - 1] = 0;
    char *parent = path_dirname(trimmed);
    const char *slash = strrchr(trimmed, '/');
    const char *base = slash ? slash + 1 : trimmed;
    int handled = 0;
    DIR *dir = opendir(parent);
    for (int pass = 0; dir && pass < 2; pass++) { /* 0: restore a missing OUT; 1: remove the rest */
        rewinddir(dir);
        struct dirent *de;
        while ((de = readdir(dir))) {
            long old_pid = stale_pid(de->d_name, base, "old"), tmp_pid = stale_pid(de->d_name, base, "tmp");
            long pid = old_pid ? old_pid : tmp_pid;
            if (!process_ended(pid)) continue;
            char *path = path_join(parent, de->d_name);
            if (pass == 0 && old_pid && !path_exists(trimmed)) {
                if (rename(path, trimmed) == 0) {
                    fprintf(stderr, "upcycle: %s: restored from %s, which an interrupted replacement (process %ld) left\n",
                            trimmed, path, pid);
                    handled++;
                }
            } else if (pass == 1 && path_exists(path)) {
                remove_tree(path);
                fprintf(stderr, "upcycle: %s: removed, left behind by process %ld, which has ended\n", path, pid);
                handled++;
            }
            free(path);
        }
    }
    if (dir) closedir(dir);
    free(parent);
    free(trimmed);
    return handled;
}

int dir_replace_begin(DirReplace *d, const char *out) {
    d->out = xstrdup(out);
    d->tmp = with_suffix(out, "tmp", (long)getpid());
    d->old = with_suffix(out, "old", (long)getpid());
    dir_replace_clean_stale(out);
    remove_tree(d->tmp); /* an earlier attempt of this process */
    if (mkdir_p(d->tmp)) {
        dir_replace_free(d);
        return -1;
    }
    return 0;
}

void dir_replace_abort(DirReplace *d) {
    if (d->tmp) remove_tree(d->tmp);
    dir_replace_free(d);
}

/* the filesystem cannot exchange: move OUT aside, move the new one in, remove the old */
static int replace_by_two_renames(DirReplace *d) {
    remove_tree(d->old);
    if (rename(d->out, d->old) != 0)
        return up_error("%s: cannot move the existing directory aside (%s); expected a writable directory", d->out,
                        strerror(errno));
    if (rename(d->tmp, d->out) != 0) {
        int e = errno;
        rename(d->old, d->out);
        return up_error("%s: cannot move the new directory into place (%s); expected a writable directory", d->out,
                        strerror(e));
    }
    remove_tree(d->old);
    return 0;
}

int dir_replace_commit(DirReplace *d) {
    int rc = 0;
    if (fsync_dir(d->tmp) != 0) {
        rc = up_error("%s: fsync failed (%s); expected a writable disk", d->tmp, strerror(errno));
    } else if (renameat2(AT_FDCWD, d->tmp, AT_FDCWD, d->out, RENAME_EXCHANGE) == 0) {
        remove_tree(d->tmp); /* the old directory, under the temporary name now */
    } else if (errno == ENOENT && !path_exists(d->out)) {
        if (rename(d->tmp, d->out) != 0)
            rc = up_error("%s: cannot move the new directory into place (%s); expected a writable directory", d->out,
                          strerror(errno));
    } else if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
        rc = replace_by_two_renames(d);
    } else {
        rc = up_error("%s: cannot replace it with the new directory (%s); expected a writable directory", d->out,
                      strerror(errno));
    }
    if (!rc) {
        char *parent = path_dirname(d->out);
        fsync_dir(parent);
        free(parent);
    } else {
        remove_tree(d->tmp);
    }
    dir_replace_free(d);
    return rc;
}

int dir_remove(const char *path) {
    if (!path_exists(path)) return 0;
    char *doomed = with_suffix(path, "old", (long)getpid());
    remove_tree(doomed);
    int rc = rename(path, doomed) == 0 ? remove_tree(doomed) : remove_tree(path);
    free(doomed);
    return rc;
}
