#!/bin/bash
# CORE speed, shared path (default) vs the reference path (--no-share), per task type
# (docs/eval.md, "Speed"): each task alone, the two paths interleaved, 1 thread; prints
# examples/s from CPU time (getrusage through /usr/bin/time: robust on a loaded machine)
# and wall time, with the load average.
#   bench/core_bench.sh [CKPT] [N]   CKPT (default /tmp/sr/base_checkpoints/d4), N examples per task (24)
# Env: NANOCHAT (default build/cli/nanochat), CORE_BENCH_TASKS (default: one task of each kind),
#      NC_SHARED_DIR (the bundle is $NC_SHARED_DIR/data/eval/core, default ../shared).
set -u
CK=${1:-/tmp/sr/base_checkpoints/d4}; N=${2:-24}
NC=${NANOCHAT:-build/cli/nanochat}
TASKS=${CORE_BENCH_TASKS:-copa arc_easy bigbench_language_identification boolq winogrande lambada_openai bigbench_qa_wikidata}
O=$(mktemp -d /tmp/core_bench_XXXXXX)
printf "%-34s %-9s %4s %9s %9s %9s %s\n" task path n cpu_s ex/cpu_s wall_s "load(1m)"
for t in $TASKS; do
  for mode in shared unshared; do
    flag=""; [ $mode = unshared ] && flag=--no-share
    /usr/bin/time -f "%U %S %e" -o $O/time $NC eval base --ckpt $CK --tasks $t --max-per-task $N --threads 1 $flag --out $O \
      > /dev/null 2> $O/err || { echo "$t $mode failed:"; tail -3 $O/err; continue; }
    read u s e < $O/time
    n=$(python3 -c "import json; print(json.load(open('$O/eval_base.json'))['tasks']['$t']['n'])")
    printf "%-34s %-9s %4d %9.1f %9.3f %9.1f %s\n" $t $mode $n $(python3 -c "print($u + $s)") $(python3 -c "print($n / ($u + $s))") $e "$(cut -d' ' -f1 /proc/loadavg)"
  done
done
rm -rf $O
