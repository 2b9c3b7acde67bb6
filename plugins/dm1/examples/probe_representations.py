#!/usr/bin/env python3
"""Embedding diagnostics of trained DM1 runs: for every run under RUNS (default runs/dm1/runs),
`flowkit eval` with eval.probe_label = "goal" reports each representation's effective rank,
mean pairwise distance and linear-probe goal accuracy (held-out demonstration observations,
EMA weights); rollouts are re-run at the run's own sampler settings. Writes RUNS/../probe.jsonl
and prints a Markdown table (mean ± sd over seeds).

Usage: plugins/dm1/examples/probe_representations.py [RUNS] [FLOWKIT]
       plugins/dm1/examples/probe_representations.py PROBE.jsonl [PROBE.jsonl ...]   (table only)
"""
import collections, json, os, statistics, subprocess, sys

COLS = [("obs", "effective_rank", "obs eff. rank"), ("obs", "mean_pairwise_distance", "obs mean distance"),
        ("obs", "probe_accuracy", "obs goal probe"), ("trunk0", "effective_rank", "trunk0 eff. rank"),
        ("trunk2", "effective_rank", "trunk2 eff. rank"), ("trunk2", "probe_accuracy", "trunk2 goal probe")]


def probe_runs(runs, flowkit):
    rows = []
    for name in sorted(os.listdir(runs)):
        resolved = os.path.join(runs, name, "pipeline.resolved.json")
        if not os.path.exists(os.path.join(runs, name, "weights.pt")) or not os.path.exists(resolved):
            continue
        p = json.load(open(resolved))
        p["eval"]["probe_label"] = "goal"
        pfile = os.path.join(runs, name, "probe_pipeline.json")
        json.dump(p, open(pfile, "w"), indent=1)
        r = subprocess.run(["nice", "-n", "10", flowkit, "-q", "eval", pfile, "--runs-dir", runs, "--name", name],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            sys.exit("eval of %s failed:\n%s" % (name, r.stdout[-2000:]))
        m = json.load(open(os.path.join(runs, name, "eval.json")))
        rows.append({"run": name, "arm": name.rsplit("_s", 1)[0], "success": m.get("success"),
                     "representations": m["representations"]})
        obs = m["representations"].get("obs", {})
        print("%-28s success %.3f  obs: eff. rank %.2f / %d, goal probe %.3f" % (
            name, m.get("success", float("nan")), obs.get("effective_rank", float("nan")), obs.get("dim", 0),
            obs.get("probe_accuracy", float("nan"))), flush=True)
    with open(os.path.join(os.path.dirname(os.path.abspath(runs)), "probe.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return rows


def mean_sd(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    return "%.2f ± %.2f" % (statistics.mean(vals), statistics.stdev(vals)) if len(vals) > 1 else "%.2f" % vals[0]


def print_table(rows):
    by_arm = collections.defaultdict(list)
    for row in rows:
        by_arm[row["arm"]].append(row)
    print("\n| arm | seeds | " + " | ".join(c[2] for c in COLS) + " |")
    print("|---|---|" + "---|" * len(COLS))
    for arm, rs in sorted(by_arm.items()):
        cells = [mean_sd([r["representations"].get(layer, {}).get(key) for r in rs]) for layer, key, _ in COLS]
        print("| %s | %d | %s |" % (arm, len(rs), " | ".join(cells)))


args = sys.argv[1:]
jsonl = [a.endswith(".jsonl") for a in args]
if args and all(jsonl):
    print_table([json.loads(line) for f in args for line in open(f)])
elif any(jsonl):
    sys.exit(__doc__)
else:
    print_table(probe_runs(args[0] if args else "runs/dm1/runs", args[1] if len(args) > 1 else "build/bin/flowkit"))
