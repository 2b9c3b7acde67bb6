#!/usr/bin/env python3
"""The PFGM++ digits robustness plots from the committed sweep results (matplotlib).

    /usr/bin/python3 plugins/pfgmpp/examples/plot_sweep.py [--samples runs/pfgmpp_digits_sweep]

Reads plugins/pfgmpp/examples/results/digits_sweep.jsonl (written by `flowkit sweep
plugins/pfgmpp/examples/digits_sweep.json`) and writes docs/methods/pfgmpp_fd_vs_{alpha,steps,bits}.png:
FD-digits (sampling seed 1) against each knob, one line per D. With --samples, also copies the
sample grids of D = 1, 16 and inf from the sweep's run directories into docs/methods/.
Needs python3-matplotlib (Debian).
"""
import json
import os
import shutil
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
RESULTS = os.path.join(ROOT, "plugins/pfgmpp/examples/results/digits_sweep.jsonl")
DOCS = os.path.join(ROOT, "docs/methods")
SHOWN_D = ["1", "16", "128", "2048", "inf"]
# knob -> (config key, clean value, axis label)
KNOBS = {
    "alpha": ("solver.alpha", 0.0, "noise injection α"),
    "steps": ("solver.steps", 18, "Heun steps n (NFE = 2n − 1)"),
    "bits": ("solver.bits", 0, "weight bits b (clean: unquantized, drawn at 32)"),
}


def d_name(value):
    return "inf" if value == "inf" else "%g" % value


def main():
    lines = [json.loads(l) for l in open(RESULTS) if l.strip()]
    for knob, (key, clean, label) in KNOBS.items():
        fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=110)
        for D in SHOWN_D:
            pts = {}
            for l in lines:
                c = l["config"]
                if d_name(c["path.D"]) != D or c.get("path.clip_lower") or c["sample.seed"] != 1:
                    continue
                others_clean = all(c[k] == v for kk, (k, v, _) in KNOBS.items() if kk != knob)
                if not others_clean:
                    continue
                x = c[key]
                if knob == "bits" and x == 0:
                    x = 32
                pts[x] = l["metrics"]["fd_digits"]
            xs = sorted(pts)
            ax.plot(xs, [pts[x] for x in xs], marker="o", label="D = " + ("∞" if D == "inf" else D))
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("FD-digits (seed 1)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        out = os.path.join(DOCS, "pfgmpp_fd_vs_%s.png" % knob)
        fig.savefig(out)
        plt.close(fig)
        print("wrote", out)
    if "--samples" in sys.argv:
        runs = sys.argv[sys.argv.index("--samples") + 1]
        for D, tag in (("1", "D1"), ("16", "D16"), ("inf", "Dinf")):
            src = os.path.join(runs, "D-%s_seed-1" % D, "samples", "samples.png")
            dst = os.path.join(DOCS, "pfgmpp_samples_digits_%s.png" % tag)
            shutil.copyfile(src, dst)
            print("wrote", dst, "from", src)


if __name__ == "__main__":
    main()
