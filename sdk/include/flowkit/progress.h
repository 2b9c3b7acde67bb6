// flowkit/progress.h — a long loop inside a component (a matcher over hundreds of crystal
// pairs, a sampler's chunks) says how far it is; the host shows a bar with an ETA on a
// terminal and plain log lines otherwise. Without a host listening it costs a clock read.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace flowkit {

class Progress {
 public:
  Progress(std::string task, int64_t total);
  ~Progress();  // reports the task finished
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  void advance(int64_t n = 1);

 private:
  std::string task_;
  int64_t total_, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_report_;
};

// What the host receives: a task's name, how far it is, seconds since it started, and whether
// it has finished. Calls are rate-limited to a few per second.
using ProgressSink = void (*)(const std::string& task, int64_t done, int64_t total, double seconds, bool finished);
// Host only: who receives progress (nullptr: nobody). Returns the previous sink.
ProgressSink set_progress_sink(ProgressSink sink);

}  // namespace flowkit
