// flowkit/core/embed.h — use a trained run from another C++ program (a robot controller,
// a service): open runs/<name>/ and call its model through its solver.
#pragma once
#include <memory>
#include <string>

#include "flowkit/core/session.h"
#include "flowkit/capabilities/environment.h"

namespace flowkit::core {

// Opens a run directory for inference: its pipeline.resolved.json, the plugins it names and
// its last checkpoint (or `checkpoint`), with the sampling weights (EMA when the run kept
// one, and sample.use_ema) loaded into the model. Throws flowkit::Error naming the file.
std::unique_ptr<Session> open_run(const std::string& run_dir, PluginHost& host, const std::string& checkpoint = "");

// The session's model and solver as a policy: observation rows in, one sample ("x") per row
// out, without autograd, with the model's current weights. `steps` overrides sample.steps
// (0 keeps it). The policy refers to the session: it must not be called after the session
// is destroyed. Not thread-safe: one policy per thread.
Policy make_policy(Session& session, int64_t steps = 0);
// Network evaluations of the last policy call (1 for a one-step policy).
int64_t last_policy_nfe(Session& session);

// OpenBLAS's thread count for the whole process (a no-op with another BLAS). open_run applies
// the run's train.blas_threads; call this after it. docs/performance.md measures 1 and 2
// threads for a batch-1 policy, idle and beside busy processes.
void set_blas_threads(int n);

}  // namespace flowkit::core
