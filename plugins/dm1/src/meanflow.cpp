// The MeanFlow loss (forward-mode JVP) with its dispersive terms, the regression loss, the
// MeanFlow and direct samplers, and their factories.
#include <torch/csrc/autograd/forward_grad.h>
#include <torch/torch.h>

#include <cmath>

#include "dm1/losses.h"
#include "dm1/samplers.h"
#include "flowkit/capabilities/representations.h"
#include "flowkit/capability.h"
#include "flowkit/error.h"
#include "flowkit/path.h"
#include "flowkit/random.h"

namespace dm1 {

namespace {
// RAII forward-AD dual level (the C++ counterpart of `with fwAD.dual_level():`).
struct DualLevel {
  uint64_t idx = torch::autograd::ForwardADLevel::get_next_idx();
  ~DualLevel() { torch::autograd::ForwardADLevel::release_idx(idx); }
};
}  // namespace

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

torch::Tensor dispersive_term(const flowkit::TensorMap& taps, const MeanFlowOptions& o) {
  std::vector<std::string> names;
  if (o.dispersive_taps == "obs") names = {"obs"};
  else if (o.dispersive_taps == "obs_time") names = {"obs", "t", "r"};
  else if (o.dispersive_taps == "trunk") {
    // The last residual block: the highest i of "trunk<i>" (by number, not name order).
    std::string last;
    int64_t best = -1;
    for (const auto& [k, v] : taps)
      if (k.rfind("trunk", 0) == 0 && std::stoll(k.substr(5)) > best) best = std::stoll(k.substr(5)), last = k;
    names = {last};
  } else {
    for (const auto& [k, v] : taps) names.push_back(k);
  }
  torch::Tensor total;
  for (const auto& n : names) {
    if (!taps.has(n) || !taps.at(n).defined()) throw flowkit::Error("dispersive: the model exposed no representation '" + n + "'");
    const torch::Tensor& z = taps.at(n);
    torch::Tensor l = o.dispersive_form == "dm1" ? dispersive_dm1(z, o.dispersive_tau)
                                                 : dispersive_wang_he(z, o.dispersive_tau, o.dispersive_normalize);
    total = total.defined() ? total + l : l;
  }
  return o.dispersive_weight * total;
}

// ---- MeanFlow -----------------------------------------------------------------------------

Jvp meanflow_jvp(flowkit::Model& model, const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& r,
                 const torch::Tensor& v, const flowkit::Conditioning& cond_in, const std::string& method) {
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
  return out;
}

std::pair<torch::Tensor, torch::Tensor> MeanFlowLoss::sample_tr(int64_t n, torch::Generator& gen,
                                                                const torch::TensorOptions& opts) const {
  torch::Tensor a = torch::sigmoid(o_.p_mean + o_.p_std * flowkit::random::randn({n}, gen, opts));
  torch::Tensor b = torch::sigmoid(o_.p_mean + o_.p_std * flowkit::random::randn({n}, gen, opts));
  torch::Tensor t = torch::maximum(a, b), r = torch::minimum(a, b);
  // Exactly floor((1 - ratio) n) rows, at random positions, get r = t (flow-matching rows).
  const int64_t equal = static_cast<int64_t>(std::floor((1.0 - o_.ratio_r_neq_t) * static_cast<double>(n) + 1e-9));
  torch::Tensor perm = flowkit::random::randperm(n, gen, torch::TensorOptions().dtype(torch::kLong).device(opts.device()));
  torch::Tensor mask = torch::zeros({n}, opts.dtype(torch::kBool));
  if (equal > 0) mask.index_fill_(0, perm.slice(0, 0, equal), true);
  r = torch::where(mask, t, r);
  return {t, r};
}

flowkit::LossOutput MeanFlowLoss::compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                                          torch::Generator& gen) {
  flowkit::RepresentationModel* reps = nullptr;
  if (o_.dispersive_weight > 0)
    reps = &flowkit::require_capability<flowkit::RepresentationModel>(
        model, "dm1.meanflow", "a model exposing its representations (flowkit::RepresentationModel, e.g. dm1.policy) when dispersive_weight > 0");
  const torch::Tensor& x = batch.at("x");
  const int64_t B = x.size(0);
  std::vector<int64_t> item(x.sizes().begin() + 1, x.sizes().end());
  flowkit::Conditioning cond = batch.without({"x", "r"});
  // Official convention inside this loss: z_t = (1 - t) x + t eps (t = 1 noise), v = eps - x.
  torch::Tensor eps = path ? path->prior(B, item, gen, x.options()) : flowkit::random::randn(x.sizes(), gen, x.options());
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
  // "same": the representations of this pass feed the dispersive term.
  torch::Tensor u;
  flowkit::TensorMap taps;
  if (reps && o_.dispersive_pass == "same") std::tie(u, taps) = reps->forward_with_representations(z, t, cr);
  else u = model.forward(z, t, cr);
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
  if (reps) {
    if (o_.dispersive_pass == "clean") {
      // DM1's release: a separate pass on the clean chunk with independent t, r ~ U(0, 1).
      torch::Tensor t2 = flowkit::random::rand({B}, gen, x.options()), r2 = flowkit::random::rand({B}, gen, x.options());
      flowkit::Conditioning c2 = cond;
      c2.set("r", r2);
      taps = reps->forward_with_representations(x, t2, c2).second;
    }
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
  flowkit::Conditioning cond = batch.without({"x"});
  torch::Tensor zero = torch::zeros({x.size(0)}, x.options());
  cond.set("r", zero);
  torch::Tensor pred = model.forward(torch::zeros_like(x), zero, cond);
  flowkit::LossOutput out;
  out.loss = (pred - x).pow(2).mean();
  return out;
}

// ---- samplers -----------------------------------------------------------------------------

flowkit::SolveResult MeanFlowSampler::sample(flowkit::Model& model, const flowkit::Path* path,
                                             const flowkit::SampleRequest& req, torch::Generator& gen) const {
  torch::NoGradGuard ng;
  std::vector<int64_t> shape{req.n};
  shape.insert(shape.end(), req.item_shape.begin(), req.item_shape.end());
  torch::Tensor z = path ? path->prior(req.n, req.item_shape, gen, req.options) : flowkit::random::randn(shape, gen, req.options);
  const int64_t k = req.steps > 0 ? req.steps : steps_;
  flowkit::Conditioning cond = req.cond;
  flowkit::SolveResult out;
  if (req.keep_intermediates) out.intermediates.push_back(z);
  for (int64_t i = 0; i < k; ++i) {
    // t_i = 1 - i/k (noise side) down to r = t_{i+1}.
    const double t = 1.0 - static_cast<double>(i) / static_cast<double>(k);
    const double r = 1.0 - static_cast<double>(i + 1) / static_cast<double>(k);
    cond.set("r", torch::full({req.n}, r, req.options));
    torch::Tensor u = model.forward(z, torch::full({req.n}, t, req.options), cond);
    z = z - (t - r) * u;
    if (clip_ > 0) z = z.clamp(-clip_, clip_);
    ++out.nfe;
    if (req.keep_intermediates) out.intermediates.push_back(z);
  }
  out.x = z;
  return out;
}

flowkit::SolveResult DirectSampler::sample(flowkit::Model& model, const flowkit::Path*, const flowkit::SampleRequest& req,
                                           torch::Generator&) const {
  torch::NoGradGuard ng;
  std::vector<int64_t> shape{req.n};
  shape.insert(shape.end(), req.item_shape.begin(), req.item_shape.end());
  flowkit::Conditioning cond = req.cond;
  torch::Tensor zero = torch::zeros({req.n}, req.options);
  cond.set("r", zero);
  torch::Tensor x = model.forward(torch::zeros(shape, req.options), zero, cond);
  if (clip_ > 0) x = x.clamp(-clip_, clip_);
  flowkit::SolveResult out;
  out.x = x;
  out.nfe = 1;
  if (req.keep_intermediates) out.intermediates.push_back(x);
  return out;
}

// ---- factories ----------------------------------------------------------------------------

MeanFlowOptions meanflow_options(const flowkit::Config& cfg) {
  MeanFlowOptions o;
  o.ratio_r_neq_t = cfg.get<double>("ratio_r_neq_t");
  o.p_mean = cfg.get<double>("p_mean");
  o.p_std = cfg.get<double>("p_std");
  o.weighting = cfg.get<std::string>("weighting");
  o.adaptive_p = cfg.get<double>("adaptive_p");
  o.adaptive_c = cfg.get<double>("adaptive_c");
  o.jvp = cfg.get<std::string>("jvp");
  o.dispersive_weight = cfg.get<double>("dispersive_weight");
  o.dispersive_form = cfg.get<std::string>("dispersive_form");
  o.dispersive_tau = cfg.get<double>("dispersive_tau");
  o.dispersive_taps = cfg.get<std::string>("dispersive_taps");
  o.dispersive_pass = cfg.get<std::string>("dispersive_pass");
  o.dispersive_normalize = cfg.get<bool>("dispersive_normalize");
  return o;
}

std::unique_ptr<flowkit::Component> make_meanflow_loss(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  MeanFlowOptions o = meanflow_options(cfg);
  // Fail at build time rather than at the first training step.
  if (o.dispersive_weight > 0 && ctx.model && !flowkit::capability<flowkit::RepresentationModel>(*ctx.model))
    cfg.fail("dispersive_weight", "> 0 needs a model exposing its representations (flowkit::RepresentationModel, e.g. dm1.policy)");
  return std::make_unique<MeanFlowLoss>(o);
}

std::unique_ptr<flowkit::Component> make_regression_loss(const flowkit::Config&, const flowkit::BuildContext&) {
  return std::make_unique<RegressionLoss>();
}

std::unique_ptr<flowkit::Component> make_meanflow_sampler(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  const int64_t steps = cfg.get<int64_t>("steps");
  const double clip = cfg.get<double>("clip");
  return std::make_unique<MeanFlowSampler>(steps, clip);
}

std::unique_ptr<flowkit::Component> make_direct_sampler(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  (void)cfg.get<int64_t>("steps");  // declared for existing runs; one pass whatever it says
  return std::make_unique<DirectSampler>(cfg.get<double>("clip"));
}

}  // namespace dm1
