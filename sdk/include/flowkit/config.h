// flowkit/config.h — typed, located access to a component's JSON parameters.
#pragma once
#include <nlohmann/json.hpp>

#include <limits>
#include <optional>
#include <string>

#include "flowkit/error.h"

namespace flowkit {

// Inclusive numeric range used by Config::get's range check.
struct Range {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  static Range at_least(double lo) { return {lo, std::numeric_limits<double>::infinity()}; }
  static Range positive() { return {std::numeric_limits<double>::min(), std::numeric_limits<double>::infinity()}; }
};

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
  Config child(const std::string& key) const;  // throws if absent

  // Required value: throws ConfigError naming the key when missing or of the wrong type.
  template <class T>
  T get(const std::string& key) const {
    if (!has(key)) fail(key, "required parameter is missing");
    return convert<T>(key);
  }
  // Optional value with default.
  template <class T>
  T get(const std::string& key, T fallback) const {
    return has(key) ? convert<T>(key) : fallback;
  }
  // Optional numeric value with a default and an inclusive range check.
  template <class T>
  T get(const std::string& key, T fallback, Range range) const {
    T v = get<T>(key, fallback);
    if (!(static_cast<double>(v) >= range.lo && static_cast<double>(v) <= range.hi))
      fail(key, "value " + nlohmann::json(v).dump() + " is outside " + describe(range));
    return v;
  }

  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  template <class T>
  T convert(const std::string& key) const {
    const auto& v = value_.at(key);
    // "inf" is how JSON spells an infinite number (manifest params with "allow_inf").
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
  static std::string describe(Range r);

  nlohmann::json value_ = nlohmann::json::object();
  std::string file_, pointer_;
};

}  // namespace flowkit
