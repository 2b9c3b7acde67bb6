#include "sweep_results.h"

#include <fstream>

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

}  // namespace

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

size_t write_sweep_results(const std::string& sweep, const fs::path& folder, const std::vector<SweepPoint>& points) {
  std::string text;
  size_t lines = 0;
  for (const auto& p : points) {
    const fs::path dir = folder / p.name;
    nlohmann::json metrics;
    if (!read_json(dir / "eval.json", &metrics)) continue;
    nlohmann::ordered_json line = {{"sweep", sweep},
                                   {"point", p.name},
                                   {"run", p.name},
                                   {"settings", settings_object(p.settings)},
                                   {"seed", p.seed},
                                   {"eval", nullptr},
                                   {"eval_settings", nlohmann::ordered_json::object()},
                                   {"train_seconds", training_seconds(dir)},
                                   {"metrics", metrics}};
    text += line.dump() + "\n";
    ++lines;
    for (const auto& e : p.evals) {
      nlohmann::json em;
      if (!read_json(dir / "evals" / (e.label + ".json"), &em)) continue;
      line["eval"] = e.label;
      line["eval_settings"] = settings_object(e.settings);
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
