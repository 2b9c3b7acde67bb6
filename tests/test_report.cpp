// `flowkit report PATH... [-o FILE]`: the page of a trained toy2d run and of a two-run
// comparison rendered in a real browser (headless Chromium: the DOM the page's own check
// script writes, and a screenshot that must show coloured chart lines), plus the page's
// handling of bad input on hand-written run folders (no training needed for those).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace fs = std::filesystem;

namespace {

const std::string kFlowkit = "env -u FLOWKIT_PLUGIN_PATH " FLOWKIT_BINARY_DIR "/bin/flowkit";
const std::string kToy2d = FLOWKIT_SOURCE_DIR "/plugins/standard/examples/toy2d.json";

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// Trains toy2d briefly into <root>/runs/<name>; returns the run directory.
fs::path train_toy2d(const fs::path& root, const std::string& name, const std::string& overrides) {
  std::string log;
  const int rc = run_command(kFlowkit + " -q run " + kToy2d + " train.log_every=20 sample.count=500 eval.reference_count=500 " +
                                 overrides + " --runs-dir " + (root / "runs").string() + " --name " + name,
                             &log);
  EXPECT_EQ(rc, 0) << log;
  return root / "runs" / name;
}

// The headless Chromium binary (Debian's chromium-headless-shell), or "" when absent.
std::string find_chromium() {
  std::string out;
  if (run_command("command -v chromium-headless-shell", &out) == 0) {
    out.erase(out.find_last_not_of(" \n\r\t") + 1);
    if (!out.empty() && fs::exists(out)) return out;
  }
  for (const char* p : {"/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium-headless-shell/chromium-headless-shell"})
    if (fs::exists(p)) return p;
  return "";
}

// What the page's load script wrote into <body data-*>, as rendered by Chromium.
struct PageChecks {
  int charts = -1, charts_total = -1, images = -1, images_ok = -1;
  std::string dom;
};

int body_attribute(const std::string& body, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(body, m, std::regex(name + "=\"(\\d+)\""))) return -1;
  return std::stoi(m[1]);
}

// Renders `page` with `chromium`: the DOM after load (and the screenshot when `screenshot`
// is not empty). A fresh profile folder so that concurrent tests do not share one.
PageChecks render(const std::string& chromium, const fs::path& page, const fs::path& work, const fs::path& screenshot = {}) {
  const std::string base = "timeout 120 " + chromium + " --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir=" +
                           (work / "chromium-profile").string() + " ";
  const fs::path dom_file = work / "dom.html";
  std::string log;
  EXPECT_EQ(run_command(base + "--dump-dom file://" + fs::absolute(page).string() + " > " + dom_file.string(), &log), 0) << log;
  PageChecks c;
  c.dom = read_text(dom_file);
  std::smatch m;
  if (std::regex_search(c.dom, m, std::regex("<body[^>]*>"))) {
    const std::string body = m[0];
    c.charts = body_attribute(body, "data-charts");
    c.charts_total = body_attribute(body, "data-charts-total");
    c.images = body_attribute(body, "data-images");
    c.images_ok = body_attribute(body, "data-images-ok");
  }
  if (!screenshot.empty()) {
    log.clear();
    EXPECT_EQ(run_command(base + "--window-size=1200,2000 --screenshot=" + screenshot.string() + " file://" +
                              fs::absolute(page).string(),
                          &log),
              0)
        << log;
  }
  return c;
}

// Whether /usr/bin/python3 has PIL (Debian's python3-pil) to decode the screenshot.
bool have_pil() {
  std::string out;
  return run_command("/usr/bin/python3 -c 'import PIL'", &out) == 0;
}

// "<non-white pixels> <coloured pixels> <distinct colours>" of a PNG, counted with PIL.
// Coloured: max - min channel > 60 (chart lines and samples; text and grid are grey).
std::vector<long> pixel_stats(const fs::path& png) {
  const std::string script =
      "import sys\nfrom PIL import Image\nim = Image.open(sys.argv[1]).convert('RGB')\npx = list(im.getdata())\n"
      "nonwhite = sum(1 for p in px if p != (255, 255, 255))\ncoloured = sum(1 for p in px if max(p) - min(p) > 60)\n"
      "print(nonwhite, coloured, len(set(px)))\n";
  std::string out;
  EXPECT_EQ(run_command("/usr/bin/python3 -c \"" + script + "\" " + png.string(), &out), 0) << out;
  std::istringstream in(out);
  std::vector<long> v(3, -1);
  in >> v[0] >> v[1] >> v[2];
  return v;
}

}  // namespace

TEST(Report, RunPageRendersChartsAndImagesInChromium) {
  if (!build_has_bundled_plugins()) GTEST_SKIP() << "built without the bundled plugins (FLOWKIT_BUILD_PLUGINS=OFF)";
  TempDir tmp;
  const fs::path run = train_toy2d(tmp.path(), "a", "train.steps=300");
  ASSERT_TRUE(fs::exists(run / "metrics.jsonl"));
  std::string log;
  ASSERT_EQ(run_command(kFlowkit + " report " + run.string(), &log), 0) << log;
  const fs::path page = run / "report.html";
  ASSERT_TRUE(fs::exists(page)) << log;

  // Self-contained: inline SVG and data URIs, nothing fetched.
  const std::string html = read_text(page);
  EXPECT_THAT_MSG(html, "<svg class=\"chart\"");
  EXPECT_THAT_MSG(html, "src=\"data:image/png;base64,");
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_THAT_MSG(html, "toy2d");                    // the pipeline's name
  EXPECT_THAT_MSG(html, "data-key=\"grad_norm\"");   // a curve per training key
  EXPECT_THAT_MSG(html, "sliced_w2");                // the eval metrics
  EXPECT_THAT_MSG(html, "pipeline.resolved.json");   // the pipeline and the files table
  EXPECT_THAT_MSG(html, "weights.pt");

  const std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium-headless-shell not installed: the page was not rendered";
  const fs::path shot = tmp.path() / "report.png";
  const PageChecks c = render(chromium, page, tmp.path(), shot);
  EXPECT_GE(c.charts, 3) << c.dom.substr(0, 2000);  // loss, lr, grad_norm, steps_per_sec drawn
  EXPECT_EQ(c.charts, c.charts_total);
  EXPECT_GE(c.images, 1);
  EXPECT_EQ(c.images_ok, c.images);  // every embedded sample decoded

  if (!have_pil()) GTEST_SKIP() << "python3-pil not installed: the screenshot was not checked";
  ASSERT_TRUE(fs::exists(shot));
  const std::vector<long> px = pixel_stats(shot);
  std::cout << "[ measured ] screenshot: " << px[0] << " non-white, " << px[1] << " coloured pixels, " << px[2]
            << " colours\n";
  EXPECT_GT(px[0], 1200 * 2000 / 50);  // not blank: text, tables, charts
  EXPECT_GT(px[1], 1000);              // coloured chart lines and sample points
  EXPECT_GT(px[2], 20);
}

TEST(Report, ComparisonOverlaysTwoRuns) {
  if (!build_has_bundled_plugins()) GTEST_SKIP() << "built without the bundled plugins (FLOWKIT_BUILD_PLUGINS=OFF)";
  TempDir tmp;
  const fs::path a = train_toy2d(tmp.path(), "h32", "train.steps=200 model.hidden=32");
  const fs::path b = train_toy2d(tmp.path(), "h64", "train.steps=200 model.hidden=64");
  ASSERT_TRUE(fs::exists(a / "metrics.jsonl") && fs::exists(b / "metrics.jsonl"));
  std::string log;
  // Several runs have no default place for the page.
  EXPECT_EQ(run_command(kFlowkit + " report " + a.string() + " " + b.string(), &log), 2) << log;
  EXPECT_THAT_MSG(log, "output");

  const fs::path page = tmp.path() / "compare.html";
  log.clear();
  ASSERT_EQ(run_command(kFlowkit + " report " + a.string() + " " + b.string() + " -o " + page.string(), &log), 0) << log;
  const std::string html = read_text(page);
  EXPECT_THAT_MSG(html, "<svg class=\"chart\" data-series=\"2\" data-key=\"loss\"");
  EXPECT_THAT_MSG(html, "h32");
  EXPECT_THAT_MSG(html, "h64");

  const std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium-headless-shell not installed: the page was not rendered";
  const PageChecks c = render(chromium, page, tmp.path());
  EXPECT_GE(c.charts, 3) << c.dom.substr(0, 2000);
  EXPECT_EQ(c.charts, c.charts_total);
  EXPECT_GE(c.images, 2);  // a sample image of each run
  EXPECT_EQ(c.images_ok, c.images);
}

TEST(Report, MalformedMetricsLineIsNotedAndBadFoldersAreErrors) {
  TempDir tmp;
  const fs::path run = tmp.path() / "hand";
  write_text(run / "metrics.jsonl",
             "{\"step\": 10, \"loss\": 2.0, \"lr\": 0.001, \"grad_norm\": 1.5}\n"
             "{\"step\": 20, \"loss\": 1.5, \"lr\": 0.002, \"grad_norm\": 1.2}\n"
             "{\"step\": 30, \"loss\": oops\n"
             "{\"step\": 40, \"loss\": 1.0, \"lr\": 0.002, \"grad_norm\": 0.9}\n"
             "{\"eval\": {\"fid\": {\"mean\": 3.5}, \"step\": 40}}\n");
  write_text(run / "pipeline.resolved.json", "{\"name\": \"<script>bad()</script>\", \"description\": \"a & b\"}\n");
  std::string log;
  ASSERT_EQ(run_command(kFlowkit + " report " + run.string(), &log), 0) << log;
  const std::string html = read_text(run / "report.html");
  EXPECT_THAT_MSG(html, "metrics.jsonl:3");  // the skipped line, named in the page
  EXPECT_THAT_MSG(html, "fid.mean");         // nested eval metrics, flattened
  EXPECT_THAT_MSG(html, "&lt;script&gt;bad()");
  EXPECT_EQ(html.find("<script>bad()"), std::string::npos);
  EXPECT_THAT_MSG(html, "data-key=\"grad_norm\"");

  log.clear();
  EXPECT_NE(run_command(kFlowkit + " report " + (tmp.path() / "missing").string(), &log), 0);
  EXPECT_THAT_MSG(log, "missing");
  fs::create_directories(tmp.path() / "empty");
  log.clear();
  EXPECT_NE(run_command(kFlowkit + " report " + (tmp.path() / "empty").string(), &log), 0);
  EXPECT_THAT_MSG(log, "metrics.jsonl");
}

TEST(Report, SweepFolderTablesItsPointsAndOverlaysItsRuns) {
  TempDir tmp;
  const fs::path sweep = tmp.path() / "sw";
  std::string results;
  for (int seed : {0, 1}) {
    const std::string name = "p_seed-" + std::to_string(seed);
    write_text(sweep / name / "metrics.jsonl", "{\"step\": 10, \"loss\": 2.0}\n{\"step\": 20, \"loss\": " +
                                                   std::to_string(1.0 + seed) + "}\n");
    results += "{\"point\": \"" + name + "\", \"run\": \"" + name +
               "\", \"settings\": {\"model.hidden\": 32}, \"seed\": " + std::to_string(seed) +
               ", \"eval\": null, \"train_seconds\": 1.5, \"metrics\": {\"energy_distance\": 0.0" + std::to_string(seed + 1) + "}}\n";
  }
  write_text(sweep / "results.jsonl", results);
  std::string log;
  ASSERT_EQ(run_command(kFlowkit + " report " + sweep.string(), &log), 0) << log;
  const std::string html = read_text(sweep / "report.html");
  EXPECT_THAT_MSG(html, "model.hidden");
  EXPECT_THAT_MSG(html, "energy_distance");
  EXPECT_THAT_MSG(html, "data-series=\"2\" data-key=\"loss\"");

  // A malformed results line is an error naming the file and line.
  write_text(sweep / "results.jsonl", results + "not json\n");
  log.clear();
  EXPECT_NE(run_command(kFlowkit + " report " + sweep.string(), &log), 0);
  EXPECT_THAT_MSG(log, "results.jsonl:3");
}
