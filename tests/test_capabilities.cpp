// SDK 3.0 capabilities end to end with two test plugins: fk_flows (tests/plugins/flows), a
// normalizing flow with no path, and fk_steer (tests/plugins/steer), a wrapper around another
// plugin's model. The flow trains by exact likelihood through the wrapper from `flowkit run`,
// `eval` reports bits/dim, capabilities pass through the wrapper, and the flow's
// log-determinant equals an autograd Jacobian's.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>

#include "flowkit/core/pipeline.h"
#include "flowkit/core/plugin_host.h"
#include "flowkit/core/session.h"
#include "flowkit/flowkit.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace flowkit;

namespace {
const std::string kFlows = std::string(FLOWKIT_BINARY_DIR) + "/test_plugins/flows";
const std::string kSteer = std::string(FLOWKIT_BINARY_DIR) + "/test_plugins/steer";
const std::string kPaths = " --plugin-path " + kFlows + " --plugin-path " + kSteer;
const std::string kFlowkit = std::string(FLOWKIT_BINARY_DIR) + "/bin/flowkit";

int run(const std::string& cmd, std::string* out) {
  out->clear();
  return run_command(cmd, out);
}

core::PluginHost& flows_host() {
  static core::PluginHost* h = [] {
    core::SearchOptions o;
    o.plugin_paths = {kFlows, kSteer};
    o.use_environment = false;
    o.use_default_dirs = false;
    return new core::PluginHost(o);
  }();
  return *h;
}

std::unique_ptr<Component> build(Kind kind, const nlohmann::json& doc, BuildContext& ctx) {
  auto spec = flows_host().find(doc.at("type").get<std::string>());
  EXPECT_TRUE(bool(spec));
  std::vector<core::Problem> problems;
  auto resolved = core::check_params((*spec)->params, doc, "t.json", "/m", problems, {"type"}, &flows_host());
  EXPECT_TRUE(problems.empty());
  return flows_host().create(kind, Config(resolved, "t.json", "/m"), ctx);
}
}  // namespace

TEST(Capabilities, FlowWithoutPathTrainsByLikelihoodAndEvalReportsBitsPerDim) {
  TempDir tmp;
  std::string out;
  const std::string pipeline = std::string(FLOWKIT_SOURCE_DIR) + "/tests/plugins/flows/pipeline.json";
  ASSERT_EQ(run("cd " + tmp.path().string() + " && " + kFlowkit + " -q" + kPaths + " run " + pipeline, &out), 0) << out;
  std::ifstream in(tmp.path() / "runs/flow_nll/eval.json");
  nlohmann::json eval = nlohmann::json::parse(in);
  ASSERT_TRUE(eval.contains("nll_bits_per_dim")) << eval.dump();
  const double floor = eval.at("entropy_bits_per_dim").get<double>();
  const double rho = 0.8;  // closed form: (ln(2 pi e) + ln(1 - rho^2) / 2) / (2 ln 2)
  EXPECT_NEAR(floor, (std::log(2 * M_PI * M_E) + 0.5 * std::log(1 - rho * rho)) / (2 * std::log(2.0)), 1e-12);
  // The trained flow's exact NLL on held-out data approaches the entropy (never far below it).
  EXPECT_GT(eval.at("nll_bits_per_dim").get<double>(), floor - 0.05);
  EXPECT_LT(eval.at("nll_bits_per_dim").get<double>(), floor + 0.08);
  // Its samples (through the inverse) have the data's correlation.
  EXPECT_NEAR(eval.at("correlation").get<double>(), rho, 0.05);
}

TEST(Capabilities, ConformanceRunsOnAThirdPartyPluginFromTheCommandLine) {
  std::string out;
  EXPECT_EQ(run(kFlowkit + kPaths + " conformance fk_flows fk_steer", &out), 0) << out;
  EXPECT_THAT_MSG(out, "PASS fk_flows.coupling: capability invertible");
  EXPECT_THAT_MSG(out, "PASS fk_steer.steered: capability invertible");  // through the wrapper
  EXPECT_THAT_MSG(out, "0 failed");
}

TEST(Capabilities, WrapperPassesItsInnerModelsCapabilitiesAndLogDetIsTheJacobians) {
  BuildContext ctx;
  ctx.build = [&ctx](Kind k, const Config& c) { return flows_host().create(k, c, ctx); };
  auto wrapper = build(Kind::model, {{"type", "fk_steer.steered"}, {"net", {{"type", "fk_flows.coupling"}, {"hidden", 8}}}}, ctx);
  auto* flow = capability<InvertibleModel>(*wrapper);
  ASSERT_NE(flow, nullptr);
  EXPECT_EQ(capability_names(*wrapper), std::vector<std::string>{"invertible"});
  // Perturb the weights so the flow is far from the identity.
  {
    torch::NoGradGuard ng;
    for (auto& p : dynamic_cast<Model&>(*wrapper).module().parameters()) p.normal_(0, 0.7);
  }
  torch::Tensor x = torch::randn({5, 2});
  LatentAndLogDet f = flow->to_latent(x, {});
  for (int64_t i = 0; i < 5; ++i) {
    torch::Tensor xi = x[i].detach().clone().requires_grad_(true);
    torch::Tensor zi = flow->to_latent(xi.unsqueeze(0), {}).z.squeeze(0);
    torch::Tensor J = torch::zeros({2, 2});
    for (int64_t r = 0; r < 2; ++r) J[r] = torch::autograd::grad({zi[r]}, {xi}, {}, true)[0];
    EXPECT_NEAR(f.log_det[i].item<double>(), std::log(std::abs(torch::det(J).item<double>())), 1e-4);
  }
  EXPECT_LT((flow->from_latent(f.z, {}) - x).abs().max().item<double>(), 1e-5);
  // The wrapper steers: its forward is the inner model's plus the offset.
  auto shifted = build(Kind::model, {{"type", "fk_steer.steered"}, {"offset", 0.5}, {"net", {{"type", "fk_flows.coupling"}}}}, ctx);
  auto& m = dynamic_cast<Model&>(*shifted);
  auto* inner = capability<InvertibleModel>(m);
  EXPECT_LT((m.forward(x, torch::zeros({5}), {}) - (inner->to_latent(x, {}).z + 0.5)).abs().max().item<double>(), 1e-6);
}

// The wrapper steers another plugin's velocity model inside a pipeline: with the one-step
// sampler x1 = x0 + v(x0), an offset c on the wrapped model's output moves every sample by c.
TEST(Capabilities, WrapperSteersAnotherPluginsVelocityModelInAPipeline) {
  TempDir tmp;
  auto eval_with = [&](double offset) {
    nlohmann::json doc = {{"name", "steer"},
                          {"domain", {{"type", "fk_flows.gauss2d"}}},
                          {"path", {{"type", "fk_flows.linear"}}},
                          {"model", {{"type", "fk_steer.steered"}, {"offset", offset}, {"net", {{"type", "fk_flows.coupling"}}}}},
                          {"loss", {{"type", "fk_flows.velocity_mse"}}},
                          {"solver", {{"type", "fk_flows.one_step"}}},
                          {"train", {{"steps", 0}}},
                          {"sample", {{"count", 400}}}};
    auto v = core::validate_pipeline(doc, "steer.json", flows_host());
    EXPECT_TRUE(v.ok()) << v.report();
    core::RunOptions o;
    o.runs_root = tmp.path().string();
    o.run_name = "offset_" + std::to_string(offset);
    core::Session s(v.pipeline, flows_host(), o);  // same seed: same network, same prior draws
    return s.evaluate();
  };
  nlohmann::json plain = eval_with(0.0), steered = eval_with(0.5);
  EXPECT_NEAR(steered.at("mean_x").get<double>() - plain.at("mean_x").get<double>(), 0.5, 1e-5);
  EXPECT_NEAR(steered.at("mean_y").get<double>() - plain.at("mean_y").get<double>(), 0.5, 1e-5);
  EXPECT_NEAR(steered.at("correlation").get<double>(), plain.at("correlation").get<double>(), 1e-5);
}
