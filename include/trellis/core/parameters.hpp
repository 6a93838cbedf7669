#pragma once
// The learnable tensors of a TrellisNet, and their gradients (same type).
#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>

#include <trellis/core/shape.hpp>
#include <trellis/detail/views.hpp>

namespace trellis {

/// Parameters of a TrellisNet in the library's layout. `kernels` is 1 when tied
/// across depth, nlevels when untied; G is the activation's number of groups (4 for
/// the LSTM gating: rows i, o, g, f). Columns of every weight are [tap 0 | tap 1]:
/// tap 0 multiplies position t - d (the paper's W1), tap 1 position t (W2). The
/// reference's (rows, in, 2) tensors map as ours(k, r, tap * in + j) = ref(r, j, tap).
template <class MemorySpace, class Scalar>
struct TrellisParameters {
  using matrices = Kokkos::View<Scalar***, Kokkos::LayoutRight, MemorySpace>;
  using rows = Kokkos::View<Scalar**, Kokkos::LayoutRight, MemorySpace>;

  matrices weight1;  ///< (kernels, G q, 2 ninp): injection; weight1_v with weight norm
  rows weight1_g;    ///< (kernels, G q): weight-norm gain, empty without weight norm
  matrices weight2;  ///< (kernels, G q, 2 q): hidden kernel; weight2_v with weight norm
  rows weight2_g;    ///< (kernels, G q)
  rows bias2;        ///< (kernels, G q)

  static TrellisParameters zeros(std::string const& label, TrellisShape const& shape,
                                 int kernels, int groups) {
    long const rows_ = long(groups) * shape.q();
    long const gains = shape.weight_norm ? kernels : 0;
    TrellisParameters p;
    p.weight1 = matrices(label + "::weight1", kernels, rows_, 2L * shape.ninp);
    p.weight1_g = rows(label + "::weight1_g", gains, rows_);
    p.weight2 = matrices(label + "::weight2", kernels, rows_, 2L * shape.q());
    p.weight2_g = rows(label + "::weight2_g", gains, rows_);
    p.bias2 = rows(label + "::bias2", kernels, rows_);
    return p;
  }

  /// Calls f(name, view) for every tensor, in a fixed order.
  template <class F>
  void for_each(F&& f) const {
    f("weight1", weight1);
    f("weight1_g", weight1_g);
    f("weight2", weight2);
    f("weight2_g", weight2_g);
    f("bias2", bias2);
  }
};

namespace detail {

/// The reference's initialisation: weights and bias from N(0, std), std = 0.01 there;
/// g = ||v|| per row. The same seed gives the same draws, scaled, for any std.
template <class MemorySpace, class Scalar>
void initialize_parameters(TrellisParameters<MemorySpace, Scalar> const& p, std::uint64_t seed, double std = 0.01) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, std);
  auto draw = [&] { return normal(rng); };
  auto norms = [](auto const& v, auto const& g) {
    auto hg = Kokkos::create_mirror_view(g);
    for (std::size_t k = 0; k < hg.extent(0); ++k)
      for (std::size_t r = 0; r < hg.extent(1); ++r) {
        double s = 0;
        for (std::size_t c = 0; c < v.extent(2); ++c) s += double(v(k, r, c)) * double(v(k, r, c));
        hg(k, r) = Scalar(std::sqrt(s));
      }
    Kokkos::deep_copy(g, hg);
  };
  fill_on_host(p.weight1, draw);
  fill_on_host(p.weight2, draw);
  fill_on_host(p.bias2, draw);
  if (p.weight1_g.extent(0) > 0) norms(Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), p.weight1), p.weight1_g);
  if (p.weight2_g.extent(0) > 0) norms(Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), p.weight2), p.weight2_g);
}

}  // namespace detail
}  // namespace trellis
