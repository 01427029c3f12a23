/* dir_replace.h - write a whole directory (a checkpoint, a data directory) so that OUT is
 * always either the old directory or the new one, complete; never half of one, never absent
 * when one existed.
 *
 *   DirReplace d;
 *   if (dir_replace_begin(&d, out)) return -1;   // creates OUT.tmp.PID (and missing parents)
 *   ... write every file under d.tmp ...
 *   return rc ? (dir_replace_abort(&d), -1) : dir_replace_commit(&d);
 *
 * commit fsyncs d.tmp, swaps it with OUT in one atomic step (renameat2 RENAME_EXCHANGE; a
 * plain rename when OUT does not exist), removes the old directory (now under d.tmp's name)
 * and fsyncs the parent. On a filesystem that cannot exchange, it moves OUT aside to
 * OUT.old.PID, renames d.tmp to OUT and removes OUT.old.PID; a kill between those two renames
 * leaves the old directory whole under OUT.old.PID.
 *
 * A process killed while writing leaves OUT.tmp.PID or OUT.old.PID behind. begin() of the next
 * writer of OUT cleans them up and says so on stderr: it removes those whose process has
 * ended, and, when OUT is missing, moves a dead process's OUT.old.PID back to OUT first. Both
 * functions free d; after either, d holds nothing. */
#ifndef UPCYCLE_DIR_REPLACE_H
#define UPCYCLE_DIR_REPLACE_H

typedef struct {
    char *out; /* the directory being replaced */
    char *tmp; /* OUT.tmp.PID: write the new directory's files here */
    char *old; /* OUT.old.PID: the old directory during a fallback commit */
} DirReplace;

int dir_replace_begin(DirReplace *d, const char *out);
int dir_replace_commit(DirReplace *d);
void dir_replace_abort(DirReplace *d); /* removes d.tmp */

/* Removes directory PATH so that no partial directory is ever left under its name: renames it
 * to PATH.old.PID first, then removes that. 0 if PATH did not exist. */
int dir_remove(const char *path);

/* The stale-entry cleanup of begin(), on its own: for OUT, removes OUT.tmp.PID / OUT.old.PID
 * of processes that have ended (restoring OUT from an OUT.old.PID when OUT is missing), with
 * one stderr line each. Returns how many entries it handled. */
int dir_replace_clean_stale(const char *out);

#endif
