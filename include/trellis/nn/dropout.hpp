#pragma once
// Dropout on sequences, forward and backward (the same product): variational masks
// (one per sequence and channel, shared by every time step) and elementwise masks.
// Masks hold 0 or 1 / (1 - p) (inverted scaling); an empty mask means "off".
//   variational: y(t, n, c) = x(t, n, c) * mask(n, c)     x, y (L, N, C), mask (N, C)
//   elementwise: y(i) = x(i) * mask(i)                     same shapes
#include <Kokkos_Core.hpp>

#include <random>
#include <string>

#include <trellis/core/masks.hpp>
#include <trellis/errors.hpp>

namespace trellis {

template <class Exec, class In, class Mask, class Out>
void variational_dropout(Exec const& space, In const& x, Mask const& mask, Out const& y) {
  char const* call = "trellis::variational_dropout";
  long const L = long(x.extent(0)), N = long(x.extent(1)), C = long(x.extent(2));
  detail::check_shape(call, "y", y, {L, N, C});
  if (mask.extent(0) == 0) {
    if (y.data() != x.data()) Kokkos::deep_copy(space, y, x);
    return;
  }
  detail::check_shape(call, "mask", mask, {N, C});
  long const rows = L * N;
  Kokkos::parallel_for(
      call, Kokkos::RangePolicy<Exec>(space, 0, rows), KOKKOS_LAMBDA(long r) {
        long const t = r / N, n = r % N;
        for (long c = 0; c < C; ++c) y(t, n, c) = x(t, n, c) * mask(n, c);
      });
}

template <class Exec, class In, class Mask, class Out>
void elementwise_dropout(Exec const& space, In const& x, Mask const& mask, Out const& y) {
  char const* call = "trellis::elementwise_dropout";
  if (x.span() != y.span()) detail::fail(call, ": x has ", x.span(), " values, y ", y.span());
  if (mask.extent(0) == 0) {
    if (y.data() != x.data()) Kokkos::deep_copy(space, y, x);
    return;
  }
  if (mask.span() != x.span()) detail::fail(call, ": mask has ", mask.span(), " values, x ", x.span());
  auto const* xp = x.data();
  auto const* mp = mask.data();
  auto* yp = y.data();
  Kokkos::parallel_for(
      call, Kokkos::RangePolicy<Exec>(space, 0, long(x.span())), KOKKOS_LAMBDA(long i) { yp[i] = xp[i] * mp[i]; });
}

/// A fresh dropout mask of the given extents (all 0 or 1/(1-p)), or an empty View when p == 0.
template <class View, class... Extents>
View make_dropout_mask(char const* label, double p, std::mt19937_64& rng, Extents... extents) {
  if (p == 0) return View();
  View mask(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string(label)), extents...);
  detail::fill_dropout_mask(mask, p, rng);
  return mask;
}

}  // namespace trellis
