#!/usr/bin/env bash
# The main job on the bundled corpus: tokenize tinyshakespeare, train the tiny interleaved MoE
# preset (~1-2 minutes on 2 cores), print the loss trajectory, evaluate, and sample.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=data/shakespeare
RUN=runs/demo
[ -f "$DATA/val.bin" ] || ./upcycle tokenize --input data/tinyshakespeare.txt --out "$DATA" --force
./upcycle train --preset tiny --data "$DATA" --out "$RUN" --force --log-every 50
echo
echo "loss trajectory (step: train loss / val loss):"
grep '"val_loss"' "$RUN/metrics.jsonl" | sed -E 's/.*"step": ([0-9]+), "loss": ([0-9.]+).*"val_loss": ([0-9.]+).*/  step \1: train \2 \/ val \3/'
echo
./upcycle eval --ckpt "$RUN/final" --data "$DATA"
echo
echo "sample:"
./upcycle sample --ckpt "$RUN/final" --prompt "ROMEO:" --tokens 300 --seed 7
