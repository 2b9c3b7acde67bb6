// `flowkit new-plugin`: writes an out-of-tree plugin folder from the templates below. Each
// template is a raw string with @KEY@ placeholders (@NAME@: the plugin name); the parts that
// depend on the chosen kinds (manifest entries, sources, registrations, examples) are
// assembled from one Part per kind. Torch-free on purpose (see new_plugin.h).
#include "new_plugin.h"

#include "flowkit/version.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <utility>

namespace fs = std::filesystem;

namespace flowkit::host {
namespace {

// Replaces every @KEY@ of `vars` in `text`.
std::string fill(std::string text, const std::map<std::string, std::string>& vars) {
  for (const auto& [key, value] : vars) {
    const std::string mark = "@" + key + "@";
    for (size_t at = text.find(mark); at != std::string::npos; at = text.find(mark, at + value.size()))
      text.replace(at, mark.size(), value);
  }
  return text;
}

// One generated component: its manifest entry, its source and its pipeline sections.
struct Part {
  std::string kind;       // "domain"
  std::string name;       // component name: the type is <plugin>.<name>
  std::string factory;    // factory function in src/components.h
  std::string manifest;   // entry of plugin.json "components" (indented, no trailing comma)
  std::string source;     // src/<kind>.cpp
  std::string section;    // the pipeline section using it, with its parameters spelled out
  std::string standard;   // the bundled component of the same kind, for the examples
};

// ---- domain -----------------------------------------------------------------------------

Part domain_part() {
  Part p{"domain", "blobs", "make_blobs", "", "", "", ""};
  p.manifest = R"json(    {
      "kind": "domain", "name": "blobs",
      "summary": "two 2-D Gaussian blobs centred at (-separation/2, 0) and (separation/2, 0), equally likely; metrics energy_distance and mode_balance",
      "params": {
        "separation": {"type": "number", "default": 4.0, "min": 0.0, "doc": "distance between the two blob centres"},
        "noise": {"type": "number", "default": 0.5, "min": 0.01, "doc": "standard deviation of each blob"}
      }
    })json";
  p.section = R"json({"type": "@NAME@.blobs", "separation": 4.0, "noise": 0.5})json";
  p.standard = R"json({"type": "standard.toy2d", "dataset": "8gaussians"})json";
  p.source = R"cpp(// @NAME@.blobs — a domain: the data (a training sampler and a held-out reference), the
// metrics that compare generated samples with it, and how samples are written to disk.
#include <flowkit/flowkit.h>  // the SDK, with LibTorch's tensors and autograd
#include <flowkit/io.h>
#include <flowkit/sample_metrics.h>

#include <cmath>

#include "components.h"

namespace @NAME@_plugin {
namespace {

// Two isotropic Gaussian blobs at (-separation/2, 0) and (separation/2, 0), equally likely.
class Blobs final : public flowkit::Domain {
 public:
  Blobs(double separation, double noise) : separation_(separation), noise_(noise) {}

  // Shape of one item of the field "x" (2-D points here; {3, 32, 32} for images).
  std::vector<int64_t> item_shape() const override { return {2}; }

  // REPLACE: your data. Extra fields of a batch ("label", an observation, ...) reach the
  // model as its conditioning; draw only from `gen`, so a run is a function of its seed.
  flowkit::Batch train_batch(int64_t n, torch::Generator& gen) override { return {{"x", draw(n, gen)}}; }
  // The reference of the metrics; for a finite dataset, items of a held-out split.
  flowkit::Batch reference(int64_t n, torch::Generator& gen) override { return {{"x", draw(n, gen)}}; }

  // REPLACE: the metrics that matter for your data (the first ones are the defaults).
  std::vector<std::string> metric_names() const override { return {"energy_distance", "mode_balance"}; }
  nlohmann::json evaluate(const flowkit::Batch& generated, const flowkit::Batch& reference,
                          const std::vector<std::string>& metrics, torch::Generator&) const override {
    const torch::Tensor x = generated.at("x").to(torch::kCPU, torch::kFloat64);
    nlohmann::json out;
    for (const auto& m : metrics) {
      // A two-sample distance to the reference: about 0 when the distributions match.
      if (m == "energy_distance") out[m] = flowkit::metrics::energy_distance(x, reference.at("x"));
      // |share of samples in the right-hand blob - 1/2|: 0 when both modes are covered equally.
      if (m == "mode_balance") out[m] = std::abs((x.select(1, 0) > 0).to(torch::kFloat64).mean().item<double>() - 0.5);
    }
    return out;
  }

  // The samples as <dir>/<stem>.npy (numpy.load reads it); returns the files written.
  std::vector<std::string> write(const flowkit::Batch& samples, const std::string& dir,
                                 const std::string& stem) const override {
    const torch::Tensor x = samples.at("x").to(torch::kCPU, torch::kFloat32).contiguous();
    const std::string file = dir + "/" + stem + ".npy";
    flowkit::io::write_npy(file, x.data_ptr<float>(), std::vector<int64_t>(x.sizes().begin(), x.sizes().end()));
    return {file};
  }

 private:
  torch::Tensor draw(int64_t n, torch::Generator& gen) const {
    const torch::Tensor side = flowkit::random::randint(0, 2, {n}, gen).to(torch::kFloat32) * 2 - 1;  // -1 or +1
    const torch::Tensor centre = torch::stack({side * (separation_ / 2), torch::zeros({n})}, 1);
    return centre + noise_ * flowkit::random::randn({n, 2}, gen);
  }

  double separation_, noise_;
};

}  // namespace

std::unique_ptr<flowkit::Component> make_blobs(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  // Read every parameter plugin.json declares, and nothing else: the host has filled in the
  // defaults and checked the ranges there (conformance compares the keys read with it).
  return std::make_unique<Blobs>(cfg.get<double>("separation"), cfg.get<double>("noise"));
}

}  // namespace @NAME@_plugin
)cpp";
  return p;
}

// ---- path -------------------------------------------------------------------------------

Part path_part() {
  Part p{"path", "linear", "make_linear", "", "", "", ""};
  p.manifest = R"json(    {
      "kind": "path", "name": "linear",
      "summary": "straight path x_t = t x1 + (1 - (1 - sigma_min) t) x0 from x0 ~ N(0, I) (t = 0 noise, t = 1 data), with velocity conversions",
      "params": {
        "sigma_min": {"type": "number", "default": 0.0, "min": 0.0, "max": 1.0, "doc": "standard deviation of the noise left at t = 1"}
      }
    })json";
  p.section = R"json({"type": "@NAME@.linear", "sigma_min": 0.0})json";
  p.standard = R"json({"type": "standard.affine", "scheduler": "condot"})json";
  p.source = R"cpp(// @NAME@.linear — a probability path: the point x_t between a prior draw x0 (t = 0) and
// a data item x1 (t = 1), and its time derivative dx_t (the target of a velocity loss).
#include <flowkit/flowkit.h>  // the SDK, with LibTorch's tensors and autograd

#include "components.h"

namespace @NAME@_plugin {
namespace {

// t ([B] or 0-dim) shaped to broadcast over the items of `like` ([B, ...]).
torch::Tensor per_item(const torch::Tensor& t, const torch::Tensor& like) {
  const torch::Tensor tt = t.to(like.options());
  if (tt.dim() == 0) return tt;
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = tt.size(0);
  return tt.reshape(shape);
}

// x_t = alpha x1 + sigma x0 with alpha = t, sigma = 1 - c t and c = 1 - sigma_min.
class LinearPath final : public flowkit::Path, public flowkit::VelocityConversions {
 public:
  explicit LinearPath(double sigma_min) : c_(1 - sigma_min) {}

  // REPLACE: your interpolant. A pure function of its inputs (no randomness, no state).
  flowkit::PathSample sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const override {
    const torch::Tensor tt = per_item(t, x1);
    flowkit::PathSample s;
    s.t = t;
    s.x0 = x0;
    s.x1 = x1;
    s.xt = tt * x1 + (1 - c_ * tt) * x0;
    s.dxt = x1 - c_ * x0;  // d/dt of xt (conformance checks it by finite differences)
    return s;
  }

  // REPLACE: your source distribution (here N(0, I)); draw only from `gen`.
  torch::Tensor prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator& gen,
                      const torch::TensorOptions& options) const override {
    std::vector<int64_t> shape{n};
    shape.insert(shape.end(), item_shape.begin(), item_shape.end());
    return flowkit::random::randn(shape, gen, options);
  }

  // VelocityConversions (optional: guidance and stochastic samplers use it). For this path
  // alpha d_sigma - sigma d_alpha = -1, so the marginal velocity v at x gives
  // E[x1 | x] = sigma v + c x, E[x0 | x] = x - t v and the score -E[x0 | x] / sigma.
  // Delete these two and the base class if your path has no closed form.
  torch::Tensor velocity_to_data(const torch::Tensor& v, const torch::Tensor& x, const torch::Tensor& t) const override {
    const torch::Tensor tt = per_item(t, x);
    return (1 - c_ * tt) * v + c_ * x;
  }
  torch::Tensor velocity_to_score(const torch::Tensor& v, const torch::Tensor& x, const torch::Tensor& t) const override {
    const torch::Tensor tt = per_item(t, x);
    return (tt * v - x) / (1 - c_ * tt);
  }

 private:
  double c_;
};

}  // namespace

std::unique_ptr<flowkit::Component> make_linear(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<LinearPath>(cfg.get<double>("sigma_min"));
}

}  // namespace @NAME@_plugin
)cpp";
  return p;
}

// ---- model ------------------------------------------------------------------------------

Part model_part() {
  Part p{"model", "mlp", "make_mlp", "", "", "", ""};
  p.manifest = R"json(    {
      "kind": "model", "name": "mlp", "needs": ["domain"],
      "summary": "MLP velocity field on [x, t] (items flattened) with SiLU activations",
      "params": {
        "hidden": {"type": "integer", "default": 128, "min": 1, "doc": "width of each hidden layer"},
        "layers": {"type": "integer", "default": 3, "min": 1, "doc": "number of hidden layers"}
      }
    })json";
  p.section = R"json({"type": "@NAME@.mlp", "hidden": 128, "layers": 3})json";
  p.standard = R"json({"type": "standard.mlp", "hidden": 128, "layers": 3})json";
  p.source = R"cpp(// @NAME@.mlp — a model: the network, a function of the state x, the time t and the
// conditioning (named fields of the batch: "label", an observation, ...).
#include <flowkit/flowkit.h>  // the SDK, with LibTorch's tensors, autograd and torch::nn::Module
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include "components.h"

namespace @NAME@_plugin {
namespace {

// REPLACE: your network. Every parameter must be registered (register_module /
// register_parameter) so that the trainer, the EMA and checkpoints see it.
struct MlpNet : torch::nn::Module {
  MlpNet(int64_t inputs, int64_t outputs, int64_t hidden, int64_t layers) {
    int64_t width = inputs;
    for (int64_t i = 0; i < layers; ++i) {
      net->push_back(torch::nn::Linear(width, hidden));
      net->push_back(torch::nn::SiLU());
      width = hidden;
    }
    net->push_back(torch::nn::Linear(width, outputs));
    register_module("net", net);
  }
  torch::nn::Sequential net;
};

class Mlp final : public flowkit::Model {
 public:
  Mlp(std::vector<int64_t> item_shape, int64_t hidden, int64_t layers) : item_shape_(std::move(item_shape)) {
    int64_t size = 1;
    for (int64_t d : item_shape_) size *= d;
    net_ = std::make_shared<MlpNet>(size + 1, size, hidden, layers);
  }

  // x: [B, item_shape...], t: [B]; returns the velocity, shaped like x. `cond` holds the
  // batch's other fields; this model ignores them.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning&) override {
    const int64_t b = x.size(0);
    const torch::Tensor tt = t.to(x.options()).reshape({-1, 1}).expand({b, 1});
    return net_->net->forward(torch::cat({x.reshape({b, -1}), tt}, 1)).reshape(x.sizes());
  }
  torch::nn::Module& module() override { return *net_; }

 private:
  std::vector<int64_t> item_shape_;
  std::shared_ptr<MlpNet> net_;
};

}  // namespace

std::unique_ptr<flowkit::Component> make_mlp(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  const auto hidden = cfg.get<int64_t>("hidden");
  const auto layers = cfg.get<int64_t>("layers");
  // Components are built in the order domain, path, model, loss, solver: the domain is there.
  if (!ctx.domain || ctx.domain->item_shape().empty())
    cfg.fail("type", "@NAME@.mlp needs a domain with a fixed item shape");
  auto model = std::make_unique<Mlp>(ctx.domain->item_shape(), hidden, layers);
  model->module().to(torch::Device(ctx.device));
  return model;
}

}  // namespace @NAME@_plugin
)cpp";
  return p;
}

// ---- loss -------------------------------------------------------------------------------

Part loss_part() {
  Part p{"loss", "velocity_mse", "make_velocity_mse", "", "", "", ""};
  p.manifest = R"json(    {
      "kind": "loss", "name": "velocity_mse", "needs": ["path"],
      "summary": "regresses the model onto the path's conditional velocity dx_t at a random time t",
      "params": {
        "time_sampler": {"type": "string", "default": "uniform", "choices": ["uniform", "logit_normal"], "doc": "distribution of t: U(0, 1), or the sigmoid of a standard normal"}
      }
    })json";
  p.section = R"json({"type": "@NAME@.velocity_mse", "time_sampler": "uniform"})json";
  p.standard = R"json({"type": "standard.cfm"})json";
  p.source = R"cpp(// @NAME@.velocity_mse — a loss: the training objective of one minibatch. It draws its own
// times and path points, so any method (two times, no path at all) fits the interface.
#include <flowkit/flowkit.h>  // the SDK, with LibTorch's tensors and autograd

#include "components.h"

namespace @NAME@_plugin {
namespace {

class VelocityMse final : public flowkit::Loss {
 public:
  explicit VelocityMse(bool logit_normal) : logit_normal_(logit_normal) {}

  // REPLACE: your objective. Draw only from `gen`; return a differentiable scalar.
  flowkit::LossOutput compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                              torch::Generator& gen) override {
    if (!path) throw flowkit::Error("@NAME@.velocity_mse needs a path, but the pipeline has none");
    const torch::Tensor& x1 = batch.at("x");
    const int64_t b = x1.size(0);
    const std::vector<int64_t> item(x1.sizes().begin() + 1, x1.sizes().end());
    const torch::Tensor x0 = path->prior(b, item, gen, x1.options());
    const torch::Tensor t = logit_normal_ ? torch::sigmoid(flowkit::random::randn({b}, gen, x1.options()))
                                          : flowkit::random::rand({b}, gen, x1.options());
    const flowkit::PathSample s = path->sample(x0, x1, t);
    // The batch's other fields ("label", ...) condition the model.
    const torch::Tensor v = model.forward(s.xt, s.t, batch.without({"x"}));
    flowkit::LossOutput out;
    out.loss = (v - s.dxt).pow(2).mean();
    out.logs["velocity_mse"] = out.loss.item<double>();  // extra scalars go to metrics.jsonl
    return out;
  }

 private:
  bool logit_normal_;
};

}  // namespace

std::unique_ptr<flowkit::Component> make_velocity_mse(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<VelocityMse>(cfg.get<std::string>("time_sampler") == "logit_normal");
}

}  // namespace @NAME@_plugin
)cpp";
  return p;
}

// ---- solver -----------------------------------------------------------------------------

Part solver_part() {
  Part p{"solver", "euler", "make_euler", "", "", "", ""};
  p.manifest = R"json(    {
      "kind": "solver", "name": "euler", "needs": ["path"],
      "summary": "explicit Euler from the path's prior at t = 0 to the data at t = 1 (an ODE integrator)",
      "params": {
        "steps": {"type": "integer", "default": 20, "min": 1, "doc": "number of uniform steps (sample.steps overrides it)"}
      }
    })json";
  p.section = R"json({"type": "@NAME@.euler", "steps": 20})json";
  p.standard = R"json({"type": "standard.heun", "steps": 10})json";
  p.source = R"cpp(// @NAME@.euler — a solver: generates samples with a trained model. This one is an ODE
// integrator: flowkit::IntegratingSolver draws x0 from the path's prior and integrates the
// model's velocity over grid(steps) without autograd, so only grid() and integrate() are
// written here. A sampler that is not an integrator derives from flowkit::Solver and
// implements sample() itself.
#include <flowkit/flowkit.h>  // the SDK, with LibTorch's tensors and autograd

#include "components.h"

namespace @NAME@_plugin {
namespace {

class Euler final : public flowkit::IntegratingSolver {
 public:
  explicit Euler(int64_t steps) : steps_(steps) {}

  // The time grid for `steps` steps (0: the configured number), from t = 0 to t = 1.
  torch::Tensor grid(int64_t steps) const override {
    return torch::linspace(0.0, 1.0, (steps > 0 ? steps : steps_) + 1, torch::kFloat64);
  }

  // REPLACE: your integration scheme. Visits every time of `grid`; pure (no hidden state).
  flowkit::SolveResult integrate(const flowkit::VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                                 torch::Generator&, bool keep_intermediates) const override {
    const torch::Tensor times = grid.to(torch::kCPU, torch::kFloat64).contiguous();
    const double* t = times.data_ptr<double>();
    flowkit::SolveResult out;
    torch::Tensor x = x0;
    if (keep_intermediates) out.intermediates.push_back(x);
    for (int64_t i = 0; i + 1 < times.size(0); ++i) {
      x = x + (t[i + 1] - t[i]) * f(x, torch::scalar_tensor(t[i], x0.options()));
      ++out.nfe;
      if (keep_intermediates) out.intermediates.push_back(x);
    }
    out.x = x;
    return out;
  }

 private:
  int64_t steps_;
};

}  // namespace

std::unique_ptr<flowkit::Component> make_euler(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<Euler>(cfg.get<int64_t>("steps"));
}

}  // namespace @NAME@_plugin
)cpp";
  return p;
}

// ---- the files that depend on the selection ---------------------------------------------

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

// "a", "a and b", "a, b and c".
std::string join_words(const std::vector<std::string>& items) {
  if (items.size() < 2) return join(items, "");
  return join({items.begin(), items.end() - 1}, ", ") + " and " + items.back();
}

std::string plugin_json(const std::vector<Part>& parts) {
  std::vector<std::string> entries, kinds;
  for (const auto& p : parts) entries.push_back(p.manifest), kinds.push_back(p.kind);
  return fill(R"json({
  "schema": "flowkit.plugin/1",
  "name": "@NAME@",
  "version": "0.1.0",
  "api_version": [@API_MAJOR@, @API_MINOR@],
  "library": "lib@NAME@.so",
  "summary": "@NAME@: a plugin generated by flowkit new-plugin (@KINDS@)",
  "components": [
@COMPONENTS@
  ]
}
)json",
              {{"KINDS", join(kinds, ", ")}, {"COMPONENTS", join(entries, ",\n")}, {"API_MAJOR", std::to_string(FLOWKIT_API_MAJOR)},
               {"API_MINOR", std::to_string(FLOWKIT_API_MINOR)}});
}

std::string components_h(const std::vector<Part>& parts) {
  std::string decls;
  for (const auto& p : parts)
    decls += fmt::format("// @NAME@.{} (src/{}.cpp)\nstd::unique_ptr<flowkit::Component> {}(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);\n",
                         p.name, p.kind, p.factory);
  return fill(R"cpp(// The factories of the @NAME@ plugin's components, one per source in src/: each builds its
// component from a resolved config (every parameter plugin.json declares, defaults filled in).
#pragma once
#include <flowkit/registry.h>

#include <memory>

namespace @NAME@_plugin {

@DECLARATIONS@
}  // namespace @NAME@_plugin
)cpp",
              {{"DECLARATIONS", decls}});
}

std::string plugin_cpp(const std::vector<Part>& parts) {
  std::string adds;
  for (const auto& p : parts)
    adds += fmt::format("  registry.add(flowkit::Kind::{}, \"{}\", @NAME@_plugin::{});\n", p.kind, p.name, p.factory);
  return fill(R"cpp(// The plugin's entry point: registers each component's factory under the name plugin.json
// gives it (the host prefixes the plugin name: "@NAME@.<name>").
#include <flowkit/plugin.h>

#include "components.h"

namespace {

void register_components(flowkit::Registry& registry) {
@ADDS@}

}  // namespace

// Name and version must equal plugin.json's "name" and "version".
FLOWKIT_PLUGIN("@NAME@", "0.1.0", register_components)
)cpp",
              {{"ADDS", adds}});
}

std::string cmakelists(const std::vector<Part>& parts) {
  std::string sources;
  for (const auto& p : parts) sources += "    src/" + p.kind + ".cpp\n";
  return fill(R"cmake(# The @NAME@ flowkit plugin, built out of tree against an installed flowkit:
#   cmake -S . -B build -G Ninja -DCMAKE_PREFIX_PATH=<flowkit prefix>
#   cmake --build build && ctest --test-dir build --output-on-failure
cmake_minimum_required(VERSION 3.22)
project(@NAME@ CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release)
endif()

find_package(flowkit CONFIG REQUIRED)

# build/plugins/@NAME@/{lib@NAME@.so, plugin.json}; `cmake --install build` puts both into
# <prefix>/lib/flowkit/plugins/@NAME@/.
flowkit_add_plugin(NAME @NAME@
  SOURCES
    src/plugin.cpp
@SOURCES@  MANIFEST plugin.json)

# The SDK header, with LibTorch's tensor headers, is most of each source's compile time:
# parse it once for all of them (flowkit_add_plugin shares flowkit's own precompiled header
# only inside flowkit's tree). Sources include just the other torch headers they use:
# <torch/torch.h> (all of LibTorch) adds 10-20 s to each.
if(NOT COMMAND flowkit_use_pch)
  target_precompile_headers(@NAME@ PRIVATE <flowkit/flowkit.h>)
endif()

# ctest: the conformance suite on this plugin (interfaces, parameters read, capabilities),
# and every pipeline under examples/ validates.
enable_testing()
if(NOT FLOWKIT_EXECUTABLE)
  find_program(FLOWKIT_EXECUTABLE flowkit HINTS "${flowkit_DIR}/../../../bin" REQUIRED)
endif()
# Conformance builds the kinds this plugin lacks (a solver needs a model) from the first plugin
# on the search path whose component works with this plugin's.
add_test(NAME @NAME@_conformance
         COMMAND "${FLOWKIT_EXECUTABLE}" --plugin-path "${CMAKE_BINARY_DIR}/plugins" conformance @NAME@)
file(GLOB examples CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/examples/*.json")
foreach(example IN LISTS examples)
  get_filename_component(stem "${example}" NAME_WE)
  add_test(NAME @NAME@_validate_${stem}
           COMMAND "${FLOWKIT_EXECUTABLE}" --plugin-path "${CMAKE_BINARY_DIR}/plugins" validate "${example}")
endforeach()
)cmake",
              {{"SOURCES", sources}});
}

// A pipeline: `own` kinds from the plugin, the others from the bundled standard plugin.
std::string example_json(const std::string& name, const std::vector<Part>& all, const std::vector<std::string>& own) {
  std::vector<std::string> mine, theirs, sections;
  for (const auto& p : all) {
    const bool is_own = std::find(own.begin(), own.end(), p.kind) != own.end();
    (is_own ? mine : theirs).push_back(p.kind);
    sections.push_back(fmt::format("  \"{}\": {},", p.kind, is_own ? p.section : p.standard));
  }
  std::string description = "The @NAME@ plugin's " + join_words(mine);
  description += theirs.empty() ? "." : " with the standard plugin's " + join_words(theirs) + ".";
  return fill(R"json({
  "name": "@PIPELINE@",
  "description": "@DESCRIPTION@ `flowkit run` trains, samples and evaluates it into runs/@PIPELINE@/.",
@SECTIONS@
  "train": {"steps": 1000, "batch_size": 256, "lr": 0.003, "warmup_steps": 20, "log_every": 100},
  "sample": {"count": 1000},
  "eval": {"reference_count": 1000}
}
)json",
              {{"PIPELINE", name}, {"DESCRIPTION", description}, {"SECTIONS", join(sections, "\n")}});
}

std::string readme(const std::vector<Part>& parts, const std::vector<std::string>& examples) {
  std::string table;
  for (const auto& p : parts) table += fmt::format("| `@NAME@.{}` | {} | `src/{}.cpp` |\n", p.name, p.kind, p.kind);
  std::string runs;
  for (const auto& e : examples) runs += fmt::format("    flowkit --plugin-path build/plugins run examples/{}.json\n", e);
  return fill(R"md(# @NAME@

A flowkit plugin, generated by `flowkit new-plugin`. Each component is a small working
implementation; the comments marked `REPLACE:` show what to change to make it yours.

| type | kind | source |
|------|------|--------|
@TABLE@
Parameters are declared once, in `plugin.json` (type, default, range or choices, doc): the
host checks a pipeline against them and fills in the defaults, and each factory reads every
declared parameter with `cfg.get<T>(key)` and nothing else.

## Build

    cmake -S . -B build -G Ninja -DCMAKE_PREFIX_PATH=<flowkit prefix>
    cmake --build build

This makes `build/plugins/@NAME@/` (`lib@NAME@.so` beside a copy of `plugin.json`), which
`flowkit --plugin-path build/plugins ...` finds; `cmake --install build --prefix <flowkit prefix>`
installs it beside the bundled plugins.

## Test

    ctest --test-dir build --output-on-failure

runs `flowkit conformance @NAME@` (interfaces, parameters read, capabilities) and validates
every pipeline in `examples/`.

## Run

@RUNS@
trains, samples and evaluates into `runs/<pipeline name>/` (metrics in `eval.json`). Overrides
such as `train.steps=200` after the file change one setting.

## Extend

- A parameter: declare it in `plugin.json`, read it in the factory.
- A component: a source in `src/`, its factory in `src/components.h`, a `registry.add` in
  `src/plugin.cpp`, an entry in `plugin.json` and the source in `CMakeLists.txt`.
- `flowkit --plugin-path build/plugins describe @NAME@.<component>` shows what the host reads.
- Compile time: `<flowkit/flowkit.h>` (with LibTorch's tensors, autograd and `torch::nn::Module`)
  is precompiled once; include just the other torch headers a source uses, as
  `src/model.cpp` does. `<torch/torch.h>` works everywhere but adds 10-20 s to each source.
- Bump `version` in `plugin.json` and in `FLOWKIT_PLUGIN(...)` (`src/plugin.cpp`) together.
)md",
              {{"TABLE", table}, {"RUNS", runs}});
}

// ---- validation and writing ---------------------------------------------------------------

void check_name(const std::string& name) {
  auto lower = [](char c) { return c >= 'a' && c <= 'z'; };
  bool ok = !name.empty() && name.size() <= 64 && lower(name[0]);
  for (char c : name) ok = ok && (lower(c) || (c >= '0' && c <= '9') || c == '_');
  if (!ok)
    throw std::invalid_argument(fmt::format(
        "invalid plugin name '{}': use a lowercase letter, then lowercase letters, digits or '_' ([a-z][a-z0-9_]*, at most 64), e.g. my_flows",
        name));
  // CMake reserves these target names (policy CMP0037), and the plugin name is the target's.
  static const char* reserved[] = {"all", "clean", "help", "install", "test", "package", "package_source",
                                   "edit_cache", "rebuild_cache", "list_install_components"};
  for (const char* r : reserved)
    if (name == r) throw std::invalid_argument(fmt::format("invalid plugin name '{}': CMake reserves it as a target name", name));
}

std::vector<std::string> selected_kinds(const std::vector<std::string>& requested) {
  const auto& all = new_plugin_kinds();
  for (const auto& k : requested)
    if (std::find(all.begin(), all.end(), k) == all.end())
      throw std::invalid_argument(fmt::format("unknown kind '{}': expected one of {}", k, join(all, ", ")));
  if (requested.empty()) return all;
  std::vector<std::string> out;  // in build order, each once
  for (const auto& k : all)
    if (std::find(requested.begin(), requested.end(), k) != requested.end()) out.push_back(k);
  return out;
}

void write_file(const fs::path& file, const std::string& text) {
  std::error_code ec;
  fs::create_directories(file.parent_path(), ec);
  if (ec) throw std::runtime_error(fmt::format("cannot create folder '{}': {}", file.parent_path().string(), ec.message()));
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::runtime_error(fmt::format("cannot write '{}'", file.string()));
}

}  // namespace

const std::vector<std::string>& new_plugin_kinds() {
  static const std::vector<std::string> kinds = {"domain", "path", "model", "loss", "solver"};
  return kinds;
}

std::vector<std::string> write_new_plugin(const NewPluginRequest& request) {
  check_name(request.name);
  const std::vector<std::string> kinds = selected_kinds(request.kinds);
  const fs::path root = (fs::path(request.dir.empty() ? "." : request.dir) / request.name).lexically_normal();
  std::error_code ec;
  if (fs::exists(root, ec)) {
    if (!fs::is_directory(root, ec))
      throw PluginFolderExists(fmt::format("'{}' already exists and is not a folder", root.string()));
    if (!fs::is_empty(root, ec) && !request.force)
      throw PluginFolderExists(fmt::format("'{}' already exists and is not empty; pass --force to overwrite the files new-plugin writes there",
                                           root.string()));
  }

  const std::vector<Part> all = {domain_part(), path_part(), model_part(), loss_part(), solver_part()};
  std::vector<Part> parts;
  for (const auto& p : all)
    if (std::find(kinds.begin(), kinds.end(), p.kind) != kinds.end()) parts.push_back(p);

  // examples/<name>.json: the plugin's kinds, the standard plugin for the others. With all
  // five kinds that mixes nothing, so <name>_mixed.json adds the plugin's domain and model
  // trained and sampled by the standard path, loss and solver.
  std::vector<std::pair<std::string, std::string>> files;  // relative path, text
  std::vector<std::string> examples = {request.name};
  files.emplace_back("examples/" + request.name + ".json", example_json(request.name, all, kinds));
  if (kinds.size() == all.size()) {
    examples.push_back(request.name + "_mixed");
    files.emplace_back("examples/" + request.name + "_mixed.json", example_json(request.name + "_mixed", all, {"domain", "model"}));
  }
  files.emplace_back("plugin.json", plugin_json(parts));
  files.emplace_back("CMakeLists.txt", cmakelists(parts));
  files.emplace_back("src/components.h", components_h(parts));
  files.emplace_back("src/plugin.cpp", plugin_cpp(parts));
  for (const auto& p : parts) files.emplace_back("src/" + p.kind + ".cpp", p.source);
  files.emplace_back("README.md", readme(parts, examples));
  files.emplace_back(".gitignore", "/build/\n/runs/\n");
  std::sort(files.begin(), files.end());

  std::vector<std::string> written;
  for (const auto& [rel, text] : files) {
    const fs::path file = root / rel;
    write_file(file, fill(text, {{"NAME", request.name}}));
    written.push_back(file.string());
  }
  return written;
}

}  // namespace flowkit::host
