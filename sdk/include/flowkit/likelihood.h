// flowkit/likelihood.h — log-likelihoods of a flow by the instantaneous change of variables,
// d/dt log p_t(x_t) = −div v(x_t, t) (Chen et al. 2018), integrated by any OdeIntegrator on
// the state [x, ∫ div v] in the same solve as x:
//  * of data: x runs back from the data end of the grid to the prior,
//    log p(x) = log p_0(x_0) − ∫ div v dt;
//  * of samples: the forward solve that draws them also gives their log-likelihood (one
//    solve, not a second one backwards).
// The divergence is exact (one backward pass per dimension: small items) or Hutchinson's
// unbiased estimate E[εᵀ (∂v/∂x) ε] with Rademacher probes drawn once per solve from the
// given generator (so a seed fixes it). With grad mode on at the call the result is
// differentiable in the model's parameters and in x (the graph of the whole solve is kept);
// otherwise nothing is retained between steps.
#pragma once
#include <cstdint>
#include <string>

#include "flowkit/capabilities/ode_integrator.h"
#include "flowkit/capabilities/prior_density.h"

namespace flowkit {

struct DivergenceOptions {
  bool exact = true;   // false: Hutchinson
  int64_t probes = 1;  // Hutchinson probes per solve (their mean is the estimate)
};
// "exact" | "hutchinson" (an Error names anything else).
DivergenceOptions divergence_options(const std::string& kind, int64_t probes = 1);

struct FlowLikelihood {
  torch::Tensor x;               // the other end of the solve (x_0 of data; the samples)
  torch::Tensor log_likelihood;  // [B], natural log, of the data or of the samples
  int64_t nfe = 0;               // velocity evaluations per item (each also costs its divergence)
};

// Of data x [B, ...]: `grid` runs from the prior to the data (as a solver's grid(steps)) and is
// integrated in reverse. `f` is the velocity dx/dt.
FlowLikelihood data_log_likelihood(const VectorField& f, const PriorDensity& prior, const OdeIntegrator& integrator,
                                   const torch::Tensor& grid, const torch::Tensor& x, const DivergenceOptions& divergence,
                                   torch::Generator& gen);

// Of the samples integrated forward from prior draws x0 along `grid`.
FlowLikelihood sample_log_likelihood(const VectorField& f, const PriorDensity& prior, const OdeIntegrator& integrator,
                                     const torch::Tensor& grid, const torch::Tensor& x0, const DivergenceOptions& divergence,
                                     torch::Generator& gen);

}  // namespace flowkit
