// flowkit/capability.h — optional features of a component, queried instead of downcast.
//
// A capability is a small interface (flowkit/capabilities/*.h) that a component may
// implement besides its kind's interface. Other components ask for it by type:
//   if (auto* inv = flowkit::capability<flowkit::InvertibleModel>(model)) ...
// which also looks through wrappers that delegate (Component::capability_delegate). No
// component names another plugin's concrete class.
#pragma once
#include <string>
#include <vector>

#include "flowkit/component.h"
#include "flowkit/error.h"

namespace flowkit {

template <class Cap>
Cap* capability(Component& c) {
  for (Component* p = &c; p; p = p->capability_delegate())
    if (auto* cap = dynamic_cast<Cap*>(p)) return cap;
  return nullptr;
}
template <class Cap>
const Cap* capability(const Component& c) {
  return capability<Cap>(const_cast<Component&>(c));  // the query itself mutates nothing
}
template <class Cap>
const Cap* capability(const Component* c) {
  return c ? capability<Cap>(*c) : nullptr;
}

// The capability or a flowkit::Error: "<who> needs <what>".
template <class Cap>
Cap& require_capability(Component& c, const std::string& who, const std::string& what) {
  if (auto* cap = capability<Cap>(c)) return *cap;
  throw Error(who + " needs " + what);
}
template <class Cap>
const Cap& require_capability(const Component* c, const std::string& who, const std::string& what) {
  if (auto* cap = capability<Cap>(c)) return *cap;
  throw Error(who + " needs " + what);
}

// Names of the SDK capabilities `c` offers (directly or through its delegate), e.g.
// {"ode_integrator", "velocity_conversions"}: what `flowkit describe` and conformance list.
std::vector<std::string> capability_names(const Component& c);

}  // namespace flowkit
