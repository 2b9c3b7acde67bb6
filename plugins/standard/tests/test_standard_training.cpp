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


// End to end: the quickstart pipeline (digits), trained briefly, reaches an energy distance
// to held-out digits far below the untrained model's; both are measured here.
TEST(Quickstart, BriefTrainingBeatsTheUntrainedModel) {
  TempDir tmp;
  PluginHost host(build_tree_only());
  std::ifstream in_file(std::string(FLOWKIT_SOURCE_DIR) + "/plugins/standard/examples/quickstart.json");
  auto doc = nlohmann::json::parse(in_file);
  doc["train"]["steps"] = 600;
  doc["train"]["checkpoint_every"] = 0;
  doc["sample"]["count"] = 300;
  doc["eval"]["metrics"] = {"energy_distance"};
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

