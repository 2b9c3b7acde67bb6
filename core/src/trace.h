// FLOWKIT_DEBUG_PLUGINS=1 traces discovery and loading to stderr.
#pragma once
#include <fmt/format.h>

#include <cstdio>

namespace flowkit::core {
bool debug_plugins_enabled();

template <class... A>
void trace(fmt::format_string<A...> f, A&&... a) {
  if (debug_plugins_enabled()) fmt::print(stderr, "[flowkit plugins] {}\n", fmt::format(f, std::forward<A>(a)...));
}
}  // namespace flowkit::core
