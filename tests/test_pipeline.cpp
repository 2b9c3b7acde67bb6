// Pipeline validation: a corpus of bad manifests (tests/data/bad_pipelines/), each error
// message asserted; resolution fills defaults and the resolved config validates as is. The
// components are the test plugins' (tests/plugins/flows, tests/plugins/steer), so these tests
// need no bundled plugin.
#include <gtest/gtest.h>

#include <set>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "flowkit/core/pipeline.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace flowkit::core;

namespace {
const fs::path kCorpus = fs::path(FLOWKIT_SOURCE_DIR) / "tests/data/bad_pipelines";

// Only the test plugins fk_flows and fk_steer: no environment, no default plugin folder.
SearchOptions test_plugins_only() {
  SearchOptions o;
  o.plugin_paths = {std::string(FLOWKIT_BINARY_DIR) + "/test_plugins/flows", std::string(FLOWKIT_BINARY_DIR) + "/test_plugins/steer"};
  o.use_environment = false;
  o.use_default_dirs = false;
  return o;
}
}  // namespace

TEST(Pipeline, EveryBadManifestGivesItsExactErrors) {
  PluginHost host(test_plugins_only());
  std::ifstream in(kCorpus / "expected.json");
  auto expected = nlohmann::json::parse(in);
  size_t checked = 0;
  for (const auto& entry : fs::directory_iterator(kCorpus)) {
    std::string name = entry.path().filename().string();
    if (name == "expected.json") continue;
    ASSERT_TRUE(expected.contains(name)) << name << " has no expected errors in expected.json";
    auto v = validate_pipeline_file(entry.path().string(), host);
    EXPECT_FALSE(v.ok()) << name << " should be rejected";
    std::string report = v.report();
    for (const auto& part : expected.at(name)) EXPECT_THAT_MSG(report, part.get<std::string>()) << " (file " << name << ")";
    ++checked;
  }
  EXPECT_EQ(checked, expected.size());
}

TEST(Pipeline, AllProblemsAreReportedAtOnce) {
  PluginHost host(test_plugins_only());
  auto v = validate_pipeline_file((kCorpus / "many_errors.json").string(), host);
  EXPECT_EQ(v.problems.size(), 4u) << v.report();
}

TEST(Pipeline, ResolvedConfigHasEveryDefaultAndValidatesAgain) {
  PluginHost host(test_plugins_only());
  std::string file = std::string(FLOWKIT_SOURCE_DIR) + "/tests/plugins/flows/pipeline.json";
  auto v = validate_pipeline_file(file, host);
  ASSERT_TRUE(v.ok()) << v.report();
  const auto& r = v.pipeline.resolved;
  EXPECT_EQ(r.at("name"), "flow_nll");
  EXPECT_EQ(r.at("model").at("net").at("hidden"), 32);           // given
  EXPECT_EQ(r.at("model").at("net").at("activation"), "tanh");   // default from the plugin manifest
  EXPECT_EQ(r.at("solver").at("temperature"), 1.0);              // default of a top-level section
  EXPECT_EQ(r.at("train").at("beta2"), 0.999);                   // default from the host schema
  EXPECT_EQ(r.at("sample").at("use_ema"), true);
  auto again = validate_pipeline(r, "resolved.json", host);
  ASSERT_TRUE(again.ok()) << again.report();
  EXPECT_EQ(again.pipeline.resolved, r);
}

TEST(Pipeline, HostSectionsHaveDefaultsForEveryParameter) {
  for (const auto& s : host_sections())
    for (const auto& p : s.params) EXPECT_TRUE(p.fallback.has_value()) << s.name << "." << p.name;
}

TEST(Pipeline, NestedComponentParametersAreCheckedRecursively) {
  PluginHost host(test_plugins_only());
  auto doc = nlohmann::json::parse(R"({
    "domain": {"type": "fk_flows.gauss2d"}, "loss": {"type": "fk_flows.nll"}, "solver": {"type": "fk_flows.latent_sampler"},
    "model": {"type": "fk_steer.steered", "net": {"type": "fk_flows.coupling", "hiden": 8}}
  })");
  auto v = validate_pipeline(doc, "nested.json", host);
  EXPECT_THAT_MSG(v.report(), "nested.json:/model/net/hiden: unknown key \"hiden\" (did you mean 'hidden'?)");
  doc["model"]["net"] = {{"type", "fk_flows.nll"}};
  v = validate_pipeline(doc, "nested.json", host);
  EXPECT_THAT_MSG(v.report(), "nested.json:/model/net/type: expected a model component, found 'fk_flows.nll', which is a loss");
  doc["model"]["net"] = {{"type", "fk_flows.coupling"}};
  v = validate_pipeline(doc, "nested.json", host);
  ASSERT_TRUE(v.ok()) << v.report();
  EXPECT_EQ(v.pipeline.resolved["model"]["net"]["layers"], 4);  // nested default filled in
  // With no "net" at all, the manifest's default component is filled in with its own defaults.
  doc["model"].erase("net");
  v = validate_pipeline(doc, "nested.json", host);
  ASSERT_TRUE(v.ok()) << v.report();
  EXPECT_EQ(v.pipeline.resolved["model"]["net"]["type"], "fk_flows.coupling");
  EXPECT_EQ(v.pipeline.resolved["model"]["net"]["activation"], "tanh");
}

TEST(Config, TypedAccessNamesTheKeyAndReadsInfinity) {
  flowkit::Config cfg(nlohmann::json{{"D", "inf"}, {"n", "many"}, {"lr", -1.0}, {"steps", 3}}, "p.json", "/model");
  EXPECT_TRUE(std::isinf(cfg.get<double>("D")));
  EXPECT_EQ(cfg.get<int64_t>("steps"), 3);
  EXPECT_FALSE(cfg.optional<int64_t>("absent").has_value());
  EXPECT_EQ(cfg.optional<int64_t>("steps").value(), 3);
  try {
    cfg.get<int64_t>("n");
    FAIL();
  } catch (const flowkit::ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "p.json:/model/n: expected integer, found string \"many\"");
  }
  EXPECT_THROW(cfg.get<double>("missing"), flowkit::ConfigError);
  // Every key asked for is recorded (conformance compares them with the manifest).
  EXPECT_EQ(cfg.keys_read(), (std::set<std::string>{"D", "steps", "absent", "n", "missing"}));
}
