#!/usr/bin/env bash
# The main job on the bundled corpus: tokenize tinyshakespeare, then run the `demo` experiment
# (Fixed-8 vs Upcycled 8->16 vs Fixed-16 experts, ~5 minutes on 2 cores) and print its results
# table; the HTML report lands in runs/demo/report.html. Re-running resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=data/shakespeare
[ -f "$DATA/val.bin" ] || ./upcycle tokenize --input data/tinyshakespeare.txt --out "$DATA" --force
./upcycle experiment --preset demo --data "$DATA" --out runs/demo
echo
echo "a sample from the upcycled model:"
./upcycle sample --ckpt "runs/demo/stages/E8-k2-T200-s1+x-uniform-E16-T200/final" --prompt "ROMEO:" --tokens 200 --seed 7
