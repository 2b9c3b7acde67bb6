// Small helpers shared by the test files.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "flowkit/config.h"
#include "flowkit/core/pipeline.h"
#include "flowkit/core/plugin_host.h"
#include "flowkit/core/session.h"

// Asserts that `text` contains `part`, printing both when it does not.
#define EXPECT_THAT_MSG(text, part)                                                              \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "expected to find:\n  " << (part) \
                                                             << "\nin:\n  " << (text)

// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("flowkit_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Sets an environment variable for the scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

// Plugin search limited to the build tree's plugin folder (no FLOWKIT_PLUGIN_PATH).
inline flowkit::core::SearchOptions build_tree_only() {
  flowkit::core::SearchOptions o;
  o.use_environment = false;
  return o;
}

// The resolved config of component `type` ("plugin.name") as the host gives it to a factory:
// `overrides` plus every default from the plugin's manifest (the only place defaults live).
// Throws flowkit::Error listing the problems when the overrides do not validate.
flowkit::Config resolved_config(const std::string& type, const nlohmann::json& overrides = nlohmann::json::object(),
                                const std::string& pointer = "/c");

// Runs a shell command; its stdout and stderr are appended to *output; returns the exit code
// (-1 when it did not exit normally).
int run_command(const std::string& command, std::string* output);
// Whether `dir` holds a plugin manifest anywhere below it.
bool has_plugin_manifests(const std::filesystem::path& dir);
// Whether the build tree's own plugin folder (the default search path) has the bundled
// plugins; tests that need them skip in a -DFLOWKIT_BUILD_PLUGINS=OFF build.
bool build_has_bundled_plugins();

// A pipeline document validated against `host` (a test failure lists the problems).
flowkit::core::Pipeline resolve_pipeline(const nlohmann::json& doc, flowkit::core::PluginHost& host);
// Run options for the run `name` under `root`.
flowkit::core::RunOptions run_in(const std::filesystem::path& root, const std::string& name);
