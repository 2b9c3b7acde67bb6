// The `flowkit` command as users run it: exit codes, generated docs, and the SDK as a third
// party uses it: install flowkit into a temporary prefix, build
// sdk/examples/ring out of tree with find_package(flowkit), drop the plugin into a plugin
// directory and run a pipeline that mixes it with the bundled plugins. The other commands run
// on the test plugins (tests/plugins/flows, tests/plugins/steer); the tests that need the
// bundled plugins skip in a build without them (-DFLOWKIT_BUILD_PLUGINS=OFF).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace fs = std::filesystem;

TEST(SdkExample, OutOfTreePluginBuildsLoadsAndRuns) {
  // sdk/examples/ring/pipeline.json takes its path, model, loss and solver from the bundled plugins.
  if (!build_has_bundled_plugins()) GTEST_SKIP() << "built without the bundled plugins (FLOWKIT_BUILD_PLUGINS=OFF)";
  TempDir tmp;
  const std::string cmake = FLOWKIT_CMAKE_COMMAND;
  fs::path prefix = tmp.path() / "prefix";
  std::string log;
  ASSERT_EQ(run_command(cmake + " --install " FLOWKIT_BINARY_DIR " --prefix " + prefix.string(), &log), 0) << log;
  ASSERT_TRUE(fs::exists(prefix / "lib/cmake/flowkit/flowkitConfig.cmake"));
  const fs::path installed_plugins = prefix / "lib/flowkit/plugins";
  ASSERT_TRUE(has_plugin_manifests(installed_plugins));

  fs::path build = tmp.path() / "ring-build";
  log.clear();
  ASSERT_EQ(run_command(cmake + " -S " FLOWKIT_SOURCE_DIR "/sdk/examples/ring -B " + build.string() +
                    " -G Ninja -DCMAKE_PREFIX_PATH=" + prefix.string(), &log), 0) << log;
  log.clear();
  ASSERT_EQ(run_command(cmake + " --build " + build.string(), &log), 0) << log;

  fs::path plugins = tmp.path() / "my_plugins";
  fs::create_directories(plugins);
  fs::copy(build / "plugins/ring", plugins / "ring", fs::copy_options::recursive);

  const std::string flowkit = (prefix / "bin/flowkit").string() + " --plugin-path " + plugins.string();
  log.clear();
  ASSERT_EQ(run_command(flowkit + " plugins", &log), 0) << log;
  EXPECT_THAT_MSG(log, "ring.circle");
  // A library found in the installed prefix (listed as <prefix>/bin/../lib/flowkit/plugins/<name>/...).
  EXPECT_THAT_MSG(log, "/bin/../lib/flowkit/plugins/");

  // A third party runs the conformance suite on its own plugin with the installed binary.
  log.clear();
  ASSERT_EQ(run_command(flowkit + " conformance ring", &log), 0) << log;
  EXPECT_THAT_MSG(log, "PASS ring.circle: reads exactly the parameters its manifest declares");
  EXPECT_THAT_MSG(log, "PASS ring.circle: domain contract");

  log.clear();
  int rc = run_command("cd " + tmp.path().string() + " && " + flowkit + " -q run " FLOWKIT_SOURCE_DIR "/sdk/examples/ring/pipeline.json", &log);
  ASSERT_EQ(rc, 0) << log;
  std::ifstream eval(tmp.path() / "runs/ring/eval.json");
  ASSERT_TRUE(eval.good()) << log;
  auto metrics = nlohmann::json::parse(eval);
  std::cout << "[ measured ] ring example after 1500 steps: " << metrics.dump() << "\n";
  // An untrained velocity (~0) leaves the N(0, I) prior: mean radius sqrt(pi/2) ~ 1.25 (error
  // ~0.75) and radius std ~0.65. Trained, the samples sit on the radius-2 circle.
  EXPECT_LT(metrics.at("radius_error").get<double>(), 0.15);
  EXPECT_LT(metrics.at("radius_std").get<double>(), 0.3);
  EXPECT_TRUE(fs::exists(tmp.path() / "runs/ring/samples/samples.npy"));
}

namespace {
const std::string kFlowkit = "env -u FLOWKIT_PLUGIN_PATH " FLOWKIT_BINARY_DIR "/bin/flowkit";
// The same, searching the test plugins first.
const std::string kFlowkitTest = kFlowkit + " --plugin-path " FLOWKIT_BINARY_DIR "/test_plugins/flows --plugin-path " FLOWKIT_BINARY_DIR
                                            "/test_plugins/steer";
const std::string kFlowPipeline = FLOWKIT_SOURCE_DIR "/tests/plugins/flows/pipeline.json";
}  // namespace

TEST(Cli, ExitCodes) {
  std::string out;
  EXPECT_EQ(run_command(kFlowkit + " --help", &out), 0);
  EXPECT_THAT_MSG(out, "validate");
  out.clear();
  EXPECT_EQ(run_command(kFlowkit + " no-such-command", &out), 2);
  out.clear();
  EXPECT_EQ(run_command(kFlowkitTest + " validate " + kFlowPipeline, &out), 0) << out;
  EXPECT_THAT_MSG(out, "\"beta2\": 0.999");
  out.clear();
  EXPECT_EQ(run_command(kFlowkitTest + " validate " FLOWKIT_SOURCE_DIR "/tests/data/bad_pipelines/many_errors.json", &out), 2);
  EXPECT_THAT_MSG(out, "4 problem(s)");
  EXPECT_THAT_MSG(out, "many_errors.json:/sample/count: expected integer >= 1, found 0");
  out.clear();
  EXPECT_EQ(run_command(kFlowkitTest + " describe fk_flows.couplng", &out), 2);
  EXPECT_THAT_MSG(out, "did you mean 'fk_flows.coupling'?");
  out.clear();
  TempDir tmp;
  // Sampling before training is a runtime failure with a clear message.
  EXPECT_EQ(run_command("cd " + tmp.path().string() + " && " + kFlowkitTest + " sample " + kFlowPipeline, &out), 1);
  EXPECT_THAT_MSG(out, "checkpoints/last.pt' does not exist; train first");
}

TEST(Cli, ComponentDocsAreGeneratedFromTheManifests) {
  // docs/components.md documents the bundled plugins, which the default search path finds.
  if (!build_has_bundled_plugins()) GTEST_SKIP() << "built without the bundled plugins (FLOWKIT_BUILD_PLUGINS=OFF)";
  std::string generated;
  ASSERT_EQ(run_command(kFlowkit + " describe --markdown", &generated), 0);
  std::ifstream in(FLOWKIT_SOURCE_DIR "/docs/components.md");
  std::string committed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(generated, committed) << "docs/components.md is stale: run `cmake --build build --target components_doc`";
}

TEST(Cli, RepeatedRunWithoutNameGetsAFreshDirectory) {
  TempDir tmp;
  const std::string pipeline = (tmp.path() / "tiny.json").string();
  std::ofstream(pipeline) << R"({"name": "tiny", "domain": {"type": "fk_flows.gauss2d"},
    "model": {"type": "fk_flows.coupling", "hidden": 4, "layers": 1}, "loss": {"type": "fk_flows.nll"},
    "solver": {"type": "fk_flows.latent_sampler"}, "train": {"steps": 2}, "sample": {"count": 10}})";
  std::string out;
  const std::string cmd = "cd " + tmp.path().string() + " && " + kFlowkitTest + " train " + pipeline;
  ASSERT_EQ(run_command(cmd, &out), 0) << out;
  ASSERT_EQ(run_command(cmd, &out), 0) << out;
  EXPECT_TRUE(fs::exists(tmp.path() / "runs/tiny/checkpoints/last.pt"));
  EXPECT_TRUE(fs::exists(tmp.path() / "runs/tiny-2/checkpoints/last.pt"));
  // With an explicit --name the existing run is protected instead.
  out.clear();
  EXPECT_EQ(run_command(cmd + " --name tiny", &out), 1);
  EXPECT_THAT_MSG(out, "already holds checkpoints; use --resume");
}

// Overrides on the command line: validated like the file, errors named by the override,
// recorded in the run's pipeline.resolved.json.
TEST(Cli, OverridesAreValidatedLikeTheFileAndRecorded) {
  std::string out;
  ASSERT_EQ(run_command(kFlowkitTest + " validate " + kFlowPipeline + " train.steps=7 model.offset=0.25 model.net.activation=silu", &out), 0) << out;
  const auto json_start = out.find('{');
  ASSERT_NE(json_start, std::string::npos) << out;
  nlohmann::json resolved = nlohmann::json::parse(out.substr(json_start, out.rfind('}') - json_start + 1));
  EXPECT_EQ(resolved["train"]["steps"], 7);
  EXPECT_EQ(resolved["model"]["offset"], 0.25);
  EXPECT_EQ(resolved["model"]["net"]["activation"], "silu");
  EXPECT_EQ(resolved["model"]["net"]["hidden"], 32);  // the file's value is kept

  out.clear();
  EXPECT_EQ(run_command(kFlowkitTest + " validate " + kFlowPipeline + " train.steps=abc model.net.hiden=3 trainsteps", &out), 2);
  EXPECT_THAT_MSG(out, "command line override 'train.steps=abc':/train/steps: expected integer, found string \"abc\"");
  EXPECT_THAT_MSG(out, "command line override 'model.net.hiden=3':/model/net/hiden: unknown key \"hiden\"");
  EXPECT_THAT_MSG(out, "did you mean 'hidden'?");
  EXPECT_THAT_MSG(out, "command line override 'trainsteps':/: expected section.key=value");

  TempDir tmp;
  out.clear();
  ASSERT_EQ(run_command("cd " + tmp.path().string() + " && " + kFlowkitTest + " -q run " + kFlowPipeline + " train.steps=3 sample.count=20", &out), 0) << out;
  std::ifstream in(tmp.path() / "runs/flow_nll/pipeline.resolved.json");
  nlohmann::json recorded = nlohmann::json::parse(in);
  EXPECT_EQ(recorded["train"]["steps"], 3);
  EXPECT_EQ(recorded["sample"]["count"], 20);
}

// The metadata commands must not map LibTorch (that is what makes them instant): neither as a
// link-time dependency of the binary nor loaded at run time. `train` does load it, which shows
// the run-time check can fail.
TEST(Cli, MetadataCommandsDoNotLoadLibTorch) {
  std::string ldd;
  ASSERT_EQ(run_command("ldd " FLOWKIT_BINARY_DIR "/bin/flowkit", &ldd), 0) << ldd;
  for (const char* lib : {"libtorch", "libc10", "libgomp", "libopenblas", "libdnnl", "libflowkit_core", "libflowkit_sdk"})
    EXPECT_EQ(ldd.find(lib), std::string::npos) << "bin/flowkit links " << lib << ":\n" << ldd;
  const std::string traced = "env LD_DEBUG=libs " + kFlowkitTest;
  for (const std::string& args : std::vector<std::string>{"plugins", "describe", "describe fk_flows.coupling", "describe --markdown", "--help",
                                 "--version", "validate " + kFlowPipeline, "completion bash"}) {
    std::string out;
    EXPECT_EQ(run_command(traced + " " + args, &out), 0) << args << "\n" << out.substr(0, 2000);
    EXPECT_EQ(out.find("libtorch_cpu"), std::string::npos) << "`flowkit " << args << "` loaded LibTorch";
    EXPECT_EQ(out.find("libflowkit_cli_runtime"), std::string::npos) << "`flowkit " << args << "` loaded the runtime";
  }
  std::string out;
  EXPECT_EQ(run_command("env LD_DEBUG=libs " + kFlowkit + " __complete --plugin-path " FLOWKIT_BINARY_DIR "/test_plugins/flows --plugin-path " FLOWKIT_BINARY_DIR "/test_plugins/steer train " + kFlowPipeline + " model.", &out), 0);
  EXPECT_THAT_MSG(out, "model.net.");
  EXPECT_EQ(out.find("libtorch_cpu"), std::string::npos) << "completion loaded LibTorch";
  TempDir tmp;
  out.clear();
  const std::string pipeline = (tmp.path() / "tiny.json").string();
  std::ofstream(pipeline) << R"({"name": "tiny", "domain": {"type": "fk_flows.gauss2d"},
    "model": {"type": "fk_flows.coupling", "hidden": 4, "layers": 1}, "loss": {"type": "fk_flows.nll"},
    "solver": {"type": "fk_flows.latent_sampler"}, "train": {"steps": 1}})";
  ASSERT_EQ(run_command("cd " + tmp.path().string() + " && " + traced + " -q train " + pipeline, &out), 0) << out.substr(0, 2000);
  EXPECT_THAT_MSG(out, "libflowkit_cli_runtime");
  EXPECT_THAT_MSG(out, "libtorch_cpu");
}

TEST(Cli, UsageErrorsEndWithTheCommandsUsageLine) {
  std::string out;
  EXPECT_EQ(run_command(kFlowkit + " validate", &out), 2);
  EXPECT_THAT_MSG(out, "error: pipeline is required");
  EXPECT_THAT_MSG(out, "usage: flowkit validate <pipeline> [<overrides>...]");
  out.clear();
  EXPECT_EQ(run_command(kFlowkit + " train p.json --no-such-option", &out), 2);
  EXPECT_THAT_MSG(out, "usage: flowkit train <pipeline> [<overrides>...] [--runs-dir DIR] [--name NAME] [--resume] [--stop-at STEP]");
  out.clear();
  EXPECT_EQ(run_command(kFlowkitTest + " describe fk_flows.nope", &out), 2);
  EXPECT_THAT_MSG(out, "usage: flowkit describe [<component>] [--markdown]");
  EXPECT_EQ(out.find("\033["), std::string::npos) << "colour codes written to a pipe:\n" << out;
  out.clear();
  EXPECT_EQ(run_command(kFlowkit + " completion fish", &out), 2);
  EXPECT_THAT_MSG(out, "unknown shell 'fish'; flowkit completes bash and zsh");
  out.clear();
  // Without an argument, describe lists what it can describe, by kind.
  EXPECT_EQ(run_command(kFlowkitTest + " describe", &out), 0) << out;
  EXPECT_THAT_MSG(out, "host sections\n  train");
  EXPECT_THAT_MSG(out, "models\n  fk_flows.coupling");
  EXPECT_THAT_MSG(out, "  fk_steer.steered");
}

namespace {
// What bash's completion function offers for `line` (the cursor at its end), one per line.
std::string bash_completions(const fs::path& dir, const std::string& line) {
  const fs::path script = dir / "flowkit.bash";
  if (!fs::exists(script)) {
    std::string text;
    EXPECT_EQ(run_command(kFlowkit + " completion bash > " + script.string(), &text), 0) << text;
  }
  std::ofstream(dir / "complete.sh") << "source " << script.string() << "\n"
                                     << "complete -p flowkit\n"
                                     << "COMP_LINE='" << line << "'; COMP_POINT=${#COMP_LINE}\n"
                                     << "_flowkit; printf '%s\\n' \"${COMPREPLY[@]}\"\n";
  std::string out;
  EXPECT_EQ(run_command("cd " + dir.string() + " && env -u FLOWKIT_PLUGIN_PATH bash " + (dir / "complete.sh").string(), &out), 0)
      << out;
  return out;
}
}  // namespace

TEST(Completion, BashCompletesCommandsTypesFilesAndOverrides) {
  TempDir tmp;
  std::ofstream(tmp.path() / "mine.json") << "{}";
  std::ofstream(tmp.path() / "notes.txt") << "";
  const std::string bin = FLOWKIT_BINARY_DIR "/bin/flowkit --plugin-path " FLOWKIT_BINARY_DIR
                          "/test_plugins/flows --plugin-path " FLOWKIT_BINARY_DIR "/test_plugins/steer";
  EXPECT_THAT_MSG(bash_completions(tmp.path(), bin + " va"), "complete -F _flowkit flowkit\nvalidate\n");
  EXPECT_THAT_MSG(bash_completions(tmp.path(), bin + " new-"), "\nnew-plugin\n");
  // Component types come from the manifests on the plugin path of the line itself.
  std::string types = bash_completions(tmp.path(), bin + " describe fk_flows.");
  EXPECT_THAT_MSG(types, "fk_flows.coupling\n");
  EXPECT_THAT_MSG(types, "fk_flows.latent_sampler\n");
  EXPECT_EQ(types.find("fk_steer"), std::string::npos) << types;
  EXPECT_THAT_MSG(bash_completions(tmp.path(), bin + " conformance fk_s"), "\nfk_steer\n");
  // The pipeline: JSON files and folders, not other files.
  std::string files = bash_completions(tmp.path(), bin + " run ");
  EXPECT_THAT_MSG(files, "mine.json");
  EXPECT_EQ(files.find("notes.txt"), std::string::npos) << files;
  // Overrides: sections, the keys of the component the pipeline names (nested ones too),
  // component types after "type=", choices after a choice parameter's "=".
  const std::string run = bin + " train " + kFlowPipeline + " ";
  EXPECT_THAT_MSG(bash_completions(tmp.path(), run + "mo"), "\nmodel.\n");
  EXPECT_THAT_MSG(bash_completions(tmp.path(), run + "model.o"), "\nmodel.offset=\n");
  std::string nested = bash_completions(tmp.path(), run + "model.net.");
  EXPECT_THAT_MSG(nested, "model.net.hidden=\n");
  EXPECT_THAT_MSG(nested, "model.net.layers=\n");
  EXPECT_THAT_MSG(bash_completions(tmp.path(), run + "train.ema"), "\ntrain.ema_decay=\n");
  // Bash splits words at '=': the candidates are what follows it.
  std::string solvers = bash_completions(tmp.path(), run + "solver.type=fk_flows.");
  EXPECT_THAT_MSG(solvers, "\nfk_flows.latent_sampler\n");
  EXPECT_THAT_MSG(solvers, "\nfk_flows.one_step\n");
  EXPECT_EQ(solvers.find("fk_flows.coupling"), std::string::npos) << solvers;
  EXPECT_THAT_MSG(bash_completions(tmp.path(), bin + " train p.json --re"), "\n--resume\n");
  // A checkpoint is any file, not only pipelines.
  std::ofstream(tmp.path() / "step_100.pt") << "";
  EXPECT_THAT_MSG(bash_completions(tmp.path(), bin + " sample mine.json --checkpoint st"), "\nstep_100.pt\n");
}
