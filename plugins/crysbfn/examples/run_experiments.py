#!/usr/bin/env python3
"""CrysBFN experiments on perov-5: CSP (CrysBFN N=10 / N=50 / ablations vs the DiffCSP-style
baseline at several NFE) and ab initio generation.

Usage (from the repository root):
    plugins/crysbfn/examples/run_experiments.sh [train|eval|summary|all] [arm ...]
Environment: FLOWKIT (default build/bin/flowkit), OUT (default runs/crysbfn_experiments),
STEPS (training steps, default: the pipelines' own), JOBS (parallel trainings, default 2),
SEED (default 0: runs are named after the arm; SEED=k trains "<arm>_s<k>" with train.seed = k).
Every arm is `flowkit train` on a generated copy of csp_bfn.json / csp_diffusion.json /
gen_bfn.json; every evaluation point is `flowkit eval` of the trained run with a changed sampler
step count. Results go to OUT/results.json; `summary` prints the Markdown table.
"""
import concurrent.futures, copy, json, os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
FLOWKIT = os.environ.get("FLOWKIT", "build/bin/flowkit")
OUT = os.environ.get("OUT", "runs/crysbfn_experiments")
JOBS = int(os.environ.get("JOBS", "2"))
SEED = int(os.environ.get("SEED", "0"))


def run_name(arm):
    spec = arms()[arm]
    base = spec[3] if len(spec) > 3 else arm  # eval-only arms sample another arm's run
    return base if SEED == 0 else "%s_s%d" % (base, SEED)
NICE = ["nice", "-n", "10"]


def load(name):
    with open(os.path.join(HERE, name)) as f:
        return json.load(f)


# arm -> (base pipeline, changes, evaluation step counts[, the arm whose trained run it samples])
def arms():
    a = {}
    a["bfn_n10"] = ("csp_bfn.json", {}, [10])
    a["diffusion"] = ("csp_diffusion.json", {}, [10, 50, 200, 1000])
    a["diffusion_ddim"] = ("csp_diffusion.json", {"solver": {"deterministic": True}}, [10, 50, 200, 1000], "diffusion")
    a["diffusion_pc"] = ("csp_diffusion.json", {"solver": {"corrector": True}}, [1000], "diffusion")  # NFE 2000
    a["bfn_n10_time"] = ("csp_bfn.json", {"model": {"accuracy_input": False}}, [10])
    a["bfn_n50"] = ("csp_bfn.json", {"path": {"steps": 50}}, [50, 25, 10])
    a["bfn_n10_euclid"] = ("csp_bfn.json", {"path": {"coordinates": "euclidean"}}, [10])
    a["gen_n50"] = ("gen_bfn.json", {}, [50, 10])
    return a


def pipeline_for(arm, steps=None):
    base, changes = arms()[arm][:2]
    p = load(base)
    for section, kv in changes.items():
        p[section].update(kv)
    p["name"] = run_name(arm)
    p["train"]["seed"] = SEED
    if os.environ.get("STEPS"):
        p["train"]["steps"] = int(os.environ["STEPS"])
    if steps is not None:
        p["sample"]["steps"] = steps
    return p


def flowkit(cmd, pipeline, name, tag):
    pdir = os.path.join(OUT, "pipelines")
    os.makedirs(pdir, exist_ok=True)
    pfile = os.path.join(pdir, "%s_%s.json" % (name, tag))
    with open(pfile, "w") as f:
        json.dump(pipeline, f, indent=1)
    t0 = time.time()
    r = subprocess.run(NICE + [FLOWKIT, "-q", cmd, pfile, "--runs-dir", OUT, "--name", name],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit("flowkit %s %s failed (exit %d):\n%s" % (cmd, pfile, r.returncode, r.stdout[-3000:]))
    return time.time() - t0


def results():
    p = os.path.join(OUT, "results.json")
    return json.load(open(p)) if os.path.exists(p) else {}


def save(key, value):
    res = results()
    res[key] = value
    tmp = os.path.join(OUT, "results.json.tmp%d" % os.getpid())
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(OUT, "results.json"))


def train(arm):
    if len(arms()[arm]) > 3:
        return arm, None  # eval-only
    secs = flowkit("train", pipeline_for(arm), run_name(arm), "train")
    print("trained %-16s in %6.1f s" % (arm, secs), flush=True)
    return arm, secs


def evaluate(arm, train_seconds=None):
    for steps in arms()[arm][2]:
        flowkit("eval", pipeline_for(arm, steps), run_name(arm), "eval%d" % steps)
        with open(os.path.join(OUT, run_name(arm), "eval.json")) as f:
            m = json.load(f)
        if train_seconds is not None:
            m["train_seconds"] = train_seconds
        save("%s@%d" % (arm if SEED == 0 else "%s_s%d" % (arm, SEED), steps), m)
        print("%-16s NFE %4d: match %.3f rmse %s valid %.3f (%.1f s)" % (
            arm, m["nfe"], m.get("match_rate", float("nan")), m.get("rmse"), m["struct_validity"],
            m["sample_seconds"]), flush=True)


def fmt(v, spec="%.3f"):
    return "–" if v is None else spec % v


def summary():
    res = results()
    print("| arm | NFE | match rate | RMSE | match rate, novel compositions | struct. validity | lattice length error | sampling s / 500 |")
    print("|---|---|---|---|---|---|---|---|")
    for key in sorted(res, key=lambda k: (k.split("@")[0], int(k.split("@")[1]))):
        m = res[key]
        if "match_rate" not in m or key.startswith("gen"):
            continue
        arm = key.split("@")[0]
        print("| %s | %d | %s | %s | %s | %s | %s | %s |" % (
            arm, m["nfe"], fmt(m.get("match_rate")), fmt(m.get("rmse"), "%.4f"), fmt(m.get("match_rate_novel")),
            fmt(m.get("struct_validity")), fmt(m.get("lattice_length_error"), "%.4f"),
            fmt(m["sample_seconds"] * 500.0 / m["samples"], "%.1f")))
    gens = [k for k in res if k.startswith("gen")]
    if gens:
        print("\n| generation | NFE | structural validity | composition validity | validity | density W1 | #elements W1 |")
        print("|---|---|---|---|---|---|---|")
        for key in sorted(gens, key=lambda k: int(k.split("@")[1])):
            m = res[key]
            print("| %s | %d | %s | %s | %s | %s | %s |" % (
                key.split("@")[0], m["nfe"], fmt(m["struct_validity"]), fmt(m["comp_validity"]), fmt(m["validity"]),
                fmt(m.get("density_w1")), fmt(m.get("num_elements_w1"))))


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    chosen = sys.argv[2:] or list(arms())
    for a in chosen:
        if a not in arms():
            sys.exit("unknown arm '%s' (arms: %s)" % (a, ", ".join(arms())))
    if what == "train":
        with concurrent.futures.ThreadPoolExecutor(JOBS) as pool:
            list(pool.map(train, chosen))
    elif what == "all":  # each worker trains an arm, then evaluates it
        with concurrent.futures.ThreadPoolExecutor(JOBS) as pool:
            list(pool.map(lambda a: evaluate(*train(a)), chosen))
    elif what == "eval":
        with concurrent.futures.ThreadPoolExecutor(JOBS) as pool:
            list(pool.map(evaluate, chosen))
    if what in ("summary", "all", "eval"):
        summary()


if __name__ == "__main__":
    main()
