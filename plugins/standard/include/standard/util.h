// standard/util.h — parameter reading (with an optional recorder used by the manifest test)
// and random draws that respect the generator's device.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "flowkit/config.h"

namespace standard {

// One parameter read by a component factory: its key, JSON type, default and choices.
struct ParamRecord {
  std::string key;
  std::string type;            // integer | number | boolean | string | array
  bool has_default = false;
  nlohmann::json default_value;
  std::vector<std::string> choices;
};

// While an instance is alive on this thread, every param()/optional_param() call records
// what it read. Factories read all their parameters unconditionally, so building a
// component from an empty config lists its complete parameter set.
class ParamRecorder {
 public:
  ParamRecorder();
  ~ParamRecorder();
  ParamRecorder(const ParamRecorder&) = delete;
  ParamRecorder& operator=(const ParamRecorder&) = delete;
  const std::vector<ParamRecord>& records() const { return records_; }
  static void record(ParamRecord r);

 private:
  std::vector<ParamRecord> records_;
  ParamRecorder* previous_;
};

namespace detail {
template <class T>
const char* json_type() {
  if constexpr (std::is_same_v<T, bool>) return "boolean";
  else if constexpr (std::is_integral_v<T>) return "integer";
  else if constexpr (std::is_floating_point_v<T>) return "number";
  else if constexpr (std::is_same_v<T, std::string>) return "string";
  else return "array";
}
}  // namespace detail

// Optional numeric parameter with default and inclusive range.
template <class T>
T param(const flowkit::Config& cfg, const std::string& key, T fallback, flowkit::Range range = {}) {
  ParamRecorder::record({key, detail::json_type<T>(), true, nlohmann::json(fallback), {}});
  if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) return cfg.get<T>(key, fallback, range);
  else return cfg.get<T>(key, fallback);
}

// Optional string parameter restricted to `choices`.
std::string choice_param(const flowkit::Config& cfg, const std::string& key, const std::string& fallback,
                         const std::vector<std::string>& choices);

// Optional array of numbers without default (e.g. an explicit time grid).
std::optional<std::vector<double>> optional_number_array(const flowkit::Config& cfg, const std::string& key);
// Optional string without default.
std::optional<std::string> optional_string(const flowkit::Config& cfg, const std::string& key);

// Random draws made on the generator's device, then moved to `options.device()`.
torch::Tensor randn(torch::IntArrayRef size, torch::Generator& gen, const torch::TensorOptions& options);
torch::Tensor rand(torch::IntArrayRef size, torch::Generator& gen, const torch::TensorOptions& options);
torch::Tensor randint(int64_t high, torch::IntArrayRef size, torch::Generator& gen,
                      const torch::TensorOptions& options = torch::kLong);
torch::Tensor randperm(int64_t n, torch::Generator& gen);  // int64 on CPU

}  // namespace standard
