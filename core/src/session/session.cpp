// The session: sets up the run (directory, logging, device, threads, seeds), builds the
// components and the optimizer, and dispatches to the parts that do the work.
#include "flowkit/core/session.h"

#include <dlfcn.h>
#include <malloc.h>

#include <set>

#include "flowkit/core/memory_budget.h"
#include "flowkit/safetensors.h"
#include "session/state.h"

namespace fs = std::filesystem;

namespace flowkit::core {

// OpenBLAS keeps its own thread pool; LibTorch's setting does not reach it.
void set_blas_threads(int n) {
  using SetThreads = void (*)(int);
  if (auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(n);
}

namespace {

// glibc hands every freed block above its mmap threshold (activations and gradients of a large
// batch) back to the OS and page-faults it in again on the next step. Keep freed memory in the
// heap instead, as caching allocators do: measured +25-35 % steps/s at batch 4096
// (docs/performance.md). The resident set stays at the peak of a step.
void keep_freed_memory() {
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_TOP_PAD, 64 << 20);
    return true;
  }();
  (void)done;
}

torch::Device parse_device(const Pipeline& pipeline, const std::string& dev) {
  torch::Device device = torch::kCPU;
  try {
    device = torch::Device(dev);
  } catch (const std::exception&) {
    throw ConfigError(pipeline.file, "/train/device", "not a torch device: \"" + dev + "\"");
  }
  if (device.is_cuda() && !torch::cuda::is_available())
    throw ConfigError(pipeline.file, "/train/device", "\"" + dev + "\" requested but this LibTorch build has no CUDA device");
  return device;
}

}  // namespace

torch::Generator make_generator(const torch::Device& device, uint64_t seed) {
  if (device.is_cpu()) return at::detail::createCPUGenerator(seed);
  torch::Generator g = at::globalContext().defaultGenerator(device).clone();
  g.set_current_seed(seed);
  return g;
}

// train.init_weights: every parameter and buffer of the model, by name, from a weights file
// (safetensors or torch.save); a missing or extra name, or another shape, is an error naming both.
static void load_initial_weights(Model& model, const std::string& file) {
  const std::string where = "train.init_weights '" + file + "'";
  if (!fs::exists(file)) throw Error(where + ": no such file");
  io::TensorDict dict;
  try {
    dict = io::read_weights_file(file);
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  auto fill = [&](const std::string& name, torch::Tensor& target) {
    const torch::Tensor* source = io::find_tensor(dict, name);
    if (!source) throw Error(where + " has no tensor '" + name + "' (the model's; was it written for another model?)");
    if (!source->sizes().equals(target.sizes()))
      throw Error(fmt::format("{}: tensor '{}' has shape {} but the model's is {}", where, name, c10::str(source->sizes()),
                              c10::str(target.sizes())));
    target.copy_(source->to(target.options()));
    used.insert(name);
  };
  for (auto& p : model.module().named_parameters()) fill(p.key(), p.value());
  for (auto& b : model.module().named_buffers()) fill(b.key(), b.value());
  for (const auto& [name, t] : dict)
    if (!used.count(name)) throw Error(where + " holds tensor '" + name + "', which the model does not have");
  spdlog::info("initialised the model's {} tensors from {}", used.size(), file);
}

Components build_components(const Pipeline& pipeline, PluginHost& host, const torch::Device& device) {
  Components c;
  BuildContext ctx;
  ctx.device = device.str();
  ctx.build = [&host, &ctx](Kind kind, const Config& cfg) { return host.create(kind, cfg, ctx); };
  for (const KindInfo& k : kinds()) {
    if (!pipeline.has(k.name)) continue;
    std::unique_ptr<Component> part = host.create(k.kind, pipeline.section(k.name), ctx);  // checks the interface
    Component* raw = part.get();
    c.owned.push_back(std::move(part));
    c.owned_kinds.push_back(k.name);
    switch (k.kind) {
      case Kind::domain: ctx.domain = c.domain = dynamic_cast<Domain*>(raw); break;
      case Kind::path: ctx.path = c.path = dynamic_cast<Path*>(raw); break;
      case Kind::model:
        ctx.model = c.model = dynamic_cast<Model*>(raw);
        c.model->module().to(device);
        break;
      case Kind::loss: c.loss = dynamic_cast<Loss*>(raw); break;
      case Kind::solver: c.solver = dynamic_cast<Solver*>(raw); break;
      case Kind::guidance: c.guidance = dynamic_cast<Guidance*>(raw); break;
    }
  }
  return c;
}

SessionState::SessionState(const Pipeline& p, PluginHost& h, RunOptions o) : pipeline(p), host(h), options(std::move(o)) {
  train_cfg = pipeline.section("train");
  sample_cfg = pipeline.section("sample");
  if (sample_cfg.get<int64_t>("nfe") > 0 && sample_cfg.get<int64_t>("steps") > 0)  // before any training
    sample_cfg.fail("nfe", "sample.nfe and sample.steps both set the solver's steps; set one");
  eval_cfg = pipeline.section("eval");
  if (options.distributed) world = world_from_environment();
  dir = RunDirectory(options.runs_root, options.run_name.empty() ? pipeline.name : options.run_name);
  dir_string = dir.root().string();
  if (primary()) {
    dir.create();
    log_file = open_run_log(dir);
  } else {
    options.progress_bar = false;  // one progress bar and one log: rank 0's
  }
  device = parse_device(pipeline, train_cfg.get<std::string>("device"));
  if (world.distributed() && device.is_cuda() && !device.has_index()) device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(world.local_rank));
  if (world.distributed()) {
    const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(1000 * train_cfg.get<double>("dist_timeout")));
    group = std::make_unique<ProcessGroup>(world, timeout, device);
    spdlog::info("rank {} of {} joined (MASTER_ADDR:MASTER_PORT = {}:{})", world.rank, world.size, world.master_addr, world.master_port);
    if (!primary()) spdlog::set_level(spdlog::level::warn);  // the run's messages come from rank 0
  }
  keep_freed_memory();
  if (device.is_cpu()) install_memory_budget(memory_budget_from_environment());
  // Two separate pools: LibTorch's intra-op threads and OpenBLAS's. Setting both to the core
  // count oversubscribes the cores (docs/performance.md has the measured combinations).
  torch::set_num_threads(static_cast<int>(train_cfg.get<int64_t>("threads")));
  if (const auto blas = train_cfg.get<int64_t>("blas_threads"); blas > 0) set_blas_threads(static_cast<int>(blas));
  if (pipeline.resolved.contains("plugins"))
    for (const auto& [plugin, pin] : pipeline.resolved.at("plugins").items())
      host.pin_sha256(plugin, pin.at("sha256").get<std::string>());
  // Network initialisation draws from LibTorch's global generator; seed it so that a run
  // is a pure function of train.seed.
  const auto seed = static_cast<uint64_t>(train_cfg.get<int64_t>("seed"));
  torch::manual_seed(seed);
  parts = build_components(pipeline, host, device);
  if (const auto* data = parts.domain ? capability<SkippedData>(*parts.domain) : nullptr) {
    const SkippedRows skipped = data->skipped_rows();
    if (skipped.skipped > 0) {
      spdlog::warn("the domain left out {} of {} data rows (domain.skip_bad_rows); first:", skipped.skipped, skipped.rows);
      for (const auto& reason : skipped.reasons) spdlog::warn("  {}", reason);
    }
  }
  gen = make_generator(device, seed);
  rank_gen = make_generator(device, seed + 0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(world.rank + 1));
  if (!parts.model) throw Error("the pipeline has no model");
  if (const auto init = train_cfg.get<std::string>("init_weights"); !init.empty()) load_initial_weights(*parts.model, init);
  AdamWSettings adam;
  adam.lr = train_cfg.get<double>("lr");
  adam.beta1 = train_cfg.get<double>("beta1");
  adam.beta2 = train_cfg.get<double>("beta2");
  adam.weight_decay = train_cfg.get<double>("weight_decay");
  optimizer = std::make_unique<FlatAdamW>(parts.model->module().parameters(), adam);
  ema = std::make_unique<Ema>(*parts.model, train_cfg.get<double>("ema_decay"), optimizer->all_parameters());
}

Session::Session(const Pipeline& pipeline, PluginHost& host, RunOptions options)
    : impl_(std::make_unique<SessionState>(pipeline, host, std::move(options))) {}
Session::~Session() = default;

const std::string& Session::run_dir() const { return impl_->dir_string; }
bool Session::primary() const { return impl_->primary(); }

namespace {
// A refused allocation says which setting asked for it.
template <class F>
auto naming_the_setting(const std::string& setting, F&& job) {
  try {
    return job();
  } catch (const MemoryBudgetExceeded& e) {
    throw MemoryBudgetExceeded(e.requested, e.live, e.budget, setting + "; lower it");
  }
}
std::string setting(const Config& section, const std::string& key) {
  return section.pointer().substr(1) + "." + key + " = " + std::to_string(section.get<int64_t>(key));
}
}  // namespace

TrainSummary Session::train() {
  return naming_the_setting(setting(impl_->train_cfg, "batch_size"), [&] { return train_loop(*impl_); });
}

void Session::load_checkpoint(const std::string& path) {
  core::load_checkpoint(*impl_, path.empty() ? impl_->dir.last_checkpoint() : fs::path(path));
}

std::vector<std::string> Session::sample() {
  auto& s = *impl_;
  if (!s.parts.domain) throw Error("sampling needs a domain in the pipeline");
  auto g = make_generator(s.device, static_cast<uint64_t>(s.sample_cfg.get<int64_t>("seed")));
  int64_t nfe = 0, network = 0;
  Batch samples = naming_the_setting(setting(s.sample_cfg, "batch_size") + " (or sample.count)", [&] {
    return generate(s, s.sample_cfg.get<int64_t>("count"), s.sample_cfg.get<int64_t>("steps"),
                    s.sample_cfg.get<bool>("use_ema"), g, &nfe, &network);
  });
  fs::path out = s.dir.samples(s.sample_cfg.get<std::string>("output"));
  fs::create_directories(out);
  auto files = s.parts.domain->write(samples, out.string(), "samples");
  if (samples.has("log_likelihood")) {  // sample.log_likelihood: one value per sample, natural log
    const torch::Tensor ll = samples.at("log_likelihood").to(torch::kFloat).contiguous();
    const std::string file = (out / "log_likelihood.npy").string();
    io::write_npy(file, ll.data_ptr<float>(), {ll.size(0)});
    files.push_back(file);
  }
  if (network != nfe)
    spdlog::info("wrote {} samples ({} solver steps' evaluations, {} network evaluations each with guidance) to {}",
                 samples.at("x").size(0), nfe, network, out.string());
  else
    spdlog::info("wrote {} samples ({} network evaluations each) to {}", samples.at("x").size(0), nfe, out.string());
  return files;
}

nlohmann::json Session::evaluate() {
  return naming_the_setting(setting(impl_->sample_cfg, "batch_size") + " (or sample.count, eval.reference_count)",
                            [&] { return evaluate_run(*impl_); });
}

double Session::sampling_rate(int64_t count) {
  auto& s = *impl_;
  auto g = make_generator(s.device, 123);
  int64_t nfe = 0;
  auto t0 = std::chrono::steady_clock::now();
  generate(s, count, s.sample_cfg.get<int64_t>("steps"), true, g, &nfe);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(count) / std::max(secs, 1e-9);
}

}  // namespace flowkit::core
