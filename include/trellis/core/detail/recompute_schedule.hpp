#pragma once
// Level recomputation (gradient checkpointing) as a schedule: with interval k, forward
// keeps the gates and cell of levels k-1, 2k-1, ... (0-based), each in its own slot
// after k-1 block slots; level i of a block of recomputed levels uses block slot i % k.
// Backward brings a block back from the kept level below it. k = 1 keeps every level.
#include <algorithm>

namespace trellis::detail {

struct RecomputeSchedule {
  int interval = 1;
  int nlevels = 0;

  bool recomputing() const { return interval > 1; }
  bool kept(int level) const { return interval <= 1 || (level + 1) % interval == 0; }
  /// The first and last level of the block of recomputed levels that holds `level`.
  int block_start(int level) const { return (level / interval) * interval; }
  int block_end(int level) const { return std::min(block_start(level) + interval - 2, nlevels - 1); }
  /// The storage slot of a level's gates and cell.
  int slot_of(int level) const {
    if (interval <= 1) return level;
    int const block_slots = std::min(interval - 1, nlevels);
    return kept(level) ? block_slots + (level + 1) / interval - 1 : level % interval;
  }
  int slots() const {
    if (interval <= 1) return nlevels;
    return std::min(interval - 1, nlevels) + nlevels / interval;
  }
  /// About sqrt(n), the interval that minimises n / k + k - 1.
  static int default_interval(int nlevels) {
    int k = 1;
    while ((k + 1) * (k + 1) <= nlevels) ++k;
    return k;
  }
};

}  // namespace trellis::detail
