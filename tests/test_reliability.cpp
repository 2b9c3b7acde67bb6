// Absurd requests end with an error naming the setting, never with the kernel's out-of-memory
// kill: the CPU tensor memory budget (flowkit/core/memory_budget.h) counted exactly, a training
// batch and a sample count that cannot fit refused by real `flowkit` processes.
#include <gtest/gtest.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "flowkit/core/memory_budget.h"
#include "flowkit/safetensors.h"
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

namespace {
// Whether /usr/bin/python3 has numpy (Debian's python3-numpy, which python3-torch brings).
bool have_numpy() {
  std::string out;
  return run_command("/usr/bin/python3 -c 'import numpy'", &out) == 0;
}
}  // namespace

// safetensors against an independent implementation: numpy parses what flowkit writes, and
// flowkit reads what numpy writes (header, dtypes, shapes, byte order, metadata).
TEST(Safetensors, NumpyReadsWhatFlowkitWritesAndFlowkitReadsNumpys) {
  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 has no numpy";
  TempDir tmp;
  const std::string ours = (tmp.path() / "ours.safetensors").string();
  flowkit::io::write_safetensors(ours,
                                 {{"w", torch::arange(6, torch::kFloat32).reshape({2, 3}).t()},  // a transposed view
                                  {"idx", torch::tensor({-3, 7, 1 << 30}, torch::kInt64)},
                                  {"mask", torch::tensor({true, false, true})},
                                  {"empty", torch::zeros({0, 4}, torch::kFloat64)},
                                  {"half", torch::tensor({0.5, -2.0}, torch::kFloat16)}},
                                 {{"format", "flowkit"}, {"step", "12"}});
  const std::string theirs = (tmp.path() / "theirs.safetensors").string();
  const std::string script = (tmp.path() / "check.py").string();
  std::ofstream(script) << R"py(import json, struct, sys
import numpy as np
data = open(sys.argv[1], 'rb').read()
n, = struct.unpack('<Q', data[:8])
assert (8 + n) % 8 == 0, 'buffer not 8-byte aligned'
header = json.loads(data[8:8 + n])
buf = data[8 + n:]
kinds = {'F32': '<f4', 'F64': '<f8', 'F16': '<f2', 'I64': '<i8', 'BOOL': '?'}
def get(name):
    h = header[name]
    a, b = h['data_offsets']
    return np.frombuffer(buf[a:b], dtype=kinds[h['dtype']]).reshape(h['shape'])
assert header['__metadata__'] == {'format': 'flowkit', 'step': '12'}, header['__metadata__']
assert (get('w') == np.arange(6, dtype=np.float32).reshape(2, 3).T).all()
assert (get('idx') == np.array([-3, 7, 1 << 30])).all()
assert (get('mask') == np.array([True, False, True])).all()
assert get('empty').shape == (0, 4)
assert (get('half') == np.array([0.5, -2.0], dtype=np.float16)).all()
ends = sorted(h['data_offsets'] for k, h in header.items() if k != '__metadata__')
assert ends[0][0] == 0 and ends[-1][1] == len(buf) and all(x[1] == y[0] for x, y in zip(ends, ends[1:]))
# The other way: numpy writes, flowkit reads (in reverse order of names, unpadded header).
arrays = {'z': (np.arange(12, dtype=np.float64) / 8 - 1).reshape(3, 4), 'a': np.array([[1, 2], [3, 4]], dtype=np.int32)}
body, meta, at = b'', {'__metadata__': {'by': 'numpy'}}, 0
for name, arr in arrays.items():
    raw = arr.astype(arr.dtype.newbyteorder('<')).tobytes()
    meta[name] = {'dtype': {'float64': 'F64', 'int32': 'I32'}[arr.dtype.name], 'shape': list(arr.shape), 'data_offsets': [at, at + len(raw)]}
    body += raw
    at += len(raw)
h = json.dumps(meta).encode()
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(h)) + h + body)
print('ok')
)py";
  std::string out;
  ASSERT_EQ(run_command("/usr/bin/python3 " + script + " " + ours + " " + theirs, &out), 0) << out;
  flowkit::io::TensorMetadata meta;
  auto back = flowkit::io::read_safetensors(theirs, &meta);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].first, "z");  // buffer order
  EXPECT_TRUE(torch::equal(back[0].second, (torch::arange(12, torch::kFloat64) / 8 - 1).reshape({3, 4})));
  EXPECT_EQ(back[1].first, "a");
  EXPECT_TRUE(torch::equal(back[1].second, torch::tensor({{1, 2}, {3, 4}}, torch::kInt32)));
  EXPECT_EQ(meta.at("by"), "numpy");
  // And flowkit's own file read back by flowkit.
  auto own = flowkit::io::read_safetensors(ours);
  ASSERT_EQ(own.size(), 5u);
  EXPECT_TRUE(torch::equal(own[0].second, torch::arange(6, torch::kFloat32).reshape({2, 3}).t()));
  EXPECT_EQ(own[3].second.sizes(), (std::vector<int64_t>{0, 4}));
  // read_weights_file tells the formats apart by content.
  EXPECT_EQ(flowkit::io::read_weights_file(theirs).size(), 2u);
}

TEST(Safetensors, DamagedFilesAreRefusedNamingTheFileAndTensor) {
  auto file_of = [](const nlohmann::json& header, const std::string& body) {
    const std::string h = header.dump();
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
    return out + h + body;
  };
  auto refused = [&](const std::string& bytes, const std::string& part) {
    try {
      flowkit::io::parse_safetensors(bytes, "bad.safetensors");
      ADD_FAILURE() << "expected a refusal mentioning " << part;
    } catch (const flowkit::Error& e) {
      EXPECT_THAT_MSG(e.what(), "'bad.safetensors'");
      EXPECT_THAT_MSG(e.what(), part);
    }
  };
  const std::string eight(8, 'x');
  auto t = [](const char* dtype, std::vector<int> shape, int a, int b) {
    return nlohmann::json{{"dtype", dtype}, {"shape", shape}, {"data_offsets", {a, b}}};
  };
  refused("abc", "shorter than");
  refused(std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", "header length");
  refused(file_of(nlohmann::json::object(), "").substr(0, 9), "header length");
  { std::string bad = file_of({{"w", t("F32", {2}, 0, 8)}}, eight); bad[9] = '#'; refused(bad, "not JSON"); }
  refused(file_of({{"w", t("F33", {2}, 0, 8)}}, eight), "tensor 'w': unsupported dtype");
  refused(file_of({{"w", t("F32", {3}, 0, 8)}}, eight), "tensor 'w': holds 8 bytes but its shape and dtype need 12");
  refused(file_of({{"w", t("F32", {2}, 0, 16)}}, eight), "tensor 'w': data_offsets [0, 16] lie outside");
  refused(file_of({{"w", t("F32", {1}, 0, 4)}, {"v", t("F32", {1}, 2, 6)}}, eight), "overlap or gap");
  refused(file_of({{"w", t("F32", {1}, 0, 4)}}, eight), "4 bytes no tensor describes");
  refused(file_of({{"w", t("BOOL", {8}, 0, 8)}}, eight), "bool bytes");
  refused(file_of({{"w", {{"dtype", "F32"}}}}, eight), "tensor 'w': expected");
  refused(file_of({{"__metadata__", {{"k", 3}}}}, ""), "__metadata__/k is not a string");
  EXPECT_THROW(flowkit::io::read_safetensors("/nonexistent/w.safetensors"), flowkit::Error);
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
