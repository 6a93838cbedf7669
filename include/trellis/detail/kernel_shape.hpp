#pragma once
// How elementwise kernels map onto an execution space. Host spaces take rows (or 2-D
// ranges), so that a thread's inner loop runs along contiguous memory and vectorises;
// devices take flat ranges, consecutive threads on consecutive columns (coalesced).
// Kokkos' 2-D range would do on devices too, but its default Cuda tiles are 2 x 16
// threads: 32-thread blocks, half an SM's threads at most.
#include <Kokkos_Core.hpp>

namespace trellis::detail {

/// Tests force the device shapes on host spaces (KernelShape::device) so that the
/// kernels a GPU runs are checked against the reference on every backend.
enum class KernelShape { automatic, device };

inline KernelShape& kernel_shape_override() {
  static KernelShape shape = KernelShape::automatic;
  return shape;
}

template <class Exec>
bool host_shaped() {
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible)
    return kernel_shape_override() == KernelShape::automatic;
  else
    return false;
}

/// A 2-D index range whose second index is the fastest.
template <class Exec>
using Grid2 = Kokkos::MDRangePolicy<Exec, Kokkos::Rank<2, Kokkos::Iterate::Right, Kokkos::Iterate::Right>>;

template <class F>
struct FlatGrid {
  F f;
  long cols;
  KOKKOS_INLINE_FUNCTION void operator()(long i) const {
    long const r = i / cols;
    f(r, i - r * cols);
  }
};

/// f(r, j) for every r < rows, j < cols.
template <class Exec, class F>
void for_each_index(char const* label, Exec const& space, long rows, long cols, F const& f) {
  if (host_shaped<Exec>()) {
    if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible)
      Kokkos::parallel_for(label, Grid2<Exec>(space, {0, 0}, {rows, cols}), f);
    return;
  }
  Kokkos::parallel_for(label, Kokkos::RangePolicy<Exec>(space, 0, rows * cols), FlatGrid<F>{f, cols});
}

/// f(r, j) as for_each_index; on host spaces a range of at most `inline_limit` elements
/// runs on the calling thread, because there a parallel region costs more than the work
/// (the kernels of one streaming step).
template <class Exec, class F>
void for_each_small_index(char const* label, Exec const& space, long rows, long cols, F const& f,
                          long inline_limit = 8192) {
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible) {
    if (host_shaped<Exec>() && rows * cols <= inline_limit) {
      space.fence();  // earlier work on the space wrote what f reads
      for (long r = 0; r < rows; ++r)
        for (long j = 0; j < cols; ++j) f(r, j);
      return;
    }
  }
  for_each_index(label, space, rows, cols, f);
}

/// f(i) for i < n as Kokkos::parallel_for; on host spaces, up to `inline_limit`
/// iterations run on the calling thread (as for_each_small_index).
template <class Exec, class F>
void for_each_small(char const* label, Exec const& space, long n, F const& f, long inline_limit = 64) {
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible) {
    if (n <= inline_limit) {
      space.fence();
      for (long i = 0; i < n; ++i) f(i);
      return;
    }
  }
  Kokkos::parallel_for(label, Kokkos::RangePolicy<Exec>(space, 0, n), f);
}

/// The sum of f(i, sum) over i < n as Kokkos::parallel_reduce, inline on host spaces
/// for up to `inline_limit` iterations.
template <class Exec, class F>
double sum_small(char const* label, Exec const& space, long n, F const& f, long inline_limit = 64) {
  double total = 0;
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible) {
    if (n <= inline_limit) {
      space.fence();
      for (long i = 0; i < n; ++i) f(i, total);
      return total;
    }
  }
  Kokkos::parallel_reduce(label, Kokkos::RangePolicy<Exec>(space, 0, n), f, total);
  return total;
}

}  // namespace trellis::detail
