// flowkit/core/diagnostics.h — representation diagnostics used by `eval.probe_label`, and the
// straightness of a learned flow (`eval.straightness_steps`).
#pragma once
#include <torch/types.h>

#include "flowkit/capabilities/ode_integrator.h"

namespace flowkit::core {

// Effective rank (Roy & Vetterli 2007) of the rows of z [N, D]: exp of the entropy of the
// normalised singular values of the centred matrix; 1 for collinear rows, D for isotropic ones.
double effective_rank(const torch::Tensor& z);

// Mean Euclidean distance between distinct rows of z [N, D] (what a dispersive loss pushes
// up; unlike the effective rank it sees the scale of the embedding).
double mean_pairwise_distance(const torch::Tensor& z);

// Linear-probe accuracy: ridge regression of one-hot `labels` [N] (int64) on standardised z
// (plus a bias), fitted on the first `train_fraction` of the rows, accuracy on the rest.
double linear_probe_accuracy(const torch::Tensor& z, const torch::Tensor& labels, double train_fraction = 0.7,
                             double ridge = 1e-3);

struct Straightness {
  double gap = 0;       // S = (1/T) ∫ E||v(x_t, t) − (x_T − x_0)/T||² dt (Liu et al. 2023); 0 for straight paths
  double relative = 0;  // S / E||(x_T − x_0)/T||²: dimensionless, comparable across data scales
};

// The straightness of the flow of `f` from x0 along `grid` (Euler through every time of
// it: the velocities are the network's, the chord is Euler's end point minus x0).
Straightness flow_straightness(const VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid);

}  // namespace flowkit::core
