// The sweep runner: expands the sweep file into points, checks every point's pipeline before
// anything runs, then runs the points as `flowkit run` / `flowkit eval` child processes.
#include "sweep.h"

#include <fcntl.h>
#include <signal.h>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>

#include "flowkit/core/pipeline.h"
#include "flowkit/error.h"
#include "sweep_results.h"
#include "terminal.h"

extern char** environ;

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

namespace flowkit::host {
namespace {

using Setting = std::pair<std::string, ordered_json>;  // "model.hidden" -> 64
using Settings = std::vector<Setting>;

struct SweepSpec {
  std::string file, name, pipeline, runs_dir = "runs";
  std::vector<std::string> fixed;              // overrides every point gets
  std::vector<Settings> trained;               // grid x points (seeds not yet applied)
  std::vector<std::optional<std::vector<Settings>>> trained_evals;  // a point's own eval_points, if it has them
  std::vector<std::string> trained_names;                           // a point's own "name", if it has one
  size_t grid_keys = 0;                                             // each trained setting list starts with these
  std::vector<int64_t> seeds{0};
  std::vector<std::string> seed_keys{"train.seed", "sample.seed"};
  std::vector<Settings> evals;                 // eval-only settings
  int jobs = 1;
};

const std::vector<std::string> kSweepKeys = {"name", "description", "pipeline", "runs_dir", "overrides", "grid",
                                             "points", "seeds", "seed_keys", "eval_grid", "eval_points", "jobs"};

[[noreturn]] void bad(const SweepSpec& s, const std::string& pointer, const std::string& message) {
  throw ConfigError(s.file, pointer, message);
}

// {"a": [1, 2], "b": [x]} -> every combination, in the file's key order.
std::vector<Settings> expand_grid(const SweepSpec& s, const ordered_json& grid, const std::string& at) {
  if (!grid.is_object()) bad(s, at, "expected an object of \"section.key\": [values...]");
  std::vector<Settings> out{{}};
  for (const auto& [key, values] : grid.items()) {
    if (!values.is_array() || values.empty()) bad(s, at + "/" + key, "expected a non-empty array of values");
    std::vector<Settings> next;
    for (const auto& prefix : out)
      for (const auto& v : values) {
        Settings row = prefix;
        row.emplace_back(key, v);
        next.push_back(std::move(row));
      }
    out = std::move(next);
  }
  return out;
}

std::vector<Settings> read_points(const SweepSpec& s, const ordered_json& points, const std::string& at,
                                  std::vector<std::optional<std::vector<Settings>>>* own_evals = nullptr,
                                  std::vector<std::string>* names = nullptr) {
  if (!points.is_array()) bad(s, at, "expected an array of objects {\"section.key\": value, ...}");
  std::vector<Settings> out;
  for (size_t i = 0; i < points.size(); ++i) {
    const std::string here = at + "/" + std::to_string(i);
    if (!points[i].is_object()) bad(s, here, "expected an object {\"section.key\": value, ...}");
    Settings row;
    std::optional<std::vector<Settings>> evals;
    std::string name;
    for (const auto& [key, v] : points[i].items()) {
      if (key == "eval_points" && own_evals) {
        evals = read_points(s, v, here + "/eval_points");  // this point's own
      } else if (key == "name" && names) {  // a readable name where the values are whole sections
        if (!v.is_string() || v.get<std::string>().empty() || v.get<std::string>().find_first_of("/\\") != std::string::npos)
          bad(s, here + "/name", "expected a folder name (a non-empty string without '/')");
        name = v.get<std::string>();
      } else {
        row.emplace_back(key, v);
      }
    }
    if (own_evals) own_evals->push_back(std::move(evals));
    if (names) names->push_back(name);
    out.push_back(std::move(row));
  }
  return out;
}

// Grid and points combine as a product (each listed point under every grid combination).
std::vector<Settings> combine(const std::vector<Settings>& grid, const std::vector<Settings>& points) {
  if (points.empty()) return grid;
  std::vector<Settings> out;
  for (const auto& g : grid)
    for (const auto& p : points) {
      Settings row = g;
      row.insert(row.end(), p.begin(), p.end());
      out.push_back(std::move(row));
    }
  return out;
}

SweepSpec read_sweep(const std::string& file) {
  SweepSpec s;
  s.file = file;
  std::ifstream in(file);
  if (!in) throw ConfigError(file, "", "cannot open the sweep file");
  ordered_json j;
  try {
    j = ordered_json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(file, "", std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) bad(s, "", "a sweep file is a JSON object");
  for (const auto& [key, value] : j.items())
    if (std::find(kSweepKeys.begin(), kSweepKeys.end(), key) == kSweepKeys.end())
      bad(s, "/" + key, "unknown key \"" + key + "\"" + core::did_you_mean(key, kSweepKeys));
  auto string_at = [&](const char* key, std::string* out) {
    if (!j.contains(key)) return;
    if (!j[key].is_string() || j[key].get<std::string>().empty()) bad(s, std::string("/") + key, "expected a non-empty string");
    *out = j[key].get<std::string>();
  };
  s.name = fs::path(file).stem().string();
  string_at("name", &s.name);
  string_at("pipeline", &s.pipeline);
  string_at("runs_dir", &s.runs_dir);
  if (s.pipeline.empty()) bad(s, "/pipeline", "missing: the base pipeline file (relative to the sweep file)");
  if (fs::path(s.pipeline).is_relative()) s.pipeline = (fs::path(file).parent_path() / s.pipeline).lexically_normal().string();
  if (s.name.find_first_of("/\\") != std::string::npos) bad(s, "/name", "a sweep name is a folder name: no '/'");
  if (j.contains("overrides")) {
    const auto& o = j["overrides"];
    if (!o.is_object()) bad(s, "/overrides", "expected an object {\"section.key\": value} applied to every point");
    for (const auto& [key, v] : o.items()) s.fixed.push_back(key + "=" + v.dump());
  }
  std::vector<Settings> grid{{}}, points;
  std::vector<std::optional<std::vector<Settings>>> own_evals;
  std::vector<std::string> own_names;
  if (j.contains("grid")) grid = expand_grid(s, j["grid"], "/grid");
  s.grid_keys = grid.front().size();
  if (j.contains("points")) points = read_points(s, j["points"], "/points", &own_evals, &own_names);
  s.trained = combine(grid, points);
  for (size_t g = 0; g < grid.size(); ++g)  // combine() lists each point under every grid combination
    for (size_t p = 0; p < std::max<size_t>(1, points.size()); ++p) {
      s.trained_evals.push_back(points.empty() ? std::nullopt : own_evals[p]);
      s.trained_names.push_back(points.empty() ? "" : own_names[p]);
    }
  if (j.contains("seeds")) {
    const auto& seeds = j["seeds"];
    if (!seeds.is_array() || seeds.empty()) bad(s, "/seeds", "expected a non-empty array of integers");
    s.seeds.clear();
    for (size_t i = 0; i < seeds.size(); ++i) {
      if (!seeds[i].is_number_integer() || seeds[i].get<int64_t>() < 0) bad(s, "/seeds/" + std::to_string(i), "expected an integer >= 0");
      s.seeds.push_back(seeds[i].get<int64_t>());
    }
  }
  if (j.contains("seed_keys")) {
    const auto& keys = j["seed_keys"];
    if (!keys.is_array() || keys.empty()) bad(s, "/seed_keys", "expected a non-empty array of \"section.key\" strings");
    s.seed_keys.clear();
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!keys[i].is_string()) bad(s, "/seed_keys/" + std::to_string(i), "expected a string");
      s.seed_keys.push_back(keys[i].get<std::string>());
    }
  }
  std::vector<Settings> eval_grid, eval_points;
  if (j.contains("eval_grid")) eval_grid = expand_grid(s, j["eval_grid"], "/eval_grid");
  if (j.contains("eval_points")) eval_points = read_points(s, j["eval_points"], "/eval_points");
  s.evals = j.contains("eval_grid") ? combine(eval_grid, eval_points) : eval_points;
  // An eval-only point reuses the trained weights: it may change only how samples are drawn and scored.
  auto check_evals = [&](const std::vector<Settings>& evals, const std::string& at, bool grid_form) {
    for (size_t i = 0; i < evals.size(); ++i)
      for (const auto& [key, v] : evals[i]) {
        const std::string section = key.substr(0, key.find('.'));
        if (section != "solver" && section != "guidance" && section != "sample" && section != "eval")
          bad(s, grid_form ? at + "/" + key : at + "/" + std::to_string(i) + "/" + key,
              "an eval-only point may change solver.*, guidance.*, sample.* and eval.* only; \"" + key +
                  "\" changes what is trained, so it belongs in \"grid\" or \"points\"");
      }
  };
  check_evals(s.evals, j.contains("eval_grid") ? "/eval_grid" : "/eval_points", j.contains("eval_grid"));
  for (size_t p = 0; p < own_evals.size(); ++p)
    if (own_evals[p]) check_evals(*own_evals[p], "/points/" + std::to_string(p) + "/eval_points", false);
  if (j.contains("jobs")) {
    if (!j["jobs"].is_number_integer() || j["jobs"].get<int>() < 1) bad(s, "/jobs", "expected an integer >= 1");
    s.jobs = j["jobs"].get<int>();
  }
  return s;
}

// A value as a short piece of a folder name.
std::string value_text(const ordered_json& v) {
  std::string t = v.is_string() ? v.get<std::string>() : v.dump();
  std::string out;
  for (char c : t) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '+') ? c : '_';
  if (out.size() > 40) out = out.substr(0, 32) + fmt::format("~{:x}", std::hash<std::string>{}(t) & 0xffffff);
  return out;
}

// "model.hidden" -> "hidden", unless another swept key ends the same way.
std::string short_key(const std::string& key, const std::set<std::string>& all_keys) {
  const std::string last = key.substr(key.rfind('.') + 1);
  int same = 0;
  for (const auto& k : all_keys) same += k.substr(k.rfind('.') + 1) == last;
  return same > 1 ? key : last;
}

std::string settings_name(const Settings& settings, const std::set<std::string>& keys) {
  if (settings.empty()) return "base";  // the base pipeline as it is
  std::string name;
  for (const auto& [key, v] : settings) name += (name.empty() ? "" : "_") + short_key(key, keys) + "-" + value_text(v);
  return name;
}

std::vector<std::string> overrides_of(const Settings& settings) {
  std::vector<std::string> out;
  for (const auto& [key, v] : settings) out.push_back(key + "=" + v.dump());
  return out;
}

int cpu_count() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
}

bool mentions(const std::vector<std::string>& overrides, const std::string& key) {
  for (const auto& o : overrides)
    if (o.rfind(key + "=", 0) == 0) return true;
  return false;
}

// One process to run: a training point or one eval-only evaluation of it.
struct Stage {
  std::vector<std::string> argv;
  std::string what;  // for messages
  std::string log;   // file name under logs/
  bool trains = false;
};

// A point's stages: its training (unless done), then its eval-only points, which may run in
// parallel with each other once the training has finished.
struct Chain {
  SweepPoint point;
  std::vector<Stage> stages;
};

struct Job {
  size_t chain, stage;
};

pid_t spawn(const Stage& stage, const fs::path& log, const std::vector<std::string>& env_extra) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  std::vector<char*> argv;
  for (const auto& a : stage.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    const std::string var = *e;
    bool replaced = false;
    for (const auto& x : env_extra) replaced |= var.rfind(x.substr(0, x.find('=') + 1), 0) == 0;
    if (!replaced) env_strings.push_back(var);
  }
  env_strings.insert(env_strings.end(), env_extra.begin(), env_extra.end());
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error(fmt::format("cannot start {}: {}", argv[0], std::strerror(rc)));
  return pid;
}

std::string shell_quote(const std::string& s) {
  if (s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,/=+:") == std::string::npos) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

volatile sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

// SIGINT/SIGTERM interrupt waitpid (no SA_RESTART); the sweep then stops its runs and exits.
void catch_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace

int run_sweep(const SweepOptions& options, const core::PluginCatalog& catalog) {
  const SweepSpec spec = read_sweep(options.file);
  const int jobs = options.jobs > 0 ? options.jobs : spec.jobs;
  const fs::path folder = fs::path(options.runs_dir.empty() ? spec.runs_dir : options.runs_dir) / spec.name;

  // Threads: N jobs share the cores; each gets one LibTorch thread and its share of BLAS threads.
  const int blas = std::max(1, cpu_count() / jobs);
  std::vector<std::string> fixed = spec.fixed;
  std::set<std::string> keys;
  for (const auto& t : spec.trained)
    for (const auto& [k, v] : t) keys.insert(k);
  auto user_sets = [&](const std::string& key) { return mentions(fixed, key) || keys.count(key) > 0; };
  if (!user_sets("train.threads")) fixed.push_back("train.threads=1");
  if (!user_sets("train.blas_threads")) fixed.push_back(fmt::format("train.blas_threads={}", blas));

  std::set<std::string> eval_keys = keys;  // names shorten keys only where no other swept key ends the same
  for (const auto& e : spec.evals)
    for (const auto& [k, v] : e) eval_keys.insert(k);
  for (const auto& own : spec.trained_evals)
    if (own)
      for (const auto& e : *own)
        for (const auto& [k, v] : e) eval_keys.insert(k);
  keys.insert(eval_keys.begin(), eval_keys.end());
  std::vector<Chain> chains;
  std::vector<std::string> problems;
  std::set<std::string> names;
  const std::string exe = fs::canonical("/proc/self/exe").string();
  std::vector<std::string> common{exe};
  for (const auto& p : options.plugin_paths) common.insert(common.end(), {"--plugin-path", p});
  for (size_t ti = 0; ti < spec.trained.size(); ++ti)
    for (int64_t seed : spec.seeds) {
      const Settings& trained = spec.trained[ti];
      const std::vector<Settings>& evals = spec.trained_evals[ti] ? *spec.trained_evals[ti] : spec.evals;
      Chain c;
      c.point.settings = trained;
      c.point.seed = seed;
      c.point.name = spec.trained_names[ti].empty() ? settings_name(trained, keys) : spec.trained_names[ti];
      if (!spec.trained_names[ti].empty() && spec.grid_keys > 0)  // a named point under a grid: the grid's values too
        c.point.name += "_" + settings_name(Settings(trained.begin(), trained.begin() + static_cast<long>(spec.grid_keys)), keys);
      c.point.name += fmt::format("_seed-{}", seed);
      if (!names.insert(c.point.name).second) {
        problems.push_back(fmt::format("two points are both named '{}': give their values distinct names", c.point.name));
        continue;
      }
      c.point.overrides = fixed;
      for (const auto& o : overrides_of(trained)) c.point.overrides.push_back(o);
      for (const auto& k : spec.seed_keys) c.point.overrides.push_back(fmt::format("{}={}", k, seed));
      auto v = core::validate_pipeline_file(spec.pipeline, catalog, c.point.overrides);
      const bool point_ok = v.ok();
      if (!point_ok) problems.push_back(fmt::format("point '{}':\n{}", c.point.name, v.report()));
      for (const auto& e : evals) {
        SweepEval ev;
        ev.settings = e;
        ev.label = settings_name(e, eval_keys);
        std::vector<std::string> overrides = c.point.overrides;
        for (const auto& o : overrides_of(e)) overrides.push_back(o);
        if (point_ok) {  // a point's own problems are reported once, not again for each of its evals
          auto ve = core::validate_pipeline_file(spec.pipeline, catalog, overrides);
          if (!ve.ok()) problems.push_back(fmt::format("point '{}', eval '{}':\n{}", c.point.name, ev.label, ve.report()));
        }
        ev.overrides = overrides;
        c.point.evals.push_back(std::move(ev));
      }
      chains.push_back(std::move(c));
    }
  if (!problems.empty()) {
    print_error(fmt::format("{} problem(s) in sweep {}; nothing was run:\n{}", problems.size(), options.file, fmt::join(problems, "\n")));
    return kUsage;
  }

  // A point folder written by a sweep with other settings is never overwritten.
  for (auto& c : chains) {
    const fs::path dir = folder / c.point.name;
    const fs::path marker = dir / "sweep_point.json";
    if (fs::exists(marker)) {
      nlohmann::json old;
      std::ifstream(marker) >> old;
      if (old.value("overrides", std::vector<std::string>{}) != c.point.overrides)
        return print_error(fmt::format("'{}' was run with other settings ({}); the sweep file changed. Nothing was run: "
                                       "move that folder away or give the sweep another \"name\".",
                                       dir.string(), marker.string())),
               kUsage;
    }
    const bool trained = fs::exists(dir / "eval.json");
    const bool started = fs::exists(dir / "checkpoints" / "last.pt");
    if (!trained) {
      Stage s{common, "train " + c.point.name, c.point.name + ".log", true};
      s.argv.insert(s.argv.end(), {"run", spec.pipeline});
      s.argv.insert(s.argv.end(), c.point.overrides.begin(), c.point.overrides.end());
      s.argv.insert(s.argv.end(), {"--runs-dir", folder.string(), "--name", c.point.name});
      if (started) s.argv.push_back("--resume");  // an interrupted point continues from its checkpoint
      c.stages.push_back(std::move(s));
    }
    for (const auto& e : c.point.evals) {
      if (fs::exists(dir / "evals" / (e.label + ".json"))) continue;
      Stage s{common, "eval " + c.point.name + " " + e.label, c.point.name + "." + e.label + ".log", false};
      s.argv.insert(s.argv.end(), {"eval", spec.pipeline});
      s.argv.insert(s.argv.end(), e.overrides.begin(), e.overrides.end());
      s.argv.insert(s.argv.end(), {"--runs-dir", folder.string(), "--name", c.point.name, "--label", e.label});
      c.stages.push_back(std::move(s));
    }
  }

  size_t total_stages = 0, total_points = chains.size(), done_points = 0;
  for (const auto& c : chains) {
    total_stages += c.stages.size();
    done_points += c.stages.empty();
  }
  fmt::print(stderr, "sweep {}: {} points ({} done), {} runs to do, {} at a time ({} BLAS threads each) in {}\n", spec.name,
             total_points, done_points, total_stages, jobs, blas, folder.string());
  if (options.dry_run) {
    for (const auto& c : chains)
      for (const auto& s : c.stages) {
        std::vector<std::string> quoted;
        for (const auto& a : s.argv) quoted.push_back(shell_quote(a));
        fmt::print("{}\n", fmt::join(quoted, " "));
      }
    return kOk;
  }

  fs::create_directories(folder / "logs");
  std::vector<std::string> swept(keys.begin(), keys.end());
  const std::vector<std::string> env_extra{fmt::format("OPENBLAS_NUM_THREADS={}", blas), "OMP_NUM_THREADS=1"};
  std::map<pid_t, Job> running;
  std::map<pid_t, std::chrono::steady_clock::time_point> started_at;
  std::deque<Job> ready;
  for (size_t ci = 0; ci < chains.size(); ++ci) {
    const auto& stages = chains[ci].stages;
    for (size_t si = 0; si < stages.size(); ++si) {
      ready.push_back({ci, si});
      if (stages[si].trains) break;  // its evaluations wait for it
    }
  }
  size_t finished = 0, failures = 0;
  double busy_seconds = 0;
  const bool tty = isatty(STDERR_FILENO);
  const auto t0 = std::chrono::steady_clock::now();
  catch_stop_signals();
  // A failed training takes its evaluations with it.
  auto fail = [&](const Job& j, const std::string& message) {
    ++failures;
    if (chains[j.chain].stages[j.stage].trains) finished += chains[j.chain].stages.size() - j.stage - 1;
    return message;
  };
  auto status_line = [&](const std::string& event) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double per_stage = finished > 0 ? busy_seconds / static_cast<double>(finished) : NAN;
    const double eta = per_stage * static_cast<double>(total_stages - finished) / jobs;
    const std::string msg = fmt::format("sweep {}/{} runs, {} running, {} failed, {:.0f} s, ETA {}", finished, total_stages,
                                        running.size(), failures, elapsed, std::isfinite(eta) ? fmt::format("{:.0f} s", eta) : "?");
    if (tty) fmt::print(stderr, "\r{}\033[K{}", msg, event.empty() ? "" : "\n");
    if (!event.empty()) fmt::print(stderr, "{}{}\n", tty ? "" : msg + ": ", event);
  };
  auto launch = [&](const Job& j) {
    Chain& c = chains[j.chain];
    const Stage& stage = c.stages[j.stage];
    const fs::path dir = folder / c.point.name;
    fs::create_directories(dir);
    if (stage.trains) {
      nlohmann::json marker = {{"sweep", spec.name}, {"overrides", c.point.overrides}};
      std::ofstream(dir / "sweep_point.json") << marker.dump(2) << "\n";
    }
    try {
      const pid_t pid = spawn(stage, folder / "logs" / stage.log, env_extra);
      running[pid] = j;
      started_at[pid] = std::chrono::steady_clock::now();
    } catch (const std::exception& e) {  // e.g. the binary is being rebuilt: this run fails, the others go on
      ++finished;
      status_line(fail(j, fmt::format("FAILED {}: {}", stage.what, e.what())));
    }
  };
  while (true) {
    while (!g_stop_signal && running.size() < static_cast<size_t>(jobs) && !ready.empty()) {
      const Job j = ready.front();
      ready.pop_front();
      launch(j);
    }
    if (running.empty()) break;
    if (tty) status_line("");
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (g_stop_signal) {
      // Stop the running points (each resumes from its last checkpoint next time) and keep the results.
      for (const auto& [child, j] : running) kill(child, SIGTERM);
      for (const auto& [child, j] : running) waitpid(child, nullptr, 0);
      std::vector<SweepPoint> points;
      for (const auto& ch : chains) points.push_back(ch.point);
      write_sweep_results(spec.name, folder, points, swept);
      fmt::print(stderr, "\nsweep {} interrupted ({} of {} runs finished); run the same command again to continue.\n", spec.name,
                 finished, total_stages);
      return 130;
    }
    if (pid < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
    }
    auto it = running.find(pid);
    if (it == running.end()) continue;
    const Job j = it->second;
    running.erase(it);
    const Stage& stage = chains[j.chain].stages[j.stage];
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at[pid]).count();
    busy_seconds += secs;
    ++finished;
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      status_line(fail(j, fmt::format("FAILED {} ({}); see {}", stage.what,
                                      WIFEXITED(status) ? fmt::format("exit {}", WEXITSTATUS(status)) : "killed",
                                      (folder / "logs" / stage.log).string())));
    } else {
      if (stage.trains)  // its evaluations are next, ahead of other points' training
        for (size_t si = chains[j.chain].stages.size(); si-- > j.stage + 1;) ready.push_front({j.chain, si});
      status_line(fmt::format("done {} in {:.1f} s", stage.what, secs));
    }
    std::vector<SweepPoint> points;
    for (const auto& ch : chains) points.push_back(ch.point);
    write_sweep_results(spec.name, folder, points, swept);
  }
  std::vector<SweepPoint> points;
  for (const auto& ch : chains) points.push_back(ch.point);
  const size_t lines = write_sweep_results(spec.name, folder, points, swept);
  fmt::print(stderr, "sweep {}: {} result lines in {}\n", spec.name, lines, (folder / "results.jsonl").string());
  if (failures > 0) {
    print_error(fmt::format("{} run(s) of the sweep failed; their logs are in {}. Run the sweep again to retry them.", failures,
                            (folder / "logs").string()));
    return kRuntime;
  }
  return kOk;
}

}  // namespace flowkit::host
