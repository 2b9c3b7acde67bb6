#!/usr/bin/env python3
"""Regenerates the fuzzing table of docs/reliability.md from tests/fuzz/results.jsonl (the
figures tests/fuzz/run.sh --record appends): per target, the latest recorded run."""
import argparse, json, pathlib, re, sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- fuzz results: tests/fuzz/results_table.py -->", "<!-- end fuzz results -->"


def table(results):
    latest = {}
    for line in results.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            latest[r["target"]] = r
    rows = ["| target | date | seconds | executions | exec/s | corpus | findings |", "|---|---|---:|---:|---:|---:|---:|"]
    for t, r in latest.items():
        rate = r["executions"] / r["seconds"] if r["seconds"] else 0
        rows.append(f"| `{t}` | {r['date']} | {r['seconds']:.0f} | {r['executions']:,} | {rate:,.0f} | {r['corpus']} | {r['findings']} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--update", default=str(ROOT / "docs/reliability.md"))
    ap.add_argument("--results", default=str(ROOT / "tests/fuzz/results.jsonl"))
    ap.add_argument("--check", action="store_true", help="fail if the page's table is stale")
    a = ap.parse_args()
    page = pathlib.Path(a.update)
    text = page.read_text()
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda m: BEGIN + "\n" + table(pathlib.Path(a.results)) + "\n" + END,
                 text, flags=re.S)
    if a.check:
        sys.exit(0 if new == text else f"{page} is stale: run tests/fuzz/results_table.py")
    page.write_text(new)


if __name__ == "__main__":
    main()
