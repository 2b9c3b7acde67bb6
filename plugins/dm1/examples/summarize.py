#!/usr/bin/env python3
"""Summarises results_*.jsonl of run_experiments.sh into a Markdown table.

Success and collision: pooled over seeds (n = rollouts x seeds) with a Wilson 95 % interval,
plus the per-seed values. Latency: per policy call at batch 1 on 1 thread (median over seeds
of each run's p50 / p99), and batch-200 chunks per second.
"""
import json, math, sys
from collections import defaultdict

def wilson(k, n, z=1.96):
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0, c - h), min(1, c + h)

rows = defaultdict(list)
for f in sys.argv[1:]:
    for line in open(f):
        r = json.loads(line)
        rows[(r["obs"], r["demos"], r["arm"], r["k"])].append(r)

ORDER = ["reg", "fm", "mf", "mf50", "mfad", "mf0", "wh0.1", "wh0.5", "wh0.9", "wh0.1obs", "wh0.1trunk", "dm1form", "dm1full"]
LABEL = {"reg": "regression (BC-MSE)", "fm": "flow matching", "mf": "MeanFlow (25 % r != t, official)", "mf50": "MeanFlow (50 % r != t, DM1)", "mfad": "MeanFlow, adaptive weight p=1 (official)", "mf0": "MeanFlow, no r != t",
         "wh0.1": "MeanFlow + disp. W-H l=0.1", "wh0.5": "MeanFlow + disp. W-H l=0.5", "wh0.9": "MeanFlow + disp. W-H l=0.9",
         "wh0.1obs": "MeanFlow + disp. W-H l=0.1, obs embedding only", "wh0.1trunk": "MeanFlow + disp. W-H l=0.1, last trunk block only",
         "dm1form": "MeanFlow + disp. DM1 form l=0.5", "dm1full": "DM1 (50 % r != t + disp. DM1 form l=0.5)"}
print("| obs | demos | arm | NFE | success % [95% CI] | per seed | collision % | left % (mode balance) | energy | p50 / p99 ms (batch 1) | batch-200 chunks/s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
def med(v):  # median of the runs that measured it (older runs have no latency record)
    v = sorted(x for x in v if x == x)
    return v[len(v) // 2] if v else float("nan")
def fmt(x, spec):
    return "–" if x != x else format(x, spec)
for key in sorted(rows, key=lambda k: (k[0], k[1], ORDER.index(k[2]) if k[2] in ORDER else 99, k[3])):
    obs, demos, arm, k = key
    rs = rows[key]
    n = sum(r["metrics"]["episodes"] for r in rs)
    s = sum(r["metrics"]["success"] * r["metrics"]["episodes"] for r in rs)
    c = sum(r["metrics"]["collision"] * r["metrics"]["episodes"] for r in rs)
    lo, hi = wilson(s, n)
    per = "/".join(f"{100 * r['metrics']['success']:.0f}" for r in sorted(rs, key=lambda r: r["seed"]))
    left = sum(r["metrics"]["left_fraction"] for r in rs) / len(rs)
    bal = sum(r["metrics"]["mode_balance"] for r in rs) / len(rs)
    en = sum(r["metrics"].get("energy", float("nan")) for r in rs) / len(rs)
    p50 = med([r.get("latency", {}).get("latency_ms_p50", float("nan")) for r in rs])
    p99 = med([r.get("latency", {}).get("latency_ms_p99", float("nan")) for r in rs])
    # flowkit-policy's batch_samples_per_s; results from the old dm1-controller call it batch_chunks_per_s
    thr = med([r.get("latency", {}).get("batch_samples_per_s", r.get("latency", {}).get("batch_chunks_per_s", float("nan")))
               for r in rs])
    print(f"| {obs} | {demos} | {LABEL.get(arm, arm)} | {k} | {100 * s / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | {per} | "
          f"{100 * c / n:.1f} | {100 * left:.0f} ({bal:.2f}) | {en:.4f} | {fmt(p50, '.3f')} / {fmt(p99, '.3f')} | {fmt(thr, '.0f')} |")
