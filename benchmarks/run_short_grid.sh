#!/usr/bin/env bash
# The `short` learning-results grid of issue 3, in priority order, resumable across sittings:
# a (task, algo, seed) whose summary already exists in benchmarks/results/train/ is skipped.
#   bash benchmarks/run_short_grid.sh [SEEDS] [TASKS] [ALGOS] [ABLATION]
# ABLATION: "" (default) | --no-concurrent-bc | --hard-switch; named like variant_label() names it.
# Datasets must exist first: spaars-robot data collect --task hopper --quality medium (and walker2d).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-"0 1 2 3 4"}
TASKS=${2:-"hopper walker2d"}
ALGOS=${3:-"spaars iql latent raw"}
ABLATION=${4:-}
case "$ABLATION" in ""|--no-concurrent-bc|--hard-switch) ;; *) echo "unknown ablation: $ABLATION" >&2; exit 2;; esac
SUFFIX=${ABLATION:+-${ABLATION#--}}
BIN=.venv/bin/spaars-robot
for task in $TASKS; do
  for algo in $ALGOS; do
    todo=()
    for seed in $SEEDS; do
      [ -f "benchmarks/results/train/${task}_${algo}${SUFFIX}_short_seed${seed}.json" ] || todo+=("$seed")
    done
    [ ${#todo[@]} -eq 0 ] && continue
    # run seeds two at a time (one process per core). A seed whose run directory exists continues with
    # --resume: from its checkpoint.pt, or (killed during pretraining) from the partial pretraining checkpoint.
    for ((i = 0; i < ${#todo[@]}; i += 2)); do
      pids=()
      for s in "${todo[@]:i:2}"; do
        dir="runs/${task}-${algo}${SUFFIX}-short/seed$s"
        if [ -f "$dir/config.yaml" ]; then
          $BIN train --resume "$dir" --results-dir benchmarks/results/train &
        else
          $BIN train --task "$task" --dataset "$task-medium" --algo "$algo" --seeds "$s" --protocol short $ABLATION --safety-spec none --results-dir benchmarks/results/train &
        fi
        pids+=($!)
      done
      failed=0
      for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
      if [ $failed -ne 0 ]; then echo "run_short_grid: a $task $algo run failed; see its train.log" >&2; exit 1; fi
    done
  done
done
.venv/bin/python benchmarks/report_training.py > /dev/null
