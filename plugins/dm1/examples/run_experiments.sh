#!/usr/bin/env bash
# DM1 experiments on BiReach2D: trains every arm (2 processes at a time, 1 thread each),
# evaluates each sampling variant by 200 closed-loop rollouts, measures batch-1 latency with
# flowkit-policy (10 batch-1 episodes, at least 200 calls), and prints the summary table.
#
#   plugins/dm1/examples/run_experiments.sh [BUILD_DIR=build] [OUT=runs/dm1] [SEEDS="0 1 2"] [STEPS=4000] [DEMOS=200] [OBS=state] [ARMS=all]
# ARMS: a space-separated subset of make_pipelines.py's arms, e.g. "reg fm mf" (empty or "all":
# every arm). With a subset the results go to results_OBS_dDEMOS_<arms>.jsonl, so running
# subsets one after another never overwrites another subset's results.
set -euo pipefail
BUILD=${1:-build}; OUT=${2:-runs/dm1}; SEEDS=${3:-"0 1 2"}; STEPS=${4:-4000}; DEMOS=${5:-200}; OBS=${6:-state}; ARMS=${7:-}; [ "$ARMS" = all ] && ARMS=
HERE=$(cd "$(dirname "$0")" && pwd)
FK="$BUILD/bin/flowkit"; POLICY="$BUILD/bin/flowkit-policy"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
PIPES="$OUT/pipelines_${OBS}_d${DEMOS}"; RUNS="$OUT/runs"; LOG="$OUT/logs"
mkdir -p "$RUNS" "$LOG"
PLAN=$(/usr/bin/python3 "$HERE/make_pipelines.py" "$PIPES" --seeds $SEEDS --steps "$STEPS" --demos "$DEMOS" --observation "$OBS" ${ARMS:+--arms $ARMS})

train_one() {  # pipeline file
  local name; name=$(basename "$1" .json)
  if [ -f "$RUNS/$name/weights.pt" ]; then return 0; fi
  rm -rf "${RUNS:?}/$name"
  nice -n 5 "$FK" -q train "$1" --runs-dir "$RUNS" > "$LOG/$name.train.log" 2>&1
}
export -f train_one; export FK RUNS LOG
cut -f5 "$PLAN" | sort -u | xargs -P 2 -I{} bash -c 'train_one {}'

RESULTS="$OUT/results_${OBS}_d${DEMOS}${ARMS:+_${ARMS// /_}}.jsonl"; : > "$RESULTS"
while IFS=$'\t' read -r name arm seed k f fk; do
  m=$(nice -n 5 "$FK" -q eval "$fk" --name "$name" --runs-dir "$RUNS" | sed -n 's/^metrics: //p')
  lat='{}'
  if [ -x "$POLICY" ]; then
    lat=$("$POLICY" "$RUNS/$name" --steps "$k" --calls 200 --episodes 10 --domain-set rollouts=1 2>/dev/null || echo '{}')
  fi
  printf '{"arm":"%s","seed":%s,"k":%s,"obs":"%s","demos":%s,"metrics":%s,"latency":%s}\n' \
    "$arm" "$seed" "$k" "$OBS" "$DEMOS" "$m" "$lat" >> "$RESULTS"
  echo "$name k=$k: $(echo "$m" | cut -c1-120)"
done < "$PLAN"
/usr/bin/python3 "$HERE/summarize.py" "$RESULTS"
