// What every fuzz target shares: the input as text, and the one rule they check — a parser
// may refuse its input only with flowkit::Error (a message naming the file); any other
// exception, crash, sanitizer report, hang or runaway allocation is a finding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <unistd.h>

#include "flowkit/error.h"

namespace flowkit::fuzz {

inline std::string text(const uint8_t* data, size_t size) { return std::string(reinterpret_cast<const char*>(data), size); }

template <class F>
void refuses_only_with_flowkit_errors(F&& parse) {
  try {
    parse();
  } catch (const flowkit::Error&) {
    // a located, user-facing refusal: the expected outcome for bad input
  }
}

// Some readers take a path (they map or stream the file themselves): the input is written to
// one scratch file per process, on tmpfs where there is one.
inline std::string scratch_file(const std::string& name, const std::string& bytes) {
  static const std::string dir = [] {
    std::ifstream probe("/dev/shm/.");
    return std::string(probe ? "/dev/shm/" : "/tmp/");
  }();
  const std::string path = dir + "flowkit_fuzz_" + std::to_string(::getpid()) + "_" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

}  // namespace flowkit::fuzz
