#!/usr/bin/env bash
# Runs every test suite and closes with one line "N passed, N failed, N skipped" (the sums).
# Suites: C unit tests (ops, data, safetensors, model, PyTorch parity, checkpoints),
# the PyTorch reference's self-test, the CLI tests (exit codes, messages, no partial output),
# Hugging Face tokenizer parity with the Rust tokenizers library (tests/hf_tokenizer_test.sh) and
# parity with Hugging Face transformers 4.57 and 5 (tests/hf_transformers_test.sh; both skipped
# without the PyPI environment of scripts/pyenv.sh), the crash tests (SIGKILL while writing, disk full: tests/crash_test.sh), and the MPI tests
# (data parallel under mpirun -np 2/4, tests/mpi_test.sh; skipped in a build without MPI).
# Environment (the sanitizer build, `make test-sanitize`, runs the same suites on its binaries):
#   UPCYCLE_TEST_RUNNER  unit test binary (default build/test_runner)
#   UPCYCLE_BIN          upcycle binary for the CLI tests (default ./upcycle)
#   UPCYCLE_TEST_SKIP    unit tests to skip, substrings of their names, comma-separated
#   UPCYCLE_SKIP_SUITES  suites to skip, comma-separated (unit, torch-reference-selftest, cli, hf-tokenizer, transformers, crash, mpi)
set -u
cd "$(dirname "$0")/.."
total_pass=0
total_fail=0
total_skip=0 # tests that could not run here (e.g. "skipped: no CUDA device"): neither passed nor failed
suite_failed=0
run_suite() {
  local name=$1; shift
  case ",${UPCYCLE_SKIP_SUITES:-}," in *",$name,"*) echo "== $name: skipped (UPCYCLE_SKIP_SUITES)"; return ;; esac
  echo "== $name"
  local log
  log=$(mktemp)
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line
  line=$(grep -oE '[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  local s
  s=$(grep -oE '[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$log" | tail -n 1 | awk '{print $5}')
  total_skip=$((total_skip + ${s:-0}))
  rm -f "$log"
  if [ -z "$line" ]; then
    echo "$name: no result line (exit $rc)"
    total_fail=$((total_fail + 1))
    return
  fi
  local p f
  p=$(echo "$line" | awk '{print $1}')
  f=$(echo "$line" | awk '{print $3}')
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "$name: exit $rc without a counted failure"
    total_fail=$((total_fail + 1))
  fi
}
run_suite unit "${UPCYCLE_TEST_RUNNER:-build/test_runner}"
run_suite torch-reference-selftest /usr/bin/python3 tests/torch_ref_selftest.py
run_suite cli bash tests/cli_test.sh
run_suite hf-tokenizer bash tests/hf_tokenizer_test.sh
run_suite transformers bash tests/hf_transformers_test.sh
run_suite crash bash tests/crash_test.sh
run_suite mpi bash tests/mpi_test.sh
echo "total: $total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
