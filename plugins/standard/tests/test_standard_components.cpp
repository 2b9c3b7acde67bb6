// Component-level checks of the `standard` plugin: the manifest matches what the code
// registers and reads, the domains, writers, model, loss and samplers.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "flowkit/capabilities/ode_integrator.h"
#include "flowkit/error.h"
#include "flowkit/io.h"
#include "standard/affine_path.h"
#include "standard/cfm_loss.h"
#include "standard/domains.h"
#include "standard/mlp.h"
#include "standard/ode_solvers.h"
#include "standard/register.h"
#include "standard/util.h"
#include "test_util.h"

using namespace standard;
namespace fs = std::filesystem;

namespace {

torch::Generator make_gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }
const std::string kDigitsFile = std::string(PLUGIN_SOURCE_DIR) + "/data/digits.csv.gz";

// A component's config as the host resolves it: `j` plus the manifest's defaults.
flowkit::Config cfg(const std::string& type, nlohmann::json j = nlohmann::json::object()) { return resolved_config(type, j); }

struct Recording : flowkit::Registry {
  std::map<std::string, std::pair<flowkit::Kind, flowkit::Factory>> entries;
  void add(flowkit::Kind kind, const std::string& name, flowkit::Factory f) override {
    entries[std::string(flowkit::kind_name(kind)) + "/" + name] = {kind, std::move(f)};
  }
};

nlohmann::json manifest() {
  std::ifstream in(std::string(PLUGIN_SOURCE_DIR) + "/plugin.json");
  return nlohmann::json::parse(in);
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("flowkit_standard_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

// ---- manifest -----------------------------------------------------------------------------

TEST(StandardManifest, RegisteredComponentsAndParametersMatchManifest) {
  nlohmann::json m = manifest();
  EXPECT_EQ(m.at("name"), "standard");
  EXPECT_EQ(m.at("version"), "0.1.0");
  Recording reg;
  register_components(reg);
  std::set<std::string> listed;
  for (const auto& c : m.at("components")) listed.insert(c.at("kind").get<std::string>() + "/" + c.at("name").get<std::string>());
  std::set<std::string> registered;
  for (const auto& [k, v] : reg.entries) registered.insert(k);
  EXPECT_EQ(listed, registered);

  // That every factory reads exactly the keys its manifest declares is checked for every
  // plugin by the conformance suite (flowkit conformance).
}

TEST(StandardManifest, ConfigErrorsNameTheKey) {
  flowkit::BuildContext ctx;
  // Choices and ranges are the manifest's, checked by validation before a factory runs.
  try {
    cfg("standard.affine", {{"scheduler", "linear"}});
    FAIL() << "expected a validation error";
  } catch (const flowkit::Error& e) {
    EXPECT_THAT_MSG(e.what(), "/c/scheduler");
  }
  EXPECT_THROW(cfg("standard.euler", {{"steps", 0}}), flowkit::Error);
  EXPECT_THROW(make_mlp(cfg("standard.mlp"), ctx), flowkit::ConfigError);  // no domain
  EXPECT_THROW(make_cfm(cfg("standard.cfm"), ctx), flowkit::ConfigError);  // no path
  EXPECT_THROW(make_rk4(cfg("standard.rk4", {{"time_grid", {0.0, 0.5, 0.5, 1.0}}}), ctx), flowkit::ConfigError);
  EXPECT_THROW(make_digits(cfg("standard.digits", {{"file", "/nonexistent/digits.csv.gz"}}), ctx), flowkit::ConfigError);
  auto toy = make_toy2d(cfg("standard.toy2d"), ctx);
  ctx.domain = dynamic_cast<flowkit::Domain*>(toy.get());
  EXPECT_THROW(make_mlp(cfg("standard.mlp", {{"class_conditional", true}}), ctx), flowkit::ConfigError);  // unlabelled
  auto solver = make_rk4(cfg("standard.rk4", {{"time_grid", {0.0, 0.3, 1.0}}}), ctx);
  EXPECT_EQ(dynamic_cast<flowkit::OdeIntegrator&>(*solver).grid(0).size(0), 3);
}

// ---- domains ------------------------------------------------------------------------------

TEST(StandardDomains, Toy2dSamplersAreSeededAndBounded) {
  for (const std::string& name : toy2d_datasets()) {
    SCOPED_TRACE(name);
    auto g1 = make_gen(42), g2 = make_gen(42), g3 = make_gen(43);
    torch::Tensor a = sample_toy2d(name, 1000, g1), b = sample_toy2d(name, 1000, g2), c = sample_toy2d(name, 1000, g3);
    EXPECT_EQ(a.sizes(), torch::IntArrayRef({1000, 2}));
    EXPECT_EQ(a.scalar_type(), torch::kFloat);
    EXPECT_TRUE(torch::equal(a, b));
    EXPECT_FALSE(torch::equal(a, c));
    EXPECT_TRUE(torch::isfinite(a).all().item<bool>());
    EXPECT_LT(a.abs().max().item<float>(), 5.0f);
    EXPECT_GT(a.std(0).min().item<float>(), 0.3f);
  }
  // checkerboard: every point on a black square: floor(x/2) + floor(y/2) even.
  auto g = make_gen(1);
  torch::Tensor cb = sample_toy2d("checkerboard", 2000, g);
  torch::Tensor parity = torch::remainder(torch::floor(cb.select(1, 0) / 2) + torch::floor(cb.select(1, 1) / 2), 2);
  EXPECT_EQ(parity.max().item<float>(), 0.0f);
}

TEST(StandardDomains, Toy2dEvaluate) {
  flowkit::BuildContext ctx;
  auto comp = make_toy2d(cfg("standard.toy2d", {{"dataset", "8gaussians"}}), ctx);
  auto& d = dynamic_cast<flowkit::Domain&>(*comp);
  auto gen = make_gen(3);
  flowkit::Batch ref = d.reference(1000, gen), gen_good = d.train_batch(1000, gen);
  flowkit::Batch bad;
  bad.set("x", torch::randn({1000, 2}, gen) * 0.3);
  auto names = d.metric_names();
  nlohmann::json good = d.evaluate(gen_good, ref, names, gen), poor = d.evaluate(bad, ref, names, gen);
  for (const auto& n : {"energy_distance", "mmd_rbf", "sliced_w2"}) EXPECT_LT(good.at(n).get<double>(), poor.at(n).get<double>()) << n;
  EXPECT_DOUBLE_EQ(good.at("mode_coverage").get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(poor.at("mode_coverage").get<double>(), 0.0);
  EXPECT_THROW(d.evaluate(gen_good, ref, {"fid"}, gen), flowkit::Error);
  auto moons = make_toy2d(cfg("standard.toy2d", {{"dataset", "moons"}}), ctx);
  EXPECT_EQ(dynamic_cast<flowkit::Domain&>(*moons).metric_names().size(), 3u);
}

TEST(StandardDomains, DigitsLoaderAndSplit) {
  DigitsData data = load_digits_csv_gz(kDigitsFile);
  ASSERT_EQ(data.pixels.sizes(), torch::IntArrayRef({1797, 64}));
  EXPECT_EQ(data.pixels.min().item<int64_t>(), 0);
  EXPECT_EQ(data.pixels.max().item<int64_t>(), 16);
  EXPECT_EQ(data.labels.min().item<int64_t>(), 0);
  EXPECT_EQ(data.labels.max().item<int64_t>(), 9);
  EXPECT_EQ(std::get<0>(torch::_unique(data.labels)).size(0), 10);
  EXPECT_EQ(data.pixels[0][2].item<int64_t>(), 5);  // first row: 0,0,5,13,...,0 label 0
  EXPECT_EQ(data.labels[0].item<int64_t>(), 0);

  DigitsDomain d(kDigitsFile, 16, "cpu", "");
  EXPECT_EQ(d.train_size(), 1500);
  EXPECT_EQ(d.test_size(), 297);
  auto gen = make_gen(4);
  flowkit::Batch b = d.train_batch(256, gen);
  EXPECT_EQ(b.at("x").sizes(), torch::IntArrayRef({256, 64}));
  EXPECT_GE(b.at("x").min().item<float>(), -1.0f);
  EXPECT_LE(b.at("x").max().item<float>(), 1.0f);
  EXPECT_EQ(b.at("label").scalar_type(), torch::kLong);
  flowkit::Batch ref = d.reference(1000, gen);
  EXPECT_EQ(ref.at("x").size(0), 297);
  EXPECT_EQ(std::get<0>(torch::_unique(ref.at("x").matmul(torch::randn({64, 1}, gen)).squeeze(1))).size(0), 297);
  flowkit::Conditioning c = d.sample_conditions(0, 500, gen);
  EXPECT_EQ(c.at("label").min().item<int64_t>(), 0);
  EXPECT_EQ(c.at("label").max().item<int64_t>(), 9);
  nlohmann::json m = d.evaluate(b, ref, d.metric_names(), gen);
  EXPECT_EQ(m.size(), 9u);
  // The default location is data/ beside the library holding the code.
  EXPECT_TRUE(fs::exists(std::string(FLOWKIT_BINARY_DIR) + "/plugins/standard/data/digits.csv.gz"));
  EXPECT_TRUE(fs::exists(std::string(FLOWKIT_BINARY_DIR) + "/plugins/standard/data/digits_classifier.pt"));
}

// The frozen FD-digits classifier, the Frechet distance and the memorization check.
TEST(StandardDomains, DigitsClassifierMetrics) {
  const std::string dir = fs::path(kDigitsFile).parent_path().string();
  DigitsClassifier c = load_digits_classifier(dir + "/digits_classifier.pt");
  DigitsData data = load_digits_csv_gz(kDigitsFile);
  torch::Tensor x = data.pixels.to(torch::kFloat) / 8 - 1;
  const int64_t split = 1797 - kDigitsTestRows;
  torch::Tensor test_x = x.slice(0, split), test_y = data.labels.slice(0, split);
  const double acc = (c.logits(test_x).argmax(1) == test_y).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(acc, 0.94) << "held-out accuracy of the frozen classifier";
  EXPECT_EQ(c.features(test_x).sizes(), torch::IntArrayRef({297, 128}));

  DigitsDomain d(kDigitsFile, 16, "cpu", "");
  auto gen = make_gen(6);
  flowkit::Batch ref = d.reference(297, gen);
  flowkit::Batch train = d.train_batch(1000, gen);
  flowkit::Batch noise;
  noise.set("x", torch::rand({1000, 64}, gen) * 2 - 1);
  flowkit::Batch one_class;
  one_class.set("x", x.index_select(0, torch::nonzero(data.labels.slice(0, 0, split) == 3).squeeze(1)));
  auto metrics = std::vector<std::string>{"fd_digits", "class_entropy", "classifier_confidence", "nn_train_distance"};
  nlohmann::json real = d.evaluate(train, ref, metrics, gen);
  nlohmann::json bad = d.evaluate(noise, ref, metrics, gen);
  nlohmann::json mono = d.evaluate(one_class, ref, metrics, gen);
  std::printf("FD-digits: train vs held-out %.3f, uniform noise %.3f, only 3s %.3f\n", real["fd_digits"].get<double>(),
              bad["fd_digits"].get<double>(), mono["fd_digits"].get<double>());
  EXPECT_LT(real["fd_digits"].get<double>() * 10, bad["fd_digits"].get<double>());
  EXPECT_LT(real["fd_digits"].get<double>() * 3, mono["fd_digits"].get<double>());
  EXPECT_GT(real["class_entropy"].get<double>(), 2.25);
  EXPECT_LT(mono["class_entropy"].get<double>(), 0.3);
  EXPECT_EQ(real["nn_train_distance"].get<double>(), 0.0);  // training items are their own neighbours
  EXPECT_GT(bad["nn_train_distance"].get<double>(), 3.0);
  EXPECT_GT(real["classifier_confidence"].get<double>(), 0.9);
  // Far-out samples are clamped to the pixel range and counted.
  flowkit::Batch far;
  far.set("x", torch::cat({train.at("x").slice(0, 0, 90), train.at("x").slice(0, 90, 100) * 1e6}));
  nlohmann::json f = d.evaluate(far, ref, {"fd_digits", "outlier_share"}, gen);
  EXPECT_NEAR(f["outlier_share"].get<double>(), 0.1, 1e-12);
  EXPECT_LT(f["fd_digits"].get<double>(), 100.0);
  // label_accuracy: the held-out digits asked for their own labels score the classifier's
  // accuracy; asked for the next class, nothing; samples without labels are an error.
  flowkit::Batch own = ref;
  nlohmann::json right = d.evaluate(own, ref, {"label_accuracy"}, gen);
  EXPECT_NEAR(right["label_accuracy"].get<double>(), acc, 1e-12);
  own.set("label", (ref.at("label") + 1) % 10);
  EXPECT_LT(d.evaluate(own, ref, {"label_accuracy"}, gen)["label_accuracy"].get<double>(), 0.05);
  EXPECT_THROW(d.evaluate(noise, ref, {"label_accuracy"}, gen), flowkit::Error);
}

TEST(StandardDomains, WritersRoundTrip) {
  fs::path dir = temp_dir("writers");
  auto gen = make_gen(5);
  Toy2dDomain toy("spirals", 8, "cpu");
  flowkit::Batch s = toy.train_batch(300, gen);
  auto paths = toy.write(s, dir.string(), "toy");
  ASSERT_EQ(paths.size(), 2u);
  std::vector<int64_t> shape;
  std::vector<float> back = flowkit::io::read_npy(paths[0], &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{300, 2}));
  EXPECT_TRUE(torch::equal(torch::from_blob(back.data(), {300, 2}, torch::kFloat), s.at("x")));
  int w = 0, h = 0;
  flowkit::io::read_png_size(paths[1], &w, &h);
  EXPECT_EQ(w, 512);
  EXPECT_EQ(h, 512);

  DigitsDomain digits(kDigitsFile, 8, "cpu", "");
  flowkit::Batch b = digits.train_batch(100, gen);
  paths = digits.write(b, dir.string(), "digits");
  back = flowkit::io::read_npy(paths[0], &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{100, 64}));
  EXPECT_TRUE(torch::equal(torch::from_blob(back.data(), {100, 64}, torch::kFloat), b.at("x")));
  flowkit::io::read_png_size(paths[1], &w, &h);
  EXPECT_EQ(w, 10 * (32 + 2) + 2);
  EXPECT_EQ(h, 10 * (32 + 2) + 2);
  fs::remove_all(dir);
}

// ---- model, loss, sampling ----------------------------------------------------------------

TEST(StandardModel, MlpShapesAndClassConditioning) {
  DigitsDomain digits(kDigitsFile, 8, "cpu", "");
  flowkit::BuildContext ctx;
  ctx.domain = &digits;
  auto comp = make_mlp(cfg("standard.mlp", {{"hidden", 32}, {"layers", 2}, {"class_conditional", true}}), ctx);
  auto& model = dynamic_cast<MLPModel&>(*comp);
  torch::manual_seed(0);
  torch::Tensor x = torch::randn({5, 64}), t = torch::rand({5});
  flowkit::Conditioning c0, c1;
  c0.set("label", torch::zeros({5}, torch::kLong));
  c1.set("label", torch::ones({5}, torch::kLong));
  torch::Tensor y0 = model.forward(x, t, c0), y1 = model.forward(x, t, c1), yn = model.forward(x, t, {});
  EXPECT_EQ(y0.sizes(), x.sizes());
  EXPECT_FALSE(torch::allclose(y0, y1));
  flowkit::Conditioning cnull;
  cnull.set("label", torch::full({5}, 10, torch::kLong));
  EXPECT_TRUE(torch::allclose(yn, model.forward(x, t, cnull)));
  // 0-dim time broadcasts like a [B] time of equal values.
  EXPECT_TRUE(torch::allclose(model.forward(x, torch::scalar_tensor(0.3), c0), model.forward(x, torch::full({5}, 0.3), c0)));
  // Parameter count: time 64*32+32 + 32*32+32, input 64*32+32, hidden 32*32+32, output 32*64+64, labels 11*32.
  int64_t count = 0;
  for (const auto& p : model.module().parameters()) count += p.numel();
  EXPECT_EQ(count, (64 * 32 + 32) + (32 * 32 + 32) + (64 * 32 + 32) + (32 * 32 + 32) + (32 * 64 + 64) + 11 * 32);
}

TEST(StandardLoss, CfmTrainsAnMlpOnToyData) {
  torch::manual_seed(0);
  flowkit::BuildContext ctx;
  auto dom = make_toy2d(cfg("standard.toy2d", {{"dataset", "8gaussians"}}), ctx);
  auto& domain = dynamic_cast<flowkit::Domain&>(*dom);
  ctx.domain = &domain;
  auto pth = make_affine_path(cfg("standard.affine"), ctx);
  ctx.path = dynamic_cast<const flowkit::Path*>(pth.get());
  auto mdl = make_mlp(cfg("standard.mlp", {{"hidden", 64}, {"layers", 2}}), ctx);
  auto& model = dynamic_cast<flowkit::Model&>(*mdl);
  auto lss = make_cfm(cfg("standard.cfm", {{"time_sampler", "logit_normal"}}), ctx);
  auto& loss = dynamic_cast<flowkit::Loss&>(*lss);
  torch::optim::Adam opt(model.module().parameters(), torch::optim::AdamOptions(3e-3));
  auto gen = make_gen(10);
  auto avg = [&](int steps, bool train) {
    double total = 0;
    for (int i = 0; i < steps; ++i) {
      flowkit::LossOutput out = loss.compute(model, ctx.path, domain.train_batch(256, gen), gen);
      EXPECT_TRUE(out.logs.count("loss"));
      if (train) {
        opt.zero_grad();
        out.loss.backward();
        opt.step();
      }
      total += out.logs.at("loss");
    }
    return total / steps;
  };
  double before = avg(20, false);
  avg(400, true);
  double after = avg(20, false);
  EXPECT_LT(after, 0.8 * before);
  EXPECT_THROW(loss.compute(model, nullptr, domain.train_batch(4, gen), gen), flowkit::Error);

  // Sampling through the solver interface: the trained flow covers most modes.
  model.module().eval();
  flowkit::SampleRequest req;
  req.n = 2000;
  req.item_shape = {2};
  req.options = torch::TensorOptions().dtype(torch::kFloat);
  auto rk4 = make_rk4(cfg("standard.rk4", {{"steps", 20}}), ctx);
  flowkit::SolveResult r = dynamic_cast<flowkit::Solver&>(*rk4).sample(model, ctx.path, req, gen);
  EXPECT_EQ(r.nfe, 80);
  flowkit::Batch samples;
  samples.set("x", r.x);
  nlohmann::json m = domain.evaluate(samples, domain.reference(2000, gen), {"mode_coverage", "mode_precision"}, gen);
  EXPECT_GE(m.at("mode_coverage").get<double>(), 0.75) << m.dump();
}

namespace {
// The exact marginal velocity of the CondOT path for data N(mu, c^2 I) (see the math tests).
class GaussianVelocity : public flowkit::Model {
 public:
  GaussianVelocity(torch::Tensor mu, double c) : mu_(std::move(mu)), c_(c) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning&) override {
    torch::Tensor a = t.to(x.scalar_type()).reshape({-1, 1}), s = 1 - a;
    torch::Tensor V = a * a * c_ * c_ + s * s, r = x - a * mu_;
    return (mu_ + a * c_ * c_ * r / V) - s * r / V;
  }
  torch::nn::Module& module() override { return module_; }

 private:
  torch::Tensor mu_;
  double c_;
  torch::nn::Module module_;
};
}  // namespace

TEST(StandardSolvers, SamplersReachTheGaussianData) {
  torch::Tensor mu = torch::tensor({{2.0, -1.0}}, torch::kDouble);
  const double c = 0.5;
  GaussianVelocity model(mu, c);
  AffinePath path(make_scheduler(scheduler_options(cfg("standard.affine", {{"scheduler", "condot"}}))));
  flowkit::SampleRequest req;
  req.n = 20000;
  req.item_shape = {2};
  req.options = torch::TensorOptions().dtype(torch::kDouble);
  GridOptions g = read_grid_options(cfg("standard.euler_maruyama", {{"steps", 200}}));
  for (double diffusion : {0.0, 1.0}) {
    SCOPED_TRACE(diffusion);
    auto gen = make_gen(12);
    EulerMaruyamaSolver em(diffusion, g);
    flowkit::SolveResult r = em.sample(model, &path, req, gen);
    EXPECT_EQ(r.nfe, 200);
    EXPECT_LT((r.x.mean(0) - mu.squeeze(0)).abs().max().item<double>(), 0.03);
    EXPECT_LT((r.x.std(0) - c).abs().max().item<double>(), 0.03);
  }
  auto gen = make_gen(13);
  // 50 output intervals (the grid the test was tuned with), not dopri5's default 1.
  Dopri5Solver dopri({1e-6, 1e-6, 10000}, read_grid_options(cfg("standard.dopri5", {{"steps", 50}})));
  flowkit::SolveResult r = dopri.sample(model, &path, req, gen);
  EXPECT_LT((r.x.mean(0) - mu.squeeze(0)).abs().max().item<double>(), 0.03);
  EXPECT_LT((r.x.std(0) - c).abs().max().item<double>(), 0.02);
}
