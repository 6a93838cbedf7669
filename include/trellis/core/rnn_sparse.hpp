#pragma once
// Parameters of the RnnSparse structure, and their densification into the Dense
// structure's layout (the same network, every zero block stored).
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <random>
#include <string>

#include <trellis/core/parameters.hpp>
#include <trellis/core/shape.hpp>

namespace trellis {

/// The nonzero blocks of the trellis weights of an M-layer RNN with hidden width d
/// (q = M d). Rows within a block are (gate g, unit a) -> g d + a, gates in the
/// activation's order (i, o, g, f for the LSTM gating).
template <class MemorySpace, class Scalar>
struct RnnSparseParameters {
  using blocks = Kokkos::View<Scalar****, Kokkos::LayoutRight, MemorySpace>;
  using matrices = Kokkos::View<Scalar***, Kokkos::LayoutRight, MemorySpace>;
  using rows = Kokkos::View<Scalar**, Kokkos::LayoutRight, MemorySpace>;

  blocks recurrent;  ///< (kernels, M, G d, d): W_hh^(j), tap 0 (position t - d), block (j, j)
  blocks upward;     ///< (kernels, M, G d, d): W_hx^(j) for j >= 2, tap 1, block (j, j - 1); [.., 0, ..] unused
  matrices input;    ///< (kernels, G d, ninp): W_hx^(1), tap 1 of the injection, block row 1
  rows bias2;        ///< (kernels, G q): zero in the theorem

  static RnnSparseParameters zeros(std::string const& label, TrellisShape const& s, int kernels, int groups) {
    long const M = s.layers, d = s.q() / s.layers, G = groups;
    RnnSparseParameters p;
    p.recurrent = blocks(label + "::recurrent", kernels, M, G * d, d);
    p.upward = blocks(label + "::upward", kernels, M, G * d, d);
    p.input = matrices(label + "::input", kernels, G * d, s.ninp);
    p.bias2 = rows(label + "::bias2", kernels, G * s.q());
    return p;
  }

  template <class F>
  void for_each(F&& f) const {
    f("recurrent", recurrent);
    f("upward", upward);
    f("input", input);
    f("bias2", bias2);
  }
};

/// The same weights in the Dense structure's layout (no weight norm): for checking the
/// sparse products against the dense ones.
template <class MemorySpace, class Scalar>
TrellisParameters<MemorySpace, Scalar> densify(RnnSparseParameters<MemorySpace, Scalar> const& sp,
                                               TrellisShape shape, int groups) {
  shape.weight_norm = false;
  long const K = sp.recurrent.extent(0), M = shape.layers, q = shape.q(), d = q / M, p = shape.ninp;
  auto dense = TrellisParameters<MemorySpace, Scalar>::zeros("trellis::densify", shape, int(K), groups);
  auto rec = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), sp.recurrent);
  auto up = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), sp.upward);
  auto in = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), sp.input);
  auto w1 = Kokkos::create_mirror_view(dense.weight1);
  auto w2 = Kokkos::create_mirror_view(dense.weight2);
  Kokkos::deep_copy(w1, Scalar(0));
  Kokkos::deep_copy(w2, Scalar(0));
  for (long k = 0; k < K; ++k)
    for (long g = 0; g < groups; ++g)
      for (long a = 0; a < d; ++a) {
        for (long j = 0; j < M; ++j)
          for (long b = 0; b < d; ++b) {
            w2(k, g * q + j * d + a, j * d + b) = rec(k, j, g * d + a, b);
            if (j > 0) w2(k, g * q + j * d + a, q + (j - 1) * d + b) = up(k, j, g * d + a, b);
          }
        for (long b = 0; b < p; ++b) w1(k, g * q + a, p + b) = in(k, g * d + a, b);
      }
  Kokkos::deep_copy(dense.weight1, w1);
  Kokkos::deep_copy(dense.weight2, w2);
  Kokkos::deep_copy(dense.bias2, sp.bias2);
  return dense;
}

}  // namespace trellis
