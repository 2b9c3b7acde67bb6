// flowkit/config.h — typed, located access to a component's JSON parameters.
//
// Each parameter is declared once, in the plugin's manifest (default, range, choices, doc).
// The host validates a pipeline against the manifests and fills in every default before a
// factory runs, so factories read values with get<T>(key) and never write a default, range
// or choice check of their own (cross-parameter checks excepted). A Config records the keys
// read; the conformance suite compares them with the manifest.
#pragma once
#include <nlohmann/json.hpp>

#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "flowkit/error.h"

namespace flowkit {

// A JSON object plus where it came from (file and JSON pointer), so that every error
// names both: "pipeline.json:/model/hidden: expected integer >= 1, found -3".
class Config {
 public:
  Config() = default;
  Config(nlohmann::json value, std::string file, std::string pointer);

  bool has(const std::string& key) const;
  const nlohmann::json& json() const { return value_; }
  const std::string& file() const { return file_; }
  const std::string& pointer() const { return pointer_; }
  std::string pointer_to(const std::string& key) const;
  // A nested object (a nested component's config); throws if absent.
  Config child(const std::string& key) const;

  // A declared value (present in every resolved config): throws ConfigError naming the key
  // when missing or of the wrong type. Floating-point values also read "inf".
  template <class T>
  T get(const std::string& key) const {
    note_read(key);
    if (!has(key)) fail(key, "required parameter is missing");
    return convert<T>(key);
  }
  // A declared parameter without a default: nullopt when absent or null.
  template <class T>
  std::optional<T> optional(const std::string& key) const {
    note_read(key);
    if (!has(key) || value_.at(key).is_null()) return std::nullopt;
    return convert<T>(key);
  }

  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

  // The keys read through get/optional/child so far (shared by copies of this Config).
  std::set<std::string> keys_read() const { return *reads_; }

 private:
  void note_read(const std::string& key) const { reads_->insert(key); }
  template <class T>
  T convert(const std::string& key) const {
    const auto& v = value_.at(key);
    if constexpr (std::is_floating_point_v<T>)
      if (is_infinity(v)) return std::numeric_limits<T>::infinity();
    check_type(key, v, type_name<T>());
    try {
      return v.get<T>();
    } catch (const std::exception& e) {
      fail(key, std::string("cannot convert: ") + e.what());
    }
  }
  template <class T>
  static const char* type_name() {
    if constexpr (std::is_same_v<T, bool>) return "boolean";
    else if constexpr (std::is_integral_v<T>) return "integer";
    else if constexpr (std::is_floating_point_v<T>) return "number";
    else if constexpr (std::is_same_v<T, std::string>) return "string";
    else return "any";
  }
  void check_type(const std::string& key, const nlohmann::json& v, const char* expected) const;
  static bool is_infinity(const nlohmann::json& v);

  nlohmann::json value_ = nlohmann::json::object();
  std::string file_, pointer_;
  std::shared_ptr<std::set<std::string>> reads_ = std::make_shared<std::set<std::string>>();
};

}  // namespace flowkit
