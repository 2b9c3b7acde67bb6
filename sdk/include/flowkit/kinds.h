// flowkit/kinds.h — the six kinds of component, in one table: name, interface, build order
// and pipeline key. The manifest reader, pipeline validation, the session and conformance
// all iterate this table; nothing else lists the kinds.
#pragma once
#include <array>
#include <string>

namespace flowkit {

// Values are part of the ABI (Registry::add): new kinds are appended.
enum class Kind { domain, path, model, loss, solver, guidance };

struct KindInfo {
  Kind kind;
  const char* name;            // "domain": the manifest's "kind" and the pipeline's section key
  const char* interface_name;  // "flowkit::Domain"
  const char* header;          // "flowkit/domain.h"
  bool optional;               // a pipeline may leave this section out (a flow needs no path)
};

// In build order: a component may use those before it (BuildContext).
const std::array<KindInfo, 6>& kinds();
const KindInfo& kind_info(Kind kind);
const char* kind_name(Kind kind);
bool parse_kind(const std::string& s, Kind* out);
// "domain, path, model, loss, solver, guidance" (for messages).
std::string kind_list();

class Component;
// Whether `c` implements the interface of `kind` (flowkit::Domain for Kind::domain, ...).
bool implements_interface(Kind kind, const Component& c);

}  // namespace flowkit
