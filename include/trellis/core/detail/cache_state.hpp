#pragma once
// The inside of a TrellisCache: the forward's inputs (handles), the kept gates and
// cells, the injection, and the scratch of forward and backward.
#include <Kokkos_Core.hpp>

#include <cstddef>

#include <trellis/core/detail/dense_structure.hpp>
#include <trellis/core/detail/rnn_sparse_structure.hpp>
#include <trellis/core/detail/recompute_schedule.hpp>
#include <trellis/core/masks.hpp>
#include <trellis/core/structure.hpp>

namespace trellis::detail {

/// Everything forward keeps for backward, and the scratch of both (TrellisCache holds
/// one; only the network and its strategies see inside).
template <class MemorySpace, class Scalar, class Structure>
struct CacheState {
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, MemorySpace>;
  using matrices = Kokkos::View<Scalar***, Kokkos::LayoutRight, MemorySpace>;
  long length = 0, batch = 0;
  // Inputs of the forward (handles, not copies).
  Kokkos::View<Scalar const***, Kokkos::LayoutRight, MemorySpace> x;
  Kokkos::View<Scalar const**, Kokkos::LayoutRight, MemorySpace> h0, c0;
  TrellisMasks<MemorySpace, Scalar> masks;
  // What the structure's products keep (dense: the effective weights of this forward).
  typename StructureScratch<Structure, MemorySpace, Scalar>::type weights;
  // Activated gates (slots, R, G q) and cell (slots, R, q): one slot per level, or with
  // level recomputation one per kept level plus one block of recomputed levels.
  matrices gates, cell;
  RecomputeSchedule schedule;        // what the slots were made for
  int resident_lo = 0, resident_hi = -1;  // recomputed levels the block slots now hold
  // Injection U per slot (slots, R, G q); backward turns it into dU. Recomputed levels
  // get their U again in `recomputed_injection` (R, G q), which holds slot
  // `recomputed_slot`'s: one buffer, however many dilations there are.
  matrices injection;
  matrix recomputed_injection;
  int recomputed_slot = -1;
  // Folded injection: the dilation whose input columns `history` holds (-1: none yet).
  bool folded = false;
  int stacked_dilation = -1;
  // Scratch.
  matrix history, d_history;      // (R, 2q); folded: (R, 2q + 2p + 1 + padding), (R, 2q + 2p)
  matrix stacked_input, d_stacked_input;  // (R, 2 ninp), separate injection only
  matrix d_gates;                 // (rows of a backward block, G q); two blocks' when overlapped
  long backward_block = 0;        // rows of a backward block
  bool overlapped = false;        // backward overlaps its GEMMs with the fused kernels
  matrix d_cell_a, d_cell_b;      // (R, q)
  matrix ones;                    // (1, R): bias gradient as a GEMM
  Kokkos::View<Scalar*, Kokkos::LayoutRight, MemorySpace> zero_row, unit_row;  // (q)
  Kokkos::View<Scalar*, Kokkos::LayoutRight, MemorySpace> zero_gates;          // (G q)

  /// Bytes held on the memory space (the structure's scratch not counted).
  std::size_t bytes() const {
    std::size_t total = 0;
    auto add = [&](auto const& v) { total += v.span() * sizeof(Scalar); };
    add(gates), add(cell), add(injection), add(recomputed_injection), add(history), add(d_history);
    add(stacked_input), add(d_stacked_input), add(d_gates), add(d_cell_a), add(d_cell_b);
    add(ones), add(zero_row), add(unit_row), add(zero_gates);
    return total;
  }
};

}  // namespace trellis::detail
