#!/usr/bin/env python3
"""Writes the DM1 experiment pipelines (one per trained arm and seed) into OUT_DIR.

usage: make_pipelines.py OUT_DIR --seeds 0 1 2 --steps 2000 --demos 200 --observation state
Each arm is trained once; sampling variants (FM K, MeanFlow 1/5 steps) are evaluated from
the same run by `flowkit eval --name RUN` with a pipeline that differs only in sample.steps.
"""
import argparse, json, os

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
p.add_argument("--steps", type=int, default=4000)
p.add_argument("--demos", type=int, default=200)
p.add_argument("--observation", default="state")
p.add_argument("--rollouts", type=int, default=200)
p.add_argument("--arms", nargs="+", default=None, help="subset of the arm names below (default: all)")
a = p.parse_args()

MF = {"type": "dm1.meanflow", "weighting": "mse", "ratio_r_neq_t": 0.25}   # official 25 % r != t; plain MSE as DM1 (adaptive p = 1 is mode-seeking: see docs/methods/dm1.md)
ARMS = {
    # name: (loss, solver, path, eval steps)
    "reg":   ({"type": "dm1.regression"}, {"type": "dm1.direct"}, None, [1]),
    "fm":    ({"type": "standard.cfm"}, {"type": "standard.euler", "steps": 50}, {"type": "standard.affine"}, [1, 10, 50]),
    "mf":    (MF, {"type": "dm1.meanflow_sampler"}, None, [1, 5]),
    "mfad":  ({**MF, "weighting": "adaptive"}, {"type": "dm1.meanflow_sampler"}, None, [1]),   # official weighting p = 1
    "mf0":   ({**MF, "ratio_r_neq_t": 0.0}, {"type": "dm1.meanflow_sampler"}, None, [1]),
    "mf50":  ({**MF, "ratio_r_neq_t": 0.5}, {"type": "dm1.meanflow_sampler"}, None, [1, 5]),   # DM1's flow_ratio 0.5
    "wh0.1": ({**MF, "dispersive_weight": 0.1}, {"type": "dm1.meanflow_sampler"}, None, [1]),
    "wh0.5": ({**MF, "dispersive_weight": 0.5}, {"type": "dm1.meanflow_sampler"}, None, [1]),
    "wh0.9": ({**MF, "dispersive_weight": 0.9}, {"type": "dm1.meanflow_sampler"}, None, [1]),
    # where the dispersive term acts: only the observation embedding, or only the last trunk block
    "wh0.1obs":   ({**MF, "dispersive_weight": 0.1, "dispersive_taps": "obs"}, {"type": "dm1.meanflow_sampler"}, None, [1]),
    "wh0.1trunk": ({**MF, "dispersive_weight": 0.1, "dispersive_taps": "trunk"}, {"type": "dm1.meanflow_sampler"}, None, [1]),
    "dm1form": ({**MF, "dispersive_weight": 0.5, "dispersive_form": "dm1", "dispersive_pass": "clean"},
                {"type": "dm1.meanflow_sampler"}, None, [1]),
    # DM1 as released: 50 % r != t, plain MSE, its dispersive form on a clean pass
    "dm1full": ({**MF, "ratio_r_neq_t": 0.5, "dispersive_weight": 0.5, "dispersive_form": "dm1", "dispersive_pass": "clean"},
                {"type": "dm1.meanflow_sampler"}, None, [1, 5]),
}

unknown = set(a.arms or []) - set(ARMS)
if unknown:
    p.error(f"unknown arm(s) {sorted(unknown)}; known: {list(ARMS)}")
os.makedirs(a.out, exist_ok=True)
plan = []
for seed in a.seeds:
    for arm, (loss, solver, path, evals) in ARMS.items():
        if a.arms and arm not in a.arms:
            continue
        name = f"{a.observation}_d{a.demos}_{arm}_s{seed}"
        pipe = {
            "name": name,
            "domain": {"type": "dm1.bireach", "observation": a.observation, "demos": a.demos, "rollouts": a.rollouts},
            "model": {"type": "dm1.policy"},
            "loss": loss,
            "solver": solver,
            "train": {"steps": a.steps, "batch_size": 256, "lr": 0.001, "warmup_steps": 100, "ema_decay": 0.995,
                      "log_every": 500, "seed": seed, "checkpoint_every": 0},
            "sample": {"count": 200, "seed": seed},
            "eval": {"seed": 100 + seed},
        }
        if path:
            pipe["path"] = path
        f = os.path.join(a.out, name + ".json")
        json.dump(pipe, open(f, "w"), indent=1)
        for k in evals:
            pk = dict(pipe, sample=dict(pipe["sample"], steps=k))
            fk = os.path.join(a.out, f"{name}_k{k}.json")
            json.dump(pk, open(fk, "w"), indent=1)
            plan.append((name, arm, seed, k, f, fk))
with open(os.path.join(a.out, "plan.tsv"), "w") as out:
    for row in plan:
        out.write("\t".join(map(str, row)) + "\n")
print(os.path.join(a.out, "plan.tsv"))
