// CrysBFN and DiffCSP-style losses and samplers, and their factories.
#include "crysbfn/losses_samplers.h"

#include <cmath>

#include "crysbfn/domain.h"
#include "flowkit/capability.h"
#include "flowkit/error.h"
#include "flowkit/random.h"

namespace crysbfn {

namespace {

torch::Tensor wrap_angle(const torch::Tensor& a) { return torch::remainder(a + M_PI, 2 * M_PI) - M_PI; }

torch::Tensor vocabulary_tensor(const std::vector<int64_t>& vocabulary, const torch::Device& device) {
  return torch::tensor(vocabulary, torch::kLong).to(device);
}

// One-hot of atomic numbers over the model's vocabulary; an element outside it is an error.
torch::Tensor one_hot_types(const torch::Tensor& types, const std::vector<int64_t>& vocabulary, const std::string& who) {
  torch::Tensor vocab = vocabulary_tensor(vocabulary, types.device());
  torch::Tensor hit = types.unsqueeze(1) == vocab.unsqueeze(0);
  if (!hit.any(1).all().item<bool>())
    throw flowkit::Error(who + ": an atom type outside the model's vocabulary of " + std::to_string(vocabulary.size()) +
                         " training elements");
  return hit.to(torch::kFloat);
}

torch::Tensor step_indices(int64_t low, int64_t high, int64_t n, torch::Generator& gen, const torch::Device& device) {
  return flowkit::random::randint(low, high, {n}, gen, torch::TensorOptions().dtype(torch::kLong).device(device));
}

const BayesianFlowSchedule& bayesian_flow(const flowkit::Path* path, const std::string& who) {
  return flowkit::require_capability<BayesianFlowSchedule>(path, who, "the Bayesian flow as the pipeline's path (path type crysbfn.bfn)");
}

const DiffusionSchedule& diffusion(const flowkit::Path* path, const std::string& who) {
  return flowkit::require_capability<DiffusionSchedule>(path, who, "the diffusion as the pipeline's path (path type crysbfn.diffusion)");
}

}  // namespace

// ---- CrysBFN loss ----------------------------------------------------------------------------

flowkit::LossOutput BfnLoss::compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                                     torch::Generator& gen) {
  const std::string who = "crysbfn.bfn_loss";
  CrystalNetwork net = crystal_network(model, who);
  const BayesianFlowSchedule& flow = bayesian_flow(path, who);
  const auto& fo = flow.options();
  const int64_t N = fo.steps;
  torch::Tensor frac = batch.at("frac"), lattice = batch.at("lattice"), types = batch.at("types");
  torch::Tensor num = batch.at("num_atoms");
  const auto device = frac.device();
  const int64_t B = num.size(0), A = frac.size(0);
  torch::Tensor bidx = atom_batch_index(num).to(device);

  torch::Tensor i = step_indices(1, N + 1, B, gen, device);  // step index, network sees belief i-1
  torch::Tensor t = (i - 1).to(torch::kFloat) / static_cast<double>(N);
  torch::Tensor i_atoms = i.index_select(0, bidx), t_atoms = t.index_select(0, bidx);

  CrystalInput in;
  in.num_atoms = num;
  in.batch = bidx;
  in.t = t;
  torch::Tensor x_angle, m;
  if (fo.periodic) {
    x_angle = frac.to(torch::kDouble) * (2 * M_PI) - M_PI;
    auto [mean, conc] = circular_flow_sample(x_angle, (i_atoms - 1).unsqueeze(1).expand({A, 3}), flow.schedule().alpha, gen);
    m = mean;
    in.frac = ((mean + M_PI) / (2 * M_PI)).to(torch::kFloat);
    in.accuracy = flow.accuracy_input(conc).to(torch::kFloat);
  } else {
    m = flow.gaussian_flow(frac, t_atoms, gen);
    in.frac = m;
    in.accuracy = flow.euclidean_accuracy_input(t_atoms);
  }
  torch::Tensor lat_norm = lattice.reshape({B, 9}) / fo.lattice_std;
  in.lattice = flow.gaussian_flow(lat_norm, t, gen).reshape({B, 3, 3});
  torch::Tensor e_x;
  if (net.type_head) {
    e_x = one_hot_types(types, net.vocabulary, who);
    in.type_probs = flow.type_flow(e_x, t_atoms, gen);
  } else {
    in.types = types;
  }
  CrystalOutput out = net.predict(in);

  torch::Tensor coord_loss;
  if (fo.periodic) {
    torch::Tensor xhat = m.to(torch::kFloat) + out.coord;  // a residual on the circle
    torch::Tensor d = wrap_angle(x_angle.to(torch::kFloat) - xhat);
    torch::Tensor dist = o_.cosine ? 2 * (1 - torch::cos(d)) : d * d;
    coord_loss = (flow.circular_weight(i_atoms).to(torch::kFloat).unsqueeze(1) * dist).mean();
  } else {
    torch::Tensor d = frac - (m + out.coord);
    coord_loss = (flow.gaussian_weight(i_atoms).to(torch::kFloat).unsqueeze(1) * d * d).mean();
  }
  torch::Tensor ld = out.lattice.reshape({B, 9}) - lat_norm;
  torch::Tensor lattice_loss = (flow.gaussian_weight(i).to(torch::kFloat).unsqueeze(1) * ld * ld).mean();
  torch::Tensor loss = o_.cost_coord * coord_loss + o_.cost_lattice * lattice_loss;
  flowkit::LossOutput result;
  result.logs["loss_coord"] = coord_loss.item<double>();
  result.logs["loss_lattice"] = lattice_loss.item<double>();
  if (net.type_head) {
    // Continuous-time discrete-BFN loss K beta1 t |e_x - p|^2 at t = (i-1)/N (the code's
    // default is the 200-sample Monte Carlo discrete-time KL; see docs/methods/crysbfn.md).
    const double K = static_cast<double>(net.vocabulary.size());
    torch::Tensor p = torch::softmax(out.type_logits, 1);
    torch::Tensor type_loss = (K * fo.beta1_type * t_atoms * (e_x - p).pow(2).sum(1)).mean();
    loss = loss + o_.cost_type * type_loss;
    result.logs["loss_type"] = type_loss.item<double>();
  }
  result.loss = loss;
  return result;
}

// ---- CrysBFN sampler -------------------------------------------------------------------------

namespace {
// The composition to sample for: CSP gives types, generation only the atom counts.
struct Composition {
  torch::Tensor types, num_atoms, batch;
  bool given_types = false;
};
Composition composition(const flowkit::SampleRequest& req, const std::string& who) {
  Composition c;
  if (!req.cond.has("num_atoms"))
    throw flowkit::Error(who + ": the sampling conditions carry no 'num_atoms' (use the crysbfn.crystal domain)");
  const auto device = req.options.device();
  c.num_atoms = req.cond.at("num_atoms").to(device, torch::kLong);
  if (c.num_atoms.size(0) != req.n)
    throw flowkit::Error(who + ": " + std::to_string(c.num_atoms.size(0)) + " compositions for " + std::to_string(req.n) + " samples");
  c.batch = atom_batch_index(c.num_atoms);
  c.given_types = req.cond.has("types");
  if (c.given_types) c.types = req.cond.at("types").to(device, torch::kLong);
  return c;
}

flowkit::SolveResult crystal_result(const torch::Tensor& lattice, const torch::Tensor& frac, const torch::Tensor& types,
                                    int64_t nfe) {
  flowkit::SolveResult r;
  r.x = lattice_to_parameters(lattice);
  r.nfe = nfe;
  r.fields.set("lattice", lattice);
  r.fields.set("frac", frac);
  r.fields.set("types", types);
  return r;
}
}  // namespace

flowkit::SolveResult BfnSampler::sample(flowkit::Model& model, const flowkit::Path* path, const flowkit::SampleRequest& req,
                                        torch::Generator& gen) const {
  const std::string who = "crysbfn.bfn_sampler";
  torch::NoGradGuard no_grad;
  CrystalNetwork net = crystal_network(model, who);
  const BayesianFlowSchedule& flow = bayesian_flow(path, who);
  const auto& fo = flow.options();
  const int64_t N = fo.steps;
  const int64_t n = req.steps > 0 ? req.steps : (steps_ > 0 ? steps_ : N);
  if (n > N)
    throw flowkit::Error(who + ": " + std::to_string(n) + " steps asked of a flow trained with N = " + std::to_string(N) +
                         " (at most N; fewer stride over the indices)");
  Composition comp = composition(req, who);
  if (!comp.given_types && !net.type_head)
    throw flowkit::Error(who + ": generation (no 'types' given) needs a model with type_input 'distribution'");
  if (comp.given_types && net.type_head)
    throw flowkit::Error(who + ": a model with type_input 'distribution' generates the types; for CSP (types given) use "
                               "type_input 'atomic_number'");
  const auto device = req.options.device();
  const int64_t B = req.n, A = comp.batch.size(0), K = static_cast<int64_t>(net.vocabulary.size());
  auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(device);
  // Belief indices b_0 = 0 < b_1 < ... < b_{n-1} < N visited by the n network calls.
  std::vector<int64_t> b(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) b[static_cast<size_t>(k)] = static_cast<int64_t>(std::llround(double(k) * N / n));

  torch::Tensor m, conc, mu_f, probs;
  if (fo.periodic) {
    m = flowkit::random::rand({A, 3}, gen, torch::TensorOptions().dtype(torch::kDouble).device(device)) * (2 * M_PI) - M_PI;
    conc = torch::zeros({A, 3}, m.options());
  } else {
    mu_f = torch::zeros({A, 3}, f32);
  }
  torch::Tensor mu_l = torch::zeros({B, 3, 3}, f32);
  if (!comp.given_types) probs = torch::full({A, K}, 1.0 / double(K), f32);

  CrystalInput in;
  in.num_atoms = comp.num_atoms;
  in.batch = comp.batch;
  in.types = comp.types;
  torch::Tensor xhat, lhat, p_out;
  for (int64_t k = 0; k < n; ++k) {
    const double t = double(b[static_cast<size_t>(k)]) / double(N);
    in.t = torch::full({B}, t, f32);
    if (fo.periodic) {
      in.frac = ((m + M_PI) / (2 * M_PI)).to(torch::kFloat);
      in.accuracy = flow.accuracy_input(conc).to(torch::kFloat);
    } else {
      in.frac = mu_f;
      in.accuracy = torch::full({A, 3}, t, f32);
    }
    in.lattice = mu_l;
    if (!comp.given_types) in.type_probs = probs;
    CrystalOutput out = net.predict(in);
    xhat = fo.periodic ? wrap_angle(m.to(torch::kFloat) + out.coord) : mu_f + out.coord;
    lhat = out.lattice;
    if (!comp.given_types) p_out = torch::softmax(out.type_logits, 1);
    if (k + 1 == n) break;
    // End-back: redraw the next belief from the Bayesian-flow distribution given the prediction.
    const int64_t next = b[static_cast<size_t>(k + 1)];
    const double tn = double(next) / double(N);
    if (fo.periodic) {
      std::tie(m, conc) = circular_flow_sample(xhat, torch::full({A, 3}, next, torch::TensorOptions().dtype(torch::kLong).device(device)),
                                               flow.schedule().alpha, gen);
    } else {
      mu_f = flow.gaussian_flow(xhat, torch::full({A}, tn, f32), gen);
    }
    mu_l = flow.gaussian_flow(lhat.reshape({B, 9}), torch::full({B}, tn, f32), gen).reshape({B, 3, 3});
    if (!comp.given_types) probs = flow.type_flow(p_out, torch::full({A}, tn, f32), gen);
  }
  torch::Tensor frac = fo.periodic ? torch::remainder((xhat + M_PI) / (2 * M_PI), 1.0) : torch::remainder(xhat, 1.0);
  torch::Tensor types = comp.types;
  if (!comp.given_types) {
    torch::Tensor idx = torch::multinomial(p_out.to(gen.device()), 1, true, gen).reshape({-1}).to(device);
    types = vocabulary_tensor(net.vocabulary, device).index_select(0, idx);
  }
  return crystal_result(lhat * fo.lattice_std, frac, types, n);
}

// ---- DiffCSP-style loss and sampler -----------------------------------------------------------

flowkit::LossOutput DiffusionLoss::compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                                           torch::Generator& gen) {
  const std::string who = "crysbfn.diffusion_loss";
  CrystalNetwork net = crystal_network(model, who);
  const DiffusionSchedule& flow = diffusion(path, who);
  if (net.type_head) throw flowkit::Error(who + ": the diffusion baseline is for CSP (type_input 'atomic_number')");
  const int64_t T = flow.options().steps;
  torch::Tensor frac = batch.at("frac"), lattice = batch.at("lattice"), num = batch.at("num_atoms");
  const auto device = frac.device();
  const int64_t B = num.size(0), A = frac.size(0);
  torch::Tensor bidx = atom_batch_index(num).to(device);
  torch::Tensor s = step_indices(1, T + 1, B, gen, device);
  torch::Tensor abar = flow.alpha_bar().to(device).index_select(0, s).to(torch::kFloat).reshape({B, 1, 1});
  torch::Tensor s_atoms = s.index_select(0, bidx);
  torch::Tensor sigma = flow.sigma().to(device).index_select(0, s_atoms).to(torch::kFloat).unsqueeze(1);
  torch::Tensor norm = flow.sigma_norm().to(device).index_select(0, s_atoms).to(torch::kFloat).unsqueeze(1);

  torch::Tensor eps_l = flowkit::random::randn({B, 3, 3}, gen, lattice.options().device(device));
  torch::Tensor eps_f = flowkit::random::randn({A, 3}, gen, frac.options().device(device));
  CrystalInput in;
  in.num_atoms = num;
  in.batch = bidx;
  in.types = batch.at("types");
  in.t = s.to(torch::kFloat) / static_cast<double>(T);
  in.lattice = torch::sqrt(abar) * lattice + torch::sqrt(1 - abar) * eps_l;
  in.frac = torch::remainder(frac + sigma * eps_f, 1.0);
  in.accuracy = torch::zeros({A, 3}, frac.options());
  torch::Tensor target = WrappedDiffusion::wrapped_normal_score(sigma * eps_f, sigma.expand({A, 3})) / torch::sqrt(norm);
  CrystalOutput out = net.predict(in);
  torch::Tensor lattice_loss = (out.lattice - eps_l).pow(2).mean();
  torch::Tensor coord_loss = (out.coord - target).pow(2).mean();
  flowkit::LossOutput r;
  r.loss = cost_lattice_ * lattice_loss + cost_coord_ * coord_loss;
  r.logs["loss_coord"] = coord_loss.item<double>();
  r.logs["loss_lattice"] = lattice_loss.item<double>();
  return r;
}

std::vector<int64_t> diffusion_grid(int64_t T, int64_t n, bool leading) {
  std::vector<int64_t> s(static_cast<size_t>(n) + 1, 0);
  for (int64_t k = 0; k < n; ++k) {
    if (leading) s[static_cast<size_t>(k)] = 1 + (n - 1 - k) * (T / n);
    else s[static_cast<size_t>(k)] = n == 1 ? T : static_cast<int64_t>(std::llround(T - double(k) * double(T - 1) / double(n - 1)));
  }
  return s;
}

flowkit::SolveResult DiffusionSampler::sample(flowkit::Model& model, const flowkit::Path* path, const flowkit::SampleRequest& req,
                                              torch::Generator& gen) const {
  const std::string who = "crysbfn.diffusion_sampler";
  torch::NoGradGuard no_grad;
  CrystalNetwork net = crystal_network(model, who);
  const DiffusionSchedule& flow = diffusion(path, who);
  const int64_t T = flow.options().steps;
  const int64_t n = std::min(req.steps > 0 ? req.steps : steps_, T);
  Composition comp = composition(req, who);
  if (!comp.given_types) throw flowkit::Error(who + ": the diffusion baseline does CSP only (the conditions carry no 'types')");
  const auto device = req.options.device();
  const int64_t B = req.n, A = comp.batch.size(0);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(device);
  auto draw = [&](std::vector<int64_t> shape) { return flowkit::random::randn(shape, gen, f32); };
  const std::vector<int64_t> s = diffusion_grid(T, n, leading_grid_);
  auto abar = flow.alpha_bar().to(torch::kCPU).contiguous();
  auto sig = flow.sigma().to(torch::kCPU).contiguous();
  auto nrm = flow.sigma_norm().to(torch::kCPU).contiguous();
  const double* AB = abar.data_ptr<double>();
  const double* SG = sig.data_ptr<double>();
  const double* NR = nrm.data_ptr<double>();

  torch::Tensor L = draw({B, 3, 3});
  torch::Tensor F = flowkit::random::rand({A, 3}, gen, f32);
  CrystalInput in;
  in.num_atoms = comp.num_atoms;
  in.batch = comp.batch;
  in.types = comp.types;
  in.accuracy = torch::zeros({A, 3}, f32);
  int64_t nfe = 0;
  auto score = [&](const torch::Tensor& frac, int64_t si) {
    in.frac = frac;
    in.lattice = L;
    in.t = torch::full({B}, double(si) / double(T), f32);
    CrystalOutput out = net.predict(in);
    ++nfe;
    return out;
  };
  for (int64_t k = 0; k < n; ++k) {
    const int64_t si = s[static_cast<size_t>(k)], sn = s[static_cast<size_t>(k + 1)];
    if (corrector_) {  // Langevin on the coordinates at the current noise level
      CrystalOutput c = score(F, si);
      const double step = step_lr_ * std::pow(SG[si] / SG[1], 2);
      F = F + step * c.coord * std::sqrt(NR[si]);
      if (si > 1) F = F + std::sqrt(2 * step) * draw({A, 3});  // DiffCSP: no noise at the last step
      F = torch::remainder(F, 1.0);
    }
    CrystalOutput out = score(F, si);
    const double s2 = SG[si] * SG[si], n2 = SG[sn] * SG[sn];
    const double a_s = AB[si], a_n = AB[sn], ratio = a_s / a_n;
    torch::Tensor l0 = (L - std::sqrt(1 - a_s) * out.lattice) / std::sqrt(a_s);
    if (deterministic_) {
      // DDIM (eta = 0) on both: coordinates F0_hat = F + sigma^2 s_hat (Tweedie), then
      // F' = F0_hat + (sigma'/sigma)(F - F0_hat); the lattice through its L0_hat and eps_hat.
      F = torch::remainder(F + (s2 - SG[si] * SG[sn]) * out.coord * std::sqrt(NR[si]), 1.0);
      L = std::sqrt(a_n) * l0 + std::sqrt(1 - a_n) * out.lattice;
      continue;
    }
    F = F + (s2 - n2) * out.coord * std::sqrt(NR[si]);
    if (sn > 0) F = F + std::sqrt(n2 * (s2 - n2) / s2) * draw({A, 3});
    F = torch::remainder(F, 1.0);
    // DDPM posterior q(L_sn | L_si, L0_hat) for any stride.
    torch::Tensor mean = std::sqrt(a_n) * (1 - ratio) / (1 - a_s) * l0 + std::sqrt(ratio) * (1 - a_n) / (1 - a_s) * L;
    L = sn > 0 ? mean + std::sqrt((1 - a_n) / (1 - a_s) * (1 - ratio)) * draw({B, 3, 3}) : mean;
  }
  return crystal_result(L, F, comp.types, nfe);
}

// ---- factories ---------------------------------------------------------------------------------

BfnLossOptions bfn_loss_options(const flowkit::Config& cfg) {
  BfnLossOptions o;
  o.cost_coord = cfg.get<double>("cost_coord");
  o.cost_lattice = cfg.get<double>("cost_lattice");
  o.cost_type = cfg.get<double>("cost_type");
  o.cosine = cfg.get<std::string>("coord_distance") == "cosine";
  return o;
}

std::unique_ptr<flowkit::Component> make_bfn_loss(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<BfnLoss>(bfn_loss_options(cfg));
}

std::unique_ptr<flowkit::Component> make_diffusion_loss(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  const double cost_coord = cfg.get<double>("cost_coord");
  return std::make_unique<DiffusionLoss>(cost_coord, cfg.get<double>("cost_lattice"));
}

std::unique_ptr<flowkit::Component> make_bfn_sampler(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<BfnSampler>(cfg.get<int64_t>("steps"));
}

std::unique_ptr<flowkit::Component> make_diffusion_sampler(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  const int64_t steps = cfg.get<int64_t>("steps");
  const bool corrector = cfg.get<bool>("corrector");
  const double step_lr = cfg.get<double>("step_lr");
  const bool leading = cfg.get<std::string>("grid") == "leading";
  return std::make_unique<DiffusionSampler>(steps, corrector, step_lr, cfg.get<bool>("deterministic"), leading);
}

}  // namespace crysbfn
