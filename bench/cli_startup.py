#!/usr/bin/python3
"""Whole-process time and peak memory of the `flowkit` commands, median of N runs each.

    /usr/bin/python3 bench/cli_startup.py [--flowkit build/bin/flowkit] [--runs 20]

Writes bench/results/cli_startup.json and regenerates the table in docs/cli.md between its
<!-- cli_startup --> markers. The metadata commands must stay under 30 ms and 20 MB; a command
that loads the LibTorch runtime is measured beside them for contrast.
"""
import argparse, json, os, platform, re, statistics, subprocess, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "plugins/standard/examples/quickstart.json"
COMMANDS = [
    ("flowkit --version", ["--version"], True),
    ("flowkit --help", ["--help"], True),
    ("flowkit plugins", ["plugins"], True),
    ("flowkit describe standard.mlp", ["describe", "standard.mlp"], True),
    ("flowkit validate quickstart.json", ["validate", str(QUICKSTART)], True),
    ("flowkit validate quickstart.json train.steps=500", ["validate", str(QUICKSTART), "train.steps=500"], True),
    ("flowkit completion bash", ["completion", "bash"], True),
    ("flowkit __complete train quickstart.json model.", ["__complete", "train", str(QUICKSTART), "model."], True),
    # Loads libflowkit_cli_runtime.so and LibTorch, then fails at once (no such plugin).
    ("flowkit conformance no_such_plugin (loads LibTorch)", ["conformance", "no_such_plugin"], False),
]


ENV = {k: v for k, v in os.environ.items() if k != "FLOWKIT_PLUGIN_PATH"}
GNU_TIME = "/usr/bin/time"


def measure(argv):
    """Wall seconds of one whole process, and its peak RSS in MB.

    The peak RSS comes from GNU time in a second run: a child forked from this Python reports
    Python's own ~13 MB as its maximum (the kernel keeps the pre-exec high-water mark)."""
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    seconds = time.perf_counter() - start
    if not os.path.exists(GNU_TIME):
        return seconds, float("nan")
    res = subprocess.run([GNU_TIME, "-f", "%M"] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, text=True)
    return seconds, int(res.stderr.strip().splitlines()[-1]) / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flowkit", default=str(ROOT / "build/bin/flowkit"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/cli.md")
    args = ap.parse_args()
    samples = {name: ([], []) for name, _, _ in COMMANDS}
    for _ in range(args.runs):  # interleaved: each round runs every command once
        for name, cmd, _ in COMMANDS:
            t, m = measure([args.flowkit] + cmd)
            samples[name][0].append(t)
            samples[name][1].append(m)
    rows = []
    for name, _, metadata in COMMANDS:
        times, mems = samples[name]
        rows.append({"command": name, "metadata": metadata, "runs": args.runs,
                     "median_ms": 1000 * statistics.median(times), "max_ms": 1000 * max(times),
                     "median_rss_mb": statistics.median(mems)})
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "rows": rows,
              "goal": {"median_ms": 30, "rss_mb": 20}}
    out = ROOT / "bench/results/cli_startup.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    table = ["| command | median ms | max ms | peak RSS MB | goal met |", "|---|---|---|---|---|"]
    for r in rows:
        met = ("yes" if r["median_ms"] < 30 and r["median_rss_mb"] < 20 else "**no**") if r["metadata"] else "(not a goal)"
        table.append(f"| `{r['command']}` | {r['median_ms']:.1f} | {r['max_ms']:.1f} | {r['median_rss_mb']:.1f} | {met} |")
    text = "\n".join(table)
    print(text)
    print(f"(median of {args.runs} interleaved whole-process runs; raw: {out.relative_to(ROOT)})")
    if not args.no_docs:
        doc = ROOT / "docs/cli.md"
        body = doc.read_text()
        new = re.sub(r"(<!-- cli_startup:begin -->\n).*?(<!-- cli_startup:end -->)",
                     lambda m: m.group(1) + text + f"\n\nMedian of {args.runs} interleaved runs on {result['machine']}; "
                     f"`bench/results/cli_startup.json`.\n" + m.group(2), body, flags=re.S)
        doc.write_text(new)


if __name__ == "__main__":
    main()
