// Plugin discovery: the search path and the manifests found on it. Reads JSON only; this
// translation unit (and libflowkit_catalog.so) does not depend on LibTorch.
#include "flowkit/core/plugin_catalog.h"

#include <boost/dll/runtime_symbol_info.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>

#include <fmt/ranges.h>

#include "trace.h"

#ifndef FLOWKIT_BUILD_PLUGIN_DIR
#define FLOWKIT_BUILD_PLUGIN_DIR ""
#endif

namespace fs = std::filesystem;

namespace flowkit::core {

bool debug_plugins_enabled() {
  const char* v = std::getenv("FLOWKIT_DEBUG_PLUGINS");
  return v && *v && std::string(v) != "0";
}


static size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    // A suffix match ("mlp" for "myplugin.mlp") counts as close.
    if (c.size() > word.size() && c.compare(c.size() - word.size(), word.size(), word) == 0) d = std::min<size_t>(d, 1);
    if (d < best_d) best_d = d, best = c;
  }
  if (best.empty() || best_d > std::max<size_t>(2, word.size() / 3)) return "";
  return " (did you mean '" + best + "'?)";
}

std::vector<std::string> plugin_search_dirs(const SearchOptions& options) {
  std::vector<std::string> dirs = options.plugin_paths;
  if (options.use_environment)
    if (const char* env = std::getenv("FLOWKIT_PLUGIN_PATH")) {
      std::stringstream ss(env);
      std::string item;
      while (std::getline(ss, item, ':'))
        if (!item.empty()) dirs.push_back(item);
    }
  if (options.use_default_dirs) {
    // An installed libflowkit_core.so sits in <prefix>/lib; its plugins in <prefix>/lib/flowkit/plugins.
    fs::path installed = boost::dll::this_line_location().parent_path().string();
    installed /= "flowkit/plugins";
    std::error_code ec;
    if (fs::is_directory(installed, ec)) dirs.push_back(installed.string());
    else if (*FLOWKIT_BUILD_PLUGIN_DIR) dirs.push_back(FLOWKIT_BUILD_PLUGIN_DIR);
  }
  // The same folder named twice (relative and absolute) is searched once.
  std::vector<std::string> unique;
  std::set<std::string> seen;
  for (const auto& d : dirs) {
    std::error_code ec;
    std::string key = fs::weakly_canonical(fs::absolute(d, ec), ec).string();
    if (seen.insert(key.empty() ? d : key).second) unique.push_back(d);
  }
  return unique;
}

PluginCatalog::PluginCatalog(const SearchOptions& options) {
  dirs_ = plugin_search_dirs(options);
  for (const auto& dir : dirs_) {
    trace("scanning {}", dir);
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      trace("  not a directory, skipped");
      continue;
    }
    std::vector<fs::path> candidates;
    if (fs::exists(fs::path(dir) / "plugin.json")) candidates.push_back(fs::path(dir) / "plugin.json");
    for (const auto& entry : fs::directory_iterator(dir, ec))
      if (entry.is_directory() && fs::exists(entry.path() / "plugin.json")) candidates.push_back(entry.path() / "plugin.json");
    std::sort(candidates.begin(), candidates.end());
    for (const auto& file : candidates) {
      auto m = read_manifest(file.string());
      if (!m) {
        trace("  rejected {}: {}", file.string(), m.error());
        manifest_errors_.push_back(m.error());
        continue;
      }
      trace("  found plugin '{}' {} ({} components) in {}", m->name, m->version, m->components.size(), file.string());
      plugins_.push_back(std::move(*m));
    }
  }
}

PluginCatalog::~PluginCatalog() = default;


const PluginManifest* PluginCatalog::manifest_of(const std::string& plugin, std::string* error) const {
  std::vector<const PluginManifest*> found;
  for (const auto& m : plugins_)
    if (m.name == plugin) found.push_back(&m);
  if (found.size() > 1) {
    *error = "plugin '" + plugin + "' is provided twice: by " + found[0]->file + " and by " + found[1]->file +
             "; remove one of them from the plugin path";
    return nullptr;
  }
  if (found.empty()) {
    std::vector<std::string> names;
    for (const auto& m : plugins_) names.push_back(m.name);
    *error = "no plugin named '" + plugin + "'" + did_you_mean(plugin, names) + "; searched: " +
             (dirs_.empty() ? std::string("(no directories)") : fmt::format("{}", fmt::join(dirs_, ", ")));
    return nullptr;
  }
  return found[0];
}

Expected<const ComponentSpec*> PluginCatalog::find(const std::string& type) const {
  using R = Expected<const ComponentSpec*>;
  auto dot = type.find('.');
  if (dot == std::string::npos) {
    return R::failure("component type '" + type + "' must be written <plugin>.<component>" + did_you_mean(type, component_types()));
  }
  std::string error;
  const PluginManifest* m = manifest_of(type.substr(0, dot), &error);
  if (!m) {
    bool unknown_plugin = error.rfind("no plugin named", 0) == 0;
    std::string hint = unknown_plugin ? did_you_mean(type, component_types()) : "";
    return R::failure(hint.empty() ? error : "unknown component '" + type + "'" + hint);
  }
  for (const auto& c : m->components)
    if (c.type() == type) return &c;
  return R::failure("unknown component '" + type + "'" + did_you_mean(type, component_types()));
}

std::vector<std::string> PluginCatalog::component_types() const {
  std::vector<std::string> out;
  for (const auto& m : plugins_)
    for (const auto& c : m.components) out.push_back(c.type());
  return out;
}

}  // namespace flowkit::core
