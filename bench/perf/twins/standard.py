#!/usr/bin/python3
"""The standard plugin's workloads written in plain PyTorch: the twin of standard.mlp +
standard.affine (CondOT) + standard.cfm + AdamW (+ EMA, clipping) as flowkit runs them, and of
the midpoint sampler. Contract: bench/perf/README.md."""
import argparse, json, math, sys, time

import torch

# The flowkit side of each workload: the same work, as a pipeline and overrides.
TOY = ["model.hidden=256", "model.layers=3", "model.time_embedding_dim=32", "model.activation=silu",
       "train.lr=0.001", "train.warmup_steps=0", "train.ema_decay=0", "train.grad_clip=0"]
FLOWKIT = {
    "cfm_toy2d_b256": {"pipeline": "plugins/standard/examples/toy2d.json", "overrides": TOY + ["train.batch_size=256"]},
    "cfm_toy2d_b4096": {"pipeline": "plugins/standard/examples/toy2d.json", "overrides": TOY + ["train.batch_size=4096"]},
    "cfm_digits_quickstart": {"pipeline": "plugins/standard/examples/quickstart.json", "overrides": []},
    "sample_digits_midpoint": {"pipeline": "plugins/standard/examples/quickstart.json", "overrides": [], "sample": True},
}
# What each workload's pipeline resolves to (plugin.json defaults included).
SETTINGS = {
    "cfm_toy2d_b256": dict(dim=2, classes=0, hidden=256, layers=3, temb=32, act="silu", batch=256, lr=1e-3,
                           warmup=0, ema=0.0, clip=0.0, time_sampler="uniform", label_dropout=0.0),
    "cfm_digits_quickstart": dict(dim=64, classes=10, hidden=256, layers=3, temb=64, act="silu", batch=256, lr=2e-3,
                                  warmup=100, ema=0.999, clip=1.0, time_sampler="logit_normal", label_dropout=0.1),
}
SETTINGS["cfm_toy2d_b4096"] = dict(SETTINGS["cfm_toy2d_b256"], batch=4096)
SETTINGS["sample_digits_midpoint"] = dict(SETTINGS["cfm_digits_quickstart"])


def sinusoidal(t, dim):
    half = dim // 2
    k = torch.arange(half, dtype=t.dtype)
    freqs = torch.exp(-math.log(10000.0) * k / max(half, 1))
    args = 1000.0 * t.reshape(-1, 1) * freqs.reshape(1, -1)
    return torch.cat([torch.sin(args), torch.cos(args)], 1)


class MLP(torch.nn.Module):
    """standard.mlp: h = act(In(x) + T(t) [+ E(label)]), hidden layers, Out."""

    def __init__(self, s):
        super().__init__()
        self.s = s
        self.time1 = torch.nn.Linear(s["temb"], s["hidden"])
        self.time2 = torch.nn.Linear(s["hidden"], s["hidden"])
        self.input = torch.nn.Linear(s["dim"], s["hidden"])
        self.hidden = torch.nn.ModuleList([torch.nn.Linear(s["hidden"], s["hidden"]) for _ in range(s["layers"] - 1)])
        self.output = torch.nn.Linear(s["hidden"], s["dim"])
        self.label_embedding = torch.nn.Embedding(s["classes"] + 1, s["hidden"]) if s["classes"] else None
        self.act = torch.nn.functional.silu

    def forward(self, x, t, label=None):
        temb = self.time2(self.act(self.time1(sinusoidal(t, self.s["temb"]))))
        h = self.input(x) + temb
        if self.label_embedding is not None:
            if label is None:
                label = torch.full((x.shape[0],), self.s["classes"], dtype=torch.long)
            h = h + self.label_embedding(label)
        h = self.act(h)
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.output(h)


class Data:
    """A random minibatch each step, like the domains: 8 Gaussians, or rows of an in-memory digits set."""

    def __init__(self, s):
        self.s = s
        if s["classes"]:
            self.x = torch.rand(1500, s["dim"]) * 2 - 1
            self.y = torch.randint(0, s["classes"], (1500,))
        angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
        self.centers = torch.stack([torch.cos(angle), torch.sin(angle)], 1) * (2 * math.sqrt(2.0))

    def batch(self, n):
        if self.s["classes"]:
            idx = torch.randint(0, self.x.shape[0], (n,))
            return self.x.index_select(0, idx), self.y.index_select(0, idx)
        k = torch.randint(0, 8, (n,))
        return (self.centers.index_select(0, k) + (0.5 / math.sqrt(2.0)) * torch.randn(n, 2, dtype=torch.float64)).float(), None


def lr_at(s, step, total):
    if step < s["warmup"]:
        return s["lr"] * (step + 1) / s["warmup"]
    progress = (step - s["warmup"]) / max(1, total - s["warmup"])
    return s["lr"] * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def cfm_step(s, model, data, opt, ema, step, total):
    for g in opt.param_groups:
        g["lr"] = lr_at(s, step, total)
    x1, label = data.batch(s["batch"])
    b = x1.shape[0]
    x0 = torch.randn_like(x1)
    if s["time_sampler"] == "logit_normal":
        t = torch.sigmoid(torch.randn(b))
    else:
        t = torch.rand(b)
    tt = t.reshape(-1, 1)
    xt = tt * x1 + (1 - tt) * x0
    dxt = x1 - x0
    if label is not None and s["label_dropout"] > 0:
        drop = torch.rand(b) < s["label_dropout"]
        label = torch.where(drop, torch.full_like(label, s["classes"]), label)
    loss = (model(xt, t, label) - dxt).pow(2).mean()
    value = loss.item()
    opt.zero_grad()
    loss.backward()
    if s["clip"] > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), s["clip"])
    opt.step()
    if ema is not None:
        d = min(s["ema"], (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for e, p in zip(ema, model.parameters()):
                e.mul_(d).add_(p.detach(), alpha=1 - d)
    return value


def train(name, steps, warmup):
    s = SETTINGS[name]
    torch.manual_seed(0)
    model, data = MLP(s), Data(s)
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], betas=(0.9, 0.999), weight_decay=0.0)
    ema = [p.detach().clone() for p in model.parameters()] if s["ema"] > 0 else None
    total = warmup + steps
    losses = []
    for step in range(warmup):
        cfm_step(s, model, data, opt, ema, step, total)
    start = time.perf_counter()
    for step in range(warmup, total):
        losses.append(cfm_step(s, model, data, opt, ema, step, total))
    seconds = time.perf_counter() - start
    return {"steps_per_sec": steps / seconds, "loss_first": sum(losses[:10]) / len(losses[:10]),
            "loss_last": sum(losses[-10:]) / len(losses[-10:])}


def sample(name, count, repeats):
    """The midpoint sampler with 20 steps (40 NFE) on `count` class-conditional samples."""
    s = SETTINGS[name]
    torch.manual_seed(0)
    model = MLP(s).eval()
    rates = []
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first is warm-up
            start = time.perf_counter()
            x = torch.randn(count, s["dim"])
            label = torch.randint(0, s["classes"], (count,))
            h = 1.0 / 20
            for i in range(20):
                t = torch.full((count,), i * h)
                v = model(x, t, label)
                x_mid = x + 0.5 * h * v
                x = x + h * model(x_mid, t + 0.5 * h, label)
            rates.append(count / (time.perf_counter() - start))
    rates = sorted(rates[1:])
    return {"samples_per_sec": rates[len(rates) // 2], "nfe": 40}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True, choices=sorted(FLOWKIT))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--threads-intra", type=int, default=0)
    args = ap.parse_args()
    if args.threads_intra:
        torch.set_num_threads(args.threads_intra)
    if FLOWKIT[args.workload].get("sample"):
        out = sample(args.workload, args.samples, 3)
    else:
        out = train(args.workload, args.steps, args.warmup)
    out.update({"workload": args.workload, "intra_threads": torch.get_num_threads()})
    print(json.dumps(out))
    f = FLOWKIT[args.workload]
    print("flowkit side: build/bin/flowkit train " + f["pipeline"] + " " + " ".join(f["overrides"]), file=sys.stderr)


if __name__ == "__main__":
    main()
