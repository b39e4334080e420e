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
    # run seeds two at a time (one process per core); resume a group that was interrupted
    for ((i = 0; i < ${#todo[@]}; i += 2)); do
      pair=$(IFS=,; echo "${todo[*]:i:2}")
      group="runs/${task}-${algo}${SUFFIX}-short"
      resumable=1
      for s in ${pair//,/ }; do [ -f "$group/seed$s/checkpoint.pt" ] || resumable=0; done
      if [ $resumable -eq 1 ]; then
        for s in ${pair//,/ }; do $BIN train --resume "$group/seed$s" & done; wait
      else
        $BIN train --task "$task" --dataset "$task-medium" --algo "$algo" --seeds "$pair" --protocol short --workers 2 $ABLATION
      fi
    done
  done
done
.venv/bin/python benchmarks/report_training.py > /dev/null
