#!/bin/bash
# Reproduce every committed result of the toy experiment from the shipped models (models/, data/):
# the paper's grid (output/), the noisy-test grids (output-noisytest-*/), the rank analysis tables
# (output-rankanalysis/) and the qualitative figure (output-toy-figure/).
#
#   bash scripts/reproduce-toy-results.sh            # all of it
#   JOBS=4 PYTHON=python3 bash scripts/reproduce-toy-results.sh
#
# Each grid skips the runs its log already holds: after an interruption, run it again to continue.
# Delete a log first to recompute it from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
JOBS=${JOBS:-$("$PYTHON" -c 'import os; print(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())')}
GRID=(-d all -c all -n all -s 0-49 --jobs "$JOBS")

# the performance figure: output/combined.{svg,png} (rows train/test, columns datasets)
"$PYTHON" main.py "${GRID[@]}" -l ./output/log.txt
"$PYTHON" main.py -a -l ./output/log.txt

for sigma in 0.01 0.1 0.3; do
    "$PYTHON" main.py "${GRID[@]}" -nt "$sigma" -l "./output-noisytest-$sigma/log.txt"
    "$PYTHON" main.py -a -l "./output-noisytest-$sigma/log.txt"
done

# neuron rankings (a ~70 MB log, not committed) and their rank/set tables
"$PYTHON" main.py "${GRID[@]}" -rl -l ./output-rankanalysis/log.txt
"$PYTHON" main.py -a -rl -l ./output-rankanalysis/log.txt

# the qualitative figure: output-toy-figure/qualitative.{svg,png} (5 reference samples per class, seed 0)
"$PYTHON" main.py -f -d all -c all -n 5 -s 0 -cm Accent -l ./output-toy-figure/log.txt
