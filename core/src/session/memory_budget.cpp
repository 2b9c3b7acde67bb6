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

// LibTorch's raw_allocate() (used by oneDNN's convolutions, among others) requires that a
// DataPtr's context be its data pointer, so the size of each block lives in a header in front
// of it instead of in a separate context object. 64 bytes keep c10's 64-byte alignment.
constexpr size_t kHeader = 64;
c10::DeleterFnPtr g_inner_free = nullptr;  // the wrapped allocator's raw deleter

class BudgetAllocator final : public c10::Allocator {
 public:
  explicit BudgetAllocator(c10::Allocator* inner) : inner_(inner) { g_inner_free = inner->raw_deleter(); }
  c10::DataPtr allocate(size_t n) const override {
    const uint64_t budget = g_budget.load(std::memory_order_relaxed);
    const uint64_t live = g_live.fetch_add(n) + n;
    if (budget > 0 && live > budget) {
      g_live.fetch_sub(n);
      throw MemoryBudgetExceeded(n, live - n, budget);
    }
    void* base = nullptr;
    try {
      base = inner_->raw_allocate(n + kHeader);
    } catch (...) {
      g_live.fetch_sub(n);
      throw;
    }
    *static_cast<uint64_t*>(base) = n;
    void* data = static_cast<char*>(base) + kHeader;
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  // Pure virtual in LibTorch >= 2.3 (no `override`, so that 1.13 compiles it too).
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }

 private:
  static void release(void* data) {
    if (!data) return;
    void* base = static_cast<char*>(data) - kHeader;
    g_live.fetch_sub(*static_cast<uint64_t*>(base));
    g_inner_free(base);
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
    c10::Allocator* inner = c10::GetCPUAllocator();
    // The wrapper frees through the inner allocator's raw deleter; LibTorch's own has one.
    if (!inner->raw_deleter()) return static_cast<BudgetAllocator*>(nullptr);
    auto* a = new BudgetAllocator(inner);  // never freed: tensors may outlive everything
    c10::SetCPUAllocator(a, /*priority=*/1);
    return a;
  }();
  g_budget = allocator ? bytes : 0;
}

uint64_t memory_budget() { return g_budget.load(); }
uint64_t memory_in_use() { return g_live.load(); }

}  // namespace flowkit::core
