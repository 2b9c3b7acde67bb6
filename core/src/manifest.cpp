// Reading plugin.json: everything `flowkit plugins`, `describe` and `validate` need,
// without loading any library.
#include "flowkit/core/manifest.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace flowkit::core {
namespace {
const std::vector<std::string> kParamTypes = {"integer", "number", "boolean", "string", "array", "object", "component", "path"};

std::string expect_string(const nlohmann::json& j, const std::string& key, const std::string& file,
                          const std::string& pointer, bool required = true) {
  if (!j.contains(key)) {
    if (!required) return "";
    throw ConfigError(file, pointer + "/" + key, "required field is missing");
  }
  if (!j.at(key).is_string())
    throw ConfigError(file, pointer + "/" + key, std::string("expected string, found ") + j.at(key).type_name());
  return j.at(key).get<std::string>();
}
}  // namespace

const ParamSpec* ComponentSpec::param(const std::string& key) const {
  for (const auto& p : params)
    if (p.name == key) return &p;
  return nullptr;
}

std::string PluginManifest::library_path() const { return (std::filesystem::path(dir) / library).string(); }

ParamSpec parse_param(const std::string& name, const nlohmann::json& spec, const std::string& file,
                      const std::string& pointer) {
  if (!spec.is_object()) throw ConfigError(file, pointer, "a parameter schema must be an object");
  static const std::vector<std::string> keys = {"type", "default", "required", "min", "max", "choices", "allow_inf", "kind", "doc"};
  for (const auto& [k, v] : spec.items())
    if (std::find(keys.begin(), keys.end(), k) == keys.end())
      throw ConfigError(file, pointer + "/" + k, "unknown schema key");
  ParamSpec p;
  p.name = name;
  p.type = expect_string(spec, "type", file, pointer);
  if (std::find(kParamTypes.begin(), kParamTypes.end(), p.type) == kParamTypes.end())
    throw ConfigError(file, pointer + "/type", "unknown parameter type '" + p.type + "'");
  if (spec.contains("default") && !spec.at("default").is_null()) p.fallback = spec.at("default");
  p.required = spec.value("required", false);
  if (spec.contains("min")) p.min = spec.at("min").get<double>();
  if (spec.contains("max")) p.max = spec.at("max").get<double>();
  if (spec.contains("choices")) p.choices = spec.at("choices").get<std::vector<std::string>>();
  p.allow_inf = spec.value("allow_inf", false);
  if (p.type == "component") {
    std::string kind = spec.value("kind", std::string());
    if (!parse_kind(kind, &p.component_kind))
      throw ConfigError(file, pointer + "/kind", "a component parameter needs \"kind\": one of " + kind_list());
  }
  p.doc = spec.value("doc", std::string());
  return p;
}

Expected<PluginManifest> read_manifest(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Expected<PluginManifest>::failure(file + ": cannot open plugin manifest");
  std::stringstream text;
  text << in.rdbuf();
  return parse_manifest(text.str(), file);
}

Expected<PluginManifest> parse_manifest(const std::string& text, const std::string& file) {
  using R = Expected<PluginManifest>;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return R::failure(file + ": malformed JSON: " + e.what());
  }
  try {
    if (!j.is_object()) throw ConfigError(file, "", "a plugin manifest must be a JSON object");
    PluginManifest m;
    m.file = file;
    m.dir = std::filesystem::path(file).parent_path().string();
    std::string schema = expect_string(j, "schema", file, "");
    if (schema != "flowkit.plugin/1")
      throw ConfigError(file, "/schema", "expected \"flowkit.plugin/1\", found \"" + schema + "\"");
    m.name = expect_string(j, "name", file, "");
    m.version = expect_string(j, "version", file, "");
    m.library = expect_string(j, "library", file, "");
    m.summary = expect_string(j, "summary", file, "", false);
    const auto& api = j.contains("api_version") ? j.at("api_version") : nlohmann::json();
    if (!api.is_array() || api.size() != 2 || !api[0].is_number_unsigned() || !api[1].is_number_unsigned())
      throw ConfigError(file, "/api_version", "expected [major, minor], found " + api.dump());
    m.api_major = api[0].get<unsigned>();
    m.api_minor = api[1].get<unsigned>();
    if (!j.contains("components") || !j.at("components").is_array())
      throw ConfigError(file, "/components", "expected an array of components");
    const auto& comps = j.at("components");
    for (size_t i = 0; i < comps.size(); ++i) {
      std::string ptr = "/components/" + std::to_string(i);
      const auto& c = comps[i];
      if (!c.is_object()) throw ConfigError(file, ptr, "expected an object");
      ComponentSpec spec;
      spec.plugin = m.name;
      std::string kind = expect_string(c, "kind", file, ptr);
      if (!parse_kind(kind, &spec.kind))
        throw ConfigError(file, ptr + "/kind", "expected one of " + kind_list() + "; found \"" + kind + "\"");
      spec.name = expect_string(c, "name", file, ptr);
      spec.summary = expect_string(c, "summary", file, ptr, false);
      if (c.contains("needs")) {
        const auto& needs = c.at("needs");
        if (!needs.is_array()) throw ConfigError(file, ptr + "/needs", "expected an array of kinds");
        for (size_t k = 0; k < needs.size(); ++k) {
          // "kind" or "kind:plugin.type|plugin.other"
          Kind need;
          const std::string entry = needs[k].is_string() ? needs[k].get<std::string>() : "";
          const size_t colon = entry.find(':');
          if (!needs[k].is_string() || !parse_kind(entry.substr(0, colon), &need))
            throw ConfigError(file, ptr + "/needs/" + std::to_string(k),
                              "expected a kind (" + kind_list() + "), optionally with types as \"path:plugin.name\"; found " +
                                  needs[k].dump());
          spec.needs.push_back(need);
          if (colon != std::string::npos) {
            std::string types = entry.substr(colon + 1), one;
            for (size_t at = 0; at <= types.size(); ++at) {
              if (at == types.size() || types[at] == '|') {
                if (one.find('.') == std::string::npos)
                  throw ConfigError(file, ptr + "/needs/" + std::to_string(k), "expected types as plugin.name; found \"" + one + "\"");
                spec.needs_types[need].push_back(one);
                one.clear();
              } else {
                one += types[at];
              }
            }
          }
        }
      }
      spec.manifest_file = file;
      if (c.contains("example")) {
        if (!c.at("example").is_object()) throw ConfigError(file, ptr + "/example", "expected an object of parameters");
        spec.example = c.at("example");
      }
      if (c.contains("params")) {
        if (!c.at("params").is_object()) throw ConfigError(file, ptr + "/params", "expected an object");
        for (const auto& [pname, pspec] : c.at("params").items())
          spec.params.push_back(parse_param(pname, pspec, file, ptr + "/params/" + pname));
      }
      for (const auto& other : m.components)
        if (other.name == spec.name)
          throw ConfigError(file, ptr + "/name", "component '" + spec.name + "' is declared twice");
      m.components.push_back(std::move(spec));
    }
    return m;
  } catch (const ConfigError& e) {
    return R::failure(e.what());
  } catch (const std::exception& e) {
    return R::failure(file + ": " + e.what());
  }
}

}  // namespace flowkit::core
