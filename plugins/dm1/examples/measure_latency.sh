#!/usr/bin/env bash
# Side-by-side policy latency on an otherwise idle machine: for each "RUN_DIR:STEPS" argument,
# flowkit-policy makes at least CALLS batch-1 policy calls on 1 thread in closed-loop BiReach2D
# episodes (20 or more, one episode per rollout: --domain-set rollouts=1; p50/p99 per call =
# per action chunk) and times a batch-200 call. Runs the list REPEATS times, interleaved, and
# prints the median of each figure over the repeats, with the ratio of p50 to the first entry's.
#
#   plugins/dm1/examples/measure_latency.sh BUILD_DIR CALLS REPEATS RUN_DIR:STEPS [RUN_DIR:STEPS ...]
#
# With LATENCY_RAW=FILE, every measurement (run, steps, flowkit-policy's JSON line) is also
# written to FILE, so the table's raw numbers can be committed beside it.
set -euo pipefail
BUILD=$1; CALLS=$2; REPEATS=$3; shift 3
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
TMP=$(mktemp); trap 'rm -f "$TMP" "$TMP.err"' EXIT
for spec in "$@"; do
  if [[ $spec != *:* || ! ${spec##*:} =~ ^[0-9]+$ || ! -d ${spec%:*} ]]; then
    echo "measure_latency.sh: '$spec' is not RUN_DIR:STEPS with an existing run directory" >&2; exit 2
  fi
done
for ((i = 0; i < REPEATS; ++i)); do
  for spec in "$@"; do
    run=${spec%:*}; k=${spec##*:}
    out=$("$BUILD/bin/flowkit-policy" "$run" --steps "$k" --calls "$CALLS" --episodes 20 --domain-set rollouts=1 \
          --batch 200 --threads 1 2>"$TMP.err") ||
      { echo "flowkit-policy failed for $spec:" >&2; cat "$TMP.err" >&2; exit 1; }
    printf '%s\t%s\t%s\n' "$run" "$k" "$out" >> "$TMP"   # flowkit-policy prints one JSON line
  done
done
if [[ -n ${LATENCY_RAW:-} ]]; then cp "$TMP" "$LATENCY_RAW"; fi
/usr/bin/python3 - "$TMP" "$@" <<'PY'
import json, statistics, sys
rows = []
for line in open(sys.argv[1]):
    run, k, out = line.rstrip("\n").split("\t", 2)
    r = json.loads(out)
    rows.append((run, k, r["latency_ms_p50"], r["latency_ms_p99"], r["batch_samples_per_s"]))
specs = sys.argv[2:]
print("| run | steps | p50 ms/call | p99 ms/call | batch-200 chunks/s | p50 ratio to first |")
print("|---|---|---|---|---|---|")
base = None
for spec in specs:
    run, k = spec.rsplit(":", 1)
    rs = [r for r in rows if r[0] == run and r[1] == k]
    p50, p99, thr = (statistics.median(r[i] for r in rs) for i in (2, 3, 4))
    base = base or p50
    print(f"| {'/'.join(run.rstrip('/').split('/')[-2:])} | {k} | {p50:.3f} | {p99:.3f} | {thr:.0f} | {p50 / base:.1f}x |")
PY
