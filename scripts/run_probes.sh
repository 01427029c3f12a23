#!/usr/bin/env bash
# The scale probes of docs/scale.md, one after another (tuning seeds 101-103, premise sweep only),
# into runs/probes/<name>; each prints its comparison table. Resumable: rerun to continue.
#   scripts/run_probes.sh [a b c]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x ./upcycle ] || make -s
[ -f data/linux-docs/pretrain.bin ] || scripts/prepare_corpus.sh
for p in ${@:-a b c}; do
  plan=$(ls plans/probe-"$p"-*.json)
  name=$(basename "$plan" .json)
  echo "== $name ($(date -u +%H:%M:%S))"
  ./upcycle experiment --plan "$plan" --data data/linux-docs --out "runs/probes/$name" --device cpu --probe-batches 0
done
