#include "results_table.h"

#include "sweep_results.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace flowkit::host {

double student_t95(int df) {
  static const double table[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                 2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                 2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  if (df < 1) return NAN;
  if (df <= 30) return table[df - 1];
  return 1.95996 + 2.37 / df;  // within 0.002 of the exact quantile for df > 30
}

namespace {

using Line = ResultLine;

void flatten(const json& j, const std::string& prefix, std::map<std::string, double>* out) {
  for (const auto& [k, v] : j.items()) {
    const std::string key = prefix.empty() ? k : prefix + "." + k;
    if (v.is_object()) flatten(v, key, out);
    else if (v.is_number()) (*out)[key] = v.get<double>();
  }
}

std::string text_of(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  if (v.is_number_float()) {  // 1e+06 rather than 1000000.0, where that loses nothing
    const std::string g = fmt::format("{:g}", v.get<double>());
    if (std::strtod(g.c_str(), nullptr) == v.get<double>()) return g;
  }
  return v.dump();
}

// A point's name without its seed: the sweep names every run "<name>_seed-<seed>", so this is
// the sweep file's "name" of a named point (or its settings' name), the same for all its seeds.
std::string point_name(const json& line) {
  std::string point = line.value("point", std::string());
  const std::string suffix = "_seed-" + text_of(line.value("seed", json()));
  if (point.size() > suffix.size() && point.compare(point.size() - suffix.size(), suffix.size(), suffix) == 0)
    point.resize(point.size() - suffix.size());
  return point.empty() ? "-" : point;
}

// The value of `key` for one result line: the line's own fields, its swept settings, the
// values of every swept key recorded with it ("config"), then the run's resolved pipeline when
// the run directory is beside the file (so rows may name any pipeline key, swept or not).
class KeyLookup {
 public:
  explicit KeyLookup(fs::path folder) : folder_(std::move(folder)) {}
  std::string value(const Line& l, const std::string& key) {
    for (const char* top : {"seed", "eval", "point", "sweep", "run"})
      if (key == top) return text_of(l.j.value(top, json()));
    if (key == "name") return point_name(l.j);
    if (l.j.contains("eval_settings") && l.j["eval_settings"].contains(key)) return text_of(l.j["eval_settings"][key]);
    if (l.j.contains("settings") && l.j["settings"].contains(key)) return text_of(l.j["settings"][key]);
    if (l.j.contains("config") && l.j["config"].contains(key)) return text_of(l.j["config"][key]);
    return text_of(resolved_value(pipeline(l.j.value("run", std::string())), key));  // "-" when absent
  }

 private:
  const json& pipeline(const std::string& run) {
    auto it = cache_.find(run);
    if (it != cache_.end()) return it->second;
    json j = json::object();
    std::ifstream in(folder_ / run / "pipeline.resolved.json");
    if (in) j = json::parse(in, nullptr, false);
    if (j.is_discarded()) j = json::object();
    return cache_[run] = j;
  }
  fs::path folder_;
  std::map<std::string, json> cache_;
};

// "0" matches 0.0 and "1e6" matches 1000000.0: numbers compare as numbers, the rest as text.
bool same_value(const std::string& a, const std::string& b) {
  if (a == b) return true;
  char *ea = nullptr, *eb = nullptr;
  const double x = std::strtod(a.c_str(), &ea), y = std::strtod(b.c_str(), &eb);
  return !a.empty() && !b.empty() && *ea == '\0' && *eb == '\0' && x == y;
}

struct Cell {
  std::vector<double> values;
  std::vector<double> trials;  // --interval wilson: each line's number of trials
  std::multiset<std::string> seeds;
};

// Wilson score interval of k successes in n trials (95 %).
std::pair<double, double> wilson95(double k, double n) {
  if (n <= 0) return {0, 1};
  const double z = 1.959964, p = k / n, d = 1 + z * z / n;
  const double centre = (p + z * z / (2 * n)) / d, half = z * std::sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d;
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

std::string joined(const std::vector<std::string>& parts) { return fmt::format("{}", fmt::join(parts, ", ")); }

// The inverse of joined() for a known number of keys (values never hold ", " in practice; the
// last part takes the rest).
std::vector<std::string> split_values(const std::string& text, size_t count) {
  std::vector<std::string> parts;
  if (count == 0) return parts;
  size_t start = 0;
  for (size_t i = 0; i + 1 < count; ++i) {
    const size_t comma = text.find(", ", start);
    if (comma == std::string::npos) break;
    parts.push_back(text.substr(start, comma - start));
    start = comma + 2;
  }
  parts.push_back(text.substr(start));
  return parts;
}

std::string format_cell(const Cell& c, const std::string& interval, bool show_n) {
  if (c.values.empty()) return "";
  if (interval == "wilson") {  // rates pooled over the seeds' trials
    double k = 0, n = 0;
    for (size_t i = 0; i < c.values.size(); ++i) k += c.values[i] * c.trials[i], n += c.trials[i];
    const auto [lo, hi] = wilson95(k, n);
    return fmt::format("{:.3f} [{:.3f}, {:.3f}]{}", n > 0 ? k / n : 0.0, lo, hi, show_n ? fmt::format(" (n={})", c.values.size()) : "");
  }
  const double n = static_cast<double>(c.values.size());
  double mean = 0;
  for (double v : c.values) mean += v;
  mean /= n;
  double var = 0;
  for (double v : c.values) var += (v - mean) * (v - mean);
  const double sd = c.values.size() > 1 ? std::sqrt(var / (n - 1)) : 0;
  double half = 0;
  if (interval == "ci95" && c.values.size() > 1) half = student_t95(static_cast<int>(n) - 1) * sd / std::sqrt(n);
  else if (interval == "sem") half = sd / std::sqrt(n);
  else if (interval == "std") half = sd;
  std::string text;
  if (std::fabs(mean) < 1e-12) mean = 0;  // no "-0.0000"
  if (half <= 1e-9 * std::fabs(mean)) half = 0;  // identical values (e.g. one training seen by several sampling seeds)
  if (half > 0 && std::isfinite(half)) {
    // Two significant digits of the interval; the mean to the same decimal place.
    const int decimals = std::clamp(1 - static_cast<int>(std::floor(std::log10(half))), 0, 10);
    if (std::fabs(mean) < 0.5 * std::pow(10.0, -decimals)) mean = 0;
    text = fmt::format("{:.{}f} ± {:.{}f}", mean, decimals, half, decimals);
  } else {
    text = fmt::format("{:.4g}", mean);
  }
  if (show_n) text += fmt::format(" (n={})", c.values.size());
  return text;
}

std::string interval_name(const std::string& interval) {
  if (interval == "ci95") return "± half-width of the 95 % Student-t interval";
  if (interval == "sem") return "± standard error";
  if (interval == "wilson") return "rate pooled over the seeds' trials [Wilson 95 % interval]";
  if (interval == "std") return "± standard deviation";
  return "(no interval)";
}

}  // namespace

std::string render_table(const TableOptions& o, std::string* warnings_out) {
  if (o.format != "md" && o.format != "csv") throw std::invalid_argument("--format is md or csv, not \"" + o.format + "\"");
  if (o.interval != "ci95" && o.interval != "sem" && o.interval != "std" && o.interval != "none" && o.interval != "wilson")
    throw std::invalid_argument("--interval is ci95, sem, std, none or wilson, not \"" + o.interval + "\"");
  if ((o.interval == "wilson") != !o.count.empty())
    throw std::invalid_argument("--interval wilson and --count METRIC (each line's number of trials) go together");
  if (o.rows.empty()) throw std::invalid_argument("give at least one --rows key");
  const std::vector<Line> lines = read_results(o.file);
  KeyLookup lookup(fs::path(o.file).parent_path());

  // Eval-only lines count when the table is about evaluation settings; otherwise the trained points only.
  std::set<std::string> eval_keys;
  for (const auto& l : lines)
    if (l.j.contains("eval_settings"))
      for (const auto& [k, v] : l.j["eval_settings"].items()) eval_keys.insert(k);
  bool about_evals = false;
  auto consider = [&](const std::string& key) { about_evals |= key == "eval" || eval_keys.count(key) > 0; };
  for (const auto& k : o.rows) consider(k);
  for (const auto& k : o.cols) consider(k);
  std::vector<std::pair<std::string, std::string>> filters;
  for (const auto& w : o.where) {
    const auto eq = w.find('=');
    if (eq == std::string::npos || eq == 0) throw std::invalid_argument("--where takes key=value, not \"" + w + "\"");
    filters.emplace_back(w.substr(0, eq), w.substr(eq + 1));
    consider(filters.back().first);
  }

  std::vector<std::string> metrics = o.metrics;
  std::vector<std::string> row_order, col_order;
  std::map<std::pair<std::string, std::string>, std::map<std::string, Cell>> cells;  // (row, col) -> metric -> cell
  std::set<std::string> all_metrics;
  size_t used = 0;
  for (const auto& l : lines) {
    if (!about_evals && !l.j.value("eval", json()).is_null()) continue;
    bool keep = true;
    for (const auto& [k, v] : filters) keep &= same_value(lookup.value(l, k), v);
    if (!keep) continue;
    ++used;
    std::vector<std::string> rv, cv;
    for (const auto& k : o.rows) rv.push_back(lookup.value(l, k));
    for (const auto& k : o.cols) cv.push_back(lookup.value(l, k));
    const std::string r = joined(rv), c = joined(cv);
    if (std::find(row_order.begin(), row_order.end(), r) == row_order.end()) row_order.push_back(r);
    if (std::find(col_order.begin(), col_order.end(), c) == col_order.end()) col_order.push_back(c);
    std::map<std::string, double> values;
    flatten(l.j["metrics"], "", &values);
    if (l.j.contains("train_seconds") && l.j["train_seconds"].is_number()) values["train_seconds"] = l.j["train_seconds"].get<double>();
    if (l.j.contains("train") && l.j["train"].is_object()) flatten(l.j["train"], "train", &values);  // train.final.loss, train.mean.*
    if (!o.count.empty() && !values.count(o.count))
      throw std::runtime_error(fmt::format("{}:{}: no metric \"{}\" (--count) in this line", o.file, l.number, o.count));
    for (const auto& [name, v] : values) {
      all_metrics.insert(name);
      Cell& cell = cells[{r, c}][name];
      cell.values.push_back(v);
      if (!o.count.empty()) cell.trials.push_back(values.at(o.count));
      cell.seeds.insert(text_of(l.j.value("seed", json())));
    }
  }
  // Columns of numbers in numeric order (the pipeline's own value sits among the swept ones).
  if (std::all_of(col_order.begin(), col_order.end(), [](const std::string& c) {
        char* end = nullptr;
        std::strtod(c.c_str(), &end);
        return !c.empty() && *end == '\0';
      }))
    std::stable_sort(col_order.begin(), col_order.end(),
                     [](const std::string& a, const std::string& b) { return std::strtod(a.c_str(), nullptr) < std::strtod(b.c_str(), nullptr); });
  if (used == 0) throw std::runtime_error(o.file + ": no result line matches (" + std::to_string(lines.size()) + " lines read)");
  for (const auto& m : metrics)
    if (!all_metrics.count(m))
      throw std::invalid_argument(fmt::format("no metric \"{}\" in {}; it has: {}", m, o.file, fmt::join(all_metrics, ", ")));
  if (metrics.empty())
    for (const auto& m : all_metrics)
      if (m != "step" && m != "samples" && m.rfind("train.", 0) != 0) metrics.push_back(m);

  // A cell that holds one seed twice pools points that differ in something not on the table.
  std::string warnings;
  size_t min_n = SIZE_MAX, max_n = 0;
  for (const auto& [rc, by_metric] : cells)
    for (const auto& [m, cell] : by_metric) {
      if (std::find(metrics.begin(), metrics.end(), m) == metrics.end()) continue;
      min_n = std::min(min_n, cell.values.size());
      max_n = std::max(max_n, cell.values.size());
      for (const auto& s : cell.seeds)
        if (cell.seeds.count(s) > 1 && warnings.empty())
          warnings = fmt::format("the cell ({}; {}) has seed {} {} times: it pools points that differ in a key "
                                 "not on the table; add it to --rows/--cols or --where",
                                 rc.first, rc.second, s, cell.seeds.count(s));
    }
  const bool show_n = min_n != max_n;

  std::string out;
  if (o.format == "csv") {
    auto csv = [](const std::string& s) {
      if (s.find_first_of(",\"\n") == std::string::npos) return s;
      std::string q = "\"";
      for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
      return q + "\"";
    };
    std::vector<std::string> header = o.rows;
    header.insert(header.end(), o.cols.begin(), o.cols.end());
    header.insert(header.end(), {"metric", "mean", "interval", "n"});
    out += fmt::format("{}\n", fmt::join(header, ","));
    for (const auto& m : metrics)
      for (const auto& r : row_order)
        for (const auto& c : col_order) {
          auto it = cells.find({r, c});
          if (it == cells.end() || !it->second.count(m)) continue;
          const Cell& cell = it->second.at(m);
          double mean = 0, var = 0, n = static_cast<double>(cell.values.size());
          for (double v : cell.values) mean += v / n;
          for (double v : cell.values) var += (v - mean) * (v - mean);
          const double sd = n > 1 ? std::sqrt(var / (n - 1)) : 0;
          double half = o.interval == "ci95" && n > 1 ? student_t95(static_cast<int>(n) - 1) * sd / std::sqrt(n)
                        : o.interval == "sem"        ? sd / std::sqrt(n)
                        : o.interval == "std"        ? sd
                                                     : 0;
          if (o.interval == "wilson") {  // the pooled rate; the interval's half-width (it is not symmetric: md shows both ends)
            double k = 0, trials = 0;
            for (size_t i = 0; i < cell.values.size(); ++i) k += cell.values[i] * cell.trials[i], trials += cell.trials[i];
            const auto [lo, hi] = wilson95(k, trials);
            mean = trials > 0 ? k / trials : 0;
            half = (hi - lo) / 2;
          }
          std::string keys;
          for (const auto& part : split_values(r, o.rows.size())) keys += csv(part) + ",";
          for (const auto& part : split_values(c, o.cols.size())) keys += csv(part) + ",";
          out += fmt::format("{}{},{:.6g},{:.6g},{}\n", keys, csv(m), mean, half, cell.values.size());
        }
    *warnings_out = warnings;
    return out;
  }
  auto md_table = [&](const std::vector<std::string>& headers, const std::vector<std::vector<std::string>>& body) {
    std::string t = "| " + fmt::format("{}", fmt::join(headers, " | ")) + " |\n|";
    for (size_t i = 0; i < headers.size(); ++i) t += i < o.rows.size() ? "---|" : "---:|";
    t += "\n";
    for (const auto& row : body) t += "| " + fmt::format("{}", fmt::join(row, " | ")) + " |\n";
    return t;
  };
  auto split_row = [&](const std::string& r) { return split_values(r, o.rows.size()); };
  if (o.cols.empty()) {
    std::vector<std::string> headers = o.rows;
    headers.insert(headers.end(), metrics.begin(), metrics.end());
    std::vector<std::vector<std::string>> body;
    for (const auto& r : row_order) {
      auto row = split_row(r);
      for (const auto& m : metrics) {
        auto it = cells.find({r, ""});
        row.push_back(it != cells.end() && it->second.count(m) ? format_cell(it->second.at(m), o.interval, show_n) : "");
      }
      body.push_back(row);
    }
    out += md_table(headers, body);
  } else {
    for (const auto& m : metrics) {
      if (metrics.size() > 1) out += fmt::format("{}**{}**\n\n", out.empty() ? "" : "\n", m);
      std::vector<std::string> headers = o.rows;
      for (const auto& c : col_order) headers.push_back(joined(o.cols) + " = " + c);
      std::vector<std::vector<std::string>> body;
      for (const auto& r : row_order) {
        auto row = split_row(r);
        for (const auto& c : col_order) {
          auto it = cells.find({r, c});
          row.push_back(it != cells.end() && it->second.count(m) ? format_cell(it->second.at(m), o.interval, show_n) : "");
        }
        body.push_back(row);
      }
      out += md_table(headers, body);
    }
  }
  if (max_n <= 1) out += "\nOne line (seed) per cell: no interval.\n";
  else
    out += fmt::format("\nMean {} over seeds; {}.\n", interval_name(o.interval),
                       show_n ? "n per cell as shown" : fmt::format("n = {} per cell", min_n));
  *warnings_out = warnings;
  return out;
}

namespace {

TableOptions parse_table_args(const std::string& doc, int line, const std::string& args) {
  std::istringstream in(args);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  TableOptions o;
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= words.size()) throw std::runtime_error(fmt::format("{}:{}: {} needs a value", doc, line, w));
      return words[++i];
    };
    if (w == "--rows") o.rows.push_back(value());
    else if (w == "--cols") o.cols.push_back(value());
    else if (w == "--metric") o.metrics.push_back(value());
    else if (w == "--where") o.where.push_back(value());
    else if (w == "--format") o.format = value();
    else if (w == "--interval") o.interval = value();
    else if (w == "--count") o.count = value();
    else if (w.rfind("--", 0) == 0) throw std::runtime_error(fmt::format("{}:{}: unknown option {}", doc, line, w));
    else if (o.file.empty()) o.file = w;
    else throw std::runtime_error(fmt::format("{}:{}: a second results file \"{}\"", doc, line, w));
  }
  if (o.file.empty()) throw std::runtime_error(fmt::format("{}:{}: the block names no results file", doc, line));
  return o;
}

}  // namespace

int update_doc_tables(const std::string& doc, bool check) {
  std::ifstream in(doc);
  if (!in) throw std::runtime_error("cannot open '" + doc + "'");
  const std::string begin = "<!-- flowkit table ", end = "<!-- end flowkit table -->";
  std::string out, line;
  int number = 0, changed = 0;
  bool in_block = false, in_fence = false;
  std::string old_block, new_block;
  while (std::getline(in, line)) {
    ++number;
    if (!in_block) {
      out += line + "\n";
      if (line.rfind("```", 0) == 0) in_fence = !in_fence;  // an example block in a code fence is text
      if (!in_fence && line.rfind(begin, 0) == 0) {
        const size_t close = line.rfind("-->");
        if (close == std::string::npos || close < begin.size())
          throw std::runtime_error(fmt::format("{}:{}: the block's first line must end with -->", doc, number));
        std::string warnings;
        new_block = "\n" + render_table(parse_table_args(doc, number, line.substr(begin.size(), close - begin.size())), &warnings) + "\n";
        old_block.clear();
        in_block = true;
      }
      continue;
    }
    if (line == end) {
      changed += old_block != new_block;
      out += new_block + line + "\n";
      in_block = false;
    } else {
      old_block += line + "\n";
    }
  }
  if (in_block) throw std::runtime_error(fmt::format("{}: a table block has no \"{}\" line", doc, end));
  if (!check && changed > 0) {
    const std::string tmp = doc + ".tmp";
    std::ofstream(tmp) << out;
    std::filesystem::rename(tmp, doc);
  }
  return changed;
}

}  // namespace flowkit::host
