// Conformance: every component of every kind found on the plugin path, loaded through the
// real plugin host, must honour its interface's contract (ggml-style: one test per
// interface that each implementation passes). New plugins get these checks for free.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "flowkit/core/pipeline.h"
#include "flowkit/core/plugin_host.h"
#include "flowkit/flowkit.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace flowkit;
using namespace flowkit::core;

namespace {
PluginHost& host() {
  static PluginHost* h = new PluginHost(build_tree_only());
  return *h;
}

std::vector<const ComponentSpec*> all_of(Kind kind, const std::string& plugin = "") {
  std::vector<const ComponentSpec*> out;
  for (const auto& m : host().plugins())
    for (const auto& c : m.components)
      if (c.kind == kind && (plugin.empty() || m.name == plugin)) out.push_back(&c);
  return out;
}

std::vector<std::string> plugin_names() {
  std::vector<std::string> out;
  for (const auto& m : host().plugins()) out.push_back(m.name);
  return out;
}

// The component's config with every default filled in, plus `overrides`.
Config defaults(const ComponentSpec& spec, nlohmann::json overrides = nlohmann::json::object()) {
  std::vector<Problem> problems;
  nlohmann::json doc = {{"type", spec.type()}};
  for (const auto& [k, v] : overrides.items())
    if (spec.param(k)) doc[k] = v;
  auto resolved = check_params(spec.params, doc, "conformance.json", "/" + spec.name, problems, {"type"}, &host());
  EXPECT_TRUE(problems.empty()) << spec.type() << ": " << (problems.empty() ? "" : problems[0].str());
  return Config(resolved, "conformance.json", "/" + spec.name);
}

template <class I>
std::unique_ptr<I> make(Kind kind, const Config& cfg, const BuildContext& ctx) {
  auto c = host().create(kind, cfg, ctx);
  auto* p = dynamic_cast<I*>(c.get());
  EXPECT_NE(p, nullptr) << cfg.get<std::string>("type") << " does not implement its interface";
  c.release();
  return std::unique_ptr<I>(p);
}

// The context a plugin's components are checked in: the plugin's own first domain, path
// and model where it has them (its components may rely on them), else standard.toy2d,
// standard.affine and a small standard.mlp.
struct Base {
  std::unique_ptr<Domain> domain;
  std::unique_ptr<Path> path;
  std::vector<std::unique_ptr<Path>> other_paths;  // every path of the plugin
  std::unique_ptr<Model> model;
  BuildContext ctx;
  // The paths a loss or solver of the plugin may be paired with.
  std::vector<const Path*> paths() const {
    std::vector<const Path*> out{path.get()};
    for (const auto& p : other_paths) out.push_back(p.get());
    return out;
  }
  explicit Base(const std::string& plugin) {
    ctx.build = [this](Kind k, const Config& c) { return host().create(k, c, ctx); };
    auto pick = [&](Kind kind, const char* fallback) {
      auto own = all_of(kind, plugin);
      return own.empty() ? *host().find(fallback) : own.front();
    };
    domain = make<Domain>(Kind::domain, defaults(*pick(Kind::domain, "standard.toy2d")), ctx);
    ctx.domain = domain.get();
    path = make<Path>(Kind::path, defaults(*pick(Kind::path, "standard.affine")), ctx);
    ctx.path = path.get();
    for (const auto* spec : all_of(Kind::path, plugin)) other_paths.push_back(make<Path>(Kind::path, defaults(*spec), ctx));
    model = make<Model>(Kind::model, defaults(*pick(Kind::model, "standard.mlp"), {{"hidden", 16}, {"layers", 1}}), ctx);
    ctx.model = model.get();
  }
};

// A training batch of the base domain split into the primary field and its conditioning.
std::pair<torch::Tensor, Conditioning> data(const Base& base, int64_t n, torch::Generator& gen) {
  Batch batch = base.domain->train_batch(n, gen);
  Conditioning cond;
  for (const auto& name : batch.names())
    if (name != "x") cond.set(name, batch.at(name));
  return {batch.at("x"), cond};
}
}  // namespace

TEST(Conformance, EveryKindHasImplementations) {
  for (Kind k : {Kind::domain, Kind::path, Kind::model, Kind::loss, Kind::solver}) EXPECT_FALSE(all_of(k).empty()) << kind_name(k);
}

TEST(Conformance, Solvers) {
  for (const auto& plugin : plugin_names()) {
    if (all_of(Kind::solver, plugin).empty()) continue;
    Base base(plugin);
    for (const auto* spec : all_of(Kind::solver, plugin)) {
      SCOPED_TRACE(spec->type());
      // Stochastic solvers are checked on their deterministic limit where they have one.
      auto solver = make<Solver>(Kind::solver, defaults(*spec, {{"diffusion", 0.0}, {"steps", 40}}), base.ctx);
      torch::Tensor grid = solver->grid(0).to(torch::kDouble);
      ASSERT_EQ(grid.dim(), 1);
      ASSERT_GE(grid.size(0), 2);
      auto steps = grid.diff();
      EXPECT_TRUE((steps > 0).all().item<bool>() || (steps < 0).all().item<bool>()) << "grid not monotone";
      // dx/dt = -x / (t_end - t_start) takes x(t_start) = 1 to exp(-1), whatever the grid's span.
      const double span = (grid[-1] - grid[0]).item<double>();
      auto x0 = torch::ones({5, 2}, torch::kDouble);
      VectorField decay = [span](const torch::Tensor& x, const torch::Tensor&) { return -x / span; };
      auto g1 = at::detail::createCPUGenerator(7), g2 = at::detail::createCPUGenerator(7);
      SolveResult a = solver->integrate(decay, x0, grid, g1, true);
      SolveResult b = solver->integrate(decay, x0, grid, g2);
      EXPECT_TRUE(a.x.sizes().equals(x0.sizes()));
      EXPECT_GT(a.nfe, 0);
      EXPECT_TRUE(torch::equal(a.x, b.x)) << "not a pure function of its inputs and generator";
      EXPECT_EQ(a.intermediates.size(), static_cast<size_t>(grid.size(0)));
      EXPECT_LT((a.x - std::exp(-1.0)).abs().max().item<double>(), 0.02);
      // Sampling with a model returns the requested number of finite samples, with one of the
      // plugin's paths; with the others it fails with a flowkit::Error, not a crash.
      int worked = 0;
      for (const Path* path : base.paths()) {
        auto g3 = at::detail::createCPUGenerator(1);
        SampleRequest req;
        req.n = 8;
        req.item_shape = base.domain->item_shape();
        req.cond = base.domain->sample_conditions(0, 8, g3);
        req.steps = 4;
        req.options = torch::TensorOptions().dtype(torch::kFloat32);
        try {
          auto s = solver->sample(*base.model, path, req, g3);
          EXPECT_EQ(s.x.size(0), 8);
          EXPECT_TRUE(torch::isfinite(s.x).all().item<bool>());
          for (const auto& [name, value] : s.fields)
            if (value.is_floating_point()) EXPECT_TRUE(torch::isfinite(value).all().item<bool>()) << name;
          ++worked;
        } catch (const Error&) {
        }
      }
      EXPECT_GE(worked, 1) << "no path of the plugin lets the solver sample";
    }
  }
}

TEST(Conformance, Paths) {
  Base base("standard");
  for (const auto* spec : all_of(Kind::path)) {
    SCOPED_TRACE(spec->type());
    auto path = make<Path>(Kind::path, defaults(*spec), base.ctx);
    auto g = at::detail::createCPUGenerator(3), g2 = at::detail::createCPUGenerator(3);
    auto opts = torch::TensorOptions().dtype(torch::kDouble);
    auto x0 = path->prior(6, {3}, g, opts);
    EXPECT_TRUE(x0.sizes().equals({6, 3}));
    EXPECT_TRUE(torch::equal(x0, path->prior(6, {3}, g2, opts))) << "prior not deterministic for a seed";
    auto x1 = torch::randn({6, 3}, opts);
    auto t = torch::linspace(0.2, 0.8, 6, opts);
    PathSample s = path->sample(x0, x1, t);
    EXPECT_TRUE(s.xt.sizes().equals(x0.sizes()));
    const double h = 1e-6;
    auto fd = (path->sample(x0, x1, t + h).xt - path->sample(x0, x1, t - h).xt) / (2 * h);
    EXPECT_LT((fd - s.dxt).abs().max().item<double>(), 1e-5) << "dxt is not the time derivative of xt";
  }
}

TEST(Conformance, Domains) {
  Base base("standard");
  for (const auto* spec : all_of(Kind::domain)) {
    SCOPED_TRACE(spec->type());
    auto domain = make<Domain>(Kind::domain, defaults(*spec), base.ctx);
    auto g = at::detail::createCPUGenerator(5), g2 = at::detail::createCPUGenerator(5);
    Batch batch = domain->train_batch(16, g);
    (void)domain->train_batch(16, g2);
    auto shape = domain->item_shape();
    std::vector<int64_t> expected = {16};
    expected.insert(expected.end(), shape.begin(), shape.end());
    EXPECT_TRUE(batch.at("x").sizes().equals(expected));
    Batch r1 = domain->reference(64, g), r2 = domain->reference(64, g2);
    EXPECT_TRUE(torch::equal(r1.at("x"), r2.at("x"))) << "reference not deterministic for a seed";
    auto metrics = domain->metric_names();
    ASSERT_FALSE(metrics.empty());
    auto ge = at::detail::createCPUGenerator(9);
    auto result = domain->evaluate(domain->reference(64, g), r1, metrics, ge);
    for (const auto& m : metrics) {
      ASSERT_TRUE(result.contains(m)) << m;
      EXPECT_TRUE(std::isfinite(result.at(m).get<double>())) << m;
    }
    TempDir tmp;
    for (const auto& f : domain->write(r1, tmp.path().string(), "s")) EXPECT_TRUE(fs::exists(f)) << f;
  }
}

TEST(Conformance, ModelsAndLosses) {
  for (const auto& plugin : plugin_names()) {
    if (all_of(Kind::model, plugin).empty() && all_of(Kind::loss, plugin).empty()) continue;
    Base base(plugin);
    for (const auto* spec : all_of(Kind::model, plugin)) {
      SCOPED_TRACE(spec->type());
      auto model = make<Model>(Kind::model, defaults(*spec), base.ctx);
      auto g = at::detail::createCPUGenerator(2);
      auto [x, cond] = data(base, 4, g);
      auto y = model->forward(x, torch::rand({4}), cond);
      EXPECT_TRUE(y.sizes().equals(x.sizes()));
      y.pow(2).sum().backward();
      size_t with_grad = 0;
      for (const auto& p : model->module().parameters()) with_grad += p.grad().defined();
      EXPECT_GT(with_grad, 0u);
    }
    for (const auto* spec : all_of(Kind::loss, plugin)) {
      SCOPED_TRACE(spec->type());
      auto loss = make<Loss>(Kind::loss, defaults(*spec), base.ctx);
      int worked = 0;
      for (const Path* path : base.paths()) {
        auto g = at::detail::createCPUGenerator(11);
        base.model->module().zero_grad();
        LossOutput out;
        try {
          out = loss->compute(*base.model, path, base.domain->train_batch(32, g), g);
        } catch (const Error&) {
          continue;  // a path this loss does not work with: a clear error is the contract
        }
        ++worked;
        EXPECT_EQ(out.loss.dim(), 0);
        EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
        out.loss.backward();
        size_t with_grad = 0;
        for (const auto& p : base.model->module().parameters()) with_grad += p.grad().defined();
        EXPECT_GT(with_grad, 0u);
      }
      EXPECT_GE(worked, 1) << "no path of the plugin lets the loss compute";
    }
  }
}

// The SDK's shared Euler integrator (what one-step and Bayesian-update samplers use for the
// generic `integrate()`): dx/dt = x on a 4-step grid is (1 + h)^4 forwards, (1 - h)^4 backwards.
TEST(SdkHelpers, EulerIntegrateMatchesTheClosedForm) {
  const VectorField f = [](const torch::Tensor& x, const torch::Tensor&) { return x; };
  const torch::Tensor x0 = torch::full({3}, 2.0, torch::kDouble);
  SolveResult fwd = euler_integrate(f, x0, torch::linspace(0, 1, 5, torch::kDouble), true);
  EXPECT_EQ(fwd.nfe, 4);
  ASSERT_EQ(fwd.intermediates.size(), 5u);
  EXPECT_NEAR(fwd.x[0].item<double>(), 2.0 * std::pow(1.25, 4), 1e-12);
  EXPECT_NEAR(fwd.intermediates[2][1].item<double>(), 2.0 * 1.25 * 1.25, 1e-12);
  SolveResult bwd = euler_integrate(f, x0, torch::linspace(1, 0, 5, torch::kDouble));
  EXPECT_NEAR(bwd.x[2].item<double>(), 2.0 * std::pow(0.75, 4), 1e-12);
  EXPECT_TRUE(bwd.intermediates.empty());
  EXPECT_THROW(euler_integrate(f, x0, torch::zeros({2, 2}, torch::kDouble)), Error);
}
