// Checkpoints (atomic, bit-exact resume: weights, EMA, buffers, optimizer, generator) and the
// exported weights.pt that Python's torch.load reads.
#include "flowkit/safetensors.h"
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

// Hands each component with a persistent state the part of the checkpoint saved from it.
// A checkpoint without it (written before the component had one) leaves the built state.
void restore_component_state(SessionState& s, const io::TensorDict& a) {
  for (size_t i = 0; i < s.parts.owned.size(); ++i) {
    auto* st = capability<PersistentState>(*s.parts.owned[i]);
    if (!st) continue;
    const std::string prefix = "state/" + s.parts.owned_kinds[i] + "/";
    io::TensorDict mine;
    for (const auto& [name, t] : a)
      if (name.rfind(prefix, 0) == 0) mine.emplace_back(name.substr(prefix.size()), t);
    if (mine.empty()) {
      spdlog::warn("the checkpoint holds no saved state of the {}; it keeps the state computed now", s.parts.owned_kinds[i]);
      continue;
    }
    try {
      st->restore_state(mine);
    } catch (const Error& e) {
      throw Error("the " + s.parts.owned_kinds[i] + "'s saved state: " + e.what());
    }
  }
}

}  // namespace

// Format 3: one name->tensor archive (flowkit/tensor_file.h), read back by flowkit's own
// checked reader rather than LibTorch's TorchScript loader, which crashes on damaged files.
void save_checkpoint(SessionState& s) {
  Model& model = *s.parts.model;
  io::TensorDict a;
  a.emplace_back("format", torch::tensor(int64_t{3}));
  a.emplace_back("step", torch::tensor(s.step));
  a.emplace_back("parameter_names", string_tensor(parameter_names(model)));
  auto params = model.module().parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    a.emplace_back("param_" + std::to_string(i), params[i]);
    a.emplace_back("ema_" + std::to_string(i), s.ema->weights()[i]);
  }
  auto buffers = model.module().buffers();
  for (size_t i = 0; i < buffers.size(); ++i) a.emplace_back("buffer_" + std::to_string(i), buffers[i]);
  s.optimizer->save(a, "optimizer/");
  a.emplace_back("rng", s.gen.get_state());
  // A distributed run: `rng` is the data stream (the same on every rank), and each rank's
  // noise stream is kept too, so that a resume with the same world size continues exactly.
  a.emplace_back("world_size", torch::tensor(int64_t{s.world.size}));
  for (size_t r = 0; r < s.rank_streams.size(); ++r) a.emplace_back("rng_rank_" + std::to_string(r), s.rank_streams[r]);
  // Components' own state (a domain's normalisation): "state/<section>/<name>".
  for (size_t i = 0; i < s.parts.owned.size(); ++i)
    if (const auto* st = capability<PersistentState>(*s.parts.owned[i]))
      for (const auto& [name, t] : st->persistent_state()) a.emplace_back("state/" + s.parts.owned_kinds[i] + "/" + name, t);
  // Written beside the target and renamed over it: a failed write (full disk, unwritable
  // folder) leaves the previous checkpoints as they were.
  const fs::path file = s.dir.checkpoint(s.step);
  fs::path tmp = file, last_tmp = s.dir.last_checkpoint();
  tmp += ".tmp";
  last_tmp += ".tmp";
  try {
    io::write_tensor_dict(tmp.string(), a);
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
  io::write_safetensors(s.dir.weights_safetensors().string(), dict,
                        {{"format", "flowkit"}, {"pipeline", s.pipeline.name}, {"step", std::to_string(s.step)},
                         {"model", s.pipeline.resolved.at("model").at("type").get<std::string>()},
                         {"weights", s.ema->enabled() ? "ema" : "trained"}});
}

void load_checkpoint(SessionState& s, const fs::path& file) {
  Model& model = *s.parts.model;
  if (!fs::exists(file)) throw Error("checkpoint '" + file.string() + "' does not exist; train first (flowkit train)");
  io::TensorDict a;
  try {
    a = io::read_tensor_dict(file.string());
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw UnreadableCheckpoint("checkpoint '" + file.string() + "' cannot be read (corrupt or not a flowkit checkpoint): " +
                               what.substr(0, what.find('\n')));
  }
  auto get = [&](const std::string& key) {
    const torch::Tensor* t = io::find_tensor(a, key);
    if (!t) throw UnreadableCheckpoint("checkpoint '" + file.string() + "' is incomplete: it has no '" + key + "'");
    return *t;
  };
  try {
    const torch::Tensor format = get("format");
    if (format.numel() != 1 || format.item<int64_t>() != 3)
      throw Error("it is in checkpoint format " + (format.numel() == 1 ? std::to_string(format.item<int64_t>()) : "?") +
                  ", this flowkit reads format 3");
    torch::Tensor names_t = get("parameter_names"), step_t = get("step");
    if (names_t.scalar_type() != torch::kByte || names_t.dim() != 1 || tensor_string(names_t) != parameter_names(model))
      throw Error("it was written for a different model (parameter names differ)");
    if (step_t.numel() != 1) throw UnreadableCheckpoint("checkpoint '" + file.string() + "': its step is not one number");
    torch::NoGradGuard no_grad;
    auto params = model.module().parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      torch::Tensor p = get("param_" + std::to_string(i)), e = get("ema_" + std::to_string(i));
      if (!p.sizes().equals(params[i].sizes())) throw Error("parameter shapes differ from the model's");
      params[i].copy_(p);
      if (!e.sizes().equals(params[i].sizes())) throw Error("EMA shapes differ from the model's");
      s.ema->weights()[i].copy_(e);  // in place: the weights may be views of one flat buffer
    }
    auto buffers = model.module().buffers();
    for (size_t i = 0; i < buffers.size(); ++i) {
      torch::Tensor b = get("buffer_" + std::to_string(i));
      if (!b.sizes().equals(buffers[i].sizes())) throw Error("buffer shapes differ from the model's");
      buffers[i].copy_(b);
    }
    s.optimizer->load(a, "optimizer/");
    restore_component_state(s, a);
    torch::Tensor rng = get("rng");
    if (rng.scalar_type() != torch::kByte) throw UnreadableCheckpoint("checkpoint '" + file.string() + "': its generator state is damaged");
    s.gen.set_state(rng.clone());
    s.step = step_t.item<int64_t>();
    s.rank_streams.clear();
    const torch::Tensor* world = io::find_tensor(a, "world_size");  // absent: written by one process
    if (world && world->numel() == 1 && world->item<int64_t>() == s.world.size && s.world.distributed()) {
      for (int r = 0; r < s.world.size; ++r) {
        torch::Tensor st = get("rng_rank_" + std::to_string(r));
        if (st.scalar_type() != torch::kByte) throw UnreadableCheckpoint("checkpoint '" + file.string() + "': a rank's generator state is damaged");
        s.rank_streams.push_back(st.clone());
      }
    }
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
