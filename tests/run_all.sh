#!/usr/bin/env bash
# Runs every test suite and closes with one line "N passed, N failed" (the sum).
# Suites: C unit tests (ops, data, safetensors, model, PyTorch parity, checkpoints),
# the PyTorch reference's self-test, and the CLI tests (exit codes, messages, no partial output).
set -u
cd "$(dirname "$0")/.."
total_pass=0
total_fail=0
suite_failed=0
run_suite() {
  local name=$1; shift
  echo "== $name"
  local log
  log=$(mktemp)
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line
  line=$(grep -oE '[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
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
run_suite unit build/test_runner
run_suite torch-reference-selftest /usr/bin/python3 tests/torch_ref_selftest.py
run_suite cli bash tests/cli_test.sh
echo "total: $total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
