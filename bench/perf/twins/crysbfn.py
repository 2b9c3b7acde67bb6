#!/usr/bin/python3
"""Python twin of flowkit's CrysBFN CSPNet training (plugins/crysbfn/examples/csp_bfn.json).

Plain PyTorch, run with Debian's /usr/bin/python3 (python3-torch 1.13):

    /usr/bin/python3 bench/perf/twins/crysbfn.py --workload crysbfn_cspnet --steps 50 --warmup 5

One training step does what flowkit's `train_loop` (core/src/session/training.cpp) does with
`crysbfn.crystal` + `crysbfn.bfn` + `crysbfn.cspnet` + `crysbfn.bfn_loss`:

* data: 128 crystals drawn uniformly with replacement from the shipped perov-5 `val.csv.gz`
  (5 atoms each: lattice [B,3,3] rows = vectors in Å, frac [A,3] in [0,1), types [A] atomic
  numbers, num_atoms [B], batch [A]); read once into memory, indexed each step;
* loss (losses_samplers.cpp BfnLoss::compute): i ~ U{1..N} per crystal, t = (i-1)/N; coordinates
  as angles, belief simulated at i-1 by the periodic von Mises Bayesian flow (bfn_math.cpp
  circular_flow_sample: i-1 sender draws y_j ~ VM(x, alpha_j) with the Best-Fisher rejection
  sampler, float64, m = atan2(sum a sin y, sum a cos y), c = |sum a e^{iy}|); accuracy input
  = normalised log concentration; lattice / lattice_std through the Gaussian BFN flow at t;
  coord loss = mean(N alpha_i A(alpha_i) * wrap(x - (m + net))^2); lattice loss =
  mean(N (1 - s^(2/N)) / (2 s^(2i/N)) |L_hat - L|^2); loss = coord + lattice;
  the two parts are also read with .item() (flowkit logs them every step);
* network (cspnet.cpp): type embedding(128, H) + sinusoidal time (64) + 3 accuracy inputs ->
  Linear -> H; 4 pre-LayerNorm residual layers of message passing over all atom pairs of each
  crystal (self-loops included, edges rebuilt each forward): edge MLP on [h_i, h_j, L L^T (9),
  Fourier features sin/cos(2 pi k dfrac), k = 0..31 (192)], mean aggregation by index_add,
  node MLP on [h, agg]; final LayerNorm; coord head Linear(H,3, no bias); lattice head
  M = Linear(H,9, no bias)(mean h), L_hat = M L_in;
* the accuracy schedule: CrysBFN's linear-entropy schedule for N = 10, beta1 = 1000, computed as
  bfn_math.cpp does (bisection for beta_i, Illinois false position on the trapezoidal
  E|beta_{i-1} + alpha e^{iy}| for alpha_i);
* optimizer: AdamW(lr 3e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0), warm-up 200 steps then
  cosine to 0 at the last step; EMA 0.995 with flowkit's warm-up; no clipping (grad_clip 0);
  loss.item() each step.
"""
import argparse
import csv
import gzip
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
PIPELINE = "plugins/crysbfn/examples/csp_bfn.json"

# What flowkit runs for the same work (the driver adds train.steps = warmup + steps).
FLOWKIT = {
    "crysbfn_cspnet": {
        "pipeline": PIPELINE,
        "overrides": [
            "train.batch_size=128",
            "train.lr=0.003",
            "train.warmup_steps=200",
            "train.ema_decay=0.995",
            "train.grad_clip=0",
            "train.checkpoint_every=0",
        ],
    }
}

# The pipeline's settings (csp_bfn.json, defaults of plugin.json and core/src/pipeline.cpp).
CFG = dict(
    batch_size=128, lr=3e-3, warmup_steps=200, ema_decay=0.995, grad_clip=0.0,
    beta1_adam=0.9, beta2_adam=0.999, weight_decay=0.0, min_lr_ratio=0.0,
    N=10, beta1=1000.0, sigma1=0.0316228, lattice_std=1.9612,
    hidden=96, layers=4, num_freqs=32, time_dim=64, accuracy_input=True,
    cost_coord=1.0, cost_lattice=1.0,
)

SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
    "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr"
).split()
Z_OF = {s.lower(): i + 1 for i, s in enumerate(SYMBOLS)}


# ---- data: the shipped perov-5 val split ---------------------------------------------------

def lattice_from_parameters(a, b, c, al, be, ga):
    r = math.pi / 180
    al, be, ga = al * r, be * r, ga * r
    val = (math.cos(al) * math.cos(be) - math.cos(ga)) / (math.sin(al) * math.sin(be))
    gs = math.acos(max(-1.0, min(1.0, val)))
    return [[a * math.sin(be), 0.0, a * math.cos(be)],
            [-b * math.sin(al) * math.cos(gs), b * math.sin(al) * math.sin(gs), b * math.cos(al)],
            [0.0, 0.0, c]]


def parse_p1_cif(text):
    """The pymatgen-written P1 CIFs of the CDVAE csv (identity symmetry only)."""
    cell = {}
    lines = text.splitlines()
    frac, zs = [], []
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith("_cell_length_") or s.startswith("_cell_angle_"):
            k, v = s.split()[:2]
            cell[k] = float(v.split("(")[0])
        if s == "loop_":
            cols = []
            i += 1
            while i < len(lines) and lines[i].strip().startswith("_"):
                cols.append(lines[i].strip())
                i += 1
            if "_atom_site_fract_x" in cols:
                ix, iy, iz = (cols.index("_atom_site_fract_" + c) for c in "xyz")
                it = cols.index("_atom_site_type_symbol")
                while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(("_", "loop_")):
                    f = lines[i].split()
                    xyz = [float(f[ix]), float(f[iy]), float(f[iz])]
                    frac.append([w if w < 1.0 else 0.0 for w in (v - math.floor(v) for v in xyz)])  # wrap01
                    zs.append(Z_OF[f[it].lower()])
                    i += 1
            continue
        i += 1
    lat = lattice_from_parameters(*(cell["_cell_length_" + c] for c in "abc"),
                                  *(cell["_cell_angle_" + c] for c in ("alpha", "beta", "gamma")))
    return lat, frac, zs


def load_perov5(path):
    csv.field_size_limit(1 << 24)
    lats, fracs, types = [], [], []
    with gzip.open(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            lat, frac, zs = parse_p1_cif(row["cif"])
            if len(zs) != 5:
                raise SystemExit(f"{path}: expected 5 atoms per crystal, found {len(zs)}")
            lats.append(lat), fracs.append(frac), types.append(zs)
    return (torch.tensor(lats, dtype=torch.float32), torch.tensor(fracs, dtype=torch.float32),
            torch.tensor(types, dtype=torch.long))


class Perov5:
    """crysbfn.crystal's train_batch: n crystals uniformly with replacement, flattened."""

    def __init__(self, path):
        self.lattice, self.frac, self.types = load_perov5(path)
        self.n = self.lattice.shape[0]

    def batch(self, B):
        idx = torch.randint(0, self.n, (B,))
        lattice = self.lattice.index_select(0, idx)
        frac = self.frac.index_select(0, idx).reshape(-1, 3)
        types = self.types.index_select(0, idx).reshape(-1)
        num_atoms = torch.full((B,), 5, dtype=torch.long)
        return dict(lattice=lattice, frac=frac, types=types, num_atoms=num_atoms)


# ---- the von Mises Bayesian flow (bfn_math.cpp) --------------------------------------------

def bessel_ie(nu, x):
    t = torch.tensor(float(x), dtype=torch.float64)
    return float(torch.special.i0e(t) if nu == 0 else torch.special.i1e(t))


def mean_resultant_length(k):
    return 0.0 if k <= 0 else bessel_ie(1, k) / bessel_ie(0, k)


def von_mises_entropy(k):
    if k <= 0:
        return math.log(2 * math.pi)
    return math.log(2 * math.pi) + math.log(bessel_ie(0, k)) + k - k * mean_resultant_length(k)


def kappa_for_entropy(h):
    if h >= math.log(2 * math.pi):
        return 0.0
    lo, hi = -25.0, 35.0
    for _ in range(200):
        if hi - lo <= 1e-15:
            break
        mid = 0.5 * (lo + hi)
        if von_mises_entropy(math.exp(mid)) > h:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def expected_concentration(beta_prev, alpha):
    if alpha <= 0:
        return beta_prev
    need = 16 * math.pi * math.sqrt(alpha)
    if alpha <= 20:
        w = abs(alpha - beta_prev) / math.sqrt(alpha * beta_prev + 1e-300)
        need = max(need, 64 * math.pi / max(w, 1e-3))
    level = 10
    while level < 16 and float(1 << level) < need:
        level += 1
    M = 1 << level
    c = torch.cos(-math.pi + 2 * math.pi * torch.arange(M, dtype=torch.float64) / M)
    e = alpha * (c - 1)
    val = torch.exp(e) * torch.sqrt((beta_prev ** 2 + alpha ** 2 + 2 * alpha * beta_prev * c).clamp_min(0))
    val = torch.where(e < -60, torch.zeros_like(val), val)
    return float(val.sum()) / (M * bessel_ie(0, alpha))


def linear_entropy_schedule(steps, beta1):
    h0, h1 = math.log(2 * math.pi), von_mises_entropy(beta1)
    beta = [beta1 if i == steps else kappa_for_entropy(h0 + (h1 - h0) * i / steps) for i in range(1, steps + 1)]
    alpha = [beta[0]]
    for i in range(1, steps):
        prev, target = beta[i - 1], beta[i]
        f = lambda a: expected_concentration(prev, a) - target
        lo, hi = max(0.0, target - prev), target + prev
        flo, fhi = f(lo), f(hi)
        side = 0
        for it in range(300):
            if not hi - lo > 1e-13 * hi:
                break
            mid = (lo * fhi - hi * flo) / (fhi - flo) if flo != fhi else 0.5 * (lo + hi)
            if not (lo < mid < hi) or it % 8 == 7:
                mid = 0.5 * (lo + hi)
            fm = f(mid)
            if fm == 0:
                lo = hi = mid
                break
            if (fm < 0) == (flo < 0):
                lo, flo = mid, fm
                if side == -1:
                    fhi /= 2
                side = -1
            else:
                hi, fhi = mid, fm
                if side == 1:
                    flo /= 2
                side = 1
        alpha.append(0.5 * (lo + hi))
    return alpha, beta


def sample_von_mises(loc, kappa):
    shape = torch.broadcast_shapes(loc.shape, kappa.shape)
    loc = loc.to(torch.float64).expand(shape)
    k = kappa.to(torch.float64).expand(shape).clamp_min(1e-6).contiguous()
    tau = 1 + torch.sqrt(1 + 4 * k * k)
    rho = (tau - torch.sqrt(2 * tau)) / (2 * k)
    r = torch.where(k < 1e-5, 1 / k + k, (1 + rho * rho) / (2 * rho))
    x = torch.zeros(shape, dtype=torch.float64)
    done = torch.zeros(shape, dtype=torch.bool)
    while not bool(done.all()):
        u = torch.rand((3,) + tuple(shape), dtype=torch.float64)
        u1, u2, u3 = u[0], u[1], u[2]
        z = torch.cos(math.pi * u1)
        f = (1 + r * z) / (r + z)
        c = k * (r - f)
        accept = ((c * (2 - c) - u2) > 0) | ((c / u2).log() + 1 - c >= 0)
        accept = accept & ~done
        x = torch.where(accept, torch.sign(u3 - 0.5) * torch.acos(f.clamp(-1, 1)), x)
        done = done | accept
    return torch.remainder(x + math.pi + loc, 2 * math.pi) - math.pi


def circular_flow_sample(x, k, alphas):
    x = x.to(torch.float64)
    k = k.expand(x.shape)
    K = int(k.max())
    if int(k.min()) < 0:
        raise ValueError("negative step index")
    m0 = torch.rand(x.shape, dtype=torch.float64) * (2 * math.pi) - math.pi
    s_cos, s_sin = torch.zeros_like(x), torch.zeros_like(x)
    if K > 0:
        view = (K,) + (1,) * x.dim()
        a = torch.tensor(alphas[:K], dtype=torch.float64).view(view)
        y = sample_von_mises(x.unsqueeze(0), a)
        j = torch.arange(1, K + 1, dtype=torch.long).view(view)
        used = (j <= k.unsqueeze(0)).to(torch.float64)
        s_cos = (used * a * torch.cos(y)).sum(0)
        s_sin = (used * a * torch.sin(y)).sum(0)
    c = torch.sqrt(s_cos * s_cos + s_sin * s_sin)
    m = torch.where(k == 0, m0, torch.atan2(s_sin, s_cos))
    return m, c


class BayesianFlow:
    def __init__(self, N, beta1, sigma1, lattice_std):
        self.N, self.beta1, self.sigma1, self.lattice_std = N, beta1, sigma1, lattice_std
        self.alpha, self.beta = linear_entropy_schedule(N, beta1)
        w = [0.0] + [N * a * mean_resultant_length(a) for a in self.alpha]
        self.circular_weight_table = torch.tensor(w, dtype=torch.float64)

    def gamma(self, t):
        return 1 - torch.pow(self.sigma1, 2 * t)

    def gaussian_flow(self, x, t):
        g = self.gamma(t).reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        eps = torch.randn(x.shape, dtype=x.dtype)
        return g * x + torch.sqrt((g * (1 - g)).clamp_min(0)) * eps

    def gaussian_weight(self, i):
        n, s = float(self.N), self.sigma1
        return n * (1 - s ** (2.0 / n)) / (2 * torch.pow(s, 2.0 * i.to(torch.float64) / n))

    def circular_weight(self, i):
        return self.circular_weight_table.index_select(0, i.to(torch.long).reshape(-1))

    def accuracy_input(self, c):
        lo = math.log(1e-7)
        return (torch.log(c + 1e-7) - lo) / (math.log(self.beta1) - lo)


# ---- CSPNet (cspnet.cpp) --------------------------------------------------------------------

def mlp2(i, h):
    return nn.Sequential(nn.Linear(i, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU())


def crystal_edges(num_atoms):
    """All ordered atom pairs (self-loops included) of each crystal: (source, target)."""
    n = num_atoms.to(torch.long)
    offsets = torch.cumsum(n, 0) - n
    per_edge_crystal = torch.repeat_interleave(torch.arange(n.numel()), n * n)
    edge_start = torch.cumsum(n * n, 0) - n * n
    local = torch.arange(per_edge_crystal.numel()) - edge_start.index_select(0, per_edge_crystal)
    nn_e = n.index_select(0, per_edge_crystal)
    base = offsets.index_select(0, per_edge_crystal)
    return base + torch.div(local, nn_e, rounding_mode="floor"), base + torch.remainder(local, nn_e)


def time_embedding(t, dim):
    half = dim // 2
    k = torch.arange(half, dtype=t.dtype)
    freqs = torch.exp(-math.log(10000.0) * k / max(half - 1, 1))
    arg = (t.reshape(-1, 1) * 1000.0) * freqs.reshape(1, -1)
    return torch.cat([torch.sin(arg), torch.cos(arg)], 1)


class CspNet(nn.Module):
    def __init__(self, hidden, layers, num_freqs, time_dim, accuracy_input):
        super().__init__()
        H = hidden
        self.H, self.F, self.time_dim, self.accuracy_input = H, num_freqs, time_dim, accuracy_input
        self.type_embedding = nn.Embedding(128, H)
        self.node_in = nn.Linear(H + time_dim + (3 if accuracy_input else 0), H)
        edge_in = 2 * H + 9 + 6 * num_freqs
        self.norms = nn.ModuleList([nn.LayerNorm(H) for _ in range(layers)])
        self.edge_mlps = nn.ModuleList([mlp2(edge_in, H) for _ in range(layers)])
        self.node_mlps = nn.ModuleList([mlp2(2 * H, H) for _ in range(layers)])
        self.final_norm = nn.LayerNorm(H)
        self.coord_head = nn.Linear(H, 3, bias=False)
        self.lattice_head = nn.Linear(H, 9, bias=False)

    def forward(self, frac, accuracy, types, lattice, t, num_atoms, batch):
        A, B = frac.shape[0], num_atoms.shape[0]
        parts = [self.type_embedding(types.clamp(0, 127)),
                 time_embedding(t, self.time_dim).index_select(0, batch)]
        if self.accuracy_input:
            parts.append(accuracy)
        h = self.node_in(torch.cat(parts, 1))

        counts = torch.bincount(batch, minlength=B)
        src, dst = crystal_edges(counts)
        ips = torch.matmul(lattice, lattice.transpose(1, 2)).reshape(B, 9)
        edge_ips = ips.index_select(0, batch.index_select(0, src))
        diff = frac.index_select(0, dst) - frac.index_select(0, src)
        k = torch.arange(self.F, dtype=diff.dtype) * (2 * math.pi)
        arg = diff.unsqueeze(-1) * k
        fourier = torch.cat([torch.sin(arg), torch.cos(arg)], -1).reshape(diff.shape[0], -1)
        degree = counts.index_select(0, batch).to(h.dtype).unsqueeze(1)

        for norm, edge_mlp, node_mlp in zip(self.norms, self.edge_mlps, self.node_mlps):
            hn = norm(h)
            e = edge_mlp(torch.cat([hn.index_select(0, src), hn.index_select(0, dst), edge_ips, fourier], 1))
            agg = torch.zeros(A, self.H, dtype=h.dtype).index_add(0, src, e) / degree
            h = h + node_mlp(torch.cat([hn, agg], 1))
        h = self.final_norm(h)

        coord = self.coord_head(h)
        pooled = torch.zeros(B, self.H, dtype=h.dtype).index_add(0, batch, h) / \
            counts.to(h.dtype).clamp_min(1).unsqueeze(1)
        m = self.lattice_head(pooled).reshape(B, 3, 3)
        return coord, torch.matmul(m, lattice)


# ---- the BFN loss (losses_samplers.cpp BfnLoss::compute, periodic, CSP) ---------------------

def wrap_angle(a):
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def bfn_loss(net, flow, batch, cfg):
    N = flow.N
    frac, lattice, types, num = batch["frac"], batch["lattice"], batch["types"], batch["num_atoms"]
    B, A = num.shape[0], frac.shape[0]
    bidx = torch.repeat_interleave(torch.arange(B), num)
    i = torch.randint(1, N + 1, (B,), dtype=torch.long)
    t = (i - 1).to(torch.float32) / float(N)
    i_atoms, t_atoms = i.index_select(0, bidx), t.index_select(0, bidx)  # t_atoms: computed as flowkit does

    x_angle = frac.to(torch.float64) * (2 * math.pi) - math.pi
    m, conc = circular_flow_sample(x_angle, (i_atoms - 1).unsqueeze(1).expand(A, 3), flow.alpha)
    in_frac = ((m + math.pi) / (2 * math.pi)).to(torch.float32)
    in_acc = flow.accuracy_input(conc).to(torch.float32)
    lat_norm = lattice.reshape(B, 9) / flow.lattice_std
    in_lat = flow.gaussian_flow(lat_norm, t).reshape(B, 3, 3)

    coord, lat_hat = net(in_frac, in_acc, types, in_lat, t, num, bidx)

    xhat = m.to(torch.float32) + coord
    d = wrap_angle(x_angle.to(torch.float32) - xhat)
    coord_loss = (flow.circular_weight(i_atoms).to(torch.float32).unsqueeze(1) * d * d).mean()
    ld = lat_hat.reshape(B, 9) - lat_norm
    lattice_loss = (flow.gaussian_weight(i).to(torch.float32).unsqueeze(1) * ld * ld).mean()
    loss = cfg["cost_coord"] * coord_loss + cfg["cost_lattice"] * lattice_loss
    logs = {"loss_coord": coord_loss.item(), "loss_lattice": lattice_loss.item()}
    return loss, logs


# ---- the training loop (training.cpp, ema.cpp) ----------------------------------------------

def lr_at(cfg, s, total):
    lr, warmup = cfg["lr"], cfg["warmup_steps"]
    if s < warmup:
        return lr * (s + 1) / warmup
    progress = (s - warmup) / max(1, total - warmup)
    floor = cfg["min_lr_ratio"]
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="crysbfn_cspnet", choices=sorted(FLOWKIT))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads-intra", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=0,
                    help="print window means of loss / loss_coord / loss_lattice on stderr (as metrics.jsonl)")
    ap.add_argument("--data", default=os.path.join(REPO, "plugins/crysbfn/data/perov_5/val.csv.gz"))
    args = ap.parse_args()
    if args.threads_intra:
        torch.set_num_threads(args.threads_intra)
    torch.manual_seed(args.seed)
    cfg = CFG
    total = args.warmup + args.steps
    spec = FLOWKIT[args.workload]
    print("build/bin/flowkit train " + spec["pipeline"] + " " + " ".join(spec["overrides"]) +
          f" train.steps={total}", file=sys.stderr)

    data = Perov5(args.data)
    flow = BayesianFlow(cfg["N"], cfg["beta1"], cfg["sigma1"], cfg["lattice_std"])
    net = CspNet(cfg["hidden"], cfg["layers"], cfg["num_freqs"], cfg["time_dim"], cfg["accuracy_input"])
    net.train()
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["lr"], betas=(cfg["beta1_adam"], cfg["beta2_adam"]),
                            eps=1e-8, weight_decay=cfg["weight_decay"])
    ema = [p.detach().clone() for p in params] if cfg["ema_decay"] > 0 else None

    losses, window = [], []
    t0 = None
    for step in range(total):
        if step == args.warmup:
            t0 = time.perf_counter()
        lr = lr_at(cfg, step, total)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = data.batch(cfg["batch_size"])
        loss, logs = bfn_loss(net, flow, batch, cfg)
        value = loss.item()
        if not math.isfinite(value):
            raise SystemExit(f"non-finite loss {value} at step {step + 1}")
        opt.zero_grad()
        loss.backward()
        if cfg["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        opt.step()
        if ema is not None:
            d = min(cfg["ema_decay"], (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for e, p in zip(ema, params):
                    e.mul_(d).add_(p.detach(), alpha=1 - d)
        if step >= args.warmup:
            losses.append(value)
        if args.log_every:
            window.append(value)
            if (step + 1) % args.log_every == 0 or step + 1 == total:
                print(json.dumps({"step": step + 1, "loss": sum(window) / len(window), **logs, "lr": lr}), file=sys.stderr)
                window = []
    secs = time.perf_counter() - t0 if t0 is not None else float("nan")
    first, last = losses[:10], losses[-10:]
    print(json.dumps({
        "workload": args.workload,
        "steps_per_sec": args.steps / secs if args.steps else float("nan"),
        "loss_first": sum(first) / max(len(first), 1),
        "loss_last": sum(last) / max(len(last), 1),
        "intra_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
