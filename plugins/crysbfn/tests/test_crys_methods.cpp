// crysbfn, model side: the two flows against closed forms, CSPNet's symmetries, the samplers
// driven by an oracle network (they must reproduce the crystals exactly), bad pairings.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "crysbfn/cspnet.h"
#include "crysbfn/domain.h"
#include "crysbfn/losses_samplers.h"
#include "crysbfn/paths.h"
#include "flowkit/capability.h"
#include "flowkit/error.h"
#include "test_util.h"

using namespace crysbfn;

namespace {

const std::string kPerovDir = std::string(PLUGIN_SOURCE_DIR) + "/data/perov_5/";

CrystalDomain& perov() {
  static CrystalDomain* d = [] {
    auto cfg = resolved_config("crysbfn.crystal", {{"train_file", kPerovDir + "val.csv.gz"}, {"reference_file", kPerovDir + "test.csv.gz"}});
    return new CrystalDomain(crystal_domain_options(cfg, flowkit::BuildContext{}), "cpu");
  }();
  return *d;
}

torch::Tensor wrap_frac(const torch::Tensor& d) { return torch::remainder(d + 0.5, 1.0) - 0.5; }

// A network that knows the answer: it returns what makes each sampler land on `truth`. Like
// any crystal network it offers named outputs (and, for generation, a type head).
class Oracle : public flowkit::Model, public flowkit::NamedOutputModel, public AtomTypeHead {
 public:
  Oracle(const flowkit::Batch& truth, const flowkit::Path* path, bool type_distribution = false)
      : truth_(truth), path_(path) {
    if (type_distribution)
      for (int64_t z = 1; z <= 100; ++z) vocabulary_.push_back(z);
  }
  flowkit::TensorMap forward_named(const flowkit::TensorMap& inputs) override {
    ++calls;
    CrystalInput in = crystal_input(inputs);
    CrystalOutput out;
    torch::Tensor x = truth_.at("frac"), L = truth_.at("lattice");
    if (auto* bfn = flowkit::capability<BayesianFlowSchedule>(path_)) {
      // BFN: x_hat = m + coord must be the truth; the lattice head gives the normalised lattice.
      out.coord = bfn->options().periodic ? wrap_frac(x - in.frac) * (2 * M_PI) : x - in.frac;
      out.lattice = L / bfn->options().lattice_std;
    } else {
      auto& diff = *flowkit::capability<DiffusionSchedule>(path_);
      const int64_t T = diff.options().steps;
      const int64_t s = std::llround(in.t[0].item<double>() * T);
      const double sigma = diff.sigma()[s].item<double>(), abar = diff.alpha_bar()[s].item<double>();
      // The exact conditional score of the noised coordinates and the exact lattice noise.
      out.coord = WrappedDiffusion::wrapped_normal_score(wrap_frac(in.frac - x).to(torch::kDouble),
                                                         torch::full({x.size(0), 3}, sigma, torch::kDouble))
                      .to(torch::kFloat) /
                  std::sqrt(diff.sigma_norm()[s].item<double>());
      out.lattice = (in.lattice - std::sqrt(abar) * L) / std::sqrt(1 - abar);
    }
    if (!vocabulary_.empty()) {  // a confident type head on the true types
      torch::Tensor vocab = torch::tensor(vocabulary_, torch::kLong);
      out.type_logits = 30 * (truth_.at("types").unsqueeze(1) == vocab.unsqueeze(0)).to(torch::kFloat);
    }
    return to_named(out);
  }
  std::vector<std::string> output_names() const override {
    if (vocabulary_.empty()) return {"coord", "lattice"};
    return {"coord", "lattice", "type_logits"};
  }
  const std::vector<int64_t>& type_vocabulary() const override { return vocabulary_; }
  torch::Tensor forward(const torch::Tensor&, const torch::Tensor&, const flowkit::Conditioning&) override {
    throw flowkit::Error("the oracle answers only through its named outputs");
  }
  torch::nn::Module& module() override { return module_; }
  int calls = 0;

 private:
  flowkit::Batch truth_;
  const flowkit::Path* path_;
  std::vector<int64_t> vocabulary_;
  torch::nn::Module module_;
};

// A wrapper that adds nothing (as a steering or logging wrapper from another plugin would):
// the samplers and losses must find the crystal network's capabilities through it.
class PassThrough : public flowkit::Model {
 public:
  explicit PassThrough(flowkit::Model& inner) : inner_(inner) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& c) override {
    return inner_.forward(x, t, c);
  }
  torch::nn::Module& module() override { return inner_.module(); }
  flowkit::Component* capability_delegate() override { return &inner_; }

 private:
  flowkit::Model& inner_;
};

struct SampleRun {
  nlohmann::json metrics;
  int64_t nfe = 0;
  int calls = 0;
};

// Samples n test compositions with `solver` behind an oracle and evaluates against the truth.
SampleRun oracle_run(const flowkit::Path& path, const flowkit::Solver& solver, int64_t steps, int64_t n = 60) {
  auto g = at::detail::createCPUGenerator(4);
  flowkit::Batch truth = perov().reference(n, g);
  Oracle oracle(truth, &path);
  flowkit::SampleRequest req;
  req.n = n;
  req.cond = perov().sample_conditions(0, n, g);
  req.steps = steps;
  req.options = torch::TensorOptions().dtype(torch::kFloat);
  flowkit::SolveResult r = solver.sample(oracle, &path, req, g);
  flowkit::Batch out = req.cond;
  out.set("x", r.x);
  for (const auto& [name, value] : r.fields) out.set(name, value);
  SampleRun run;
  run.metrics = perov().evaluate(out, truth, {"match_rate", "rmse", "struct_validity"}, g);
  run.nfe = r.nfe;
  run.calls = oracle.calls;
  return run;
}

}  // namespace

TEST(CrysFlows, GaussianBayesianFlowMomentsAndWeights) {
  const BayesianFlowOptions o = bayesian_flow_options(resolved_config("crysbfn.bfn"));
  BayesianFlow flow(o);
  auto g = at::detail::createCPUGenerator(1);
  const int64_t n = 200000;
  torch::Tensor x = torch::full({n, 1}, 1.5, torch::kDouble);
  torch::Tensor t = torch::full({n}, 0.4, torch::kDouble);
  torch::Tensor mu = flow.gaussian_flow(x, t, g);
  const double gamma = 1 - std::pow(o.sigma1, 0.8);
  EXPECT_NEAR(mu.mean().item<double>(), gamma * 1.5, 4 * std::sqrt(gamma * (1 - gamma) / n));
  EXPECT_NEAR(mu.var().item<double>(), gamma * (1 - gamma), 0.01 * gamma * (1 - gamma));
  // The code's loss weights: N alpha_i I1/I0(alpha_i) and N (1 - s^(2/N)) / (2 s^(2i/N)).
  for (int64_t i : {1, 5, 10}) {
    const double a = flow.schedule().alpha[static_cast<size_t>(i - 1)];
    EXPECT_NEAR(flow.circular_weight(torch::tensor({i}))[0].item<double>(), 10 * a * mean_resultant_length(a), 1e-9 * a);
    EXPECT_NEAR(flow.gaussian_weight(torch::tensor({i}))[0].item<double>(),
                10 * (1 - std::pow(o.sigma1, 0.2)) / (2 * std::pow(o.sigma1, 2.0 * i / 10)), 1e-9);
  }
  // At the last step the schedule reaches beta1 and the lattice flow's gamma is 1 - sigma1^2.
  EXPECT_NEAR(flow.schedule().beta.back(), 1000, 1e-9);
  EXPECT_NEAR(flow.gamma(torch::tensor({1.0}, torch::kDouble))[0].item<double>(), 1 - o.sigma1 * o.sigma1, 1e-12);
}

TEST(CrysFlows, WrappedNormalScoreAndNormalisation) {
  // Score = derivative of log sum_k N(x + k; 0, sigma^2), checked by central differences.
  for (double sigma : {0.01, 0.1, 0.3, 0.5}) {
    auto x = torch::linspace(-0.49, 0.49, 41, torch::kDouble) * std::min(1.0, 6 * sigma);
    auto logp = [&](const torch::Tensor& y) {
      torch::Tensor k = torch::arange(-10, 11, torch::kDouble);
      return torch::logsumexp(-(y.unsqueeze(1) + k).pow(2) / (2 * sigma * sigma), 1);
    };
    const double h = 1e-6 * sigma;
    auto fd = (logp(x + h) - logp(x - h)) / (2 * h);
    auto s = WrappedDiffusion::wrapped_normal_score(x, torch::full_like(x, sigma));
    EXPECT_LT((fd - s).abs().max().item<double>(), 1e-5 / (sigma * sigma)) << sigma;
  }
  // E[score^2]: 1/sigma^2 for small sigma; Monte Carlo (200k wrapped draws) for sigma = 0.5.
  WrappedDiffusion diff(diffusion_options(resolved_config("crysbfn.diffusion")));
  EXPECT_NEAR(diff.sigma_norm()[1].item<double>() * 0.005 * 0.005, 1.0, 1e-12);
  auto g = at::detail::createCPUGenerator(2);
  torch::Tensor y = torch::remainder(torch::randn({200000}, g, torch::kDouble) * 0.5 + 0.5, 1.0) - 0.5;
  const double mc = WrappedDiffusion::wrapped_normal_score(y, torch::full_like(y, 0.5)).pow(2).mean().item<double>();
  const double quad = diff.sigma_norm()[1000].item<double>();
  std::printf("[crys] E[score^2] at sigma=0.5: quadrature %.5f, Monte Carlo %.5f (1/sigma^2 = 4)\n", quad, mc);
  EXPECT_NEAR(quad / mc, 1.0, 0.02);
  EXPECT_LT(quad, 4.0);  // wrapping flattens the density
  // Cosine DDPM: alpha_bar decreasing from 1 to ~0.
  EXPECT_DOUBLE_EQ(diff.alpha_bar()[0].item<double>(), 1.0);
  EXPECT_TRUE((diff.alpha_bar().diff() < 0).all().item<bool>());
  EXPECT_LT(diff.alpha_bar()[1000].item<double>(), 1e-4);
}

TEST(CrysNet, PeriodicE3InvarianceAndEquivariance) {
  torch::manual_seed(0);
  const CspNetOptions o = cspnet_options(
      resolved_config("crysbfn.cspnet", {{"hidden", 32}, {"layers", 2}, {"num_freqs", 8}, {"time_dim", 16}}), {});
  CspNet net(o);
  auto g = at::detail::createCPUGenerator(5);
  flowkit::Batch b = perov().reference(6, g);
  CrystalInput in;
  in.frac = b.at("frac");
  in.types = b.at("types");
  in.lattice = b.at("lattice");
  in.batch = atom_batch_index(b.at("num_atoms"));
  in.num_atoms = b.at("num_atoms");
  in.t = torch::rand({6});
  in.accuracy = torch::rand({30, 3});
  CrystalOutput ref = net->forward(in);
  // Translation of every atom of a crystal by one vector (mod 1): coordinate output unchanged.
  CrystalInput moved = in;
  moved.frac = torch::remainder(in.frac + torch::tensor({0.31f, -0.17f, 0.5f}), 1.0);
  EXPECT_LT((net->forward(moved).coord - ref.coord).abs().max().item<double>(), 1e-4);
  // Rotation of the Cartesian frame, L -> L R^T: output lattice rotates with it.
  torch::Tensor q = std::get<0>(torch::linalg::qr(torch::randn({3, 3}, g, torch::kDouble))).to(torch::kFloat);
  CrystalInput rotated = in;
  rotated.lattice = torch::matmul(in.lattice, q.t());
  CrystalOutput r = net->forward(rotated);
  EXPECT_LT((r.coord - ref.coord).abs().max().item<double>(), 1e-4);
  EXPECT_LT((r.lattice - torch::matmul(ref.lattice, q.t())).abs().max().item<double>(), 1e-3);
  // Permutation of the atoms inside each crystal: outputs permute the same way.
  torch::Tensor perm = torch::arange(30).reshape({6, 5}).flip(1).reshape({-1});
  CrystalInput permuted = in;
  permuted.frac = in.frac.index_select(0, perm);
  permuted.types = in.types.index_select(0, perm);
  permuted.accuracy = in.accuracy.index_select(0, perm);
  EXPECT_LT((net->forward(permuted).coord - ref.coord.index_select(0, perm)).abs().max().item<double>(), 1e-4);
  // The lattice enters only through L L^T, so a change of it changes the output.
  CrystalInput stretched = in;
  stretched.lattice = in.lattice * 1.3;
  EXPECT_GT((net->forward(stretched).coord - ref.coord).abs().max().item<double>(), 1e-4);
}

TEST(CrysNet, NamedOutputsAndTheGenericForwardAgree) {
  torch::manual_seed(0);
  const CspNetOptions o = cspnet_options(
      resolved_config("crysbfn.cspnet", {{"hidden", 16}, {"layers", 1}, {"num_freqs", 4}, {"time_dim", 8}}), {});
  CrystalModel model(o, "cpu");
  auto g = at::detail::createCPUGenerator(5);
  flowkit::Batch b = perov().reference(4, g);
  flowkit::TensorMap in;
  in.set("t", torch::rand({4}, g));
  in.set("lattice", b.at("lattice"));
  in.set("frac", b.at("frac"));
  in.set("types", b.at("types"));
  in.set("num_atoms", b.at("num_atoms"));
  flowkit::TensorMap out = model.forward_named(in);
  EXPECT_EQ(out.names(), (std::vector<std::string>{"coord", "lattice"}));
  std::vector<std::string> names = model.output_names();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(out.names(), names);
  EXPECT_EQ(out.at("coord").sizes(), b.at("frac").sizes());
  // Generic contract: x = lattice parameters, the rest in cond; returns the lattice head's parameters.
  flowkit::Conditioning cond;
  for (const char* name : {"frac", "types", "num_atoms"}) cond.set(name, b.at(name));
  torch::Tensor x = lattice_to_parameters(b.at("lattice"));
  torch::Tensor y = model.forward(x, in.at("t"), cond);
  EXPECT_LT((y - lattice_to_parameters(out.at("lattice"))).abs().max().item<double>(), 1e-3);
  // A missing field is named.
  in.erase("num_atoms");
  try {
    model.forward_named(in);
    ADD_FAILURE() << "expected an error";
  } catch (const flowkit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_atoms"), std::string::npos) << e.what();
  }
}

TEST(CrysSampler, BayesianFlowWithAnOracleReproducesTheCrystals) {
  for (const auto& [coords, n_flow, steps] : std::vector<std::tuple<std::string, int64_t, int64_t>>{
           {"periodic", 10, 0}, {"periodic", 50, 10}, {"euclidean", 10, 0}}) {
    BayesianFlow flow(bayesian_flow_options(resolved_config("crysbfn.bfn", {{"steps", n_flow}, {"coordinates", coords}})));
    BfnSampler sampler(0);
    SampleRun run = oracle_run(flow, sampler, steps);
    const int64_t expected = steps > 0 ? steps : n_flow;
    std::printf("[crys] oracle %s N=%lld steps=%lld: %s\n", coords.c_str(), static_cast<long long>(n_flow),
                static_cast<long long>(expected), run.metrics.dump().c_str());
    EXPECT_EQ(run.nfe, expected);
    EXPECT_EQ(run.calls, expected);
    EXPECT_DOUBLE_EQ(run.metrics.at("match_rate").get<double>(), 1.0);
    EXPECT_LT(run.metrics.at("rmse").get<double>(), 1e-4);
  }
}

TEST(CrysSampler, DiffusionWithAnOracleReproducesTheCrystals) {
  WrappedDiffusion diff(diffusion_options(resolved_config("crysbfn.diffusion")));
  for (auto [steps, corrector] : std::vector<std::pair<int64_t, bool>>{{10, false}, {200, false}, {50, true}}) {
    DiffusionSampler sampler(1000, corrector, 5e-7, false);
    if (steps == 10) {  // the deterministic (PF-ODE + DDIM) variant lands on the crystals too
      DiffusionSampler ddim(1000, false, 5e-7, true);
      SampleRun d = oracle_run(diff, ddim, steps);
      EXPECT_DOUBLE_EQ(d.metrics.at("match_rate").get<double>(), 1.0);
      EXPECT_LT(d.metrics.at("rmse").get<double>(), 1e-3);
    }
    SampleRun run = oracle_run(diff, sampler, steps);
    std::printf("[crys] oracle diffusion steps=%lld corrector=%d: %s\n", static_cast<long long>(steps), int(corrector),
                run.metrics.dump().c_str());
    EXPECT_EQ(run.nfe, corrector ? 2 * steps : steps);
    EXPECT_DOUBLE_EQ(run.metrics.at("match_rate").get<double>(), 1.0);
    EXPECT_LT(run.metrics.at("rmse").get<double>(), 1e-3);
  }
}

TEST(CrysSampler, GenerationDrawsTypesAndCountsAndWrongPairingsAreClearErrors) {
  auto g = at::detail::createCPUGenerator(6);
  BayesianFlow flow(bayesian_flow_options(resolved_config("crysbfn.bfn")));
  flowkit::Batch truth = perov().reference(20, g);
  Oracle oracle(truth, &flow, /*type_distribution=*/true);
  flowkit::SampleRequest req;
  req.n = 20;
  req.cond.set("num_atoms", truth.at("num_atoms"));  // generation: counts only
  req.options = torch::TensorOptions().dtype(torch::kFloat);
  BfnSampler sampler(0);
  flowkit::SolveResult r = sampler.sample(oracle, &flow, req, g);
  EXPECT_TRUE(torch::equal(r.fields.at("types"), truth.at("types")));  // the confident type head wins
  EXPECT_EQ(r.fields.at("frac").size(0), truth.at("frac").size(0));
  // The same through a wrapper that delegates capabilities.
  PassThrough wrapped(oracle);
  EXPECT_TRUE(torch::equal(sampler.sample(wrapped, &flow, req, g).fields.at("types"), truth.at("types")));

  // Wrong pairings name what is needed.
  WrappedDiffusion diff(diffusion_options(resolved_config("crysbfn.diffusion")));
  auto expect_error = [&](auto&& f, const std::string& text) {
    try {
      f();
      ADD_FAILURE() << "no error; expected: " << text;
    } catch (const flowkit::Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  req.cond = perov().sample_conditions(0, 20, g);
  expect_error([&] { sampler.sample(oracle, &diff, req, g); }, "path type crysbfn.bfn");
  expect_error([&] { DiffusionSampler(10, false, 5e-7, false).sample(oracle, &flow, req, g); }, "path type crysbfn.diffusion");
  req.steps = 11;
  expect_error([&] { sampler.sample(oracle, &flow, req, g); }, "at most N");
  BfnLoss loss(bfn_loss_options(resolved_config("crysbfn.bfn_loss")));
  auto batch = perov().train_batch(4, g);
  expect_error([&] { loss.compute(oracle, nullptr, batch, g); }, "path type crysbfn.bfn");
  // A model without named crystal outputs (here: a wrapper that does not delegate).
  struct Opaque : PassThrough {
    using PassThrough::PassThrough;
    flowkit::Component* capability_delegate() override { return nullptr; }
  } opaque(oracle);
  expect_error([&] { loss.compute(opaque, &flow, batch, g); }, "a model with named crystal outputs");
}

TEST(CrysTraining, ShortCspRunBeatsTheUntrainedModel) {
  // A small CrysBFN (N = 10, CSPNet 64 x 3) trained for a few hundred Adam steps on val,
  // evaluated on the first 200 test compositions with the 10-call end-back sampler.
  torch::manual_seed(0);
  BayesianFlow flow(bayesian_flow_options(resolved_config("crysbfn.bfn")));
  CrystalModel model(cspnet_options(resolved_config("crysbfn.cspnet", {{"hidden", 64}, {"layers", 3}, {"num_freqs", 16}, {"time_dim", 32}}), {}),
                     "cpu");
  BfnSampler sampler(0);
  auto evaluate = [&] {
    torch::NoGradGuard ng;
    auto g = at::detail::createCPUGenerator(9);
    flowkit::SampleRequest req;
    req.n = 200;
    req.cond = perov().sample_conditions(0, 200, g);
    req.options = torch::TensorOptions().dtype(torch::kFloat);
    flowkit::SolveResult r = sampler.sample(model, &flow, req, g);
    flowkit::Batch out = req.cond;
    for (const auto& [name, value] : r.fields) out.set(name, value);
    return perov().evaluate(out, perov().reference(200, g), {"match_rate", "rmse", "lattice_length_error", "struct_validity"}, g);
  };
  nlohmann::json before = evaluate();
  torch::optim::Adam opt(model.module().parameters(), torch::optim::AdamOptions(2e-3));
  BfnLoss loss(bfn_loss_options(resolved_config("crysbfn.bfn_loss")));
  auto g = at::detail::createCPUGenerator(0);
  double first = 0, last = 0;
  const int steps = 700;
  for (int s = 0; s < steps; ++s) {
    flowkit::LossOutput out = loss.compute(model, &flow, perov().train_batch(64, g), g);
    opt.zero_grad();
    out.loss.backward();
    opt.step();
    if (s < 50) first += out.loss.item<double>() / 50;
    if (s >= steps - 50) last += out.loss.item<double>() / 50;
  }
  nlohmann::json after = evaluate();
  std::printf("[crys] CSP training %d steps: loss %.2f -> %.2f; untrained %s; trained %s\n", steps, first, last,
              before.dump().c_str(), after.dump().c_str());
  EXPECT_LT(last, 0.5 * first);
  EXPECT_LT(after.at("lattice_length_error").get<double>(), 0.5 * before.at("lattice_length_error").get<double>());
  EXPECT_GE(after.at("match_rate").get<double>(), before.at("match_rate").get<double>() + 0.015);
  EXPECT_GT(after.at("struct_validity").get<double>(), before.at("struct_validity").get<double>() + 0.1);
}
