#!/usr/bin/env python3
"""PFGM++ experiments: the 2-D toy D-sweep and the digits D-sweep with robustness grids.

Usage (from the repository root):
    plugins/pfgmpp/examples/run_sweep.sh [toy|digits|clip|all|summary|reeval]
Environment: FLOWKIT (default build/bin/flowkit), OUT (default runs/pfgmpp_sweep),
DIGITS_D / TOY_D (comma lists, e.g. "1,4,inf"), DIGITS_STEPS / TOY_STEPS (training steps),
GRID_D (the D values that get the robustness grids; default 1,16,128,2048,inf).
Every run is `flowkit run` on a generated pipeline (a copy of toy2d.json / digits.json with the
swept values), every grid point is `flowkit eval` of the same run with a changed solver.
Results go to OUT/results.json; `summary` prints Markdown tables and writes PNG plots.
"""
import copy, json, math, os, struct, subprocess, sys, time, zlib

HERE = os.path.dirname(os.path.abspath(__file__))
FLOWKIT = os.environ.get("FLOWKIT", "build/bin/flowkit")
OUT = os.environ.get("OUT", "runs/pfgmpp_sweep")
NICE = ["nice", "-n", "10"]


def dlist(s):
    return [("inf" if v.strip() == "inf" else float(v)) for v in s.split(",")]


def dname(D):
    if D == "inf":
        return "inf"
    return "%g" % D


def load(name):
    with open(os.path.join(HERE, name)) as f:
        return json.load(f)


def results():
    p = os.path.join(OUT, "results.json")
    return json.load(open(p)) if os.path.exists(p) else {}


def save(res, replace=False):
    """Merges `res` into OUT/results.json (two sweeps may run side by side)."""
    os.makedirs(OUT, exist_ok=True)
    merged = {} if replace else results()
    merged.update(res)
    tmp = os.path.join(OUT, "results.json.tmp%d" % os.getpid())
    with open(tmp, "w") as f:
        json.dump(merged, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(OUT, "results.json"))


def flowkit(cmd, pipeline, name):
    pdir = os.path.join(OUT, "pipelines")
    os.makedirs(pdir, exist_ok=True)
    pfile = os.path.join(pdir, name + ("_%s.json" % cmd))
    with open(pfile, "w") as f:
        json.dump(pipeline, f, indent=1)
    t0 = time.time()
    r = subprocess.run(NICE + [FLOWKIT, "-q", cmd, pfile, "--runs-dir", OUT, "--name", name],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit("flowkit %s %s failed:\n%s" % (cmd, name, r.stdout))
    with open(os.path.join(OUT, name, "eval.json")) as f:
        ev = json.load(f)
    ev["seconds"] = round(time.time() - t0, 1)
    return ev


def train_logs(name):
    """Mean clipped fraction and the last logged loss of a run's training."""
    clipped, loss = [], None
    for line in open(os.path.join(OUT, name, "metrics.jsonl")):
        j = json.loads(line)
        if "clipped_fraction" in j:
            clipped.append(j["clipped_fraction"])
        if "loss" in j:
            loss = j["loss"]
    return (sum(clipped) / len(clipped) if clipped else None), loss


def run_once(pipe, name, res, key):
    if key in res:
        return res[key]
    if os.path.exists(os.path.join(OUT, name, "checkpoints", "last.pt")):
        ev = flowkit("eval", pipe, name)
    else:
        ev = flowkit("run", pipe, name)
    ev["clipped_fraction"], ev["final_loss"] = train_logs(name)
    res[key] = ev
    save(res)
    print(key, json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in ev.items()}), flush=True)
    return ev


def toy(res):
    base = load("toy2d.json")
    if "TOY_STEPS" in os.environ:
        base["train"]["steps"] = int(os.environ["TOY_STEPS"])
    variants = [(D, False) for D in dlist(os.environ.get("TOY_D", "1,2,8,32,128,1e6,inf"))]
    variants.append((1e6, True))  # the official two-sided clip at D >> N
    for D, official_clip in variants:
        p = copy.deepcopy(base)
        p["path"]["D"] = D
        p["path"]["clip_lower"] = official_clip
        name = "toy_D%s%s" % (dname(D), "_clip2" if official_clip else "")
        run_once(p, name, res, name)
        for seed in (2, 3):
            q = copy.deepcopy(p)
            q["sample"]["seed"] = seed
            run_once(q, name, res, "%s/seed%d" % (name, seed))
        if official_clip:
            continue
        for alpha in (0.1, 0.2, 0.4):
            q = copy.deepcopy(p)
            q["solver"]["alpha"] = alpha
            run_once(q, name, res, "%s/alpha%g" % (name, alpha))
        for steps in (3, 5, 8):
            q = copy.deepcopy(p)
            q["solver"]["steps"] = steps
            run_once(q, name, res, "%s/steps%d" % (name, steps))


def digits_official_clip(res):
    """D = 1e6 with the official two-sided clip of B (every draw clipped at N = 64)."""
    p = load("digits.json")
    if "DIGITS_STEPS" in os.environ:
        p["train"]["steps"] = int(os.environ["DIGITS_STEPS"])
    p["path"]["D"] = 1e6
    p["path"]["clip_lower"] = True
    for seed in (1, 2, 3):
        q = copy.deepcopy(p)
        q["sample"]["seed"] = seed
        run_once(q, "digits_D1e+06_clip2", res, "digits_D1e+06_clip2/seed%d" % seed)


def digits(res):
    base = load("digits.json")
    if "DIGITS_STEPS" in os.environ:
        base["train"]["steps"] = int(os.environ["DIGITS_STEPS"])
    Ds = dlist(os.environ.get("DIGITS_D", "1,4,16,64,128,2048,1e6,inf"))
    grid_D = [dname(d) for d in dlist(os.environ.get("GRID_D", "1,16,128,2048,inf"))]
    for D in Ds:
        name = "digits_D%s" % dname(D)
        p = copy.deepcopy(base)
        p["path"]["D"] = D
        for seed in (1, 2, 3):
            q = copy.deepcopy(p)
            q["sample"]["seed"] = seed
            run_once(q, name, res, "%s/seed%d" % (name, seed))
        if dname(D) not in grid_D:
            continue
        for alpha in (0.05, 0.1, 0.2, 0.3, 0.5, 1.0):
            q = copy.deepcopy(p)
            q["solver"]["alpha"] = alpha
            run_once(q, name, res, "%s/alpha%g" % (name, alpha))
        for steps in (3, 4, 6, 8, 10, 14):
            q = copy.deepcopy(p)
            q["solver"]["steps"] = steps
            run_once(q, name, res, "%s/steps%d" % (name, steps))
        for bits in (2, 3, 4, 5, 6, 7, 8):
            q = copy.deepcopy(p)
            q["solver"]["bits"] = bits
            run_once(q, name, res, "%s/bits%d" % (name, bits))


# ---- summary: Markdown tables and PNG plots (no matplotlib needed) ----------------------------

def png(path, rgb):
    h, w = len(rgb), len(rgb[0]) // 3
    raw = b"".join(b"\x00" + bytes(row) for row in rgb)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127), (23, 190, 207)]


def line_plot(path, xs, curves, logy=True, W=640, H=400, M=40):
    """curves: [(colour index, [y...])]; x values equally spaced; log-y grid lines at 1, 2, 5 x 10^k."""
    img = [[255] * (3 * W) for _ in range(H)]

    def put(x, y, c, r=1):
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if 0 <= x + dx < W and 0 <= y + dy < H:
                    img[y + dy][3 * (x + dx):3 * (x + dx) + 3] = list(c)
    ys = [v for _, c in curves for v in c if v is not None and v > 0]
    f = (lambda v: math.log10(v)) if logy else (lambda v: v)
    lo, hi = f(min(ys)), f(max(ys))
    if hi - lo < 1e-9:
        hi = lo + 1
    lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)
    X = lambda i: int(M + i * (W - 2 * M) / max(1, len(xs) - 1))
    Y = lambda v: int(H - M - (f(v) - lo) * (H - 2 * M) / (hi - lo))
    for k in range(math.floor(lo), math.ceil(hi) + 1) if logy else []:
        for m in (1, 2, 5):
            v = m * 10 ** k
            if lo <= math.log10(v) <= hi:
                for x in range(M, W - M):
                    put(x, Y(v), (225, 225, 225) if m > 1 else (180, 180, 180), 0)
    for i in range(len(xs)):
        for y in range(M, H - M):
            put(X(i), y, (235, 235, 235), 0)
    for x in range(M, W - M):
        put(x, H - M, (0, 0, 0), 0)
    for y in range(M, H - M):
        put(M, y, (0, 0, 0), 0)
    for ci, c in curves:
        col = COLORS[ci % len(COLORS)]
        pts = [(X(i), Y(v)) for i, v in enumerate(c) if v is not None and v > 0]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            n = max(abs(x1 - x0), abs(y1 - y0), 1)
            for s in range(n + 1):
                put(round(x0 + (x1 - x0) * s / n), round(y0 + (y1 - y0) * s / n), col, 1)
        for x, y in pts:
            put(x, y, col, 3)
    png(path, [bytes(r) for r in img])


def summary(res):
    out = []
    toy_runs = sorted({k.split("/")[0] for k in res if k.startswith("toy_")},
                      key=lambda k: (k.endswith("clip2"), math.inf if "Dinf" in k else float(k.split("_D")[1].split("_")[0])))
    if toy_runs:
        def ms(vals):
            m = sum(vals) / len(vals)
            return m, math.sqrt(sum((v - m) ** 2 for v in vals) / max(1, len(vals) - 1))
        out.append("### 2-D toy (8 Gaussians, N = 2), 2000 samples vs 2000 fresh data, Heun 18 steps (NFE 35); mean ± std over 3 sampling seeds\n")
        out.append("| run | D | energy distance | MMD² (RBF) | mode coverage | mode precision | clipped share (train) |")
        out.append("|---|---|---|---|---|---|---|")
        for k in toy_runs:
            vals = [res[x] for x in (k, k + "/seed2", k + "/seed3") if x in res]
            cell = lambda key, f: (f + " ± " + f) % ms([v[key] for v in vals])
            out.append("| %s | %s | %s | %s | %s | %s | %.4f |" % (
                k, k.split("_D")[1].split("_")[0], cell("energy_distance", "%.4f"), cell("mmd_rbf", "%.5f"),
                cell("mode_coverage", "%.3f"), cell("mode_precision", "%.3f"), vals[0]["clipped_fraction"] or 0))
        out.append("")
        for knob, values, tag in (("alpha", [0, 0.1, 0.2, 0.4], lambda v: "" if v == 0 else "/alpha%g" % v),
                                  ("steps", [3, 5, 8, 18], lambda v: "" if v == 18 else "/steps%d" % v)):
            rows = [k for k in toy_runs if k + tag(values[1]) in res]
            if not rows:
                continue
            out.append("#### toy: energy distance vs %s (seed 1; in brackets: ratio to the clean value)\n" % knob)
            out.append("| D | " + " | ".join(str(v) for v in values) + " |")
            out.append("|---|" + "---|" * len(values))
            for k in rows:
                c0 = res[k]["energy_distance"]
                out.append("| %s | " % k.split("_D")[1] + " | ".join(
                    "%.4f (%.1f)" % (res[k + tag(v)]["energy_distance"], res[k + tag(v)]["energy_distance"] / c0)
                    if k + tag(v) in res else "–" for v in values) + " |")
            out.append("")
    names = sorted({k.split("/")[0] for k in res if k.startswith("digits_")},
                   key=lambda n: (n.endswith("clip2"), math.inf if n.endswith("inf") else float(n.split("_D")[1].split("_")[0])))
    if not names:
        print("\n".join(out))
        return
    fd = lambda n, v: res.get("%s/%s" % (n, v), {}).get("fd_digits")
    out.append("### Digits (N = 64), clean sampling (Heun 18 steps, NFE 35), 1000 samples vs the 297 held-out digits\n")
    out.append("| D | FD-digits mean ± std (3 seeds) | class entropy (ln 10 = 2.303) | classifier confidence | NN-train distance | outlier share | MMD² | clipped share (train) | final train loss |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    clean = {}
    for n in names:
        vals = [res["%s/seed%d" % (n, s)] for s in (1, 2, 3) if "%s/seed%d" % (n, s) in res]
        f = [v["fd_digits"] for v in vals]
        m = sum(f) / len(f)
        sd = math.sqrt(sum((x - m) ** 2 for x in f) / max(1, len(f) - 1))
        clean[n] = m
        avg = lambda key: sum(v[key] for v in vals) / len(vals)
        out.append("| %s | %.2f ± %.2f | %.3f | %.3f | %.3f | %.4f | %.5f | %.4f | %.2f |" % (
            n.split("_D")[1], m, sd, avg("class_entropy"), avg("classifier_confidence"), avg("nn_train_distance"),
            avg("outlier_share") if "outlier_share" in vals[0] else float("nan"), avg("mmd_rbf"), vals[0]["clipped_fraction"] or 0, vals[0]["final_loss"]))
    out.append("")
    grids = [("alpha", [0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0], "noise injection α", lambda v: "seed1" if v == 0 else "alpha%g" % v),
             ("steps", [3, 4, 6, 8, 10, 14, 18], "Heun steps n (NFE = 2n−1)", lambda v: "seed1" if v == 18 else "steps%d" % v),
             ("bits", [2, 3, 4, 5, 6, 7, 8, 32], "weight bits b (32 = unquantized)", lambda v: "seed1" if v == 32 else "bits%d" % v)]
    os.makedirs(os.path.join(OUT, "plots"), exist_ok=True)
    for key, values, title, tag in grids:
        gnames = [n for n in names if fd(n, tag(values[2])) is not None]
        if not gnames:
            continue
        out.append("#### FD-digits vs %s (seed 1; in brackets: FD / FD(clean, seed 1))\n" % title)
        out.append("| D | " + " | ".join(str(v) for v in values) + " |")
        out.append("|---|" + "---|" * len(values))
        curves = []
        for n in gnames:
            row = [fd(n, tag(v)) for v in values]
            c0 = fd(n, "seed1")
            out.append("| %s | " % n.split("_D")[1] + " | ".join(
                "%.2f (%.2f)" % (v, v / c0) if v is not None else "–" for v in row) + " |")
            curves.append((names.index(n), row))
        out.append("")
        line_plot(os.path.join(OUT, "plots", "fd_vs_%s.png" % key), values, curves)
    out.append("Plot colours (fd_vs_*.png in OUT/plots; x: the grid values equally spaced, y: FD-digits, log scale with lines at 1, 2, 5 x 10^k): " + ", ".join(
        "%s = rgb%s" % (n.split("_D")[1], COLORS[i % len(COLORS)]) for i, n in enumerate(names)))
    print("\n".join(out))


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    res = results()
    if what == "reeval":  # forget the digits evaluations (keeps the trained runs) and redo them
        res = {k: v for k, v in res.items() if not k.startswith("digits_")}
        save(res, replace=True)
        what = "digits"
    if what in ("toy", "all"):
        toy(res)
    if what in ("digits", "all"):
        digits(res)
    if what in ("clip", "all"):
        digits_official_clip(res)
    summary(results())
