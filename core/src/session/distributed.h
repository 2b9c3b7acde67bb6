// Data-parallel training across processes on PyTorch's c10d: the rendezvous (TCPStore, from
// the variables torchrun, mpirun and srun wrappers export) and the few collectives the
// training loop needs, on Gloo (CPU) or NCCL (CUDA builds). Internal to libflowkit_core.
#pragma once
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace flowkit::core {

// Where this process sits: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.
struct WorldInfo {
  int rank = 0, size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;  // torchrun's agent already serves the TCPStore (TORCHELASTIC_USE_AGENT_STORE)
  int restart = 0;           // TORCHELASTIC_RESTART_COUNT: a restarted group gets fresh store keys
  bool distributed() const { return size > 1; }
};
// From the environment; no WORLD_SIZE (or 1) is a single process. A malformed or inconsistent
// value is an Error naming the variable.
WorldInfo world_from_environment();

// One process group for the run. Every call is a collective: all ranks make the same calls in
// the same order. A rank that died or hangs makes the others throw flowkit::Error within the
// timeout, naming the rank and the operation.
class ProcessGroup {
 public:
  // Rendezvous with the other ranks (waits up to `timeout` for them).
  ProcessGroup(const WorldInfo& world, std::chrono::milliseconds timeout, const torch::Device& device);
  ~ProcessGroup();
  int rank() const { return world_.rank; }
  int size() const { return world_.size; }

  // Rank 0's values into every rank's tensors, in place.
  void broadcast(std::vector<torch::Tensor> tensors, const char* what);
  // Sum over ranks, in place; several tensors go out together and are waited for together.
  void allreduce_sum(std::vector<torch::Tensor> tensors, const char* what);
  // Every rank's `t` (same shape on all ranks), stacked: [size, ...].
  torch::Tensor allgather(const torch::Tensor& t, const char* what);

  struct Impl;

 private:
  WorldInfo world_;
  std::unique_ptr<Impl> impl_;
};

// Whether this build can run distributed (c10d with Gloo headers found at build time).
bool distributed_available();

}  // namespace flowkit::core
