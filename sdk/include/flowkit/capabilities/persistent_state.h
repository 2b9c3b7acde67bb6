// flowkit/capabilities/persistent_state.h — a component whose state is computed when it is
// built (a domain's normalisation statistics of its training data) and must stay what the run
// was trained with: the host saves it in every checkpoint and hands it back when a checkpoint
// is loaded, so a reopened run samples and writes with the same statistics even if the data
// files have changed since.
#pragma once
#include "flowkit/tensor_file.h"

namespace flowkit {

class PersistentState {
 public:
  virtual ~PersistentState();
  // Named tensors (CPU); the names are the component's own.
  virtual io::TensorDict persistent_state() const = 0;
  // Replaces the state by a saved one; throws flowkit::Error when it does not fit.
  virtual void restore_state(const io::TensorDict& state) = 0;
};

}  // namespace flowkit
