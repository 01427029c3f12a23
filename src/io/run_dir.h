/* run_dir.h - the run directory that `train --out` writes and the experiment reads back; the one
 * place that knows its names:
 *   metrics.jsonl   one JSON object per step, {"step": N, ...}, appended as steps finish (train.c
 *                   writes the lines; a line cut short by a crash is not JSON and is skipped)
 *   ckpt_NNNNNN/    the periodic checkpoint of step N (zero-padded to six digits, more if needed)
 *   final/          the last checkpoint of the run */
#ifndef UPCYCLE_IO_RUN_DIR_H
#define UPCYCLE_IO_RUN_DIR_H

#define RUN_METRICS_NAME "metrics.jsonl"
#define RUN_FINAL_NAME "final"

/* run/ckpt_NNNNNN for step (malloc'd) */
char *run_dir_checkpoint(const char *run, int step);
/* 1 and *step when name is a checkpoint's name (ckpt_ and decimal digits only), else 0 */
int run_dir_is_checkpoint(const char *name, int *step);
/* The steps of the run's periodic checkpoints, ascending, in a malloc'd array of *n (NULL and 0
 * when there are none or the directory does not exist); with_state: only those that hold
 * training state (a resumable checkpoint). */
void run_dir_list_checkpoints(const char *run, int with_state, int **steps, int *n);
/* run/metrics.jsonl (malloc'd) */
char *run_dir_metrics(const char *run);
/* The step of a metrics line (a JSON object with an integer "step"), 1 when it is one; 0 for a
 * line that is not (cut short by a crash) */
int run_dir_metrics_step(const char *line, long *step);
/* the largest step logged in run/metrics.jsonl, 0 without one */
long run_dir_metrics_last_step(const char *run);
/* Drops the lines past max_step and a torn last line (a resumed run re-does those steps, so each
 * step is logged once); the file is rewritten atomically, and only when something is dropped. */
int run_dir_metrics_truncate(const char *run, int max_step);

#endif
