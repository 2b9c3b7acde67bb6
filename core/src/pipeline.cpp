// Pipeline validation: every problem at once, each with file, JSON pointer, expected and found.
#include "flowkit/core/pipeline.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace flowkit::core {
namespace {


// The schema of the host's own sections, in the plugin-manifest format.
const char* kHostSchema = R"json({
 "train": {
  "steps": {"type": "integer", "default": 1000, "min": 0, "doc": "optimizer steps"},
  "batch_size": {"type": "integer", "default": 256, "min": 1, "doc": "training minibatch size; in a distributed run the global batch, split evenly over the processes"},
  "optimizer": {"type": "string", "default": "adamw", "choices": ["adamw"], "doc": "optimizer (decoupled weight decay Adam)"},
  "lr": {"type": "number", "default": 0.001, "min": 0, "doc": "peak learning rate"},
  "weight_decay": {"type": "number", "default": 0.0, "min": 0, "doc": "AdamW weight decay"},
  "beta1": {"type": "number", "default": 0.9, "min": 0, "max": 0.999999, "doc": "Adam beta1"},
  "beta2": {"type": "number", "default": 0.999, "min": 0, "max": 0.999999, "doc": "Adam beta2"},
  "lr_schedule": {"type": "string", "default": "cosine", "choices": ["constant", "cosine"], "doc": "after warm-up: constant, or cosine decay to min_lr_ratio*lr at the last step"},
  "warmup_steps": {"type": "integer", "default": 0, "min": 0, "doc": "linear warm-up from 0 to lr"},
  "min_lr_ratio": {"type": "number", "default": 0.0, "min": 0, "max": 1, "doc": "final lr of the cosine schedule as a fraction of lr"},
  "ema_decay": {"type": "number", "default": 0.999, "min": 0, "max": 1, "doc": "EMA of the weights (used for sampling), with warm-up min(decay, (1+step)/(10+step)); 0 disables"},
  "grad_clip": {"type": "number", "default": 1.0, "min": 0, "doc": "clip the global gradient norm to this value; 0 disables"},
  "seed": {"type": "integer", "default": 0, "min": 0, "doc": "seed of the run's generator (data, noise, times)"},
  "threads": {"type": "integer", "default": 1, "min": 1, "max": 256, "doc": "LibTorch intra-op (OpenMP) threads; a separate pool from BLAS's (docs/performance.md)"},
  "blas_threads": {"type": "integer", "default": 0, "min": 0, "max": 256, "doc": "OpenBLAS threads for the matrix products; 0 leaves OpenBLAS's default (OPENBLAS_NUM_THREADS, else one per core)"},
  "device": {"type": "string", "default": "cpu", "doc": "torch device: cpu, cuda, cuda:1, ..."},
  "init_weights": {"type": "string", "default": "", "doc": "start from these weights (fine-tuning): a run's weights.safetensors or weights.pt, or any file of the same layout (docs/pipeline.md#weights); every parameter and buffer of the model must be there by name with its shape; empty: the model's own initialisation. A resumed run continues from its checkpoint instead"},
  "checkpoint_every": {"type": "integer", "default": 500, "min": 0, "doc": "write a checkpoint every N steps (and at the end); 0: only at the end"},
  "log_every": {"type": "integer", "default": 100, "min": 1, "doc": "write a metrics.jsonl line every N steps"},
  "dist_timeout": {"type": "number", "default": 300, "min": 1, "doc": "distributed runs (docs/distributed.md): seconds a process waits for the others at the rendezvous or in a collective before stopping with an error"}
 },
 "sample": {
  "count": {"type": "integer", "default": 1000, "min": 1, "doc": "number of samples to generate"},
  "batch_size": {"type": "integer", "default": 1000, "min": 1, "doc": "samples generated per solver call"},
  "steps": {"type": "integer", "default": 0, "min": 0, "doc": "solver steps; 0 keeps the solver's own setting"},
  "nfe": {"type": "integer", "default": 0, "min": 0, "doc": "velocity evaluations per sample, exactly: the steps of a fixed-step solver are chosen to spend this many (midpoint: nfe / 2 steps), and a number the solver cannot spend exactly (odd for midpoint, any for an adaptive solver) is refused, never rounded; 0 keeps the steps. Not with sample.steps"},
  "seed": {"type": "integer", "default": 1, "min": 0, "doc": "seed of the sampling generator"},
  "use_ema": {"type": "boolean", "default": true, "doc": "sample with the EMA weights"},
  "output": {"type": "string", "default": "samples", "doc": "folder inside the run directory"},
  "log_likelihood": {"type": "string", "default": "off", "choices": ["off", "exact", "hutchinson"], "doc": "also compute each sample's log-likelihood in the same forward solve (the divergence integrated along it: exact, or Hutchinson with one Rademacher probe per sample); written as log_likelihood.npy beside the samples, and eval reports sample_nll_bits_per_dim. Needs an ODE-integrating solver and a path with a prior density"}
 },
 "eval": {
  "metrics": {"type": "array", "default": [], "doc": "metric names of the domain; empty: all of the domain's metrics"},
  "reference_count": {"type": "integer", "default": 1000, "min": 1, "doc": "held-out items used as the reference"},
  "probe_label": {"type": "string", "default": "", "doc": "a label field of the reference batch (e.g. \"goal\"): eval also reports, for each of the model's representations at t = 1, the effective rank, the mean pairwise distance and the accuracy of a linear probe for this label (70/30 split of reference_count items); empty: off"},
  "likelihood": {"type": "string", "default": "off", "choices": ["off", "exact", "hutchinson"], "doc": "if not off, eval also reports nll_bits_per_dim and nll_nats of the reference items under the flow: the reverse ODE from the data to the prior through the solver's integrator and grid, the divergence integrated in the same solve (exact: one backward pass per dimension; hutchinson: one Rademacher probe per item, seeded by eval.seed). A continuous density of the domain's (normalised) data, not dequantised"},
  "likelihood_steps": {"type": "integer", "default": 0, "min": 0, "doc": "solver steps of the likelihood solve; 0: sample.steps, or the solver's own"},
  "straightness_steps": {"type": "integer", "default": 0, "min": 0, "doc": "if > 0, eval also reports the straightness of the learned flow (straightness_gap, straightness_relative: the mean squared deviation of the velocity from the chord x_1 − x_0, Liu et al. 2023), integrated by Euler over this many steps of the solver's grid from min(sample.count, sample.batch_size) prior draws; needs an ODE-integrating solver; 0: off"},
  "seed": {"type": "integer", "default": 2, "min": 0, "doc": "seed of the evaluation generator (reference draw, random projections)"}
 }
})json";

std::string type_of(const nlohmann::json& v) {
  if (v.is_number_integer()) return "integer " + v.dump();
  if (v.is_number()) return "number " + v.dump();
  std::string d = v.dump();
  if (d.size() > 40) d = d.substr(0, 37) + "...";
  return std::string(v.type_name()) + " " + d;
}

bool is_inf_word(const nlohmann::json& v) {
  if (!v.is_string()) return false;
  std::string s = v.get<std::string>();
  return s == "inf" || s == "infinity" || s == "+inf";
}

// Checks one value against its schema; returns the normalised value.
bool check_value(const ParamSpec& p, const nlohmann::json& v, std::string* why, nlohmann::json* out) {
  *out = v;
  if (p.type == "integer") {
    if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() && std::abs(v.get<double>()) < 9.2e18)
      *out = static_cast<int64_t>(v.get<double>());
    else if (!v.is_number_integer()) return *why = "expected integer, found " + type_of(v), false;
  } else if (p.type == "number") {
    if (p.allow_inf && is_inf_word(v)) return true;
    if (!v.is_number()) return *why = std::string("expected number") + (p.allow_inf ? " or \"inf\"" : "") + ", found " + type_of(v), false;
  } else if (p.type == "boolean") {
    if (!v.is_boolean()) return *why = "expected boolean, found " + type_of(v), false;
  } else if (p.type == "path") {
    if (!v.is_string()) return *why = "expected a file or folder name (string), found " + type_of(v), false;
  } else if (p.type == "string") {
    if (!v.is_string()) return *why = "expected string, found " + type_of(v), false;
    if (!p.choices.empty() && std::find(p.choices.begin(), p.choices.end(), v.get<std::string>()) == p.choices.end()) {
      *why = "expected one of " + nlohmann::json(p.choices).dump() + ", found \"" + v.get<std::string>() + "\"" +
             did_you_mean(v.get<std::string>(), p.choices);
      return false;
    }
  } else if (p.type == "array") {
    if (!v.is_array()) return *why = "expected array, found " + type_of(v), false;
  } else if (p.type == "object") {
    if (!v.is_object()) return *why = "expected object, found " + type_of(v), false;
  } else if (p.type == "component") {
    if (!v.is_object() || !v.contains("type") || !v.at("type").is_string())
      return *why = std::string("expected a ") + kind_name(p.component_kind) +
                    " component {\"type\": \"<plugin>.<component>\", ...}, found " + type_of(v), false;
  }
  if ((p.type == "integer" || p.type == "number") && out->is_number()) {
    double x = out->get<double>();
    if ((p.min && x < *p.min) || (p.max && x > *p.max)) {
      std::string range = p.min && p.max ? fmt::format("in [{}, {}]", *p.min, *p.max)
                          : p.min        ? fmt::format(">= {}", *p.min)
                                         : fmt::format("<= {}", *p.max);
      *why = "expected " + p.type + " " + range + ", found " + out->dump();
      return false;
    }
  }
  return true;
}

}  // namespace

// A relative file name in a pipeline means: beside the pipeline file, wherever the command runs
// from. The resolved pipeline keeps the absolute name, so a run reopened from its own
// pipeline.resolved.json finds the same file.
static std::string relative_to_pipeline(const std::string& name, const std::string& pipeline_file) {
  namespace fs = std::filesystem;
  if (name.empty() || fs::path(name).is_absolute() || !fs::is_regular_file(pipeline_file)) return name;
  return fs::absolute(fs::path(pipeline_file).parent_path() / name).lexically_normal().string();
}

// A nested component: its type must exist and be of the declared kind; its parameters are
// checked (and defaulted) like a top-level section's.
static nlohmann::json check_component(const ParamSpec& p, const nlohmann::json& v, const std::string& file,
                                      const std::string& pointer, std::vector<Problem>& problems, const PluginCatalog& host) {
  std::string type = v.at("type").get<std::string>();
  auto spec = host.find(type);
  if (!spec) {
    problems.push_back({file, pointer + "/type", spec.error()});
    return v;
  }
  if ((*spec)->kind != p.component_kind) {
    problems.push_back({file, pointer + "/type", std::string("expected a ") + kind_name(p.component_kind) + " component, found '" +
                                                     type + "', which is a " + kind_name((*spec)->kind)});
    return v;
  }
  return check_params((*spec)->params, v, file, pointer, problems, {"type"}, &host);
}

std::string Problem::str() const { return file + ":" + (pointer.empty() ? "/" : pointer) + ": " + message; }

std::string Validation::report() const {
  std::string out;
  for (const auto& p : problems) out += p.str() + "\n";
  return out;
}

Config Pipeline::section(const std::string& key) const {
  return Config(resolved.contains(key) ? resolved.at(key) : nlohmann::json::object(), file, "/" + key);
}

nlohmann::json check_params(const std::vector<ParamSpec>& params, const nlohmann::json& object, const std::string& file,
                            const std::string& pointer, std::vector<Problem>& problems,
                            const std::vector<std::string>& reserved, const PluginCatalog* host) {
  nlohmann::json out = nlohmann::json::object();
  std::vector<std::string> names;
  for (const auto& p : params) names.push_back(p.name);
  for (const auto& [key, value] : object.items()) {
    if (std::find(reserved.begin(), reserved.end(), key) != reserved.end()) {
      out[key] = value;
      continue;
    }
    const ParamSpec* spec = nullptr;
    for (const auto& p : params)
      if (p.name == key) spec = &p;
    if (!spec) {
      problems.push_back({file, pointer + "/" + key,
                          "unknown key \"" + key + "\"" + did_you_mean(key, names) +
                              (names.empty() ? "; this component takes no parameters"
                                             : "; known keys: " + fmt::format("{}", fmt::join(names, ", ")))});
      continue;
    }
    std::string why;
    nlohmann::json normalised;
    if (!check_value(*spec, value, &why, &normalised)) problems.push_back({file, pointer + "/" + key, why});
    else if (spec->type == "component" && host) out[key] = check_component(*spec, value, file, pointer + "/" + key, problems, *host);
    else if (spec->type == "path") out[key] = relative_to_pipeline(normalised.get<std::string>(), file);
    else out[key] = normalised;
  }
  for (const auto& p : params) {
    if (object.contains(p.name)) continue;
    if (p.fallback && p.type == "component" && host && p.fallback->is_object() && p.fallback->contains("type"))
      out[p.name] = check_component(p, *p.fallback, file, pointer + "/" + p.name, problems, *host);  // its defaults too
    else if (p.fallback) out[p.name] = *p.fallback;
    else if (p.required) problems.push_back({file, pointer + "/" + p.name, "required parameter is missing (" + p.type + ")"});
  }
  return out;
}

const std::vector<ComponentSpec>& host_sections() {
  static const std::vector<ComponentSpec> sections = [] {
    std::vector<ComponentSpec> out;
    auto schema = nlohmann::json::parse(kHostSchema);
    for (const char* name : {"train", "sample", "eval"}) {
      ComponentSpec s;
      s.plugin = "flowkit";
      s.name = name;
      for (const auto& [k, v] : schema.at(name).items()) s.params.push_back(parse_param(k, v, "<host schema>", name));
      out.push_back(std::move(s));
    }
    out[0].summary = "training loop: AdamW, warm-up + cosine lr, EMA, gradient clipping, checkpoints";
    out[1].summary = "generation with the trained (EMA) model";
    out[2].summary = "metrics of generated samples against held-out data";
    return out;
  }();
  return sections;
}

Validation validate_pipeline_file(const std::string& file, const PluginCatalog& host) {
  return validate_pipeline_file(file, host, {});
}

namespace {
struct Override {
  std::string text, pointer;
};

// Applies "a.b.c=value" to `doc`; returns the overrides' JSON pointers, or adds problems.
std::vector<Override> apply_overrides(nlohmann::json& doc, const std::vector<std::string>& overrides,
                                      std::vector<Problem>& problems) {
  std::vector<Override> applied;
  for (const auto& text : overrides) {
    const std::string source = "command line override '" + text + "'";
    const auto eq = text.find('=');
    const std::string path = eq == std::string::npos ? "" : text.substr(0, eq);
    if (path.empty() || path.front() == '.' || path.back() == '.' || path.find("..") != std::string::npos) {
      problems.push_back({source, "", "expected section.key=value (e.g. train.steps=500)"});
      continue;
    }
    const std::string raw = text.substr(eq + 1);
    nlohmann::json value;
    try {
      value = nlohmann::json::parse(raw);  // 500, 0.1, true, "inf", {"type": ...}
    } catch (const nlohmann::json::exception&) {
      value = raw;  // a bare word: a string (standard.heun, cosine)
    }
    nlohmann::json* node = &doc;
    std::string pointer;
    bool ok = true;
    for (size_t start = 0; ok;) {
      const size_t dot = path.find('.', start);
      const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      pointer += "/" + key;  // as validation writes its pointers
      if (!node->is_object()) {
        problems.push_back({source, pointer, "cannot set a key inside a " + std::string(node->type_name())});
        ok = false;
        break;
      }
      if (dot == std::string::npos) {
        if (value.is_null()) node->erase(key);  // path=null: the pipeline without that section (or key)
        else (*node)[key] = value;
        break;
      }
      node = &(*node)[key];
      if (node->is_null()) *node = nlohmann::json::object();
      start = dot + 1;
    }
    if (ok) applied.push_back({text, pointer});
  }
  return applied;
}
}  // namespace

Validation validate_pipeline_file(const std::string& file, const PluginCatalog& host, const std::vector<std::string>& overrides) {
  std::ifstream in(file);
  if (!in) {
    Validation v;
    v.pipeline.file = file;
    v.problems.push_back({file, "", "cannot open pipeline file"});
    return v;
  }
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    Validation v;
    v.pipeline.file = file;
    v.problems.push_back({file, "", std::string("malformed JSON: ") + e.what()});
    return v;
  }
  std::vector<Problem> override_problems;
  const std::vector<Override> applied = doc.is_object() ? apply_overrides(doc, overrides, override_problems)
                                                        : std::vector<Override>{};
  Validation v = validate_pipeline(doc, file, host);
  // A relative path typed on the command line means the working directory's file, not one
  // beside the pipeline: where validation turned an override's relative string into a path
  // beside the pipeline file, it is re-anchored here.
  for (const auto& o : applied) {
    nlohmann::json::json_pointer ptr;
    try {
      ptr = nlohmann::json::json_pointer(o.pointer);
    } catch (const nlohmann::json::exception&) {
      continue;  // a key JSON pointers cannot spell ("~"): no path parameter has one
    }
    if (!doc.contains(ptr) || !doc.at(ptr).is_string() || !v.pipeline.resolved.contains(ptr)) continue;
    const std::string raw = doc.at(ptr).get<std::string>();
    nlohmann::json& resolved = v.pipeline.resolved.at(ptr);
    if (resolved.is_string() && !raw.empty() && std::filesystem::path(raw).is_relative() && resolved.get<std::string>() != raw &&
        resolved.get<std::string>() == relative_to_pipeline(raw, file))
      resolved = std::filesystem::absolute(raw).lexically_normal().string();
  }
  // A problem at (or inside) an overridden value is the override's, not the file's.
  for (auto& p : v.problems)
    for (const auto& o : applied)
      if (p.pointer == o.pointer || p.pointer.rfind(o.pointer + "/", 0) == 0) p.file = "command line override '" + o.text + "'";
  v.problems.insert(v.problems.begin(), override_problems.begin(), override_problems.end());
  return v;
}

Validation validate_pipeline(const nlohmann::json& doc, const std::string& file, const PluginCatalog& host) {
  Validation v;
  v.pipeline.file = file;
  auto& problems = v.problems;
  if (!doc.is_object()) {
    problems.push_back({file, "", "a pipeline must be a JSON object, found " + type_of(doc)});
    return v;
  }
  nlohmann::json resolved = nlohmann::json::object();
  std::vector<std::string> top = {"name", "description", "plugins"};
  for (const auto& k : kinds()) top.push_back(k.name);
  for (const auto& s : host_sections()) top.push_back(s.name);
  for (const auto& [key, value] : doc.items())
    if (std::find(top.begin(), top.end(), key) == top.end())
      problems.push_back({file, "/" + key, "unknown key \"" + key + "\"" + did_you_mean(key, top)});

  std::string fallback_name = std::filesystem::path(file).stem().string();
  if (doc.contains("name") && !doc.at("name").is_string())
    problems.push_back({file, "/name", "expected string, found " + type_of(doc.at("name"))});
  resolved["name"] = doc.contains("name") && doc.at("name").is_string() ? doc.at("name").get<std::string>() : fallback_name;
  if (doc.contains("description")) resolved["description"] = doc.at("description");
  if (doc.contains("plugins")) {
    const auto& pins = doc.at("plugins");
    if (!pins.is_object()) problems.push_back({file, "/plugins", "expected object {plugin: {\"sha256\": hex}}, found " + type_of(pins)});
    else
      for (const auto& [plugin, pin] : pins.items()) {
        std::string ptr = "/plugins/" + plugin;
        if (!pin.is_object() || !pin.contains("sha256") || !pin.at("sha256").is_string() ||
            pin.at("sha256").get<std::string>().size() != 64)
          problems.push_back({file, ptr, "expected {\"sha256\": \"<64 hex digits>\"}, found " + type_of(pin)});
        else if (pin.size() != 1)
          problems.push_back({file, ptr, "only \"sha256\" may be pinned"});
      }
    resolved["plugins"] = pins;
  }

  for (const KindInfo& kind : kinds()) {
    const char* section = kind.name;
    std::string ptr = std::string("/") + section;
    if (!doc.contains(section)) {
      if (!kind.optional) problems.push_back({file, ptr, std::string("required section \"") + section + "\" is missing"});
      continue;
    }
    const auto& s = doc.at(section);
    if (!s.is_object()) {
      problems.push_back({file, ptr, "expected object {\"type\": \"<plugin>.<component>\", ...}, found " + type_of(s)});
      continue;
    }
    if (!s.contains("type") || !s.at("type").is_string()) {
      problems.push_back({file, ptr + "/type", "expected a string \"<plugin>.<component>\"" +
                                                   std::string(s.contains("type") ? ", found " + type_of(s.at("type")) : " (missing)")});
      continue;
    }
    std::string type = s.at("type").get<std::string>();
    auto spec = host.find(type);
    if (!spec) {
      problems.push_back({file, ptr + "/type", spec.error()});
      continue;
    }
    const Kind expected = kind.kind;
    if ((*spec)->kind != expected) {
      problems.push_back({file, ptr + "/type", "expected a " + std::string(section) + " component, found '" + type +
                                                   "', which is a " + kind_name((*spec)->kind)});
      continue;
    }
    resolved[section] = check_params((*spec)->params, s, file, ptr, problems, {"type"}, &host);
    for (Kind need : (*spec)->needs) {
      const char* section_name = kind_name(need);
      if (!doc.contains(section_name)) {
        problems.push_back({file, ptr + "/type", "'" + type + "' needs a \"" + section_name +
                                                     "\" section, which the pipeline does not have"});
        continue;
      }
      auto wanted = (*spec)->needs_types.find(need);
      const auto& other = doc.at(section_name);
      if (wanted == (*spec)->needs_types.end() || !other.is_object() || !other.contains("type") || !other.at("type").is_string())
        continue;
      const std::string have = other.at("type").get<std::string>();
      const auto& allowed = wanted->second;
      if (std::find(allowed.begin(), allowed.end(), have) == allowed.end())
        problems.push_back({file, ptr + "/type", "'" + type + "' needs a " + section_name + " of type " +
                                                     fmt::format("{}", fmt::join(allowed, " or ")) + ", found '" + have + "' at /" +
                                                     section_name + "/type"});
    }
  }

  for (const auto& hs : host_sections()) {
    std::string ptr = "/" + hs.name;
    nlohmann::json s = doc.contains(hs.name) ? doc.at(hs.name) : nlohmann::json::object();
    if (!s.is_object()) {
      problems.push_back({file, ptr, "expected object, found " + type_of(s)});
      continue;
    }
    resolved[hs.name] = check_params(hs.params, s, file, ptr, problems);
  }
  if (resolved.contains("eval") && resolved["eval"].contains("metrics"))
    for (size_t i = 0; i < resolved["eval"]["metrics"].size(); ++i)
      if (!resolved["eval"]["metrics"][i].is_string())
        problems.push_back({file, "/eval/metrics/" + std::to_string(i), "expected string, found " + type_of(resolved["eval"]["metrics"][i])});
  v.pipeline.name = resolved["name"].get<std::string>();
  v.pipeline.resolved = std::move(resolved);
  return v;
}

}  // namespace flowkit::core
