#pragma once
// What one training step of a task reports to the Trainer; summed over a window of
// steps, it gives the curves' training loss and metric.
#include <string>

namespace trellis {

struct StepResult {
  double loss = 0;   ///< the loss the step differentiated (auxiliary terms included)
  double nll = 0;    ///< summed negative log-likelihood of the scored targets (nats)
  long count = 0;    ///< scored targets (tokens or sequences)
  long correct = 0;  ///< correctly classified sequences (classification)
  /// Not empty: the step was skipped (parameters and optimiser state unchanged) because
  /// a gradient was not finite; the first parameter whose gradient held a NaN or an
  /// infinity. A window's sum keeps none of it.
  std::string non_finite;

  StepResult& operator+=(StepResult const& r) {
    loss += r.loss;
    nll += r.nll;
    count += r.count;
    correct += r.correct;
    return *this;
  }
};

}  // namespace trellis
