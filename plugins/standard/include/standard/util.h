// standard/util.h — reading array parameters (an explicit time grid, a shape), and turning a
// data error of a factory into a located config error.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "flowkit/config.h"
#include "flowkit/error.h"

namespace standard {

// A declared array parameter without default: nullopt when absent or null.
std::optional<std::vector<double>> optional_number_array(const flowkit::Config& cfg, const std::string& key);
// An array of positive integers (whole-valued numbers count, as Config::get<int64_t> reads
// them); `v` is the parameter's value.
std::vector<int64_t> positive_integers(const flowkit::Config& cfg, const std::string& key, const nlohmann::json& v);

// Runs `make` (a component's constructor reading data files); a flowkit::Error it throws
// becomes a ConfigError at `key`, so the message names the pipeline file and the setting.
template <class F>
auto located_at(const flowkit::Config& cfg, const std::string& key, F&& make) -> decltype(make()) {
  try {
    return make();
  } catch (const flowkit::ConfigError&) {
    throw;
  } catch (const flowkit::Error& e) {
    cfg.fail(key, e.what());
  }
}

}  // namespace standard
