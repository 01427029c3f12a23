#!/usr/bin/env bash
# Crash-safety and disk-full tests of ./upcycle: SIGKILL at random moments (most of them while
# checkpoints are being written) and writes that fail with ENOSPC (a small tmpfs) or EFBIG
# (RLIMIT_FSIZE via `ulimit -f`).
#   1. train --save-every 1, killed >= 8 times and resumed from its latest checkpoint each time:
#      every checkpoint left loads, and the per-step losses, the final weights and the final step
#      equal those of an uninterrupted run (bit for bit).
#   2. grow, slowed down by strace's delay injection and killed mid-write: OUT is either absent
#      or a complete checkpoint; a rerun succeeds and writes the same bytes as an uninterrupted grow.
#   3. experiment on a tiny plan, killed and rerun several times: results equal an uninterrupted
#      run's, every run is done, and a stage without stage.json is redone, never reported.
#   4. disk full / file too large for train, grow and tokenize: non-zero exit, one stderr line
#      naming the file and the failure, no partial output, the previous checkpoint or output intact.
#   5. tokenize --force killed at the swap of the new OUT into place: OUT is old or new, whole; the
#      next run cleans up the leftovers and says so.
# Run from anywhere as `bash tests/crash_test.sh`; prints "ok NAME" / "FAIL NAME: DETAILS" /
# "skipped NAME: WHY" per check and closes with "crash: N passed, N failed, N skipped" (exit 1 if
# any failed). UPCYCLE_CRASH_SEED=N replays the random kill delays of an earlier run.
# Needs: python3, timeout; strace for 2 and root (mount -t tmpfs) for the ENOSPC cases of 4,
# which are reported as "skip" without them (the EFBIG cases run anywhere). About 35 s on 2
# cores: the uninterrupted reference runs go in the background, beside the train kill rounds.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
UP="${UPCYCLE_BIN:-$ROOT/upcycle}" # the sanitizer suite runs these tests on build-san/upcycle
case "$UP" in /*) ;; *) UP="$ROOT/$UP" ;; esac
THREADS=(--threads 1) # one thread: bit-exact comparisons, and room beside other suites on 2 cores
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
CMD_TIMEOUT=120 # one command never takes this long; a hang becomes a failed check
SEED="${UPCYCLE_CRASH_SEED:-$$}"
RANDOM=$SEED

W=$(mktemp -d "${TMPDIR:-/tmp}/upcycle_crash.XXXXXX")
CAP=$(mktemp -d "${TMPDIR:-/tmp}/upcycle_crash_cap.XXXXXX") # captured stdout/stderr, outside $W
MOUNTS=() # tmpfs mounts still to unmount
BG=()     # background processes of this script still to end
REFS_PID="" # the subshell running the reference runs (section "references")
cleanup() {
  local p m
  for p in "${BG[@]}"; do kill -9 "$p" 2>/dev/null; done
  if [ -n "$REFS_PID" ]; then # its timeout(1) passes the TERM on to upcycle
    pkill -TERM -P "$REFS_PID" 2>/dev/null
    kill "$REFS_PID" 2>/dev/null
    wait "$REFS_PID" 2>/dev/null
  fi
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  rm -rf "$W" "$CAP"
}
trap cleanup EXIT

. tests/lib.sh # ok, fail, skip, oneline, run
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3 # not a version-manager shim: 0.5 s less per call
py() { "$PY" -c "$@" 2>&1; }
now() { date +%s.%N; }
# RAND = a uniform random number in [LO, HI], 3 decimals ($RANDOM is drawn here, not in a
# subshell, which would reseed it: the seed must replay the same delays)
rand_between() {
  local r=$RANDOM
  RAND=$(awk -v r="$r" -v lo="$1" -v hi="$2" 'BEGIN { printf "%.3f", lo + (r / 32767) * (hi - lo) }')
}
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
snapshot() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r md5sum) 2>/dev/null; }
same_file() { cmp -s "$1" "$2"; }
ckpt_dirs() { find "$1" -mindepth 1 -maxdepth 1 -type d \( -regex '.*/ckpt_[0-9]*' -o -name final \) 2>/dev/null | sort; }
latest_ckpt() { find "$1" -mindepth 1 -maxdepth 1 -type d -regex '.*/ckpt_[0-9]*' 2>/dev/null | sort | tail -n 1; }
# inspect every checkpoint dir under $1; sets N_CKPT and BAD (a list of failures)
inspect_all() {
  N_CKPT=0
  BAD=()
  local d
  for d in $(ckpt_dirs "$1"); do
    N_CKPT=$((N_CKPT + 1))
    run "$UP" inspect --ckpt "$d"
    [ "$RC" -eq 0 ] || BAD+=("inspect $(basename "$d"): exit $RC $(oneline "$ERR")")
  done
}
# kill -9 a child started with & and wait for it; sets ST (137: killed as planned)
kill_wait() {
  kill -9 "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  ST=$?
}
echo "crash tests: seed $SEED (UPCYCLE_CRASH_SEED=$SEED replays the kill delays)"
BIN_SUM=$(cksum <"$UP") # a rebuild in the middle of the run would compare two different programs
T_START=$(now)

# ---------------------------------------------------------------- setup
head -c 200000 data/tinyshakespeare.txt >"$W/corpus.txt"
DATA="$W/data"
run "$UP" tokenize --input "$W/corpus.txt" --out "$DATA"
if [ "$RC" -ne 0 ] || [ ! -f "$DATA/pretrain.bin" ]; then
  fail "setup: byte tokenize" "exit $RC, stderr: $(oneline "$ERR")"
  echo "crash: $PASS passed, $FAILED failed, $SKIPPED skipped"
  exit 1
fi

# ---------------------------------------------------------------- references
# The uninterrupted runs the killed ones are compared with run in the background, on the second
# core, while the first train kill rounds run: train (40 steps, --save-every 1), grow x2 of its
# final checkpoint, and the experiment plan of section 3. Each writes "EXIT SECONDS" to $CAP/ref_*.rc.
STEPS=40
TRAIN=(--preset tiny --steps $STEPS --batch-size 2 --seq-len 16 --eval-every 0 --save-every 1 --log-every 100
  --data "$DATA" "${THREADS[@]}")
REF="$W/ref"
CK="$REF/final"
GREF="$W/grow_ref"
XREF="$W/x_ref"
PLAN="$W/plan.json"
cat >"$PLAN" <<'EOF'
{"name": "crash-test", "description": "tiny plan for tests/crash_test.sh", "preset": "tiny",
 "model": {"hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
   "intermediate_size": 64, "num_experts": 4, "moe_intermediate_size": 32},
 "train": {"eval_every": 10, "eval_batches": 2, "batch_size": 2, "seq_len": 16, "warmup_steps": 2},
 "factor": 2, "steps": 20, "seeds": 1, "final_eval_batches": 2, "sweeps": {"main": {"tau": 0.5}}}
EOF
timed() { # NAME CMD...: runs CMD with stdout/stderr in $CAP/NAME.out/.err, "EXIT SECONDS" in $CAP/NAME.rc
  local name=$1 t0 rc
  shift
  t0=$(now)
  timeout "$CMD_TIMEOUT" "$@" >"$CAP/$name.out" 2>"$CAP/$name.err"
  rc=$?
  echo "$rc $(calc "$(now) - $t0")" >"$CAP/$name.rc"
  return $rc
}
(
  timed ref_train "$UP" train "${TRAIN[@]}" --out "$REF" && timed ref_grow "$UP" grow --ckpt "$CK" --out "$GREF" --factor 2 "${THREADS[@]}"
  timed ref_experiment "$UP" experiment --plan "$PLAN" --data "$DATA" --out "$XREF" "${THREADS[@]}"
) &
REFS_PID=$!
# ref_result NAME: sets REF_RC, REF_SECONDS and REF_ERR (stderr without the CUDA notice)
ref_result() {
  read -r REF_RC REF_SECONDS <"$CAP/$1.rc" 2>/dev/null || { REF_RC=255 REF_SECONDS=0; }
  REF_ERR=$(grep -vxF "$NOTICE" "$CAP/$1.err" 2>/dev/null)
}

T_SECTION=$(now)
section_done() { echo "  ($1: $(calc "$(now) - $T_SECTION") s)"; T_SECTION=$(now); }
# ---------------------------------------------------------------- 1. train: kill -9 and resume
# The same 40-step run with a checkpoint after every step (most of the time goes to saving).
# Kill rounds: most wait for a new checkpoint (so every round makes progress) and then kill 0
# to 2.5 step-times later, i.e. mostly in the middle of the next save; every fourth kills
# 0.2-1 s after the start (loading, the first step and save). Each restart resumes from the latest
# ckpt_NNNNNN (never a *.tmp.* leftover). The step time (a step and its save) is measured in
# the first round, between its first two new checkpoints.
KD="$W/killed"
kills=0 crashes=0 attempts=0 finished=0 delays="" step_time=""
while [ $kills -lt 8 ] && [ $attempts -lt 16 ]; do
  attempts=$((attempts + 1))
  latest=$(latest_ckpt "$KD")
  if [ -n "$latest" ]; then from=(--resume "$latest"); else from=(--force); fi
  "$UP" train "${TRAIN[@]}" --out "$KD" "${from[@]}" >"$CAP/kill_out" 2>"$CAP/kill_err" &
  pid=$!
  BG=("$pid")
  if [ $((attempts % 4)) -eq 0 ]; then
    rand_between 0.2 1
    delay=$RAND
    delays="$delays s$delay"
  else
    seen=0 t_first=""
    for _ in $(seq 3000); do # until a new checkpoint is in place (at most 60 s) or the run ended
      now_latest=$(latest_ckpt "$KD")
      if [ "$now_latest" != "$latest" ]; then
        seen=$((seen + 1)) latest=$now_latest
        [ -n "$step_time" ] && break
        if [ $seen -eq 1 ]; then t_first=$(now); else step_time=$(calc "$(now) - $t_first"); break; fi
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.02
    done
    [ -z "$step_time" ] && step_time=0.2
    rand_between 0 "$(calc "2.5 * $step_time")"
    delay=$RAND
    delays="$delays $delay"
  fi
  sleep "$delay"
  kill_wait "$pid"
  BG=()
  if [ "$ST" -eq 137 ]; then kills=$((kills + 1))
  elif [ "$ST" -eq 0 ]; then finished=1; break
  else crashes=$((crashes + 1)); echo "  round $attempts: exit $ST: $(oneline "$(cat "$CAP/kill_err")")"; fi
done
leftovers=$(find "$KD" -maxdepth 1 -name '*.tmp.*' 2>/dev/null | wc -l)
latest=$(latest_ckpt "$KD")
if [ $finished -eq 0 ]; then
  if [ -n "$latest" ]; then from=(--resume "$latest"); else from=(--force); fi
  run "$UP" train "${TRAIN[@]}" --out "$KD" "${from[@]}"
  finish_rc=$RC finish_err=$ERR
else finish_rc=0 finish_err=""; fi
if [ $kills -ge 8 ] && [ $crashes -eq 0 ] && [ "$finish_rc" -eq 0 ]; then
  ok "train killed $kills times (step time $step_time s, delays${delays} s; s = from the start), no other crash, then resumed from $(basename "${latest:-none}") to the end"
else
  fail "train killed and resumed" "$kills kills in $attempts rounds (need 8; run finished early: $finished), $crashes exits other than SIGKILL, final resume exit $finish_rc ($(oneline "$finish_err")), delays${delays}"
fi
wait "$REFS_PID"
REFS_PID=""
ref_result ref_train
if [ "$REF_RC" -eq 0 ] && [ -f "$REF/final/model.safetensors" ] && [ "$(wc -l <"$REF/metrics.jsonl")" -eq $STEPS ]; then
  ok "train reference: $STEPS steps with --save-every 1 in $REF_SECONDS s (beside the kill rounds)"
else fail "train reference run" "exit $REF_RC, stderr: $(oneline "$REF_ERR")"; fi
inspect_all "$KD"
if [ $N_CKPT -ge 2 ] && [ ${#BAD[@]} -eq 0 ]; then
  ok "train after $kills kills: all $N_CKPT checkpoint dirs load ($leftovers *.tmp.* leftovers, none taken for a checkpoint)"
else fail "train after the kills: every checkpoint dir loads" "$N_CKPT dirs: $(printf '%s; ' "${BAD[@]}")"; fi
# the last line logged for each step (a resumed run re-logs the steps after its checkpoint)
cmp_metrics='
import json, sys
def last(path):
    out, bad = {}, 0
    for line in open(path):
        try: j = json.loads(line)
        except ValueError: bad += 1; continue
        out[j["step"]] = j
    return out, bad
ref, _ = last(sys.argv[1]); got, bad = last(sys.argv[2]); n = int(sys.argv[3])
problems = []
if bad: problems.append("%d unparseable lines" % bad)
if sorted(ref) != list(range(1, n + 1)): problems.append("reference steps %s" % sorted(ref))
missing = [s for s in range(1, n + 1) if s not in got]
if missing: problems.append("steps missing: %s" % missing[:10])
diff = [(s, ref[s]["loss"], got[s]["loss"]) for s in range(1, n + 1) if s in got and got[s]["loss"] != ref[s]["loss"]]
if diff: problems.append("%d losses differ, first (step, reference, resumed): %s" % (len(diff), diff[:3]))
other = [s for s in range(1, n + 1) if s in got and got[s] != ref[s] and got[s]["loss"] == ref[s]["loss"]]
if other: problems.append("other fields differ at steps %s" % other[:5])
print("; ".join(problems))
'
problems=$(py "$cmp_metrics" "$REF/metrics.jsonl" "$KD/metrics.jsonl" $STEPS)
lines=$(wc -l <"$KD/metrics.jsonl")
if [ -z "$problems" ]; then
  ok "train after $kills kills: the $STEPS per-step losses (and the other metrics) equal the uninterrupted run's bit for bit ($lines lines in metrics.jsonl)"
else fail "train after the kills: per-step losses equal the reference" "$(oneline "$problems")"; fi
got=$(py "import json;print(json.load(open('$KD/final/training/trainer.json'))['step'])")
differ="" common=""
for d in $(ckpt_dirs "$KD"); do # final, and the ckpt_NNNNNN both runs kept (the last two)
  b=$(basename "$d")
  [ -d "$REF/$b" ] || continue
  common="$common $b"
  for f in model.safetensors training/optimizer.safetensors; do same_file "$REF/$b/$f" "$d/$f" || differ="$differ $b/$f"; done
done
if [ "$got" = "$STEPS" ] && [ -z "$differ" ] && [[ "$common" == *final* ]]; then
  ok "train after $kills kills: final/trainer.json step $STEPS; weights and Adam state of${common} identical to the reference's"
else fail "train after the kills: final checkpoint" "final step '$(oneline "$got")' (expected $STEPS), compared${common:- nothing}, differing:${differ:- none}"; fi
CKPT_BYTES=$(du -sb "$REF/final" | awk '{print $1}')
rm -rf "$KD"
section_done "train kills"

# ---------------------------------------------------------------- 2. grow: kill -9 mid-write
# strace slows every write (0.7 ms), fsync and rename (30 ms): writing the output takes about
# 1.2 s instead of 0.1 s, and a kill 0-1.4 s after OUT.tmp.PID appears lands inside the output
# files, their renames, or (rarely) after the whole directory is in place.
# Odd rounds grow into a new OUT, even rounds replace an existing one with --force.
ref_result ref_grow
grow_time=$REF_SECONDS
run "$UP" inspect --ckpt "$GREF"
if [ "$REF_RC" -eq 0 ] && [ -f "$GREF/grow.json" ] && [ "$RC" -eq 0 ]; then ok "grow reference: x2 in $grow_time s, loads"
else fail "grow reference" "exit $REF_RC, stderr: $(oneline "$REF_ERR"); inspect exit $RC"; fi
GROWN_BYTES=$(du -sb "$GREF" | awk '{print $1}')
G="$W/grown"
same_grow() { same_file "$GREF/model.safetensors" "$1/model.safetensors" && same_file "$GREF/training/optimizer.safetensors" "$1/training/optimizer.safetensors"; }
if command -v strace >/dev/null 2>&1; then
  kills=0 crashes=0 delays="" states="" bad=()
  for round in 1 2 3 4; do
    force=()
    if [ $((round % 2)) -eq 1 ]; then rm -rf "$G"; else [ -d "$G" ] && force=(--force); fi
    # LeakSanitizer cannot run under ptrace: leak checks off for the traced process only
    ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -o /dev/null -e trace=write,fsync,rename \
      -e inject=write:delay_enter=700 -e inject=fsync:delay_enter=30000 -e inject=rename:delay_enter=30000 \
      "$UP" grow --ckpt "$CK" --out "$G" --factor 2 "${force[@]}" "${THREADS[@]}" >"$CAP/kill_out" 2>"$CAP/kill_err" &
    tracer=$!
    BG=("$tracer")
    tracee=""
    for _ in $(seq 3000); do # until grow starts writing its OUT.tmp.PID (at most 60 s) or ends
      if [ -z "$tracee" ]; then
        tracee=$(pgrep -P "$tracer" 2>/dev/null | head -n 1)
        [ -z "$tracee" ] && tracee=$(awk '{print $1}' "/proc/$tracer/task/$tracer/children" 2>/dev/null)
      fi
      [ -n "$tracee" ] && BG=("$tracer" "$tracee") && [ -d "$G.tmp.$tracee" ] && break
      kill -0 "$tracer" 2>/dev/null || break
      sleep 0.02
    done
    rand_between 0 1.4
    delay=$RAND
    delays="$delays $delay"
    sleep "$delay"
    if [ -n "$tracee" ]; then kill -9 "$tracee" 2>/dev/null; fi
    wait "$tracer" 2>/dev/null
    ST=$?
    BG=()
    if [ "$ST" -eq 137 ]; then kills=$((kills + 1))
    elif [ "$ST" -ne 0 ]; then crashes=$((crashes + 1)); bad+=("round $round: exit $ST $(oneline "$(cat "$CAP/kill_err")")"); fi
    if [ ! -e "$G" ]; then states="$states absent"
    else
      run "$UP" inspect --ckpt "$G"
      if [ "$RC" -eq 0 ] && same_grow "$G" && [ -f "$G/grow.json" ]; then states="$states complete"
      else states="$states BROKEN"; bad+=("round $round: $G exists but is not the complete output (inspect exit $RC: $(oneline "$ERR"))"); fi
    fi
    force=()
    [ -e "$G" ] && force=(--force)
    run "$UP" grow --ckpt "$CK" --out "$G" --factor 2 "${force[@]}" "${THREADS[@]}"
    if [ "$RC" -ne 0 ]; then bad+=("round $round: rerun exit $RC: $(oneline "$ERR")")
    elif ! same_grow "$G" || [ ! -f "$G/grow.json" ]; then bad+=("round $round: the rerun's output differs from the reference grow"); fi
  done
  leftovers=$(find "$W" -maxdepth 1 -name 'grown.*' | wc -l)
  if [ $kills -ge 3 ] && [ ${#bad[@]} -eq 0 ]; then
    ok "grow killed $kills times under strace (delays${delays} s): OUT was${states} after the kills; every rerun wrote the reference bytes ($leftovers temp leftovers beside OUT, none taken for it)"
  else
    fail "grow killed mid-write" "$kills kills (need 3), OUT states${states}, delays${delays}: $(printf '%s; ' "${bad[@]}")"
  fi
else
  skip "grow killed mid-write" "strace is not installed (needed to slow the writes down)"
fi
rm -rf "$G" "$W"/grown.*
section_done "grow kills"

# ---------------------------------------------------------------- 3. experiment: kill -9 and rerun
# $PLAN: three runs (Fixed-E, Fixed-mE, Upcycled with growth at step 10) of 20 steps each on a
# d=32 model (training takes ~1 ms a step: most of the time goes to saving and evaluating).
# Killed up to 12 times (at least 6), each kill on the rerun after the last: three of four
# rounds kill 0 to 5% of the reference's run time after the first stage has started (stdout),
# every fourth 0-20% of it after the start (the reference ran beside the train kill rounds, so
# this is a little more than it sounds); then run to the end: results.json must equal an
# uninterrupted run's (timings aside).
ref_result ref_experiment
x_time=$REF_SECONDS
if [ "$REF_RC" -eq 0 ] && [ -f "$XREF/results.json" ]; then ok "experiment reference: 3 runs of 20 steps in $x_time s"
else fail "experiment reference" "exit $REF_RC, stderr: $(oneline "$REF_ERR")"; fi
# compare two results.json: everything but timings (seconds, s/step and what derives from them)
cmp_results='
import json, sys, math
IGNORE = {"total_seconds", "seconds", "seconds_per_step", "compute", "frontier", "machine"}
def walk(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in IGNORE: continue
            if k not in a or k not in b: out.append("%s.%s only in one" % (path, k)); continue
            walk(a[k], b[k], path + "." + k, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b): out.append("%s: %d vs %d items" % (path, len(a), len(b))); return
        for i, (x, y) in enumerate(zip(a, b)): walk(x, y, "%s[%d]" % (path, i), out)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if not (a == b or abs(a - b) <= 1e-6 * max(abs(a), abs(b))): out.append("%s: %r vs %r" % (path, a, b))
    elif a != b: out.append("%s: %r vs %r" % (path, a, b))
try:
    ref = json.load(open(sys.argv[1])); got = json.load(open(sys.argv[2]))
except Exception as e:
    print("not valid JSON: %s" % e); sys.exit()
out = []
walk(ref, got, "results", out)
runs = got.get("runs", [])
notdone = [r.get("id") for r in runs if r.get("status") != "done"]
if notdone: out.insert(0, "runs not done: %s" % notdone)
if len(runs) != 3: out.insert(0, "%d runs, expected 3" % len(runs))
print("; ".join(out[:5]) + ("; ... %d differences" % len(out) if len(out) > 5 else ""))
'
# stage dirs that lack stage.json (an unfinished stage) and how many are finished
stage_report() {
  local d n_done=0 unfinished=""
  for d in "$1"/stages/*/; do
    [ -d "$d" ] || continue
    if [ -f "$d/stage.json" ]; then n_done=$((n_done + 1)); else unfinished="$unfinished $(basename "$d")"; fi
  done
  echo "$n_done done${unfinished:+, unfinished:$unfinished}"
}
ref_stages=$(stage_report "$XREF")
X="$W/x_killed"
kills=0 crashes=0 finished=0 delays="" attempts=0 errs=()
while [ $kills -lt 12 ] && [ $attempts -lt 14 ]; do
  attempts=$((attempts + 1))
  "$UP" experiment --plan "$PLAN" --data "$DATA" --out "$X" "${THREADS[@]}" >"$CAP/kill_out" 2>"$CAP/kill_err" &
  pid=$!
  BG=("$pid")
  if [ $((attempts % 4)) -eq 0 ]; then
    rand_between 0 "$(calc "0.2 * $x_time")"
    delay=$RAND
    delays="$delays s$delay"
  else
    for _ in $(seq 3000); do # until it has started its first stage (stdout, at most 60 s) or ended
      [ -s "$CAP/kill_out" ] && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.01
    done
    rand_between 0 "$(calc "0.05 * $x_time")"
    delay=$RAND
    delays="$delays $delay"
  fi
  sleep "$delay"
  kill_wait "$pid"
  BG=()
  if [ "$ST" -eq 137 ]; then kills=$((kills + 1))
  elif [ "$ST" -eq 0 ]; then finished=$((finished + 1))
  else crashes=$((crashes + 1)); errs+=("round $attempts: exit $ST $(oneline "$(grep -vxF "$NOTICE" "$CAP/kill_err")")"); fi
  [ $finished -gt 0 ] && break
done
unfinished_after_kills=$(stage_report "$X")
run "$UP" experiment --plan "$PLAN" --data "$DATA" --out "$X" "${THREADS[@]}"
if [ $kills -ge 6 ] && [ $crashes -eq 0 ] && [ "$RC" -eq 0 ]; then
  ok "experiment killed $kills times (delays${delays} s; s = from the start; stages after the kills: $unfinished_after_kills), then finished"
else fail "experiment killed and rerun" "$kills kills in $attempts rounds (need 6), $crashes other exits: $(printf '%s; ' "${errs[@]}") final rerun exit $RC ($(oneline "$ERR")), delays${delays}"; fi
problems=$(py "$cmp_results" "$XREF/results.json" "$X/results.json")
stages=$(stage_report "$X")
if [ -z "$problems" ] && [ "$stages" = "$ref_stages" ]; then
  ok "experiment after $kills kills: results.json is valid, every run done, losses and curves equal the uninterrupted run's; stage dirs: $stages"
else fail "experiment after the kills: results equal the reference" "$(oneline "$problems"); stage dirs: $stages (reference: $ref_stages)"; fi
# A stage killed after its training but before stage.json: it must be redone (resumed from its
# latest checkpoint), not reported from what its directory holds.
cpt_stage=$(find "$X/stages" -mindepth 1 -maxdepth 1 -type d -name '*+x-uniform*' | head -n 1)
if [ -n "$cpt_stage" ] && [ -f "$cpt_stage/stage.json" ]; then
  rm "$cpt_stage/stage.json" "$X/results.json"
  run "$UP" experiment --plan "$PLAN" --data "$DATA" --out "$X" "${THREADS[@]}"
  problems=$(py "$cmp_results" "$XREF/results.json" "$X/results.json")
  if [ "$RC" -eq 0 ] && [ -z "$problems" ] && [ -f "$cpt_stage/stage.json" ] && [[ "$OUT" == *"(3 stages already done)"* ]]; then
    ok "experiment: a stage without stage.json is redone (the 3 others skipped) and the results equal the reference"
  else fail "experiment: a stage without stage.json is redone" "exit $RC, stdout: $(oneline "$(printf '%s' "$OUT" | head -n 2)"), $(oneline "$problems"), stage.json $( [ -f "$cpt_stage/stage.json" ] && echo back || echo missing)"; fi
else fail "experiment: a stage without stage.json is redone" "no finished upcycled CPT stage under $X/stages"; fi
rm -rf "$X" "$XREF"
section_done "experiment kills"

# ---------------------------------------------------------------- 4. disk full
# expect_disk_full NAME NEEDLES -- CMD...: exit 1..127, exactly one stderr line that starts with
# "upcycle", contains every ','-separated needle and "No space left on device" or "File too large".
expect_disk_full() {
  local name=$1 needles=$2
  shift 3
  run "$@"
  DF_ERR=$(oneline "$ERR")
  local problems=() n
  if [ "$RC" -eq 0 ]; then problems+=("exit 0, expected a failure")
  elif [ "$RC" -ge 124 ]; then problems+=("crashed or timed out (status $RC)"); fi
  n=$(awk 'END { print NR }' "$CAP/err")
  [ "$n" -eq 1 ] || problems+=("stderr has $n lines, expected 1")
  case "$ERR" in upcycle*) ;; *) problems+=("stderr does not start with 'upcycle'") ;; esac
  case "$ERR" in *"No space left on device"* | *"File too large"*) ;; *) problems+=("stderr names neither ENOSPC nor EFBIG") ;; esac
  local IFS=','
  for n in $needles; do case "$ERR" in *"$n"*) ;; *) problems+=("stderr does not name '$n'") ;; esac; done
  unset IFS
  if [ ${#problems[@]} -eq 0 ]; then return 0; fi
  DF_PROBLEM="$(printf '%s; ' "${problems[@]}")[exit $RC, stderr: $(oneline "$ERR")]"
  return 1
}
# RLIMIT_FSIZE: a write past KB KiB fails with EFBIG (SIGXFSZ ignored; exec keeps it ignored)
FSIZE=(bash -c 'trap "" XFSZ; ulimit -f "$0" && exec "$@"')
# a tmpfs of SIZE bytes at DIR, if this process may mount one
mount_tmpfs() {
  mkdir -p "$1" && mount -t tmpfs -o "size=$2" tmpfs "$1" 2>/dev/null || return 1
  MOUNTS+=("$1")
}
unmount_tmpfs() { umount "$1" 2>/dev/null || umount -l "$1" 2>/dev/null; rmdir "$1" 2>/dev/null; }

# --- (a) train: the checkpoint that does not fit
# tmpfs: room for 2.5 checkpoints; with --save-every 5 and the default --keep 2, ckpt_000005 and
# ckpt_000010 fit, ckpt_000015 does not (the oldest is removed only after a new one is in place).
M="$W/mnt_train"
if [ "$(id -u)" -eq 0 ] && mount_tmpfs "$M" "$((CKPT_BYTES * 5 / 2))"; then
  name="disk full (tmpfs, ENOSPC): train --save-every 5 stops at the checkpoint that does not fit"
  DF_PROBLEM=""
  expect_disk_full "$name" "$M/run/ckpt_000015,.safetensors" -- "$UP" train --preset tiny --steps $STEPS --batch-size 2 \
    --seq-len 16 --eval-every 0 --save-every 5 --data "$DATA" --out "$M/run" "${THREADS[@]}"
  inspect_all "$M/run"
  listing=$(ls "$M/run" | tr '\n' ' ')
  [ "$listing" = "ckpt_000005 ckpt_000010 metrics.jsonl " ] || DF_PROBLEM="${DF_PROBLEM}left [$listing], expected ckpt_000005 ckpt_000010 metrics.jsonl; "
  [ ${#BAD[@]} -eq 0 ] || DF_PROBLEM="${DF_PROBLEM}$(printf '%s; ' "${BAD[@]}")"
  if [ -z "$DF_PROBLEM" ]; then ok "$name ($DF_ERR); ckpt_000005 and ckpt_000010 load, no temp dir left"
  else fail "$name" "$DF_PROBLEM"; fi
  # resuming on the full disk: dropping the metrics lines past ckpt_000010 cannot be written;
  # the error says so (not a vague "cannot open"), and metrics.jsonl and the checkpoint stay
  dd if=/dev/zero of="$M/filler" bs=4k >/dev/null 2>&1
  metrics_before=$(md5sum <"$M/run/metrics.jsonl")
  name="disk full (tmpfs, ENOSPC): train --resume cannot rewrite metrics.jsonl"
  DF_PROBLEM=""
  expect_disk_full "$name" "metrics.jsonl" -- "$UP" train --resume "$M/run/ckpt_000010" --data "$DATA" --out "$M/run" "${THREADS[@]}"
  [ "$(md5sum <"$M/run/metrics.jsonl")" = "$metrics_before" ] || DF_PROBLEM="${DF_PROBLEM}metrics.jsonl changed; "
  run "$UP" inspect --ckpt "$M/run/ckpt_000010"
  [ "$RC" -eq 0 ] || DF_PROBLEM="${DF_PROBLEM}ckpt_000010 no longer loads; "
  if [ -z "$DF_PROBLEM" ]; then ok "$name ($DF_ERR)"; else fail "$name" "$DF_PROBLEM"; fi
  unmount_tmpfs "$M"
  TMPFS=1
else
  skip "disk full (tmpfs, ENOSPC): train" "cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)"
  skip "disk full (tmpfs, ENOSPC): train --resume" "cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)"
  TMPFS=0
fi
# ulimit -f: every file over half of model.safetensors fails; resumed from the reference's
# ckpt_000038, the run saves ckpt_000039 and fails at its first big file.
D="$W/df_fsize"
mkdir -p "$D"
cp -r "$REF/ckpt_000038" "$D/"
before=$(snapshot "$D/ckpt_000038")
limit_kb=$(($(stat -c %s "$REF/final/model.safetensors") / 2048))
name="file too large (ulimit -f, EFBIG): train --resume fails saving the next checkpoint"
DF_PROBLEM=""
expect_disk_full "$name" "$D/ckpt_000039,model.safetensors" -- "${FSIZE[@]}" "$limit_kb" "$UP" train --resume "$D/ckpt_000038" \
  --data "$DATA" --out "$D" "${THREADS[@]}"
after=$(snapshot "$D/ckpt_000038")
[ "$before" = "$after" ] || DF_PROBLEM="${DF_PROBLEM}ckpt_000038 changed; "
listing=$(ls "$D" | tr '\n' ' ')
[ "$listing" = "ckpt_000038 metrics.jsonl " ] || DF_PROBLEM="${DF_PROBLEM}left [$listing], expected ckpt_000038 metrics.jsonl; "
run "$UP" inspect --ckpt "$D/ckpt_000038"
[ "$RC" -eq 0 ] || DF_PROBLEM="${DF_PROBLEM}inspect ckpt_000038 exit $RC; "
if [ -z "$DF_PROBLEM" ]; then ok "$name ($DF_ERR); ckpt_000038 untouched, no temp dir left"
else fail "$name" "$DF_PROBLEM"; fi
rm -rf "$D"

section_done "disk full: train"
# --- (b) grow to a full disk: no OUT, no temp dir; with --force the existing OUT stays intact
if [ "$TMPFS" -eq 1 ]; then
  for what in "half of the output" "an existing OUT replaced with --force"; do
    M="$W/mnt_grow"
    if [ "$what" = "half of the output" ]; then size=$((GROWN_BYTES / 2)); else size=$((GROWN_BYTES * 3 / 2)); fi
    if ! mount_tmpfs "$M" "$size"; then fail "disk full (tmpfs): grow, $what" "mount failed"; continue; fi
    force=()
    if [ "$what" != "half of the output" ]; then cp -r "$GREF" "$M/g"; force=(--force); fi
    before=$(snapshot "$M/g")
    name="disk full (tmpfs, ENOSPC): grow, room for $what"
    DF_PROBLEM=""
    expect_disk_full "$name" "$M/g" -- "$UP" grow --ckpt "$CK" --out "$M/g" --factor 2 "${force[@]}" "${THREADS[@]}"
    listing=$(ls "$M" | tr '\n' ' ')
    if [ ${#force[@]} -eq 0 ]; then [ -z "$listing" ] || DF_PROBLEM="${DF_PROBLEM}left [$listing] on the disk; "
    else
      [ "$listing" = "g " ] || DF_PROBLEM="${DF_PROBLEM}left [$listing], expected only g; "
      [ "$(snapshot "$M/g")" = "$before" ] || DF_PROBLEM="${DF_PROBLEM}the existing OUT changed; "
    fi
    if [ -z "$DF_PROBLEM" ]; then ok "$name ($DF_ERR); $([ ${#force[@]} -eq 0 ] && echo "nothing left on the disk" || echo "the old OUT untouched")"
    else fail "$name" "$DF_PROBLEM"; fi
    unmount_tmpfs "$M"
  done
else
  skip "disk full (tmpfs, ENOSPC): grow" "cannot mount a tmpfs here"
fi
name="file too large (ulimit -f, EFBIG): grow"
DF_PROBLEM=""
expect_disk_full "$name" "$W/g_fsize,model.safetensors" -- "${FSIZE[@]}" "$limit_kb" "$UP" grow --ckpt "$CK" --out "$W/g_fsize" --factor 2 "${THREADS[@]}"
left=$(find "$W" -maxdepth 1 -name 'g_fsize*' | wc -l)
[ "$left" -eq 0 ] || DF_PROBLEM="${DF_PROBLEM}left $left g_fsize* entries; "
if [ -z "$DF_PROBLEM" ]; then ok "$name ($DF_ERR); no OUT, no temp dir"; else fail "$name" "$DF_PROBLEM"; fi

section_done "disk full: grow"
# --- (c) tokenize to a full disk
DATA_BYTES=$(du -sb "$DATA" | awk '{print $1}')
if [ "$TMPFS" -eq 1 ]; then
  for what in "a quarter of the output" "an existing OUT replaced with --force"; do
    M="$W/mnt_tok"
    if [ "$what" = "a quarter of the output" ]; then size=$((DATA_BYTES / 4)); else size=$((DATA_BYTES * 3 / 2)); fi
    if ! mount_tmpfs "$M" "$size"; then fail "disk full (tmpfs): tokenize, $what" "mount failed"; continue; fi
    force=()
    if [ "$what" != "a quarter of the output" ]; then cp -r "$DATA" "$M/d"; force=(--force); fi
    before=$(snapshot "$M/d")
    name="disk full (tmpfs, ENOSPC): tokenize, room for $what"
    DF_PROBLEM=""
    expect_disk_full "$name" "$M/d,.bin" -- "$UP" tokenize --input "$W/corpus.txt" --out "$M/d" "${force[@]}"
    listing=$(ls "$M" | tr '\n' ' ')
    if [ ${#force[@]} -eq 0 ]; then [ -z "$listing" ] || DF_PROBLEM="${DF_PROBLEM}left [$listing] on the disk; "
    else
      [ "$listing" = "d " ] || DF_PROBLEM="${DF_PROBLEM}left [$listing], expected only d; "
      [ "$(snapshot "$M/d")" = "$before" ] || DF_PROBLEM="${DF_PROBLEM}the existing OUT changed; "
    fi
    if [ -z "$DF_PROBLEM" ]; then ok "$name ($DF_ERR); $([ ${#force[@]} -eq 0 ] && echo "nothing left on the disk" || echo "the old OUT untouched")"
    else fail "$name" "$DF_PROBLEM"; fi
    unmount_tmpfs "$M"
  done
else
  skip "disk full (tmpfs, ENOSPC): tokenize" "cannot mount a tmpfs here"
fi
name="file too large (ulimit -f, EFBIG): tokenize"
DF_PROBLEM=""
expect_disk_full "$name" "$W/d_fsize,pretrain.bin" -- "${FSIZE[@]}" $(($(stat -c %s "$DATA/pretrain.bin") / 2048)) \
  "$UP" tokenize --input "$W/corpus.txt" --out "$W/d_fsize"
left=$(find "$W" -maxdepth 1 -name 'd_fsize*' | wc -l)
[ "$left" -eq 0 ] || DF_PROBLEM="${DF_PROBLEM}left $left d_fsize* entries; "
if [ -z "$DF_PROBLEM" ]; then ok "$name ($DF_ERR); no OUT, no temp dir"; else fail "$name" "$DF_PROBLEM"; fi

section_done "disk full: tokenize"
# 5. tokenize --force killed at the moment it swaps the new OUT in (strace injects SIGKILL at the
#    syscall): OUT is the old directory or the new one, whole, and the next run that writes OUT
#    cleans up what the killed one left (and says so). Both ways of swapping: renameat2's
#    RENAME_EXCHANGE, and the two renames of a filesystem without it (forced by injecting EINVAL).
if command -v strace >/dev/null 2>&1; then
  SW=$W/swap
  mkdir -p "$SW"
  head -c 120000 data/tinyshakespeare.txt >"$SW/new.txt"
  run "$UP" tokenize --input "$SW/new.txt" --out "$SW/ref_new"
  for way in exchange two-renames; do
    rm -rf "$SW/d" "$SW"/d.*
    run "$UP" tokenize --input "$W/corpus.txt" --out "$SW/d"
    old=$(snapshot "$SW/d")
    if [ "$way" = exchange ]; then inject=(-e inject=renameat2:signal=KILL)
    else
      # the last rename is the one that moves the new directory into place: count them in a run
      run "$UP" tokenize --input "$W/corpus.txt" --out "$SW/count"
      strace -f -qq -o "$SW/trace" -e trace=rename,renameat2 -e inject=renameat2:error=EINVAL \
        "$UP" tokenize --input "$SW/new.txt" --out "$SW/count" --force >/dev/null 2>&1
      n_renames=$(grep -c 'rename(' "$SW/trace")
      inject=(-e inject=renameat2:error=EINVAL -e "inject=rename:signal=KILL:when=$n_renames")
    fi
    # (in a group with its own stderr: the shell's "Killed" notice goes there, not to the log)
    { timeout "$CMD_TIMEOUT" strace -f -qq -o /dev/null "${inject[@]}" "$UP" tokenize --input "$SW/new.txt" --out "$SW/d" --force \
      >/dev/null 2>"$CAP/swap_err"; st=$?; } 2>/dev/null
    at_kill=$( [ -d "$SW/d" ] && snapshot "$SW/d" )
    left=$(cd "$SW" && ls -d d.* 2>/dev/null | tr '\n' ' ')
    aside=$(for o in "$SW"/d.old.*; do [ -d "$o" ] && snapshot "$o"; done)
    run "$UP" tokenize --input "$SW/new.txt" --out "$SW/d" --force
    problem=""
    [ "$st" -eq 137 ] || problem="${problem}the injected kill did not happen (exit $st: $(oneline "$(cat "$CAP/swap_err")")); "
    if [ "$way" = exchange ]; then
      [ "$at_kill" = "$old" ] || problem="${problem}OUT after the kill is not the old directory, whole; "
    else
      # killed between the two renames: OUT is absent, the old one whole under OUT.old.PID
      [ -z "$at_kill" ] || problem="${problem}OUT exists after a kill between the two renames (expected it aside); "
      [ "$aside" = "$old" ] || problem="${problem}the old directory is not whole under OUT.old.PID; "
    fi
    [ -n "$left" ] || problem="${problem}the kill left no temporary entry (was it after the swap?); "
    [ "$RC" -eq 0 ] || problem="${problem}the rerun failed: $(oneline "$ERR"); "
    [ "$(snapshot "$SW/d")" = "$(snapshot "$SW/ref_new")" ] || problem="${problem}the rerun's OUT is not the new directory; "
    [ -z "$(cd "$SW" && ls -d d.* 2>/dev/null)" ] || problem="${problem}the rerun left $(cd "$SW" && ls -d d.* | tr '\n' ' '); "
    case "$ERR" in *"which has ended"*) ;; *) problem="${problem}the rerun did not say it removed the leftovers ($(oneline "$ERR")); " ;; esac
    if [ "$way" = two-renames ]; then
      case "$ERR" in *"restored from"*) ;; *) problem="${problem}the rerun did not say it restored OUT ($(oneline "$ERR")); " ;; esac
    fi
    if [ -z "$problem" ]; then ok "tokenize --force killed at the swap ($way): OUT $([ "$way" = exchange ] && echo "was the old one, whole" || echo "was aside, whole, and put back"); the rerun cleaned up [$left] and said so"
    else fail "tokenize --force killed at the swap ($way)" "$problem"; fi
  done
  section_done "tokenize killed at the swap"
else
  skip "tokenize --force killed at the swap" "no strace"
fi
[ "$(cksum <"$UP")" = "$BIN_SUM" ] || fail "the binary under test" "$UP was replaced while the tests ran (a rebuild?): the comparisons above may be between two builds"
echo "crash tests: $(calc "$(now) - $T_START") s"
echo "crash: $PASS passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
