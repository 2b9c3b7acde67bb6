// crysbfn/cspnet.h — the CSPNet-style periodic-E(3)-invariant network `crysbfn.cspnet`
// (DiffCSP's decoder, as CrysBFN uses it), shared by the Bayesian flow and the diffusion
// baseline so both compare on the same network.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "flowkit/capabilities/named_outputs.h"
#include "flowkit/config.h"
#include "flowkit/model.h"
#include "flowkit/registry.h"

namespace crysbfn {

// The parameters of `crysbfn.cspnet`, filled by cspnet_options (defaults: plugin.json).
struct CspNetOptions {
  int64_t hidden = 0;
  int64_t layers = 0;
  int64_t num_freqs = 0;       // Fourier features k = 0..F-1 of fractional differences
  int64_t time_dim = 0;        // sinusoidal embedding of t * 1000
  bool accuracy_input = false; // 3 per-atom scalars (CrysBFN's entropy conditioning) enter the nodes
  // Atom types enter as an embedding of the atomic number (CSP: types are given), or as a
  // distribution over `vocabulary` through a Linear layer (generation: 2*theta - 1).
  bool type_distribution = false;
  std::vector<int64_t> vocabulary;  // atomic numbers of the type head / distribution input
};
// Reads every key of `crysbfn.cspnet`; with type_input "distribution" the vocabulary is the
// training elements of ctx.domain (CrystalVocabulary, crysbfn/domain.h).
CspNetOptions cspnet_options(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

// One crystal state as the network sees it. Per atom: frac [A,3] (fractional coordinates,
// period 1; values outside [0,1) are fine), accuracy [A,3] (ignored unless accuracy_input),
// types [A] atomic numbers or type_probs [A,K], batch [A] (crystal index of each atom).
// Per crystal: lattice [B,3,3] (rows = vectors, any scale: the network only sees L L^T),
// t [B], num_atoms [B].
struct CrystalInput {
  torch::Tensor frac, accuracy, types, type_probs, lattice, t, num_atoms, batch;
};

// coord [A,3]: per-atom output of the coordinate head (a residual on the circle for the BFN,
// a score for diffusion); lattice [B,3,3] = M(h) * lattice_in (O(3)-equivariant);
// type_logits [A,K] when the model has a type head.
struct CrystalOutput {
  torch::Tensor coord, lattice, type_logits;
};

// The named form of these, as a crystal network's flowkit::NamedOutputModel reads and
// returns them (same shapes and meaning as above):
//   inputs   "t", "lattice", "frac", "num_atoms"   required
//            "batch"                               optional (derived from "num_atoms")
//            "accuracy"                            optional (zeros)
//            "types"                               a model without type head (CSP)
//            "type_probs"                          a model with a type head (generation);
//                                                  absent: the one-hot of "types"
//   outputs  "coord", "lattice", "type_logits" (the last only with a type head)
// Undefined tensors are left out of the map, absent names give undefined tensors.
flowkit::TensorMap to_named(const CrystalInput& in);
CrystalInput crystal_input(const flowkit::TensorMap& named);
flowkit::TensorMap to_named(const CrystalOutput& out);
CrystalOutput crystal_output(const flowkit::TensorMap& named);

// Capability of a crystal network with a type head (output "type_logits"): the atomic
// numbers that index its "type_probs" input and its logits.
class AtomTypeHead {
 public:
  virtual ~AtomTypeHead();
  virtual const std::vector<int64_t>& type_vocabulary() const = 0;
};

// What the crysbfn losses and samplers use of the pipeline's model: its named outputs
// (through wrappers that delegate capabilities) and, with a type head, its vocabulary.
struct CrystalNetwork {
  flowkit::NamedOutputModel* model = nullptr;
  bool type_head = false;
  std::vector<int64_t> vocabulary;  // empty without a type head
  CrystalOutput predict(const CrystalInput& in) const { return crystal_output(model->forward_named(to_named(in))); }
};
// Throws flowkit::Error naming `who` when the model has no named crystal outputs.
CrystalNetwork crystal_network(flowkit::Model& model, const std::string& who);

class CspNetImpl : public torch::nn::Module {
 public:
  explicit CspNetImpl(const CspNetOptions& o);
  CrystalOutput forward(const CrystalInput& in);
  const CspNetOptions& options() const { return o_; }

 private:
  CspNetOptions o_;
  torch::nn::Embedding type_embedding_{nullptr};
  torch::nn::Linear type_linear_{nullptr}, node_in_{nullptr}, coord_head_{nullptr}, lattice_head_{nullptr},
      type_head_{nullptr};
  torch::nn::ModuleList edge_mlps_, node_mlps_, norms_;
  torch::nn::LayerNorm final_norm_{nullptr};
  torch::Tensor z_to_index_;  // atomic number -> vocabulary index (generation)
};
TORCH_MODULE(CspNet);

// Edges of fully connected crystals including self-loops (n^2 per crystal, as CSPNet's
// dense_to_sparse(block_diag(ones))): {source, target} atom indices.
std::pair<torch::Tensor, torch::Tensor> crystal_edges(const torch::Tensor& num_atoms);
// Atom -> crystal index from the per-crystal atom counts.
torch::Tensor atom_batch_index(const torch::Tensor& num_atoms);
// Batched lattice parameters [B,6] (a, b, c in Å; alpha, beta, gamma in degrees) of
// lattice matrices [B,3,3] and back (pymatgen convention), differentiable.
torch::Tensor lattice_to_parameters(const torch::Tensor& lattice);
torch::Tensor parameters_to_lattice(const torch::Tensor& params);

// The component `crysbfn.cspnet`.
class CrystalModel : public flowkit::Model, public flowkit::NamedOutputModel, public AtomTypeHead {
 public:
  CrystalModel(const CspNetOptions& o, const std::string& device);
  // Every head for the named crystal state (see to_named above).
  flowkit::TensorMap forward_named(const flowkit::TensorMap& inputs) override;
  std::vector<std::string> output_names() const override;
  // Empty when type_input is "atomic_number" (then there is no "type_logits" output).
  const std::vector<int64_t>& type_vocabulary() const override { return net_->options().vocabulary; }
  // The generic flowkit contract: x [B,6] lattice parameters of the current state, t [B],
  // cond = the crystal's other fields ("frac", "types", "num_atoms"; optional "accuracy",
  // "type_probs"); returns the lattice head's prediction as lattice parameters [B,6].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) override;
  torch::nn::Module& module() override { return *net_; }
  const CspNetOptions& options() const { return net_->options(); }

 private:
  CspNet net_;
};

// Factory of `crysbfn.cspnet`; with type_input = "distribution" the vocabulary is the
// domain's training elements (CrystalVocabulary, crysbfn/domain.h).
std::unique_ptr<flowkit::Component> make_cspnet(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace crysbfn
