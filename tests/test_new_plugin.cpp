// `flowkit new-plugin`: the folder it writes is a complete third-party plugin. Install flowkit
// into a temporary prefix, generate a plugin with all five kinds, build it out of tree with
// find_package(flowkit), run its ctest (the conformance suite on it, and its examples
// validate) and train its example pipelines briefly. The usage errors (a bad name or kind, an
// existing folder) exit 2 with a message saying what is allowed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "flowkit/version.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {



nlohmann::json read_json(const fs::path& file) {
  std::ifstream in(file);
  return nlohmann::json::parse(in);
}

const std::string kFlowkit = "env -u FLOWKIT_PLUGIN_PATH " FLOWKIT_BINARY_DIR "/bin/flowkit";
}  // namespace

TEST(NewPlugin, WritesTheSelectedKindsAndRefusesBadRequests) {
  TempDir tmp;
  const std::string dir = " --dir " + tmp.path().string();
  std::string out;
  EXPECT_EQ(run_command(kFlowkit + " new-plugin Bad_Name" + dir, &out), 2) << out;
  EXPECT_THAT_MSG(out, "invalid plugin name 'Bad_Name'");
  EXPECT_THAT_MSG(out, "[a-z][a-z0-9_]*");
  out.clear();
  EXPECT_EQ(run_command(kFlowkit + " new-plugin 9lives" + dir, &out), 2) << out;
  EXPECT_THAT_MSG(out, "invalid plugin name '9lives'");
  out.clear();
  EXPECT_EQ(run_command(kFlowkit + " new-plugin kit --kind model --kind sampler" + dir, &out), 2) << out;
  EXPECT_THAT_MSG(out, "unknown kind 'sampler': expected one of domain, path, model, loss, solver");
  EXPECT_FALSE(fs::exists(tmp.path() / "kit"));

  // One kind: its source, the manifest entry, and an example with standard components for the rest.
  out.clear();
  ASSERT_EQ(run_command(kFlowkit + " new-plugin kit --kind model" + dir, &out), 0) << out;
  const fs::path kit = tmp.path() / "kit";
  EXPECT_THAT_MSG(out, "plugin.json");
  for (const char* f : {"plugin.json", "CMakeLists.txt", "README.md", "src/plugin.cpp", "src/components.h", "src/model.cpp", "examples/kit.json"})
    EXPECT_TRUE(fs::exists(kit / f)) << f;
  EXPECT_FALSE(fs::exists(kit / "src/domain.cpp"));
  auto manifest = read_json(kit / "plugin.json");
  EXPECT_EQ(manifest.at("name"), "kit");
  EXPECT_EQ(manifest.at("library"), "libkit.so");
  // The generator is torch-free and cannot include version.h: it must keep up by hand.
  EXPECT_EQ(manifest.at("api_version"), nlohmann::json::array({FLOWKIT_API_MAJOR, FLOWKIT_API_MINOR}));
  ASSERT_EQ(manifest.at("components").size(), 1u);
  EXPECT_EQ(manifest.at("components")[0].at("kind"), "model");
  auto example = read_json(kit / "examples/kit.json");
  EXPECT_EQ(example.at("model").at("type"), "kit.mlp");
  EXPECT_EQ(example.at("domain").at("type"), "standard.toy2d");

  // An existing, non-empty folder needs --force.
  out.clear();
  EXPECT_EQ(run_command(kFlowkit + " new-plugin kit" + dir, &out), 2) << out;
  EXPECT_THAT_MSG(out, "already exists and is not empty");
  EXPECT_THAT_MSG(out, "--force");
  EXPECT_FALSE(fs::exists(kit / "src/domain.cpp"));
  out.clear();
  EXPECT_EQ(run_command(kFlowkit + " new-plugin kit --force" + dir, &out), 0) << out;
  EXPECT_TRUE(fs::exists(kit / "src/domain.cpp"));
  EXPECT_EQ(read_json(kit / "plugin.json").at("components").size(), 5u);

  // Without --dir, the folder goes into the current directory.
  out.clear();
  EXPECT_EQ(run_command("cd " + tmp.path().string() + " && " + kFlowkit + " new-plugin here", &out), 0) << out;
  EXPECT_TRUE(fs::exists(tmp.path() / "here/plugin.json")) << out;
}

TEST(NewPlugin, GeneratedPluginBuildsPassesConformanceAndTrains) {
  // The generated tests and examples use the standard plugin from the installed prefix.
  if (!build_has_bundled_plugins()) GTEST_SKIP() << "built without the bundled plugins (FLOWKIT_BUILD_PLUGINS=OFF)";
  TempDir tmp;
  const std::string cmake = FLOWKIT_CMAKE_COMMAND;
  const std::string ctest = (fs::path(cmake).parent_path() / "ctest").string();
  std::string log;
  ASSERT_EQ(run_command(kFlowkit + " new-plugin mykit --dir " + tmp.path().string(), &log), 0) << log;
  const fs::path source = tmp.path() / "mykit";
  ASSERT_TRUE(fs::exists(source / "CMakeLists.txt")) << log;

  const fs::path prefix = tmp.path() / "prefix";
  log.clear();
  ASSERT_EQ(run_command(cmake + " --install " FLOWKIT_BINARY_DIR " --prefix " + prefix.string(), &log), 0) << log;
  const fs::path build = tmp.path() / "mykit-build";
  log.clear();
  ASSERT_EQ(run_command(cmake + " -S " + source.string() + " -B " + build.string() + " -G Ninja -DCMAKE_PREFIX_PATH=" + prefix.string(), &log), 0)
      << log;
  log.clear();
  ASSERT_EQ(run_command(cmake + " --build " + build.string(), &log), 0) << log;
  ASSERT_TRUE(fs::exists(build / "plugins/mykit/libmykit.so")) << log;

  // Its ctest: `flowkit conformance mykit` and `flowkit validate` of each example.
  log.clear();
  ASSERT_EQ(run_command("env -u FLOWKIT_PLUGIN_PATH " + ctest + " --test-dir " + build.string() + " -V", &log), 0) << log;
  EXPECT_THAT_MSG(log, "mykit_conformance");
  EXPECT_THAT_MSG(log, "PASS mykit.blobs: reads exactly the parameters its manifest declares");
  EXPECT_THAT_MSG(log, "PASS mykit.linear: capability velocity_conversions");
  EXPECT_THAT_MSG(log, "PASS mykit.euler: capability ode_integrator");
  EXPECT_THAT_MSG(log, " passed, 0 failed");
  EXPECT_THAT_MSG(log, "100% tests passed");

  // The examples train briefly with the installed binary: the plugin's five components, and
  // its domain and model with the standard path, loss and solver.
  const fs::path work = tmp.path() / "work";
  fs::create_directories(work);
  const std::string flowkit = "env -u FLOWKIT_PLUGIN_PATH " + (prefix / "bin/flowkit").string() + " --plugin-path " + (build / "plugins").string();
  for (const std::string name : {"mykit", "mykit_mixed"}) {
    log.clear();
    const fs::path example = source / "examples" / (name + ".json");
    ASSERT_EQ(run_command("cd " + work.string() + " && " + flowkit + " -q run " + example.string() + " train.steps=200", &log), 0) << log;
    const fs::path eval = work / "runs" / name / "eval.json";
    ASSERT_TRUE(fs::exists(eval)) << log;
    auto metrics = read_json(eval);
    std::cout << "[ measured ] " << name << " after 200 steps: " << metrics.dump() << "\n";
    for (const char* m : {"energy_distance", "mode_balance"}) {
      ASSERT_TRUE(metrics.contains(m)) << metrics.dump();
      EXPECT_TRUE(std::isfinite(metrics.at(m).get<double>())) << m;
    }
    // The N(0, I) prior (an untrained velocity) is at energy distance ~0.45 from the blobs.
    EXPECT_LT(metrics.at("energy_distance").get<double>(), 0.1) << name;
  }
}
