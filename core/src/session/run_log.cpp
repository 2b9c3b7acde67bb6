// The run's log (console + log.txt), metrics.jsonl lines and the ETA format. Torch-free.
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <fstream>

#include "flowkit/core/run_directory.h"

namespace flowkit::core {

std::shared_ptr<spdlog::sinks::sink> open_run_log(const RunDirectory& dir) {
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(dir.log().string());
  auto level = spdlog::default_logger()->level();
  auto logger = std::make_shared<spdlog::logger>("flowkit", spdlog::sinks_init_list{console, file});
  logger->set_level(level);
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

}  // namespace flowkit::core
