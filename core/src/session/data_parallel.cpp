// Data parallelism for the training loop (docs/distributed.md): rank 0's state to every rank,
// the step's global batch split over the ranks, the all-reduce of the gradients, one small
// status exchange per step (loss, divergence, stop), and a final check that every rank holds
// the same parameters.
#include <fmt/format.h>

#include "session/state.h"

namespace flowkit::core {
namespace {

// Gradients go out in pieces of at most this many elements, all at once, so that Gloo
// pipelines them instead of holding one large buffer.
constexpr int64_t kBucketElements = 4 << 20;

std::vector<torch::Tensor> buckets(const std::vector<torch::Tensor>& flats) {
  std::vector<torch::Tensor> out;
  for (const auto& f : flats)
    for (int64_t at = 0; at < f.numel(); at += kBucketElements) out.push_back(f.narrow(0, at, std::min(kBucketElements, f.numel() - at)));
  return out;
}

// Whether every tensor of the batch has `rows` rows (then rank r takes rows [r n, (r+1) n)).
bool split_by_rows(const Batch& b, int64_t rows) {
  if (b.empty()) return false;
  for (const auto& [name, t] : b)
    if (t.dim() == 0 || t.size(0) != rows) return false;
  return true;
}

}  // namespace

void dp_start(SessionState& s) {
  ProcessGroup& g = *s.group;
  const int64_t global = s.train_cfg.get<int64_t>("batch_size");
  if (global % g.size() != 0)
    throw ConfigError(s.pipeline.file, s.train_cfg.pointer() + "/batch_size",
                      fmt::format("{} (the global batch) does not split evenly over WORLD_SIZE = {} processes", global, g.size()));
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> state;
  for (auto& p : s.parts.model->module().parameters()) state.push_back(p.detach());
  for (auto& b : s.parts.model->module().buffers()) state.push_back(b.detach());
  for (auto& m : s.optimizer->moments()) state.push_back(m);
  torch::Tensor counters = torch::tensor({s.step, s.optimizer->steps_taken()}, torch::kLong);
  // Rank 0 read the checkpoint (if any): its data stream and, when it was written with this
  // world size, every rank's noise stream.
  torch::Tensor data_stream = s.gen.get_state();
  const int64_t state_bytes = s.rank_gen.get_state().numel();
  torch::Tensor streams = torch::zeros({g.size(), state_bytes}, torch::kUInt8);
  torch::Tensor have_streams = torch::zeros({1}, torch::kLong);
  bool usable = s.primary() && static_cast<int>(s.rank_streams.size()) == g.size();
  for (const auto& st : s.rank_streams) usable = usable && st.numel() == state_bytes;
  if (usable) {
    for (int r = 0; r < g.size(); ++r) streams[r].copy_(s.rank_streams[r]);
    have_streams.fill_(1);
  }
  state.push_back(counters);
  state.push_back(data_stream);
  state.push_back(streams);
  state.push_back(have_streams);
  std::vector<torch::Tensor> cpu = state;  // Gloo reduces CPU tensors; parameters on another device go through copies
  for (auto& t : cpu)
    if (!t.device().is_cpu()) t = t.to(torch::kCPU);
  g.broadcast(cpu, "the start-up broadcast of rank 0's parameters and state");
  for (size_t i = 0; i < state.size(); ++i)
    if (!state[i].device().is_cpu()) state[i].copy_(cpu[i]);
  s.step = counters[0].item<int64_t>();
  s.optimizer->set_steps_taken(counters[1].item<int64_t>());
  s.gen.set_state(data_stream);
  if (have_streams.item<int64_t>() == 1) {
    s.rank_gen.set_state(streams[g.rank()].clone());
  } else if (s.step > 0) {
    // Resumed from a checkpoint of another world size: the data stream continues, the noise
    // streams restart from (seed, rank, step).
    const auto seed = static_cast<uint64_t>(s.train_cfg.get<int64_t>("seed"));
    s.rank_gen = make_generator(s.device, seed + 0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(g.rank() + 1) +
                                              0xBF58476D1CE4E5B9ULL * static_cast<uint64_t>(s.step));
    if (s.primary()) spdlog::warn("resumed at step {} with {} processes from a checkpoint of another world size: the data stream "
                                  "continues, each rank's noise stream restarts from (train.seed, rank, step)", s.step, g.size());
  }
  s.rank_streams.clear();
}

Batch dp_batch(SessionState& s, int64_t global) {
  const int64_t local = global / s.group->size();
  if (!s.per_rank_data) {
    // Every rank draws the same global batch from the shared data stream and keeps its rows:
    // the step sees exactly the data a single process with the same batch size would.
    Batch all = s.parts.domain->train_batch(global, s.gen);
    if (split_by_rows(all, global)) {
      Batch mine;
      for (const auto& [name, t] : all) mine.set(name, t.narrow(0, s.world.rank * local, local));
      return mine.to(s.device);
    }
    // Every rank reaches the same verdict (same data, same code), so they switch together.
    s.per_rank_data = true;
    if (s.primary())
      spdlog::warn("the domain's batches do not split by rows (items of several rows, e.g. graphs): each of the {} processes draws "
                   "its own {} items per step from its own stream",
                   s.group->size(), local);
  }
  return s.parts.domain->train_batch(local, s.rank_gen).to(s.device);
}

DpStatus dp_status(SessionState& s, double loss, bool stop_requested, const std::map<std::string, double>& logs) {
  const bool finite = std::isfinite(loss);
  std::vector<double> v{finite ? loss : 0.0, finite ? 0.0 : 1.0, stop_requested ? 1.0 : 0.0};
  for (const auto& [k, x] : logs) v.push_back(x);
  torch::Tensor t = torch::tensor(v, torch::kDouble);
  s.group->allreduce_sum({t}, "the per-step exchange of losses");
  const double n = s.group->size();
  DpStatus out;
  out.non_finite = t[1].item<double>() > 0;
  out.stop = t[2].item<double>() > 0;
  out.loss = t[0].item<double>() / n;
  int64_t i = 3;
  for (const auto& [k, x] : logs) out.logs[k] = t[i++].item<double>() / n;
  return out;
}

void dp_average_gradients(SessionState& s) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads = s.optimizer->gradients();
  std::vector<torch::Tensor> parts = buckets(grads);
  std::vector<torch::Tensor> cpu = parts;
  for (auto& t : cpu)
    if (!t.device().is_cpu()) t = t.to(torch::kCPU);
  s.group->allreduce_sum(cpu, "the gradient all-reduce");
  const double n = s.group->size();
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!parts[i].device().is_cpu()) parts[i].copy_(cpu[i]);
    parts[i].div_(n);
  }
}

void dp_gather_rank_streams(SessionState& s) {
  torch::Tensor all = s.group->allgather(s.rank_gen.get_state(), "gathering the ranks' generator states for a checkpoint");
  s.rank_streams.clear();
  for (int r = 0; r < s.group->size(); ++r) s.rank_streams.push_back(all[r].clone());
}

nlohmann::json dp_check_replicas(SessionState& s) {
  torch::NoGradGuard no_grad;
  double sum = 0, sum_sq = 0;
  for (const auto& p : s.parts.model->module().parameters()) {
    torch::Tensor d = p.detach().to(torch::kCPU, torch::kDouble);
    sum += d.sum().item<double>();
    sum_sq += d.pow(2).sum().item<double>();
  }
  torch::Tensor all = s.group->allgather(torch::tensor({sum, sum_sq}, torch::kDouble), "comparing the ranks' parameters");
  nlohmann::json sums = nlohmann::json::array();
  bool same = true;
  for (int r = 0; r < s.group->size(); ++r) {
    sums.push_back({all[r][0].item<double>(), all[r][1].item<double>()});
    same = same && torch::equal(all[r], all[0]);
  }
  if (!same) throw Error(fmt::format("the {} processes ended with different parameters (sum, sum of squares per rank: {})", s.group->size(), sums.dump()));
  return {{"world_size", s.group->size()}, {"parameter_checksums", sums}, {"replicas_identical", true}};
}

}  // namespace flowkit::core
