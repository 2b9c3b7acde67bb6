// Entry point of the `dm1` plugin module (libdm1.so): registers its six components.
#include "dm1/dm1.h"
#include "flowkit/plugin.h"

static void register_all(flowkit::Registry& r) {
  using flowkit::Kind;
  r.add(Kind::domain, "bireach", &dm1::make_domain);
  r.add(Kind::model, "policy", &dm1::make_policy);
  r.add(Kind::loss, "meanflow", &dm1::make_meanflow_loss);
  r.add(Kind::loss, "regression", &dm1::make_regression_loss);
  r.add(Kind::solver, "meanflow_sampler", &dm1::make_meanflow_sampler);
  r.add(Kind::solver, "direct", &dm1::make_direct_sampler);
}

FLOWKIT_PLUGIN("dm1", "0.1.0", register_all)
