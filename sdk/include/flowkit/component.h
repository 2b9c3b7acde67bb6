// flowkit/component.h — the common base of everything a plugin creates.
#pragma once
#include "flowkit/kinds.h"

namespace flowkit {

// Base class of all components. Its out-of-line destructor lives in libflowkit_sdk.so,
// so there is one typeinfo for every interface and capability, and dynamic_cast (behind
// flowkit::capability<T>) works across plugins.
class Component {
 public:
  virtual ~Component();
  // A wrapper that adds nothing to its inner component's capabilities (a steering or
  // logging wrapper) returns the inner one, so that capability<T>() finds them through it.
  // Wrappers that change what those capabilities mean (a preconditioner) return null.
  virtual Component* capability_delegate() { return nullptr; }
};

}  // namespace flowkit
