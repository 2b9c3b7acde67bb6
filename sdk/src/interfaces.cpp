// Out-of-line key functions of the interface classes (one typeinfo, in libflowkit_sdk.so),
// TensorMap, and the default behaviours of the interfaces.
#include <torch/torch.h>

#include "flowkit/domain.h"
#include "flowkit/error.h"
#include "flowkit/loss.h"
#include "flowkit/model.h"
#include "flowkit/path.h"
#include "flowkit/solver.h"

namespace flowkit {

Domain::~Domain() = default;
Path::~Path() = default;
Model::~Model() = default;
TensorMap Model::representations(const torch::Tensor&, const torch::Tensor&, const Conditioning&) { return {}; }
Loss::~Loss() = default;
Solver::~Solver() = default;

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

nlohmann::json Domain::rollout(const Policy&, const std::vector<std::string>&, torch::Generator&) const {
  throw Error("this domain has no environment to roll a policy out in");
}

torch::Tensor Path::velocity_to_score(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) const {
  throw Error("this path cannot convert a velocity into a score (needed by stochastic samplers)");
}

SolveResult Solver::sample(Model& model, const Path* path, const SampleRequest& request,
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
