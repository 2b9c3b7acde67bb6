#!/usr/bin/python3
"""flowkit against the same model written in PyTorch from Python, side by side.

    /usr/bin/python3 bench/perf/run_perf.py [--repeats 3] [--only NAME,...] [--no-docs]

For every workload, the flowkit command and its Python twin (bench/perf/twins/*.py: the same
network, loss, data shapes, optimizer, EMA and clipping, on Debian's python3-torch, i.e. the
same LibTorch) run alternately A B A B ..., each in its own process on an otherwise idle
machine; the medians and their ratio are printed and written to bench/results/perf.json, and
the tables in docs/performance.md are regenerated between their markers. Rates exclude
warm-up: flowkit's from the metrics.jsonl windows after the first, the twins' from their
timed steps. Check `loss_first` / `loss_last`: equal work gives losses in the same range.
"""
import argparse, importlib.util, json, os, re, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "build/bin"
PY = "/usr/bin/python3"
TWINS = ROOT / "bench/perf/twins"


def load_twins():
    """workload -> (twin script, flowkit spec) from every twin's FLOWKIT table."""
    out = {}
    for f in sorted(TWINS.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f.stem, f)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name, fk in mod.FLOWKIT.items():
            out[name] = (f, fk)
    return out


def env_for(blas=None):
    env = {k: v for k, v in os.environ.items() if k not in ("FLOWKIT_PLUGIN_PATH", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    if blas:
        env["OPENBLAS_NUM_THREADS"] = str(blas)
    return env


def run_json(cmd, env):
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def flowkit_train(fk, steps, warmup, extra, root=ROOT):
    """Steps/s of `flowkit train` after its first log window (= the warm-up), and its losses.
    `root`: the checkout (with its build/bin/flowkit) that runs it."""
    with tempfile.TemporaryDirectory() as runs:
        over = fk["overrides"] + [f"train.steps={warmup + steps}", f"train.log_every={warmup}",
                                  "train.checkpoint_every=0"] + extra
        cmd = [Path(root) / "build/bin/flowkit", "-q", "train", fk["pipeline"], *over, "--runs-dir", runs, "--name", "perf"]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env_for(), cwd=root)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{res.stderr[-3000:]}")
        lines = [json.loads(l) for l in open(Path(runs) / "perf/metrics.jsonl") if l.strip()]
        windows = [l for l in lines if "steps_per_sec" in l][1:]  # the first window is the warm-up
        seconds = sum(warmup / w["steps_per_sec"] for w in windows)
        return {"steps_per_sec": warmup * len(windows) / seconds, "loss_first": windows[0]["loss"], "loss_last": windows[-1]["loss"]}


def flowkit_sample(fk, count):
    """Samples/s of flowkit's sampler on the same (untrained) model: flowkit-bench's sampling."""
    res = subprocess.run([BIN / "flowkit-bench", fk["pipeline"], "--steps", "1", "--samples", str(count), "--repeats", "3",
                          "--threads", "1", "--json"], capture_output=True, text=True, env=env_for(), cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def bare(batch, steps, warmup, blas=0):
    return run_json([BIN / "flowkit-bare-loop", "train", "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup),
                     "--blas", str(blas)], env_for())


def threads_table(twins, repeats, steps, warmup):
    """flowkit steps/s for (intra-op threads, BLAS threads) combinations, interleaved."""
    combos = [(1, 1), (1, 2), (2, 1), (2, 2)]
    out = {}
    for name in ("cfm_toy2d_b256", "cfm_toy2d_b4096", "cfm_digits_quickstart", "pfgmpp_digits", "dm1_meanflow", "crysbfn_cspnet"):
        fk = twins[name][1]
        n, w = STEPS.get(name, (steps, warmup))
        rates = {c: [] for c in combos}
        for _ in range(repeats):
            for c in combos:
                rates[c].append(flowkit_train(fk, n, w, [f"train.threads={c[0]}", f"train.blas_threads={c[1]}"])["steps_per_sec"])
        out[name] = {f"{c[0]},{c[1]}": statistics.median(v) for c, v in rates.items()}
        print(f"threads {name}: " + ", ".join(f"(intra {k}) {v:.1f}" for k, v in out[name].items()), flush=True)
    return out


def overhead_table(twins, repeats, steps, warmup):
    """flowkit's standard CFM step against the same step on bare LibTorch, and matmul GFLOP/s."""
    out = {}
    for name, batch in (("cfm_toy2d_b256", 256), ("cfm_toy2d_b4096", 4096)):
        fk, b = [], []
        n, w = STEPS.get(name, (steps, warmup))
        for _ in range(repeats):
            fk.append(flowkit_train(twins[name][1], n, w, [])["steps_per_sec"])
            b.append(bare(batch, n, w)["steps_per_sec"])
        out[name] = {"flowkit": statistics.median(fk), "bare_libtorch": statistics.median(b)}
        out[name]["overhead_percent"] = 100 * (out[name]["bare_libtorch"] / out[name]["flowkit"] - 1)
        print(f"overhead {name}: flowkit {out[name]['flowkit']:.1f}, bare {out[name]['bare_libtorch']:.1f} steps/s "
              f"({out[name]['overhead_percent']:+.1f} %)", flush=True)
    # glibc's allocator: its defaults return large freed blocks to the OS every step; flowkit
    # keeps them (core/src/session/session.cpp). The same settings through MALLOC_* variables,
    # on the bare loop and the Python twin, show what that is worth on each side.
    tuned = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_TOP_PAD_": str(64 << 20)}
    alloc = {k: [] for k in ("bare_default", "bare_tuned", "python_default", "python_tuned")}
    twin = [PY, twins["cfm_toy2d_b4096"][0], "--workload", "cfm_toy2d_b4096", "--steps", "60", "--warmup", "20"]
    bare_cmd = [BIN / "flowkit-bare-loop", "train", "--batch", "4096", "--steps", "60", "--warmup", "20"]
    for _ in range(repeats):
        alloc["bare_default"].append(run_json(bare_cmd, env_for())["steps_per_sec"])
        alloc["bare_tuned"].append(run_json(bare_cmd, {**env_for(), **tuned})["steps_per_sec"])
        alloc["python_default"].append(run_json(twin, env_for())["steps_per_sec"])
        alloc["python_tuned"].append(run_json(twin, {**env_for(), **tuned})["steps_per_sec"])
    out["allocator_b4096"] = {k: statistics.median(v) for k, v in alloc.items()}
    print(f"allocator b4096: {out['allocator_b4096']}", flush=True)
    out["matmul"] = run_json([BIN / "flowkit-bare-loop", "matmul"], env_for())
    # FLOPs of one batch-4096 step of the 256-wide, 3-layer MLP (time embedding 32): the matrix
    # products of the forward pass, and twice that for the backward pass.
    per_sample = 2 * (2 * 256 + 32 * 256 + 3 * 256 * 256 + 256 * 2)
    step_gflop = 3 * per_sample * 4096 / 1e9
    achieved = step_gflop * out["cfm_toy2d_b4096"]["flowkit"]
    best = max(out["matmul"]["gflops_1t_4096x256x256"], out["matmul"]["gflops_2t_4096x256x256"])
    out["step_gflop_b4096"] = step_gflop
    out["achieved_gflops_b4096"] = achieved
    out["fraction_of_matmul"] = achieved / best
    gemm_ms = min(out["matmul"]["step_gemms_ms_1t_b4096"], out["matmul"]["step_gemms_ms_2t_b4096"])
    out["gemm_only_steps_per_sec_b4096"] = 1000.0 / gemm_ms
    out["fraction_of_gemm_only_step"] = out["cfm_toy2d_b4096"]["flowkit"] / out["gemm_only_steps_per_sec_b4096"]
    print(f"matmul {out['matmul']}; batch-4096 step {step_gflop:.2f} GFLOP -> {achieved:.1f} GFLOP/s = "
          f"{100 * achieved / best:.0f} % of the best matmul rate", flush=True)
    return out


GOALS = {"cfm_toy2d_b256": ">= 1.3x", "cfm_toy2d_b4096": ">= 1.1x", "dm1_policy_latency": ">= 3x"}


def render_docs(results):
    for doc in (ROOT / "docs/performance.md", ROOT / "README.md"):
        render_doc(doc, results)


def render_doc(doc, results):
    body = doc.read_text()
    rows = ["| workload | measure | flowkit | Python twin (default threads) | Python, OPENBLAS_NUM_THREADS=1 | flowkit vs Python default | goal |",
            "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if name in ("threads", "overhead", "examples", "policy_load") or "median" not in r:
            continue
        m = r["median"]
        better = "lower" if r["metric"] == "p50_ms" else "higher"
        rows.append(f"| `{name}` | {r['metric']} ({better} is better) | {m['flowkit']:.2f} | {m['python']:.2f} | "
                    f"{m['python_blas1']:.2f} | **{r['ratio_vs_python_default']:.2f}x** | {GOALS.get(name, '>= 1x')} |")
    tables = {"side_by_side": "\n".join(rows)}
    pol = results.get("dm1_policy_latency", {}).get("median", {})
    if "python_row_gemv" in pol:
        cols = [("flowkit", "flowkit-policy"), ("python", "Python twin"), ("python_blas1", "Python, OPENBLAS_NUM_THREADS=1"),
                ("python_row_gemv", "Python twin with flowkit's single-row addmv")]
        tables["policy"] = "\n".join(["| batch-1 call, ms | " + " | ".join(c[1] for c in cols) + " |", "|---|" + "---|" * len(cols),
                                      "| p50 | " + " | ".join(f"{pol[c]:.3f}" for c, _ in cols) + " |",
                                      "| p99 | " + " | ".join(f"{pol[c + '_p99']:.3f}" for c, _ in cols) + " |"])
    if "threads" in results:
        t = results["threads"]
        combos = list(next(iter(t.values())).keys())
        lines = ["| workload | " + " | ".join(f"intra {c.split(',')[0]}, BLAS {c.split(',')[1]}" for c in combos) + " |",
                 "|---|" + "---|" * len(combos)]
        for name, v in t.items():
            top = max(v.values())
            lines.append(f"| `{name}` | " + " | ".join(("**%.1f**" if v[c] == top else "%.1f") % v[c] for c in combos) + " |")
        tables["threads"] = "\n".join(lines)
    if "overhead" in results:
        o = results["overhead"]
        lines = ["| workload | flowkit steps/s | bare LibTorch loop steps/s | framework overhead |", "|---|---|---|---|"]
        for name in ("cfm_toy2d_b256", "cfm_toy2d_b4096"):
            lines.append(f"| `{name}` | {o[name]['flowkit']:.1f} | {o[name]['bare_libtorch']:.1f} | {o[name]['overhead_percent']:+.1f} % |")
        if "allocator_b4096" in o:
            a = o["allocator_b4096"]
            lines += ["", "| batch 4096, steps/s | glibc malloc defaults | freed memory kept (flowkit's setting, via MALLOC_* variables) |",
                      "|---|---|---|", f"| bare LibTorch loop | {a['bare_default']:.1f} | {a['bare_tuned']:.1f} |",
                      f"| Python twin | {a['python_default']:.1f} | {a['python_tuned']:.1f} |"]
        mm = o["matmul"]
        lines += ["", "| matmul GFLOP/s | 1 BLAS thread | 2 BLAS threads |", "|---|---|---|",
                  f"| [4096, 256] x [256, 256] | {mm['gflops_1t_4096x256x256']:.1f} | {mm['gflops_2t_4096x256x256']:.1f} |",
                  f"| [1024, 1024] x [1024, 1024] | {mm['gflops_1t_1024sq']:.1f} | {mm['gflops_2t_1024sq']:.1f} |", "",
                  f"The batch-4096 step does {o['step_gflop_b4096']:.2f} GFLOP of matrix products; at flowkit's rate that is "
                  f"{o['achieved_gflops_b4096']:.1f} GFLOP/s, **{100 * o['fraction_of_matmul']:.0f} %** of the best measured "
                  f"[4096, 256] x [256, 256] rate (goal: 70 %). The step's own matrix products alone, in the layouts "
                  f"autograd uses (forward and both backward products of every layer, `flowkit-bare-loop matmul`), take "
                  f"{1000 / o['gemm_only_steps_per_sec_b4096']:.1f} ms: a step that did nothing else would run at "
                  f"{o['gemm_only_steps_per_sec_b4096']:.1f} steps/s, and flowkit's step reaches "
                  f"**{100 * o['fraction_of_gemm_only_step']:.0f} %** of that."]
        tables["overhead"] = "\n".join(lines)
    if "policy_load" in results:
        pl = results["policy_load"]
        tables["policy_load"] = "\n".join([
            "| flowkit-policy batch-1 call, ms | idle, 1 BLAS thread | idle, 2 BLAS threads | busy machine, 1 BLAS thread | busy machine, 2 BLAS threads |",
            "|---|---|---|---|---|",
            *(f"| {q[:3]} | " + " | ".join(f"{pl[k][q]:.3f}" for k in ("idle,1", "idle,2", "busy,1", "busy,2")) + " |" for q in ("p50_ms", "p99_ms"))])
    goals = []
    def goal(text, measured, met):
        goals.append(f"| {text} | {measured} | {'**met**' if met else '**not met**'} |")
    for name, need in (("cfm_toy2d_b256", 1.3), ("cfm_toy2d_b4096", 1.1)):
        if name in results and "ratio_vs_python_default" in results[name]:
            r = results[name]["ratio_vs_python_default"]
            goal(f"`{name}`: flowkit >= {need}x the twin's default threads", f"{r:.2f}x", r >= need)
    if "dm1_policy_latency" in results:
        r = results["dm1_policy_latency"]["ratio_vs_python_default"]
        goal("batch-1 policy latency (p50) >= 3x lower than the twin's", f"{r:.2f}x", r >= 3)
    if "overhead" in results:
        o = results["overhead"]
        goal("batch-4096 step >= 70 % of the measured 2-core matmul GFLOP/s", f"{100 * o['fraction_of_matmul']:.0f} %", o["fraction_of_matmul"] >= 0.7)
        worst = max(o[n]["overhead_percent"] for n in ("cfm_toy2d_b256", "cfm_toy2d_b4096"))
        goal("framework overhead against the bare LibTorch loop <= 3 %", f"{worst:+.1f} % (worst of the two batches)", worst <= 3)
    if "examples" in results:
        ratios = {k: v["ratio"] for k, v in results["examples"].items() if k != "baseline_commit"}
        low = min(ratios, key=ratios.get)
        goal("every shipped example at least as fast as before", f"slowest {ratios[low]:.2f}x (`{low}`)", ratios[low] >= 1)
    if goals:
        tables["goals"] = "\n".join(["| goal | measured | |", "|---|---|---|", *goals])
    if "examples" in results:
        e = results["examples"]
        lines = [f"| shipped example | steps/s now | steps/s at {e['baseline_commit']} | now vs before |", "|---|---|---|---|"]
        for pipeline, r in e.items():
            if pipeline != "baseline_commit":
                lines.append(f"| `{pipeline}` | {r['now']:.1f} | {r['before']:.1f} | **{r['ratio']:.2f}x** |")
        tables["examples"] = "\n".join(lines)
    for key, text in tables.items():
        if f"<!-- perf:{key}:begin -->" not in body:
            continue
        body = re.sub(rf"(<!-- perf:{key}:begin -->\n).*?(<!-- perf:{key}:end -->)", lambda m: m.group(1) + text + "\n" + m.group(2),
                      body, flags=re.S)
    doc.write_text(body)


# Slower workloads time fewer steps (each run stays under ~30 s); warm-up divides steps.
STEPS = {"crysbfn_cspnet": (60, 20), "dm1_meanflow": (150, 30), "pfgmpp_digits": (150, 30), "cfm_toy2d_b4096": (60, 20)}


def flowkit_policy(fk, runs_dir, calls, extra=()):
    """p50/p99 ms of flowkit-policy's batch-1 calls on a briefly trained run (trained once)."""
    run = Path(runs_dir) / fk["run_name"]
    if not run.exists():
        cmd = [BIN / "flowkit", "-q", "train", fk["pipeline"], *fk["overrides"], "--runs-dir", runs_dir, "--name", fk["run_name"]]
        subprocess.run(cmd, check=True, capture_output=True, env=env_for(), cwd=ROOT)
    r = run_json([BIN / "flowkit-policy", run, "--calls", str(calls), "--warmup", str(calls // 10), *fk["policy_args"], *extra], env_for())
    return {"p50_ms": r["latency_ms_p50"], "p99_ms": r["latency_ms_p99"]}


# Every shipped training pipeline, as shipped: (timed steps, warm-up steps), each run ~5-20 s.
EXAMPLES = {"plugins/standard/examples/quickstart.json": (300, 50), "plugins/standard/examples/toy2d.json": (600, 100),
            "plugins/pfgmpp/examples/digits.json": (150, 30), "plugins/pfgmpp/examples/toy2d.json": (600, 100),
            "plugins/pfgmpp/examples/toy2d_standard_mlp.json": (600, 100), "plugins/dm1/examples/meanflow_state.json": (150, 30),
            "plugins/dm1/examples/dm1_image.json": (60, 20), "plugins/crysbfn/examples/csp_bfn.json": (60, 20),
            "plugins/crysbfn/examples/csp_diffusion.json": (60, 20), "plugins/crysbfn/examples/gen_bfn.json": (60, 20)}


def examples_table(baseline, repeats):
    """Every shipped example's training steps/s, this build against `baseline` (a checkout of
    an earlier commit, built in its own build/), interleaved; each side runs its own copy of
    the example with its own defaults (the earlier build: one thread in both pools)."""
    out = {"baseline_commit": subprocess.run(["git", "-C", baseline, "rev-parse", "--short", "HEAD"], capture_output=True,
                                             text=True).stdout.strip()}
    for pipeline, (steps, warmup) in EXAMPLES.items():
        rates = {"now": [], "before": []}
        for _ in range(repeats):
            rates["now"].append(flowkit_train({"pipeline": pipeline, "overrides": []}, steps, warmup, [])["steps_per_sec"])
            rates["before"].append(flowkit_train({"pipeline": pipeline, "overrides": []}, steps, warmup, [], root=baseline)["steps_per_sec"])
        med = {k: statistics.median(v) for k, v in rates.items()}
        out[pipeline] = {**med, "ratio": med["now"] / med["before"], "runs": rates}
        print(f"example {pipeline}: now {med['now']:.1f}, before {med['before']:.1f} steps/s ({med['now'] / med['before']:.2f}x)", flush=True)
    return out


def policy_load_table(fk, repeats, calls=2000):
    """flowkit-policy with 1 and 2 OpenBLAS threads, on an idle machine and beside one busy
    process per core (as a controller shares its computer), interleaved."""
    runs = tempfile.mkdtemp(prefix="flowkit_perf_")
    cells = {f"{load},{b}": [] for load in ("idle", "busy") for b in (1, 2)}
    for _ in range(repeats):
        for load in ("idle", "busy"):
            burners = [subprocess.Popen([PY, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)] if load == "busy" else []
            try:
                time.sleep(0.5 if burners else 0)
                for b in (1, 2):
                    cells[f"{load},{b}"].append(flowkit_policy(fk, runs, calls, ["--blas-threads", str(b)]))
            finally:
                for p in burners:
                    p.kill()
                    p.wait()
    out = {k: {q: statistics.median(r[q] for r in v) for q in ("p50_ms", "p99_ms")} for k, v in cells.items()}
    print(f"policy under load: {out}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300, help="timed training steps per run")
    ap.add_argument("--warmup", type=int, default=30, help="warm-up steps (a divisor of --steps)")
    ap.add_argument("--only", default="", help="comma-separated workloads")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--tables", default="side,threads,overhead", help="which measurements: side,threads,overhead,policy_load,examples (none: only rewrite the docs from the raw file)")
    ap.add_argument("--baseline", default="", help="examples: a built checkout of the commit to compare with")
    args = ap.parse_args()
    twins = load_twins()
    names = [n for n in twins if not args.only or n in args.only.split(",")] if "side" in args.tables else []
    out = ROOT / "bench/results/perf.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    results = {}

    def save():  # after every measurement: an interrupted run keeps what it measured
        previous.update(results)
        out.write_text(json.dumps(previous, indent=1) + "\n")
    policy_runs = tempfile.mkdtemp(prefix="flowkit_perf_")
    for name in names:
        script, fk = twins[name]
        steps, warmup = STEPS.get(name, (args.steps, args.warmup))
        sides = {"flowkit": [], "python": [], "python_blas1": []}
        if fk.get("policy"):
            sides["python_row_gemv"] = []  # the twin given flowkit's batch-1 matrix-vector product
        for r in range(args.repeats):  # interleaved A B C A B C ...
            if fk.get("sample"):
                sides["flowkit"].append(flowkit_sample(fk, 1000))
                twin = [PY, script, "--workload", name, "--samples", "1000"]
            elif fk.get("policy"):
                sides["flowkit"].append(flowkit_policy(fk, policy_runs, 2000))
                twin = [PY, script, "--workload", name, "--calls", "2000", "--warmup", "200"]
            else:
                sides["flowkit"].append(flowkit_train(fk, steps, warmup, []))
                twin = [PY, script, "--workload", name, "--steps", str(steps), "--warmup", str(warmup)]
            sides["python"].append(run_json(twin, env_for()))
            sides["python_blas1"].append(run_json(twin, env_for(blas=1)))
            if "python_row_gemv" in sides:
                sides["python_row_gemv"].append(run_json(twin + ["--row-gemv"], env_for()))
            print(f"  {name} repeat {r + 1}: " + "; ".join(f"{k} {json.dumps(v[-1])}" for k, v in sides.items()), flush=True)
        key = "samples_per_sec" if fk.get("sample") else "p50_ms" if fk.get("policy") else "steps_per_sec"
        med = {k: statistics.median(x[key] for x in v) for k, v in sides.items()}
        if fk.get("policy"):
            med.update({f"{k}_p99": statistics.median(x["p99_ms"] for x in v) for k, v in sides.items()})
        higher_is_better = key != "p50_ms"
        ratio = med["flowkit"] / med["python"] if higher_is_better else med["python"] / med["flowkit"]
        results[name] = {"metric": key, "median": med, "ratio_vs_python_default": ratio, "runs": sides}
        print(f"{name}: {key} flowkit {med['flowkit']:.2f}, python {med['python']:.2f} "
              f"(OPENBLAS_NUM_THREADS=1: {med['python_blas1']:.2f}); flowkit/python {ratio:.2f}x", flush=True)
        save()
    if "threads" in args.tables:
        results["threads"] = threads_table(twins, args.repeats, args.steps, args.warmup)
        save()
    if "overhead" in args.tables:
        results["overhead"] = overhead_table(twins, args.repeats, args.steps, args.warmup)
        save()
    if "policy_load" in args.tables:
        results["policy_load"] = policy_load_table(twins["dm1_policy_latency"][1], args.repeats)
        save()
    if "examples" in args.tables:
        if not args.baseline:
            sys.exit("--tables examples needs --baseline CHECKOUT (see docs/performance.md)")
        results["examples"] = examples_table(args.baseline, args.repeats)
        save()
    save()
    print(f"raw: {out.relative_to(ROOT)}")
    if not args.no_docs:
        render_docs(previous)


if __name__ == "__main__":
    main()
