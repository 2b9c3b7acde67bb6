// Torch-free parts of the SDK: errors, Config, kind names, registry and component keys.
#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>

#include "flowkit/component.h"
#include "flowkit/config.h"
#include "flowkit/error.h"
#include "flowkit/progress.h"
#include "flowkit/registry.h"

namespace flowkit {

Error::Error(const std::string& message) : std::runtime_error(message) {}
Error::~Error() = default;

static std::string located(const std::string& file, const std::string& pointer, const std::string& msg) {
  std::string where = file.empty() ? std::string("<config>") : file;
  return where + ":" + (pointer.empty() ? "/" : pointer) + ": " + msg;
}

ConfigError::ConfigError(std::string file, std::string pointer, std::string message)
    : Error(located(file, pointer, message)),
      file_(std::move(file)),
      pointer_(std::move(pointer)),
      message_(std::move(message)) {}
ConfigError::~ConfigError() = default;

Component::~Component() = default;
Registry::~Registry() = default;

const std::array<KindInfo, 6>& kinds() {
  static const std::array<KindInfo, 6> table{{
      {Kind::domain, "domain", "flowkit::Domain", "flowkit/domain.h", false},
      {Kind::path, "path", "flowkit::Path", "flowkit/path.h", true},
      {Kind::model, "model", "flowkit::Model", "flowkit/model.h", false},
      {Kind::loss, "loss", "flowkit::Loss", "flowkit/loss.h", false},
      {Kind::solver, "solver", "flowkit::Solver", "flowkit/solver.h", false},
      // Last: it may use the domain, path and model; only sampling sees it.
      {Kind::guidance, "guidance", "flowkit::Guidance", "flowkit/guidance.h", true},
  }};
  return table;
}

const KindInfo& kind_info(Kind kind) {
  for (const auto& k : kinds())
    if (k.kind == kind) return k;
  throw Error("unknown component kind");
}

const char* kind_name(Kind kind) { return kind_info(kind).name; }

std::string kind_list() {
  std::string out;
  for (const auto& k : kinds()) out += (out.empty() ? "" : ", ") + std::string(k.name);
  return out;
}

bool parse_kind(const std::string& s, Kind* out) {
  for (const auto& k : kinds())
    if (s == k.name) {
      *out = k.kind;
      return true;
    }
  return false;
}

// JSON pointer escaping (RFC 6901).
static std::string escape_token(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

Config::Config(nlohmann::json value, std::string file, std::string pointer)
    : value_(std::move(value)), file_(std::move(file)), pointer_(std::move(pointer)) {
  if (!value_.is_object()) throw ConfigError(file_, pointer_, "expected an object, found " + std::string(value_.type_name()));
}

bool Config::has(const std::string& key) const { return value_.contains(key); }

std::string Config::pointer_to(const std::string& key) const { return pointer_ + "/" + escape_token(key); }

Config Config::child(const std::string& key) const {
  note_read(key);
  if (!has(key)) fail(key, "required section is missing");
  return Config(value_.at(key), file_, pointer_to(key));
}

void Config::fail(const std::string& key, const std::string& message) const {
  throw ConfigError(file_, pointer_to(key), message);
}

void Config::check_type(const std::string& key, const nlohmann::json& v, const char* expected) const {
  std::string e = expected;
  bool ok = e == "any" || (e == "boolean" && v.is_boolean()) || (e == "string" && v.is_string()) ||
            (e == "number" && v.is_number()) ||
            (e == "integer" && (v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>())));
  if (!ok) fail(key, "expected " + e + ", found " + std::string(v.type_name()) + " " + v.dump());
}

bool Config::is_infinity(const nlohmann::json& v) {
  if (!v.is_string()) return false;
  const std::string& s = v.get_ref<const std::string&>();
  return s == "inf" || s == "infinity" || s == "+inf";
}


namespace {
std::atomic<ProgressSink> g_progress_sink{nullptr};
}

ProgressSink set_progress_sink(ProgressSink sink) { return g_progress_sink.exchange(sink); }

Progress::Progress(std::string task, int64_t total)
    : task_(std::move(task)), total_(total), start_(std::chrono::steady_clock::now()), last_report_(start_) {}

void Progress::advance(int64_t n) {
  done_ += n;
  const ProgressSink sink = g_progress_sink.load();
  if (!sink) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_report_ < std::chrono::milliseconds(200)) return;
  last_report_ = now;
  sink(task_, done_, total_, std::chrono::duration<double>(now - start_).count(), false);
}

Progress::~Progress() {
  if (const ProgressSink sink = g_progress_sink.load())
    sink(task_, done_, total_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(), true);
}

}  // namespace flowkit
