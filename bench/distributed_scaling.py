#!/usr/bin/python3
"""Data-parallel scaling on this machine: 1 and 2 `flowkit train` processes, same global batch.

    /usr/bin/python3 bench/distributed_scaling.py [--repeats 3] [--no-docs]

Each workload runs as one process (OpenBLAS on both cores, flowkit's default; and on one core)
and as two processes joined through the torchrun variables on 127.0.0.1 (one core each: one
intra-op and one BLAS thread per process), interleaved, each run in its own processes. The
rate is rank 0's steps/s after the first log window; items/s = global batch x steps/s. Writes
bench/results/distributed.json and rewrites the table in docs/distributed.md.
"""
import argparse, json, os, re, socket, statistics, subprocess, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOWKIT = ROOT / "build/bin/flowkit"
TOY = ["model.hidden=256", "model.layers=3", "train.lr=0.001", "train.warmup_steps=0", "train.ema_decay=0", "train.grad_clip=0"]
WORKLOADS = {  # name: (pipeline, overrides, timed steps, warm-up steps)
    "cfm_toy2d_b256": ("plugins/standard/examples/toy2d.json", TOY + ["train.batch_size=256"], 400, 100),
    "cfm_toy2d_b4096": ("plugins/standard/examples/toy2d.json", TOY + ["train.batch_size=4096"], 60, 20),
    "cfm_digits_quickstart": ("plugins/standard/examples/quickstart.json", [], 300, 100),
}
SETUPS = {  # name: (processes, per-process overrides)
    "1 process, BLAS on 2 cores": (1, []),
    "1 process, 1 core": (1, ["train.blas_threads=1"]),
    "2 processes, 1 core each": (2, ["train.blas_threads=1"]),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(pipeline, overrides, steps, warmup, world):
    with tempfile.TemporaryDirectory() as runs:
        over = overrides + [f"train.steps={steps + warmup}", f"train.log_every={warmup}", "train.checkpoint_every=0"]
        cmd = [str(FLOWKIT), "-q", "train", pipeline, *over, "--runs-dir", runs, "--name", "scaling"]
        base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "FLOWKIT_PLUGIN_PATH")}
        port = str(free_port())
        procs = []
        for rank in range(world):
            env = dict(base)
            if world > 1:
                env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
            procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        for p in procs:
            _, err = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} (world {world}) failed:\n{err[-2000:]}")
        lines = [json.loads(l) for l in open(Path(runs) / "scaling/metrics.jsonl") if '"steps_per_sec"' in l][1:]
        return warmup * len(lines) / sum(warmup / l["steps_per_sec"] for l in lines)


def render(results):
    doc = ROOT / "docs/distributed.md"
    names = list(SETUPS)
    rows = ["| workload (global batch) | " + " | ".join(names) + " | 2 processes vs the best single process |",
            "|---|" + "---|" * (len(names) + 1)]
    for w, r in results["workloads"].items():
        batch = r["global_batch"]
        cells = [f"{r[n]:.1f} steps/s = {r[n] * batch:,.0f} items/s" for n in names]
        best = max(r[names[0]], r[names[1]])
        rows.append(f"| `{w}` ({batch}) | " + " | ".join(cells) + f" | **{r[names[2]] / best:.2f}x** |")
    body = doc.read_text()
    body = re.sub(r"(<!-- scaling:begin -->\n).*?(<!-- scaling:end -->)", lambda m: m.group(1) + "\n".join(rows) + "\n" + m.group(2),
                  body, flags=re.S)
    doc.write_text(body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    results = {"workloads": {}}
    for w, (pipeline, overrides, steps, warmup) in WORKLOADS.items():
        rates = {n: [] for n in SETUPS}
        for _ in range(args.repeats):
            for n, (world, extra) in SETUPS.items():
                rates[n].append(train(pipeline, overrides + extra, steps, warmup, world))
        shipped = json.loads((ROOT / pipeline).read_text()).get("train", {}).get("batch_size", 256)
        batch = next((int(o.split("=")[1]) for o in overrides if o.startswith("train.batch_size=")), shipped)
        results["workloads"][w] = {"global_batch": batch, **{n: statistics.median(v) for n, v in rates.items()}, "runs": rates}
        print(w, {n: round(statistics.median(v), 2) for n, v in rates.items()}, flush=True)
    out = ROOT / "bench/results/distributed.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"raw: {out.relative_to(ROOT)}")
    if not args.no_docs:
        render(results)


if __name__ == "__main__":
    main()
