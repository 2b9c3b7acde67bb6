// Absurd requests end with an error naming the setting, never with the kernel's out-of-memory
// kill: the CPU tensor memory budget (flowkit/core/memory_budget.h) counted exactly, a training
// batch and a sample count that cannot fit refused by real `flowkit` processes.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "flowkit/core/memory_budget.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace flowkit::core;

namespace {
const std::string kFlowkitTest = "env -u FLOWKIT_PLUGIN_PATH " FLOWKIT_BINARY_DIR "/bin/flowkit --plugin-path " FLOWKIT_BINARY_DIR
                                 "/test_plugins/flows";
}  // namespace

TEST(MemoryBudget, CountsTensorBytesAndRefusesWhatGoesOver) {
  install_memory_budget(64 << 20);
  const uint64_t before = memory_in_use();
  {
    torch::Tensor a = torch::empty({1000, 1000});  // 4,000,000 bytes
    EXPECT_EQ(memory_in_use() - before, 4000000u);
    try {
      torch::Tensor b = torch::empty({5000, 5000});  // 100 MB: over 64 MiB
      FAIL() << "expected MemoryBudgetExceeded";
    } catch (const MemoryBudgetExceeded& e) {
      EXPECT_EQ(e.requested, 100000000u);
      EXPECT_EQ(e.budget, uint64_t{64} << 20);
      EXPECT_THAT_MSG(e.what(), "not enough memory: a tensor of 95.4 MiB was requested");
    }
    EXPECT_EQ(memory_in_use() - before, 4000000u);  // the refused request left no trace
  }
  EXPECT_EQ(memory_in_use(), before);
  install_memory_budget(0);  // no ceiling
  torch::Tensor big = torch::zeros({5000, 5000});
  EXPECT_EQ(big.sum().item<float>(), 0.0f);
}

TEST(MemoryBudget, EnvironmentSettingIsParsedOrRefused) {
  ScopedEnv env("FLOWKIT_MEMORY_LIMIT", "1.5G");
  EXPECT_EQ(memory_budget_from_environment(), uint64_t{3} << 29);
  ScopedEnv off("FLOWKIT_MEMORY_LIMIT", "off");
  EXPECT_EQ(memory_budget_from_environment(), 0u);
  ScopedEnv bad("FLOWKIT_MEMORY_LIMIT", "lots");
  try {
    memory_budget_from_environment();
    FAIL() << "expected an error";
  } catch (const flowkit::Error& e) {
    EXPECT_THAT_MSG(e.what(), "FLOWKIT_MEMORY_LIMIT='lots': expected bytes");
  }
}

TEST(MemoryBudget, HugeBatchAndSampleCountAreRefusedNamingTheSetting) {
  TempDir tmp;
  const std::string pipeline = (tmp.path() / "tiny.json").string();
  std::ofstream(pipeline) << R"({"name": "tiny", "domain": {"type": "fk_flows.gauss2d"},
    "model": {"type": "fk_flows.coupling", "hidden": 4, "layers": 1}, "loss": {"type": "fk_flows.nll"},
    "solver": {"type": "fk_flows.latent_sampler"}, "train": {"steps": 2}, "sample": {"count": 10}})";
  const std::string in_tmp = "cd " + tmp.path().string() + " && FLOWKIT_MEMORY_LIMIT=64M " + kFlowkitTest;
  std::string out;
  EXPECT_EQ(run_command(in_tmp + " train " + pipeline + " train.batch_size=10000000", &out), 1) << out;
  EXPECT_THAT_MSG(out, "train.batch_size = 10000000; lower it: not enough memory");
  EXPECT_FALSE(fs::exists(tmp.path() / "runs/tiny/checkpoints/last.pt"));
  out.clear();
  ASSERT_EQ(run_command(in_tmp + " train " + pipeline + " --name ok", &out), 0) << out;
  out.clear();
  EXPECT_EQ(run_command(in_tmp + " sample " + pipeline + " --name ok sample.count=1000000000", &out), 1) << out;
  EXPECT_THAT_MSG(out, "1000000000 samples (sample.count) need 14.9 GiB of memory, over the budget of 64.0 MiB");
  out.clear();
  EXPECT_EQ(run_command(in_tmp + " sample " + pipeline + " --name ok", &out), 0) << out;  // the run is intact
}
