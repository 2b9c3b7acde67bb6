// What the `flowkit` command hands to its LibTorch half (libflowkit_cli_runtime.so): one JSON
// object, so that the two sides share no C++ layout. Read by runtime.cpp, written by main.cpp.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace flowkit::host {

struct RuntimeRequest {
  std::string command;                    // train | sample | eval | run | conformance
  std::vector<std::string> plugin_paths;  // --plugin-path
  bool verbose = false, quiet = false;
  std::string pipeline;                   // pipeline JSON (train/sample/eval/run)
  std::vector<std::string> overrides;     // section.key=value
  std::string runs_dir = "runs", run_name, checkpoint;
  std::string eval_label;                 // eval --label
  bool resume = false;
  int64_t stop_at = -1;
  std::vector<std::string> plugins;       // conformance: names (empty: all)
};

inline nlohmann::json to_json(const RuntimeRequest& r) {
  return {{"command", r.command}, {"plugin_paths", r.plugin_paths}, {"verbose", r.verbose}, {"quiet", r.quiet},
          {"pipeline", r.pipeline}, {"overrides", r.overrides}, {"runs_dir", r.runs_dir}, {"run_name", r.run_name},
          {"checkpoint", r.checkpoint}, {"eval_label", r.eval_label}, {"resume", r.resume}, {"stop_at", r.stop_at}, {"plugins", r.plugins}};
}

inline RuntimeRequest runtime_request_from_json(const nlohmann::json& j) {
  RuntimeRequest r;
  j.at("command").get_to(r.command);
  j.at("plugin_paths").get_to(r.plugin_paths);
  j.at("verbose").get_to(r.verbose);
  j.at("quiet").get_to(r.quiet);
  j.at("pipeline").get_to(r.pipeline);
  j.at("overrides").get_to(r.overrides);
  j.at("runs_dir").get_to(r.runs_dir);
  j.at("run_name").get_to(r.run_name);
  j.at("checkpoint").get_to(r.checkpoint);
  j.at("eval_label").get_to(r.eval_label);
  j.at("resume").get_to(r.resume);
  j.at("stop_at").get_to(r.stop_at);
  j.at("plugins").get_to(r.plugins);
  return r;
}

// The entry point of libflowkit_cli_runtime.so; the suffix is the request's version.
#define FLOWKIT_CLI_RUNTIME_ENTRY "flowkit_cli_runtime_v1"
using RuntimeEntry = int(const char* request_json);

}  // namespace flowkit::host
