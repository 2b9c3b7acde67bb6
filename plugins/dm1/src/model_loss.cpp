// The policy network, the MeanFlow loss (forward-mode JVP), the dispersive terms and the
// regression loss.
#include <torch/csrc/autograd/forward_grad.h>
#include <torch/torch.h>

#include <cmath>

#include "dm1/dm1.h"
#include "flowkit/error.h"
#include "flowkit/path.h"

namespace dm1 {

namespace {
torch::Tensor sinusoidal(const torch::Tensor& t, int64_t dim, double scale) {
  const int64_t half = dim / 2;
  torch::Tensor k = torch::arange(half, t.options().requires_grad(false));
  torch::Tensor freqs = torch::exp(-std::log(10000.0) * k / std::max<int64_t>(half, 1));
  torch::Tensor args = scale * t.reshape({-1, 1}) * freqs.reshape({1, -1});
  torch::Tensor emb = torch::cat({torch::sin(args), torch::cos(args)}, 1);
  if (dim % 2 == 1) emb = torch::cat({emb, torch::zeros({emb.size(0), 1}, emb.options())}, 1);
  return emb;
}

// RAII forward-AD dual level (the C++ counterpart of `with fwAD.dual_level():`).
struct DualLevel {
  uint64_t idx = torch::autograd::ForwardADLevel::get_next_idx();
  ~DualLevel() { torch::autograd::ForwardADLevel::release_idx(idx); }
};
}  // namespace

// ---- policy network -----------------------------------------------------------------------

PolicyNetImpl::PolicyNetImpl(const PolicyOptions& o) : o_(o) {
  const int64_t E = o.time_embed;
  if (o.obs_shape.size() == 1) {
    state_enc_ = register_module("state_enc", torch::nn::Sequential(torch::nn::Linear(o.obs_shape[0] + o.proprio_dim, o.obs_hidden),
                                                                    torch::nn::SiLU(), torch::nn::Linear(o.obs_hidden, o.obs_hidden),
                                                                    torch::nn::SiLU(), torch::nn::Linear(o.obs_hidden, o.obs_embed)));
  } else if (o.obs_shape.size() == 3) {
    conv_ = register_module(
        "conv", torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(o.obs_shape[0], 16, 3).stride(2).padding(1)),
                                      torch::nn::SiLU(),
                                      torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3).stride(2).padding(1)),
                                      torch::nn::SiLU(), torch::nn::Flatten()));
    int64_t flat;
    {
      torch::NoGradGuard ng;
      flat = conv_->forward(torch::zeros({1, o.obs_shape[0], o.obs_shape[1], o.obs_shape[2]})).size(1);
    }
    img_head_ = register_module("img_head", torch::nn::Linear(flat + o.proprio_dim, o.obs_embed));
  } else {
    throw flowkit::Error("dm1.policy: observation 'obs' must be [B, D] or [B, C, H, W]");
  }
  t1_ = register_module("t1", torch::nn::Linear(E, 2 * E));
  t2_ = register_module("t2", torch::nn::Linear(2 * E, E));
  r1_ = register_module("r1", torch::nn::Linear(E, 2 * E));
  r2_ = register_module("r2", torch::nn::Linear(2 * E, E));
  in_ = register_module("in", torch::nn::Linear(o.action_dim + 2 * E + o.obs_embed, o.hidden));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.layers; ++i)
    blocks_->push_back(torch::nn::Sequential(torch::nn::Linear(o.hidden, o.hidden), torch::nn::SiLU(),
                                             torch::nn::Linear(o.hidden, o.hidden)));
  out_ = register_module("out", torch::nn::Linear(o.hidden, o.action_dim));
}

torch::Tensor PolicyNetImpl::encode(const torch::Tensor& obs, const torch::Tensor& proprio) {
  if (state_enc_) {
    torch::Tensor in = proprio.defined() && o_.proprio_dim > 0 ? torch::cat({obs.flatten(1), proprio}, 1) : obs.flatten(1);
    return state_enc_->forward(in);
  }
  torch::Tensor f = conv_->forward(obs);
  if (o_.proprio_dim > 0) f = torch::cat({f, proprio}, 1);
  return img_head_->forward(f);
}

torch::Tensor PolicyNetImpl::forward(const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& r,
                                     const torch::Tensor& obs, const torch::Tensor& proprio) {
  torch::Tensor e_obs = encode(obs, proprio);
  torch::Tensor second = o_.time_inputs == "t_h" ? t - r : r;
  torch::Tensor e_t = t2_->forward(torch::silu(t1_->forward(sinusoidal(t, o_.time_embed, o_.time_scale))));
  torch::Tensor e_r = r2_->forward(torch::silu(r1_->forward(sinusoidal(second, o_.time_embed, o_.time_scale))));
  torch::Tensor h = torch::silu(in_->forward(torch::cat({z, e_t, e_r, e_obs}, 1)));
  if (record_taps) {
    taps.clear();
    taps["obs"] = e_obs;
    taps["t"] = e_t;
    taps["r"] = e_r;
  }
  int64_t i = 0;
  for (const auto& block : *blocks_) {
    h = h + block->as<torch::nn::Sequential>()->forward(torch::silu(h));
    if (record_taps) taps["trunk" + std::to_string(i++)] = h;
  }
  return out_->forward(torch::silu(h));
}

PolicyModel::PolicyModel(const PolicyOptions& o, std::vector<int64_t> item_shape, const std::string& device)
    : net_(o), item_shape_(std::move(item_shape)) {
  net_->to(torch::Device(device));
}

namespace {
torch::Tensor as_batch_time(const torch::Tensor& t, const torch::Tensor& like) {
  const int64_t B = like.size(0);
  torch::Tensor tt = t.to(like.device(), like.scalar_type());
  if (tt.dim() == 0 || tt.numel() == 1) tt = tt.reshape({1}).expand({B});
  return tt.reshape({B});
}
}  // namespace

torch::Tensor PolicyModel::forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) {
  const int64_t B = x.size(0);
  torch::Tensor tt = as_batch_time(t, x);
  torch::Tensor r = cond.has("r") ? as_batch_time(cond.at("r"), x) : tt;
  torch::Tensor obs = cond.at("obs").to(x.device(), x.scalar_type());
  torch::Tensor proprio;
  if (net_->options().proprio_dim > 0) proprio = cond.at("proprio").to(x.device(), x.scalar_type());
  return net_->forward(x.reshape({B, -1}), tt, r, obs, proprio).reshape(x.sizes());
}

flowkit::TensorMap PolicyModel::representations(const torch::Tensor& x, const torch::Tensor& t,
                                                const flowkit::Conditioning& cond) {
  const bool record = net_->record_taps;
  net_->record_taps = true;
  forward(x, t, cond);
  net_->record_taps = record;
  flowkit::TensorMap out;
  for (const auto& [name, value] : net_->taps) out.set(name, value.detach().flatten(1));
  return out;
}

torch::Tensor PolicyModel::embed(const flowkit::Conditioning& cond) {
  torch::Tensor obs = cond.at("obs");
  auto p = net_->parameters().front();
  obs = obs.to(p.device(), p.scalar_type());
  torch::Tensor proprio;
  if (net_->options().proprio_dim > 0) proprio = cond.at("proprio").to(p.device(), p.scalar_type());
  return net_->encode(obs, proprio);
}

// ---- dispersive ---------------------------------------------------------------------------

namespace {
// Squared Euclidean distances of all row pairs, |a|^2 + |b|^2 - 2 a.b (one matmul, no B x B x D
// intermediate), clamped at 0 against rounding.
torch::Tensor pairwise_sq(const torch::Tensor& z) {
  torch::Tensor sq = z.pow(2).sum(1);
  return (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * torch::mm(z, z.t())).clamp_min(0.0);
}
}  // namespace

torch::Tensor dispersive_wang_he(const torch::Tensor& z_in, double tau, bool normalize_by_dim) {
  torch::Tensor z = z_in.flatten(1);
  const int64_t B = z.size(0);
  torch::Tensor d2 = pairwise_sq(z);
  if (normalize_by_dim) d2 = d2 / static_cast<double>(z.size(1));
  return torch::logsumexp((-d2 / tau).flatten(), 0) - 2.0 * std::log(static_cast<double>(B));
}

torch::Tensor dispersive_dm1(const torch::Tensor& z_in, double tau) {
  torch::Tensor z = z_in.flatten(1);
  const int64_t B = z.size(0);
  torch::Tensor d = pairwise_sq(z).clamp_min(1e-12).sqrt();
  torch::Tensor s = -d / tau;
  torch::Tensor eye = torch::eye(B, torch::TensorOptions().dtype(torch::kBool).device(z.device()));
  s = s.masked_fill(eye, -1e9).clamp(-10.0, 10.0);
  return -torch::logsumexp(-s, 1).mean();
}

torch::Tensor dispersive_term(const std::map<std::string, torch::Tensor>& taps, const MeanFlowOptions& o) {
  std::vector<std::string> names;
  if (o.dispersive_taps == "obs") names = {"obs"};
  else if (o.dispersive_taps == "obs_time") names = {"obs", "t", "r"};
  else if (o.dispersive_taps == "trunk") {
    std::string last;
    for (const auto& [k, v] : taps)
      if (k.rfind("trunk", 0) == 0) last = k;  // map order: trunk0 < trunk1 < ... (< 10 blocks)
    names = {last};
  } else {
    for (const auto& [k, v] : taps) names.push_back(k);
  }
  torch::Tensor total;
  for (const auto& n : names) {
    auto it = taps.find(n);
    if (it == taps.end() || !it->second.defined()) throw flowkit::Error("dispersive: the model exposed no representation '" + n + "'");
    torch::Tensor l = o.dispersive_form == "dm1" ? dispersive_dm1(it->second, o.dispersive_tau)
                                                 : dispersive_wang_he(it->second, o.dispersive_tau, o.dispersive_normalize);
    total = total.defined() ? total + l : l;
  }
  return o.dispersive_weight * total;
}

// ---- MeanFlow -----------------------------------------------------------------------------

Jvp meanflow_jvp(flowkit::Model& model, const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& r,
                 const torch::Tensor& v, const flowkit::Conditioning& cond_in, const std::string& method) {
  auto* pm = dynamic_cast<PolicyModel*>(&model);
  bool old_record = pm ? pm->net()->record_taps : false;
  if (pm) pm->net()->record_taps = false;
  Jvp out;
  if (method == "forward_ad") {
    torch::NoGradGuard ng;
    DualLevel lvl;
    const int64_t L = static_cast<int64_t>(lvl.idx);
    flowkit::Conditioning cond = cond_in;
    cond.set("r", at::_make_dual(r.detach(), torch::zeros_like(r), L));
    torch::Tensor zd = at::_make_dual(z.detach(), v.detach(), L);
    torch::Tensor td = at::_make_dual(t.detach(), torch::ones_like(t), L);
    torch::Tensor y = model.forward(zd, td, cond);
    auto [primal, tangent] = at::_unpack_dual(y, L);
    out.u = primal.clone();
    out.dudt = tangent.defined() ? tangent.clone() : torch::zeros_like(primal);
  } else if (method == "double_backward") {
    // Reference: J v through two reverse passes (the "double-vjp trick").
    torch::AutoGradMode enable(true);
    torch::Tensor z_ = z.detach().requires_grad_(true), t_ = t.detach().requires_grad_(true);
    flowkit::Conditioning cond = cond_in;
    cond.set("r", r.detach());
    torch::Tensor y = model.forward(z_, t_, cond);
    torch::Tensor w = torch::zeros_like(y).requires_grad_(true);
    auto g = torch::autograd::grad({y}, {z_, t_}, {w}, true, true, true);
    torch::Tensor s = (g[0] * v.detach()).sum() + (g[1].defined() ? g[1].sum() : torch::zeros({}, y.options()));
    out.dudt = torch::autograd::grad({s}, {w})[0].detach();
    out.u = y.detach();
  } else {
    throw flowkit::Error("meanflow_jvp: unknown method '" + method + "'");
  }
  if (pm) pm->net()->record_taps = old_record;
  return out;
}

std::pair<torch::Tensor, torch::Tensor> MeanFlowLoss::sample_tr(int64_t n, torch::Generator& gen,
                                                                const torch::TensorOptions& opts) const {
  torch::Tensor a = torch::sigmoid(o_.p_mean + o_.p_std * randn({n}, gen, opts));
  torch::Tensor b = torch::sigmoid(o_.p_mean + o_.p_std * randn({n}, gen, opts));
  torch::Tensor t = torch::maximum(a, b), r = torch::minimum(a, b);
  // Exactly floor((1 - ratio) n) rows, at random positions, get r = t (flow-matching rows).
  const int64_t equal = static_cast<int64_t>(std::floor((1.0 - o_.ratio_r_neq_t) * static_cast<double>(n) + 1e-9));
  torch::Tensor perm = torch::randperm(n, gen, torch::TensorOptions().dtype(torch::kLong).device(gen.device())).to(opts.device());
  torch::Tensor mask = torch::zeros({n}, opts.dtype(torch::kBool));
  if (equal > 0) mask.index_fill_(0, perm.slice(0, 0, equal), true);
  r = torch::where(mask, t, r);
  return {t, r};
}

flowkit::LossOutput MeanFlowLoss::compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                                          torch::Generator& gen) {
  const torch::Tensor& x = batch.at("x");
  const int64_t B = x.size(0);
  std::vector<int64_t> item(x.sizes().begin() + 1, x.sizes().end());
  flowkit::Conditioning cond;
  for (const auto& name : batch.names())
    if (name != "x" && name != "r") cond.set(name, batch.at(name));
  // Official convention inside this loss: z_t = (1 - t) x + t eps (t = 1 noise), v = eps - x.
  torch::Tensor eps = path ? path->prior(B, item, gen, x.options()) : randn(x.sizes(), gen, x.options());
  auto [t, r] = sample_tr(B, gen, x.options());
  std::vector<int64_t> bshape(x.dim(), 1);
  bshape[0] = B;
  torch::Tensor tb = t.reshape(bshape), rb = r.reshape(bshape);
  torch::Tensor z = (1 - tb) * x + tb * eps;
  torch::Tensor v = eps - x;
  Jvp j = meanflow_jvp(model, z, t, r, v, cond, o_.jvp);
  torch::Tensor u_tgt = (v - (tb - rb).clamp(0.0, 1.0) * j.dudt).detach();
  flowkit::Conditioning cr = cond;
  cr.set("r", r);
  torch::Tensor u = model.forward(z, t, cr);
  torch::Tensor sq = (u - u_tgt).pow(2);
  torch::Tensor per = sq.flatten(1).sum(1);
  torch::Tensor loss;
  if (o_.weighting == "adaptive") {
    torch::Tensor w = 1.0 / (per.detach() + o_.adaptive_c).pow(o_.adaptive_p);
    loss = (w * per).mean();
  } else {
    loss = sq.mean();
  }
  flowkit::LossOutput out;
  out.logs["u_loss"] = per.mean().item<double>();
  torch::Tensor eq = (t == r);
  if (eq.any().item<bool>()) out.logs["v_loss"] = per.masked_select(eq).mean().item<double>();
  if (o_.dispersive_weight > 0) {
    auto* pm = dynamic_cast<PolicyModel*>(&model);
    if (!pm) throw flowkit::Error("dm1.meanflow: dispersive_weight > 0 needs the model dm1.policy (it exposes its representations)");
    std::map<std::string, torch::Tensor> taps;
    if (o_.dispersive_pass == "clean") {
      // DM1's release: a separate pass on the clean chunk with independent t, r ~ U(0, 1).
      torch::Tensor t2 = rand({B}, gen, x.options()), r2 = rand({B}, gen, x.options());
      flowkit::Conditioning c2 = cond;
      c2.set("r", r2);
      (void)model.forward(x, t2, c2);
    }
    taps = pm->representations();
    torch::Tensor d = dispersive_term(taps, o_);
    out.logs["disp"] = d.item<double>();
    loss = loss + d;
  }
  out.loss = loss;
  return out;
}

// ---- regression ---------------------------------------------------------------------------

flowkit::LossOutput RegressionLoss::compute(flowkit::Model& model, const flowkit::Path*, const flowkit::Batch& batch,
                                            torch::Generator&) {
  const torch::Tensor& x = batch.at("x");
  flowkit::Conditioning cond;
  for (const auto& name : batch.names())
    if (name != "x") cond.set(name, batch.at(name));
  torch::Tensor zero = torch::zeros({x.size(0)}, x.options());
  cond.set("r", zero);
  torch::Tensor pred = model.forward(torch::zeros_like(x), zero, cond);
  flowkit::LossOutput out;
  out.loss = (pred - x).pow(2).mean();
  return out;
}

}  // namespace dm1
