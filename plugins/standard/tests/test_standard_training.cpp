// The default job end to end: the quickstart pipeline (plugins/standard/examples/quickstart.json)
// learns the digits. (The trainer's own contracts are tested by the host, tests/test_trainer.cpp.)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "flowkit/core/pipeline.h"
#include "flowkit/core/session.h"
#include "flowkit/io.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace flowkit;
using namespace flowkit::core;

namespace {
// The quickstart pipeline trained 600 steps, `count` samples, one metric.
nlohmann::json brief_quickstart(int count, const std::string& metric) {
  std::ifstream in_file(std::string(FLOWKIT_SOURCE_DIR) + "/plugins/standard/examples/quickstart.json");
  auto doc = nlohmann::json::parse(in_file);
  doc["train"]["steps"] = 600;
  doc["train"]["checkpoint_every"] = 0;
  doc["sample"]["count"] = count;
  doc["eval"]["metrics"] = {metric};
  return doc;
}
}  // namespace

// End to end: the quickstart pipeline (digits), trained briefly, reaches an energy distance
// to held-out digits far below the untrained model's; both are measured here.
TEST(Quickstart, BriefTrainingBeatsTheUntrainedModel) {
  TempDir tmp;
  PluginHost host(build_tree_only());
  auto doc = brief_quickstart(300, "energy_distance");
  Pipeline p = resolve_pipeline(doc, host);
  Session untrained(p, host, run_in(tmp.path(), "untrained"));
  double before = untrained.evaluate().at("energy_distance").get<double>();
  Session s(p, host, run_in(tmp.path(), "trained"));
  s.train();
  double after = s.evaluate().at("energy_distance").get<double>();
  std::cout << "[ measured ] energy distance to held-out digits: untrained " << before << ", trained " << after << "\n";
  EXPECT_LT(after, 0.25 * before);
  auto files = s.sample();
  bool npy = false, png = false;
  for (const auto& f : files) {
    if (fs::path(f).extension() == ".npy") {
      std::vector<int64_t> shape;
      auto data = io::read_npy(f, &shape);
      ASSERT_EQ(shape.size(), 2u);
      EXPECT_EQ(shape[0], 300);
      EXPECT_EQ(shape[1], 64);
      npy = true;
    }
    if (fs::path(f).extension() == ".png") {
      int w = 0, h = 0;
      io::read_png_size(f, &w, &h);
      EXPECT_GT(w, 0);
      png = true;
    }
  }
  EXPECT_TRUE(npy && png);
}


// Classifier-free guidance as a pipeline stage: the same trained quickstart weights sampled
// with a "guidance" section read their requested class more often (the frozen classifier's
// label accuracy), and the run records the doubled network evaluations.
TEST(Quickstart, ClassifierFreeGuidanceRaisesLabelAccuracy) {
  TempDir tmp;
  PluginHost host(build_tree_only());
  auto doc = brief_quickstart(500, "label_accuracy");
  Session s(resolve_pipeline(doc, host), host, run_in(tmp.path(), "trained"));
  s.train();
  const nlohmann::json plain = s.evaluate();
  doc["guidance"] = {{"type", "standard.cfg"}, {"scale", 3.0}};
  Session guided(resolve_pipeline(doc, host), host, run_in(tmp.path(), "guided"));
  guided.load_checkpoint((tmp.path() / "trained" / "checkpoints" / "last.pt").string());
  const nlohmann::json with = guided.evaluate();
  const double a0 = plain.at("label_accuracy").get<double>(), a3 = with.at("label_accuracy").get<double>();
  std::cout << "[ measured ] label accuracy after 600 steps: conditional " << a0 << ", guidance scale 3 " << a3 << "\n";
  EXPECT_GT(a3, a0 + 0.02);
  EXPECT_EQ(plain.at("network_evaluations"), plain.at("nfe"));
  EXPECT_EQ(with.at("network_evaluations").get<int64_t>(), 2 * with.at("nfe").get<int64_t>());
}

// sample.nfe is honoured exactly or refused: midpoint (2 evaluations a step) spends 10 in 5
// steps, rk4 (4) 8 in 2; 15 with midpoint names the nearest reachable budgets; an adaptive
// solver and a conflicting sample.steps are refused; eval.json records the NFE spent.
TEST(Quickstart, RequestedNfeIsSpentExactlyOrRefused) {
  TempDir tmp;
  PluginHost host(build_tree_only());
  auto doc = brief_quickstart(50, "energy_distance");
  doc["train"]["steps"] = 5;
  doc["eval"]["reference_count"] = 50;
  Session trained(resolve_pipeline(doc, host), host, run_in(tmp.path(), "trained"));
  trained.train();
  const std::string ckpt = (tmp.path() / "trained" / "checkpoints" / "last.pt").string();
  auto eval_with = [&](const nlohmann::json& solver, int64_t nfe, int64_t steps = 0) {
    nlohmann::json d = doc;
    d["solver"] = solver;
    d["sample"]["nfe"] = nfe;
    d["sample"]["steps"] = steps;
    Session s(resolve_pipeline(d, host), host, run_in(tmp.path(), "eval"));
    s.load_checkpoint(ckpt);
    return s.evaluate();
  };
  EXPECT_EQ(eval_with({{"type", "standard.midpoint"}, {"steps", 20}}, 10).at("nfe").get<int64_t>(), 10);
  EXPECT_EQ(eval_with({{"type", "standard.rk4"}}, 8).at("nfe").get<int64_t>(), 8);
  EXPECT_EQ(eval_with({{"type", "standard.euler"}}, 7).at("nfe").get<int64_t>(), 7);
  auto error_of = [&](const nlohmann::json& solver, int64_t nfe, int64_t steps) {
    try {
      eval_with(solver, nfe, steps);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const std::string odd = error_of({{"type", "standard.midpoint"}}, 15, 0);
  EXPECT_THAT_MSG(odd, "/sample/nfe");
  EXPECT_THAT_MSG(odd, "spends 2 evaluations a step, so 15 is not reachable exactly; the nearest are 14 and 16");
  EXPECT_THAT_MSG(error_of({{"type", "standard.dopri5"}}, 12, 0), "does not spend a fixed number of evaluations a step");
  EXPECT_THAT_MSG(error_of({{"type", "standard.euler"}}, 12, 3), "sample.nfe and sample.steps both set");
}
