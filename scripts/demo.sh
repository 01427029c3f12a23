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
python3 - "$RUN/metrics.jsonl" <<'PY' 2>/dev/null || grep '"val_loss"' "$RUN/metrics.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    if "val_loss" in r or r["step"] == 1:
        v = f'{r["val_loss"]:.4f}' if "val_loss" in r else "   -  "
        print(f'  step {r["step"]:5d}: {r["loss"]:.4f} / {v}')
PY
echo
./upcycle eval --ckpt "$RUN/final" --data "$DATA"
echo
echo "sample:"
./upcycle sample --ckpt "$RUN/final" --prompt "ROMEO:" --tokens 300 --seed 7
