#!/usr/bin/env bash
# Wall time of one small experiment plan run serially (one stage at a time on all cores) and with
# --jobs (one stage per core), in the same invocation, on the same data; prints both and the ratio.
#   scripts/bench_jobs.sh [DATA_DIR] [D_MODEL] [STEPS]   (defaults: a byte-level tinyshakespeare
#   directory made on the fly, the paper-tiny width 64, 300 steps)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x ./upcycle ] || make -s
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
DATA=${1:-}
D=${2:-64}
STEPS=${3:-300}
if [ -z "$DATA" ]; then
  DATA="$W/data"
  ./upcycle tokenize --input data/tinyshakespeare.txt --out "$DATA" >/dev/null
fi
VOCAB=$(sed -n 's/.*"vocab_size":[[:space:]]*\([0-9]*\).*/\1/p' "$DATA/meta.json" | head -n 1)
HEADS=$((D / 16))
cat >"$W/plan.json" <<EOF_PLAN
{"name": "bench-jobs", "model": {"vocab_size": $VOCAB, "hidden_size": $D, "num_attention_heads": $HEADS,
 "num_key_value_heads": $(( HEADS > 1 ? HEADS / 2 : 1 )), "head_dim": 16, "intermediate_size": $((3 * D)),
 "num_experts": 4, "moe_intermediate_size": $D},
 "train": {"batch_size": 16, "seq_len": 128, "eval_every": 100, "eval_batches": 4, "warmup_steps": 20},
 "factor": 2, "steps": $STEPS, "seeds": 2, "final_eval_batches": 8, "sweeps": {"main": {"tau": 0.5}}}
EOF_PLAN
CORES=$(nproc)
t0=$(date +%s.%N)
./upcycle experiment --plan "$W/plan.json" --data "$DATA" --out "$W/serial" --jobs 1 --threads "$CORES" --device cpu --probe-batches 0 >/dev/null
t1=$(date +%s.%N)
./upcycle experiment --plan "$W/plan.json" --data "$DATA" --out "$W/jobs" --jobs "$CORES" --threads "$CORES" --device cpu --probe-batches 0 >/dev/null
t2=$(date +%s.%N)
awk -v t0="$t0" -v t1="$t1" -v t2="$t2" -v cores="$CORES" -v d="$D" -v steps="$STEPS" 'BEGIN {
  serial = t1 - t0; jobs = t2 - t1
  printf "plan: d_model %s, 8 stages (%s-step runs, 2 seeds, main sweep)\n", d, steps
  printf "serial (1 stage x %s threads): %.1f s\n", cores, serial
  printf "--jobs %s (1 thread each):      %.1f s\n", cores, jobs
  printf "speed-up: %.2fx\n", serial / jobs
}'
