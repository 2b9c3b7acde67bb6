#!/usr/bin/env bash
# Runs every fuzz target (or those named) under AddressSanitizer + UBSan, each for --seconds S
# or --runs N executions, starting from its seeds (tests/fuzz/corpus, the shipped files and
# tests it reads, a freshly trained checkpoint), and prints executions and findings per target.
# A finding (crash, sanitizer report, exception other than flowkit::Error, input slower than
# 10 s, allocation over 1 GiB) is saved under <build>/fuzz/findings/<target>/ and makes the
# script fail; fix it, then copy the input to tests/fuzz/corpus/regressions/<target>/.
#   tests/fuzz/run.sh [--build DIR] [--seconds S | --runs N] [--record] [target...]
# --record appends the figures to tests/fuzz/results.jsonl and regenerates the table in
# docs/reliability.md (tests/fuzz/results_table.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=build-sanitize SECONDS_EACH=60 RUNS="" RECORD=0 TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --record) RECORD=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
ALL=(fuzz_plugin_manifest fuzz_pipeline fuzz_npy fuzz_tensor_file fuzz_checkpoint fuzz_cif fuzz_cdvae_csv fuzz_schedule_csv fuzz_image fuzz_tensor_csv)
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DFLOWKIT_SANITIZE=ON -DFLOWKIT_FUZZ=ON >/dev/null
fi
cmake --build "$BUILD" -j2 --target flowkit_fuzzers flowkit >/dev/null
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

FUZZ="$BUILD/fuzz"
# fuzz_checkpoint's seeds: the checkpoints of a 2-step training of its pipeline.
if [[ " ${TARGETS[*]} " == *" fuzz_checkpoint "* ]]; then
  rm -rf "$FUZZ/checkpoint_run" && mkdir -p "$FUZZ/seeds/fuzz_checkpoint"
  "$BUILD/bin/flowkit" -q train tests/fuzz/checkpoint_pipeline.json --runs-dir "$FUZZ/checkpoint_run" --name seed >/dev/null
  cp "$FUZZ/checkpoint_run/seed/checkpoints/"*.pt "$FUZZ/seeds/fuzz_checkpoint/"
fi

failed=0
printf '%-22s %8s %12s %10s %9s\n' target seconds executions exec/s findings
for t in "${TARGETS[@]}"; do
  corpus="$FUZZ/corpus/$t" seeds="$FUZZ/seeds/$t" findings="$FUZZ/findings/$t"
  mkdir -p "$corpus" "$seeds" "$findings"
  dirs=()
  while IFS= read -r s; do  # folders are read as corpora; single files are copied into one
    [ -n "$s" ] || continue
    if [ -d "$s" ]; then dirs+=("$s"); else cp "$s" "$seeds/"; fi
  done < "$FUZZ/$t.seeds"
  limit=(-max_total_time="$SECONDS_EACH")
  [ -z "$RUNS" ] || limit=(-runs="$RUNS")
  before=$(ls "$findings" | wc -l)
  start=$(date +%s.%N)
  set +e
  "$FUZZ/$t" "${limit[@]}" -timeout=10 -malloc_limit_mb=1024 -rss_limit_mb=3072 -print_final_stats=1 \
    -close_fd_mask=3 -artifact_prefix="$findings/" "$corpus" "$seeds" "${dirs[@]}" >"$FUZZ/$t.log" 2>&1
  rc=$?
  set -e
  seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$FUZZ/$t.log" | tail -1)
  found=$(( $(ls "$findings" | wc -l) - before ))
  [ $rc -eq 0 ] || [ $found -gt 0 ] || found=1  # a failure that left no input (e.g. in start-up)
  rate=$(awk -v n="${execs:-0}" -v s="$seconds" 'BEGIN { printf "%d", n / s }')
  printf '%-22s %8.0f %12s %10s %9s\n' "$t" "$seconds" "${execs:-0}" "$rate" "$found"
  if [ $found -gt 0 ]; then
    failed=1
    echo "  finding(s) in $findings/; log: $FUZZ/$t.log" >&2
    grep -m3 -E "ERROR|runtime error|terminate|deadly|out-of-memory|timeout" "$FUZZ/$t.log" | sed 's/^/  /' >&2 || true
  fi
  if [ $RECORD -eq 1 ]; then
    printf '{"target": "%s", "seconds": %.1f, "executions": %s, "findings": %s, "corpus": %s, "date": "%s"}\n' \
      "$t" "$seconds" "${execs:-0}" "$found" "$(ls "$corpus" | wc -l)" "$(date -u +%Y-%m-%d)" >>tests/fuzz/results.jsonl
  fi
done
[ $RECORD -eq 0 ] || python3 tests/fuzz/results_table.py --update docs/reliability.md
exit $failed
