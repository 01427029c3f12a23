#!/usr/bin/env bash
# tests/valgrind.sh (make test-valgrind): a short training run of ./upcycle under valgrind's
# memcheck - 3 steps of the tiny preset on a small byte-level data directory, a checkpoint every
# step (periodic saves, the keep-window removal, final save, evaluation) - must show no invalid
# access, no use of an uninitialised value and no leak. The thread pools' "possibly lost" TLS
# blocks are suppressed (tests/valgrind.supp); anything else, a possible leak included, fails.
# UPCYCLE_BIN picks the binary (make test-valgrind: build-vg/upcycle, -O1 without -march=native).
# Closes with "valgrind: N passed, N failed".
set -u
cd "$(dirname "$0")/.." || exit 1
UP=${UPCYCLE_BIN:-./upcycle}
if ! command -v valgrind >/dev/null 2>&1; then
  echo "FAIL valgrind: not installed (scripts/deps.sh hardening)"; echo "valgrind: 0 passed, 1 failed"; exit 1
fi
W=$(mktemp -d "${TMPDIR:-/tmp}/upcycle_vg.XXXXXX")
trap 'rm -rf "$W"' EXIT
export OMP_WAIT_POLICY=PASSIVE
head -c 50000 data/tinyshakespeare.txt >"$W/corpus.txt"
if ! "$UP" tokenize --input "$W/corpus.txt" --out "$W/data" >"$W/tokenize.log" 2>&1; then
  echo "FAIL valgrind: tokenize failed: $(tail -n 3 "$W/tokenize.log")"; echo "valgrind: 0 passed, 1 failed"; exit 1
fi
VG=(valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect,possible
  --errors-for-leak-kinds=definite,indirect,possible --suppressions=tests/valgrind.supp --num-callers=30)
pass=0 failed=0
check() { # NAME LOG RC
  if [ "$3" -eq 0 ] && grep -q "ERROR SUMMARY: 0 errors" "$2"; then
    echo "ok $1 ($(grep -oE 'ERROR SUMMARY: .*' "$2" | tail -n 1))"; pass=$((pass + 1))
  else
    echo "FAIL $1: exit $3; valgrind says:"; grep -E "^==[0-9]+== " "$2" | head -n 60 | sed 's/^/    /'
    failed=$((failed + 1))
  fi
}
"${VG[@]}" "$UP" train --preset tiny --steps 3 --batch-size 2 --seq-len 16 --eval-every 3 --eval-batches 1 \
  --save-every 1 --keep 1 --data "$W/data" --out "$W/run" --threads 2 >"$W/train.log" 2>&1
rc=$?
[ "$rc" -ne 0 ] || [ -f "$W/run/final/model.safetensors" ] || rc=1
check "valgrind: train 3 steps (save every step, keep 1, eval)" "$W/train.log" "$rc"
echo "valgrind: $pass passed, $failed failed"
[ "$failed" -eq 0 ]
