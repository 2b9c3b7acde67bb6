#!/usr/bin/python3
"""The pfgmpp and dm1 plugins' workloads written in plain PyTorch (the twins of flowkit's C++):

* pfgmpp_digits: pfgmpp.edm (EDM preconditioning) around pfgmpp.resmlp, pfgmpp.edm_loss with the
  N+D kernel of pfgmpp.kernel (D = 64, beta clip 1e-3 upper bound only), AdamW, EMA, on the digits;
* dm1_meanflow: dm1.policy + dm1.meanflow (logit-normal (t, r), forward-mode JVP, MSE weighting, no
  dispersive term as the pipeline's dispersive_weight is 0), AdamW, EMA, grad clip 1, on BiReach-shaped
  data (obs [B, 12], action chunks [B, 8, 2]);
* dm1_policy_latency: batch-1 calls of the one-step MeanFlow sampler (dm1.meanflow_sampler, steps 1).

Contract: /usr/bin/python3 pfgmpp_dm1.py --workload NAME --steps N --warmup W [--threads-intra K]
prints one JSON line on stdout and the flowkit command of the same work on stderr.
"""
import argparse, gzip, json, math, os, sys, time

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

# The flowkit side of each workload: the same work, as a pipeline and overrides. The driver adds
# train.steps=<warmup + steps> (the cosine schedule spans warm-up and timed steps, as here).
FLOWKIT = {
    "pfgmpp_digits": {"pipeline": "plugins/pfgmpp/examples/digits.json", "overrides": []},
    # checkpoint_every=0: the twin writes no checkpoint at step 500 (the pipeline's default).
    "dm1_meanflow": {"pipeline": "plugins/dm1/examples/meanflow_state.json", "overrides": ["train.checkpoint_every=0"]},
    # Timing needs a trained run, not a good one: train a few steps, then
    #   build/bin/flowkit-policy <runs-dir>/dm1_policy_latency --calls N --warmup W --batch 0
    # (--threads 1 is flowkit-policy's default; --batch 0 skips its extra throughput call).
    "dm1_policy_latency": {"pipeline": "plugins/dm1/examples/meanflow_state.json",
                           "overrides": ["train.steps=20", "train.checkpoint_every=0"], "policy": True,
                           "run_name": "dm1_policy_latency",
                           "policy_args": ["--batch", "0"]},
}

# What the pipelines resolve to (plugin.json and host defaults included; see runs/*/pipeline.resolved.json).
PFGMPP = dict(N=64, D=64.0, beta_clip=1e-3, clip_lower=False, sigma_data=0.5, P_mean=-1.2, P_std=1.2,
              hidden=256, blocks=2, embedding_dim=64,
              batch=128, lr=2e-3, warmup=100, betas=(0.9, 0.999), weight_decay=0.0, ema=0.999, clip=0.0)
DM1 = dict(chunk=8, goals=8, hidden=256, layers=3, obs_hidden=128, obs_embed=64, time_embed=16, time_scale=1.0,
           time_inputs="t_h", ratio_r_neq_t=0.5, p_mean=-0.4, p_std=1.0,
           batch=256, lr=1e-3, warmup=100, betas=(0.9, 0.999), weight_decay=0.0, ema=0.995, clip=1.0)
SILU = torch.nn.functional.silu


def lr_at(s, step, total):
    """core/src/session/training.cpp lr_at: linear warm-up, then cosine to 0 (min_lr_ratio 0)."""
    if step < s["warmup"]:
        return s["lr"] * (step + 1) / s["warmup"]
    progress = (step - s["warmup"]) / max(1, total - s["warmup"])
    return s["lr"] * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ---- pfgmpp ---------------------------------------------------------------------------------

class ResMLP(torch.nn.Module):
    """pfgmpp.resmlp: h = W_in x; blocks h += W2 silu(W1 LN(h) + A(e)); out = W_out silu(LN(h))."""

    def __init__(self, s):
        super().__init__()
        half = s["embedding_dim"] // 2
        H = s["hidden"]
        self.register_buffer("freqs", torch.exp(torch.linspace(math.log(0.5), math.log(64.0), half)))
        self.embed1 = torch.nn.Linear(2 * half, H)
        self.embed2 = torch.nn.Linear(H, H)
        self.input = torch.nn.Linear(s["N"], H)
        self.norms = torch.nn.ModuleList([torch.nn.LayerNorm(H) for _ in range(s["blocks"])])
        self.fc1 = torch.nn.ModuleList([torch.nn.Linear(H, 2 * H) for _ in range(s["blocks"])])
        self.affine = torch.nn.ModuleList([torch.nn.Linear(H, 2 * H) for _ in range(s["blocks"])])
        self.fc2 = torch.nn.ModuleList([torch.nn.Linear(2 * H, H) for _ in range(s["blocks"])])
        self.out_norm = torch.nn.LayerNorm(H)
        self.output = torch.nn.Linear(H, s["N"])

    def forward(self, x, t):
        tt = t.to(x.dtype)
        arg = tt.unsqueeze(1) * self.freqs.to(x.dtype).unsqueeze(0)
        e = torch.cat([torch.sin(arg), torch.cos(arg)], 1)
        e = SILU(self.embed2(SILU(self.embed1(e))))
        h = self.input(x)
        for norm, fc1, aff, fc2 in zip(self.norms, self.fc1, self.affine, self.fc2):
            z = fc1(norm(h)) + aff(e)
            h = h + fc2(SILU(z))
        return self.output(SILU(self.out_norm(h)))


class EdmModel(torch.nn.Module):
    """pfgmpp.edm: D(x, sigma) = c_skip x + c_out F(c_in x, ln(sigma)/4)."""

    def __init__(self, s):
        super().__init__()
        self.net = ResMLP(s)
        self.sd = s["sigma_data"]

    def forward(self, x, t):
        sigma = t.to(x.dtype).clamp_min(1e-20)
        sd = self.sd
        s2 = sigma * sigma + sd * sd
        c_skip, c_out, c_in, c_noise = sd * sd / s2, sigma * sd / torch.sqrt(s2), 1 / torch.sqrt(s2), torch.log(sigma) / 4
        B = x.shape[0]
        F = self.net(c_in.reshape(B, 1) * x.reshape(B, -1), c_noise).reshape(x.shape)  # ResMLPModel reshapes
        return c_skip.reshape(B, 1) * x + c_out.reshape(B, 1) * F


def kernel_noise(s, sigma, n):
    """pfgmpp.kernel training_noise -> perturb(D, sigma, clip = beta_clip, clip_lower), float64 inside."""
    N, D, clip = s["N"], s["D"], s["beta_clip"]
    g = torch.randn(n, N, dtype=torch.float64)
    g1 = torch._standard_gamma(torch.full((n,), N / 2.0, dtype=torch.float64))
    g2 = torch._standard_gamma(torch.full((n,), D / 2.0, dtype=torch.float64))
    b = g1 / (g1 + g2)
    lo = torch.full_like(b, clip) if s["clip_lower"] else torch.zeros_like(b)
    bc = torch.minimum(torch.maximum(b, lo), torch.full_like(b, 1 - clip))
    clipped = (bc != b).to(torch.float64).mean().item()
    ratio = bc / (1 - bc)
    radius = sigma * torch.sqrt(D * ratio)
    u = g / g.norm(2, 1, True).clamp_min(1e-300)
    return (u * radius.unsqueeze(1)).reshape(n, N).to(torch.float32), clipped


def edm_loss(s, model, y):
    """pfgmpp.edm_loss: sigma ~ logN(P_mean, P_std), x = y + kernel noise, lambda-weighted sum, mean."""
    n = y.shape[0]
    sigma = torch.exp(s["P_mean"] + s["P_std"] * torch.randn(n, dtype=torch.float64))
    noise, clipped = kernel_noise(s, sigma, n)
    sf = sigma.to(y.dtype)
    denoised = model(y + noise, sf)
    sd = s["sigma_data"]
    weight = (sf * sf + sd * sd) / (sf * sd).pow(2)
    per_item = (denoised - y).pow(2).reshape(n, -1).sum(1)
    loss = (weight * per_item).mean()
    sigma.mean().item()  # the loss's log "sigma_mean"
    return loss


class DigitsData:
    """standard.digits: the shipped 8x8 digits (pixels / 8 - 1), the last 297 rows held out."""

    def __init__(self):
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
        f = os.path.join(root, "plugins", "standard", "data", "digits.csv.gz")
        try:
            with gzip.open(f, "rt") as fh:
                a = np.loadtxt(fh, delimiter=",", dtype=np.int64)
            x = torch.from_numpy(a[:, :64]).float() / 8 - 1
            y = torch.from_numpy(a[:, 64])
        except OSError:  # same shape and range, if the file is not there
            x = torch.randint(0, 17, (1797, 64)).float() / 8 - 1
            y = torch.randint(0, 10, (1797,))
        self.x, self.y = x[:-297].contiguous(), y[:-297].contiguous()

    def batch(self, n):
        idx = torch.randint(0, self.x.shape[0], (n,))
        return self.x.index_select(0, idx), self.y.index_select(0, idx)  # the label is drawn, not used


# ---- dm1 ------------------------------------------------------------------------------------

def sinusoidal(t, dim, scale):
    half = dim // 2
    k = torch.arange(half, dtype=t.dtype)
    freqs = torch.exp(-math.log(10000.0) * k / max(half, 1))
    args = scale * t.reshape(-1, 1) * freqs.reshape(1, -1)
    emb = torch.cat([torch.sin(args), torch.cos(args)], 1)
    if dim % 2 == 1:
        emb = torch.cat([emb, torch.zeros(emb.shape[0], 1, dtype=emb.dtype)], 1)
    return emb


class PolicyNet(torch.nn.Module):
    """dm1.policy (state observation): u(z, r, t | obs)."""

    def __init__(self, s):
        super().__init__()
        E, H = s["time_embed"], s["hidden"]
        self.s = s
        self.action_dim = 2 * s["chunk"]
        obs_dim = 4 + s["goals"]
        self.state_enc = torch.nn.Sequential(torch.nn.Linear(obs_dim, s["obs_hidden"]), torch.nn.SiLU(),
                                             torch.nn.Linear(s["obs_hidden"], s["obs_hidden"]), torch.nn.SiLU(),
                                             torch.nn.Linear(s["obs_hidden"], s["obs_embed"]))
        self.t1, self.t2 = torch.nn.Linear(E, 2 * E), torch.nn.Linear(2 * E, E)
        self.r1, self.r2 = torch.nn.Linear(E, 2 * E), torch.nn.Linear(2 * E, E)
        self.inp = torch.nn.Linear(self.action_dim + 2 * E + s["obs_embed"], H)
        self.blocks = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(H, H), torch.nn.SiLU(), torch.nn.Linear(H, H))
                                           for _ in range(s["layers"])])
        self.out = torch.nn.Linear(H, self.action_dim)

    def net(self, z, t, r, obs):
        s = self.s
        e_obs = self.state_enc(obs.flatten(1))
        second = t - r if s["time_inputs"] == "t_h" else r
        e_t = self.t2(SILU(self.t1(sinusoidal(t, s["time_embed"], s["time_scale"]))))
        e_r = self.r2(SILU(self.r1(sinusoidal(second, s["time_embed"], s["time_scale"]))))
        h = SILU(self.inp(torch.cat([z, e_t, e_r, e_obs], 1)))
        for block in self.blocks:
            h = h + block(SILU(h))
        return self.out(SILU(h))

    def forward(self, x, t, r, obs):
        """PolicyModel::run: [B] times, x [B, chunk, 2] flattened in and reshaped out."""
        B = x.shape[0]
        return self.net(x.reshape(B, -1), t.to(x.dtype).reshape(B), r.to(x.dtype).reshape(B), obs.to(x.dtype)).reshape(x.shape)


class BiReachData:
    """BiReach-shaped demonstrations in memory: obs = [p, previous action, goal one-hot] ([B, 4 + goals]),
    x = an 8-step chunk of a proportional controller towards the goal (+ noise), clamped to [-1, 1].
    Not the scripted expert's demos (no obstacle, no bimodality): same shapes and range, learnable."""

    def __init__(self, s, rows=8000):
        G, C = s["goals"], s["chunk"]
        p = torch.rand(rows, 2, dtype=torch.float64) * 1.6 - 0.8
        prev = torch.rand(rows, 2, dtype=torch.float64) * 2 - 1
        goal = torch.randint(0, G, (rows,))
        ang = 2 * math.pi / 3 - (math.pi / 3) * goal.double() / max(G - 1, 1)
        gpos = 0.75 * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
        acts, q = [], p.clone()
        for _ in range(C):
            a = 8.0 * (gpos - q)
            m = a.norm(dim=1, keepdim=True).clamp_min(1.0)
            a = (a / m + 0.05 * torch.randn(rows, 2, dtype=torch.float64)).clamp(-1, 1)
            q = (q + 0.05 * a).clamp(-1, 1)
            acts.append(a)
        self.x = torch.stack(acts, 1).float().contiguous()  # [rows, chunk, 2]
        self.obs = torch.cat([p, prev, torch.nn.functional.one_hot(goal, G).double()], 1).float().contiguous()
        self.goal = goal

    def batch(self, n):
        idx = torch.randint(0, self.x.shape[0], (n,))
        return self.x.index_select(0, idx), self.obs.index_select(0, idx), self.goal.index_select(0, idx)


def sample_tr(s, n):
    """MeanFlowLoss::sample_tr: t >= r logit-normal, floor((1 - ratio) n) random rows with r = t."""
    a = torch.sigmoid(s["p_mean"] + s["p_std"] * torch.randn(n))
    b = torch.sigmoid(s["p_mean"] + s["p_std"] * torch.randn(n))
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    equal = int(math.floor((1.0 - s["ratio_r_neq_t"]) * n + 1e-9))
    perm = torch.randperm(n)
    mask = torch.zeros(n, dtype=torch.bool)
    if equal > 0:
        mask.index_fill_(0, perm[:equal], True)
    return t, torch.where(mask, t, r)


def meanflow_loss(s, model, x, obs):
    """dm1.meanflow (weighting mse, dispersive off): z = (1-t) x + t eps, v = eps - x,
    u_tgt = sg(v - clamp(t - r, 0, 1) du/dt) with du/dt = JVP along (v, 1, 0) by forward-mode AD."""
    B = x.shape[0]
    eps = torch.randn_like(x)
    t, r = sample_tr(s, B)
    tb, rb = t.reshape(B, 1, 1), r.reshape(B, 1, 1)
    z = (1 - tb) * x + tb * eps
    v = eps - x
    # meanflow_jvp(method = forward_ad): one dual forward pass under no-grad; r carries a zero tangent.
    with torch.no_grad(), fwAD.dual_level():
        rd = fwAD.make_dual(r.detach(), torch.zeros_like(r))
        zd = fwAD.make_dual(z.detach(), v.detach())
        td = fwAD.make_dual(t.detach(), torch.ones_like(t))
        y = model(zd, td, rd, obs)
        primal, tangent = fwAD.unpack_dual(y)
        _u = primal.clone()
        dudt = tangent.clone() if tangent is not None else torch.zeros_like(primal)
    u_tgt = (v - (tb - rb).clamp(0.0, 1.0) * dudt).detach()
    u = model(z, t, r, obs)
    sq = (u - u_tgt).pow(2)
    per = sq.flatten(1).sum(1)
    loss = sq.mean()
    per.mean().item()  # log "u_loss"
    eq = t == r
    if eq.any().item():
        per.masked_select(eq).mean().item()  # log "v_loss"
    return loss


# ---- the training loop ----------------------------------------------------------------------

def make(name):
    if name == "pfgmpp_digits":
        s = PFGMPP
        model, data = EdmModel(s), DigitsData()
        return s, model, lambda: edm_loss(s, model, data.batch(s["batch"])[0])
    s = DM1
    model, data = PolicyNet(s), BiReachData(s)

    def step_loss():
        x, obs, _goal = data.batch(s["batch"])
        return meanflow_loss(s, model, x, obs)
    return s, model, step_loss


def train(name, steps, warmup, log_every=0):
    """core/src/session/training.cpp: lr, batch, loss, loss.item(), zero_grad, backward, clip, step, EMA."""
    torch.manual_seed(0)
    s, model, step_loss = make(name)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=s["lr"], betas=s["betas"], eps=1e-8, weight_decay=s["weight_decay"])
    ema = [p.detach().clone() for p in params] if s["ema"] > 0 else None
    total = warmup + steps
    losses, window = [], []
    start = time.perf_counter()
    for step in range(total):
        if step == warmup:
            start = time.perf_counter()
        lr = lr_at(s, step, total)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = step_loss()
        value = loss.item()
        if not math.isfinite(value):
            raise SystemExit(f"non-finite loss {value} at step {step + 1}")
        opt.zero_grad()
        loss.backward()
        if s["clip"] > 0:
            float(torch.nn.utils.clip_grad_norm_(params, s["clip"]))  # flowkit reads the norm (a double)
        opt.step()
        if ema is not None:
            d = min(s["ema"], (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for e, p in zip(ema, params):
                    e.mul_(d).add_(p.detach(), alpha=1 - d)
        if step >= warmup:
            losses.append(value)
        if log_every:  # like flowkit's metrics.jsonl: the mean loss of each log_every window
            window.append(value)
            if (step + 1) % log_every == 0 or step + 1 == total:
                print(json.dumps({"step": step + 1, "loss": sum(window) / len(window), "lr": lr}), file=sys.stderr)
                window = []
    seconds = time.perf_counter() - start
    return {"steps_per_sec": steps / seconds, "loss_first": sum(losses[:10]) / max(1, len(losses[:10])),
            "loss_last": sum(losses[-10:]) / max(1, len(losses[-10:]))}


def use_row_gemv():
    """The Python side of flowkit's batch-1 fix (sdk flowkit/linear.h): a single-row Linear as a
    matrix-vector product (sgemv) instead of sgemm, which packs the whole weight every call."""
    plain = torch.nn.Linear.forward

    def forward(self, x):
        if x.dim() == 2 and x.shape[0] == 1:
            row = x[0]
            return (torch.addmv(self.bias, self.weight, row) if self.bias is not None else torch.mv(self.weight, row)).unsqueeze(0)
        return plain(self, x)
    torch.nn.Linear.forward = forward


def policy_latency(calls, warmup):
    """flowkit-policy (open-loop): per call, act(one observation row) = MeanFlowSampler::sample with
    steps 1: z ~ N(0, I) [1, chunk, 2], u = model(z, t = 1, r = 0 | obs), z - (t - r) u, clamp [-1, 1].
    No normalisation anywhere. Observation rows: starts of fresh episodes (the domain's
    sample_conditions, flowkit-policy's default source), picked outside the timed region."""
    s = DM1
    torch.manual_seed(0)
    model = PolicyNet(s).eval()
    G, C = s["goals"], s["chunk"]
    R = max(calls, 1)
    rows = torch.zeros(R, 4 + G)
    rows[:, 0] = (2 * torch.rand(R) - 1) * 0.05
    rows[:, 1] = -0.8 + (2 * torch.rand(R) - 1) * 0.05
    rows[torch.arange(R), 4 + torch.randint(0, G, (R,))] = 1.0

    def act(obs):
        with torch.inference_mode():
            n = obs.shape[0]
            z = torch.randn(n, C, 2)
            t, r = 1.0, 0.0
            rr = torch.full((n,), r)
            u = model(z, torch.full((n,), t), rr, obs)
            z = z - (t - r) * u
            return z.clamp(-1.0, 1.0)

    for i in range(warmup):
        act(rows[i % R:i % R + 1])
    ms = []
    for i in range(calls):
        obs = rows[i % R:i % R + 1]
        t0 = time.perf_counter()
        act(obs)
        ms.append(1000.0 * (time.perf_counter() - t0))
    srt = sorted(ms)
    q = lambda p: srt[min(len(srt) - 1, int(p * len(srt)))]  # flowkit-policy's quantile
    return {"p50_ms": q(0.5), "p99_ms": q(0.99), "calls": calls}


def flowkit_command(name, steps, warmup, calls):
    f = FLOWKIT[name]
    if f.get("policy"):
        run = "/tmp/flowkit-twins/runs"
        return (f"build/bin/flowkit train {f['pipeline']} {' '.join(f['overrides'])} --runs-dir {run} --name {f['run_name']}"
                f" && build/bin/flowkit-policy {run}/{f['run_name']} --calls {calls} --warmup {warmup} "
                + " ".join(f["policy_args"]))
    return "build/bin/flowkit train " + " ".join([f["pipeline"], f"train.steps={warmup + steps}"] + f["overrides"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True, choices=sorted(FLOWKIT))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--calls", type=int, default=300, help="dm1_policy_latency: timed policy calls")
    ap.add_argument("--row-gemv", action="store_true", help="dm1_policy_latency: single-row Linear as addmv (flowkit's fix)")
    ap.add_argument("--threads-intra", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=0, help="also print windowed mean losses on stderr (loss check)")
    args = ap.parse_args()
    if args.threads_intra:
        torch.set_num_threads(args.threads_intra)
    if args.row_gemv:
        use_row_gemv()
    if FLOWKIT[args.workload].get("policy"):
        out = policy_latency(args.calls, args.warmup)
    else:
        out = train(args.workload, args.steps, args.warmup, args.log_every)
    out = {"workload": args.workload, **out, "intra_threads": torch.get_num_threads()}
    print(json.dumps(out))
    print("flowkit side: " + flowkit_command(args.workload, args.steps, args.warmup, args.calls), file=sys.stderr)


if __name__ == "__main__":
    main()
