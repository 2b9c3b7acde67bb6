// flowkit — the command-line host. This binary does not link LibTorch: the metadata commands
// (plugins, describe, validate, completion, new-plugin, --help, --version) read manifests and
// JSON only and answer at once; train, sample, eval, run and conformance hand a request to
// libflowkit_cli_runtime.so, loaded on demand (runtime.cpp).
// Exit codes: 0 ok, 1 runtime failure, 2 usage or validation error.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <boost/dll/shared_library.hpp>

#include <filesystem>
#include <functional>
#include <iostream>
#include <map>

#include "completion.h"
#include "describe.h"
#include "flowkit/core/pipeline.h"
#include "flowkit/core/plugin_catalog.h"
#include "flowkit/version.h"
#include "new_plugin.h"
#include "report.h"
#include "results_table.h"
#include "sweep.h"
#include "runtime_request.h"
#include "terminal.h"

using namespace flowkit;
using namespace flowkit::host;

#ifndef FLOWKIT_INSTALL_LIBDIR
#define FLOWKIT_INSTALL_LIBDIR "lib"
#endif

namespace {

// An error in how a command was called: reported with that command's usage line.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "flowkit validate <pipeline> [<overrides>...] [--plugin-path DIR]..." from CLI11's own
// description of the command, so it cannot drift from the options.
std::string usage_line(const CLI::App& cmd) {
  std::string line = "flowkit";
  if (cmd.get_parent()) line += " " + cmd.get_name();
  std::string flags;
  for (const CLI::Option* o : cmd.get_options()) {
    if (o->get_name() == "--help" || o->get_name() == "-h") continue;
    if (!o->nonpositional()) {
      std::string name = "<" + o->get_name() + ">" + (o->get_expected_max() > 1 ? "..." : "");
      line += " " + (o->get_required() ? name : "[" + name + "]");
    } else {
      std::string name = o->get_name(false, false);
      if (!o->get_type_name().empty()) name += " " + o->get_type_name();  // flags have no type name
      flags += " [" + name + "]";
    }
  }
  if (!cmd.get_parent() && !cmd.get_subcommands([](const CLI::App*) { return true; }).empty()) line += " <command>";
  return line + flags;
}

void print_usage(const CLI::App& cmd) {
  fmt::print(stderr, "usage: {}\n", usage_line(cmd));
  if (cmd.get_parent()) fmt::print(stderr, "       (flowkit {} --help for more)\n", cmd.get_name());
  else fmt::print(stderr, "       (flowkit --help for the commands)\n");
}

// The subcommand named on the command line, for a parse error's usage line.
const CLI::App* named_subcommand(const CLI::App& app, int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    for (const CLI::App* s : app.get_subcommands([](const CLI::App*) { return true; }))
      if (s->get_name() == argv[i]) return s;
  return &app;
}

int call_runtime(const RuntimeRequest& request) {
  namespace fs = std::filesystem;
  const std::string name = "libflowkit_cli_runtime.so";
  std::error_code ec;
  const fs::path bin = fs::canonical("/proc/self/exe", ec).parent_path();
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("FLOWKIT_CLI_RUNTIME")) candidates.push_back(env);
  candidates.push_back(bin / ".." / FLOWKIT_INSTALL_LIBDIR / name);
  candidates.push_back(bin / ".." / "lib" / name);
  for (const auto& path : candidates) {
    if (!fs::is_regular_file(path, ec)) continue;
    // Never unloaded: LibTorch does not survive dlclose (pytorch#46171). Held by a static,
    // so that leak checkers see it as kept rather than lost.
    static boost::dll::shared_library* lib = nullptr;
    lib = new boost::dll::shared_library();
    try {
      lib->load(path.string());
    } catch (const std::exception& e) {
      throw std::runtime_error("cannot load the flowkit runtime '" + path.string() + "': " + e.what());
    }
    if (!lib->has(FLOWKIT_CLI_RUNTIME_ENTRY))
      throw std::runtime_error("'" + path.string() + "' has no " FLOWKIT_CLI_RUNTIME_ENTRY "; is it from another flowkit version?");
    return lib->get<RuntimeEntry>(FLOWKIT_CLI_RUNTIME_ENTRY)(to_json(request).dump().c_str());
  }
  std::vector<std::string> tried;
  for (const auto& c : candidates) tried.push_back(c.string());
  throw std::runtime_error(fmt::format("the flowkit runtime ({}) is not installed beside this binary; looked at {}", name,
                                       fmt::join(tried, ", ")));
}

int cmd_plugins(const core::PluginCatalog& catalog) {
  fmt::print("search path:\n");
  for (const auto& d : catalog.search_dirs()) fmt::print("  {}\n", d);
  for (const auto& m : catalog.plugins()) {
    fmt::print("\n{} {}  (API {}.{}, {})\n  {}\n", m.name, m.version, m.api_major, m.api_minor, m.library_path(), m.summary);
    for (const auto& c : m.components) fmt::print("  {:<7} {:<28} {}\n", kind_name(c.kind), c.type(), c.summary);
  }
  for (const auto& e : catalog.manifest_errors()) print_warning(e);
  if (catalog.plugins().empty()) fmt::print("\nno plugins found\n");
  return kOk;
}

// What `describe` can describe, when it is given nothing.
void list_describable(const core::PluginCatalog& catalog) {
  fmt::print("flowkit describe <component> describes one of these (or --markdown: all of them):\n\n");
  fmt::print("host sections\n");
  for (const auto& s : core::host_sections()) fmt::print("  {:<36} {}\n", s.name, s.summary);
  for (const auto& k : kinds()) {
    std::vector<const core::ComponentSpec*> of_kind;
    for (const auto& m : catalog.plugins())
      for (const auto& c : m.components)
        if (c.kind == k.kind) of_kind.push_back(&c);
    if (of_kind.empty()) continue;
    fmt::print("\n{}s\n", k.name);
    for (const auto* c : of_kind) fmt::print("  {:<36} {}\n", c->type(), c->summary);
  }
}

int cmd_describe(const core::PluginCatalog& catalog, const std::string& type, bool markdown) {
  if (markdown) {
    fmt::print("<!-- generated by `flowkit describe --markdown`; do not edit by hand -->\n\n## Host sections\n\n");
    for (const auto& s : core::host_sections()) fmt::print("{}", describe_markdown(s));
    for (const auto& m : catalog.plugins()) {
      fmt::print("## Plugin `{}` {}\n\n{}\n\n", m.name, m.version, m.summary);
      for (const auto& c : m.components) fmt::print("{}", describe_markdown(c));
    }
    return kOk;
  }
  if (type.empty()) return list_describable(catalog), kOk;
  for (const auto& s : core::host_sections())
    if (s.name == type) return fmt::print("{}", describe_text(s)), kOk;
  auto spec = catalog.find(type);
  if (!spec) throw UsageError(spec.error());
  fmt::print("{}", describe_text(**spec));
  return kOk;
}

int cmd_validate(const core::PluginCatalog& catalog, const RuntimeRequest& r) {
  auto v = core::validate_pipeline_file(r.pipeline, catalog, r.overrides);
  if (!v.ok()) {
    print_error(fmt::format("{} problem(s) in {}:\n{}", v.problems.size(), r.pipeline, v.report()));
    return kUsage;
  }
  fmt::print("{}\n", v.pipeline.resolved.dump(2));
  fmt::print(stderr, "{}: valid\n", r.pipeline);
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flowkit " FLOWKIT_VERSION " — flow-based generative models with plugins"};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--plugin-path, -v, -q) may follow the subcommand too
  RuntimeRequest r;
  app.add_option("--plugin-path", r.plugin_paths, "extra plugin directory (repeatable; searched first)")->type_name("DIR");
  app.add_flag("-v,--verbose", r.verbose, "debug logging");
  app.add_flag("-q,--quiet", r.quiet, "warnings and errors only");
  app.set_version_flag("--version", FLOWKIT_VERSION);

  auto* plugins = app.add_subcommand("plugins", "list plugins and their components (reads manifests only)");
  std::string type;
  bool markdown = false;
  auto* describe = app.add_subcommand("describe", "parameters, defaults and docs of a component (none: list them)");
  describe->add_option("component", type, "component type <plugin>.<component>, or train/sample/eval");
  describe->add_flag("--markdown", markdown, "every component as Markdown tables (docs/components.md)");

  auto* conformance = app.add_subcommand("conformance", "run the interface and capability checks on plugins (all found, or those named)");
  conformance->add_option("plugins", r.plugins, "plugin names (default: every plugin on the search path)");

  const char* overrides_help = "overrides section.key=value (e.g. train.steps=500 model.hidden=64), checked like the file";
  auto* validate = app.add_subcommand("validate", "check a pipeline completely and print the resolved config");
  validate->add_option("pipeline", r.pipeline, "pipeline JSON")->required();
  validate->add_option("overrides", r.overrides, overrides_help);
  struct RunCommand { const char* name; const char* help; bool trains; CLI::App* cmd = nullptr; };
  RunCommand runs[] = {{"train", "train the model of a pipeline", true},
                       {"sample", "generate samples from the latest checkpoint", false},
                       {"eval", "compute the pipeline's metrics from the latest checkpoint", false},
                       {"run", "train, then sample, then evaluate", true}};
  for (auto& c : runs) {
    c.cmd = app.add_subcommand(c.name, c.help);
    c.cmd->add_option("pipeline", r.pipeline, "pipeline JSON")->required();
    c.cmd->add_option("overrides", r.overrides, overrides_help);
    c.cmd->add_option("--runs-dir", r.runs_dir, "parent of run directories")->capture_default_str()->type_name("DIR");
    c.cmd->add_option("--name", r.run_name, "run name (default: the pipeline's name)")->type_name("NAME");
    if (c.trains) {
      c.cmd->add_flag("--resume", r.resume, "continue from the run's last checkpoint");
      c.cmd->add_option("--stop-at", r.stop_at, "stop at this step with a checkpoint (continue later with --resume)")->type_name("STEP");
    } else {
      c.cmd->add_option("--checkpoint", r.checkpoint, "checkpoint file (default: the run's last)")->type_name("FILE");
      if (std::string(c.name) == "eval")
        c.cmd->add_option("--label", r.eval_label, "store the metrics as evals/LABEL.json instead of eval.json")
            ->type_name("LABEL")
            ->check([](const std::string& l) {
              return l.find_first_of("/\\") == std::string::npos && !l.empty() && l[0] != '.' ? "" : "a label is a file name: no '/', not starting with '.'";
            });
    }
  }

  SweepOptions sweep_options;
  auto* sweep = app.add_subcommand("sweep", "run a grid of overrides x seeds, each point a run of its own; continues where it stopped");
  sweep->add_option("sweep", sweep_options.file, "sweep JSON (docs/experiments.md)")->required();
  sweep->add_option("-j,--jobs", sweep_options.jobs, "runs at a time (default: the file's \"jobs\", else 1)")->type_name("N")
      ->check(CLI::PositiveNumber);
  sweep->add_option("--runs-dir", sweep_options.runs_dir, "parent of the sweep folder (default: the file's \"runs_dir\", else runs)")
      ->type_name("DIR");
  sweep->add_flag("--dry-run", sweep_options.dry_run, "print every command the sweep would run, run nothing");
  TableOptions table_options;
  auto* table = app.add_subcommand("table", "a sweep's results.jsonl as a Markdown/CSV table: mean and interval over seeds");
  std::string update_doc;
  bool check_doc = false;
  table->add_option("results", table_options.file, "results.jsonl of a sweep");
  table->add_option("--rows", table_options.rows, "row key(s): a swept setting, any pipeline key, seed, eval, point, name (point without its seed)")
      ->type_name("KEY");
  table->add_option("--update", update_doc, "regenerate every <!-- flowkit table ... --> block of a Markdown file")->type_name("DOC.md");
  table->add_flag("--check", check_doc, "with --update: change nothing, exit 1 if a block is stale");
  table->add_option("--cols", table_options.cols, "column key(s) (default: one column per metric)")->type_name("KEY");
  table->add_option("--metric", table_options.metrics, "metric(s) to show (default: all)")->type_name("NAME");
  table->add_option("--where", table_options.where, "keep lines with key=value (repeatable)")->type_name("KEY=VALUE");
  table->add_option("--format", table_options.format, "md or csv")->capture_default_str()->check(CLI::IsMember({"md", "csv"}));
  table->add_option("--interval", table_options.interval, "ci95 (Student t), sem, std, none, or wilson (rates pooled over seeds)")
      ->capture_default_str()->check(CLI::IsMember({"ci95", "sem", "std", "none", "wilson"}));
  table->add_option("--count", table_options.count, "with --interval wilson: the metric holding each line's number of trials")
      ->type_name("METRIC");

  std::vector<std::string> report_paths;
  std::string report_output;
  auto* report = app.add_subcommand("report", "one self-contained HTML page about a run, or comparing runs or a sweep");
  report->add_option("runs", report_paths, "run directories, or a sweep folder")->required()->type_name("DIR");
  report->add_option("-o,--output", report_output, "the page (default: <run>/report.html; needed for several runs)")->type_name("FILE");

  std::string shell;
  auto* completion = app.add_subcommand("completion", "print a shell completion script (bash or zsh)");
  completion->add_option("shell", shell, "bash or zsh")->required();
  NewPluginRequest np;
  np.dir = ".";
  auto* new_plugin = app.add_subcommand("new-plugin", "write a buildable out-of-tree plugin to start from");
  new_plugin->add_option("name", np.name, "plugin name ([a-z][a-z0-9_]*)")->required();
  new_plugin->add_option("--kind", np.kinds, "component kinds to generate (repeatable; default: all five)")->type_name("KIND");
  new_plugin->add_option("--dir", np.dir, "parent folder of the new plugin folder")->capture_default_str()->type_name("DIR");
  new_plugin->add_flag("--force", np.force, "write into an existing, non-empty folder");
  // `flowkit __complete WORD... CURRENT`, used by the completion scripts: the words are the
  // line being typed, so they are not parsed as this call's own options.
  if (argc >= 2 && std::string(argv[1]) == "__complete") {
    std::vector<std::string> words(argv + 2, argv + argc);
    core::SearchOptions search;  // a plugin path on the line being completed counts, as it will when it runs
    for (size_t i = 0; i + 1 < words.size(); ++i)
      if (words[i] == "--plugin-path") search.plugin_paths.push_back(words[i + 1]);
    try {
      core::PluginCatalog catalog(search);
      for (const auto& c : complete(app, catalog, words)) fmt::print("{}\n", c);
    } catch (const std::exception&) {  // completion never prints errors into the terminal line
    }
    return kOk;
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    print_error(e.what());
    print_usage(*named_subcommand(app, argc, argv));
    return kUsage;
  }

  const CLI::App* active = &app;
  try {
    if (*completion) return active = completion, fmt::print("{}", completion_script(shell)), kOk;
    if (*new_plugin) {
      active = new_plugin;
      std::vector<std::string> written;
      try {
        written = write_new_plugin(np);
      } catch (const PluginFolderExists& e) {
        throw UsageError(e.what());
      }
      for (const auto& f : written) fmt::print("wrote {}\n", f);
      fmt::print("\nnext: cmake -S {0}/{1} -B {0}/{1}/build -DCMAKE_PREFIX_PATH=<flowkit prefix> && cmake --build {0}/{1}/build"
                 " && ctest --test-dir {0}/{1}/build\n", np.dir, np.name);
      return kOk;
    }
    for (auto& c : runs)
      if (*c.cmd) return active = c.cmd, r.command = c.name, call_runtime(r);
    if (*conformance) return active = conformance, r.command = "conformance", call_runtime(r);

    if (*report) return active = report, fmt::print("report: {}\n", write_report(report_paths, report_output)), kOk;
    if (*table) {
      active = table;
      if (!update_doc.empty()) {
        const int changed = update_doc_tables(update_doc, check_doc);
        fmt::print(stderr, "{}: {} table(s) {}\n", update_doc, changed, check_doc ? "stale" : "regenerated");
        return check_doc && changed > 0 ? kRuntime : kOk;
      }
      if (table_options.file.empty() || table_options.rows.empty())
        throw UsageError("give a results.jsonl and --rows (or --update DOC.md)");
      std::string warnings;
      fmt::print("{}", render_table(table_options, &warnings));
      if (!warnings.empty()) print_warning(warnings);
      return kOk;
    }
    core::SearchOptions search;
    search.plugin_paths = r.plugin_paths;
    core::PluginCatalog catalog(search);
    if (*sweep) {
      active = sweep;
      sweep_options.plugin_paths = r.plugin_paths;
      return run_sweep(sweep_options, catalog);
    }
    if (*plugins) return active = plugins, cmd_plugins(catalog);
    if (*describe) return active = describe, cmd_describe(catalog, type, markdown);
    if (*validate) return active = validate, cmd_validate(catalog, r);
    return kUsage;
  } catch (const UsageError& e) {
    print_error(e.what());
    print_usage(*active);
    return kUsage;
  } catch (const std::invalid_argument& e) {
    print_error(e.what());
    print_usage(*active);
    return kUsage;
  } catch (const ConfigError& e) {
    print_error(e.what());
    return kUsage;
  } catch (const std::exception& e) {
    print_error(e.what());
    return kRuntime;
  }
}
