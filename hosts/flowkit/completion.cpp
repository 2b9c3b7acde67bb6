#include "completion.h"

#include <algorithm>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "flowkit/core/pipeline.h"

namespace flowkit::host {
namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// Options that take a value, and what the value is.
const CLI::Option* option_named(const CLI::App& app, const std::string& word) {
  for (const CLI::App* a : {&app, app.get_parent()}) {
    if (!a) continue;
    for (const CLI::Option* o : a->get_options())
      if (o->nonpositional() && o->check_name(word)) return o;
  }
  return nullptr;
}

// Flags have no type name; every option with a value has one (TEXT, DIR, ...).
bool takes_value(const CLI::Option* o) { return o && !o->get_type_name().empty(); }

std::vector<std::string> option_names(const CLI::App& app) {
  std::vector<std::string> out;
  for (const CLI::App* a : {&app, app.get_parent()}) {
    if (!a) continue;
    for (const CLI::Option* o : a->get_options())
      if (o->nonpositional())
        for (const auto& l : o->get_lnames()) out.push_back("--" + l);
  }
  return out;
}

// The schema of "section[.nested...]" in `doc`: a host section, the component named by its
// "type", or a nested component parameter whose value (or default) names a type.
const core::ComponentSpec* spec_at(const core::PluginCatalog& catalog, const nlohmann::json& doc,
                                   const std::vector<std::string>& keys) {
  if (keys.empty()) return nullptr;
  const core::ComponentSpec* spec = nullptr;
  for (const auto& s : core::host_sections())
    if (s.name == keys[0]) spec = &s;
  const nlohmann::json* node = doc.contains(keys[0]) ? &doc.at(keys[0]) : nullptr;
  auto typed = [&](const nlohmann::json* n) -> const core::ComponentSpec* {
    if (!n || !n->is_object() || !n->contains("type") || !n->at("type").is_string()) return nullptr;
    auto found = catalog.find(n->at("type").get<std::string>());
    return found ? *found : nullptr;
  };
  if (!spec) spec = typed(node);
  for (size_t i = 1; spec && i < keys.size(); ++i) {
    const core::ParamSpec* p = spec->param(keys[i]);
    if (!p || p->type != "component") return nullptr;
    const nlohmann::json* child = node && node->is_object() && node->contains(keys[i]) ? &node->at(keys[i]) : nullptr;
    const nlohmann::json* fallback = p->fallback ? &*p->fallback : nullptr;
    spec = typed(child) ? typed(child) : typed(fallback);
    node = child ? child : fallback;
  }
  return spec;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t dot; (dot = s.find(sep, start)) != std::string::npos; start = dot + 1) out.push_back(s.substr(start, dot - start));
  out.push_back(s.substr(start));
  return out;
}

// "section.key=value" overrides of the pipeline `file`.
std::vector<std::string> complete_override(const core::PluginCatalog& catalog, const std::string& file,
                                           const std::string& cur) {
  nlohmann::json doc = nlohmann::json::object();
  if (std::ifstream in(file); in) doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) doc = nlohmann::json::object();
  std::vector<std::string> out{"@nospace"};
  const auto eq = cur.find('=');
  if (eq != std::string::npos) {  // a value: component types for "type", choices, booleans
    const std::string key_path = cur.substr(0, eq);
    std::vector<std::string> keys = split(key_path, '.');
    const std::string last = keys.back();
    keys.pop_back();
    out.clear();
    Kind kind;
    if (last == "type" && keys.size() == 1 && parse_kind(keys[0], &kind)) {
      for (const auto& m : catalog.plugins())
        for (const auto& c : m.components)
          if (c.kind == kind) out.push_back(key_path + "=" + c.type());
      return out;
    }
    const core::ComponentSpec* spec = spec_at(catalog, doc, keys);
    const core::ParamSpec* p = spec ? spec->param(last) : nullptr;
    if (!p) return out;
    if (p->type == "component")
      for (const auto& m : catalog.plugins())
        for (const auto& c : m.components)
          if (c.kind == p->component_kind) out.push_back(key_path + "={\"type\":\"" + c.type() + "\"}");
    for (const auto& c : p->choices) out.push_back(key_path + "=" + c);
    if (p->type == "boolean") out.insert(out.end(), {key_path + "=true", key_path + "=false"});
    return out;
  }
  const auto dot = cur.rfind('.');
  if (dot == std::string::npos) {  // a section
    std::vector<std::string> sections;
    for (const auto& k : kinds()) sections.push_back(k.name);
    for (const auto& s : core::host_sections()) sections.push_back(s.name);
    for (const auto& s : sections) out.push_back(s + ".");
    return out;
  }
  const std::string prefix = cur.substr(0, dot);
  const std::vector<std::string> keys = split(prefix, '.');
  Kind kind;
  if (keys.size() == 1 && parse_kind(keys[0], &kind)) out.push_back(prefix + ".type=");
  if (const core::ComponentSpec* spec = spec_at(catalog, doc, keys))
    for (const auto& p : spec->params) out.push_back(prefix + "." + p.name + (p.type == "component" ? "." : "="));
  return out;
}

std::vector<std::string> candidates(const CLI::App& app, const core::PluginCatalog& catalog,
                                    const std::vector<std::string>& words) {
  const std::string cur = words.empty() ? "" : words.back();
  const CLI::App* sub = nullptr;
  std::vector<std::string> positionals;  // of the subcommand, before the current word
  const CLI::Option* pending = nullptr;  // an option waiting for its value
  for (size_t i = 0; i + 1 < words.size(); ++i) {
    const std::string& w = words[i];
    if (pending) {
      pending = nullptr;
      continue;
    }
    if (starts_with(w, "-")) {
      const CLI::Option* o = option_named(sub ? *sub : app, w.substr(0, w.find('=')));
      if (takes_value(o) && w.find('=') == std::string::npos) pending = o;
      continue;
    }
    if (!sub) {
      for (const CLI::App* s : app.get_subcommands([](const CLI::App*) { return true; }))
        if (s->get_name() == w) sub = s;
      continue;
    }
    positionals.push_back(w);
  }
  std::vector<std::string> out;
  if (pending) {  // the value of an option
    const std::string name = pending->get_name();
    if (name == "--plugin-path" || name == "--runs-dir" || name == "--dir") return {"@dirs"};
    if (name == "--checkpoint" || name == "--output") return {"@files"};
    if (name == "--kind") {
      for (const auto& k : kinds()) out.push_back(k.name);
      return out;
    }
    return {};
  }
  if (starts_with(cur, "-")) {
    out = option_names(sub ? *sub : app);
  } else if (!sub) {
    for (const CLI::App* s : app.get_subcommands([](const CLI::App*) { return true; }))
      out.push_back(s->get_name());
  } else {
    const std::string& name = sub->get_name();
    if (name == "describe") {
      for (const auto& s : core::host_sections()) out.push_back(s.name);
      for (const auto& t : catalog.component_types()) out.push_back(t);
    } else if (name == "conformance") {
      for (const auto& m : catalog.plugins()) out.push_back(m.name);
    } else if (name == "completion") {
      out = {"bash", "zsh"};
    } else if (name == "validate" || name == "train" || name == "sample" || name == "eval" || name == "run") {
      if (positionals.empty()) return {"@pipelines"};
      return complete_override(catalog, positionals[0], cur);
    } else if (name == "sweep" || name == "table") {
      return {name == "sweep" ? "@pipelines" : "@files"};  // a sweep file is JSON too
    } else if (name == "report") {
      return {"@dirs"};
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> complete(const CLI::App& app, const core::PluginCatalog& catalog,
                                  const std::vector<std::string>& words) {
  const std::string cur = words.empty() ? "" : words.back();
  std::vector<std::string> matching;
  for (const auto& c : candidates(app, catalog, words))
    if ((c.front() == '@' || starts_with(c, cur)) && std::find(matching.begin(), matching.end(), c) == matching.end())
      matching.push_back(c);
  return matching;
}

std::string completion_script(const std::string& shell) {
  if (shell == "bash") return R"BASH(# flowkit completion for bash. Install: flowkit completion bash > ~/.local/share/bash-completion/completions/flowkit
# (or: source <(flowkit completion bash) in ~/.bashrc).
_flowkit() {
  local line="${COMP_LINE:0:COMP_POINT}" cur=""
  local -a words
  read -r -a words <<< "$line"
  [[ "$line" == *[[:space:]] || ${#words[@]} -le 1 ]] && words+=("")
  cur="${words[${#words[@]}-1]}"
  local IFS=$'\n'
  local -a out=($("${words[0]}" __complete "${words[@]:1}" 2>/dev/null))
  local nospace=0 files=0 pipelines=0 dirs=0 c
  local -a candidates=()
  for c in "${out[@]}"; do
    case "$c" in
      @nospace) nospace=1 ;;
      @pipelines) pipelines=1 ;;
      @files) files=1 ;;
      @dirs) dirs=1 ;;
      *) candidates+=("$c") ;;
    esac
  done
  COMPREPLY=()
  if (( pipelines )); then
    compopt -o filenames 2>/dev/null
    COMPREPLY=($(compgen -f -X '!*.json' -- "$cur") $(compgen -d -- "$cur"))
  elif (( files )); then
    compopt -o filenames 2>/dev/null
    COMPREPLY=($(compgen -f -- "$cur"))
  elif (( dirs )); then
    compopt -o filenames 2>/dev/null
    COMPREPLY=($(compgen -d -- "$cur"))
  else
    COMPREPLY=("${candidates[@]}")
  fi
  (( nospace )) && compopt -o nospace 2>/dev/null
  # Bash splits words at '=' and ':'; replace only what follows the last such character.
  local broken="${cur%"${cur##*[=:]}"}"
  if [[ -n "$broken" && "${COMP_WORDBREAKS}" == *=* ]]; then
    local i
    for i in "${!COMPREPLY[@]}"; do COMPREPLY[$i]="${COMPREPLY[$i]#"$broken"}"; done
  fi
  return 0
}
complete -F _flowkit flowkit
)BASH";
  if (shell == "zsh") return R"ZSH(#compdef flowkit
# flowkit completion for zsh. Install: flowkit completion zsh > "${fpath[1]}/_flowkit"
# (or: source <(flowkit completion zsh) in ~/.zshrc, after compinit).
_flowkit() {
  local -a out candidates
  out=("${(@f)$(${words[1]} __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
  local nospace=0 c
  for c in "${out[@]}"; do
    case "$c" in
      @nospace) nospace=1 ;;
      @pipelines) _files -g '*.json'; return ;;
      @files) _files; return ;;
      @dirs) _files -/; return ;;
      '') ;;
      *) candidates+=("$c") ;;
    esac
  done
  if (( nospace )); then compadd -S '' -Q -- "${candidates[@]}"; else compadd -Q -- "${candidates[@]}"; fi
}
if (( $+functions[compdef] )); then compdef _flowkit flowkit; fi
)ZSH";
  throw std::invalid_argument("unknown shell '" + shell + "'; flowkit completes bash and zsh");
}

}  // namespace flowkit::host
