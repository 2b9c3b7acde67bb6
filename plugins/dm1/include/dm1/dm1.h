// dm1/dm1.h — the DM1 policy plugin: one-step MeanFlow policies with dispersive
// regularisation (Zou et al. 2025; Geng et al. 2025; Wang & He 2025) and a bimodal 2-D
// reaching task ("BiReach2D") with batched rollouts. One header per component family:
//   dm1/bireach.h   domain  dm1.bireach (environment, expert, observations)
//   dm1/policy.h    model   dm1.policy
//   dm1/losses.h    losses  dm1.meanflow, dm1.regression (and the dispersive terms)
//   dm1/samplers.h  solvers dm1.meanflow_sampler, dm1.direct
//
// Time conventions. The framework's paths use t = 0 noise, t = 1 data. MeanFlow keeps the
// official convention inside its own loss and sampler: z_t = (1 - t) x + t eps, t = 1 noise,
// v = eps - x, and u(z_t, r, t) is the average velocity over [r, t], so z_r = z_t - (t - r) u.
// The policy network itself is convention-free: it maps (z, t, r, observation) to a tensor
// shaped like z, and with r absent (r = t) it is an instantaneous velocity field, so the
// same network also serves the flow-matching baseline (standard.cfm + standard.euler).
#pragma once
#include "dm1/bireach.h"
#include "dm1/losses.h"
#include "dm1/policy.h"
#include "dm1/samplers.h"
