// Boost.DLL renamed boost::dll::import to import_symbol in 1.76; this shim hides the difference.
#pragma once
#include <boost/dll/import.hpp>
#include <boost/dll/shared_library.hpp>
#include <boost/version.hpp>

namespace flowkit::core::dll {
template <class T>
auto import_symbol(const boost::dll::shared_library& lib, const char* name) {
#if BOOST_VERSION >= 107600
  return boost::dll::import_symbol<T>(lib, name);
#else
  return boost::dll::import<T>(lib, name);
#endif
}
}  // namespace flowkit::core::dll
