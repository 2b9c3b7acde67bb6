// Log-likelihoods of flows by integrating the divergence along the ODE (flowkit/likelihood.h).
#include "flowkit/likelihood.h"

#include <torch/torch.h>

#include "flowkit/error.h"
#include "flowkit/random.h"

namespace flowkit {

PriorDensity::~PriorDensity() = default;

DivergenceOptions divergence_options(const std::string& kind, int64_t probes) {
  if (kind != "exact" && kind != "hutchinson")
    throw Error("unknown divergence \"" + kind + "\" (expected exact or hutchinson)");
  if (probes < 1) throw Error("Hutchinson needs at least one probe");
  return {kind == "exact", probes};
}

namespace {

// The field of the state [x (flattened), ℓ] with dℓ/dt = div v.
VectorField augmented_field(const VectorField& f, const std::vector<int64_t>& item_shape, const DivergenceOptions& o,
                            const torch::Tensor& probes) {
  const bool keep_graph = torch::GradMode::is_enabled();
  return [=](const torch::Tensor& state, const torch::Tensor& t) {
    const int64_t B = state.size(0), D = state.size(1) - 1;
    std::vector<int64_t> shape{B};
    shape.insert(shape.end(), item_shape.begin(), item_shape.end());
    // Samplers run under no-grad or inference mode; the divergence needs autograd in x.
    c10::InferenceMode not_inference(false);
    torch::AutoGradMode on(true);
    torch::Tensor x = state.narrow(1, 0, D);
    if (!keep_graph || !x.requires_grad()) x = x.detach().requires_grad_(true);
    torch::Tensor v = f(x.reshape(shape), t).reshape({B, D});
    torch::Tensor div = torch::zeros({B}, v.options());
    if (o.exact) {
      for (int64_t i = 0; i < D; ++i)
        div = div + torch::autograd::grad({v.select(1, i).sum()}, {x}, {}, /*retain_graph=*/true, keep_graph)[0].select(1, i);
    } else {
      for (int64_t p = 0; p < probes.size(0); ++p) {
        const torch::Tensor eps = probes[p].to(v.dtype());
        torch::Tensor vjp = torch::autograd::grad({(v * eps).sum()}, {x}, {}, /*retain_graph=*/true, keep_graph)[0];
        div = div + (vjp * eps).sum(1);
      }
      div = div / static_cast<double>(probes.size(0));
    }
    torch::Tensor out = torch::cat({v, div.unsqueeze(1)}, 1);
    return keep_graph ? out : out.detach();
  };
}

FlowLikelihood solve(const VectorField& f, const OdeIntegrator& integrator, const torch::Tensor& grid,
                     const torch::Tensor& start, const DivergenceOptions& o, torch::Generator& gen) {
  const int64_t B = start.size(0);
  const std::vector<int64_t> item(start.sizes().begin() + 1, start.sizes().end());
  const int64_t D = start[0].numel();
  torch::Tensor probes;
  if (!o.exact)  // Rademacher ±1, fixed for the whole solve
    probes = flowkit::random::randint(0, 2, {o.probes, B, D}, gen, start.options()) * 2 - 1;
  torch::Tensor state = torch::cat({start.reshape({B, D}), torch::zeros({B, 1}, start.options())}, 1);
  SolveResult r = integrator.integrate(augmented_field(f, item, o, probes), state, grid, gen);
  std::vector<int64_t> shape{B};
  shape.insert(shape.end(), item.begin(), item.end());
  FlowLikelihood out;
  out.x = r.x.narrow(1, 0, D).reshape(shape);
  out.log_likelihood = r.x.select(1, D);  // ∫ div v dt along the grid's direction
  out.nfe = r.nfe;
  return out;
}

void check_grid(const torch::Tensor& grid) {
  if (grid.dim() != 1 || grid.size(0) < 2) throw Error("a likelihood needs a 1-D time grid of at least two times");
}

}  // namespace

FlowLikelihood data_log_likelihood(const VectorField& f, const PriorDensity& prior, const OdeIntegrator& integrator,
                                   const torch::Tensor& grid, const torch::Tensor& x, const DivergenceOptions& o,
                                   torch::Generator& gen) {
  check_grid(grid);
  FlowLikelihood r = solve(f, integrator, grid.flip(0), x, o, gen);
  // Backwards, ℓ(end) = ∫_1^0 div dt = −∫_0^1 div dt: log p(x) = log p_0(x_0) + ℓ.
  r.log_likelihood = prior.prior_log_density(r.x) + r.log_likelihood;
  return r;
}

FlowLikelihood sample_log_likelihood(const VectorField& f, const PriorDensity& prior, const OdeIntegrator& integrator,
                                     const torch::Tensor& grid, const torch::Tensor& x0, const DivergenceOptions& o,
                                     torch::Generator& gen) {
  check_grid(grid);
  const torch::Tensor log_p0 = prior.prior_log_density(x0);
  FlowLikelihood r = solve(f, integrator, grid, x0, o, gen);
  r.log_likelihood = log_p0 - r.log_likelihood;
  return r;
}

}  // namespace flowkit
