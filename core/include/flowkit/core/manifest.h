// flowkit/core/manifest.h — a plugin's plugin.json, read without loading the library.
#pragma once
#include <nlohmann/json.hpp>

#include <optional>
#include <map>
#include <string>
#include <vector>

#include "flowkit/component.h"
#include "flowkit/error.h"

namespace flowkit::core {

// One parameter of a component, as declared in plugin.json.
struct ParamSpec {
  std::string name;
  std::string type;                      // integer | number | boolean | string | array | object | component | path
  Kind component_kind = Kind::model;     // for "component": the kind of the nested component
  std::optional<nlohmann::json> fallback;  // "default"
  bool required = false;
  std::optional<double> min, max;        // inclusive
  std::vector<std::string> choices;      // for strings
  bool allow_inf = false;                // numbers: accept "inf" / "infinity"
  std::string doc;
};

struct ComponentSpec {
  Kind kind = Kind::domain;
  std::string plugin;                    // the plugin's name
  std::string name;                      // "mlp"
  std::string summary;
  std::vector<Kind> needs;               // other pipeline sections it needs ("needs": ["domain"])
  // Types those sections must have, where the manifest says ("needs": ["path:myplugin.flow"]):
  // checked when a pipeline is validated, before anything is built.
  std::map<Kind, std::vector<std::string>> needs_types;
  std::vector<ParamSpec> params;         // sorted by name
  // Parameters to build it with where its defaults alone cannot (a domain that needs a data
  // file): what the conformance suite uses. Relative paths are taken beside the manifest.
  nlohmann::json example = nlohmann::json::object();
  std::string manifest_file;             // the plugin.json declaring it
  std::string type() const { return plugin + "." + name; }
  const ParamSpec* param(const std::string& key) const;
};

struct PluginManifest {
  std::string file;                      // path of plugin.json
  std::string dir;                       // folder holding it
  std::string name, version, summary, library;
  unsigned api_major = 0, api_minor = 0;
  std::vector<ComponentSpec> components;
  std::string library_path() const;      // dir + "/" + library
};

// Reads and checks plugin.json; the error names the file and the JSON pointer.
Expected<PluginManifest> read_manifest(const std::string& file);
// The same from the manifest's text; `file` names it in errors (the fuzz target's entry).
Expected<PluginManifest> parse_manifest(const std::string& text, const std::string& file);
// Parses one parameter schema (also used for the host's own sections).
ParamSpec parse_param(const std::string& name, const nlohmann::json& spec, const std::string& file,
                      const std::string& pointer);

}  // namespace flowkit::core
