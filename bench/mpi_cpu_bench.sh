#!/bin/bash
# Data parallel on the CPU: 2 MPI ranks with the gradient reductions
# overlapped with the backward pass (default) against NC_DP_OVERLAP=0 (reduced
# after it), alternated, and 1 rank for scale (docs/distributed.md, "Overlap").
# Prints per run the tokens/s of run.json (steps 2..N) and each rank's
# breakdown line (compute, copies, optimizer, waiting on MPI, buckets issued
# during backward), with the load average.
#   bench/mpi_cpu_bench.sh [BUILD_DIR]      (default build-dist)
# Env: MPI_BENCH_SPEC=d4 MPI_BENCH_B=2 MPI_BENCH_T=64 MPI_BENCH_ACCUM=2 (micro-steps per rank)
#      MPI_BENCH_STEPS=6 MPI_BENCH_ROUNDS=2 MPI_BENCH_THREADS=1 (per rank)
set -u
B=${1:-build-dist}
N=$PWD/$B/cli/nanochat
SPEC=${MPI_BENCH_SPEC:-d4} BS=${MPI_BENCH_B:-2} T=${MPI_BENCH_T:-64} ACC=${MPI_BENCH_ACCUM:-2}
STEPS=${MPI_BENCH_STEPS:-6} ROUNDS=${MPI_BENCH_ROUNDS:-2} TH=${MPI_BENCH_THREADS:-1}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
W=$(mktemp -d /tmp/mpi_cpu_bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
python3 - "$W" <<'EOF'
import random, sys
r = random.Random(5)
words = "the cat sat on a mat dog ran far away big small red blue tree".split()
for name, n in (("train.txt", 400), ("val.txt", 40)):
    with open(f"{sys.argv[1]}/{name}", "w") as f:
        for _ in range(n):
            f.write(" ".join(r.choice(words) for _ in range(r.randint(20, 60))) + "\n\n")
EOF
$N tok train -q -i $W/train.txt --vocab-size 300 -o $W/t.tiktoken || exit 1
run() {  # label np env...
  local label=$1 np=$2; shift 2
  local out=$W/${label//[^a-z0-9]/_}
  local args="base-train -q --spec models/specs/$SPEC.xml --data $W/train.txt --val $W/val.txt --model-tag t --tokenizer $W/t.tiktoken
    --num-iterations $STEPS --device-batch-size $BS --seq $T --total-batch-size $((BS * T * ACC * 2)) --eval-every 0 --eval-batches 1
    --threads $TH --out $out --overwrite"
  local load=$(cut -d' ' -f1 /proc/loadavg)
  if [ "$np" = 1 ]; then env "$@" $N $args > $W/log 2>&1; else env "$@" mpirun -np $np --bind-to none $N $args > $W/log 2>&1; fi
  local rc=$?
  local tps=$(python3 -c "import json,glob; print(round(json.load(open(glob.glob('$out/**/run.json', recursive=True)[0]))['tokens_per_s']))" 2>/dev/null)
  printf "%-22s rc %d  %6s tokens/s  (load %s)\n" "$label" $rc "${tps:-?}" "$load"
  grep -E "rank [0-9]+: [0-9]+ steps" $W/log | sed 's/^/    /'
  [ $rc = 0 ] || tail -5 $W/log
}
echo "== $SPEC, ${BS}x$T, $ACC micro-steps per rank (1 rank: $((2 * ACC))), $STEPS steps, $TH thread(s) per rank, $(nproc) cores"
for r in $(seq $ROUNDS); do
  run "2 ranks, overlapped" 2 NC_DP_OVERLAP=1
  run "2 ranks, after backward" 2 NC_DP_OVERLAP=0
  run "1 rank" 1 NC_DP_OVERLAP=1
done
