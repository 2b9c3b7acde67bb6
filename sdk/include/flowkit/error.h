// flowkit/error.h — the one exception type flowkit throws, and a small Expected<T>.
#pragma once
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace flowkit {

// Every error flowkit raises on purpose. `what()` is a complete, user-facing message:
// it names the file and JSON pointer (for configuration errors) or the library path
// (for plugin errors).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message);
  ~Error() override;
};

// Raised for a configuration problem; carries where it happened.
class ConfigError : public Error {
 public:
  ConfigError(std::string file, std::string pointer, std::string message);
  ~ConfigError() override;
  const std::string& file() const { return file_; }
  const std::string& pointer() const { return pointer_; }
  const std::string& message() const { return message_; }

 private:
  std::string file_, pointer_, message_;
};

// Expected<T>: a value or an error message (LLVM's Expected, without the enforcement).
template <class T>
class Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}
  static Expected failure(std::string message) { return Expected(Failure{std::move(message)}); }
  explicit operator bool() const { return v_.index() == 0; }
  T& operator*() { return std::get<0>(v_); }
  const T& operator*() const { return std::get<0>(v_); }
  T* operator->() { return &std::get<0>(v_); }
  const std::string& error() const { return std::get<1>(v_).message; }
  // The value, or throws flowkit::Error with the message.
  T& value() {
    if (!*this) throw Error(error());
    return **this;
  }

 private:
  struct Failure { std::string message; };
  explicit Expected(Failure f) : v_(std::move(f)) {}
  std::variant<T, Failure> v_;
};

}  // namespace flowkit
