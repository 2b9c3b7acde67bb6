// Registration of every component, and the array-parameter helper.
#include <torch/torch.h>

#include <cmath>

#include "flowkit/component.h"
#include "standard/affine_path.h"
#include "standard/cfm_loss.h"
#include "standard/domains.h"
#include "standard/guidance.h"
#include "standard/image_folder.h"
#include "standard/mlp.h"
#include "standard/ode_solvers.h"
#include "standard/tensor_domain.h"
#include "standard/unet.h"
#include "standard/register.h"
#include "standard/util.h"

namespace standard {

// ---- parameters -------------------------------------------------------------------------

std::optional<std::vector<double>> optional_number_array(const flowkit::Config& cfg, const std::string& key) {
  std::optional<nlohmann::json> v = cfg.optional<nlohmann::json>(key);
  if (!v) return std::nullopt;
  if (!v->is_array()) cfg.fail(key, std::string("expected an array of numbers, found ") + v->type_name());
  std::vector<double> out;
  for (const auto& e : *v) {
    if (!e.is_number()) cfg.fail(key, "expected an array of numbers, found an element " + e.dump());
    out.push_back(e.get<double>());
  }
  return out;
}

std::vector<int64_t> positive_integers(const flowkit::Config& cfg, const std::string& key, const nlohmann::json& v) {
  if (!v.is_array()) cfg.fail(key, std::string("expected an array of positive integers, found ") + v.type_name() + " " + v.dump());
  std::vector<int64_t> out;
  for (const auto& e : v) {
    const bool whole = e.is_number_integer() || (e.is_number_float() && std::floor(e.get<double>()) == e.get<double>());
    if (!whole || e.get<double>() < 1 || e.get<double>() > 2147483647.0)
      cfg.fail(key, "expected an array of positive integers (below 2^31), found the element " + e.dump() + " in " + v.dump());
    out.push_back(e.get<int64_t>());
  }
  return out;
}

// ---- registration -----------------------------------------------------------------------

void register_components(flowkit::Registry& r) {
  using flowkit::Kind;
  r.add(Kind::domain, "toy2d", &make_toy2d);
  r.add(Kind::domain, "digits", &make_digits);
  r.add(Kind::domain, "tensor", &make_tensor_domain);
  r.add(Kind::domain, "image_folder", &make_image_folder);
  r.add(Kind::path, "affine", &make_affine_path);
  r.add(Kind::model, "mlp", &make_mlp);
  r.add(Kind::model, "unet", &make_unet);
  r.add(Kind::loss, "cfm", &make_cfm);
  r.add(Kind::solver, "euler", &make_euler);
  r.add(Kind::solver, "midpoint", &make_midpoint);
  r.add(Kind::solver, "heun", &make_heun);
  r.add(Kind::solver, "rk4", &make_rk4);
  r.add(Kind::solver, "dopri5", &make_dopri5);
  r.add(Kind::solver, "euler_maruyama", &make_euler_maruyama);
  r.add(Kind::guidance, "cfg", &make_cfg);
  r.add(Kind::guidance, "box", &make_box_guidance);
}

}  // namespace standard
