// Entry point of the `crysbfn` plugin module (libcrysbfn.so): registers every component.
#include "crysbfn/cspnet.h"
#include "crysbfn/domain.h"
#include "crysbfn/losses_samplers.h"
#include "crysbfn/paths.h"
#include "flowkit/plugin.h"

static void register_all(flowkit::Registry& r) {
  using flowkit::Kind;
  r.add(Kind::domain, "crystal", &crysbfn::make_crystal_domain);
  r.add(Kind::path, "bfn", &crysbfn::make_bayesian_flow);
  r.add(Kind::path, "diffusion", &crysbfn::make_diffusion);
  r.add(Kind::model, "cspnet", &crysbfn::make_cspnet);
  r.add(Kind::loss, "bfn_loss", &crysbfn::make_bfn_loss);
  r.add(Kind::loss, "diffusion_loss", &crysbfn::make_diffusion_loss);
  r.add(Kind::solver, "bfn_sampler", &crysbfn::make_bfn_sampler);
  r.add(Kind::solver, "diffusion_sampler", &crysbfn::make_diffusion_sampler);
}

FLOWKIT_PLUGIN("crysbfn", "0.1.0", register_all)
