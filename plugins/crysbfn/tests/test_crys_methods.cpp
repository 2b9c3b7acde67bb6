// crysbfn, model side: the two flows against closed forms, CSPNet's symmetries, the samplers
// driven by an oracle network (they must reproduce the crystals exactly), bad pairings.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include "crysbfn/bfn_math.h"
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

// What every test network here shares: named crystal outputs ("coord", "lattice", and
// "type_logits" when it has a type vocabulary), no plain forward, no parameters of its own.
class TestCrystalNet : public flowkit::Model, public flowkit::NamedOutputModel, public AtomTypeHead {
 public:
  std::vector<std::string> output_names() const override {
    if (vocabulary_.empty()) return {"coord", "lattice"};
    return {"coord", "lattice", "type_logits"};
  }
  const std::vector<int64_t>& type_vocabulary() const override { return vocabulary_; }
  torch::Tensor forward(const torch::Tensor&, const torch::Tensor&, const flowkit::Conditioning&) override {
    throw flowkit::Error("a test network answers only through its named outputs");
  }
  torch::nn::Module& module() override { return module_; }

 protected:
  std::vector<int64_t> vocabulary_;
  torch::nn::Module module_;
};

// A network that knows the answer: it returns what makes each sampler land on `truth`. Like
// any crystal network it offers named outputs (and, for generation, a type head).
class Oracle : public TestCrystalNet {
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
  int calls = 0;

 private:
  flowkit::Batch truth_;
  const flowkit::Path* path_;
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

// ---- a belief-checking oracle for the BFN sampler ------------------------------------------

double wrap_angle_d(double a) { return a - 2 * M_PI * std::round(a / (2 * M_PI)); }
torch::Tensor wrap_angle_t(const torch::Tensor& a) { return torch::remainder(a + M_PI, 2 * M_PI) - M_PI; }

// Moments of the circular Bayesian-flow distribution p_F(theta_b | x) at belief index b, by our
// own Monte Carlo of its definition (notes §1.2): c e^{i(m - x)} = S = sum_{j<=b} alpha_j e^{i y_j},
// y_j ~ VM(0, alpha_j). Returned: mean and variance of the accuracy c = |S| and of
// s = c (1 - cos(m - x)) = |S| - Re S, which measures how far the belief mean sits from x in the
// units its own accuracy sets (a belief centred elsewhere makes s of order c), and the fourth
// central moment of c (the spread of a variance estimate).
struct CircularMoments {
  double c_mean = 0, c_var = 0, c_m4 = 0, s_mean = 0, s_var = 0;
  int64_t draws = 0;
};
CircularMoments circular_moments(const std::vector<double>& alpha, int64_t b, torch::Generator& g, int64_t M = 20000) {
  torch::Tensor re = torch::zeros({M}, torch::kDouble), im = torch::zeros({M}, torch::kDouble);
  for (int64_t j = 0; j < b; ++j) {
    const double a = alpha[static_cast<size_t>(j)];
    torch::Tensor y = sample_von_mises(torch::zeros({M}, torch::kDouble), torch::full({M}, a, torch::kDouble), g);
    re += a * torch::cos(y);
    im += a * torch::sin(y);
  }
  torch::Tensor c = torch::sqrt(re * re + im * im), s = c - re;
  const double c_m4 = (c - c.mean()).pow(4).mean().item<double>();
  return {c.mean().item<double>(), c.var().item<double>(), c_m4, s.mean().item<double>(), s.var().item<double>(), M};
}

// A CSP network for the BFN sampler whose answer depends on what it is shown. At its k-th call
// it expects the belief at index b_k (given by the test) and checks, from its inputs alone:
//  - time: t = b_k / N for every crystal;
//  - coordinates (periodic): the accuracy input decodes (notes §1.4) to c = 0 and a uniform
//    mean at b = 0, c = alpha_1 exactly at b = 1, c <= alpha_1 + ... + alpha_b, and the batch
//    mean and variance of c and the mean of c (1 - cos(m - x_prev)) agree (6 sigma) with p_F(theta_b | x_prev), where
//    x_prev is this oracle's previous prediction (end-back: the belief is redrawn around it);
//    (Euclidean) the accuracy input is t and mu ~ N(gamma x_prev, gamma (1 - gamma));
//  - lattice: mu_L = 0 at b = 0, else mu_L ~ N(gamma(t) L_prev, gamma (1 - gamma)), gamma = 1 - sigma1^(2t)
//    (batch mean and variance of the standardised residual, 6 sigma).
// When every check holds it predicts the true crystal; otherwise it records why and predicts a
// wrong one, so the sampled crystals stop matching when the last call fails. A sampler with a wrong belief index, accuracy, time or redraw fails.
class BeliefCheckingOracle : public TestCrystalNet {
 public:
  BeliefCheckingOracle(const flowkit::Batch& truth, const BayesianFlowOptions& o, const std::vector<double>& alpha,
                       std::vector<int64_t> indices, torch::Generator& g)
      : o_(o), alpha_(alpha), indices_(std::move(indices)) {
    x_ = truth.at("frac").to(torch::kDouble);
    l_ = truth.at("lattice").to(torch::kDouble).reshape({-1, 9}) / o_.lattice_std;
    if (o_.periodic)
      for (int64_t b : indices_)
        if (b > 0) moments_[b] = circular_moments(alpha_, b, g);
  }
  flowkit::TensorMap forward_named(const flowkit::TensorMap& inputs) override {
    const int64_t k = calls++;
    CrystalInput in = crystal_input(inputs);
    if (k >= static_cast<int64_t>(indices_.size())) {
      failures.push_back("call " + std::to_string(k) + ": more calls than the " + std::to_string(indices_.size()) + " expected");
      return answer(in, false);
    }
    const int64_t b = indices_[static_cast<size_t>(k)];
    const double N = static_cast<double>(o_.steps), t = double(b) / N;
    const size_t before = failures.size();
    auto fail = [&](const std::string& what) {
      failures.push_back("call " + std::to_string(k) + " (belief index " + std::to_string(b) + "): " + what);
    };
    const double t_err = (in.t.to(torch::kDouble) - t).abs().max().item<double>();
    if (t_err > 1e-6) fail("t = " + std::to_string(in.t[0].item<double>()) + ", not b/N = " + std::to_string(t));
    torch::Tensor frac = in.frac.to(torch::kDouble);
    if (o_.periodic) {
      const double lo = std::log(1e-7);
      torch::Tensor c = torch::exp(in.accuracy.to(torch::kDouble) * (std::log(o_.beta1) - lo) + lo) - 1e-7;
      torch::Tensor m = frac * (2 * M_PI) - M_PI;
      const double n = static_cast<double>(c.numel());
      if (b == 0) {
        if (c.abs().max().item<double>() > 1e-6) fail("prior belief with accuracy " + std::to_string(c.max().item<double>()));
        torch::Tensor d = m - (x_ * (2 * M_PI) - M_PI);
        const double r = std::hypot(torch::cos(d).mean().item<double>(), torch::sin(d).mean().item<double>());
        if (r > 0.2) fail("prior mean not uniform (resultant length " + std::to_string(r) + ")");
      } else {
        double sum_alpha = 0;
        for (int64_t j = 0; j < b; ++j) sum_alpha += alpha_[static_cast<size_t>(j)];
        const double c_max = c.max().item<double>();
        if (c_max > sum_alpha * (1 + 1e-5)) fail("accuracy " + std::to_string(c_max) + " > alpha_1 + ... + alpha_b = " + std::to_string(sum_alpha));
        if (b == 1 && (c - alpha_[0]).abs().max().item<double>() > 1e-5 * alpha_[0]) fail("accuracy at b = 1 is not alpha_1");
        const CircularMoments& mo = moments_.at(b);
        const double c_mean = c.mean().item<double>();
        const double c_tol = 6 * std::sqrt(mo.c_var / n + mo.c_var / double(mo.draws)) + 1e-6 * mo.c_mean;
        if (std::abs(c_mean - mo.c_mean) > c_tol)
          fail("mean accuracy " + std::to_string(c_mean) + ", p_F gives " + std::to_string(mo.c_mean) + " +- " + std::to_string(c_tol));
        const double c_var = c.var().item<double>();
        const double v_spread = std::max(mo.c_m4 - mo.c_var * mo.c_var, 0.0);
        const double v_tol = 6 * std::sqrt(v_spread / n + v_spread / double(mo.draws)) + 1e-9 * mo.c_mean * mo.c_mean;
        if (std::abs(c_var - mo.c_var) > v_tol)
          fail("accuracy variance " + std::to_string(c_var) + ", p_F gives " + std::to_string(mo.c_var) + " +- " + std::to_string(v_tol));
        const double s_mean = (c * (1 - torch::cos(m - x_prev_))).mean().item<double>();
        const double s_tol = 6 * std::sqrt(mo.s_var / n + mo.s_var / double(mo.draws)) + 1e-6;
        if (std::abs(s_mean - mo.s_mean) > s_tol)
          fail("belief mean off the previous prediction: mean c(1 - cos(m - x_prev)) = " + std::to_string(s_mean) +
               ", p_F gives " + std::to_string(mo.s_mean) + " +- " + std::to_string(s_tol));
      }
    } else {
      if ((in.accuracy.to(torch::kDouble) - t).abs().max().item<double>() > 1e-6) fail("Euclidean accuracy input is not t");
      check_gaussian(frac, x_prev_, t, "coordinates", fail);
    }
    check_gaussian(in.lattice.to(torch::kDouble).reshape({-1, 9}), l_prev_, t, "lattice", fail);
    return answer(in, failures.size() == before);
  }
  int calls = 0;
  std::vector<std::string> failures;

 private:
  template <class Fail>
  void check_gaussian(const torch::Tensor& mu, const torch::Tensor& prev, double t, const std::string& what, Fail&& fail) const {
    if (t == 0) {
      if (mu.abs().max().item<double>() > 0) fail(what + ": prior belief is not 0");
      return;
    }
    const double gamma = 1 - std::pow(o_.sigma1, 2 * t);
    torch::Tensor z = (mu - gamma * prev) / std::sqrt(gamma * (1 - gamma));
    const double n = static_cast<double>(z.numel()), mean = z.mean().item<double>(), var = z.var().item<double>();
    if (std::abs(mean) > 6 / std::sqrt(n) || std::abs(var - 1) > 6 * std::sqrt(2 / n))
      fail(what + ": (mu - gamma x_prev) / sqrt(gamma (1 - gamma)) has mean " + std::to_string(mean) + ", variance " +
           std::to_string(var) + " (gamma " + std::to_string(gamma) + ")");
  }
  flowkit::TensorMap answer(const CrystalInput& in, bool ok) {
    // The wrong answer is not a symmetry the matcher forgives: every other atom moves by a
    // quarter period along a, and a is stretched by 1.6 (beyond ltol after volume scaling).
    torch::Tensor x = x_, l = l_;
    if (!ok) {
      torch::Tensor shift = torch::zeros_like(x_);
      shift.index_put_({torch::indexing::Slice(0, torch::indexing::None, 2), 0}, 0.25);
      x = torch::remainder(x_ + shift, 1.0);
      l = l_.clone();
      l.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, 3)}, 1.6 * l_.index({torch::indexing::Slice(), torch::indexing::Slice(0, 3)}));
    }
    CrystalOutput out;
    torch::Tensor frac = in.frac.to(torch::kDouble);
    if (o_.periodic) {
      x_prev_ = x * (2 * M_PI) - M_PI;                                     // predicted angles
      out.coord = wrap_angle_t(x_prev_ - (frac * (2 * M_PI) - M_PI)).to(torch::kFloat);  // x_hat = m + coord
    } else {
      x_prev_ = x;
      out.coord = (x - frac).to(torch::kFloat);
    }
    l_prev_ = l;
    out.lattice = l.reshape({-1, 3, 3}).to(torch::kFloat);
    return to_named(out);
  }
  BayesianFlowOptions o_;
  std::vector<double> alpha_;
  std::vector<int64_t> indices_;
  std::map<int64_t, CircularMoments> moments_;
  torch::Tensor x_, l_, x_prev_, l_prev_;
};

// ---- a scripted model for the BFN loss -----------------------------------------------------

// A crystal network whose errors the test sets. It records the inputs it is shown and answers
// with the truth of `batch` plus chosen errors: the coordinate residual puts x_hat at x + delta
// (angles in radians; fractional units in the Euclidean ablation), the lattice head gives
// lattice / lattice_std + eps, and (with a vocabulary) the type head gives fixed logits.
class ScriptedModel : public TestCrystalNet {
 public:
  ScriptedModel(const flowkit::Batch& batch, double lattice_std, bool periodic, torch::Tensor delta, torch::Tensor eps,
                torch::Tensor logits, std::vector<int64_t> vocabulary)
      : batch_(batch), lattice_std_(lattice_std), periodic_(periodic), delta_(std::move(delta)), eps_(std::move(eps)),
        logits_(std::move(logits)) {
    vocabulary_ = std::move(vocabulary);
  }
  flowkit::TensorMap forward_named(const flowkit::TensorMap& inputs) override {
    seen = crystal_input(inputs);
    CrystalOutput out;
    torch::Tensor x = batch_.at("frac").to(torch::kDouble), frac = seen.frac.to(torch::kDouble);
    if (periodic_) out.coord = (wrap_angle_t((x - frac) * (2 * M_PI)) + delta_).to(torch::kFloat);
    else out.coord = (x - frac + delta_).to(torch::kFloat);
    out.lattice = (batch_.at("lattice").to(torch::kDouble) / lattice_std_ + eps_.reshape({-1, 3, 3})).to(torch::kFloat);
    if (!vocabulary_.empty()) out.type_logits = logits_.to(torch::kFloat);
    return to_named(out);
  }
  CrystalInput seen;

 private:
  flowkit::Batch batch_;
  double lattice_std_;
  bool periodic_;
  torch::Tensor delta_, eps_, logits_;
};

// The alpha_i column of a reference schedule table (i, alpha_i, beta_i), read here.
std::vector<double> reference_alphas(const std::string& file) {
  std::ifstream in(file);
  std::string line;
  std::vector<double> alpha;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const size_t a = line.find(','), b = line.find(',', a + 1);
    alpha.push_back(std::stod(line.substr(a + 1, b - a - 1)));
  }
  return alpha;
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

TEST(CrysLoss, BfnLossMatchesItsClosedForm) {
  // BfnLoss::compute against the formulas of notes §1.6-1.7, evaluated here from what the
  // network was shown (its t gives each crystal's step i = t N + 1) and the errors the scripted
  // model makes:
  //   coordinates (periodic): mean over atoms and xyz of N alpha_i I1(alpha_i)/I0(alpha_i) d(delta),
  //     d = the squared minimum-image angle, or 2 (1 - cos delta) with coord_distance cosine;
  //   coordinates (Euclidean): mean of N (1 - s^(2/N)) / (2 s^(2i/N)) delta^2, s = sigma1;
  //   lattice: mean over crystals and the 9 entries of N (1 - s^(2/N)) / (2 s^(2i/N)) eps^2;
  //   types: mean over atoms of K beta1_type t |e_x - softmax(logits)|^2 (continuous time);
  //   loss = cost_coord L_coord + cost_lattice L_lattice (+ cost_type L_type).
  // The alphas come from the reference table (the flow reads the same table), the Bessel
  // functions from std::cyl_bessel_i. It also checks that the network saw the belief at i - 1
  // (accuracy 0 at i = 1, exactly alpha_1 at i = 2, never above alpha_1 + ... + alpha_(i-1)).
  const std::string table = std::string(PLUGIN_SOURCE_DIR) + "/tests/data/crysbfn_schedules/linear_entropy_alphas_N10_beta1_1000.csv";
  const std::vector<double> alpha = reference_alphas(table);
  ASSERT_EQ(alpha.size(), 10u);
  struct Case {
    std::string coords, distance;
    bool types;
  };
  for (const Case& c : std::vector<Case>{{"periodic", "squared", false}, {"periodic", "cosine", true}, {"euclidean", "squared", false}}) {
    SCOPED_TRACE(c.coords + " " + c.distance + (c.types ? " with types" : ""));
    const auto flow_cfg = resolved_config("crysbfn.bfn", {{"coordinates", c.coords}, {"schedule_file", table}, {"beta1_type", 2.5}});
    BayesianFlow flow(bayesian_flow_options(flow_cfg));
    const BayesianFlowOptions& o = flow.options();
    const int64_t N = o.steps;
    const double cost_coord = 0.7, cost_lattice = 1.3, cost_type = 0.45;
    BfnLoss loss(bfn_loss_options(resolved_config(
        "crysbfn.bfn_loss", {{"cost_coord", cost_coord}, {"cost_lattice", cost_lattice}, {"cost_type", cost_type}, {"coord_distance", c.distance}})));
    auto g = at::detail::createCPUGenerator(11);
    const int64_t B = 40;
    flowkit::Batch batch = perov().train_batch(B, g);
    const int64_t A = batch.at("frac").size(0);
    // The model's errors: coordinate errors up to 4 rad (past pi, so the minimum image and the
    // cosine differ from delta^2), kept 0.05 away from the branch cut at +-pi.
    auto opts = torch::TensorOptions().dtype(torch::kDouble);
    torch::Tensor delta = (torch::rand({A, 3}, g, opts) * 2 - 1) * 4;
    delta = torch::where((delta.abs() - M_PI).abs() < 0.05, delta * 0.9, delta);
    if (c.coords == "euclidean") delta = delta * 0.05;  // fractional units
    torch::Tensor eps = torch::randn({B, 9}, g, opts) * 0.3;
    std::vector<int64_t> vocabulary;
    torch::Tensor logits;
    if (c.types) {
      for (int64_t z = 1; z <= 100; ++z) vocabulary.push_back(z);
      logits = torch::randn({A, 100}, g, opts) * 2;
    }
    ScriptedModel model(batch, o.lattice_std, o.periodic, delta, eps, logits, vocabulary);
    flowkit::LossOutput out = loss.compute(model, &flow, batch, g);

    // Each crystal's step from the time the network saw.
    const CrystalInput& seen = model.seen;
    const torch::Tensor atom_crystal = atom_batch_index(batch.at("num_atoms"));
    auto bidx = atom_crystal.accessor<int64_t, 1>();
    std::vector<int64_t> step(static_cast<size_t>(B));
    std::set<int64_t> distinct;
    for (int64_t b = 0; b < B; ++b) {
      const double tn = seen.t[b].item<double>() * N;
      step[static_cast<size_t>(b)] = std::llround(tn) + 1;
      ASSERT_NEAR(tn, std::round(tn), 1e-4) << "t is not on the grid (i - 1) / N";
      ASSERT_GE(step[static_cast<size_t>(b)], 1);
      ASSERT_LE(step[static_cast<size_t>(b)], N);
      distinct.insert(step[static_cast<size_t>(b)]);
    }
    EXPECT_GE(distinct.size(), 6u);  // the batch covers most steps
    auto gauss_w = [&](int64_t i) {
      return double(N) * (1 - std::pow(o.sigma1, 2.0 / double(N))) / (2 * std::pow(o.sigma1, 2.0 * double(i) / double(N)));
    };
    auto circ_w = [&](int64_t i) {
      const double a = alpha[static_cast<size_t>(i - 1)];
      return double(N) * a * std::cyl_bessel_i(1.0, a) / std::cyl_bessel_i(0.0, a);
    };
    // The belief the network saw is the one at i - 1.
    if (o.periodic) {
      const double lo = std::log(1e-7);
      auto acc = seen.accuracy.to(torch::kDouble);
      for (int64_t a = 0; a < A; ++a) {
        const int64_t i = step[static_cast<size_t>(bidx[a])];
        double bound = 0;
        for (int64_t j = 0; j + 1 < i; ++j) bound += alpha[static_cast<size_t>(j)];
        for (int k = 0; k < 3; ++k) {
          const double cval = std::exp(acc[a][k].item<double>() * (std::log(o.beta1) - lo) + lo) - 1e-7;
          if (i == 1) EXPECT_NEAR(cval, 0, 1e-6) << a;
          else if (i == 2) EXPECT_NEAR(cval, alpha[0], 1e-5 * alpha[0]) << a;
          else EXPECT_LE(cval, bound * (1 + 1e-5)) << a;
        }
      }
    } else {
      for (int64_t a = 0; a < A; ++a)
        EXPECT_NEAR(seen.accuracy[a][0].item<double>(), double(step[static_cast<size_t>(bidx[a])] - 1) / double(N), 1e-6);
    }
    for (int64_t b = 0; b < B; ++b)
      if (step[static_cast<size_t>(b)] == 1) EXPECT_EQ(seen.lattice[b].abs().max().item<double>(), 0.0) << "lattice belief at t = 0";

    double coord = 0, lattice = 0, types = 0;
    auto dl = delta.accessor<double, 2>();
    for (int64_t a = 0; a < A; ++a) {
      const int64_t i = step[static_cast<size_t>(bidx[a])];
      for (int k = 0; k < 3; ++k) {
        const double d = dl[a][k];
        if (!o.periodic) coord += gauss_w(i) * d * d;
        else if (c.distance == "cosine") coord += circ_w(i) * 2 * (1 - std::cos(d));
        else coord += circ_w(i) * std::pow(wrap_angle_d(d), 2);
      }
    }
    coord /= double(3 * A);
    auto el = eps.accessor<double, 2>();
    for (int64_t b = 0; b < B; ++b)
      for (int k = 0; k < 9; ++k) lattice += gauss_w(step[static_cast<size_t>(b)]) * el[b][k] * el[b][k];
    lattice /= double(9 * B);
    double expected = cost_coord * coord + cost_lattice * lattice;
    EXPECT_NEAR(out.logs.at("loss_coord"), coord, 1e-4 * coord);
    EXPECT_NEAR(out.logs.at("loss_lattice"), lattice, 1e-4 * lattice);
    if (c.types) {
      auto lg = logits.accessor<double, 2>();
      const torch::Tensor atom_types = batch.at("types").to(torch::kLong);
      auto z = atom_types.accessor<int64_t, 1>();
      const double K = 100;
      for (int64_t a = 0; a < A; ++a) {
        const double t = double(step[static_cast<size_t>(bidx[a])] - 1) / double(N);
        double mx = -1e300, norm = 0, sq = 0;
        for (int k = 0; k < 100; ++k) mx = std::max(mx, lg[a][k]);
        for (int k = 0; k < 100; ++k) norm += std::exp(lg[a][k] - mx);
        for (int k = 0; k < 100; ++k) {
          const double p = std::exp(lg[a][k] - mx) / norm, e = (z[a] == k + 1) ? 1.0 : 0.0;
          sq += (e - p) * (e - p);
        }
        types += K * o.beta1_type * t * sq;
      }
      types /= double(A);
      EXPECT_NEAR(out.logs.at("loss_type"), types, 1e-4 * types);
      expected += cost_type * types;
      // At t = 0 the type belief is the uniform distribution.
      for (int64_t a = 0; a < A; ++a)
        if (step[static_cast<size_t>(bidx[a])] == 1)
          EXPECT_LT((seen.type_probs[a] - 0.01).abs().max().item<double>(), 1e-6) << a;
    } else {
      EXPECT_EQ(out.logs.count("loss_type"), 0u);
    }
    std::printf("[crys] BFN loss %s %s%s: coord %.6g lattice %.6g type %.6g total %.6g (closed form %.6g)\n", c.coords.c_str(),
                c.distance.c_str(), c.types ? " +types" : "", coord, lattice, types, out.loss.item<double>(), expected);
    EXPECT_NEAR(out.loss.item<double>(), expected, 1e-4 * expected);
  }
}

TEST(CrysSampler, BayesianFlowWithAnOracleReproducesTheCrystals) {
  // The k-th network call must see the belief at b_k = round(k N / n) (t = b_k / N), written out
  // here; the oracle (BeliefCheckingOracle) checks each belief against the Bayesian-flow
  // distribution around its previous prediction and answers with the truth only when it holds.
  struct Case {
    std::string coords;
    int64_t n_flow, steps;
    std::vector<int64_t> indices;
  };
  const std::vector<Case> cases{{"periodic", 10, 0, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
                                {"periodic", 10, 4, {0, 3, 5, 8}},  // round(2.5) = 3, round(7.5) = 8
                                {"periodic", 50, 10, {0, 5, 10, 15, 20, 25, 30, 35, 40, 45}},
                                {"euclidean", 10, 0, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.coords + " N=" + std::to_string(c.n_flow) + " steps=" + std::to_string(c.steps));
    BayesianFlow flow(bayesian_flow_options(resolved_config("crysbfn.bfn", {{"steps", c.n_flow}, {"coordinates", c.coords}})));
    BfnSampler sampler(0);
    auto g = at::detail::createCPUGenerator(4);
    const int64_t n = 60;
    flowkit::Batch truth = perov().reference(n, g);
    BeliefCheckingOracle oracle(truth, flow.options(), flow.schedule().alpha, c.indices, g);
    flowkit::SampleRequest req;
    req.n = n;
    req.cond = perov().sample_conditions(0, n, g);
    req.steps = c.steps;
    req.options = torch::TensorOptions().dtype(torch::kFloat);
    flowkit::SolveResult r = sampler.sample(oracle, &flow, req, g);
    flowkit::Batch out = req.cond;
    out.set("x", r.x);
    for (const auto& [name, value] : r.fields) out.set(name, value);
    nlohmann::json metrics = perov().evaluate(out, truth, {"match_rate", "rmse", "struct_validity"}, g);
    std::printf("[crys] oracle %s N=%lld steps=%zu: %s, %zu failed checks\n", c.coords.c_str(),
                static_cast<long long>(c.n_flow), c.indices.size(), metrics.dump().c_str(), oracle.failures.size());
    std::string failed;
    for (size_t i = 0; i < std::min<size_t>(oracle.failures.size(), 6); ++i) failed += "\n  " + oracle.failures[i];
    EXPECT_TRUE(oracle.failures.empty()) << oracle.failures.size() << " failed checks:" << failed;
    EXPECT_EQ(r.nfe, static_cast<int64_t>(c.indices.size()));
    EXPECT_EQ(oracle.calls, static_cast<int>(c.indices.size()));
    EXPECT_DOUBLE_EQ(metrics.at("match_rate").get<double>(), 1.0);
    const nlohmann::json& rmse = metrics.at("rmse");  // null when nothing matched
    EXPECT_TRUE(rmse.is_number() && rmse.get<double>() < 1e-4) << rmse.dump();
  }
}

TEST(CrysSampler, DiffusionWithAnOracleReproducesTheCrystals) {
  WrappedDiffusion diff(diffusion_options(resolved_config("crysbfn.diffusion")));
  for (auto [steps, corrector] : std::vector<std::pair<int64_t, bool>>{{10, false}, {200, false}, {50, true}}) {
    DiffusionSampler sampler(1000, corrector, 5e-7, false, true);
    if (steps == 10) {  // the deterministic (PF-ODE + DDIM) variant lands on the crystals too
      DiffusionSampler ddim(1000, false, 5e-7, true, true);
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
  expect_error([&] { DiffusionSampler(10, false, 5e-7, false, true).sample(oracle, &flow, req, g); }, "path type crysbfn.diffusion");
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
