// Experiments as users run them: `flowkit sweep` (a 2 x 2 grid x 2 seeds on toy2d, interrupted
// and resumed), `flowkit table` against statistics computed here from the runs' own eval.json,
// progress lines of a long sampling job, and the PNG/GIF writers read back by an independent
// decoder (Pillow).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "flowkit/io.h"
#include "test_util.h"

extern char** environ;

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kFlowkitBin = FLOWKIT_BINARY_DIR "/bin/flowkit";
const std::string kToy = FLOWKIT_SOURCE_DIR "/plugins/standard/examples/toy2d.json";

std::vector<json> read_lines(const fs::path& file) {
  std::vector<json> out;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

int count_train_sessions(const fs::path& run) {
  int n = 0;
  for (const auto& j : read_lines(run / "metrics.jsonl")) n += j.contains("train_session");
  return n;
}

std::string slurp(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool pillow_available() {
  std::string out;
  return run_command("/usr/bin/python3 -c 'import PIL'", &out) == 0;
}

json sweep_file(const fs::path& runs) {
  return {{"name", "grid"},
          {"pipeline", kToy},
          {"runs_dir", runs.string()},
          {"overrides",
           {{"train.steps", 200}, {"train.log_every", 50}, {"train.checkpoint_every", 50}, {"sample.count", 400},
            {"eval.reference_count", 400}}},
          {"grid", {{"model.hidden", {16, 32}}, {"train.lr", {0.002, 0.004}}}},
          {"seeds", {0, 1}},
          {"eval_grid", {{"solver.steps", {4}}}},
          {"jobs", 2}};
}

// Starts `args` with stdout and stderr into `log`; the caller waits for it (waitpid).
pid_t spawn_logged(std::vector<std::string> args, const std::string& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

}  // namespace

TEST(Sweep, GridOfSeedsIsInterruptedResumedAndTabulated) {
  if (!build_has_bundled_plugins()) GTEST_SKIP() << "built without the bundled plugins";
  TempDir tmp;
  const fs::path runs = tmp.path() / "runs", folder = runs / "grid";
  const fs::path file = tmp.path() / "grid.json";
  std::ofstream(file) << sweep_file(runs).dump(2);

  // Start the sweep, stop it with SIGTERM once two results are in, as a user's Ctrl-C would.
  unsetenv("FLOWKIT_PLUGIN_PATH");  // the build tree's plugins only (this test runs in a process of its own)
  const std::string first_log = (tmp.path() / "first.log").string();
  const pid_t pid = spawn_logged({kFlowkitBin, "sweep", file.string()}, first_log);
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  int status = 0;
  bool exited = false;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    if (read_lines(folder / "results.jsonl").size() >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(exited) << "the sweep ended before it could be interrupted:\n" << slurp(first_log);
  kill(pid, SIGTERM);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  const std::string first = slurp(first_log);
  ASSERT_TRUE(WIFEXITED(status)) << first;
  EXPECT_EQ(WEXITSTATUS(status), 130) << first;
  EXPECT_THAT_MSG(first, "run the same command again to continue");

  // What was finished before the interruption must not run again.
  std::map<std::string, std::string> finished_eval;
  const size_t finished_runs = read_lines(folder / "results.jsonl").size();
  for (const auto& line : read_lines(folder / "results.jsonl"))
    if (line["eval"].is_null()) finished_eval[line["point"]] = slurp(folder / line["point"].get<std::string>() / "eval.json");
  ASSERT_FALSE(finished_eval.empty());
  ASSERT_LT(finished_eval.size(), 8u);

  std::string second;
  ASSERT_EQ(run_command("env -u FLOWKIT_PLUGIN_PATH " + kFlowkitBin + " sweep " + file.string(), &second), 0) << second;
  EXPECT_THAT_MSG(second, std::to_string(16 - finished_runs) + " runs to do");
  for (const auto& [point, eval] : finished_eval) {
    EXPECT_EQ(slurp(folder / point / "eval.json"), eval) << point << " was evaluated again";
    EXPECT_EQ(count_train_sessions(folder / point), 1) << point << " was trained again";
  }
  std::string third;  // a finished sweep runs nothing
  ASSERT_EQ(run_command("env -u FLOWKIT_PLUGIN_PATH " + kFlowkitBin + " sweep " + file.string(), &third), 0) << third;
  EXPECT_THAT_MSG(third, "8 points (8 done), 0 runs to do");

  const auto results = read_lines(folder / "results.jsonl");
  ASSERT_EQ(results.size(), 16u);  // 8 trained points + one eval-only point each
  cpu_set_t set;
  sched_getaffinity(0, sizeof set, &set);
  const int blas = std::max(1, CPU_COUNT(&set) / 2);
  std::map<std::pair<int, double>, std::vector<double>> energy;  // (hidden, lr) -> per seed
  for (const auto& line : results) {
    const fs::path run = folder / line["run"].get<std::string>();
    const json resolved = json::parse(slurp(run / "pipeline.resolved.json"));
    EXPECT_EQ(resolved["model"]["hidden"], line["settings"]["model.hidden"]);
    EXPECT_EQ(resolved["train"]["seed"], line["seed"]);
    EXPECT_EQ(resolved["train"]["threads"], 1);  // two jobs share the cores without oversubscribing
    EXPECT_EQ(resolved["train"]["blas_threads"], blas);
    EXPECT_GT(line["train_seconds"].get<double>(), 0);
    if (line["eval"].is_null()) {
      EXPECT_EQ(line["metrics"], json::parse(slurp(run / "eval.json")));
      EXPECT_EQ(line["metrics"]["nfe"], 80);  // RK4, the pipeline's 20 steps
      energy[{line["settings"]["model.hidden"].get<int>(), line["settings"]["train.lr"].get<double>()}].push_back(
          line["metrics"]["energy_distance"].get<double>());
    } else {
      EXPECT_EQ(line["eval"], "steps-4");
      EXPECT_EQ(line["metrics"], json::parse(slurp(run / "evals/steps-4.json")));
      EXPECT_EQ(line["metrics"]["nfe"], 16);  // re-evaluated with 4 RK4 steps, same weights
    }
  }

  // The table's cells against mean and 95 % t half-width (t_{0.975,1} = 12.706) computed here.
  std::string csv;
  ASSERT_EQ(run_command(kFlowkitBin + " table " + (folder / "results.jsonl").string() +
                            " --rows model.hidden --cols train.lr --metric energy_distance --format csv",
                        &csv),
            0)
      << csv;
  std::istringstream rows(csv);
  std::string header;
  std::getline(rows, header);
  EXPECT_EQ(header, "model.hidden,train.lr,metric,mean,interval,n");
  int cells = 0;
  for (std::string row; std::getline(rows, row);) {
    int hidden = 0, n = 0;
    double lr = 0, mean = 0, half = 0;
    char metric[64];
    ASSERT_EQ(std::sscanf(row.c_str(), "%d,%lf,%63[^,],%lf,%lf,%d", &hidden, &lr, metric, &mean, &half, &n), 6) << row;
    const auto& v = energy.at({hidden, lr});
    ASSERT_EQ(v.size(), 2u);
    const double m = (v[0] + v[1]) / 2, sd = std::fabs(v[0] - v[1]) / std::sqrt(2.0);
    EXPECT_NEAR(mean, m, 1e-5 * std::max(1.0, std::fabs(m)));
    EXPECT_NEAR(half, 12.706 * sd / std::sqrt(2.0), 1e-4 * std::max(1e-3, half));
    EXPECT_EQ(n, 2);
    ++cells;
  }
  EXPECT_EQ(cells, 4);
  // Rows by an eval-only setting: the base points (20 steps, from their resolved pipeline) and the 4-step ones.
  std::string md;
  ASSERT_EQ(run_command(kFlowkitBin + " table " + (folder / "results.jsonl").string() + " --rows model.hidden --cols solver.steps --metric nfe",
                        &md),
            0)
      << md;
  EXPECT_THAT_MSG(md, "| model.hidden | solver.steps = 4 | solver.steps = 20 |");
  EXPECT_THAT_MSG(md, "| 16 | 16 | 80 |");
  EXPECT_THAT_MSG(md, "n = 4 per cell");
  // results.jsonl is self-contained: the same table from a copy without the run directories.
  fs::create_directories(tmp.path() / "committed");
  fs::copy_file(folder / "results.jsonl", tmp.path() / "committed/results.jsonl");
  std::string copy;
  ASSERT_EQ(run_command(kFlowkitBin + " table " + (tmp.path() / "committed/results.jsonl").string() +
                            " --rows model.hidden --cols solver.steps --metric nfe 2>/dev/null",
                        &copy),
            0)
      << copy;
  EXPECT_EQ(copy.substr(copy.find("| model.hidden")), md.substr(md.find("| model.hidden")));
}

TEST(Sweep, BadSweepFilesAreReportedBeforeAnythingRuns) {
  if (!build_has_bundled_plugins()) GTEST_SKIP() << "built without the bundled plugins";
  TempDir tmp;
  auto run_sweep = [&](const json& doc, std::string* out) {
    std::ofstream(tmp.path() / "s.json") << doc.dump(2);
    return run_command("cd " + tmp.path().string() + " && env -u FLOWKIT_PLUGIN_PATH " + kFlowkitBin + " sweep s.json", out);
  };
  json doc = sweep_file(tmp.path() / "runs");
  doc["seed"] = {3};
  std::string out;
  EXPECT_EQ(run_sweep(doc, &out), 2) << out;
  EXPECT_THAT_MSG(out, "s.json");
  EXPECT_THAT_MSG(out, "/seed");
  EXPECT_THAT_MSG(out, "did you mean 'seeds'?");

  doc = sweep_file(tmp.path() / "runs");
  doc["eval_grid"] = {{"model.hidden", {8}}};
  out.clear();
  EXPECT_EQ(run_sweep(doc, &out), 2) << out;
  EXPECT_THAT_MSG(out, "/eval_grid/model.hidden");
  EXPECT_THAT_MSG(out, "belongs in \"grid\"");

  doc = sweep_file(tmp.path() / "runs");
  doc["grid"]["model.hidden"] = {16, "wide"};
  doc["grid"]["model.hiden"] = {1};
  out.clear();
  EXPECT_EQ(run_sweep(doc, &out), 2) << out;
  EXPECT_THAT_MSG(out, "nothing was run");
  EXPECT_THAT_MSG(out, "point 'hidden-wide_hiden-1_lr-0.002_seed-0'");
  EXPECT_THAT_MSG(out, "command line override 'model.hidden=\"wide\"'");
  EXPECT_THAT_MSG(out, "did you mean 'hidden'?");
  EXPECT_FALSE(fs::exists(tmp.path() / "runs"));
}

TEST(Table, CellsAreMeansWithStudentIntervalsAndBadLinesAreNamed) {
  TempDir tmp;
  const fs::path file = tmp.path() / "results.jsonl";
  {
    std::ofstream out(file);
    // Cell a: 1, 2, 3 (mean 2, sd 1, half-width 4.303 / sqrt 3 = 2.484); cell b: one seed.
    for (int seed = 0; seed < 3; ++seed)
      out << json{{"point", "a"}, {"settings", {{"x", "a"}}}, {"seed", seed}, {"eval", nullptr}, {"metrics", {{"m", 1.0 + seed}}}}.dump()
          << "\n";
    out << json{{"point", "b"}, {"settings", {{"x", "b"}}}, {"seed", 0}, {"eval", nullptr}, {"metrics", {{"m", 5.0}}}}.dump() << "\n";
  }
  std::string md;
  ASSERT_EQ(run_command(kFlowkitBin + " table " + file.string() + " --rows x --metric m", &md), 0) << md;
  EXPECT_THAT_MSG(md, "| a | 2.0 ± 2.5 (n=3) |");
  EXPECT_THAT_MSG(md, "| b | 5 (n=1) |");
  EXPECT_THAT_MSG(md, "95 % Student-t interval");
  std::string sem;
  ASSERT_EQ(run_command(kFlowkitBin + " table " + file.string() + " --rows x --metric m --interval sem --format csv", &sem), 0) << sem;
  EXPECT_THAT_MSG(sem, "a,m,2,0.57735,3");  // 1 / sqrt 3

  std::ofstream(file, std::ios::app) << "{\"point\": \"c\", \"metrics\": \n";
  std::string bad;
  EXPECT_EQ(run_command(kFlowkitBin + " table " + file.string() + " --rows x", &bad), 1) << bad;
  EXPECT_THAT_MSG(bad, file.string() + ":5: not a results line");
  bad.clear();
  EXPECT_NE(run_command(kFlowkitBin + " table " + file.string() + " --rows x --metric energy", &bad), 0) << bad;
}

TEST(Progress, LongSamplingLogsProgressLinesWithoutATerminal) {
  if (!build_has_bundled_plugins()) GTEST_SKIP() << "built without the bundled plugins";
  TempDir tmp;
  std::string out;
  const std::string flowkit = "cd " + tmp.path().string() + " && env -u FLOWKIT_PLUGIN_PATH " + kFlowkitBin;
  ASSERT_EQ(run_command(flowkit + " -q train " + kToy + " train.steps=20 model.hidden=256", &out), 0) << out;
  out.clear();
  // ~2 s of sampling in chunks of 200 (stderr is a pipe here: plain log lines, no bar).
  ASSERT_EQ(run_command(flowkit + " sample " + kToy + " train.steps=20 model.hidden=256 sample.count=6000 sample.batch_size=200 solver.steps=10",
                        &out),
            0)
      << out;
  EXPECT_THAT_MSG(out, "sampling: ");
  EXPECT_THAT_MSG(out, "/6000");
  EXPECT_THAT_MSG(out, "ETA");
  EXPECT_EQ(out.find('\r'), std::string::npos) << "a bar was drawn into a pipe";
}

TEST(ImageWriters, PngAndGifDecodeWithAnIndependentDecoder) {
  TempDir tmp;
  const int w = 7, h = 5;
  std::vector<uint8_t> rgb(w * h * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
  const std::string png = (tmp.path() / "a.png").string();
  flowkit::io::write_png_rgb(png, w, h, rgb);
  int rw = 0, rh = 0;
  EXPECT_EQ(flowkit::io::read_png_rgb(png, &rw, &rh), rgb);
  EXPECT_EQ(rw, w);
  EXPECT_EQ(rh, h);
  {
    std::ofstream(tmp.path() / "bad.png") << "\x89PNG\r\n\x1a\n garbage";
    EXPECT_THROW(
        {
          try {
            flowkit::io::read_png_rgb((tmp.path() / "bad.png").string(), &rw, &rh);
          } catch (const flowkit::Error& e) {
            EXPECT_THAT_MSG(e.what(), "bad.png");
            throw;
          }
        },
        flowkit::Error);
  }
  // Three gray frames (kept exact) and three colour frames (a 6x7x6 cube: at most 25.5 off).
  std::vector<std::vector<uint8_t>> gray, colour;
  for (int f = 0; f < 3; ++f) {
    std::vector<uint8_t> g(w * h * 3), c(w * h * 3);
    for (int p = 0; p < w * h; ++p) {
      const auto v = static_cast<uint8_t>((p * 9 + f * 80) % 256);
      g[p * 3] = g[p * 3 + 1] = g[p * 3 + 2] = v;
      c[p * 3] = v, c[p * 3 + 1] = static_cast<uint8_t>(255 - v), c[p * 3 + 2] = static_cast<uint8_t>((v * 3) % 256);
    }
    gray.push_back(g), colour.push_back(c);
  }
  flowkit::io::write_gif((tmp.path() / "gray.gif").string(), w, h, gray, 12);
  flowkit::io::write_gif((tmp.path() / "colour.gif").string(), w, h, colour, 12);
  if (!pillow_available()) GTEST_SKIP() << "python3-pil (the independent decoder) is not installed";
  // Pillow dumps every pixel of every frame; compared here with what was written.
  const std::string script =
      "import sys, json\nfrom PIL import Image, ImageSequence\nout = {}\nfor name in sys.argv[1:]:\n"
      "    im = Image.open(name)\n"
      "    frames = [list(f.convert('RGB').getdata()) for f in ImageSequence.Iterator(im)]\n"
      "    out[name] = {'format': im.format, 'size': im.size, 'frames': frames, 'duration': im.info.get('duration'),"
      " 'loop': im.info.get('loop')}\n"
      "print(json.dumps(out))\n";
  std::ofstream(tmp.path() / "decode.py") << script;
  std::string out;
  ASSERT_EQ(run_command("/usr/bin/python3 " + (tmp.path() / "decode.py").string() + " " + png + " " + (tmp.path() / "gray.gif").string() +
                            " " + (tmp.path() / "colour.gif").string() + " 2>&1",
                        &out),
            0)
      << out;
  const json decoded = json::parse(out);
  auto pixels = [](const json& frame) {
    std::vector<int> v;
    for (const auto& p : frame)
      for (const auto& c : p) v.push_back(c.get<int>());
    return v;
  };
  const json& p = decoded.at(png);
  EXPECT_EQ(p["format"], "PNG");
  EXPECT_EQ(p["size"], json::array({w, h}));
  EXPECT_EQ(pixels(p["frames"][0]), std::vector<int>(rgb.begin(), rgb.end()));
  const json& g = decoded.at((tmp.path() / "gray.gif").string());
  EXPECT_EQ(g["format"], "GIF");
  ASSERT_EQ(g["frames"].size(), 3u);
  EXPECT_EQ(g["duration"], 120);
  EXPECT_EQ(g["loop"], 0);  // loops forever
  for (int f = 0; f < 3; ++f) EXPECT_EQ(pixels(g["frames"][f]), std::vector<int>(gray[f].begin(), gray[f].end())) << "frame " << f;
  const json& c = decoded.at((tmp.path() / "colour.gif").string());
  ASSERT_EQ(c["frames"].size(), 3u);
  for (int f = 0; f < 3; ++f) {
    const auto v = pixels(c["frames"][f]);
    int worst = 0;
    for (size_t i = 0; i < v.size(); ++i) worst = std::max(worst, std::abs(v[i] - colour[f][i]));
    EXPECT_LE(worst, 26) << "frame " << f;
  }
}

// Every table in the docs between <!-- flowkit table ... --> markers is what its command prints
// from the committed results (regenerate: flowkit table --update <page>).
TEST(DocsTables, AreWhatTheirCommandsPrintFromTheCommittedResults) {
  int pages = 0;
  for (const auto& e : fs::recursive_directory_iterator(FLOWKIT_SOURCE_DIR "/docs")) {
    if (e.path().extension() != ".md" || slurp(e.path()).find("<!-- flowkit table ") == std::string::npos) continue;
    ++pages;
    std::string out;
    EXPECT_EQ(run_command("cd " FLOWKIT_SOURCE_DIR " && " + kFlowkitBin + " table --check --update " + e.path().string(), &out), 0)
        << out << "regenerate with: flowkit table --update " << e.path().string();
  }
  EXPECT_GE(pages, 1);
}

// SIGTERM (what a sweep, a scheduler or `kill` sends) stops training after the current step with
// a checkpoint and exit code 143; --resume then ends bit-identical to an uninterrupted run.
TEST(Interruption, SigtermCheckpointsAndResumeIsBitIdentical) {
  if (!build_has_bundled_plugins()) GTEST_SKIP() << "built without the bundled plugins";
  TempDir tmp;
  unsetenv("FLOWKIT_PLUGIN_PATH");
  const std::vector<std::string> overrides{"train.steps=1500", "train.log_every=25", "train.checkpoint_every=1000", "model.hidden=64"};
  std::vector<std::string> args{kFlowkitBin, "train", kToy};
  args.insert(args.end(), overrides.begin(), overrides.end());
  args.insert(args.end(), {"--runs-dir", (tmp.path() / "runs").string(), "--name", "cut"});
  const std::string log = (tmp.path() / "cut.log").string();
  const pid_t pid = spawn_logged(args, log);
  ASSERT_GT(pid, 0);
  int status = 0;
  bool exited = false;
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2); std::chrono::steady_clock::now() < deadline;) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    if (read_lines(tmp.path() / "runs/cut/metrics.jsonl").size() >= 4) break;  // past step 100
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(exited) << "training ended before it could be interrupted:\n" << slurp(log);
  kill(pid, SIGTERM);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  const std::string out = slurp(log);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 143) << out;
  EXPECT_THAT_MSG(out, "training stopped by SIGTERM after step");
  EXPECT_THAT_MSG(out, "--resume");
  const auto sessions = read_lines(tmp.path() / "runs/cut/metrics.jsonl");
  ASSERT_TRUE(sessions.back().contains("train_session")) << sessions.back().dump();
  const int64_t stopped = sessions.back()["train_session"]["end_step"].get<int64_t>();
  EXPECT_GT(stopped, 0);
  EXPECT_LT(stopped, 1500);

  std::string cmd = "env -u FLOWKIT_PLUGIN_PATH " + kFlowkitBin + " -q train " + kToy;
  for (const auto& o : overrides) cmd += " " + o;
  cmd += " --runs-dir " + (tmp.path() / "runs").string();
  std::string resumed, straight;
  ASSERT_EQ(run_command(cmd + " --name cut --resume", &resumed), 0) << resumed;
  // Global flags work after the command too (-q here).
  ASSERT_EQ(run_command("env -u FLOWKIT_PLUGIN_PATH " + kFlowkitBin + " train " + kToy + " " + overrides[0] + " " + overrides[1] + " " +
                            overrides[2] + " " + overrides[3] + " --runs-dir " + (tmp.path() / "runs").string() + " --name straight -q",
                        &straight),
            0)
      << straight;
  EXPECT_EQ(straight.find("info"), std::string::npos) << "-q after the command was ignored:\n" << straight;
  EXPECT_EQ(slurp(tmp.path() / "runs/cut/weights.pt"), slurp(tmp.path() / "runs/straight/weights.pt"))
      << "resumed from step " << stopped << " but did not end where the uninterrupted run did";
}

TEST(Table, NameRowsGroupANamedPointsSeeds) {
  TempDir tmp;
  const fs::path file = tmp.path() / "results.jsonl";
  {
    std::ofstream out(file);  // the sweep's run names: "<name>_seed-<seed>"
    for (int seed = 0; seed < 2; ++seed)
      out << json{{"point", "reg_seed-" + std::to_string(seed)}, {"seed", seed}, {"eval", nullptr}, {"metrics", {{"m", 1.0 + seed}}}}.dump()
          << "\n";
    out << json{{"point", "fm_seed-0"}, {"seed", 0}, {"eval", nullptr}, {"metrics", {{"m", 7.0}}}}.dump() << "\n";
  }
  std::string md;
  ASSERT_EQ(run_command(kFlowkitBin + " table " + file.string() + " --rows name --metric m --interval none", &md), 0) << md;
  EXPECT_THAT_MSG(md, "| reg | 1.5 (n=2) |");
  EXPECT_THAT_MSG(md, "| fm | 7 (n=1) |");
}

TEST(Table, WilsonPoolsRatesOverTheSeedsTrials) {
  TempDir tmp;
  const fs::path file = tmp.path() / "results.jsonl";
  {
    std::ofstream out(file);  // 50/100 and 70/100 successes: 120 of 200
    out << json{{"settings", {{"arm", "a"}}}, {"seed", 0}, {"eval", nullptr}, {"metrics", {{"success", 0.5}, {"episodes", 100}}}}.dump() << "\n";
    out << json{{"settings", {{"arm", "a"}}}, {"seed", 1}, {"eval", nullptr}, {"metrics", {{"success", 0.7}, {"episodes", 100}}}}.dump() << "\n";
  }
  std::string md;
  ASSERT_EQ(run_command(kFlowkitBin + " table " + file.string() + " --rows arm --metric success --interval wilson --count episodes", &md), 0)
      << md;
  EXPECT_THAT_MSG(md, "| a | 0.600 [0.531, 0.665] |");  // the Wilson score interval of 120/200
  std::string bad;
  EXPECT_EQ(run_command(kFlowkitBin + " table " + file.string() + " --rows arm --interval wilson", &bad), 2) << bad;
  EXPECT_THAT_MSG(bad, "--count");
}

TEST(Overrides, NullRemovesASectionSoASweepCanDropAComponent) {
  if (!build_has_bundled_plugins()) GTEST_SKIP() << "built without the bundled plugins";
  const std::string validate = "env -u FLOWKIT_PLUGIN_PATH " + kFlowkitBin + " validate ";
  std::string out;
  // Removed, and then checked like any pipeline: toy2d's loss and solver need a path.
  EXPECT_EQ(run_command(validate + kToy + " path=null", &out), 2) << out;
  EXPECT_THAT_MSG(out, "'standard.cfm' needs a \"path\" section, which the pipeline does not have");
  out.clear();
  const std::string dm1 = FLOWKIT_SOURCE_DIR "/plugins/dm1/examples/meanflow_state.json";
  ASSERT_EQ(run_command(validate + dm1 + " 'path={\"type\": \"standard.affine\"}' path=null", &out), 0) << out;
  const json resolved = json::parse(out.substr(out.find('{'), out.rfind('}') - out.find('{') + 1));  // stdout: the resolved pipeline
  EXPECT_FALSE(resolved.contains("path")) << out;
  EXPECT_EQ(resolved["loss"]["type"], "dm1.meanflow");
}
