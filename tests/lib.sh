# Shared by the shell test suites (cli_test.sh, crash_test.sh, mpi_test.sh): counters, report
# lines, and run() capturing a command's status and output. Source it after setting CAP (a
# directory for captured output) and CMD_TIMEOUT (seconds one command may take).
PASS=0
FAILED=0
SKIPPED=0
ok() { echo "ok $1"; PASS=$((PASS + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
# a check that could not run here: neither passed nor failed
# section NAME: true when UPCYCLE_CHECKS is unset or one of its comma-separated words is in NAME
section() {
  [ -z "${UPCYCLE_CHECKS:-}" ] && return 0
  local w IFS=,
  for w in $UPCYCLE_CHECKS; do case "$1" in *"$w"*) return 0 ;; esac; done
  return 1
}
skip() { echo "skipped $1: $2"; SKIPPED=$((SKIPPED + 1)); }
# one line for the report: newlines shown as \n, cut to 300 characters
oneline() { printf '%s' "$1" | head -c 300 | tr '\n' '\001' | sed 's/\x01/\\n/g'; }

# run CMD...: sets RC, OUT (stdout) and ERR (stderr); $CAP/out and $CAP/err hold the raw bytes
# A CUDA build on a machine without a GPU says so on stderr ($NOTICE) before running on the
# CPU: that notice is not an error line, so run() sets NOTICE_SEEN and drops it from ERR.
NOTICE='upcycle: no CUDA device visible; running on the CPU'
# on a GPU, every command that uses it says that the backend is not yet verified on hardware
CUDA_NOTICE='upcycle: CUDA backend: experimental, not yet verified on hardware'
run() {
  timeout "${CMD_TIMEOUT:-120}" "$@" >"$CAP/out" 2>"$CAP/err"
  RC=$?
  NOTICE_SEEN=0
  if grep -qxF "$NOTICE" "$CAP/err"; then
    NOTICE_SEEN=1
    grep -vxF "$NOTICE" "$CAP/err" >"$CAP/err.kept"
    mv "$CAP/err.kept" "$CAP/err"
  fi
  if grep -qxF "$CUDA_NOTICE" "$CAP/err"; then
    grep -vxF "$CUDA_NOTICE" "$CAP/err" >"$CAP/err.kept"
    mv "$CAP/err.kept" "$CAP/err"
  fi
  OUT=$(cat "$CAP/out")
  ERR=$(cat "$CAP/err")
}

# compare_results A B MIN MAX WHAT: two experiments' results.json hold the same 3 runs, the worst
# relative difference of their final validation losses lies in (MIN, MAX], and B's machine line
# contains WHAT (how it ran). Prints one line; exit status 0 when all hold.
compare_results() {
  /usr/bin/python3 - "$@" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
lo, hi, what = float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
ra = {r["id"]: r["final_val_loss"] for r in a["runs"]}
rb = {r["id"]: r["final_val_loss"] for r in b["runs"]}
if sorted(ra) != sorted(rb) or len(ra) != 3:
    print(f"runs differ: {sorted(ra)} vs {sorted(rb)}"); sys.exit(1)
worst = max(abs(ra[k] - rb[k]) / abs(ra[k]) for k in ra)
print(f"{len(ra)} runs, worst rel diff of final val loss {worst:.2e}; machine: {b['machine']}")
sys.exit(0 if lo < worst <= hi and what in b["machine"] else 1)
EOF
}

# small_plan FILE: a 12-step experiment plan (2 -> 4 experts, byte vocabulary, main sweep, 1 seed)
small_plan() {
  cat >"$1" <<'EOF_PLAN'
{"name": "small-test", "model": {"vocab_size": 256, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 48, "num_experts": 2, "moe_intermediate_size": 16},
 "train": {"batch_size": 4, "seq_len": 16, "eval_every": 4, "eval_batches": 2, "warmup_steps": 2},
 "factor": 2, "steps": 12, "seeds": 1, "final_eval_batches": 2, "sweeps": {"main": {"tau": 0.5}}}
EOF_PLAN
}
