#!/usr/bin/env bash
# Parity with Hugging Face transformers itself, 4.57 and 5 (tests/hf_transformers_test.py: loss,
# logits and top-K of transformers' own checkpoints; load reports and logits of the checkpoints
# upcycle writes, trains, converts and grows; transformers -> upcycle -> transformers round trips).
# The releases come from the pinned PyPI environment (scripts/pyenv.sh, installed by make
# test-deps); without it each release prints skipped with the reason.
#   UPCYCLE_BIN   upcycle binary (default ./upcycle)
set -u
cd "$(dirname "$0")/.."
UP=${UPCYCLE_BIN:-./upcycle}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
head -c 300000 data/tinyshakespeare.txt >"$W/text.txt"
if ! "$UP" tokenize --input "$W/text.txt" --out "$W/data" >"$W/tok.log" 2>&1; then
  cat "$W/tok.log"
  echo "transformers: 0 passed, 1 failed, 0 skipped"
  exit 1
fi
pass=0 fail=0 skip=0
for v in tf4 tf5; do
  if ! py=$(scripts/pyenv.sh python "$v" 2>"$W/why"); then
    echo "skipped: transformers parity ($v): $(tr '\n' ' ' <"$W/why")"
    skip=$((skip + 1))
    continue
  fi
  "$py" tests/hf_transformers_test.py --upcycle "$UP" --work "$W" --data "$W/data" 2>&1 | tee "$W/log"
  line=$(grep -oE '[0-9]+ passed, [0-9]+ failed' "$W/log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "FAIL transformers parity ($v): no result line"
    fail=$((fail + 1))
    continue
  fi
  pass=$((pass + $(echo "$line" | awk '{print $1}')))
  fail=$((fail + $(echo "$line" | awk '{print $3}')))
done
echo "transformers: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
