#!/usr/bin/env python3
"""Embedding diagnostics of trained DM1 runs: for every run under RUNS (default runs/dm1/runs),
`flowkit eval` with eval.probe_label = "goal" reports each representation's effective rank and
linear-probe goal accuracy (held-out demonstration observations, EMA weights); rollouts are
re-run at the run's own sampler settings. Prints a Markdown table (mean ± sd over seeds) and
writes OUT (default RUNS/../probe.jsonl).

Usage: examples/dm1/probe_representations.py [RUNS] [FLOWKIT]
       examples/dm1/probe_representations.py PROBE.jsonl [PROBE.jsonl ...]   (table only)
"""
import collections, json, os, statistics, subprocess, sys

RUNS = sys.argv[1] if len(sys.argv) > 1 else "runs/dm1/runs"
FLOWKIT = sys.argv[2] if len(sys.argv) > 2 else "build/bin/flowkit"
OUT = os.path.join(os.path.dirname(os.path.abspath(RUNS)), "probe.jsonl")

rows = []
TABLE_ONLY = len(sys.argv) > 1 and all(f.endswith(".jsonl") for f in sys.argv[1:])
if not TABLE_ONLY and any(f.endswith(".jsonl") for f in sys.argv[1:]):
    sys.exit(__doc__)
if TABLE_ONLY:
    rows = [json.loads(line) for f in sys.argv[1:] for line in open(f)]
for name in ([] if TABLE_ONLY else sorted(os.listdir(RUNS))):
    resolved = os.path.join(RUNS, name, "pipeline.resolved.json")
    if not os.path.exists(os.path.join(RUNS, name, "weights.pt")) or not os.path.exists(resolved):
        continue
    p = json.load(open(resolved))
    p["eval"]["probe_label"] = "goal"
    pfile = os.path.join(RUNS, name, "probe_pipeline.json")
    json.dump(p, open(pfile, "w"), indent=1)
    r = subprocess.run(["nice", "-n", "10", FLOWKIT, "-q", "eval", pfile, "--runs-dir", RUNS, "--name", name],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit("eval of %s failed:\n%s" % (name, r.stdout[-2000:]))
    m = json.load(open(os.path.join(RUNS, name, "eval.json")))
    arm = name.rsplit("_s", 1)[0]
    row = {"run": name, "arm": arm, "success": m.get("success"), "representations": m["representations"]}
    rows.append(row)
    obs = m["representations"].get("obs", {})
    print("%-28s success %.3f  obs: eff. rank %.2f / %d, goal probe %.3f" % (
        name, m.get("success", float("nan")), obs.get("effective_rank", float("nan")), obs.get("dim", 0),
        obs.get("probe_accuracy", float("nan"))), flush=True)

with open(os.devnull if TABLE_ONLY else OUT, "w") as f:
    for row in rows:
        f.write(json.dumps(row) + "\n")

by_arm = collections.defaultdict(list)
for row in rows:
    by_arm[row["arm"]].append(row)
COLS = [("obs", "effective_rank", "obs eff. rank"), ("obs", "mean_pairwise_distance", "obs mean distance"),
        ("obs", "probe_accuracy", "obs goal probe"), ("trunk0", "effective_rank", "trunk0 eff. rank"),
        ("trunk2", "effective_rank", "trunk2 eff. rank"), ("trunk2", "probe_accuracy", "trunk2 goal probe")]
print("\n| arm | seeds | " + " | ".join(c[2] for c in COLS) + " |")
print("|---|---|" + "---|" * len(COLS))
def ms(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    return "%.2f ± %.2f" % (statistics.mean(vals), statistics.stdev(vals)) if len(vals) > 1 else "%.2f" % vals[0]
for arm, rs in sorted(by_arm.items()):
    cells = [ms([r["representations"].get(l, {}).get(key) for r in rs]) for l, key, _ in COLS]
    print("| %s | %d | %s |" % (arm, len(rs), " | ".join(cells)))
