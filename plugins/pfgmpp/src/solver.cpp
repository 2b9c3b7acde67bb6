// The EDM sigma grid, the Heun sampler with noise injection, and weight quantization.
#include <torch/torch.h>

#include <cmath>

#include "flowkit/error.h"
#include "flowkit/model.h"
#include "pfgmpp/pfgmpp.h"

namespace pfgmpp {

torch::Tensor edm_sigma_grid(int64_t n, double sigma_min, double sigma_max, double rho) {
  if (n < 1) throw flowkit::Error("pfgmpp: the sigma grid needs at least one step");
  std::vector<double> s;
  const double a = std::pow(sigma_max, 1 / rho), b = std::pow(sigma_min, 1 / rho);
  for (int64_t i = 0; i < n; ++i) {
    const double frac = n == 1 ? 0.0 : static_cast<double>(i) / static_cast<double>(n - 1);
    s.push_back(std::pow(a + frac * (b - a), rho));
  }
  s.push_back(0.0);
  return torch::tensor(s, torch::kDouble);
}

torch::Tensor quantize_tensor(const torch::Tensor& w, int64_t bits) {
  const double levels = std::pow(2.0, static_cast<double>(bits)) - 1;
  const double lo = w.min().item<double>(), hi = w.max().item<double>();
  if (!(hi > lo)) return w.clone();
  const double scale = (hi - lo) / levels;
  const double zero = std::clamp(std::round(-lo / scale), 0.0, levels);
  torch::Tensor q = torch::clamp(torch::round(w / scale) + zero, 0, levels);
  return (q - zero) * scale;
}

std::vector<std::string> quantize_weights(torch::nn::Module& module, int64_t bits) {
  std::vector<std::string> changed;
  torch::NoGradGuard no_grad;
  for (auto& item : module.named_parameters()) {
    const std::string& name = item.key();
    if (name.find("weight") == std::string::npos) continue;
    bool skip = false;
    for (const char* word : {"norm", "embed", "time", "map", "affine"}) skip |= name.find(word) != std::string::npos;
    if (skip) continue;
    item.value().copy_(quantize_tensor(item.value(), bits));
    changed.push_back(name);
  }
  return changed;
}

torch::Tensor HeunSolver::grid(int64_t steps) const {
  return edm_sigma_grid(steps > 0 ? steps : o_.steps, o_.sigma_min, o_.sigma_max, o_.rho);
}

flowkit::SolveResult HeunSolver::integrate(const flowkit::VectorField& f, const torch::Tensor& x0,
                                           const torch::Tensor& grid, torch::Generator& gen,
                                           bool keep_intermediates) const {
  if (grid.dim() != 1 || grid.size(0) < 2) throw flowkit::Error("pfgmpp.heun: the grid must be 1-D with >= 2 times");
  torch::Tensor g = grid.to(torch::kDouble).cpu();
  const auto* ts = g.data_ptr<double>();
  flowkit::SolveResult r;
  torch::Tensor x = x0;
  auto at = [&](double t) { return torch::full({}, t, x.options()); };
  if (keep_intermediates) r.intermediates.push_back(x);
  for (int64_t i = 0; i + 1 < g.size(0); ++i) {
    const double t = ts[i], tn = ts[i + 1], h = tn - t;
    if (o_.alpha > 0) {
      torch::Tensor eps = torch::randn(x.sizes(), gen, x.options().device(gen.device())).to(x.device());
      x = x + o_.alpha * std::abs(t) * eps;
    }
    torch::Tensor d = f(x, at(t));
    ++r.nfe;
    torch::Tensor xe = x + h * d;
    if (tn != 0.0) {
      torch::Tensor d2 = f(xe, at(tn));
      ++r.nfe;
      x = x + h * 0.5 * (d + d2);
    } else {
      x = xe;
    }
    if (keep_intermediates) r.intermediates.push_back(x);
  }
  r.x = x;
  return r;
}

namespace {
// Quantizes a model's weights for its lifetime, restoring the originals after.
struct QuantizedScope {
  torch::nn::Module* module = nullptr;
  std::vector<torch::Tensor> saved;
  QuantizedScope(torch::nn::Module& m, int64_t bits) {
    if (bits <= 0) return;
    module = &m;
    torch::NoGradGuard no_grad;
    for (const auto& p : m.parameters()) saved.push_back(p.detach().clone());
    quantize_weights(m, bits);
  }
  ~QuantizedScope() {
    if (!module) return;
    torch::NoGradGuard no_grad;
    auto params = module->parameters();
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(saved[i]);
  }
};
}  // namespace

flowkit::SolveResult HeunSolver::sample(flowkit::Model& model, const flowkit::Path* path,
                                        const flowkit::SampleRequest& request, torch::Generator& gen) const {
  torch::NoGradGuard no_grad;
  QuantizedScope quantized(model.module(), o_.bits);
  torch::TensorOptions opts = request.options;
  torch::Tensor x0;
  if (path) {
    x0 = path->prior(request.n, request.item_shape, gen, opts) * o_.sigma_max;
  } else {
    std::vector<int64_t> shape{request.n};
    shape.insert(shape.end(), request.item_shape.begin(), request.item_shape.end());
    x0 = torch::randn(shape, gen, opts.device(gen.device())).to(opts.device()) * o_.sigma_max;
  }
  const flowkit::Conditioning& cond = request.cond;
  flowkit::VectorField f = [&](const torch::Tensor& x, const torch::Tensor& sigma) {
    torch::Tensor s = sigma.to(x.options()).expand({x.size(0)});
    return (x - model.forward(x, s, cond)) / sigma.to(x.options());
  };
  return integrate(f, x0, grid(request.steps), gen, request.keep_intermediates);
}

}  // namespace pfgmpp
