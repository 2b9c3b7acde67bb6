// Absurd requests end with an error naming the setting, never with the kernel's out-of-memory
// kill: the CPU tensor memory budget (flowkit/core/memory_budget.h) counted exactly, a training
// batch and a sample count that cannot fit refused by real `flowkit` processes.
#include <gtest/gtest.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "flowkit/core/memory_budget.h"
#include "flowkit/tensor_file.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace flowkit::core;

namespace {
const std::string kFlowkitTest = "env -u FLOWKIT_PLUGIN_PATH " FLOWKIT_BINARY_DIR "/bin/flowkit --plugin-path " FLOWKIT_BINARY_DIR
                                 "/test_plugins/flows";
}  // namespace

// flowkit's own reader of torch.save files against LibTorch's unpickler (and Python's torch.save).
TEST(TensorFile, OwnReaderAgreesWithLibTorchsOnRealFiles) {
  for (const std::string file : {FLOWKIT_SOURCE_DIR "/plugins/standard/data/digits_classifier.pt",
                                 FLOWKIT_SOURCE_DIR "/tests/fuzz/corpus/fuzz_tensor_file/dict.pt"}) {
    std::ifstream in(file, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto theirs = torch::pickle_load(bytes).toGenericDict();
    flowkit::io::TensorDict ours = flowkit::io::read_tensor_dict(file);
    ASSERT_EQ(ours.size(), theirs.size()) << file;
    size_t i = 0;
    for (const auto& entry : theirs) {
      EXPECT_EQ(ours[i].first, entry.key().toStringRef());
      EXPECT_EQ(ours[i].second.scalar_type(), entry.value().toTensor().scalar_type());
      EXPECT_TRUE(torch::equal(ours[i].second, entry.value().toTensor())) << ours[i].first;
      ++i;
    }
  }
  // Written here, read back: names in order, values and dtypes exact.
  TempDir tmp;
  const std::string file = (tmp.path() / "w.pt").string();
  flowkit::io::write_tensor_dict(file, {{"b", torch::arange(6, torch::kLong).reshape({2, 3}).t()}, {"a", torch::ones({0})}});
  auto back = flowkit::io::read_tensor_dict(file);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].first, "b");
  EXPECT_TRUE(torch::equal(back[0].second, torch::arange(6, torch::kLong).reshape({2, 3}).t()));
  EXPECT_EQ(back[1].second.numel(), 0);
}

TEST(TensorFile, DamagedFilesAreRefusedNamingTheFile) {
  TempDir tmp;
  const std::string file = (tmp.path() / "w.pt").string();
  flowkit::io::write_tensor_dict(file, {{"w", torch::randn({4, 4})}});
  std::ifstream in(file, std::ios::binary);
  std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto refused = [&](const std::string& bytes, const std::string& part) {
    try {
      flowkit::io::parse_tensor_dict(bytes, "damaged.pt");
      ADD_FAILURE() << "expected a refusal mentioning " << part;
    } catch (const flowkit::Error& e) {
      EXPECT_THAT_MSG(e.what(), "'damaged.pt'");
      EXPECT_THAT_MSG(e.what(), part);
    }
  };
  refused(good.substr(0, good.size() / 2), "end-of-central-directory");
  refused("PK", "too short");
  std::string calls_os = good;
  const size_t at = calls_os.find("torch._utils");
  ASSERT_NE(at, std::string::npos);
  calls_os.replace(at, 12, "posix.system");  // same length: the archive stays well-formed
  refused(calls_os, "calls posix.system");
  // The inputs that made LibTorch's reader free a non-heap pointer or read past the end.
  for (const char* name : {"unpickler_frees_a_non_heap_pointer.pt", "zip_reader_reads_past_end.pt"}) {
    std::ifstream r(FLOWKIT_SOURCE_DIR "/tests/fuzz/corpus/regressions/fuzz_tensor_file/" + std::string(name), std::ios::binary);
    refused(std::string((std::istreambuf_iterator<char>(r)), std::istreambuf_iterator<char>()), "not a readable tensor");
  }
}

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

// LibTorch's raw_allocate() (oneDNN's convolutions use it) requires a DataPtr whose context is
// its data pointer; a counting allocator that wrapped the block broke every convolution.
TEST(MemoryBudget, RawAllocationsAndConvolutionsWorkUnderTheBudget) {
  install_memory_budget(uint64_t{1} << 30);
  const uint64_t before = memory_in_use();
  c10::Allocator* a = c10::GetCPUAllocator();
  void* raw = a->raw_allocate(1000);
  ASSERT_NE(raw, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(raw) % 64, 0u);  // c10's alignment
  EXPECT_EQ(memory_in_use() - before, 1000u);
  a->raw_deallocate(raw);
  EXPECT_EQ(memory_in_use(), before);
  torch::manual_seed(0);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 8, 3).stride(2).padding(1));
  torch::Tensor x = torch::randn({4, 3, 16, 16}, torch::requires_grad());
  torch::Tensor y = conv->forward(x);
  y.pow(2).sum().backward();
  EXPECT_EQ(y.sizes(), torch::IntArrayRef({4, 8, 8, 8}));
  EXPECT_TRUE(torch::isfinite(x.grad()).all().item<bool>());
  install_memory_budget(0);
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
