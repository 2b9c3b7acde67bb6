#include "sweep_results.h"

#include <fstream>
#include <map>

namespace fs = std::filesystem;

namespace flowkit::host {
namespace {

bool read_json(const fs::path& file, nlohmann::json* out) {
  std::ifstream in(file);
  if (!in) return false;
  try {
    *out = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    return false;  // a half-written file is an unfinished point
  }
  return true;
}

nlohmann::ordered_json settings_object(const std::vector<std::pair<std::string, nlohmann::ordered_json>>& settings) {
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  for (const auto& [k, v] : settings) o[k] = v;
  return o;
}

nlohmann::ordered_json config_of(const nlohmann::json& pipeline, const std::vector<std::string>& keys,
                                 const std::vector<std::pair<std::string, nlohmann::ordered_json>>& eval_settings) {
  nlohmann::ordered_json c = nlohmann::ordered_json::object();
  for (const auto& k : keys) c[k] = resolved_value(pipeline, k);
  for (const auto& [k, v] : eval_settings) c[k] = v;  // the eval-only point's own value
  return c;
}

}  // namespace

nlohmann::ordered_json training_summary(const fs::path& run_dir) {
  std::map<std::string, double> last, sum;
  std::map<std::string, int> count;
  std::ifstream in(run_dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || j.contains("eval")) continue;
    for (const auto& [k, v] : j.items())
      if (k != "step" && v.is_number()) {
        last[k] = v.get<double>();
        sum[k] += v.get<double>();
        ++count[k];
      }
  }
  nlohmann::ordered_json final_values = nlohmann::ordered_json::object(), means = nlohmann::ordered_json::object();
  for (const auto& [k, v] : last) final_values[k] = v;
  for (const auto& [k, v] : sum) means[k] = v / count[k];
  return {{"final", final_values}, {"mean", means}};
}

nlohmann::json resolved_value(const nlohmann::json& pipeline, const std::string& key) {
  std::string pointer;
  for (size_t start = 0;;) {
    const size_t dot = key.find('.', start);
    pointer += "/" + key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  const nlohmann::json::json_pointer p(pointer);
  return pipeline.contains(p) ? pipeline[p] : nlohmann::json();
}

std::vector<ResultLine> read_results(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot open '" + file.string() + "'");
  std::vector<ResultLine> lines;
  int number = 0;
  for (std::string text; std::getline(in, text);) {
    ++number;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("metrics"))
      throw std::runtime_error(file.string() + ":" + std::to_string(number) + ": not a results line (a JSON object with \"metrics\")");
    lines.push_back({std::move(j), number});
  }
  return lines;
}

double training_seconds(const fs::path& run_dir) {
  std::ifstream in(run_dir / "metrics.jsonl");
  double total = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.find("\"train_session\"") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("train_session")) total += j["train_session"].value("seconds", 0.0);
  }
  return total;
}

size_t write_sweep_results(const std::string& sweep, const fs::path& folder, const std::vector<SweepPoint>& points,
                           const std::vector<std::string>& swept_keys) {
  std::string text;
  size_t lines = 0;
  for (const auto& p : points) {
    const fs::path dir = folder / p.name;
    nlohmann::json metrics;
    if (!read_json(dir / "eval.json", &metrics)) continue;
    nlohmann::json pipeline = nlohmann::json::object();
    read_json(dir / "pipeline.resolved.json", &pipeline);
    nlohmann::ordered_json line = {{"sweep", sweep},
                                   {"point", p.name},
                                   {"run", p.name},
                                   {"settings", settings_object(p.settings)},
                                   {"seed", p.seed},
                                   {"eval", nullptr},
                                   {"eval_settings", nlohmann::ordered_json::object()},
                                   {"config", config_of(pipeline, swept_keys, {})},
                                   {"train_seconds", training_seconds(dir)},
                                   {"train", training_summary(dir)},
                                   {"metrics", metrics}};
    text += line.dump() + "\n";
    ++lines;
    for (const auto& e : p.evals) {
      nlohmann::json em;
      if (!read_json(dir / "evals" / (e.label + ".json"), &em)) continue;
      line["eval"] = e.label;
      line["eval_settings"] = settings_object(e.settings);
      line["config"] = config_of(pipeline, swept_keys, e.settings);
      line["metrics"] = em;
      text += line.dump() + "\n";
      ++lines;
    }
  }
  const fs::path tmp = folder / "results.jsonl.tmp";
  std::ofstream(tmp) << text;
  fs::rename(tmp, folder / "results.jsonl");
  return lines;
}

}  // namespace flowkit::host
