// The conformance suite's contracts (internal to libflowkit_core; see flowkit/core/conformance.h).
#pragma once
#include <string>

#include "flowkit/component.h"
#include "flowkit/registry.h"

namespace flowkit {
class Domain;
class Path;
class Model;
class Loss;
class Solver;
class Guidance;
}  // namespace flowkit

namespace flowkit::core::contracts {

void domain_contract(Domain& d);
void path_contract(Path& p);
void model_contract(Model& m, const BuildContext& ctx);
void loss_contract(Loss& l, const BuildContext& ctx);
void solver_contract(Solver& s, const BuildContext& ctx);
void guidance_contract(Guidance& g, const BuildContext& ctx);
// The checks of the named capability (one of flowkit::capability_names()).
void capability_contract(const std::string& name, Component& c, const BuildContext& ctx);

}  // namespace flowkit::core::contracts
