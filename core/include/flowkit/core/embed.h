// flowkit/core/embed.h — use a trained run from another C++ program (a robot controller,
// a service): open runs/<name>/ and call its model through its solver.
#pragma once
#include <memory>
#include <string>

#include "flowkit/core/session.h"
#include "flowkit/domain.h"

namespace flowkit::core {

// Opens a run directory for inference: its pipeline.resolved.json, the plugins it names and
// its last checkpoint (or `checkpoint`). Throws flowkit::Error with the file at fault.
std::unique_ptr<Session> open_run(const std::string& run_dir, PluginHost& host, const std::string& checkpoint = "");

// The run's model and solver as a policy: observation rows in, one sample ("x") per row out.
// Uses the EMA weights (train.ema_decay > 0) for as long as the returned function lives;
// runs without autograd. Not thread-safe: one policy per thread.
Policy make_policy(Session& session);

}  // namespace flowkit::core
