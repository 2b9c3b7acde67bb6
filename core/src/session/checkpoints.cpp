// Checkpoints (atomic, bit-exact resume: weights, EMA, buffers, optimizer, generator) and the
// exported weights.pt that Python's torch.load reads.
#include "session/state.h"

#include "flowkit/io.h"
#include "flowkit/tensor_file.h"

namespace fs = std::filesystem;

namespace flowkit::core {
namespace {

torch::Tensor string_tensor(const std::string& s) {
  return torch::from_blob(const_cast<char*>(s.data()), {static_cast<int64_t>(s.size())}, torch::kUInt8).clone();
}
std::string tensor_string(const torch::Tensor& t) {
  auto c = t.contiguous().to(torch::kCPU);
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), static_cast<size_t>(c.numel()));
}
std::string parameter_names(Model& model) {
  std::string names;
  for (const auto& p : model.module().named_parameters()) names += p.key() + "\n";
  return names;
}

}  // namespace

void save_checkpoint(SessionState& s) {
  Model& model = *s.parts.model;
  torch::serialize::OutputArchive a;
  a.write("format", torch::tensor(int64_t{2}));  // 2: FlatAdamW optimizer state
  a.write("step", torch::tensor(s.step));
  a.write("parameter_names", string_tensor(parameter_names(model)));
  auto params = model.module().parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    a.write("param_" + std::to_string(i), params[i].detach().cpu());
    a.write("ema_" + std::to_string(i), s.ema->weights()[i].cpu());
  }
  auto buffers = model.module().buffers();
  for (size_t i = 0; i < buffers.size(); ++i) a.write("buffer_" + std::to_string(i), buffers[i].cpu());
  torch::serialize::OutputArchive opt;
  s.optimizer->save(opt);
  a.write("optimizer", opt);
  a.write("rng", s.gen.get_state());
  // Written beside the target and renamed over it: a failed write (full disk, unwritable
  // folder) leaves the previous checkpoints as they were.
  const fs::path file = s.dir.checkpoint(s.step);
  fs::path tmp = file, last_tmp = s.dir.last_checkpoint();
  tmp += ".tmp";
  last_tmp += ".tmp";
  try {
    a.save_to(tmp.string());
    fs::rename(tmp, file);
    fs::copy_file(file, last_tmp, fs::copy_options::overwrite_existing);
    fs::rename(last_tmp, s.dir.last_checkpoint());
  } catch (const std::exception& e) {
    std::error_code ec;
    if (fs::is_regular_file(tmp, ec)) fs::remove(tmp, ec);
    if (fs::is_regular_file(last_tmp, ec)) fs::remove(last_tmp, ec);
    const std::string what = e.what();
    throw Error(fmt::format("cannot write the checkpoint of step {} in '{}' (disk full or not writable?): {}; {}", s.step,
                            s.dir.checkpoints().string(), what.substr(0, what.find('\n')),
                            fs::exists(s.dir.last_checkpoint()) ? "the previous checkpoint " + s.dir.last_checkpoint().string() + " is intact"
                                                                : "no earlier checkpoint exists"));
  }
}

void load_latest_checkpoint(SessionState& s) {
  std::vector<fs::path> steps;  // step_XXXXXXXX.pt: the names sort by step
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(s.dir.checkpoints(), ec))
    if (f.path().extension() == ".pt" && f.path().filename().string().rfind("step_", 0) == 0) steps.push_back(f.path());
  std::sort(steps.rbegin(), steps.rend());
  try {
    if (!fs::exists(s.dir.last_checkpoint()) && !steps.empty())  // killed between writing a step file and last.pt
      throw UnreadableCheckpoint("checkpoint '" + s.dir.last_checkpoint().string() + "' is missing");
    return load_checkpoint(s, s.dir.last_checkpoint());
  } catch (const UnreadableCheckpoint& e) {
    spdlog::warn("{}; trying the step checkpoints", e.what());
    for (const auto& file : steps) {
      try {
        load_checkpoint(s, file);
        spdlog::warn("resumed from {} instead of the unreadable {}", file.string(), s.dir.last_checkpoint().string());
        return;
      } catch (const UnreadableCheckpoint& bad) {
        spdlog::warn("skipped {}", bad.what());
      }
    }
    throw Error(fmt::format("cannot resume '{}': last.pt and all {} step checkpoints are unreadable", s.dir_string, steps.size()));
  }
}

void export_weights(SessionState& s) {
  Model& model = *s.parts.model;
  auto swap = s.ema->swap_in(true);
  io::TensorDict dict;
  for (const auto& p : model.module().named_parameters()) dict.emplace_back(p.key(), p.value());
  for (const auto& b : model.module().named_buffers()) dict.emplace_back(b.key(), b.value());
  io::write_tensor_dict(s.dir.weights().string(), dict);
}

void load_checkpoint(SessionState& s, const fs::path& file) {
  Model& model = *s.parts.model;
  if (!fs::exists(file)) throw Error("checkpoint '" + file.string() + "' does not exist; train first (flowkit train)");
  torch::serialize::InputArchive a;
  try {
    io::check_torch_archive(file.string());
    a.load_from(file.string(), s.device);
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw UnreadableCheckpoint("checkpoint '" + file.string() + "' cannot be read (corrupt or not a flowkit checkpoint): " +
                               what.substr(0, what.find('\n')));
  }
  // A tensor whose sizes reach past its data is damage, not a mismatch: the step files may serve.
  auto intact = [&](const torch::Tensor& t, const std::string& key) {
    try {
      io::check_tensor_storage(t, "'" + key + "'");
    } catch (const Error& e) {
      throw UnreadableCheckpoint("checkpoint '" + file.string() + "' is damaged: " + e.what());
    }
  };
  try {
    torch::Tensor names_t, step_t, rng;
    a.read("parameter_names", names_t);
    intact(names_t, "parameter_names");
    if (tensor_string(names_t) != parameter_names(model))
      throw Error("it was written for a different model (parameter names differ)");
    a.read("step", step_t);
    intact(step_t, "step");
    if (step_t.numel() != 1) throw UnreadableCheckpoint("checkpoint '" + file.string() + "': its step is not one number");
    torch::NoGradGuard no_grad;
    auto params = model.module().parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      torch::Tensor p, e;
      a.read("param_" + std::to_string(i), p);
      a.read("ema_" + std::to_string(i), e);
      intact(p, "param_" + std::to_string(i));
      intact(e, "ema_" + std::to_string(i));
      if (!p.sizes().equals(params[i].sizes())) throw Error("parameter shapes differ from the model's");
      params[i].copy_(p);
      if (!e.sizes().equals(params[i].sizes())) throw Error("EMA shapes differ from the model's");
      s.ema->weights()[i].copy_(e);  // in place: the weights may be views of one flat buffer
    }
    auto buffers = model.module().buffers();
    for (size_t i = 0; i < buffers.size(); ++i) {
      torch::Tensor b;
      a.read("buffer_" + std::to_string(i), b);
      intact(b, "buffer_" + std::to_string(i));
      buffers[i].copy_(b);
    }
    torch::serialize::InputArchive opt;
    a.read("optimizer", opt);
    s.optimizer->load(opt);
    a.read("rng", rng);
    intact(rng, "rng");
    s.gen.set_state(rng.cpu());
    s.step = step_t.item<int64_t>();
  } catch (const UnreadableCheckpoint&) {
    throw;
  } catch (const Error& e) {
    throw Error("checkpoint '" + file.string() + "' does not fit this pipeline: " + e.what());
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw UnreadableCheckpoint("checkpoint '" + file.string() + "' is incomplete or corrupt: " + what.substr(0, what.find('\n')));
  }
  spdlog::info("loaded checkpoint {} (step {})", file.string(), s.step);
}

}  // namespace flowkit::core
