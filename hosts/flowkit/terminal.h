// How the command line talks to a person: "error:" and "warning:" prefixes, coloured only when
// stderr is a terminal (and NO_COLOR is unset).
#pragma once
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace flowkit::host {

inline bool stderr_has_colour() {
  static const bool on = isatty(STDERR_FILENO) && !std::getenv("NO_COLOR");
  return on;
}

// "error: message" (bold red prefix on a terminal).
inline void print_error(const std::string& message, const char* label = "error", const char* colour = "1;31") {
  if (stderr_has_colour()) fmt::print(stderr, "\033[{}m{}:\033[0m {}\n", colour, label, message);
  else fmt::print(stderr, "{}: {}\n", label, message);
}
inline void print_warning(const std::string& message) { print_error(message, "warning", "1;33"); }

// Exit codes of every flowkit command: 0 ok, 1 runtime failure, 2 usage or validation error.
constexpr int kOk = 0, kRuntime = 1, kUsage = 2;

}  // namespace flowkit::host
