#pragma once
// Weight normalisation and weight drop, forward and backward side by side.
//   vd = v * M   (M: DropConnect mask on tap 0 only, scaled 1/(1-p); 1 elsewhere)
//   w_r = g_r vd_r / ||vd_r||            (weight norm, per output row r, no epsilon)
//   dg_r += <G_r, vd_r> / ||vd_r||
//   dv_r += M * (g_r / ||vd_r||) (G_r - (<G_r, vd_r> / ||vd_r||^2) vd_r)
// with G = dL/dw summed over every level that uses the kernel. Without weight norm
// w = vd and dv += M * G.
#include <Kokkos_Core.hpp>

#include <trellis/detail/kokkos_compat.hpp>

namespace trellis::detail {

template <class Scalar, class MemorySpace>
struct WeightNormArgs {
  using matrices = Kokkos::View<Scalar***, Kokkos::LayoutRight, MemorySpace>;
  using rows = Kokkos::View<Scalar**, Kokkos::LayoutRight, MemorySpace>;
  matrices v;         // (kernels, rows, 2 * in): [tap 0 | tap 1]
  rows g;             // (kernels, rows), empty without weight norm
  matrices drop;      // (kernels, rows, in): mask on tap 0, empty when off
  matrices w;         // (kernels, rows, 2 * in): the effective weight
  rows norm;          // (kernels, rows): ||vd_r||

  /// M at column col of row r of kernel k: the drop mask on tap 0, 1 elsewhere.
  KOKKOS_INLINE_FUNCTION Scalar mask(long k, long r, int col) const {
    return (drop.extent(0) > 0 && col < int(v.extent(2)) / 2) ? drop(k, r, col) : Scalar(1);
  }
};

/// One team per weight row: on GPUs the team's threads stride its columns together
/// (coalesced, and thousands of rows of thousands of columns fill the device); on host
/// spaces a team is one thread, whose loops keep the sequential order of the sums.
template <class Exec>
Kokkos::TeamPolicy<Exec> row_teams(Exec const& space, long rows) {
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible)
    return Kokkos::TeamPolicy<Exec>(space, rows, 1);
  else
    return Kokkos::TeamPolicy<Exec>(space, rows, Kokkos::AUTO);
}

/// f(team, k, r) for row r of kernel k, every row of every kernel of a.v, a team each.
template <class Exec, class Scalar, class MemorySpace, class F>
void for_each_weight_row(char const* label, Exec const& space, WeightNormArgs<Scalar, MemorySpace> const& a,
                         F const& f) {
  long const rows = long(a.v.extent(1));
  using member = typename Kokkos::TeamPolicy<Exec>::member_type;
  Kokkos::parallel_for(
      label, row_teams(space, long(a.v.extent(0)) * rows),
      KOKKOS_LAMBDA(member const& team) { f(team, team.league_rank() / rows, team.league_rank() % rows); });
}

template <class Exec, class Scalar, class MemorySpace>
void weight_norm_forward(Exec const& space, WeightNormArgs<Scalar, MemorySpace> const& a) {
  auto const w = a.w, norm = a.norm;
  for_each_weight_row(
      "trellis::weight_norm_forward", space, a, KOKKOS_LAMBDA(auto const& team, long k, long r) {
        int const width = int(a.v.extent(2));
        bool const wnorm = a.g.extent(0) > 0;
        auto const g = a.g;
        auto vd = [&](int col) { return a.v(k, r, col) * a.mask(k, r, col); };
        if (!wnorm) {
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, width), [&](int col) { w(k, r, col) = vd(col); });
          return;
        }
        Scalar sum = 0;
        Kokkos::parallel_reduce(
            Kokkos::TeamThreadRange(team, width),
            [&](int col, Scalar& partial) {
              Scalar const x = vd(col);
              partial += x * x;
            },
            sum);
        Scalar const nrm = sqrt(sum), scale = g(k, r) / nrm;
        Kokkos::single(Kokkos::PerTeam(team), [&] { norm(k, r) = nrm; });
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, width), [&](int col) { w(k, r, col) = vd(col) * scale; });
      });
}

/// Accumulates into dv (and dg) from G = dw.
template <class Exec, class Scalar, class MemorySpace>
void weight_norm_backward(Exec const& space, WeightNormArgs<Scalar, MemorySpace> const& a,
                          typename WeightNormArgs<Scalar, MemorySpace>::matrices const& dw,
                          typename WeightNormArgs<Scalar, MemorySpace>::matrices const& dv,
                          typename WeightNormArgs<Scalar, MemorySpace>::rows const& dg) {
  for_each_weight_row(
      "trellis::weight_norm_backward", space, a, KOKKOS_LAMBDA(auto const& team, long k, long r) {
        auto const v = a.v, g = a.g, norm = a.norm;
        int const width = int(v.extent(2));
        bool const wnorm = g.extent(0) > 0;
        auto mask = [&](int col) { return a.mask(k, r, col); };
        if (!wnorm) {
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, width),
                               [&](int col) { dv(k, r, col) += mask(col) * dw(k, r, col); });
          return;
        }
        Scalar const nrm = norm(k, r);
        Scalar dot = 0;
        Kokkos::parallel_reduce(
            Kokkos::TeamThreadRange(team, width),
            [&](int col, Scalar& partial) { partial += dw(k, r, col) * v(k, r, col) * mask(col); }, dot);
        Kokkos::single(Kokkos::PerTeam(team), [&] { dg(k, r) += dot / nrm; });
        Scalar const scale = g(k, r) / nrm, proj = dot / (nrm * nrm);
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, width), [&](int col) {
          Scalar const vd = v(k, r, col) * mask(col);
          dv(k, r, col) += mask(col) * scale * (dw(k, r, col) - proj * vd);
        });
      });
}

}  // namespace trellis::detail
