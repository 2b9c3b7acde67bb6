// Pipeline validation: a corpus of bad manifests (tests/data/bad_pipelines/), each error
// message asserted; resolution fills defaults and the resolved config validates as is.
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
}  // namespace

TEST(Pipeline, EveryBadManifestGivesItsExactErrors) {
  PluginHost host(build_tree_only());
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
  PluginHost host(build_tree_only());
  auto v = validate_pipeline_file((kCorpus / "many_errors.json").string(), host);
  EXPECT_EQ(v.problems.size(), 4u) << v.report();
}

TEST(Pipeline, ResolvedConfigHasEveryDefaultAndValidatesAgain) {
  PluginHost host(build_tree_only());
  std::string file = std::string(FLOWKIT_SOURCE_DIR) + "/examples/quickstart.json";
  auto v = validate_pipeline_file(file, host);
  ASSERT_TRUE(v.ok()) << v.report();
  const auto& r = v.pipeline.resolved;
  EXPECT_EQ(r.at("name"), "quickstart");
  EXPECT_EQ(r.at("model").at("hidden"), 256);              // given
  EXPECT_EQ(r.at("model").at("activation"), "silu");       // default from the plugin manifest
  EXPECT_EQ(r.at("train").at("beta2"), 0.999);             // default from the host schema
  EXPECT_EQ(r.at("sample").at("use_ema"), true);
  auto again = validate_pipeline(r, "resolved.json", host);
  ASSERT_TRUE(again.ok()) << again.report();
  EXPECT_EQ(again.pipeline.resolved, r);
}

TEST(Pipeline, ExamplesValidate) {
  PluginHost host(build_tree_only());
  for (const auto& entry : fs::recursive_directory_iterator(fs::path(FLOWKIT_SOURCE_DIR) / "examples")) {
    if (entry.path().extension() != ".json") continue;
    auto v = validate_pipeline_file(entry.path().string(), host);
    EXPECT_TRUE(v.ok()) << v.report();
  }
}

TEST(Pipeline, HostSectionsHaveDefaultsForEveryParameter) {
  for (const auto& s : host_sections())
    for (const auto& p : s.params) EXPECT_TRUE(p.fallback.has_value()) << s.name << "." << p.name;
}

TEST(Pipeline, NestedComponentParametersAreCheckedRecursively) {
  SearchOptions o = build_tree_only();
  o.plugin_paths = {std::string(FLOWKIT_BINARY_DIR) + "/test_plugins/good"};
  PluginHost host(o);
  auto doc = nlohmann::json::parse(R"({
    "domain": {"type": "standard.toy2d"}, "path": {"type": "standard.affine"},
    "loss": {"type": "standard.cfm"}, "solver": {"type": "standard.euler"},
    "model": {"type": "fk_good.thing", "inner": {"type": "standard.affine", "schedulr": "vp"}}
  })");
  auto v = validate_pipeline(doc, "nested.json", host);
  EXPECT_THAT_MSG(v.report(), "nested.json:/model/inner/schedulr: unknown key \"schedulr\" (did you mean 'scheduler'?)");
  doc["model"]["inner"] = {{"type", "standard.mlp"}};
  v = validate_pipeline(doc, "nested.json", host);
  EXPECT_THAT_MSG(v.report(), "nested.json:/model/inner/type: expected a path component, found 'standard.mlp', which is a model");
  doc["model"]["inner"] = {{"type", "standard.affine"}};
  v = validate_pipeline(doc, "nested.json", host);
  ASSERT_TRUE(v.ok()) << v.report();
  EXPECT_EQ(v.pipeline.resolved["model"]["inner"]["scheduler"], "condot");  // nested default filled in
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
