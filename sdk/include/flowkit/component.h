// flowkit/component.h — the common base of everything a plugin creates.
#pragma once
#include <string>

namespace flowkit {

// The five kinds of component a pipeline is made of.
enum class Kind { domain, path, model, loss, solver };

const char* kind_name(Kind kind);        // "domain", ...
bool parse_kind(const std::string& s, Kind* out);

// Base class of all components. Its out-of-line destructor lives in libflowkit_sdk.so,
// so there is one typeinfo for every interface and dynamic_cast works across plugins.
class Component {
 public:
  virtual ~Component();
};

}  // namespace flowkit
