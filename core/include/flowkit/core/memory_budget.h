// flowkit/core/memory_budget.h — a ceiling on LibTorch's CPU tensor memory, so that a request
// that cannot fit (train.batch_size 10^8, sample.count 10^9) ends with an error naming the
// setting instead of the kernel's out-of-memory kill.
#pragma once
#include <cstdint>
#include <string>

#include "flowkit/error.h"

namespace flowkit::core {

// Thrown by an allocation that would take the live CPU tensor memory over the budget.
struct MemoryBudgetExceeded : Error {
  MemoryBudgetExceeded(uint64_t requested, uint64_t live, uint64_t budget, const std::string& context = "");
  uint64_t requested, live, budget;
};

// The budget from FLOWKIT_MEMORY_LIMIT ("512M", "8G", bytes; "off" for none), else 90 % of
// what the machine (or the container's cgroup limit) has available now; 0 means none.
uint64_t memory_budget_from_environment();
// Routes LibTorch's CPU allocations through the budget (once per process; later calls change
// the budget). 0 removes the ceiling.
void install_memory_budget(uint64_t bytes);
// The budget in force (0: none) and the CPU tensor bytes allocated through it now.
uint64_t memory_budget();
uint64_t memory_in_use();
// "1.5 GiB"
std::string format_bytes(uint64_t bytes);

}  // namespace flowkit::core
