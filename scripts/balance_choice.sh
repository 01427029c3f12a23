#!/usr/bin/env bash
# Which balancing to train with when the checkpoint goes to transformers or vLLM (whose Qwen3-MoE,
# Qwen2-MoE, OLMoE and Mixtral have no balancing bias): the tiny preset on the bundled corpus,
# seeds 1..3, each of
#   bias      loss-free balancing bias, u = 1e-3 (the default)
#   aux0.01   --bias-rate 0 --aux-loss 0.01 (the Switch-style loss those families train with)
#   aux0.001  --bias-rate 0 --aux-loss 0.001 (transformers' qwen3_moe router_aux_loss_coef)
# and for each final checkpoint `upcycle eval --json` on the whole val split: the loss as
# transformers computes the saved model (no bias), the loss with the bias, the top-K agreement,
# and the last training step's load imbalance (the larger of the MoE layers' max/mean, metrics.jsonl). Rule, fixed before
# the runs: recommend the arm with the lowest mean transformers-function loss; a paired
# difference whose 3 per-seed values do not share one sign is reported as no difference.
# Output: one TSV line per run on stdout (docs/hf-checkpoints.md records them).
#   scripts/balance_choice.sh DATA_DIR WORK_DIR [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$1 W=$2 T=${3:-2}
mkdir -p "$W"
printf 'arm\tseed\tval_loss_transformers\tval_loss_with_bias\ttopk_agreement\tmax_load_over_mean\n'
for seed in 1 2 3; do
  for arm in bias aux0.01 aux0.001; do
    case $arm in
    bias) extra=() ;;
    aux0.01) extra=(--bias-rate 0 --aux-loss 0.01) ;;
    aux0.001) extra=(--bias-rate 0 --aux-loss 0.001) ;;
    esac
    out="$W/$arm-s$seed"
    ./upcycle train --preset tiny --data "$DATA" --out "$out" --seed "$seed" --threads "$T" --quiet --force "${extra[@]}" >/dev/null
    ev=$(./upcycle eval --ckpt "$out/final" --data "$DATA" --json --threads "$T" 2>/dev/null)
    imb=$(tail -n 1 "$out/metrics.jsonl" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("%.2f" % max(r["load_imbalance"]))' 2>/dev/null || echo "?")
    python3 -c '
import json, sys
r = json.loads(sys.argv[3])
print("\t".join([sys.argv[1], sys.argv[2], "%.4f" % r["loss"], "%.4f" % r.get("loss_with_balance_bias", r["loss"]),
                 "%.3f" % r.get("topk_agreement", 1.0), sys.argv[4]]))' "$arm" "$seed" "$ev" "$imb"
  done
done
