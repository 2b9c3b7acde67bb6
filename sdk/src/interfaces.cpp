// Out-of-line key functions of the interface classes (one typeinfo, in libflowkit_sdk.so),
// TensorMap, and the default behaviours of the interfaces.
#include <torch/torch.h>

#include "flowkit/flowkit.h"
#include "flowkit/parameter_swap.h"

namespace flowkit {

Domain::~Domain() = default;
Path::~Path() = default;
Model::~Model() = default;
Loss::~Loss() = default;
Solver::~Solver() = default;
Guidance::~Guidance() = default;
NamedOutputModel::~NamedOutputModel() = default;
RepresentationModel::~RepresentationModel() = default;
InvertibleModel::~InvertibleModel() = default;
VelocityConversions::~VelocityConversions() = default;
NoiseKernel::~NoiseKernel() = default;
Environment::~Environment() = default;
SkippedData::~SkippedData() = default;
PersistentState::~PersistentState() = default;
OdeIntegrator::~OdeIntegrator() = default;

bool implements_interface(Kind kind, const Component& c) {
  switch (kind) {
    case Kind::domain: return dynamic_cast<const Domain*>(&c) != nullptr;
    case Kind::path: return dynamic_cast<const Path*>(&c) != nullptr;
    case Kind::model: return dynamic_cast<const Model*>(&c) != nullptr;
    case Kind::loss: return dynamic_cast<const Loss*>(&c) != nullptr;
    case Kind::solver: return dynamic_cast<const Solver*>(&c) != nullptr;
    case Kind::guidance: return dynamic_cast<const Guidance*>(&c) != nullptr;
  }
  return false;
}

std::vector<std::string> capability_names(const Component& c) {
  std::vector<std::string> out;
  auto add = [&](bool has, const char* name) {
    if (has) out.push_back(name);
  };
  add(capability<Environment>(c) != nullptr, "environment");
  add(capability<InvertibleModel>(c) != nullptr, "invertible");
  add(capability<NamedOutputModel>(c) != nullptr, "named_outputs");
  add(capability<NoiseKernel>(c) != nullptr, "noise_kernel");
  add(capability<OdeIntegrator>(c) != nullptr, "ode_integrator");
  add(capability<PersistentState>(c) != nullptr, "persistent_state");
  add(capability<PriorDensity>(c) != nullptr, "prior_density");
  add(capability<RepresentationModel>(c) != nullptr, "representations");
  add(capability<SkippedData>(c) != nullptr, "skipped_data");
  add(capability<VelocityConversions>(c) != nullptr, "velocity_conversions");
  return out;
}

// ---- capabilities' shared parts --------------------------------------------------------

torch::Tensor standard_normal_log_density(const torch::Tensor& z) {
  const double d = static_cast<double>(z[0].numel());
  return -0.5 * z.flatten(1).pow(2).sum(1) - 0.5 * d * std::log(2 * M_PI);
}

torch::Tensor InvertibleModel::log_likelihood(const torch::Tensor& x, const Conditioning& cond) {
  LatentAndLogDet f = to_latent(x, cond);
  return standard_normal_log_density(f.z) + f.log_det;
}

double bits_per_dim(const torch::Tensor& log_likelihood, int64_t dims) {
  return -log_likelihood.to(torch::kDouble).mean().item<double>() / (static_cast<double>(dims) * std::log(2.0));
}

// ---- guidance -----------------------------------------------------------------------------

torch::Tensor GuidedModel::forward(const torch::Tensor& x, const torch::Tensor& t, const Conditioning& cond) {
  int64_t evaluations = 0;
  torch::Tensor v = guidance_.velocity(inner_, path_, x, t, cond, &evaluations);
  evaluations_ += evaluations;
  return v;
}

torch::Tensor ObjectiveGuidance::velocity(Model& model, const Path* path, const torch::Tensor& x, const torch::Tensor& t,
                                          const Conditioning& cond, int64_t* evaluations) const {
  *evaluations = 1;
  torch::Tensor v = model.forward(x, t, cond);
  const auto* conv = capability<VelocityConversions>(path);
  if (!conv) throw Error("objective guidance needs a path with the velocity_conversions capability (the data estimate)");
  // Items outside [t_min, t_max] keep their velocity.
  const torch::Tensor inside = window_.inside(t, x.size(0));
  if (window_.scale == 0 || !inside.any().item<bool>()) return v;
  const torch::Tensor tb = per_item_times(t, x.size(0));
  torch::Tensor grad;
  {
    // Gradient skipping: the objective is differentiated in x̂ only, never through the network.
    // Samplers run under no-grad or inference mode (a policy's hot path): leave both here.
    c10::InferenceMode not_inference(false);
    torch::AutoGradMode enable(true);
    torch::Tensor x_hat = conv->velocity_to_data(v.detach(), x.detach(), tb).clone().requires_grad_(true);
    torch::Tensor loss = objective(x_hat, cond);
    if (loss.dim() != 1 || loss.size(0) != x.size(0))
      throw Error("objective guidance: the objective must return one value per item ([B])");
    grad = torch::autograd::grad({loss.sum()}, {x_hat})[0];
  }
  return where_items(inside, v - window_.scale * grad.to(v.dtype()), v);
}

SolveResult euler_integrate(const VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                            bool keep_intermediates) {
  const torch::Tensor g = grid.to(torch::kCPU, torch::kDouble).contiguous();
  if (g.dim() != 1) throw Error("euler_integrate: the time grid must be 1-D");
  const double* t = g.data_ptr<double>();
  SolveResult out;
  torch::Tensor x = x0;
  if (keep_intermediates) out.intermediates.push_back(x);
  for (int64_t i = 0; i + 1 < g.size(0); ++i) {
    x = x + (t[i + 1] - t[i]) * f(x, torch::scalar_tensor(t[i], x0.options()));
    ++out.nfe;
    if (keep_intermediates) out.intermediates.push_back(x);
  }
  out.x = x;
  return out;
}

Conditioning Domain::sample_conditions(int64_t, int64_t, torch::Generator&) const { return {}; }

SolveResult IntegratingSolver::sample(Model& model, const Path* path, const SampleRequest& request,
                                      torch::Generator& gen) const {
  if (!path) throw Error("this solver integrates from the path's prior, but the pipeline has no path");
  torch::NoGradGuard no_grad;
  torch::Tensor x0 = path->prior(request.n, request.item_shape, gen, request.options);
  torch::Tensor times = grid(request.steps).to(request.options.device()).to(request.options.dtype());
  const Conditioning& cond = request.cond;
  VectorField field = [&](const torch::Tensor& x, const torch::Tensor& t) {
    return model.forward(x, t.expand({x.size(0)}), cond);
  };
  return integrate(field, x0, times, gen, request.keep_intermediates);
}

// ---- random draws on the generator's device -----------------------------------------------

namespace random {
static torch::TensorOptions on_generator(const torch::TensorOptions& o, const torch::Generator& gen) {
  return o.device(gen.device());
}
torch::Tensor randn(torch::IntArrayRef size, torch::Generator& gen, const torch::TensorOptions& options) {
  return torch::randn(size, gen, on_generator(options, gen)).to(options.device());
}
torch::Tensor rand(torch::IntArrayRef size, torch::Generator& gen, const torch::TensorOptions& options) {
  return torch::rand(size, gen, on_generator(options, gen)).to(options.device());
}
torch::Tensor randint(int64_t low, int64_t high, torch::IntArrayRef size, torch::Generator& gen,
                      const torch::TensorOptions& options) {
  return torch::randint(low, high, size, gen, on_generator(options, gen)).to(options.device());
}
torch::Tensor randperm(int64_t n, torch::Generator& gen, const torch::TensorOptions& options) {
  return torch::randperm(n, gen, on_generator(options, gen)).to(options.device());
}
}  // namespace random

// ---- scoped parameter swap -----------------------------------------------------------------

ScopedParameterSwap::ScopedParameterSwap(torch::nn::Module& module, const std::vector<torch::Tensor>& values)
    : module_(module) {
  if (values.empty()) return;
  torch::NoGradGuard no_grad;
  auto params = module_.parameters();
  if (params.size() != values.size()) throw Error("ScopedParameterSwap: the module has a different number of parameters");
  for (size_t i = 0; i < params.size(); ++i) {
    saved_.push_back(params[i].detach().clone());
    params[i].copy_(values[i]);
  }
}

ScopedParameterSwap::~ScopedParameterSwap() {
  if (saved_.empty()) return;
  torch::NoGradGuard no_grad;
  auto params = module_.parameters();
  for (size_t i = 0; i < params.size(); ++i) params[i].copy_(saved_[i]);
}

const torch::Tensor& TensorMap::at(const std::string& name) const {
  auto it = map_.find(name);
  if (it == map_.end()) {
    std::string present;
    for (const auto& [k, v] : map_) present += (present.empty() ? "" : ", ") + k;
    throw Error("tensor field '" + name + "' is missing (present: " + (present.empty() ? "none" : present) + ")");
  }
  return it->second;
}

std::vector<std::string> TensorMap::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : map_) out.push_back(k);
  return out;
}

TensorMap TensorMap::to(const torch::Device& device) const {
  TensorMap out;
  for (const auto& [k, v] : map_) out.set(k, v.defined() ? v.to(device) : v);
  return out;
}

TensorMap TensorMap::index_rows(const torch::Tensor& index, int64_t batch_size) const {
  TensorMap out;
  for (const auto& [k, v] : map_)
    out.set(k, (v.defined() && v.dim() > 0 && v.size(0) == batch_size) ? v.index_select(0, index.to(v.device())) : v);
  return out;
}

TensorMap TensorMap::cat(const std::vector<TensorMap>& parts) {
  TensorMap out;
  if (parts.empty()) return out;
  for (const auto& name : parts.front().names()) {
    std::vector<torch::Tensor> pieces;
    for (const auto& p : parts) pieces.push_back(p.at(name));
    out.set(name, torch::cat(pieces, 0));
  }
  return out;
}

}  // namespace flowkit
