// Distributed training on loopback: real `flowkit train` processes joined by c10d/Gloo through
// the torchrun variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), and the checkpoints they
// write read back. Every process is bounded in time; nothing leaves 127.0.0.1.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "flowkit/tensor_file.h"
#include "test_util.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kFlowkit = FLOWKIT_BINARY_DIR "/bin/flowkit";

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// One child process: argv, extra environment, stdout+stderr to `log`.
pid_t spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env, const fs::path& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    ::unsetenv("FLOWKIT_PLUGIN_PATH");
    FILE* f = std::fopen(log.c_str(), "w");
    ::dup2(fileno(f), 1);
    ::dup2(fileno(f), 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::_Exit(127);
  }
  return pid;
}

// The exit status, or -1 (and the process killed) when it outlives `limit`.
int wait_for(pid_t pid, std::chrono::seconds limit) {
  const auto end = Clock::now() + limit;
  int status = 0;
  while (Clock::now() < end) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Launch {
  int world = 1;
  std::vector<std::string> args;  // after `flowkit train`
};

// Runs `flowkit train <args>` as `world` ranks (a plain process when world is 1); returns the
// exit codes; logs in dir/rank<r>.log.
std::vector<int> run_ranks(const Launch& l, const fs::path& dir, std::chrono::seconds limit = std::chrono::seconds(120)) {
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < l.world; ++r) {
    std::vector<std::string> argv{kFlowkit, "-q", "train"};
    argv.insert(argv.end(), l.args.begin(), l.args.end());
    std::map<std::string, std::string> env;
    if (l.world > 1)
      env = {{"RANK", std::to_string(r)}, {"LOCAL_RANK", std::to_string(r)}, {"WORLD_SIZE", std::to_string(l.world)},
             {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", std::to_string(port)}};
    pids.push_back(spawn(argv, env, dir / ("rank" + std::to_string(r) + ".log")));
  }
  std::vector<int> codes;
  for (pid_t p : pids) codes.push_back(wait_for(p, limit));
  return codes;
}

fs::path write_pipeline(const fs::path& dir, const std::string& name, const nlohmann::json& j) {
  fs::path p = dir / (name + ".json");
  std::ofstream(p) << j.dump(1);
  return p;
}

// Deterministic given the data (no noise in the loss): 2 x B and 1 x 2B see the same batches.
nlohmann::json regression_pipeline(int64_t steps, int64_t batch) {
  return {{"name", "dist_regression"},
          {"domain", {{"type", "dm1.bireach"}, {"observation", "state"}, {"demos", 40}, {"rollouts", 4}}},
          {"model", {{"type", "dm1.policy"}, {"hidden", 64}, {"layers", 1}}},
          {"loss", {{"type", "dm1.regression"}}},
          {"solver", {{"type", "dm1.direct"}}},
          {"train", {{"steps", steps}, {"batch_size", batch}, {"lr", 3e-3}, {"log_every", 5}, {"checkpoint_every", 10},
                     {"ema_decay", 0.9}, {"grad_clip", 1.0}, {"dist_timeout", 30}}}};
}

// The CFM loss draws noise and times: each rank from its own stream.
nlohmann::json cfm_pipeline(int64_t steps, int64_t batch) {
  return {{"name", "dist_cfm"},
          {"domain", {{"type", "standard.toy2d"}, {"dataset", "8gaussians"}}},
          {"path", {{"type", "standard.affine"}}},
          {"model", {{"type", "standard.mlp"}, {"hidden", 64}, {"layers", 2}}},
          {"loss", {{"type", "standard.cfm"}}},
          {"solver", {{"type", "standard.euler"}}},
          {"train", {{"steps", steps}, {"batch_size", batch}, {"lr", 2e-3}, {"log_every", 5}, {"checkpoint_every", 0},
                     {"dist_timeout", 30}}}};
}

std::vector<torch::Tensor> checkpoint_parameters(const fs::path& file) {
  flowkit::io::TensorDict d = flowkit::io::read_tensor_dict(file.string());
  std::vector<torch::Tensor> out;
  for (int i = 0;; ++i) {
    const torch::Tensor* t = flowkit::io::find_tensor(d, "param_" + std::to_string(i));
    if (!t) break;
    out.push_back(t->to(torch::kDouble));
  }
  return out;
}

double max_abs_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, (a[i] - b[i]).abs().max().item<double>());
  return m;
}

nlohmann::json last_line_with(const fs::path& metrics, const std::string& key) {
  nlohmann::json found;
  std::ifstream f(metrics);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) {
      auto j = nlohmann::json::parse(line);
      if (j.contains(key)) found = j;
    }
  return found;
}

std::string logs_of(const fs::path& dir, int world) {
  std::string all;
  for (int r = 0; r < world; ++r) all += "--- rank " + std::to_string(r) + "\n" + read_text(dir / ("rank" + std::to_string(r) + ".log"));
  return all;
}

}  // namespace

TEST(Distributed, ThreeProcessesEndWithIdenticalParameters) {
  TempDir tmp;
  const fs::path p = write_pipeline(tmp.path(), "cfm", cfm_pipeline(30, 96));
  auto codes = run_ranks({3, {p.string(), "--runs-dir", (tmp.path() / "runs").string(), "--name", "three"}}, tmp.path());
  ASSERT_EQ(codes, (std::vector<int>{0, 0, 0})) << logs_of(tmp.path(), 3);
  const fs::path run = tmp.path() / "runs/three";
  nlohmann::json d = last_line_with(run / "metrics.jsonl", "distributed");
  ASSERT_FALSE(d.is_null()) << read_text(run / "metrics.jsonl");
  const auto& sums = d["distributed"]["parameter_checksums"];
  ASSERT_EQ(sums.size(), 3u);
  EXPECT_EQ(sums[0], sums[1]);
  EXPECT_EQ(sums[0], sums[2]);
  // The checksums are those of the parameters rank 0 wrote, computed here independently.
  double sum = 0, sum_sq = 0;
  for (const auto& t : checkpoint_parameters(run / "checkpoints/last.pt")) sum += t.sum().item<double>(), sum_sq += t.pow(2).sum().item<double>();
  EXPECT_NEAR(sums[0][0].get<double>(), sum, 1e-9 * std::max(1.0, std::abs(sum)));
  EXPECT_NEAR(sums[0][1].get<double>(), sum_sq, 1e-9 * sum_sq);
  // Rank 0 alone logged the steps, and the session line records the world size.
  EXPECT_EQ(last_line_with(run / "metrics.jsonl", "loss")["step"], 30);
  EXPECT_EQ(last_line_with(run / "metrics.jsonl", "train_session")["train_session"]["world_size"], 3);
  EXPECT_EQ(read_text(tmp.path() / "rank1.log").find("step"), std::string::npos) << read_text(tmp.path() / "rank1.log");
}

TEST(Distributed, TwoProcessesOfBatchBEqualOneProcessOfBatch2B) {
  TempDir tmp;
  const fs::path p = write_pipeline(tmp.path(), "reg", regression_pipeline(20, 64));
  const std::string runs = (tmp.path() / "runs").string();
  ASSERT_EQ(run_ranks({2, {p.string(), "--runs-dir", runs, "--name", "two"}}, tmp.path()), (std::vector<int>{0, 0}))
      << logs_of(tmp.path(), 2);
  ASSERT_EQ(run_ranks({1, {p.string(), "--runs-dir", runs, "--name", "one"}}, tmp.path()), (std::vector<int>{0}))
      << logs_of(tmp.path(), 1);
  ASSERT_EQ(run_ranks({1, {p.string(), "--runs-dir", runs, "--name", "half", "train.batch_size=32"}}, tmp.path()),
            (std::vector<int>{0}))
      << logs_of(tmp.path(), 1);
  auto two = checkpoint_parameters(tmp.path() / "runs/two/checkpoints/last.pt");
  auto one = checkpoint_parameters(tmp.path() / "runs/one/checkpoints/last.pt");
  auto half = checkpoint_parameters(tmp.path() / "runs/half/checkpoints/last.pt");
  const double same = max_abs_difference(two, one), other = max_abs_difference(half, one);
  EXPECT_LT(same, 1e-5) << "2 x 32 against 1 x 64";
  // The tolerance means something: another batch (1 x 32) ends far away.
  EXPECT_GT(other, 100 * same + 1e-4) << "1 x 32 against 1 x 64";
}

TEST(Distributed, ResumesATwoProcessCheckpointWithOneProcess) {
  TempDir tmp;
  const fs::path p = write_pipeline(tmp.path(), "reg", regression_pipeline(20, 64));
  const std::string runs = (tmp.path() / "runs").string();
  ASSERT_EQ(run_ranks({2, {p.string(), "--runs-dir", runs, "--name", "mixed", "--stop-at", "10"}}, tmp.path()),
            (std::vector<int>{0, 0}))
      << logs_of(tmp.path(), 2);
  ASSERT_TRUE(fs::exists(tmp.path() / "runs/mixed/checkpoints/step_00000010.pt"));
  ASSERT_EQ(run_ranks({1, {p.string(), "--runs-dir", runs, "--name", "mixed", "--resume"}}, tmp.path()), (std::vector<int>{0}))
      << logs_of(tmp.path(), 1);
  ASSERT_EQ(run_ranks({1, {p.string(), "--runs-dir", runs, "--name", "straight"}}, tmp.path()), (std::vector<int>{0}))
      << logs_of(tmp.path(), 1);
  // The data stream continued where the two processes left it: the same run as one process throughout.
  EXPECT_LT(max_abs_difference(checkpoint_parameters(tmp.path() / "runs/mixed/checkpoints/last.pt"),
                               checkpoint_parameters(tmp.path() / "runs/straight/checkpoints/last.pt")),
            1e-5);
  nlohmann::json sessions = nlohmann::json::array();
  std::ifstream f(tmp.path() / "runs/mixed/metrics.jsonl");
  for (std::string line; std::getline(f, line);)
    if (line.find("train_session") != std::string::npos) sessions.push_back(nlohmann::json::parse(line)["train_session"]);
  ASSERT_EQ(sessions.size(), 2u);
  EXPECT_EQ(sessions[0]["world_size"], 2);
  EXPECT_EQ(sessions[0]["end_step"], 10);
  EXPECT_EQ(sessions[1]["world_size"], 1);
  EXPECT_EQ(sessions[1]["end_step"], 20);
}

// Rank 1 killed (its sockets close) or stopped (it hangs, sockets open): rank 0 must give up
// within train.dist_timeout, exit non-zero with an error naming the timeout, and keep its
// last checkpoint.
void another_rank_fails(int sig) {
  TempDir tmp;
  nlohmann::json j = cfm_pipeline(1000000, 64);
  j["train"]["dist_timeout"] = 5;
  j["train"]["checkpoint_every"] = 20;
  const fs::path p = write_pipeline(tmp.path(), "cfm", j);
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r)
    pids.push_back(spawn({kFlowkit, "-q", "train", p.string(), "--runs-dir", (tmp.path() / "runs").string(), "--name", "failed"},
                         {{"RANK", std::to_string(r)}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", std::to_string(port)}},
                         tmp.path() / ("rank" + std::to_string(r) + ".log")));
  // Wait until they train together (the first checkpoint exists), then fail rank 1.
  const fs::path ckpt = tmp.path() / "runs/failed/checkpoints/last.pt";
  const auto start = Clock::now();
  while (!fs::exists(ckpt) && Clock::now() - start < std::chrono::seconds(60)) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(ckpt)) << logs_of(tmp.path(), 2);
  ::kill(pids[1], sig);
  const auto failed = Clock::now();
  const int code = wait_for(pids[0], std::chrono::seconds(40));
  const double seconds = std::chrono::duration<double>(Clock::now() - failed).count();
  ::kill(pids[1], SIGKILL);
  ::waitpid(pids[1], nullptr, 0);
  EXPECT_NE(code, 0);
  EXPECT_NE(code, -1) << "rank 0 was still running " << seconds << " s after rank 1 failed";
  EXPECT_LT(seconds, 5 + 15);  // the timeout plus start-up slack
  const std::string log = read_text(tmp.path() / "rank0.log");
  EXPECT_THAT_MSG(log, "rank 0 of 2");
  EXPECT_THAT_MSG(log, "train.dist_timeout (5 s)");
  EXPECT_FALSE(checkpoint_parameters(ckpt).empty());  // the last good checkpoint is intact
}

TEST(Distributed, AKilledRankStopsTheOtherWithinTheTimeout) { another_rank_fails(SIGKILL); }

TEST(Distributed, AHungRankStopsTheOtherWithinTheTimeout) { another_rank_fails(SIGSTOP); }

TEST(Distributed, DivergenceOnAnyRankStopsAllAndKeepsTheLastGoodCheckpoint) {
  TempDir tmp;
  nlohmann::json j = cfm_pipeline(200, 64);
  j["train"]["lr"] = 1e8;  // diverges within a few steps
  j["train"]["grad_clip"] = 0;
  j["train"]["checkpoint_every"] = 1;
  const fs::path p = write_pipeline(tmp.path(), "cfm", j);
  auto codes = run_ranks({2, {p.string(), "--runs-dir", (tmp.path() / "runs").string(), "--name", "nan"}}, tmp.path());
  EXPECT_NE(codes[0], 0);
  EXPECT_NE(codes[1], 0);
  const std::string log = read_text(tmp.path() / "rank0.log");
  EXPECT_THAT_MSG(log, "non-finite");
  EXPECT_THAT_MSG(log, "last good checkpoint is kept");
  for (const auto& t : checkpoint_parameters(tmp.path() / "runs/nan/checkpoints/last.pt"))
    EXPECT_TRUE(torch::isfinite(t).all().item<bool>());
}

TEST(Distributed, GlobalBatchMustSplitEvenly) {
  TempDir tmp;
  const fs::path p = write_pipeline(tmp.path(), "cfm", cfm_pipeline(10, 63));
  auto codes = run_ranks({2, {p.string(), "--runs-dir", (tmp.path() / "runs").string()}}, tmp.path());
  EXPECT_NE(codes[0], 0);
  const std::string log = read_text(tmp.path() / "rank0.log");
  EXPECT_THAT_MSG(log, "/train/batch_size");
  EXPECT_THAT_MSG(log, "WORLD_SIZE = 2");
}

TEST(Distributed, TorchrunLaunchesTheFlowkitCommandUnchanged) {
  const char* torchrun = "/usr/bin/torchrun";
  if (!fs::exists(torchrun)) GTEST_SKIP() << "no " << torchrun << " (Debian's python3-torch)";
  TempDir tmp;
  const fs::path p = write_pipeline(tmp.path(), "cfm", cfm_pipeline(20, 64));
  // Debian's torchrun 1.13 needs --redirects/--tee (docs/distributed.md).
  const pid_t pid = spawn({torchrun, "--nnodes", "1", "--nproc_per_node", "2", "--master_port", std::to_string(free_port()),
                           "--redirects", "1", "--tee", "1", "--no_python", kFlowkit, "-q", "train", p.string(), "--runs-dir",
                           (tmp.path() / "runs").string(), "--name", "torchrun"},
                          {}, tmp.path() / "torchrun.log");
  ASSERT_EQ(wait_for(pid, std::chrono::seconds(120)), 0) << read_text(tmp.path() / "torchrun.log");
  nlohmann::json d = last_line_with(tmp.path() / "runs/torchrun/metrics.jsonl", "distributed");
  ASSERT_FALSE(d.is_null()) << read_text(tmp.path() / "torchrun.log");
  EXPECT_EQ(d["distributed"]["world_size"], 2);
}
