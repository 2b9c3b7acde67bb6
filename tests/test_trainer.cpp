// The trainer end to end through a real plugin (the test plugin fk_flows: a normalizing flow,
// no path): bit-exact resume, NaN handling, checkpoint errors, no overwritten runs, embedding.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "flowkit/core/embed.h"
#include "flowkit/core/pipeline.h"
#include "flowkit/core/session.h"
#include "flowkit/io.h"
#include "flowkit/safetensors.h"
#include "flowkit/tensor_file.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace flowkit;
using namespace flowkit::core;

namespace {

nlohmann::json toy_pipeline() {
  return nlohmann::json::parse(R"({
    "name": "toy",
    "domain": {"type": "fk_flows.gauss2d"},
    "model": {"type": "fk_flows.coupling", "hidden": 16, "layers": 2},
    "loss": {"type": "fk_flows.nll"},
    "solver": {"type": "fk_flows.latent_sampler"},
    "train": {"steps": 40, "batch_size": 64, "lr": 0.003, "warmup_steps": 5, "checkpoint_every": 10, "log_every": 10},
    "sample": {"count": 200},
    "eval": {"reference_count": 200}
  })");
}

// The test plugins only: the host's tests name no bundled plugin.
SearchOptions test_plugins_only() {
  SearchOptions o;
  o.plugin_paths = {std::string(FLOWKIT_BINARY_DIR) + "/test_plugins/flows"};
  o.use_environment = false;
  o.use_default_dirs = false;
  return o;
}


std::map<std::string, torch::Tensor> read_checkpoint(const fs::path& file) {
  // Read with LibTorch's own unpickler: an independent check of the format flowkit writes.
  std::ifstream in(file, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::map<std::string, torch::Tensor> out;
  for (const auto& entry : torch::pickle_load(bytes).toGenericDict()) out[entry.key().toStringRef()] = entry.value().toTensor();
  return out;
}
}  // namespace

TEST(Trainer, ResumeIsBitExact) {
  TempDir tmp;
  PluginHost host(test_plugins_only());
  Pipeline p = resolve_pipeline(toy_pipeline(), host);
  {
    Session straight(p, host, run_in(tmp.path(), "straight"));
    straight.train();
  }
  {
    RunOptions first = run_in(tmp.path(), "resumed");
    first.stop_at_step = 20;
    Session s(p, host, first);
    EXPECT_EQ(s.train().end_step, 20);
  }
  {
    RunOptions second = run_in(tmp.path(), "resumed");
    second.resume = true;
    Session s(p, host, second);
    auto summary = s.train();
    EXPECT_EQ(summary.start_step, 20);
    EXPECT_EQ(summary.end_step, 40);
  }
  auto a = read_checkpoint(tmp.path() / "straight/checkpoints/last.pt");
  auto b = read_checkpoint(tmp.path() / "resumed/checkpoints/last.pt");
  ASSERT_EQ(a.size(), b.size());
  ASSERT_GT(a.size(), 4u);
  for (const auto& [key, t] : a) EXPECT_TRUE(torch::equal(t, b.at(key))) << key << " differs after resume";
  // The resolved config is in the run directory and runs again as is.
  std::ifstream resolved(tmp.path() / "straight/pipeline.resolved.json");
  auto again = validate_pipeline(nlohmann::json::parse(resolved), "resolved.json", host);
  EXPECT_TRUE(again.ok()) << again.report();
  EXPECT_TRUE(fs::exists(tmp.path() / "straight/log.txt"));
  std::ifstream metrics(tmp.path() / "straight/metrics.jsonl");
  std::string line;
  int lines = 0, sessions = 0;
  while (std::getline(metrics, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("train_session")) {  // the last line: what this training session did
      EXPECT_EQ(j["train_session"]["end_step"], 40);
      EXPECT_GT(j["train_session"]["seconds"].get<double>(), 0);
      ++sessions;
      continue;
    }
    EXPECT_TRUE(j.contains("loss") && j.contains("lr") && j.contains("step") && j.contains("grad_norm"));
    ++lines;
  }
  EXPECT_EQ(lines, 4);
  EXPECT_EQ(sessions, 1);
  // weights.pt: a plain name -> tensor dict (what Python's torch.load reads).
  std::ifstream wf(tmp.path() / "straight/weights.pt", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(wf)), std::istreambuf_iterator<char>());
  auto weights = torch::pickle_load(bytes).toGenericDict();
  size_t tensors = 0;
  for (const auto& [key, t] : a) tensors += key.rfind("param_", 0) == 0 || key.rfind("buffer_", 0) == 0;
  EXPECT_EQ(weights.size(), tensors);  // one entry per parameter and buffer, by name
  int ema_index = 0;
  for (const auto& item : weights) {
    EXPECT_FALSE(item.key().toStringRef().empty());
    if (!a.count("ema_" + std::to_string(ema_index))) break;  // buffers follow the parameters
    EXPECT_TRUE(torch::equal(item.value().toTensor(), a.at("ema_" + std::to_string(ema_index++))));
  }
}

TEST(Trainer, NonFiniteLossStopsAndKeepsTheLastGoodCheckpoint) {
  TempDir tmp;
  PluginHost host(test_plugins_only());
  auto doc = toy_pipeline();
  doc["train"]["lr"] = 1e30;  // the flow's shifts overflow float32 within a few steps
  doc["train"]["grad_clip"] = 0;
  doc["train"]["warmup_steps"] = 0;
  doc["train"]["checkpoint_every"] = 1;
  doc["train"]["steps"] = 200;
  Pipeline p = resolve_pipeline(doc, host);
  std::string message;
  {
    Session s(p, host, run_in(tmp.path(), "nan"));
    try {
      s.train();
      FAIL() << "training with lr 1e30 should diverge";
    } catch (const Error& e) {
      message = e.what();
    }
  }
  EXPECT_THAT_MSG(message, "non-finite");
  EXPECT_THAT_MSG(message, "training stopped");
  fs::path last = tmp.path() / "nan/checkpoints/last.pt";
  EXPECT_THAT_MSG(message, "the last good checkpoint is kept at " + last.string());
  RunOptions o = run_in(tmp.path(), "nan");
  Session again(p, host, o);
  EXPECT_NO_THROW(again.load_checkpoint());
  auto ckpt = read_checkpoint(last);
  for (const auto& [key, t] : ckpt)
    if (key.rfind("param_", 0) == 0) EXPECT_TRUE(torch::isfinite(t).all().item<bool>()) << key;
}

TEST(Trainer, CorruptCheckpointIsAClearError) {
  TempDir tmp;
  PluginHost host(test_plugins_only());
  auto doc = toy_pipeline();
  doc["train"]["steps"] = 5;
  Pipeline p = resolve_pipeline(doc, host);
  Session s(p, host, run_in(tmp.path(), "c"));
  s.train();
  fs::path last = tmp.path() / "c/checkpoints/last.pt";
  auto size = fs::file_size(last);
  fs::resize_file(last, size / 2);
  try {
    s.load_checkpoint();
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT_MSG(e.what(), "checkpoint '" + last.string() + "' cannot be read (corrupt or not a flowkit checkpoint)");
  }
  std::ofstream(last, std::ios::trunc) << "garbage";
  EXPECT_THROW(s.load_checkpoint(), Error);
  EXPECT_THROW(s.load_checkpoint((tmp.path() / "missing.pt").string()), Error);
}

TEST(Trainer, CheckpointOfAnotherModelIsRejected) {
  TempDir tmp;
  PluginHost host(test_plugins_only());
  auto doc = toy_pipeline();
  doc["train"]["steps"] = 2;
  Pipeline small = resolve_pipeline(doc, host);
  Session(small, host, run_in(tmp.path(), "a")).train();
  doc["model"]["layers"] = 3;  // another architecture: other parameter names
  Pipeline big = resolve_pipeline(doc, host);
  Session other(big, host, run_in(tmp.path(), "b"));
  try {
    other.load_checkpoint((tmp.path() / "a/checkpoints/last.pt").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT_MSG(e.what(), "does not fit this pipeline");
  }
}

TEST(Trainer, ExistingRunIsNotOverwritten) {
  TempDir tmp;
  PluginHost host(test_plugins_only());
  auto doc = toy_pipeline();
  doc["train"]["steps"] = 2;
  Pipeline p = resolve_pipeline(doc, host);
  Session(p, host, run_in(tmp.path(), "r")).train();
  auto before = fs::last_write_time(tmp.path() / "r/checkpoints/last.pt");
  Session again(p, host, run_in(tmp.path(), "r"));
  try {
    again.train();
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT_MSG(e.what(), "already holds checkpoints; use --resume");
  }
  EXPECT_EQ(before, fs::last_write_time(tmp.path() / "r/checkpoints/last.pt"));
}

TEST(Embed, OpenRunAndCallThePolicy) {
  TempDir tmp;
  PluginHost host(test_plugins_only());
  auto doc = toy_pipeline();
  doc["train"]["steps"] = 3;
  Session(resolve_pipeline(doc, host), host, run_in(tmp.path(), "emb")).train();
  auto session = open_run((tmp.path() / "emb").string(), host);
  Policy policy = make_policy(*session);
  auto g1 = at::detail::createCPUGenerator(4), g2 = at::detail::createCPUGenerator(4);
  torch::Tensor a = policy(Conditioning{}, g1), b = policy(Conditioning{}, g2);
  EXPECT_TRUE(a.sizes().equals({1, 2}));
  EXPECT_TRUE(torch::equal(a, b));
  try {
    open_run((tmp.path() / "nope").string(), host);
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT_MSG(e.what(), "nope/pipeline.resolved.json");
  }
}

// Damaged runs lose nothing: a corrupt last.pt falls back to the newest readable step file.
TEST(Trainer, CorruptLastCheckpointResumesFromTheNewestReadableStep) {
  TempDir tmp;
  PluginHost host(test_plugins_only());
  nlohmann::json doc = toy_pipeline();
  Pipeline p = resolve_pipeline(doc, host);
  {
    Session s(p, host, run_in(tmp.path(), "r"));
    s.train();  // step_10 ... step_40 and last.pt
  }
  const fs::path ckpts = tmp.path() / "r/checkpoints";
  fs::resize_file(ckpts / "last.pt", 100);           // truncated
  std::ofstream(ckpts / "step_00000040.pt") << "x";   // garbage
  doc["train"]["steps"] = 50;
  Pipeline longer = resolve_pipeline(doc, host);
  RunOptions o = run_in(tmp.path(), "r");
  o.resume = true;
  {
    Session s(longer, host, o);
    EXPECT_EQ(s.train().start_step, 30);  // step 40 and last.pt skipped, both named in the log
  }
  std::ifstream log(tmp.path() / "r/log.txt");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_THAT_MSG(text, "skipped checkpoint '" + (ckpts / "step_00000040.pt").string() + "'");
  EXPECT_THAT_MSG(text, "resumed from " + (ckpts / "step_00000030.pt").string() + " instead of the unreadable " + (ckpts / "last.pt").string());

  for (const auto& f : fs::directory_iterator(ckpts)) fs::resize_file(f.path(), 10);  // now nothing is readable
  Session s(longer, host, o);
  try {
    s.train();
    ADD_FAILURE() << "resumed from unreadable checkpoints";
  } catch (const Error& e) {
    EXPECT_THAT_MSG(e.what(), "last.pt and all 5 step checkpoints are unreadable");
  }
}

TEST(Trainer, ASecondTrainerOfTheSameRunIsRefused) {
  TempDir tmp;
  PluginHost host(test_plugins_only());
  Pipeline p = resolve_pipeline(toy_pipeline(), host);
  fs::create_directories(tmp.path() / "r");
  // Another process holds the lock (a separate open file description conflicts like one).
  const int fd = ::open((tmp.path() / "r/.train.lock").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  ASSERT_EQ(::pwrite(fd, "4242", 4, 0), 4);
  {
    Session s(p, host, run_in(tmp.path(), "r"));
    try {
      s.train();
      ADD_FAILURE() << "two trainers in one run directory";
    } catch (const Error& e) {
      EXPECT_THAT_MSG(e.what(), "is being trained by another process (pid 4242)");
    }
  }
  ::close(fd);
  Session s(p, host, run_in(tmp.path(), "r"));
  EXPECT_EQ(s.train().end_step, 40);  // the lock went with its holder
}

TEST(Trainer, AFailedCheckpointWriteKeepsThePreviousOne) {
  TempDir tmp;
  PluginHost host(test_plugins_only());
  Pipeline p = resolve_pipeline(toy_pipeline(), host);
  // The temporary file of step 20's checkpoint cannot be created (a folder is in its place):
  // what a full disk or a read-only folder does to the write.
  fs::create_directories(tmp.path() / "r/checkpoints/step_00000020.pt.tmp");
  {
    Session s(p, host, run_in(tmp.path(), "r"));
    try {
      s.train();
      ADD_FAILURE() << "the failed write went unnoticed";
    } catch (const Error& e) {
      EXPECT_THAT_MSG(e.what(), "cannot write the checkpoint of step 20");
      EXPECT_THAT_MSG(e.what(), "the previous checkpoint " + (tmp.path() / "r/checkpoints/last.pt").string() + " is intact");
    }
  }
  EXPECT_EQ(read_checkpoint(tmp.path() / "r/checkpoints/last.pt").at("step").item<int64_t>(), 10);
}

// A run's weights also go to weights.safetensors (the same tensors as weights.pt), and
// train.init_weights starts another run from either file; a file of another model is refused
// naming the tensor.
TEST(Trainer, SafetensorsWeightsExportAndInitialiseAnotherRun) {
  TempDir tmp;
  PluginHost host(test_plugins_only());
  nlohmann::json doc = toy_pipeline();
  {
    Session s(resolve_pipeline(doc, host), host, run_in(tmp.path(), "a"));
    s.train();
  }
  const auto pt = io::read_tensor_dict((tmp.path() / "a/weights.pt").string());
  io::TensorMetadata meta;
  const auto st = io::read_safetensors((tmp.path() / "a/weights.safetensors").string(), &meta);
  ASSERT_EQ(st.size(), pt.size());
  for (size_t i = 0; i < pt.size(); ++i) {
    EXPECT_EQ(st[i].first, pt[i].first);
    EXPECT_TRUE(torch::equal(st[i].second, pt[i].second)) << pt[i].first;
  }
  EXPECT_EQ(meta.at("format"), "flowkit");
  EXPECT_EQ(meta.at("step"), "40");
  EXPECT_EQ(meta.at("model"), "fk_flows.coupling");

  for (const char* file : {"a/weights.safetensors", "a/weights.pt"}) {
    SCOPED_TRACE(file);
    nlohmann::json init = doc;
    init["train"]["init_weights"] = (tmp.path() / file).string();
    init["train"]["steps"] = 0;
    Session b(resolve_pipeline(init, host), host, run_in(tmp.path(), std::string("b_") + fs::path(file).extension().string().substr(1)));
    b.train();
    const auto back = io::read_tensor_dict((fs::path(b.run_dir()) / "weights.pt").string());
    ASSERT_EQ(back.size(), pt.size());
    for (size_t i = 0; i < pt.size(); ++i) EXPECT_TRUE(torch::equal(back[i].second, pt[i].second)) << pt[i].first;
  }
  // Another model (wider layers): the first mismatching tensor is named.
  nlohmann::json wider = doc;
  wider["model"]["hidden"] = 32;
  wider["train"]["init_weights"] = (tmp.path() / "a/weights.safetensors").string();
  try {
    Session c(resolve_pipeline(wider, host), host, run_in(tmp.path(), "c"));
    ADD_FAILURE() << "initialised a wider model from narrower weights";
  } catch (const Error& e) {
    EXPECT_THAT_MSG(e.what(), "train.init_weights '" + (tmp.path() / "a/weights.safetensors").string() + "'");
    EXPECT_THAT_MSG(e.what(), "has shape");
  }
  nlohmann::json missing = doc;
  missing["train"]["init_weights"] = (tmp.path() / "nope.safetensors").string();
  EXPECT_THROW(Session(resolve_pipeline(missing, host), host, run_in(tmp.path(), "d")), Error);
}
