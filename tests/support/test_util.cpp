// Shared test helpers that need the host (tests/test_util.h).
#include "test_util.h"

#include "flowkit/core/pipeline.h"

flowkit::Config resolved_config(const std::string& type, const nlohmann::json& overrides, const std::string& pointer) {
  static flowkit::core::PluginHost host(build_tree_only());
  auto spec = host.find(type);
  if (!spec) throw flowkit::Error(spec.error());
  std::vector<flowkit::core::Problem> problems;
  nlohmann::json object = overrides;
  object["type"] = type;
  nlohmann::json resolved = flowkit::core::check_params((*spec)->params, object, "test.json", pointer, problems, {"type"}, &host);
  if (!problems.empty()) {
    std::string all;
    for (const auto& p : problems) all += p.str() + "\n";
    throw flowkit::Error(all);
  }
  return flowkit::Config(resolved, "test.json", pointer);
}

flowkit::core::Pipeline resolve_pipeline(const nlohmann::json& doc, flowkit::core::PluginHost& host) {
  auto v = flowkit::core::validate_pipeline(doc, "inline.json", host);
  EXPECT_TRUE(v.ok()) << v.report();
  return v.pipeline;
}

flowkit::core::RunOptions run_in(const std::filesystem::path& root, const std::string& name) {
  flowkit::core::RunOptions o;
  o.runs_root = root.string();
  o.run_name = name;
  return o;
}
