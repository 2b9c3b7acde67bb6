// The training loop: AdamW with warm-up + cosine lr, gradient clipping, EMA, metrics.jsonl
// lines, a progress bar on a terminal, atomic checkpoints; stops on a non-finite loss.
#include "session/state.h"

#include <spdlog/details/log_msg.h>
#include <spdlog/sinks/sink.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#include "flowkit/io.h"

namespace fs = std::filesystem;

namespace flowkit::core {
namespace {

// Linear warm-up, then constant or cosine decay to min_lr_ratio * lr (read once, not per step).
struct LrSchedule {
  explicit LrSchedule(const Config& train)
      : lr(train.get<double>("lr")),
        floor(train.get<double>("min_lr_ratio")),
        warmup(train.get<int64_t>("warmup_steps")),
        total(train.get<int64_t>("steps")),
        constant(train.get<std::string>("lr_schedule") == "constant") {}
  double at(int64_t s) const {
    if (s < warmup) return lr * static_cast<double>(s + 1) / static_cast<double>(warmup);
    if (constant) return lr;
    const double progress = static_cast<double>(s - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
    return lr * (floor + (1 - floor) * 0.5 * (1 + std::cos(M_PI * std::min(1.0, progress))));
  }
  double lr, floor;
  int64_t warmup, total;
  bool constant;
};

[[noreturn]] void fail_non_finite(const SessionState& s, const char* what, double value) {
  std::string keep = s.dir.has_checkpoint() ? "the last good checkpoint is kept at " + s.dir.last_checkpoint().string()
                                            : "no checkpoint had been written yet";
  throw Error(fmt::format("non-finite {} ({}) at step {}: training stopped; {}. Lower train.lr or set train.grad_clip.",
                          what, value, s.step + 1, keep));
}

// One training process per run directory: an exclusive lock on <run>/.train.lock, held while
// training (released by the kernel if the process dies).
class TrainingLock {
 public:
  explicit TrainingLock(const RunDirectory& dir) : path_((dir.root() / ".train.lock").string()) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error("cannot create the lock file '" + path_ + "': " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      char pid[32] = {0};
      const ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
      ::close(fd_);
      throw Error(fmt::format("run directory '{}' is being trained by another process{}; wait for it, or train another run with --name",
                              dir.root().string(), n > 0 ? fmt::format(" (pid {})", std::string(pid, static_cast<size_t>(n))) : ""));
    }
    const std::string me = std::to_string(::getpid());
    if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, me.data(), me.size(), 0) < 0) {}  // the pid is only informative
  }
  ~TrainingLock() { ::close(fd_); }

 private:
  std::string path_;
  int fd_ = -1;
};

// SIGINT/SIGTERM while training set a flag; the loop finishes its step, writes a checkpoint and
// stops. The previous handlers come back afterwards.
volatile sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  int received() const { return g_stop_signal; }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

}  // namespace

TrainingInterrupted::TrainingInterrupted(int sig, int64_t at, const std::string& file)
    : Error(fmt::format("training stopped by {} after step {}; checkpoint {}", sig == SIGINT ? "SIGINT" : "SIGTERM", at, file)),
      signal_number(sig),
      step(at),
      checkpoint(file) {}

TrainSummary train_loop(SessionState& s) {
  Domain* domain = s.parts.domain;
  Model* model = s.parts.model;
  Loss* loss = s.parts.loss;
  if (!domain || !model || !loss) throw Error("training needs a domain, a model and a loss");
  TrainSummary summary;
  // Rank 0 owns the run directory: the lock, the resolved pipeline, checkpoints and logs.
  std::optional<TrainingLock> lock;
  if (s.primary()) {
    lock.emplace(s.dir);
    io::write_file_atomic(s.dir.resolved_pipeline().string(), s.pipeline.resolved.dump(2) + "\n");
    if (s.options.resume) {
      load_latest_checkpoint(s);
    } else if (s.dir.has_checkpoint()) {
      throw Error("run directory '" + s.dir_string +
                  "' already holds checkpoints; use --resume to continue it or --name to start another run");
    }
  }
  if (s.group) dp_start(s);  // every rank from rank 0's parameters, optimizer state and step
  const Config& train = s.train_cfg;
  const int64_t total = train.get<int64_t>("steps");
  const int64_t batch_size = train.get<int64_t>("batch_size");
  const int64_t log_every = train.get<int64_t>("log_every");
  const int64_t ckpt_every = train.get<int64_t>("checkpoint_every");
  const double clip = train.get<double>("grad_clip");
  const LrSchedule schedule(train);
  summary.start_step = s.step;
  model->module().train();
  auto t_start = std::chrono::steady_clock::now();
  auto t_window = t_start;
  auto last_draw = t_start;
  int64_t window_start = s.step;
  double loss_sum = 0;
  int64_t loss_count = 0;
  const int64_t stop = s.options.stop_at_step >= 0 ? std::min(s.options.stop_at_step, total) : total;
  const StopSignals signals;
  auto session_line = [&](double seconds) {  // one per training session: a resumed run's time is their sum
    if (s.primary())
      append_json_line(s.dir.metrics(), {{"train_session", {{"start_step", summary.start_step}, {"end_step", s.step}, {"seconds", seconds},
                                                            {"world_size", s.world.size}}}});
  };
  // A checkpoint of a distributed run holds every rank's noise stream (a collective); rank 0 writes it.
  auto checkpoint = [&] {
    if (s.group) dp_gather_rank_streams(s);
    if (s.primary()) save_checkpoint(s);
  };
  auto interrupted = [&](int sig) {
    if (s.options.progress_bar) fmt::print(stderr, "\n");
    checkpoint();
    session_line(std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
    return TrainingInterrupted(sig, s.step, s.dir.last_checkpoint().string());
  };
  while (s.step < stop) {
    if (!s.group)
      if (const int sig = signals.received()) throw interrupted(sig);
    const double lr = schedule.at(s.step);
    s.optimizer->set_lr(lr);
    // A distributed step: this rank's share of the global batch, its own noise stream.
    Batch batch = s.group ? dp_batch(s, batch_size) : domain->train_batch(batch_size, s.gen).to(s.device);
    LossOutput out = loss->compute(*model, s.parts.path, batch, s.group ? s.rank_gen : s.gen);
    double value = out.loss.item<double>();
    if (s.group) {
      // All ranks learn together whether one diverged or was asked to stop, and log the means.
      DpStatus st = dp_status(s, value, signals.received() != 0, out.logs);
      if (st.non_finite) fail_non_finite(s, std::isfinite(value) ? "loss on another rank" : "loss", value);
      if (st.stop) throw interrupted(signals.received() ? signals.received() : SIGTERM);
      value = st.loss;
      out.logs = st.logs;
    }
    if (!std::isfinite(value)) fail_non_finite(s, "loss", value);
    s.optimizer->zero_grad();
    out.loss.backward();
    if (s.group) dp_average_gradients(s);  // then the local norm is the global one, and every rank steps alike
    // The norm is a curve in the report; without clipping it is computed on logged steps only.
    const bool logs_this_step = (s.step + 1) % log_every == 0 || s.step + 1 == stop;
    double grad_norm = 0;
    if (clip > 0) grad_norm = s.optimizer->clip_grad_norm(clip);
    else if (logs_this_step) grad_norm = s.optimizer->clip_grad_norm(std::numeric_limits<double>::infinity());
    if (!std::isfinite(grad_norm)) fail_non_finite(s, "gradient norm", grad_norm);
    s.optimizer->step();
    if (s.primary()) s.ema->update(s.step);  // every rank holds the same parameters: one average suffices
    ++s.step;
    loss_sum += value;
    ++loss_count;
    summary.final_loss = value;
    const bool last = s.step == stop;
    const bool log_now = s.step % log_every == 0 || last;
    auto now = std::chrono::steady_clock::now();
    // On a terminal the bar is redrawn a few times a second; log lines keep their interval.
    const bool draw_now = s.options.progress_bar && (log_now || now - last_draw > std::chrono::milliseconds(200));
    if (s.primary() && (log_now || draw_now)) {
      const double secs = std::chrono::duration<double>(now - t_window).count();
      const double rate = static_cast<double>(s.step - window_start) / std::max(secs, 1e-9);
      std::string msg = fmt::format("step {}/{}  loss {:.5f}  {:.1f} it/s  ETA {}", s.step, total, loss_sum / loss_count,
                                    rate, format_eta(static_cast<double>(total - s.step) / rate));
      if (draw_now) {
        const int width = 30;
        const int filled = static_cast<int>(width * s.step / std::max<int64_t>(total, 1));
        fmt::print(stderr, "\r[{}{}] {}\033[K", std::string(filled, '#'), std::string(width - filled, '.'), msg);
        if (last) fmt::print(stderr, "\n");
        last_draw = now;
      }
      if (log_now) {
        nlohmann::json line = {{"step", s.step}, {"loss", loss_sum / loss_count}, {"lr", lr}, {"steps_per_sec", rate}};
        line["grad_norm"] = grad_norm;
        for (const auto& [k, v] : out.logs) line[k] = v;
        append_json_line(s.dir.metrics(), line);
        if (s.options.progress_bar) s.log_file->log(spdlog::details::log_msg("flowkit", spdlog::level::info, msg));
        else spdlog::info("{}", msg);
        t_window = now;
        window_start = s.step;
        loss_sum = 0;
        loss_count = 0;
      }
    }
    if ((ckpt_every > 0 && s.step % ckpt_every == 0) || last) checkpoint();
  }
  if (s.group) {
    nlohmann::json replicas = dp_check_replicas(s);
    if (s.primary()) append_json_line(s.dir.metrics(), {{"distributed", replicas}});
  }
  if (s.primary()) export_weights(s);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  summary.end_step = s.step;
  summary.steps_per_second = static_cast<double>(s.step - summary.start_step) / std::max(secs, 1e-9);
  summary.checkpoint = s.dir.last_checkpoint().string();
  session_line(secs);
  return summary;
}

}  // namespace flowkit::core
