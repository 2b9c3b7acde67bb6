// The run's log (console + log.txt), metrics.jsonl lines, the ETA format and the progress
// display. Torch-free.
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <fstream>

#include "flowkit/core/progress_display.h"
#include "flowkit/core/run_directory.h"
#include "flowkit/progress.h"

namespace flowkit::core {

std::shared_ptr<spdlog::sinks::sink> open_run_log(const RunDirectory& dir) {
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(dir.log().string());
  auto level = spdlog::default_logger()->level();
  auto logger = std::make_shared<spdlog::logger>("flowkit", spdlog::sinks_init_list{console, file});
  logger->set_level(level);
  logger->flush_on(spdlog::level::trace);  // a few lines per run: each is on disk at once, even if the process is killed
  console->set_pattern("[%H:%M:%S] %^%l%$ %v");
  file->set_pattern("[%Y-%m-%d %H:%M:%S.%e] %l %v");
  file->set_level(spdlog::level::debug);
  spdlog::set_default_logger(logger);
  return file;
}

void append_json_line(const std::filesystem::path& file, const nlohmann::json& j) {
  std::ofstream out(file, std::ios::app);
  out << j.dump() << "\n";
}

std::string format_eta(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int s = static_cast<int>(seconds + 0.5);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

namespace {

struct ProgressState {
  std::string task;
  int quarter = 0;
  double last_line = 0;
  bool drawn = false;
};
ProgressState g_progress;

void draw_bar(const std::string& task, int64_t done, int64_t total, double seconds, bool finished) {
  if (task != g_progress.task) g_progress = ProgressState{task};
  if (finished && !g_progress.drawn) return;  // too short to have been shown
  const double fraction = total > 0 ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total)) : 0;
  const int width = 30, filled = static_cast<int>(width * fraction);
  const double eta = fraction > 0 ? seconds * (1 - fraction) / fraction : NAN;
  fmt::print(stderr, "\r[{}{}] {} {}/{}  {:.1f} s  ETA {}\033[K{}", std::string(filled, '#'), std::string(width - filled, '.'), task,
             done, total, seconds, format_eta(eta), finished ? "\n" : "");
  g_progress.drawn = !finished;
}

void log_lines(const std::string& task, int64_t done, int64_t total, double seconds, bool finished) {
  if (task != g_progress.task) g_progress = ProgressState{task};
  if (finished) {
    if (seconds >= 2) spdlog::info("{}: {}/{} in {:.1f} s", task, done, total, seconds);
    g_progress = ProgressState{};
    return;
  }
  const int quarter = total > 0 ? static_cast<int>(4 * done / total) : 0;
  if (quarter > g_progress.quarter || seconds - g_progress.last_line >= 30) {
    const double eta = done > 0 ? seconds * static_cast<double>(total - done) / static_cast<double>(done) : NAN;
    spdlog::info("{}: {}/{}  {:.1f} s  ETA {}", task, done, total, seconds, format_eta(eta));
    g_progress.quarter = quarter;
    g_progress.last_line = seconds;
  }
}

}  // namespace

void show_progress_on_stderr(bool terminal) { set_progress_sink(terminal ? draw_bar : log_lines); }

}  // namespace flowkit::core
