#include "describe.h"

#include <fmt/format.h>

namespace flowkit::host {
namespace {
std::string fmt_default(const core::ParamSpec& p) {
  if (p.fallback) return p.fallback->dump();
  return p.required ? "(required)" : "(none)";
}
std::string fmt_range(const core::ParamSpec& p) {
  std::string r;
  if (!p.choices.empty()) {
    for (const auto& c : p.choices) r += (r.empty() ? "" : ", ") + c;
    return r;
  }
  if (p.min && p.max) r = fmt::format("[{}, {}]", *p.min, *p.max);
  else if (p.min) r = fmt::format(">= {}", *p.min);
  else if (p.max) r = fmt::format("<= {}", *p.max);
  if (p.allow_inf) r += (r.empty() ? "" : ", ") + std::string("or \"inf\"");
  return r;
}
std::string needs(const core::ComponentSpec& s) {
  std::string out;
  for (Kind k : s.needs) {
    out += (out.empty() ? "" : ", ") + std::string(kind_name(k));
    auto types = s.needs_types.find(k);
    if (types != s.needs_types.end()) {
      std::string list;
      for (const auto& t : types->second) list += (list.empty() ? "" : " or ") + t;
      out += " (" + list + ")";
    }
  }
  return out;
}
std::string title(const core::ComponentSpec& s) {
  return s.plugin == "flowkit" ? "\"" + s.name + "\" section" : s.type() + " (" + kind_name(s.kind) + ")";
}
}  // namespace

std::string describe_text(const core::ComponentSpec& s) {
  std::string out = title(s) + "\n  " + s.summary + "\n";
  if (!s.needs.empty()) out += "  needs: " + needs(s) + "\n";
  if (s.params.empty()) return out + "  (no parameters)\n";
  out += "  parameters:\n";
  for (const auto& p : s.params) {
    out += fmt::format("    {:<18} {:<8} default {:<12} {}\n", p.name, p.type, fmt_default(p), fmt_range(p));
    if (!p.doc.empty()) out += fmt::format("    {:<18} {}\n", "", p.doc);
  }
  return out;
}

std::string describe_markdown(const core::ComponentSpec& s) {
  std::string out = "### `" + (s.plugin == "flowkit" ? s.name : s.type()) + "`" +
                    (s.plugin == "flowkit" ? "" : std::string(" — ") + kind_name(s.kind)) + "\n\n" + s.summary + "\n\n";
  if (!s.needs.empty()) out += "Needs: " + needs(s) + ".\n\n";
  if (s.params.empty()) return out + "No parameters.\n\n";
  out += "| parameter | type | default | allowed | description |\n|---|---|---|---|---|\n";
  for (const auto& p : s.params)
    out += fmt::format("| `{}` | {} | `{}` | {} | {} |\n", p.name, p.type, fmt_default(p), fmt_range(p), p.doc);
  return out + "\n";
}
}  // namespace flowkit::host
