// The CPU tensor memory budget: a c10::Allocator that counts the bytes it hands out and
// refuses an allocation that would go over the budget, delegating the memory to LibTorch's own.
#include "flowkit/core/memory_budget.h"

#include <c10/core/CPUAllocator.h>
#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace flowkit::core {
namespace {

std::atomic<uint64_t> g_live{0};
std::atomic<uint64_t> g_budget{0};

class BudgetAllocator final : public c10::Allocator {
 public:
  explicit BudgetAllocator(c10::Allocator* inner) : inner_(inner) {}
  c10::DataPtr allocate(size_t n) const override {
    const uint64_t budget = g_budget.load(std::memory_order_relaxed);
    const uint64_t live = g_live.fetch_add(n) + n;
    if (budget > 0 && live > budget) {
      g_live.fetch_sub(n);
      throw MemoryBudgetExceeded(n, live - n, budget);
    }
    c10::DataPtr inner;
    try {
      inner = inner_->allocate(n);
    } catch (...) {
      g_live.fetch_sub(n);
      throw;
    }
    void* data = inner.get();
    const c10::Device device = inner.device();
    return {data, new Block{std::move(inner), n}, &release, device};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  // Pure virtual in LibTorch >= 2.3 (no `override`, so that 1.13 compiles it too).
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }

 private:
  struct Block {
    c10::DataPtr memory;
    uint64_t bytes;
  };
  static void release(void* ctx) {
    auto* b = static_cast<Block*>(ctx);
    g_live.fetch_sub(b->bytes);
    delete b;
  }
  c10::Allocator* inner_;
};

uint64_t read_number(const std::string& file) {
  std::ifstream in(file);
  std::string s;
  if (!(in >> s) || s == "max") return 0;
  return std::strtoull(s.c_str(), nullptr, 10);
}

uint64_t available_now() {
  uint64_t available = 0;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit)
    if (key == "MemAvailable:") available = kib * 1024;
  // A container's limit is what its out-of-memory killer enforces (cgroup v2, then v1).
  uint64_t limit = read_number("/sys/fs/cgroup/memory.max"), used = read_number("/sys/fs/cgroup/memory.current");
  if (limit == 0) {
    limit = read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
  }
  if (limit > 0 && limit < (uint64_t{1} << 60) && limit > used && (available == 0 || limit - used < available))
    available = limit - used;
  return available;
}

}  // namespace

MemoryBudgetExceeded::MemoryBudgetExceeded(uint64_t req, uint64_t in_use, uint64_t cap, const std::string& context)
    : Error(fmt::format("{}not enough memory: a tensor of {} was requested while {} are in use, over the budget of {} "
                        "(FLOWKIT_MEMORY_LIMIT; default 90 % of the memory available at start)",
                        context.empty() ? "" : context + ": ", format_bytes(req), format_bytes(in_use), format_bytes(cap))),
      requested(req),
      live(in_use),
      budget(cap) {}

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) v /= 1024, ++u;
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

uint64_t memory_budget_from_environment() {
  if (const char* env = std::getenv("FLOWKIT_MEMORY_LIMIT")) {
    std::string s = env;
    if (s == "off" || s == "0") return 0;
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    std::string unit = end ? std::string(end) : "";
    double scale = unit.empty() || unit == "B" ? 1 : unit[0] == 'K' ? 1024.0 : unit[0] == 'M' ? 1048576.0
                 : unit[0] == 'G' ? 1073741824.0 : unit[0] == 'T' ? 1099511627776.0 : -1;
    if (end == s.c_str() || !(v > 0) || scale < 0)
      throw Error("FLOWKIT_MEMORY_LIMIT='" + s + "': expected bytes, optionally with K, M, G or T (e.g. 8G), or off");
    return static_cast<uint64_t>(v * scale);
  }
  return available_now() / 10 * 9;
}

void install_memory_budget(uint64_t bytes) {
  static BudgetAllocator* allocator = [] {
    auto* a = new BudgetAllocator(c10::GetCPUAllocator());  // never freed: tensors may outlive everything
    c10::SetCPUAllocator(a, /*priority=*/1);
    return a;
  }();
  (void)allocator;
  g_budget = bytes;
}

uint64_t memory_budget() { return g_budget.load(); }
uint64_t memory_in_use() { return g_live.load(); }

}  // namespace flowkit::core
