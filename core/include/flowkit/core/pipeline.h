// flowkit/core/pipeline.h — a JSON pipeline manifest, validated completely before any work.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "flowkit/core/manifest.h"
#include "flowkit/config.h"
#include "flowkit/core/plugin_catalog.h"

namespace flowkit::core {

struct Problem {
  std::string file, pointer, message;
  std::string str() const;  // "file:/pointer: message"
};

struct Pipeline {
  std::string file;
  std::string name;
  nlohmann::json resolved;  // every default filled in; can be run again as is
  Config section(const std::string& key) const;  // located Config of one section
  bool has(const std::string& key) const { return resolved.contains(key); }
};

struct Validation {
  Pipeline pipeline;
  std::vector<Problem> problems;  // all of them, in document order
  bool ok() const { return problems.empty(); }
  std::string report() const;     // one problem per line
};

// Reads, validates and resolves a pipeline. Reads plugin manifests only (no dlopen).
Validation validate_pipeline_file(const std::string& file, const PluginCatalog& host);
// The same, with command-line overrides "section.key=value" (value: JSON, else a string; e.g.
// train.steps=500 model.hidden=64 solver.type=standard.heun) applied to the document first.
// A problem caused by an override names it as its source instead of the file.
Validation validate_pipeline_file(const std::string& file, const PluginCatalog& host,
                                  const std::vector<std::string>& overrides);
Validation validate_pipeline(const nlohmann::json& document, const std::string& file, const PluginCatalog& host);

// The host-defined sections ("train", "sample", "eval") described with the same schema
// format as plugin components, so `flowkit describe` documents them too.
const std::vector<ComponentSpec>& host_sections();

// Checks `object` against `params`, appending problems; returns the object with defaults.
// With a host, nested component parameters ({"type": ...}) are checked recursively.
nlohmann::json check_params(const std::vector<ParamSpec>& params, const nlohmann::json& object,
                            const std::string& file, const std::string& pointer,
                            std::vector<Problem>& problems, const std::vector<std::string>& reserved = {},
                            const PluginCatalog* host = nullptr);

}  // namespace flowkit::core
