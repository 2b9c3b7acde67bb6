// Entry point of the `pfgmpp` plugin module (libpfgmpp.so): PFGM++ (Xu et al., ICML 2023),
// Poisson flows in N+D dimensions. Components: pfgmpp.kernel (path, kernel.h), pfgmpp.edm,
// pfgmpp.resmlp, pfgmpp.exact_denoiser (models, models.h), pfgmpp.edm_loss (edm_loss.h),
// pfgmpp.heun (sampler, heun_sampler.h).
#include "flowkit/plugin.h"
#include "pfgmpp/edm_loss.h"
#include "pfgmpp/heun_sampler.h"
#include "pfgmpp/kernel.h"
#include "pfgmpp/models.h"

static void register_all(flowkit::Registry& r) {
  using flowkit::Kind;
  r.add(Kind::path, "kernel", &pfgmpp::make_kernel);
  r.add(Kind::model, "edm", &pfgmpp::make_edm);
  r.add(Kind::model, "resmlp", &pfgmpp::make_resmlp);
  r.add(Kind::model, "exact_denoiser", &pfgmpp::make_exact_denoiser);
  r.add(Kind::loss, "edm_loss", &pfgmpp::make_edm_loss);
  r.add(Kind::solver, "heun", &pfgmpp::make_heun);
}

FLOWKIT_PLUGIN("pfgmpp", "0.1.0", register_all)
