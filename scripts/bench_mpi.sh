#!/usr/bin/env bash
# Scaling benchmark for MPI on one machine: the same training run (same global batch, same
# steps) as 1 process x T threads, as R ranks x T/R threads data parallel, and as R ranks with
# the experts sharded over them (--expert-parallel), at equal total threads. Prints tokens/s of
# each and the ratios to one process. Usage:
#   scripts/bench_mpi.sh [DATA_DIR] [CONFIG_OR_PRESET] [STEPS] [RANKS] [TOTAL_THREADS]
# defaults: data/shakespeare (made by make demo), preset small, 30 steps, 2 ranks, all cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data/shakespeare}
MODEL=${2:-small}
STEPS=${3:-30}
RANKS=${4:-2}
THREADS=${5:-$(nproc)}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE
if [ -f "$MODEL" ]; then SRC=(--config "$MODEL"); else SRC=(--preset "$MODEL"); fi
W=$(mktemp -d "${TMPDIR:-/tmp}/upcycle_bench_mpi.XXXXXX")
trap 'rm -rf "$W"' EXIT
tps() { sed -n 's/^done: .*(\([0-9.]*\)k tok\/s).*/\1/p' "$1"; }
./upcycle train "${SRC[@]}" --data "$DATA" --out "$W/one" --steps "$STEPS" --eval-every 0 --eval-batches 1 \
  --threads "$THREADS" --device cpu --quiet >"$W/one.txt"
mpirun --oversubscribe --bind-to none -np "$RANKS" ./upcycle train "${SRC[@]}" --data "$DATA" --out "$W/many" --steps "$STEPS" \
  --eval-every 0 --eval-batches 1 --threads $((THREADS / RANKS > 0 ? THREADS / RANKS : 1)) --device cpu --quiet >"$W/many.txt"
mpirun --oversubscribe --bind-to none -np "$RANKS" ./upcycle train "${SRC[@]}" --data "$DATA" --out "$W/ep" --steps "$STEPS" \
  --eval-every 0 --eval-batches 1 --threads $((THREADS / RANKS > 0 ? THREADS / RANKS : 1)) --device cpu --quiet \
  --expert-parallel >"$W/ep.txt"
a=$(tps "$W/one.txt")
b=$(tps "$W/many.txt")
c=$(tps "$W/ep.txt")
echo "1 process x $THREADS threads: ${a}k tokens/s"
echo "$RANKS ranks x $((THREADS / RANKS > 0 ? THREADS / RANKS : 1)) threads, data parallel: ${b}k tokens/s"
echo "$RANKS ranks x $((THREADS / RANKS > 0 ? THREADS / RANKS : 1)) threads, expert parallel: ${c}k tokens/s"
awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN { printf "data parallel / one process: %.2fx; expert parallel / one process: %.2fx\n", b / a, c / a }'
