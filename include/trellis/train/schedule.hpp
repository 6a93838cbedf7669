#pragma once
// The learning rate over a run: schedules by epoch or by validation, and a linear
// anneal to zero over the end of a budget.
#include <algorithm>
#include <vector>

namespace trellis {

/// Learning-rate schedules. Steps: lr *= gamma at each listed epoch. On plateau
/// (PyTorch's ReduceLROnPlateau, mode min, relative threshold): lr *= factor after
/// `patience` evaluations without an improvement, down to min_lr.
struct LrSchedule {
  enum class Kind { constant, steps, plateau };
  Kind kind = Kind::constant;
  std::vector<int> milestones;  ///< epochs (1-based: after epoch e ends)
  double gamma = 0.1;
  double factor = 0.5, threshold = 1e-4, min_lr = 0;
  int patience = 0;
  // Plateau state (checkpointed).
  double best = 1e300;
  int bad_epochs = 0;

  /// Called at the end of an epoch with that epoch's validation metric (lower is better);
  /// returns the learning rate for what follows.
  double update(double lr, int epoch, double metric) {
    if (kind == Kind::steps) {
      for (int e : milestones)
        if (e == epoch) lr *= gamma;
    } else if (kind == Kind::plateau) {
      if (metric < best * (1 - threshold)) {
        best = metric;
        bad_epochs = 0;
      } else if (++bad_epochs > patience) {
        lr = std::max(min_lr, lr * factor);
        bad_epochs = 0;
      }
    }
    return lr;
  }
};

/// The learning rate with `fraction_left` of a budget to go: the scheduled rate until
/// that fraction falls under `anneal`, then linearly down to zero at the budget's end.
/// anneal = 0: no annealing.
inline double annealed_lr(double scheduled_lr, double fraction_left, double anneal) {
  return anneal > 0 && fraction_left < anneal ? scheduled_lr * fraction_left / anneal : scheduled_lr;
}

}  // namespace trellis
