// The sampler `pfgmpp.heun`: the EDM sigma grid, Heun steps with noise injection, and weight
// quantization.
#include "pfgmpp/heun_sampler.h"

#include <algorithm>
#include <cmath>

#include "flowkit/error.h"
#include "flowkit/model.h"
#include "flowkit/parameter_swap.h"
#include "flowkit/path.h"
#include "flowkit/random.h"

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

namespace {
bool quantizable(const std::string& name) {
  if (name.find("weight") == std::string::npos) return false;
  for (const char* word : {"norm", "embed", "time", "map", "affine"})
    if (name.find(word) != std::string::npos) return false;
  return true;
}
// The module's parameters (in parameters() order) with the quantizable ones quantized.
std::vector<torch::Tensor> quantized_parameters(torch::nn::Module& module, int64_t bits) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (const auto& item : module.named_parameters())
    out.push_back(quantizable(item.key()) ? quantize_tensor(item.value(), bits) : item.value().detach().clone());
  return out;
}
}  // namespace

std::vector<std::string> quantize_weights(torch::nn::Module& module, int64_t bits) {
  std::vector<std::string> changed;
  torch::NoGradGuard no_grad;
  for (auto& item : module.named_parameters()) {
    if (!quantizable(item.key())) continue;
    item.value().copy_(quantize_tensor(item.value(), bits));
    changed.push_back(item.key());
  }
  return changed;
}

flowkit::SolveResult HeunSampler::sample(flowkit::Model& model, const flowkit::Path* path,
                                         const flowkit::SampleRequest& request, torch::Generator& gen) const {
  torch::NoGradGuard no_grad;
  flowkit::ScopedParameterSwap quantized(
      model.module(), o_.bits > 0 ? quantized_parameters(model.module(), o_.bits) : std::vector<torch::Tensor>{});
  const torch::TensorOptions& opts = request.options;
  torch::Tensor x;
  if (path) {
    x = path->prior(request.n, request.item_shape, gen, opts) * o_.sigma_max;
  } else {
    std::vector<int64_t> shape{request.n};
    shape.insert(shape.end(), request.item_shape.begin(), request.item_shape.end());
    x = flowkit::random::randn(shape, gen, opts) * o_.sigma_max;
  }
  // dx/dsigma = (x - D(x, sigma)) / sigma.
  auto f = [&](const torch::Tensor& xi, double sigma) {
    torch::Tensor s = torch::full({}, sigma, xi.options());
    return (xi - model.forward(xi, s.expand({xi.size(0)}), request.cond)) / s;
  };
  torch::Tensor grid = edm_sigma_grid(request.steps > 0 ? request.steps : o_.steps, o_.sigma_min, o_.sigma_max, o_.rho);
  const auto* sigmas = grid.data_ptr<double>();
  flowkit::SolveResult r;
  if (request.keep_intermediates) r.intermediates.push_back(x);
  for (int64_t i = 0; i + 1 < grid.size(0); ++i) {
    const double s = sigmas[i], sn = sigmas[i + 1], h = sn - s;
    if (o_.alpha > 0) x = x + o_.alpha * s * flowkit::random::randn(x.sizes(), gen, x.options());
    torch::Tensor d = f(x, s);
    ++r.nfe;
    torch::Tensor xe = x + h * d;
    if (sn != 0.0) {  // Heun; the last step, into sigma = 0, is Euler (EDM)
      torch::Tensor d2 = f(xe, sn);
      ++r.nfe;
      x = x + h * 0.5 * (d + d2);
    } else {
      x = xe;
    }
    if (request.keep_intermediates) r.intermediates.push_back(x);
  }
  r.x = x;
  return r;
}

HeunOptions heun_options(const flowkit::Config& cfg) {
  HeunOptions o;
  o.steps = cfg.get<int64_t>("steps");
  o.sigma_min = cfg.get<double>("sigma_min");
  o.sigma_max = cfg.get<double>("sigma_max");
  o.rho = cfg.get<double>("rho");
  o.alpha = cfg.get<double>("alpha");
  o.bits = cfg.get<int64_t>("bits");
  // The manifest's range is [0, 16]; 1 (two levels) is excluded here, as a range cannot say so.
  if (o.bits == 1) cfg.fail("bits", "1-bit quantization is not supported (use 0 = off, or 2..16)");
  if (!(o.sigma_min < o.sigma_max))
    cfg.fail("sigma_min", "sigma_min (" + std::to_string(o.sigma_min) + ") must be below sigma_max (" +
                              std::to_string(o.sigma_max) + ")");
  return o;
}

std::unique_ptr<flowkit::Component> make_heun(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<HeunSampler>(heun_options(cfg));
}

}  // namespace pfgmpp
