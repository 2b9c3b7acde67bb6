// The plugin loader against real plugins built by the suite (tests/plugins/): one good,
// and one for each way a plugin can be wrong.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "flowkit/core/plugin_host.h"
#include "flowkit/plugin.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace flowkit;
using namespace flowkit::core;

namespace {
std::string test_plugins(const std::string& variant) { return std::string(FLOWKIT_BINARY_DIR) + "/test_plugins/" + variant; }

SearchOptions only(const std::vector<std::string>& dirs) {
  SearchOptions o;
  o.plugin_paths = dirs;
  o.use_environment = false;
  o.use_default_dirs = false;
  return o;
}

Config component(const std::string& type, nlohmann::json extra = nlohmann::json::object()) {
  extra["type"] = type;
  return Config(extra, "test.json", "/model");
}

// Copies one built plugin folder to dir/name (to make duplicates, broken copies, ...).
fs::path copy_plugin(const std::string& variant, const fs::path& dir) {
  fs::path src = fs::path(test_plugins(variant)) / ("fk_" + variant);
  fs::path dst = dir / ("fk_" + variant);
  fs::create_directories(dst);
  fs::copy(src, dst, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  return dst;
}

bool mapped(const std::string& needle) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find(needle) != std::string::npos) return true;
  return false;
}
}  // namespace

TEST(Loader, GoodPluginLoadsLazilyAndBuildsComponents) {
  TempDir tmp;
  fs::path dir = tmp.path() / "lazy";
  copy_plugin("good", dir);
  PluginHost host(only({dir.string()}));
  ASSERT_EQ(host.plugins().size(), 1u);
  EXPECT_EQ(host.plugins()[0].name, "fk_good");
  EXPECT_EQ(host.plugins()[0].components.size(), 2u);
  auto spec = host.find("fk_good.thing");
  ASSERT_TRUE(spec) << spec.error();
  EXPECT_EQ((*spec)->kind, Kind::model);
  // Discovery read the manifest only: the library is not mapped yet.
  EXPECT_FALSE(host.is_loaded("fk_good"));
  EXPECT_FALSE(mapped(dir.string()));
  BuildContext ctx;
  // The torch-free test component is no flowkit::Model: the host checks the kind's interface.
  try {
    host.create(Kind::model, component("fk_good.thing"), ctx);
    FAIL() << "expected the interface check to fail";
  } catch (const ConfigError& e) {
    EXPECT_THAT_MSG(e.what(), "does not implement the flowkit::Model interface");
  }
  EXPECT_TRUE(host.is_loaded("fk_good"));
  EXPECT_TRUE(mapped(dir.string()));
}

TEST(Loader, FactoryThatThrowsBecomesAnErrorNamingTheComponent) {
  PluginHost host(only({test_plugins("good")}));
  BuildContext ctx;
  try {
    host.create(Kind::model, component("fk_good.thing", {{"explode", true}}), ctx);
    FAIL() << "expected an error";
  } catch (const ConfigError& e) {
    EXPECT_THAT_MSG(e.what(), "test.json:/model: component 'fk_good.thing' failed to build: thing exploded as asked");
  }
}

TEST(Loader, WrongKindIsRejected) {
  PluginHost host(only({test_plugins("good")}));
  BuildContext ctx;
  try {
    host.create(Kind::solver, component("fk_good.thing"), ctx);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_THAT_MSG(e.what(), "'fk_good.thing' is a model, expected a solver");
  }
}

TEST(Loader, WrongApiVersionIsRejectedBeforeRegistration) {
  PluginHost host(only({test_plugins("wrong_api")}));
  auto r = host.load("fk_wrong_api");
  ASSERT_FALSE(r);
  EXPECT_THAT_MSG(r.error(), "wrong plugin API version");
  EXPECT_THAT_MSG(r.error(), "expected " + std::to_string(FLOWKIT_API_MAJOR) + ".x with x <= " +
                                 std::to_string(FLOWKIT_API_MINOR) + ", found 99.0");
  EXPECT_THAT_MSG(r.error(), "libfk_wrong_api.so");
}

TEST(Loader, MissingEntrySymbol) {
  PluginHost host(only({test_plugins("no_entry")}));
  auto r = host.load("fk_no_entry");
  ASSERT_FALSE(r);
  EXPECT_THAT_MSG(r.error(), "has no entry symbol 'flowkit_plugin_entry'");
}

TEST(Loader, ManifestBinaryMismatchNamesBothLists) {
  PluginHost host(only({test_plugins("mismatch")}));
  auto r = host.load("fk_mismatch");
  ASSERT_FALSE(r);
  EXPECT_THAT_MSG(r.error(), "manifest declares [model thing, path other], library registers [model thing, solver undeclared]");
}

TEST(Loader, SameComponentRegisteredTwice) {
  PluginHost host(only({test_plugins("dup_register")}));
  auto r = host.load("fk_dup_register");
  ASSERT_FALSE(r);
  EXPECT_THAT_MSG(r.error(), "registers the same component twice: model 'thing'");
}

TEST(Loader, DuplicatePluginNamesBothLocations) {
  TempDir tmp;
  fs::path a = copy_plugin("good", tmp.path() / "a");
  fs::path b = copy_plugin("good", tmp.path() / "b");
  PluginHost host(only({(tmp.path() / "a").string(), (tmp.path() / "b").string()}));
  auto spec = host.find("fk_good.thing");
  ASSERT_FALSE(spec);
  EXPECT_THAT_MSG(spec.error(), "provided twice");
  EXPECT_THAT_MSG(spec.error(), (a / "plugin.json").string());
  EXPECT_THAT_MSG(spec.error(), (b / "plugin.json").string());
}

TEST(Loader, MissingLibraryFile) {
  TempDir tmp;
  fs::path dir = copy_plugin("good", tmp.path());
  fs::remove(dir / "libfk_good.so");
  PluginHost host(only({tmp.path().string()}));
  auto r = host.load("fk_good");
  ASSERT_FALSE(r);
  EXPECT_THAT_MSG(r.error(), "library file '" + (dir / "libfk_good.so").string() + "' does not exist");
}

TEST(Loader, NonLibraryFile) {
  TempDir tmp;
  fs::path dir = copy_plugin("good", tmp.path());
  std::ofstream(dir / "libfk_good.so", std::ios::trunc) << "this is not a shared object\n";
  PluginHost host(only({tmp.path().string()}));
  auto r = host.load("fk_good");
  ASSERT_FALSE(r);
  EXPECT_THAT_MSG(r.error(), "is not a shared object");
}

TEST(Loader, Sha256PinMismatchRefusesToLoad) {
  TempDir tmp;
  fs::path dir = copy_plugin("good", tmp.path());
  PluginHost host(only({tmp.path().string()}));
  std::string actual = sha256_file((dir / "libfk_good.so").string());
  ASSERT_EQ(actual.size(), 64u);
  host.pin_sha256("fk_good", std::string(64, '0'));
  auto r = host.load("fk_good");
  ASSERT_FALSE(r);
  EXPECT_THAT_MSG(r.error(), "sha256 mismatch");
  EXPECT_THAT_MSG(r.error(), "found " + actual);
  host.pin_sha256("fk_good", actual);
  EXPECT_TRUE(host.load("fk_good"));
}

TEST(Loader, Sha256OfKnownInput) {
  TempDir tmp;
  std::ofstream(tmp.path() / "abc") << "abc";
  EXPECT_EQ(sha256_file((tmp.path() / "abc").string()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::ofstream(tmp.path() / "empty");
  EXPECT_EQ(sha256_file((tmp.path() / "empty").string()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Loader, UnknownComponentSuggestsTheClosest) {
  PluginHost host(only({test_plugins("good")}));
  auto spec = host.find("fk_good.thingg");
  ASSERT_FALSE(spec);
  EXPECT_THAT_MSG(spec.error(), "unknown component 'fk_good.thingg' (did you mean 'fk_good.thing'?)");
  auto plugin = host.find("fk_goood.thing");
  ASSERT_FALSE(plugin);
  EXPECT_THAT_MSG(plugin.error(), "did you mean 'fk_good.thing'?");
}

TEST(Loader, MalformedManifestIsReportedAndSkipped) {
  TempDir tmp;
  fs::create_directories(tmp.path() / "broken");
  std::ofstream(tmp.path() / "broken" / "plugin.json") << "{\"schema\": \"flowkit.plugin/1\", \"name\": 3}";
  copy_plugin("good", tmp.path());
  PluginHost host(only({tmp.path().string()}));
  EXPECT_EQ(host.plugins().size(), 1u);
  ASSERT_EQ(host.manifest_errors().size(), 1u);
  EXPECT_THAT_MSG(host.manifest_errors()[0], "broken/plugin.json:/name: expected string, found number");
}

TEST(Loader, SearchOrderCliThenEnvironment) {
  TempDir tmp;
  ScopedEnv env("FLOWKIT_PLUGIN_PATH", (tmp.path() / "e1").string() + ":" + (tmp.path() / "e2").string());
  SearchOptions o;
  o.plugin_paths = {"/cli/one", "/cli/two"};
  o.use_default_dirs = false;
  auto dirs = plugin_search_dirs(o);
  std::vector<std::string> expected = {"/cli/one", "/cli/two", (tmp.path() / "e1").string(), (tmp.path() / "e2").string()};
  EXPECT_EQ(dirs, expected);
  o.use_default_dirs = true;
  auto with_default = plugin_search_dirs(o);
  ASSERT_EQ(with_default.size(), 5u);
  EXPECT_EQ(with_default.back(), std::string(FLOWKIT_BINARY_DIR) + "/plugins");  // build tree (not installed)
}

TEST(Loader, DebugTraceNamesDirectoriesAndDecisions) {
  ScopedEnv env("FLOWKIT_DEBUG_PLUGINS", "1");
  testing::internal::CaptureStderr();
  PluginHost host(only({test_plugins("wrong_api"), "/no/such/dir"}));
  (void)host.load("fk_wrong_api");
  std::string trace = testing::internal::GetCapturedStderr();
  EXPECT_THAT_MSG(trace, "scanning " + test_plugins("wrong_api"));
  EXPECT_THAT_MSG(trace, "scanning /no/such/dir");
  EXPECT_THAT_MSG(trace, "not a directory, skipped");
  EXPECT_THAT_MSG(trace, "found plugin 'fk_wrong_api'");
  EXPECT_THAT_MSG(trace, "loading fk_wrong_api");
}
