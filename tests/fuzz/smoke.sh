#!/usr/bin/env bash
# make fuzz-smoke: tests/fuzz/smoke.sh SECONDS NAME...
# For each harness build-fuzz/fuzz_NAME: replay every file of tests/fuzz/regressions/NAME/ (each
# input that once crashed, leaked or hit undefined behaviour; all must now run clean), then fuzz
# SECONDS seconds from the seed corpus tests/fuzz/corpus/NAME/ with the dictionary
# tests/fuzz/NAME.dict when there is one (new inputs go to
# build-fuzz/corpus/NAME/, never into the source tree; crashes to build-fuzz/artifacts/NAME/).
# Two harnesses run at a time (2 cores). Closes with "fuzz-smoke: N passed, N failed".
set -u
cd "$(dirname "$0")/../.." || exit 1
seconds=${1:-20}
shift
[ $# -gt 0 ] || { echo "usage: tests/fuzz/smoke.sh SECONDS NAME..."; exit 2; }
jobs=${FUZZ_JOBS:-2}
mkdir -p build-fuzz/logs

one() { # NAME: exit 0 if the regressions replay clean and fuzzing finds nothing
  local name=$1 bin=build-fuzz/fuzz_$1 log=build-fuzz/logs/$1.log
  local corpus=build-fuzz/corpus/$name artifacts=build-fuzz/artifacts/$name/
  mkdir -p "$corpus" "$artifacts"
  : >"$log"
  local files=()
  if [ -d "tests/fuzz/regressions/$name" ]; then
    while IFS= read -r -d '' f; do files+=("$f"); done < <(find "tests/fuzz/regressions/$name" -type f -print0 | sort -z)
  fi
  if [ ${#files[@]} -gt 0 ]; then
    if ! "$bin" -rss_limit_mb=2048 -timeout=30 "${files[@]}" >>"$log" 2>&1; then
      echo "FAIL fuzz_$name: a regression input fails again (see $log)"
      tail -n 30 "$log" | sed 's/^/    /'
      return 1
    fi
  fi
  local dict=()
  [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
      -artifact_prefix="$artifacts" "$corpus" "tests/fuzz/corpus/$name" >>"$log" 2>&1; then
    echo "FAIL fuzz_$name: fuzzing found a crash, leak or undefined behaviour (input in $artifacts, log $log)"
    grep -E "ERROR|SUMMARY|runtime error" "$log" | head -n 5 | sed 's/^/    /'
    return 1
  fi
  local execs
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1)
  echo "ok fuzz_$name: ${#files[@]} regression inputs replayed, ${execs:-?} executions in ${seconds}s, nothing found"
}
export -f one
export seconds

results=$(printf '%s\n' "$@" | xargs -P "$jobs" -I{} bash -c 'one "$1"' _ {})
echo "$results"
passed=$(grep -c '^ok ' <<<"$results")
failed=$(grep -c '^FAIL ' <<<"$results")
echo "fuzz-smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -eq $# ]
