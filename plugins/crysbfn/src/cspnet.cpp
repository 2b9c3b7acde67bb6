// CSPNet-style network (DiffCSP's periodic-E(3)-invariant message passing) and its model
// component `crysbfn.cspnet`.
#include "crysbfn/cspnet.h"

#include <algorithm>
#include <cmath>

#include "crysbfn/domain.h"
#include "flowkit/capability.h"
#include "flowkit/error.h"

namespace crysbfn {

namespace nn = torch::nn;

torch::Tensor atom_batch_index(const torch::Tensor& num_atoms) {
  auto n = num_atoms.to(torch::kLong).reshape({-1});
  return torch::repeat_interleave(torch::arange(n.size(0), n.options()), n);
}

std::pair<torch::Tensor, torch::Tensor> crystal_edges(const torch::Tensor& num_atoms) {
  torch::Tensor n = num_atoms.to(torch::kCPU, torch::kLong).reshape({-1}).contiguous();
  auto N = n.accessor<int64_t, 1>();
  int64_t edges = 0;
  for (int64_t b = 0; b < n.size(0); ++b) edges += N[b] * N[b];
  torch::Tensor src = torch::empty({edges}, torch::kLong), dst = torch::empty({edges}, torch::kLong);
  auto S = src.accessor<int64_t, 1>();
  auto D = dst.accessor<int64_t, 1>();
  int64_t e = 0, offset = 0;
  for (int64_t b = 0; b < n.size(0); ++b) {
    for (int64_t i = 0; i < N[b]; ++i)
      for (int64_t j = 0; j < N[b]; ++j, ++e) S[e] = offset + i, D[e] = offset + j;
    offset += N[b];
  }
  return {src.to(num_atoms.device()), dst.to(num_atoms.device())};
}

torch::Tensor lattice_to_parameters(const torch::Tensor& lattice) {
  auto a = lattice.select(1, 0), b = lattice.select(1, 1), c = lattice.select(1, 2);
  auto la = a.norm(2, -1), lb = b.norm(2, -1), lc = c.norm(2, -1);
  auto angle = [](const torch::Tensor& u, const torch::Tensor& v, const torch::Tensor& lu, const torch::Tensor& lv) {
    auto cosine = ((u * v).sum(-1) / (lu * lv).clamp_min(1e-12)).clamp(-1 + 1e-7, 1 - 1e-7);
    return torch::acos(cosine) * (180.0 / M_PI);
  };
  return torch::stack({la, lb, lc, angle(b, c, lb, lc), angle(a, c, la, lc), angle(a, b, la, lb)}, 1);
}

torch::Tensor parameters_to_lattice(const torch::Tensor& p) {
  const double r = M_PI / 180.0;
  auto a = p.select(1, 0), b = p.select(1, 1), c = p.select(1, 2);
  auto al = p.select(1, 3) * r, be = p.select(1, 4) * r, ga = p.select(1, 5) * r;
  auto val = ((torch::cos(al) * torch::cos(be) - torch::cos(ga)) / (torch::sin(al) * torch::sin(be))).clamp(-1, 1);
  auto gstar = torch::acos(val);
  auto zero = torch::zeros_like(a);
  auto va = torch::stack({a * torch::sin(be), zero, a * torch::cos(be)}, 1);
  auto vb = torch::stack({-b * torch::sin(al) * torch::cos(gstar), b * torch::sin(al) * torch::sin(gstar), b * torch::cos(al)}, 1);
  auto vc = torch::stack({zero, zero, c}, 1);
  return torch::stack({va, vb, vc}, 1);
}

static torch::Tensor time_embedding(const torch::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  auto k = torch::arange(half, t.options());
  auto freqs = torch::exp(-std::log(10000.0) * k / std::max<int64_t>(half - 1, 1));
  auto arg = (t.reshape({-1, 1}) * 1000.0) * freqs.reshape({1, -1});
  return torch::cat({torch::sin(arg), torch::cos(arg)}, 1);
}

static nn::Sequential mlp2(int64_t in, int64_t hidden) {
  return nn::Sequential(nn::Linear(in, hidden), nn::SiLU(), nn::Linear(hidden, hidden), nn::SiLU());
}

CspNetImpl::CspNetImpl(const CspNetOptions& o) : o_(o) {
  const int64_t H = o.hidden, K = static_cast<int64_t>(o.vocabulary.size());
  if (o.type_distribution) {
    if (K == 0) throw flowkit::Error("crysbfn.cspnet: type_input 'distribution' needs a vocabulary");
    type_linear_ = register_module("type_linear", nn::Linear(K, H));
  } else {
    type_embedding_ = register_module("type_embedding", nn::Embedding(nn::EmbeddingOptions(128, H)));
  }
  node_in_ = register_module("node_in", nn::Linear(H + o.time_dim + (o.accuracy_input ? 3 : 0), H));
  const int64_t edge_in = 2 * H + 9 + 6 * o.num_freqs;
  for (int64_t l = 0; l < o.layers; ++l) {
    norms_->push_back(nn::LayerNorm(nn::LayerNormOptions({H})));
    edge_mlps_->push_back(mlp2(edge_in, H));
    node_mlps_->push_back(mlp2(2 * H, H));
  }
  register_module("norms", norms_);
  register_module("edge_mlps", edge_mlps_);
  register_module("node_mlps", node_mlps_);
  final_norm_ = register_module("final_norm", nn::LayerNorm(nn::LayerNormOptions({H})));
  coord_head_ = register_module("coord_head", nn::Linear(nn::LinearOptions(H, 3).bias(false)));
  lattice_head_ = register_module("lattice_head", nn::Linear(nn::LinearOptions(H, 9).bias(false)));
  if (K > 0) type_head_ = register_module("type_head", nn::Linear(H, K));
}

CrystalOutput CspNetImpl::forward(const CrystalInput& in) {
  const int64_t A = in.frac.size(0), B = in.num_atoms.size(0);
  torch::Tensor node_type =
      o_.type_distribution ? type_linear_->forward(2 * in.type_probs - 1) : type_embedding_->forward(in.types.clamp(0, 127));
  std::vector<torch::Tensor> parts = {node_type, time_embedding(in.t, o_.time_dim).index_select(0, in.batch)};
  if (o_.accuracy_input) parts.push_back(in.accuracy);
  torch::Tensor h = node_in_->forward(torch::cat(parts, 1));

  // Edge geometry: invariant lattice inner products and Fourier features of the periodic
  // fractional differences (frequencies 2*pi*k, k = 0..F-1).
  torch::Tensor counts = torch::bincount(in.batch, {}, B);
  auto [src, dst] = crystal_edges(counts);
  torch::Tensor ips = torch::matmul(in.lattice, in.lattice.transpose(1, 2)).reshape({B, 9});
  torch::Tensor edge_ips = ips.index_select(0, in.batch.index_select(0, src));
  torch::Tensor diff = in.frac.index_select(0, dst) - in.frac.index_select(0, src);  // [E,3]
  torch::Tensor k = torch::arange(o_.num_freqs, diff.options()) * (2 * M_PI);
  torch::Tensor arg = diff.unsqueeze(-1) * k;  // [E,3,F]
  torch::Tensor fourier = torch::cat({torch::sin(arg), torch::cos(arg)}, -1).reshape({diff.size(0), -1});
  torch::Tensor degree = counts.index_select(0, in.batch).to(h.dtype()).unsqueeze(1);  // n edges per source atom

  for (int64_t l = 0; l < o_.layers; ++l) {
    torch::Tensor hn = norms_[l]->as<nn::LayerNorm>()->forward(h);
    torch::Tensor e = edge_mlps_[l]->as<nn::Sequential>()->forward(
        torch::cat({hn.index_select(0, src), hn.index_select(0, dst), edge_ips, fourier}, 1));
    torch::Tensor agg = torch::zeros({A, o_.hidden}, h.options()).index_add(0, src, e) / degree;
    h = h + node_mlps_[l]->as<nn::Sequential>()->forward(torch::cat({hn, agg}, 1));
  }
  h = final_norm_->forward(h);

  CrystalOutput out;
  out.coord = coord_head_->forward(h);
  torch::Tensor pooled = torch::zeros({B, o_.hidden}, h.options()).index_add(0, in.batch, h) /
                         counts.to(h.dtype()).clamp_min(1).unsqueeze(1);
  torch::Tensor m = lattice_head_->forward(pooled).reshape({B, 3, 3});
  out.lattice = torch::matmul(m, in.lattice);
  if (type_head_) out.type_logits = type_head_->forward(h);
  return out;
}

// ---- named form ------------------------------------------------------------------------------

namespace {
void put(flowkit::TensorMap& m, const char* name, const torch::Tensor& v) {
  if (v.defined()) m.set(name, v);
}
torch::Tensor get(const flowkit::TensorMap& m, const char* name) { return m.has(name) ? m.at(name) : torch::Tensor(); }
}  // namespace

flowkit::TensorMap to_named(const CrystalInput& in) {
  flowkit::TensorMap m;
  put(m, "t", in.t);
  put(m, "lattice", in.lattice);
  put(m, "frac", in.frac);
  put(m, "num_atoms", in.num_atoms);
  put(m, "batch", in.batch);
  put(m, "accuracy", in.accuracy);
  put(m, "types", in.types);
  put(m, "type_probs", in.type_probs);
  return m;
}

CrystalInput crystal_input(const flowkit::TensorMap& m) {
  CrystalInput in;
  in.t = get(m, "t");
  in.lattice = get(m, "lattice");
  in.frac = get(m, "frac");
  in.num_atoms = get(m, "num_atoms");
  in.batch = get(m, "batch");
  in.accuracy = get(m, "accuracy");
  in.types = get(m, "types");
  in.type_probs = get(m, "type_probs");
  return in;
}

flowkit::TensorMap to_named(const CrystalOutput& out) {
  flowkit::TensorMap m;
  put(m, "coord", out.coord);
  put(m, "lattice", out.lattice);
  put(m, "type_logits", out.type_logits);
  return m;
}

CrystalOutput crystal_output(const flowkit::TensorMap& m) {
  CrystalOutput out;
  out.coord = get(m, "coord");
  out.lattice = get(m, "lattice");
  out.type_logits = get(m, "type_logits");
  return out;
}

AtomTypeHead::~AtomTypeHead() = default;

CrystalNetwork crystal_network(flowkit::Model& model, const std::string& who) {
  CrystalNetwork net;
  net.model = &flowkit::require_capability<flowkit::NamedOutputModel>(model, who, "a model with named crystal outputs (e.g. crysbfn.cspnet)");
  const auto names = net.model->output_names();
  net.type_head = std::find(names.begin(), names.end(), "type_logits") != names.end();
  if (net.type_head) {
    net.vocabulary = flowkit::require_capability<AtomTypeHead>(model, who, "the vocabulary of the model's type head (AtomTypeHead)")
                         .type_vocabulary();
    if (net.vocabulary.empty()) throw flowkit::Error(who + ": the model's type head has an empty vocabulary");
  }
  return net;
}

// ---- the model component -----------------------------------------------------------------------

CrystalModel::CrystalModel(const CspNetOptions& o, const std::string& device) : net_(o) { net_->to(torch::Device(device)); }

std::vector<std::string> CrystalModel::output_names() const {
  if (net_->options().type_distribution) return {"coord", "lattice", "type_logits"};
  return {"coord", "lattice"};
}

flowkit::TensorMap CrystalModel::forward_named(const flowkit::TensorMap& inputs) {
  // TensorMap::at throws an error naming a missing field and the fields present.
  for (const char* name : {"t", "lattice", "frac", "num_atoms"}) (void)inputs.at(name);
  CrystalInput in = crystal_input(inputs);
  const auto& o = net_->options();
  const int64_t A = in.frac.size(0);
  if (!in.batch.defined()) in.batch = atom_batch_index(in.num_atoms.to(in.frac.device()));
  if (!in.accuracy.defined()) in.accuracy = torch::zeros({A, 3}, in.frac.options());
  if (!o.type_distribution) {
    (void)inputs.at("types");
  } else if (!in.type_probs.defined()) {  // one-hot of the given types over the vocabulary
    if (!in.types.defined()) throw flowkit::Error("crysbfn.cspnet: a model with a type head needs 'type_probs' or 'types'");
    torch::Tensor vocab = torch::tensor(o.vocabulary, torch::kLong).to(in.frac.device());
    in.type_probs = (in.types.unsqueeze(1) == vocab.unsqueeze(0)).to(in.frac.dtype());
  }
  return to_named(net_->forward(in));
}

torch::Tensor CrystalModel::forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) {
  flowkit::TensorMap in;
  in.set("t", t);
  in.set("lattice", parameters_to_lattice(x));
  for (const char* name : {"frac", "num_atoms", "types", "accuracy", "type_probs"})
    if (cond.has(name)) in.set(name, cond.at(name));
  return lattice_to_parameters(forward_named(in).at("lattice"));
}

CspNetOptions cspnet_options(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  CspNetOptions o;
  o.hidden = cfg.get<int64_t>("hidden");
  o.layers = cfg.get<int64_t>("layers");
  o.num_freqs = cfg.get<int64_t>("num_freqs");
  o.time_dim = cfg.get<int64_t>("time_dim");
  if (o.time_dim % 2) cfg.fail("time_dim", "must be even (sin and cos halves), found " + std::to_string(o.time_dim));
  o.accuracy_input = cfg.get<bool>("accuracy_input");
  o.type_distribution = cfg.get<std::string>("type_input") == "distribution";
  if (o.type_distribution) {
    auto* vocabulary = flowkit::capability<CrystalVocabulary>(ctx.domain);
    if (!vocabulary)
      cfg.fail("type_input", "'distribution' needs a crystal domain with training elements (e.g. crysbfn.crystal); they are the vocabulary");
    o.vocabulary = vocabulary->training_elements();
  }
  return o;
}

std::unique_ptr<flowkit::Component> make_cspnet(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  return std::make_unique<CrystalModel>(cspnet_options(cfg, ctx), ctx.device);
}

}  // namespace crysbfn
