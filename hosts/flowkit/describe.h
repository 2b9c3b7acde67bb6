// Human-readable and Markdown descriptions of components, for `flowkit describe` and docs.
#pragma once
#include <string>

#include "flowkit/core/manifest.h"

namespace flowkit::host {
std::string describe_text(const core::ComponentSpec& spec);
std::string describe_markdown(const core::ComponentSpec& spec);
}  // namespace flowkit::host
