// c10d process group of a distributed run: TCPStore rendezvous, Gloo (or NCCL) collectives,
// and failures turned into errors that name the rank, the operation and the timeout.
#include "session/distributed.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <limits>

#include "flowkit/error.h"

#if FLOWKIT_WITH_GLOO
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#if FLOWKIT_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace flowkit::core {
namespace {

int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  if (errno || *end || x < lo || x > hi)
    throw Error(fmt::format("environment variable {}={} is not an integer in [{}, {}]", name, v, lo, hi));
  return static_cast<int>(x);
}

std::string message_of(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

}  // namespace

WorldInfo world_from_environment() {
  WorldInfo w;
  w.size = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  if (!w.distributed()) return w;
  if (!std::getenv("RANK")) throw Error(fmt::format("WORLD_SIZE={} is set but RANK is not (torchrun sets both)", w.size));
  w.rank = env_int("RANK", 0, 0, w.size - 1);
  w.local_rank = env_int("LOCAL_RANK", 0, 0, 1 << 20);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) w.master_addr = a;
  w.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  w.agent_store = agent && std::string(agent) == "True";
  w.restart = env_int("TORCHELASTIC_RESTART_COUNT", 0, 0, std::numeric_limits<int>::max());
  return w;
}

#if FLOWKIT_WITH_GLOO

bool distributed_available() { return true; }

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  std::chrono::milliseconds timeout;

  template <class F>
  auto guarded(const WorldInfo& w, const char* what, F&& f) {
    try {
      return f();
    } catch (const std::exception& e) {
      throw Error(fmt::format("rank {} of {}: {} failed: another rank stopped or did not answer within train.dist_timeout "
                              "({} s): {}",
                              w.rank, w.size, what, timeout.count() / 1000.0, message_of(e)));
    }
  }
};

ProcessGroup::ProcessGroup(const WorldInfo& world, std::chrono::milliseconds timeout, const torch::Device& device)
    : world_(world), impl_(std::make_unique<Impl>()) {
  impl_->timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<std::uint16_t>(world.master_port);
    o.isServer = world.rank == 0 && !world.agent_store;
    o.numWorkers = static_cast<std::size_t>(world.size);
    o.waitWorkers = true;  // every rank counts itself in; the server waits for all of them
    o.multiTenant = true;  // as PyTorch's env:// rendezvous
    o.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(world.master_addr, o);
    store = c10::make_intrusive<c10d::PrefixStore>("flowkit/" + std::to_string(world.restart) + "/", tcp);
  } catch (const std::exception& e) {
    throw Error(fmt::format("rank {} of {}: no rendezvous at MASTER_ADDR:MASTER_PORT = {}:{} within train.dist_timeout ({} s){}: {}",
                            world.rank, world.size, world.master_addr, world.master_port, timeout.count() / 1000.0,
                            world.rank == 0 ? " (is the port in use?)" : "", message_of(e)));
  }
#if !FLOWKIT_WITH_NCCL
  if (device.is_cuda()) throw Error("this flowkit was built without NCCL; distributed training on CUDA needs a CUDA LibTorch build");
#endif
  impl_->guarded(world_, "connecting the process group", [&] {
#if FLOWKIT_WITH_NCCL
    if (device.is_cuda()) {
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      impl_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, world.rank, world.size, o);
      return 0;
    }
#endif
    auto o = c10d::ProcessGroupGloo::Options::create(timeout);
    const std::string addr = world.master_addr;
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (addr == "localhost" || addr.rfind("127.", 0) == 0)
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, world.rank, world.size, o);
    return 0;
  });
}

ProcessGroup::~ProcessGroup() = default;

// One collective per tensor (c10d's list arguments are per-device replicas of one tensor), all
// started before any is waited for.
template <class Start>
void each_tensor(ProcessGroup::Impl& impl, const WorldInfo& world, std::vector<torch::Tensor>& tensors, const char* what, Start&& start) {
  impl.guarded(world, what, [&] {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& t : tensors) {
      std::vector<torch::Tensor> one{t};
      works.push_back(start(one));
    }
    for (auto& w : works) w->wait(impl.timeout);
    return 0;
  });
}

void ProcessGroup::broadcast(std::vector<torch::Tensor> tensors, const char* what) {
  each_tensor(*impl_, world_, tensors, what, [&](std::vector<torch::Tensor>& one) { return impl_->pg->broadcast(one); });
}

void ProcessGroup::allreduce_sum(std::vector<torch::Tensor> tensors, const char* what) {
  each_tensor(*impl_, world_, tensors, what, [&](std::vector<torch::Tensor>& one) { return impl_->pg->allreduce(one); });
}

torch::Tensor ProcessGroup::allgather(const torch::Tensor& t, const char* what) {
  return impl_->guarded(world_, what, [&] {
    std::vector<torch::Tensor> in{t.contiguous()};
    std::vector<std::vector<torch::Tensor>> out(1);
    for (int r = 0; r < world_.size; ++r) out[0].push_back(torch::empty_like(in[0]));
    impl_->pg->allgather(out, in)->wait(impl_->timeout);
    return torch::stack(out[0]);
  });
}

#else  // built without the Gloo headers (libgloo-dev)

bool distributed_available() { return false; }
struct ProcessGroup::Impl {};
ProcessGroup::ProcessGroup(const WorldInfo& world, std::chrono::milliseconds, const torch::Device&) : world_(world) {
  throw Error(fmt::format("WORLD_SIZE={} asks for a distributed run, but this flowkit was built without c10d's Gloo headers "
                          "(install libgloo-dev and rebuild)",
                          world.size));
}
ProcessGroup::~ProcessGroup() = default;
void ProcessGroup::broadcast(std::vector<torch::Tensor>, const char*) {}
void ProcessGroup::allreduce_sum(std::vector<torch::Tensor>, const char*) {}
torch::Tensor ProcessGroup::allgather(const torch::Tensor& t, const char*) { return t; }

#endif

}  // namespace flowkit::core
