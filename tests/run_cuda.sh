#!/usr/bin/env bash
# make test-cuda: the GPU suite, on a machine with an NVIDIA GPU (sm_80 or newer) and a build
# with CUDA. Closes with "test-cuda: N passed, N failed, N skipped"; exits non-zero when a check
# fails or when the GPU tests were skipped (no device visible, or a build without nvcc).
#   1. build/test_runner cuda_: every op and the whole model against the CPU backend (fp32
#      parity, routing and loads, 20 AdamW steps), determinism, bf16 vs fp32 over 200 steps
#   2. the same op and full-MoE parity tests on the per-expert cuBLAS path (UPCYCLE_EXPERT_GEMM)
#   3. compute-sanitizer memcheck (fp32 and bf16) and racecheck on short `upcycle train` runs,
#      when compute-sanitizer is installed
set -u
cd "$(dirname "$0")/.." || exit 1
RUNNER=${UPCYCLE_TEST_RUNNER:-build/test_runner}
UP=${UPCYCLE_BIN:-./upcycle}
pass=0
fail=0
skip=0

unit() { # LABEL ENV... -- FILTERS...
  local label=$1 log line
  shift
  log=$(mktemp)
  echo "== $label"
  env "$@" 2>&1 | tee "$log"
  line=$(grep -oE '[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$log" | tail -n 1)
  rm -f "$log"
  if [ -z "$line" ]; then
    echo "$label: no result line"
    fail=$((fail + 1))
    return
  fi
  pass=$((pass + $(echo "$line" | awk '{print $1}')))
  fail=$((fail + $(echo "$line" | awk '{print $3}')))
  skip=$((skip + $(echo "$line" | awk '{print $5}')))
}

unit "GPU tests" "$RUNNER" cuda_
if [ "$skip" -gt 0 ]; then
  echo "test-cuda: $skip GPU tests skipped: no CUDA device is visible or this build has no CUDA; expected a GPU machine and a build with nvcc (make test runs the CPU suite)"
  echo "test-cuda: $pass passed, $fail failed, $skip skipped"
  exit 1
fi
unit "GPU tests, per-expert cuBLAS GEMMs" UPCYCLE_EXPERT_GEMM=cublas "$RUNNER" cuda_op_router_moe cuda_parity_full_moe

SAN=$(command -v compute-sanitizer || true)
if [ -z "$SAN" ] && command -v nvcc >/dev/null; then
  cand="$(dirname "$(command -v nvcc)")/compute-sanitizer"
  [ -x "$cand" ] && SAN=$cand
fi
if [ -z "$SAN" ]; then
  echo "== compute-sanitizer: not installed; skipped"
  skip=$((skip + 1))
else
  W=$(mktemp -d "${TMPDIR:-/tmp}/upcycle_cuda.XXXXXX")
  trap 'rm -rf "$W"' EXIT
  head -c 100000 data/tinyshakespeare.txt >"$W/corpus.txt"
  "$UP" tokenize --input "$W/corpus.txt" --out "$W/data" >/dev/null
  san_run() { # NAME TOOL EXTRA_TRAIN_ARGS...
    local name=$1 tool=$2
    shift 2
    echo "== compute-sanitizer --tool $tool: $name"
    if "$SAN" --tool "$tool" --error-exitcode 3 "$UP" train --preset tiny --device cuda --batch-size 2 --seq-len 32 \
      --eval-every 0 --eval-batches 1 --quiet --data "$W/data" --out "$W/$name" "$@" >"$W/$name.log" 2>&1; then
      echo "ok compute-sanitizer $tool $name"
      pass=$((pass + 1))
    else
      echo "FAIL compute-sanitizer $tool $name:"
      tail -n 30 "$W/$name.log"
      fail=$((fail + 1))
    fi
  }
  san_run memcheck-fp32 memcheck --steps 3
  san_run memcheck-bf16 memcheck --steps 3 --precision bf16
  san_run racecheck racecheck --steps 1
fi
echo "test-cuda: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
