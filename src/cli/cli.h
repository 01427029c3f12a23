/* cli.h - shared pieces of the subcommands: option parsing and error reporting. */
#ifndef UPCYCLE_CLI_H
#define UPCYCLE_CLI_H

/* OPT_FLOAT takes finite numbers only; OPT_COUNT is an OPT_INT that must be >= 0 */
typedef enum { OPT_STR, OPT_INT, OPT_FLOAT, OPT_FLAG, OPT_U64, OPT_STRS, OPT_COUNT } OptType;

/* OPT_STRS: an option that may be given several times; each value is appended */
#define CLI_MAX_VALUES 256
typedef struct {
    const char *items[CLI_MAX_VALUES];
    int n;
} CliStrList;

typedef struct {
    const char *name;  /* without the leading "--" */
    OptType type;
    void *dst;         /* const char **, int * (INT, COUNT), float *, int * (flag), unsigned long long *, CliStrList * */
    const char *help;
} CliOption;

/* Parses --name value / --name=value pairs. Returns 0 on success, 1 when --help was printed,
 * 2 on a usage error (already reported as one line on stderr). */
int cli_parse(const char *command, const char *synopsis, int argc, char **argv, const CliOption *opts, int n_opts);
/* Prints "upcycle: <last error>" and returns 1 (the exit status of a failed command). */
int cli_fail(void);
int cli_usage_error(const char *command, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_set_threads(int threads);
/* out = $ENV when set, else REL (a repository file such as tests/torch_bench.py) beside the
 * binary or one level up (./upcycle, build-san/upcycle); an error naming both when missing */
int cli_repo_file(const char *rel, const char *env, char *out, unsigned long cap);
/* The Python of venv NAME (base, tf4, tf5) of the pinned PyPI environment (scripts/pyenv.sh),
 * or $env when set: 0 with its path in out; 1 with the reason in why when there is none. */
/* eval and sample's batch shape: the checkpoint's training shape (training/trainer.json) for
 * what is not given (<= 0), else 8 x 128 */
void cli_default_shape(const char *ckpt, int *batch, int *seq);
int cli_pyenv_python(const char *name, const char *env, char *out, unsigned long cap, char *why, unsigned long why_cap);
int bench_tokenize_cmd(int argc, char **argv); /* cmd_bench_tokenize.c */
/* --device auto|cpu|cuda: 0 and *be, printing the CPU-fallback notice on stderr, or the exit
 * status after printing the error (2: unknown name, 1: no CUDA device for --device cuda) */
struct Backend;
#define CLI_CUDA_NOTICE "upcycle: CUDA backend: experimental, not yet verified on hardware"
/* the --device help: CUDA has not yet run on a GPU */
#define CLI_DEVICE_HELP "auto (default: the GPU when one is visible), cpu or cuda (experimental: the CUDA backend has not yet run on a GPU)"
int cli_backend(const char *command, const char *device, const struct Backend **be);
/* --save-dtype (NULL: keep the model's, *dtype -1; else fp32, bf16 or fp16 -> WEIGHT_*) and
 * --shard-size (NULL: 5GB; "N", "NMB", "NGB": bytes per model.safetensors shard), set for the
 * checkpoints this process writes */
#define CLI_SAVE_DTYPE_HELP "dtype of the saved weights: fp32, bf16 or fp16 (default: the input's, as config.json torch_dtype says)"
#define CLI_SHARD_SIZE_HELP "largest model.safetensors shard, e.g. 5GB (default, as Hugging Face), 500MB; larger models get shards and an index"
int cli_save_format(const char *command, const char *save_dtype, const char *shard_size, int *dtype);
/* --precision fp32|bf16: 0 and *precision (PRECISION_FP32 or PRECISION_BF16), or 2 after a
 * one-line usage error */
int cli_precision(const char *command, const char *name, int *precision);

int cmd_tokenize(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_grow(int argc, char **argv);
int cmd_experiment(int argc, char **argv);
int cmd_diag(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_decode(int argc, char **argv);

#endif
