// The trainer and the run: builds components, trains (AdamW, warm-up + cosine, EMA, clipping,
// atomic checkpoints, bit-exact resume), samples and evaluates.
#include "flowkit/core/session.h"
#include "flowkit/core/diagnostics.h"

#include "flowkit/core/embed.h"

#include <dlfcn.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "flowkit/flowkit.h"
#include "flowkit/io.h"

namespace fs = std::filesystem;

namespace flowkit::core {
namespace {

torch::Generator make_generator(const torch::Device& device, uint64_t seed) {
  if (device.is_cpu()) return at::detail::createCPUGenerator(seed);
  torch::Generator g = at::globalContext().defaultGenerator(device).clone();
  g.set_current_seed(seed);
  return g;
}

// OpenBLAS keeps its own thread pool; LibTorch's setting does not reach it.
void set_blas_threads(int n) {
  using SetThreads = void (*)(int);
  if (auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(n);
}

torch::Tensor string_tensor(const std::string& s) {
  return torch::from_blob(const_cast<char*>(s.data()), {static_cast<int64_t>(s.size())}, torch::kUInt8).clone();
}
std::string tensor_string(const torch::Tensor& t) {
  auto c = t.contiguous().to(torch::kCPU);
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), static_cast<size_t>(c.numel()));
}

void append_line(const fs::path& file, const nlohmann::json& j) {
  std::ofstream out(file, std::ios::app);
  out << j.dump() << "\n";
}

std::string format_eta(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  int s = static_cast<int>(seconds + 0.5);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

template <class I>
I* as_interface(const std::unique_ptr<Component>& c, const Config& cfg, const char* what) {
  auto* p = dynamic_cast<I*>(c.get());
  if (!p) throw ConfigError(cfg.file(), cfg.pointer_to("type"), std::string("component does not implement the ") + what + " interface");
  return p;
}

}  // namespace

struct Session::Impl {
  Pipeline pipeline;
  PluginHost& host;
  RunOptions options;
  fs::path dir;
  std::string dir_string;  // dir, for Session::run_dir()
  torch::Device device = torch::kCPU;
  std::unique_ptr<Component> parts[5];
  Domain* domain = nullptr;
  Path* path = nullptr;
  Model* model = nullptr;
  Loss* loss = nullptr;
  Solver* solver = nullptr;
  std::vector<torch::Tensor> ema;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  int64_t step = 0;
  torch::Generator gen;
  Config train_cfg, sample_cfg, eval_cfg;
  int64_t last_nfe = 0;  // of the last policy call
  std::shared_ptr<spdlog::sinks::sink> log_file;  // runs/<name>/log.txt

  Impl(const Pipeline& p, PluginHost& h, RunOptions o) : pipeline(p), host(h), options(std::move(o)) {
    train_cfg = pipeline.section("train");
    sample_cfg = pipeline.section("sample");
    eval_cfg = pipeline.section("eval");
    std::string name = options.run_name.empty() ? pipeline.name : options.run_name;
    dir = fs::path(options.runs_root) / name;
    dir_string = dir.string();
    fs::create_directories(dir / "checkpoints");
    setup_logging();
    std::string dev = train_cfg.get<std::string>("device");
    try {
      device = torch::Device(dev);
    } catch (const std::exception& e) {
      throw ConfigError(pipeline.file, "/train/device", "not a torch device: \"" + dev + "\"");
    }
    if (device.is_cuda() && !torch::cuda::is_available())
      throw ConfigError(pipeline.file, "/train/device", "\"" + dev + "\" requested but this LibTorch build has no CUDA device");
    int threads = static_cast<int>(train_cfg.get<int64_t>("threads"));
    torch::set_num_threads(threads);
    set_blas_threads(threads);
    if (pipeline.resolved.contains("plugins"))
      for (const auto& [plugin, pin] : pipeline.resolved.at("plugins").items())
        host.pin_sha256(plugin, pin.at("sha256").get<std::string>());
    // Network initialisation draws from LibTorch's global generator; seed it so that a run
    // is a pure function of train.seed.
    torch::manual_seed(static_cast<uint64_t>(train_cfg.get<int64_t>("seed")));
    build_components();
    gen = make_generator(device, static_cast<uint64_t>(train_cfg.get<int64_t>("seed")));
    torch::optim::AdamWOptions adam(train_cfg.get<double>("lr"));
    adam.betas({train_cfg.get<double>("beta1"), train_cfg.get<double>("beta2")});
    adam.weight_decay(train_cfg.get<double>("weight_decay"));
    optimizer = std::make_unique<torch::optim::AdamW>(model->module().parameters(), adam);
    for (const auto& p : model->module().parameters()) ema.push_back(p.detach().clone());
  }

  void setup_logging() {
    auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>((dir / "log.txt").string());
    log_file = file;
    auto level = spdlog::default_logger()->level();
    auto logger = std::make_shared<spdlog::logger>("flowkit", spdlog::sinks_init_list{console, file});
    logger->set_level(level);
    console->set_pattern("[%H:%M:%S] %^%l%$ %v");
    file->set_pattern("[%Y-%m-%d %H:%M:%S.%e] %l %v");
    file->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }

  void build_components() {
    BuildContext ctx;
    ctx.device = device.str();
    ctx.build = [this, &ctx](Kind kind, const Config& cfg) { return host.create(kind, cfg, ctx); };
    const char* names[5] = {"domain", "path", "model", "loss", "solver"};
    Kind kinds[5] = {Kind::domain, Kind::path, Kind::model, Kind::loss, Kind::solver};
    for (int i = 0; i < 5; ++i) {
      if (!pipeline.has(names[i])) continue;
      Config cfg = pipeline.section(names[i]);
      parts[i] = host.create(kinds[i], cfg, ctx);
      switch (kinds[i]) {
        case Kind::domain: ctx.domain = domain = as_interface<Domain>(parts[i], cfg, "domain"); break;
        case Kind::path: ctx.path = path = as_interface<Path>(parts[i], cfg, "path"); break;
        case Kind::model:
          ctx.model = model = as_interface<Model>(parts[i], cfg, "model");
          model->module().to(device);
          break;
        case Kind::loss: loss = as_interface<Loss>(parts[i], cfg, "loss"); break;
        case Kind::solver: solver = as_interface<Solver>(parts[i], cfg, "solver"); break;
      }
    }
  }

  std::vector<std::string> parameter_names() {
    std::vector<std::string> names;
    for (const auto& p : model->module().named_parameters()) names.push_back(p.key());
    return names;
  }

  double lr_at(int64_t s) const {
    double lr = train_cfg.get<double>("lr");
    int64_t warmup = train_cfg.get<int64_t>("warmup_steps");
    int64_t total = train_cfg.get<int64_t>("steps");
    if (s < warmup) return lr * static_cast<double>(s + 1) / static_cast<double>(warmup);
    if (train_cfg.get<std::string>("lr_schedule") == "constant") return lr;
    double progress = static_cast<double>(s - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
    double floor = train_cfg.get<double>("min_lr_ratio");
    return lr * (floor + (1 - floor) * 0.5 * (1 + std::cos(M_PI * std::min(1.0, progress))));
  }

  fs::path last_checkpoint() const { return dir / "checkpoints" / "last.pt"; }

  void save_checkpoint() {
    torch::serialize::OutputArchive a;
    a.write("format", torch::tensor(int64_t{1}));
    a.write("step", torch::tensor(step));
    std::string names;
    for (const auto& n : parameter_names()) names += n + "\n";
    a.write("parameter_names", string_tensor(names));
    auto params = model->module().parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      a.write("param_" + std::to_string(i), params[i].detach().cpu());
      a.write("ema_" + std::to_string(i), ema[i].cpu());
    }
    auto buffers = model->module().buffers();
    for (size_t i = 0; i < buffers.size(); ++i) a.write("buffer_" + std::to_string(i), buffers[i].cpu());
    torch::serialize::OutputArchive opt;
    optimizer->save(opt);
    a.write("optimizer", opt);
    a.write("rng", gen.get_state());
    fs::path file = dir / "checkpoints" / fmt::format("step_{:08d}.pt", step);
    fs::path tmp = file;
    tmp += ".tmp";
    a.save_to(tmp.string());
    fs::rename(tmp, file);
    fs::path last_tmp = last_checkpoint();
    last_tmp += ".tmp";
    fs::copy_file(file, last_tmp, fs::copy_options::overwrite_existing);
    fs::rename(last_tmp, last_checkpoint());
  }

  // The sampling weights (EMA when enabled) as a name -> tensor dict that Python's
  // torch.load reads and nn.Module.load_state_dict accepts.
  void export_weights() {
    EmaSwap swap(*this, true);
    c10::Dict<std::string, at::Tensor> dict;
    for (const auto& p : model->module().named_parameters()) dict.insert(p.key(), p.value().detach().cpu().clone());
    for (const auto& b : model->module().named_buffers()) dict.insert(b.key(), b.value().detach().cpu().clone());
    std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
    io::write_file_atomic((dir / "weights.pt").string(), std::string(bytes.begin(), bytes.end()));
  }

  void load_checkpoint(const fs::path& file) {
    if (!fs::exists(file)) throw Error("checkpoint '" + file.string() + "' does not exist; train first (flowkit train)");
    torch::serialize::InputArchive a;
    try {
      a.load_from(file.string(), device);
    } catch (const std::exception& e) {
      std::string what = e.what();
      throw Error("checkpoint '" + file.string() + "' cannot be read (corrupt or not a flowkit checkpoint): " +
                  what.substr(0, what.find('\n')));
    }
    try {
      torch::Tensor names_t, step_t, rng;
      a.read("parameter_names", names_t);
      std::string expected;
      for (const auto& n : parameter_names()) expected += n + "\n";
      if (tensor_string(names_t) != expected)
        throw Error("it was written for a different model (parameter names differ)");
      a.read("step", step_t);
      torch::NoGradGuard no_grad;
      auto params = model->module().parameters();
      for (size_t i = 0; i < params.size(); ++i) {
        torch::Tensor p, e;
        a.read("param_" + std::to_string(i), p);
        a.read("ema_" + std::to_string(i), e);
        if (!p.sizes().equals(params[i].sizes())) throw Error("parameter shapes differ from the model's");
        params[i].copy_(p);
        ema[i] = e.to(device).clone();
      }
      auto buffers = model->module().buffers();
      for (size_t i = 0; i < buffers.size(); ++i) {
        torch::Tensor b;
        a.read("buffer_" + std::to_string(i), b);
        buffers[i].copy_(b);
      }
      torch::serialize::InputArchive opt;
      a.read("optimizer", opt);
      optimizer->load(opt);
      a.read("rng", rng);
      gen.set_state(rng.cpu());
      step = step_t.item<int64_t>();
    } catch (const Error& e) {
      throw Error("checkpoint '" + file.string() + "' does not fit this pipeline: " + e.what());
    } catch (const std::exception& e) {
      std::string what = e.what();
      throw Error("checkpoint '" + file.string() + "' is incomplete or corrupt: " + what.substr(0, what.find('\n')));
    }
    spdlog::info("loaded checkpoint {} (step {})", file.string(), step);
  }

  void update_ema(double decay) {
    torch::NoGradGuard no_grad;
    auto params = model->module().parameters();
    for (size_t i = 0; i < params.size(); ++i) ema[i].mul_(decay).add_(params[i].detach(), 1 - decay);
  }

  // Swaps EMA weights into the model for the lifetime of the guard.
  struct EmaSwap {
    Impl& s;
    std::vector<torch::Tensor> saved;
    bool active;
    EmaSwap(Impl& impl, bool use) : s(impl), active(use && impl.train_cfg.get<double>("ema_decay") > 0) {
      if (!active) return;
      torch::NoGradGuard no_grad;
      auto params = s.model->module().parameters();
      for (size_t i = 0; i < params.size(); ++i) {
        saved.push_back(params[i].detach().clone());
        params[i].copy_(s.ema[i]);
      }
    }
    ~EmaSwap() {
      if (!active) return;
      torch::NoGradGuard no_grad;
      auto params = s.model->module().parameters();
      for (size_t i = 0; i < params.size(); ++i) params[i].copy_(saved[i]);
    }
  };

  TrainSummary train() {
    if (!domain || !model || !loss) throw Error("training needs a domain, a model and a loss");
    TrainSummary summary;
    io::write_file_atomic((dir / "pipeline.resolved.json").string(), pipeline.resolved.dump(2) + "\n");
    if (options.resume) {
      load_checkpoint(last_checkpoint());
    } else if (fs::exists(last_checkpoint())) {
      throw Error("run directory '" + dir.string() + "' already holds checkpoints; use --resume to continue it or --name to start another run");
    }
    const int64_t total = train_cfg.get<int64_t>("steps");
    const int64_t batch_size = train_cfg.get<int64_t>("batch_size");
    const int64_t log_every = train_cfg.get<int64_t>("log_every");
    const int64_t ckpt_every = train_cfg.get<int64_t>("checkpoint_every");
    const double clip = train_cfg.get<double>("grad_clip");
    const double ema_decay = train_cfg.get<double>("ema_decay");
    summary.start_step = step;
    model->module().train();
    auto t_start = std::chrono::steady_clock::now();
    auto t_window = t_start;
    auto last_draw = t_start;
    int64_t window_start = step;
    double loss_sum = 0;
    int64_t loss_count = 0;
    const int64_t stop = options.stop_at_step >= 0 ? std::min(options.stop_at_step, total) : total;
    while (step < stop) {
      double lr = lr_at(step);
      for (auto& group : optimizer->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      Batch batch = domain->train_batch(batch_size, gen).to(device);
      LossOutput out = loss->compute(*model, path, batch, gen);
      double value = out.loss.item<double>();
      if (!std::isfinite(value)) fail_non_finite("loss", value);
      optimizer->zero_grad();
      out.loss.backward();
      double grad_norm = 0;
      if (clip > 0) grad_norm = torch::nn::utils::clip_grad_norm_(model->module().parameters(), clip);
      if (!std::isfinite(grad_norm)) fail_non_finite("gradient norm", grad_norm);
      optimizer->step();
      // EMA warm-up: early averages would otherwise be dominated by the random initialisation.
      if (ema_decay > 0) update_ema(std::min(ema_decay, (1.0 + step) / (10.0 + step)));
      ++step;
      loss_sum += value;
      ++loss_count;
      summary.final_loss = value;
      bool last = step == stop;
      bool log_now = step % log_every == 0 || last;
      auto now = std::chrono::steady_clock::now();
      // On a terminal the bar is redrawn a few times a second; log lines keep their interval.
      bool draw_now = options.progress_bar && (log_now || now - last_draw > std::chrono::milliseconds(200));
      if (log_now || draw_now) {
        double secs = std::chrono::duration<double>(now - t_window).count();
        double rate = static_cast<double>(step - window_start) / std::max(secs, 1e-9);
        std::string msg = fmt::format("step {}/{}  loss {:.5f}  {:.1f} it/s  ETA {}", step, total, loss_sum / loss_count,
                                      rate, format_eta(static_cast<double>(total - step) / rate));
        if (draw_now) {
          int width = 30;
          int filled = static_cast<int>(width * step / std::max<int64_t>(total, 1));
          fmt::print(stderr, "\r[{}{}] {}\033[K", std::string(filled, '#'), std::string(width - filled, '.'), msg);
          if (last) fmt::print(stderr, "\n");
          last_draw = now;
        }
        if (log_now) {
          nlohmann::json line = {{"step", step}, {"loss", loss_sum / loss_count}, {"lr", lr}, {"steps_per_sec", rate}};
          if (clip > 0) line["grad_norm"] = grad_norm;
          for (const auto& [k, v] : out.logs) line[k] = v;
          append_line(dir / "metrics.jsonl", line);
          if (options.progress_bar) log_file->log(spdlog::details::log_msg("flowkit", spdlog::level::info, msg));
          else spdlog::info("{}", msg);
          t_window = now;
          window_start = step;
          loss_sum = 0;
          loss_count = 0;
        }
      }
      if ((ckpt_every > 0 && step % ckpt_every == 0) || last) save_checkpoint();
    }
    export_weights();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    summary.end_step = step;
    summary.steps_per_second = static_cast<double>(step - summary.start_step) / std::max(secs, 1e-9);
    summary.checkpoint = last_checkpoint().string();
    return summary;
  }

  [[noreturn]] void fail_non_finite(const char* what, double value) {
    std::string keep = fs::exists(last_checkpoint())
                           ? "the last good checkpoint is kept at " + last_checkpoint().string()
                           : "no checkpoint had been written yet";
    throw Error(fmt::format("non-finite {} ({}) at step {}: training stopped; {}. Lower train.lr or set train.grad_clip.",
                            what, value, step + 1, keep));
  }

  // Effective rank, mean pairwise distance and linear-probe accuracy of every representation the model exposes, on
  // reference items with the label field `label` (EMA weights when sampling uses them).
  nlohmann::json probe_representations(const std::string& label, torch::Generator& g) {
    torch::NoGradGuard no_grad;
    EmaSwap swap(*this, sample_cfg.get<bool>("use_ema"));
    Batch ref = domain->reference(eval_cfg.get<int64_t>("reference_count"), g).to(device);
    if (!ref.has(label))
      throw ConfigError(pipeline.file, "/eval/probe_label",
                        "the reference batch has no field \"" + label + "\"; it has: " + fmt::format("{}", fmt::join(ref.names(), ", ")));
    Conditioning cond;
    for (const auto& name : ref.names())
      if (name != "x") cond.set(name, ref.at(name));
    torch::Tensor x = ref.at("x");
    model->module().eval();
    auto* rep_model = capability<RepresentationModel>(*model);
    TensorMap reps;
    if (rep_model) reps = rep_model->forward_with_representations(x, torch::ones({x.size(0)}, x.options()), cond).second;
    model->module().train();
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [name, z] : reps)
      out[name] = {{"dim", z.flatten(1).size(1)},
                   {"effective_rank", effective_rank(z)},
                   {"mean_pairwise_distance", mean_pairwise_distance(z)},
                   {"probe_accuracy", linear_probe_accuracy(z, ref.at(label))}};
    if (reps.empty()) spdlog::warn("eval.probe_label is set but the model exposes no representations");
    return out;
  }

  Batch generate(int64_t count, int64_t steps, bool use_ema, torch::Generator& g, int64_t* nfe) {
    if (!solver) throw Error("sampling needs a solver in the pipeline");
    torch::NoGradGuard no_grad;
    EmaSwap swap(*this, use_ema);
    model->module().eval();
    const int64_t chunk = sample_cfg.get<int64_t>("batch_size");
    std::vector<Batch> parts_out;
    *nfe = 0;
    for (int64_t done = 0; done < count; done += chunk) {
      int64_t n = std::min(chunk, count - done);
      SampleRequest req;
      req.n = n;
      req.item_shape = domain->item_shape();
      req.cond = domain->sample_conditions(done, n, g).to(device);
      req.steps = steps;
      req.options = torch::TensorOptions().dtype(torch::kFloat32).device(device);
      SolveResult r = solver->sample(*model, path, req, g);
      Batch b = req.cond.to(torch::kCPU);
      b.set("x", r.x.to(torch::kCPU));
      for (const auto& [name, value] : r.fields) b.set(name, value.to(torch::kCPU));
      parts_out.push_back(std::move(b));
      *nfe = r.nfe;
    }
    model->module().train();
    return TensorMap::cat(parts_out);
  }
};

Session::Session(const Pipeline& pipeline, PluginHost& host, RunOptions options)
    : impl_(std::make_unique<Impl>(pipeline, host, std::move(options))) {}
Session::~Session() = default;

const std::string& Session::run_dir() const { return impl_->dir_string; }

TrainSummary Session::train() { return impl_->train(); }

void Session::load_checkpoint(const std::string& path) {
  impl_->load_checkpoint(path.empty() ? impl_->last_checkpoint() : fs::path(path));
}

std::vector<std::string> Session::sample() {
  auto& s = *impl_;
  auto g = make_generator(s.device, static_cast<uint64_t>(s.sample_cfg.get<int64_t>("seed")));
  int64_t nfe = 0;
  Batch samples = s.generate(s.sample_cfg.get<int64_t>("count"), s.sample_cfg.get<int64_t>("steps"),
                             s.sample_cfg.get<bool>("use_ema"), g, &nfe);
  fs::path out = s.dir / s.sample_cfg.get<std::string>("output");
  fs::create_directories(out);
  auto files = s.domain->write(samples, out.string(), "samples");
  spdlog::info("wrote {} samples ({} network evaluations each) to {}", samples.at("x").size(0), nfe, out.string());
  return files;
}

nlohmann::json Session::evaluate() {
  auto& s = *impl_;
  auto eval_gen = at::detail::createCPUGenerator(static_cast<uint64_t>(s.eval_cfg.get<int64_t>("seed")));
  std::vector<std::string> metrics = s.eval_cfg.get<nlohmann::json>("metrics").get<std::vector<std::string>>();
  if (metrics.empty()) metrics = s.domain->metric_names();
  auto known = s.domain->metric_names();
  for (size_t i = 0; i < metrics.size(); ++i)
    if (std::find(known.begin(), known.end(), metrics[i]) == known.end())
      throw ConfigError(s.pipeline.file, "/eval/metrics/" + std::to_string(i),
                        "the domain has no metric \"" + metrics[i] + "\"" + did_you_mean(metrics[i], known) +
                            "; it has: " + fmt::format("{}", fmt::join(known, ", ")));
  if (!s.solver) throw Error("evaluation needs a solver in the pipeline");
  int64_t nfe = 0;
  nlohmann::json result;
  if (const auto* env = capability<Environment>(*s.domain)) {
    // Closed loop: the environment asks the policy for an action chunk per observation row.
    Impl::EmaSwap swap(s, s.sample_cfg.get<bool>("use_ema"));
    Policy policy = make_policy(*this);
    result = env->rollout(policy, metrics, eval_gen);
    nfe = s.last_nfe;
    s.model->module().train();
  } else {
    auto g = make_generator(s.device, static_cast<uint64_t>(s.sample_cfg.get<int64_t>("seed")));
    const auto t0 = std::chrono::steady_clock::now();
    Batch samples = s.generate(s.sample_cfg.get<int64_t>("count"), s.sample_cfg.get<int64_t>("steps"),
                               s.sample_cfg.get<bool>("use_ema"), g, &nfe);
    const double sample_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    Batch reference = s.domain->reference(s.eval_cfg.get<int64_t>("reference_count"), eval_gen);
    result = s.domain->evaluate(samples, reference, metrics, eval_gen);
    result["samples"] = samples.at("x").size(0);
    result["sample_seconds"] = sample_seconds;  // wall time of generating them (all chunks)
  }
  const std::string label = s.eval_cfg.get<std::string>("probe_label");
  if (!label.empty()) result["representations"] = s.probe_representations(label, eval_gen);
  result["step"] = s.step;
  result["nfe"] = nfe;
  io::write_file_atomic((s.dir / "eval.json").string(), result.dump(2) + "\n");
  append_line(s.dir / "metrics.jsonl", {{"eval", result}});
  return result;
}

double Session::sampling_rate(int64_t count) {
  auto& s = *impl_;
  auto g = make_generator(s.device, 123);
  int64_t nfe = 0;
  auto t0 = std::chrono::steady_clock::now();
  s.generate(count, s.sample_cfg.get<int64_t>("steps"), true, g, &nfe);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(count) / std::max(secs, 1e-9);
}

}  // namespace flowkit::core

namespace flowkit::core {

struct SessionAccess {
  using Impl = Session::Impl;
  static Impl& impl(Session& s) { return *s.impl_; }
};

Policy make_policy(Session& session, int64_t steps_override) {
  auto& s = SessionAccess::impl(session);
  if (!s.solver) throw Error("a policy needs a solver in the pipeline");
  s.model->module().eval();
  const int64_t steps = steps_override > 0 ? steps_override : s.sample_cfg.get<int64_t>("steps");
  const auto item_shape = s.domain->item_shape();
  const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(s.device);
  return [&s, steps, item_shape, options](const Conditioning& obs, torch::Generator& g) {
    torch::NoGradGuard no_grad;
    SampleRequest req;
    req.cond = s.device.is_cpu() ? obs : obs.to(s.device);
    req.n = req.cond.empty() ? 1 : req.cond.begin()->second.size(0);
    req.item_shape = item_shape;
    req.steps = steps;
    req.options = options;
    SolveResult r = s.solver->sample(*s.model, s.path, req, g);
    s.last_nfe = r.nfe;
    return s.device.is_cpu() ? r.x : r.x.to(torch::kCPU);
  };
}

std::unique_ptr<Session> open_run(const std::string& run_dir, PluginHost& host, const std::string& checkpoint) {
  fs::path dir(run_dir);
  fs::path resolved = dir / "pipeline.resolved.json";
  auto v = validate_pipeline_file(resolved.string(), host);
  if (!v.ok()) throw Error("cannot open run '" + run_dir + "':\n" + v.report());
  RunOptions o;
  o.runs_root = dir.parent_path().string();
  o.run_name = dir.filename().string();
  auto session = std::make_unique<Session>(v.pipeline, host, o);
  session->load_checkpoint(checkpoint);
  auto& s = SessionAccess::impl(*session);
  if (s.sample_cfg.get<bool>("use_ema") && s.train_cfg.get<double>("ema_decay") > 0) {
    torch::NoGradGuard no_grad;
    auto params = s.model->module().parameters();
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(s.ema[i]);  // inference only: no way back needed
  }
  return session;
}

}  // namespace flowkit::core
