// standard/register.h — registers every component of the `standard` plugin.
#pragma once
#include "flowkit/registry.h"

namespace standard {
// domains toy2d, digits; path affine; model mlp; loss cfm;
// solvers euler, midpoint, heun, rk4, dopri5, euler_maruyama.
void register_components(flowkit::Registry& registry);
}  // namespace standard
