// standard/util.h — reading an optional array-of-numbers parameter (an explicit time grid).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "flowkit/config.h"

namespace standard {

// A declared array parameter without default: nullopt when absent or null.
std::optional<std::vector<double>> optional_number_array(const flowkit::Config& cfg, const std::string& key);

}  // namespace standard
