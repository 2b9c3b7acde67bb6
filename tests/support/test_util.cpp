// Shared test helpers that need the host (tests/test_util.h).
#include "test_util.h"

#include <cstdio>

#include "flowkit/core/pipeline.h"

int run_command(const std::string& command, std::string* output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) output->append(buf, n);
  int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool build_has_bundled_plugins() { return has_plugin_manifests(std::filesystem::path(FLOWKIT_BINARY_DIR) / "plugins"); }

bool has_plugin_manifests(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->path().filename() == "plugin.json") return true;
  return false;
}

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
