// `flowkit report`: one self-contained HTML page about a run, several runs or a sweep.
// Charts are inline SVG drawn here (no raster plotting, no external scripts); images are
// embedded as data URIs so the page works offline from file://. Everything read from files is
// HTML-escaped. A small inline script records in <body data-*> how many charts and images
// actually rendered, so a headless browser can check the page.
#include "report.h"

#include "sweep_results.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using nlohmann::json;

namespace flowkit::host {
namespace {

constexpr size_t kImageCap = 12;                  // images embedded per page
constexpr uintmax_t kImageBytesCap = 8u << 20;    // a larger image is listed, not embedded
const char* const kFirstKeys[] = {"loss", "lr", "grad_norm", "steps_per_sec"};  // chart order

// ---------------------------------------------------------------------------------------
// Small text helpers

std::string esc(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string base64(const std::string& bytes) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t n = uint32_t(uint8_t(bytes[i])) << 16;
    if (i + 1 < bytes.size()) n |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    if (i + 2 < bytes.size()) n |= uint8_t(bytes[i + 2]);
    out += t[(n >> 18) & 63];
    out += t[(n >> 12) & 63];
    out += i + 1 < bytes.size() ? t[(n >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? t[n & 63] : '=';
  }
  return out;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A JSON value as table text: numbers compact, strings unquoted.
std::string cell(const json& v) {
  if (v.is_number_integer() || v.is_number_unsigned()) return v.dump();
  if (v.is_number_float()) return fmt::format("{:.6g}", v.get<double>());
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string human_size(uintmax_t b) {
  if (b < 1024) return fmt::format("{} B", b);
  if (b < (1u << 20)) return fmt::format("{:.1f} KiB", b / 1024.0);
  if (b < (1u << 30)) return fmt::format("{:.1f} MiB", b / 1048576.0);
  return fmt::format("{:.2f} GiB", b / 1073741824.0);
}

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return e;
}

// The last component of a path, ignoring a trailing slash.
std::string base_name(const fs::path& p) {
  fs::path n = p.lexically_normal();
  if (n.filename().empty()) n = n.parent_path();
  return n.filename().string();
}

// Nested objects flattened to dotted keys (leaves only), keys sorted.
using Flat = std::map<std::string, json>;
void flatten(const json& v, const std::string& prefix, Flat* out) {
  if (v.is_object()) {
    for (const auto& [k, x] : v.items()) flatten(x, prefix.empty() ? k : prefix + "." + k, out);
  } else if (!prefix.empty()) {
    (*out)[prefix] = v;
  }
}
Flat flat(const json& v) {
  Flat f;
  flatten(v, "", &f);
  return f;
}

// An HTML table; every header and cell is escaped here.
std::string table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
  std::string h = "<div class=\"scroll\"><table><thead><tr>";
  for (const auto& c : head) h += "<th>" + esc(c) + "</th>";
  h += "</tr></thead><tbody>";
  for (const auto& r : rows) {
    h += "<tr>";
    for (const auto& c : r) h += "<td>" + esc(c) + "</td>";
    h += "</tr>";
  }
  return h + "</tbody></table></div>\n";
}

// Rows of flattened records as a table: `lead` columns first, then the union of other keys.
std::string records_table(const std::vector<std::string>& lead, const std::vector<Flat>& records) {
  std::set<std::string> keys;
  for (const auto& r : records)
    for (const auto& [k, v] : r)
      if (std::find(lead.begin(), lead.end(), k) == lead.end()) keys.insert(k);
  std::vector<std::string> head = lead;
  head.insert(head.end(), keys.begin(), keys.end());
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : records) {
    std::vector<std::string> row;
    for (const auto& k : head) row.push_back(r.count(k) ? cell(r.at(k)) : "");
    rows.push_back(row);
  }
  return table(head, rows);
}

// ---------------------------------------------------------------------------------------
// What a run directory holds

struct Point {
  double x, y;
};
struct Series {
  std::string name, colour;
  std::vector<Point> points;
};
struct FileEntry {
  std::string rel;
  uintmax_t size;
};

struct Run {
  fs::path dir;
  std::string name;
  json pipeline;                                    // null when absent or unreadable
  std::map<std::string, std::vector<Point>> train;  // training key -> (step, value)
  std::vector<Flat> history;                        // eval lines of metrics.jsonl
  Flat eval;                                        // eval.json
  std::vector<Flat> extra;                          // evals/<label>.json, with "label"
  long steps = 0;
  std::vector<FileEntry> files;                     // every file the run wrote
  std::vector<fs::path> images, listed;             // PNG/GIF; NPY/CIF (listed only)
  std::vector<std::string> notes;                   // problems shown in the page
};

// A JSON file that may be absent; a malformed one becomes a note, not an error, so the page
// still shows the rest of the run.
json read_optional_json(const fs::path& file, std::vector<std::string>* notes) {
  std::ifstream in(file);
  if (!in) return nullptr;
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    notes->push_back(fmt::format("{}: not valid JSON ({}); not shown", file.string(), e.what()));
    return nullptr;
  }
}

void read_metrics(Run* r) {
  const fs::path file = r->dir / "metrics.jsonl";
  std::ifstream in(file);
  if (!in) throw std::runtime_error(fmt::format("{}: not found (a run directory holds metrics.jsonl)", file.string()));
  long session_end = 0;
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(line, nullptr, false);
    auto skip = [&](const std::string& why) {
      r->notes.push_back(fmt::format("{}:{}: {}; line skipped", file.string(), number, why));
    };
    if (j.is_discarded() || !j.is_object()) {
      skip(j.is_discarded() ? "not valid JSON" : "not a JSON object");
    } else if (j.contains("train_session")) {
      const json end = j["train_session"].is_object() ? j["train_session"].value("end_step", json()) : json();
      if (end.is_number()) session_end = std::max(session_end, end.get<long>());
    } else if (j.contains("eval")) {
      Flat m = flat(j["eval"]);
      if (j.contains("label")) m["label"] = j["label"];
      r->history.push_back(std::move(m));
    } else if (!j.contains("step") || !j["step"].is_number()) {
      skip("no numeric \"step\"");
    } else {
      const double step = j["step"].get<double>();
      r->steps = std::max(r->steps, long(step));
      for (const auto& [k, v] : flat(j))  // non-numeric values are not curves
        if (k != "step" && v.is_number() && std::isfinite(v.get<double>())) r->train[k].push_back({step, v.get<double>()});
    }
  }
  r->steps = std::max(r->steps, session_end);
}

// Every file below the run (for the files table) and the samples (not checkpoints).
void scan_files(Run* r) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(r->dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const fs::path rel = it->path().lexically_relative(r->dir);
    if (rel == "report.html") continue;  // written by us, not by the run
    r->files.push_back({rel.generic_string(), it->file_size(ec)});
    if (*rel.begin() == "checkpoints") continue;
    const std::string ext = lower_ext(rel);
    if (ext == ".png" || ext == ".gif") r->images.push_back(it->path());
    else if (ext == ".npy" || ext == ".cif") r->listed.push_back(it->path());
  }
  std::sort(r->files.begin(), r->files.end(), [](const FileEntry& a, const FileEntry& b) { return a.rel < b.rel; });
  std::sort(r->images.begin(), r->images.end());
  std::sort(r->listed.begin(), r->listed.end());
}

Run load_run(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw std::runtime_error(fmt::format("'{}': no such run directory", dir.string()));
  Run r;
  r.dir = dir;
  r.name = base_name(dir);
  read_metrics(&r);
  r.pipeline = read_optional_json(dir / "pipeline.resolved.json", &r.notes);
  if (!fs::exists(dir / "pipeline.resolved.json")) r.notes.push_back((dir / "pipeline.resolved.json").string() + ": absent");
  json eval = read_optional_json(dir / "eval.json", &r.notes);
  if (eval.is_object()) r.eval = flat(eval);
  std::vector<fs::path> extra;
  for (const auto& e : fs::directory_iterator(dir / "evals", ec))
    if (e.path().extension() == ".json") extra.push_back(e.path());
  std::sort(extra.begin(), extra.end());
  for (const auto& p : extra) {
    json m = read_optional_json(p, &r.notes);
    if (!m.is_object()) continue;
    Flat f = flat(m);
    f["label"] = p.stem().string();
    r.extra.push_back(std::move(f));
  }
  scan_files(&r);
  return r;
}

std::string pipeline_text(const json& p, const char* key) {
  return p.is_object() && p.contains(key) ? cell(p[key]) : "";
}

// ---------------------------------------------------------------------------------------
// Inline SVG line charts

struct Axis {
  double lo, hi;
  bool log;
  std::vector<double> ticks;
  double frac(double v) const {  // 0..1 position of v on the axis
    return log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
  }
};

// Heckbert's "nice numbers": 1, 2, 5 or 10 times a power of ten.
double nice_number(double x, bool round) {
  const double e = std::pow(10.0, std::floor(std::log10(x)));
  const double f = x / e;
  if (round) return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * e;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * e;
}

Axis linear_axis(double lo, double hi) {
  if (!(hi > lo)) {  // a constant series still gets a visible range around it
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
    lo -= pad, hi += pad;
  }
  const double step = nice_number(nice_number(hi - lo, false) / 4, true);
  if (!(std::abs(lo / step) < 1e12 && std::abs(hi / step) < 1e12)) return {lo, hi, false, {lo, hi}};  // tiny relative range
  const long first = long(std::floor(lo / step + 1e-9)), last = long(std::ceil(hi / step - 1e-9));
  Axis a{first * step, last * step, false, {}};
  for (long i = first; i <= last; ++i) a.ticks.push_back(i * step);  // i * step: no drift
  return a;
}

// Whole decades; 2 and 5 in between when the range spans few decades.
Axis log_axis(double lo, double hi) {
  const int d0 = int(std::floor(std::log10(lo))), d1 = std::max(d0 + 1, int(std::ceil(std::log10(hi))));
  Axis a{std::pow(10.0, d0), std::pow(10.0, d1), true, {}};
  for (int d = d0; d <= d1; ++d)
    for (double m : {1.0, 2.0, 5.0})
      if ((m == 1.0 || d1 - d0 <= 2) && m * std::pow(10.0, d) <= a.hi * (1 + 1e-9)) a.ticks.push_back(m * std::pow(10.0, d));
  return a;
}

std::string tick_label(double t) {
  if (std::abs(t - std::round(t)) < 1e-9 * std::max(1.0, std::abs(t)) && std::abs(t) < 1e7) return fmt::format("{:.0f}", t);
  return fmt::format("{:.3g}", t);
}

// Distinct colours: Tableau 10, then golden-angle hues.
std::string colour(size_t i) {
  static const char* t10[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                              "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  if (i < 10) return t10[i];
  return fmt::format("hsl({:.0f},65%,42%)", std::fmod(i * 137.508, 360.0));
}

// One chart: a polyline per series, nice ticks, log y for a positive key spanning > 1 decade
// when `log_ok`. Empty when no series has a point.
std::string svg_chart(const std::string& key, const std::vector<Series>& series, bool log_ok) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (const auto& p : s.points) x0 = std::min(x0, p.x), x1 = std::max(x1, p.x), y0 = std::min(y0, p.y), y1 = std::max(y1, p.y);
  if (!(x1 >= x0)) return "";
  const bool log = log_ok && y0 > 0 && y1 / y0 > 10;
  const Axis ax = linear_axis(x0, x1), ay = log ? log_axis(y0, y1) : linear_axis(y0, y1);
  const double W = 560, H = 300, L = 70, R = 16, T = 30, B = 46;
  auto px = [&](double x) { return L + ax.frac(x) * (W - L - R); };
  auto py = [&](double y) { return H - B - ay.frac(y) * (H - T - B); };

  std::string s = fmt::format(
      "<figure class=\"fig\"><svg class=\"chart\" data-series=\"{}\" data-key=\"{}\" viewBox=\"0 0 {} {}\" width=\"{}\" "
      "height=\"{}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">\n",
      series.size(), esc(key), W, H, W, H, esc(key));
  s += fmt::format("<text class=\"title\" x=\"{}\" y=\"18\" text-anchor=\"middle\">{}{}</text>\n", (L + W - R) / 2, esc(key),
                   log ? " (log scale)" : "");
  for (double t : ax.ticks)
    s += fmt::format("<line class=\"grid\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\"/><text x=\"{0:.1f}\" y=\"{3}\" "
                     "text-anchor=\"middle\">{4}</text>\n",
                     px(t), T, H - B, H - B + 16, tick_label(t));
  for (double t : ay.ticks)
    s += fmt::format("<line class=\"grid\" x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\"/><text x=\"{3}\" y=\"{4:.1f}\" "
                     "text-anchor=\"end\">{5}</text>\n",
                     L, W - R, py(t), L - 6, py(t) + 4, tick_label(t));
  s += fmt::format("<rect class=\"frame\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n", L, T, W - L - R, H - T - B);
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n", (L + W - R) / 2, H - 8);
  s += fmt::format("<text x=\"14\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {0})\">{1}</text>\n",
                   (T + H - B) / 2, esc(key));
  for (size_t i = 0; i < series.size(); ++i) {
    std::vector<Point> pts = series[i].points;
    std::stable_sort(pts.begin(), pts.end(), [](const Point& a, const Point& b) { return a.x < b.x; });
    std::string coords;
    for (const auto& p : pts) coords += fmt::format("{:.2f},{:.2f} ", px(p.x), py(p.y));
    s += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\" points=\"{}\"><title>{}</title></polyline>\n",
                     series[i].colour, coords, esc(series[i].name));
    if (pts.size() == 1)  // a single point draws no line; show it as a dot
      s += fmt::format("<circle cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"3\" fill=\"{}\"/>\n", px(pts[0].x), py(pts[0].y),
                       series[i].colour);
  }
  return s + "</svg></figure>\n";
}

// One chart per training key (loss, lr, grad_norm, steps_per_sec first), the runs overlaid;
// a run keeps its colour in every chart, so one legend serves them all.
std::string curves(const std::vector<const Run*>& runs) {
  std::vector<std::string> keys;
  for (const char* k : kFirstKeys) keys.push_back(k);
  std::set<std::string> rest;
  for (const Run* r : runs)
    for (const auto& [k, v] : r->train) rest.insert(k);
  for (const auto& k : rest)
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  std::string h;
  for (const auto& k : keys) {
    std::vector<Series> series;
    for (size_t i = 0; i < runs.size(); ++i)
      if (runs[i]->train.count(k)) series.push_back({runs[i]->name, colour(i), runs[i]->train.at(k)});
    if (!series.empty()) h += svg_chart(k, series, k == "loss");
  }
  if (h.empty()) return "<p class=\"muted\">No training lines in metrics.jsonl.</p>\n";
  std::string legend;
  if (runs.size() > 1) {
    legend = "<div class=\"legend\">";
    for (size_t i = 0; i < runs.size(); ++i)
      legend += fmt::format("<span><i style=\"background:{}\"></i>{}</span>", colour(i), esc(runs[i]->name));
    legend += "</div>\n";
  }
  return legend + "<div class=\"charts\">\n" + h + "</div>\n";
}

// ---------------------------------------------------------------------------------------
// Page sections

std::string notes_html(const std::vector<std::string>& notes) {
  if (notes.empty()) return "";
  std::string h = "<div class=\"notes\"><strong>Notes</strong><ul>";
  for (const auto& n : notes) h += "<li>" + esc(n) + "</li>";
  return h + "</ul></div>\n";
}

// Embeds up to `*budget` images (decrementing it); lists the rest and the NPY/CIF files.
std::string samples_html(const Run& r, size_t* budget) {
  std::string h = "<div class=\"samples\">";
  std::vector<std::string> listed;
  for (const auto& p : r.images) {
    const std::string rel = p.lexically_relative(r.dir).generic_string();
    std::error_code ec;
    if (*budget == 0 || fs::file_size(p, ec) > kImageBytesCap) {
      listed.push_back(rel);
      continue;
    }
    --*budget;
    const char* mime = lower_ext(p) == ".gif" ? "image/gif" : "image/png";
    h += fmt::format("<figure><img class=\"sample\" alt=\"{0}\" src=\"data:{1};base64,{2}\"><figcaption>{0}</figcaption></figure>",
                     esc(rel), mime, base64(read_bytes(p)));
  }
  h += "</div>\n";
  for (const auto& p : r.listed) listed.push_back(p.lexically_relative(r.dir).generic_string());
  if (r.images.empty() && listed.empty()) return "<p class=\"muted\">No sample files.</p>\n";
  if (!listed.empty()) {
    h += "<p>Listed, not embedded:</p><ul class=\"listed\">";
    for (const auto& l : listed) h += "<li><code>" + esc(l) + "</code></li>";
    h += "</ul>\n";
  }
  return h;
}

std::string pipeline_html(const Run& r) {
  if (r.pipeline.is_null()) return "<p class=\"muted\">No pipeline.resolved.json.</p>\n";
  return "<details><summary>Resolved pipeline (pipeline.resolved.json)</summary><pre>" +
         esc(r.pipeline.dump(2, ' ', false, json::error_handler_t::replace)) + "</pre></details>\n";
}

std::string files_html(const Run& r) {
  std::vector<std::vector<std::string>> rows;
  uintmax_t total = 0;
  for (const auto& f : r.files) rows.push_back({f.rel, human_size(f.size)}), total += f.size;
  return fmt::format("<details><summary>Files the run wrote ({}, {})</summary>", r.files.size(), human_size(total)) +
         table({"file", "size"}, rows) + "</details>\n";
}

std::string metrics_html(const Run& r) {
  std::string h = "<h3>Evaluation (eval.json)</h3>\n";
  if (r.eval.empty()) {
    h += "<p class=\"muted\">No eval.json.</p>\n";
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const auto& [k, v] : r.eval) rows.push_back({k, cell(v)});
    h += table({"metric", "value"}, rows);
  }
  if (!r.history.empty()) h += "<h3>Metric history (metrics.jsonl)</h3>\n" + records_table({"step", "label"}, r.history);
  if (!r.extra.empty()) h += "<h3>Extra evaluations (evals/)</h3>\n" + records_table({"label", "step"}, r.extra);
  return h;
}

std::string run_page_body(const Run& r) {
  size_t budget = kImageCap;
  std::string h = fmt::format("<h1>Run report: {}</h1>\n", esc(r.name));
  h += fmt::format("<p class=\"meta\">Pipeline <strong>{}</strong> — {}<br>Steps trained: <strong>{}</strong> · "
                   "directory <code>{}</code></p>\n",
                   esc(pipeline_text(r.pipeline, "name")), esc(pipeline_text(r.pipeline, "description")), r.steps,
                   esc(r.dir.string()));
  h += notes_html(r.notes);
  h += "<h2>Metrics</h2>\n" + metrics_html(r);
  h += "<h2>Training curves</h2>\n" + curves({&r});
  h += "<h2>Samples</h2>\n" + samples_html(r, &budget);
  h += "<h2>Pipeline and files</h2>\n" + pipeline_html(r) + files_html(r);
  return h;
}

// The runs side by side: pipeline, steps and eval.json metrics, then the curves overlaid and
// each run's samples, pipeline and files.
std::string comparison_body(const std::vector<Run>& runs) {
  std::vector<Flat> rows;
  for (const Run& r : runs) {
    Flat f = r.eval;
    f["run"] = r.name;
    f["pipeline"] = pipeline_text(r.pipeline, "name");
    f["steps"] = r.steps;
    rows.push_back(std::move(f));
  }
  std::vector<const Run*> ptrs;
  for (const Run& r : runs) ptrs.push_back(&r);
  std::string h = "<h2>Runs</h2>\n" + records_table({"run", "pipeline", "steps"}, rows);
  h += "<h2>Training curves</h2>\n" + curves(ptrs);
  size_t budget = kImageCap;
  for (const Run& r : runs) {
    size_t share = std::min(budget, std::max<size_t>(1, kImageCap / runs.size()));  // each run gets a share
    const size_t before = share;
    h += fmt::format("<section class=\"run\"><h2>{}</h2><p class=\"meta\"><code>{}</code> · steps {}</p>\n", esc(r.name),
                     esc(r.dir.string()), r.steps);
    h += samples_html(r, &share) + pipeline_html(r) + files_html(r) + "</section>\n";
    budget -= before - share;
  }
  return h;
}

// A sweep's results.jsonl, read as `flowkit table` reads it (bad lines are errors naming them).
std::vector<json> read_results_lines(const fs::path& file) {
  std::vector<json> lines;
  for (auto& l : read_results(file)) lines.push_back(std::move(l.j));
  return lines;
}

// One row per results line: point, eval label, the settings, seed, training time, then metrics.
std::string points_table(const std::vector<json>& lines) {
  std::vector<std::string> lead = {"point", "eval"};
  std::vector<Flat> rows;
  for (const auto& l : lines) {
    Flat row = flat(l["metrics"]);
    // Every swept key's value where the sweep recorded it ("config"), else the point's own settings.
    json settings = l.value("settings", json::object());
    if (l.contains("config") && l["config"].is_object()) settings = l["config"];
    for (const auto& [k, v] : flat(settings)) {
      if (std::find(lead.begin(), lead.end(), k) == lead.end()) lead.push_back(k);
      row[k] = v;
    }
    row["point"] = l.value("point", json());
    row["eval"] = l.value("eval", json());
    row["seed"] = l.value("seed", json());
    row["train s"] = l.value("train_seconds", json());
    rows.push_back(std::move(row));
  }
  lead.insert(lead.end(), {"seed", "train s"});
  return records_table(lead, rows);
}

// The trained points of a sweep (one run directory each, eval-only points share it).
std::vector<Run> sweep_runs(const fs::path& folder, const std::vector<json>& lines, std::vector<std::string>* notes) {
  std::vector<Run> runs;
  std::set<std::string> seen;
  for (const auto& l : lines) {
    if (!l.contains("run") || !l["run"].is_string() || !seen.insert(l["run"].get<std::string>()).second) continue;
    const fs::path dir = folder / l["run"].get<std::string>();
    if (!fs::exists(dir / "metrics.jsonl")) {
      notes->push_back(fmt::format("{}: no metrics.jsonl; its curves are not shown", dir.string()));
      continue;
    }
    runs.push_back(load_run(dir));
  }
  return runs;
}

// ---------------------------------------------------------------------------------------
// The page

const char* kStyle = R"(
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1240px;padding:0 16px;color:#222}
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.meta{color:#555}.muted{color:#888}code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f6f8fa;padding:12px;overflow:auto;max-height:600px}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.9em;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;white-space:nowrap}th{background:#f3f3f3}
td{font-variant-numeric:tabular-nums}
.notes{background:#fff4e5;border:1px solid #f0b429;padding:8px 12px;margin:12px 0}
.charts{display:flex;flex-wrap:wrap;gap:12px}.fig{margin:0;border:1px solid #eee;padding:4px}
svg.chart text{font-size:11px;fill:#333}svg.chart .title{font-size:13px;font-weight:600}
svg.chart .grid{stroke:#e6e6e6}svg.chart .frame{fill:none;stroke:#999}
.legend{font-size:12px;display:flex;flex-wrap:wrap;gap:4px 14px;padding:4px 0 10px}
.legend i{display:inline-block;width:16px;height:4px;margin-right:4px;vertical-align:middle}
.samples{display:flex;flex-wrap:wrap;gap:12px}.samples figure{margin:0;text-align:center;font-size:.85em}
.samples img{max-width:380px;max-height:380px;border:1px solid #eee;image-rendering:auto}
footer{margin-top:40px;color:#888;font-size:.85em}
)";

// After load: count charts whose polyline really rendered (>= 2 points, non-empty bounding
// box) and images that decoded, into <body data-*> for a headless browser to check.
const char* kScript = R"(
window.addEventListener('load', function () {
  var charts = 0, total = 0;
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    total++;
    var ok = false;
    svg.querySelectorAll('polyline').forEach(function (p) {
      var b = p.getBBox();
      if (p.points.numberOfItems >= 2 && b.width + b.height > 0) ok = true;
    });
    if (ok) charts++;
  });
  var images = 0, imagesOk = 0;
  document.querySelectorAll('img.sample').forEach(function (img) {
    images++;
    if (img.complete && img.naturalWidth > 0) imagesOk++;
  });
  var b = document.body.dataset;
  b.charts = charts; b.chartsTotal = total; b.images = images; b.imagesOk = imagesOk;
  document.getElementById('checks').textContent =
    charts + ' of ' + total + ' charts rendered, ' + imagesOk + ' of ' + images + ' images decoded.';
});
)";

std::string page(const std::string& title, const std::string& body) {
  return fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{}</style></head>\n"
      "<body data-charts=\"0\" data-charts-total=\"0\" data-images=\"0\" data-images-ok=\"0\">\n{}"
      "<footer>Written by <code>flowkit report</code>. Page check: <span id=\"checks\">script did not run</span></footer>\n"
      "<script>{}</script>\n</body></html>\n",
      esc(title), kStyle, body, kScript);
}

bool is_sweep_folder(const fs::path& p) { return fs::exists(p / "results.jsonl") && !fs::exists(p / "metrics.jsonl"); }

void write_file(const fs::path& file, const std::string& text) {
  std::ofstream out(file, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error(fmt::format("cannot write '{}'", file.string()));
}

}  // namespace

std::string write_report(const std::vector<std::string>& paths, const std::string& output) {
  if (paths.empty()) throw std::invalid_argument("give a run directory, several, or a sweep folder");
  fs::path out = output;
  std::string title, body;
  fs::path first = paths[0];
  if (first.filename() == "results.jsonl") first = first.parent_path();  // the sweep's file named
  if (paths.size() == 1 && is_sweep_folder(first)) {
    const fs::path folder = first;
    const std::vector<json> lines = read_results_lines(folder / "results.jsonl");
    std::vector<std::string> notes;
    const std::vector<Run> runs = sweep_runs(folder, lines, &notes);
    for (const Run& r : runs) notes.insert(notes.end(), r.notes.begin(), r.notes.end());
    title = "Sweep " + base_name(folder);
    body = fmt::format("<h1>Sweep report: {}</h1>\n<p class=\"meta\">{} result line(s), {} trained run(s) · folder <code>{}</code></p>\n",
                       esc(base_name(folder)), lines.size(), runs.size(), esc(folder.string()));
    std::vector<json> trained;
    for (const auto& l : lines)
      if (l.value("eval", json()).is_null()) trained.push_back(l);
    body += notes_html(notes) + "<h2>Points</h2>\n" + points_table(trained);
    if (trained.size() < lines.size())  // long: folded, so the curves stay near the top
      body += fmt::format("<details><summary>All {} result lines, with the eval-only points</summary>\n{}</details>\n", lines.size(),
                          points_table(lines));
    if (!runs.empty()) body += comparison_body(runs);
    if (out.empty()) out = folder / "report.html";
  } else if (paths.size() == 1) {
    const Run r = load_run(paths[0]);
    title = "Run " + r.name;
    body = run_page_body(r);
    if (out.empty()) out = r.dir / "report.html";
  } else {
    if (out.empty()) throw std::invalid_argument("a report of several runs needs an output file (-o FILE)");
    std::vector<Run> runs;
    std::vector<std::string> notes;
    for (const auto& p : paths) {
      if (is_sweep_folder(p)) throw std::invalid_argument(fmt::format("'{}' is a sweep folder: report it on its own", p));
      runs.push_back(load_run(p));
      notes.insert(notes.end(), runs.back().notes.begin(), runs.back().notes.end());
    }
    title = fmt::format("Comparison of {} runs", runs.size());
    body = fmt::format("<h1>Comparison of {} runs</h1>\n", runs.size()) + notes_html(notes) + comparison_body(runs);
  }
  write_file(out, page(title, body));
  return out.string();
}

}  // namespace flowkit::host
