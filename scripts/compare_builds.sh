#!/usr/bin/env bash
# compare_builds.sh OLD_BINARY NEW_BINARY - does a change keep behaviour and speed?
#   1. tokenize the bundled corpus with each: the shards must be identical;
#   2. 20 steps of `train --preset tiny` (one thread): metrics.jsonl and final weights identical;
#   3. a 2 -> 4 expert experiment plan (3 seeds, main sweep): results.json identical except for
#      timings, what is computed from them (the measured saving) and the machine line;
#   4. `bench train` tokens/s, old and new alternated ROUNDS times (default 3) in this one run.
# Usage: cp upcycle /tmp/old_upcycle  (before the change); make; scripts/compare_builds.sh /tmp/old_upcycle ./upcycle
# Exit 1 when a comparison of 1-3 differs. ROUNDS=N and PRESETS=tiny,small choose the benchmark.
set -u
OLD=$(realpath "$1") NEW=$(realpath "$2")
cd "$(dirname "$0")/.." || exit 1
W=$(mktemp -d "${TMPDIR:-/tmp}/upcycle_compare.XXXXXX")
trap 'rm -rf "$W"' EXIT
export OMP_WAIT_POLICY=PASSIVE
. tests/lib.sh # small_plan
bad=0
same() { if cmp -s "$2" "$3"; then echo "same: $1"; else echo "DIFFERENT: $1"; diff "$2" "$3" | head -n 20; bad=1; fi; }
for v in old new; do
  bin=$OLD; [ $v = new ] && bin=$NEW
  "$bin" tokenize --input data/tinyshakespeare.txt --out "$W/$v-data" >/dev/null || bad=1
  "$bin" train --preset tiny --data "$W/$v-data" --out "$W/$v-train" --steps 20 --threads 1 --quiet >/dev/null 2>&1 || bad=1
  small_plan "$W/plan.json" # tests/lib.sh: 2 -> 4 experts, main sweep; here with 3 seeds
  sed -i 's/"seeds": 1,/"seeds": 3,/' "$W/plan.json"
  "$bin" experiment --plan "$W/plan.json" --data "$W/$v-data" --out "$W/$v-exp" --threads 1 >/dev/null 2>&1 || bad=1
  # timings and the machine description are not results
  python3 - "$W/$v-exp/results.json" >"$W/$v-results.txt" <<'EOF_PY'
import json, sys
# measured wall-clock figures (and what is computed from them: the measured saving) differ run to run
SKIP = {"seconds", "tokens_per_second", "step_seconds", "machine", "wall_seconds", "elapsed_seconds", "generated", "date",
        "t_E", "t_mE", "saving_pct", "data"}  # data: the directory, a different one per build
def walk(x, path=""):
    if isinstance(x, dict):
        for k in sorted(x):
            if k in SKIP or "seconds" in k or k.endswith("_per_second"): continue
            walk(x[k], f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x): walk(v, f"{path}[{i}]")
    else: print(f"{path} = {x!r}")
walk(json.load(open(sys.argv[1])))
EOF_PY
done
for f in pretrain.bin cpt.bin val.bin meta.json; do same "tokenize: $f" "$W/old-data/$f" "$W/new-data/$f"; done
same "train tiny 20 steps: metrics.jsonl" "$W/old-train/metrics.jsonl" "$W/new-train/metrics.jsonl"
# a checkpoint's tensors by name, wherever its layout keeps them (model files, training/ or the
# top level of an earlier layout), as one sorted dump: the same tensors with the same bytes
tensors() {
  python3 - "$1" "$2" <<'EOF_PY'
import glob, hashlib, json, os, struct, sys
d, which = sys.argv[1], sys.argv[2]
pats = {"weights": ["model*.safetensors", "balance_bias.safetensors", "training/balance_bias.safetensors"],
        "optimizer": ["optimizer.safetensors", "training/optimizer.safetensors"]}[which]
out = {}
for pat in pats:
    for f in glob.glob(os.path.join(d, pat)):
        raw = open(f, "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        head = json.loads(raw[8:8 + n])
        for name, t in head.items():
            if name == "__metadata__":
                continue
            a, b = t["data_offsets"]
            out[name] = (t["dtype"], t["shape"], hashlib.sha256(raw[8 + n + a:8 + n + b]).hexdigest())
for name in sorted(out):
    print(name, *out[name])
EOF_PY
}
for v in old new; do tensors "$W/$v-train/final" weights >"$W/$v-weights.txt"; tensors "$W/$v-train/final" optimizer >"$W/$v-opt.txt"; done
same "train tiny 20 steps: final weights and balancing biases ($(wc -l <"$W/new-weights.txt") tensors)" "$W/old-weights.txt" "$W/new-weights.txt"
same "train tiny 20 steps: final optimizer state ($(wc -l <"$W/new-opt.txt") tensors)" "$W/old-opt.txt" "$W/new-opt.txt"
same "experiment (3 seeds): results.json without timings ($(wc -l <"$W/new-results.txt") values)" "$W/old-results.txt" "$W/new-results.txt"
echo "bench train (tokens/s, old and new alternated, ${ROUNDS:-3} rounds):"
for preset in $(echo "${PRESETS:-tiny,small}" | tr ',' ' '); do
  for r in $(seq "${ROUNDS:-3}"); do
    for v in old new; do
      bin=$OLD; [ $v = new ] && bin=$NEW
      tps=$("$bin" bench train --preset "$preset" 2>/dev/null | grep -oE '[0-9.]+k? tok(ens)?/s' | head -n 1)
      echo "  $preset round $r $v: $tps"
    done
  done
done
[ $bad -eq 0 ]
