#pragma once
// The RnnSparse structure's products: one GEMM per nonzero block and gate, on column
// blocks of the history and gate matrices (row-major with a leading dimension), so
// that the zero blocks cost nothing.
#include <Kokkos_Core.hpp>

#include <random>
#include <utility>

#include <trellis/blas/gemm.hpp>
#include <trellis/core/detail/dense_structure.hpp>
#include <trellis/core/masks.hpp>
#include <trellis/core/rnn_sparse.hpp>
#include <trellis/core/shape.hpp>
#include <trellis/core/structure.hpp>
#include <trellis/errors.hpp>
#include <trellis/detail/views.hpp>

namespace trellis::detail {

template <class Exec, class Scalar>
struct StructureOps<RnnSparse, Exec, Scalar> {
  using memory_space = typename Exec::memory_space;
  using parameters_type = RnnSparseParameters<memory_space, Scalar>;
  using masks_type = TrellisMasks<memory_space, Scalar>;
  using scratch_type = typename StructureScratch<RnnSparse, memory_space, Scalar>::type;
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space>;

  static void validate(char const* call, TrellisShape const& s) {
    if (s.layers < 1 || s.q() % s.layers != 0 || s.nout != s.q() / s.layers)
      fail(call, ": the RnnSparse structure needs q = nhid + nout = layers * d and nout = d; got ",
           s.describe(), " layers=", s.layers);
    if (s.weight_norm) fail(call, ": the RnnSparse structure has no weight normalisation (", s.describe(), ")");
  }

  static parameters_type allocate(std::string const& label, TrellisShape const& s, int kernels, int groups) {
    return parameters_type::zeros(label, s, kernels, groups);
  }

  /// N(0, 0.01) on every stored block, zero bias (the theorem's).
  static void initialize(parameters_type const& p, TrellisShape const&, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 0.01);
    auto draw = [&] { return normal(rng); };
    fill_on_host(p.recurrent, draw);
    fill_on_host(p.upward, draw);
    fill_on_host(p.input, draw);
  }

  static void check_masks(char const* call, TrellisShape const& s, int, int, masks_type const& m) {
    if (m.weight1_drop.extent(0) > 0 || m.weight2_drop.extent(0) > 0)
      fail(call, ": the RnnSparse structure has no weight drop (", s.describe(), ")");
  }

  static constexpr bool can_fold_injection = false;  // its products are per block, not one GEMM

  static void prepare(Exec const&, scratch_type&, TrellisShape const&, int, int) {}
  static void forward_weights(Exec const&, parameters_type const&, masks_type const&, scratch_type const&) {}
  static void begin_backward(Exec const&, scratch_type const&) {}
  static void finish_backward(Exec const&, parameters_type const&, parameters_type const&, masks_type const&,
                              scratch_type const&) {}

  template <class M>
  static auto columns(M const& m, long begin, long width) {
    return Kokkos::subview(m, Kokkos::ALL, std::make_pair(begin, begin + width));
  }
  // Rows of gate g in a (G d, width) block.
  template <class B>
  static auto gate(B const& block, long g, long d) {
    return Kokkos::subview(block, std::make_pair(g * d, (g + 1) * d), Kokkos::ALL);
  }
  static auto block(typename parameters_type::blocks const& b, int k, long j) {
    return Kokkos::subview(b, k, j, Kokkos::ALL, Kokkos::ALL);
  }
  static long groups_of(parameters_type const& p, long d) { return long(p.recurrent.extent(2)) / d; }

  /// U = [W_hx^(1) x_t in block row 1 of every gate | 0 elsewhere].
  template <class XS, class UV>
  static void injection(Exec const& space, scratch_type const&, parameters_type const& p, int k, XS const& xs,
                        UV const& U, blas::MathMode mode) {
    long const d = p.recurrent.extent(3), q = d * p.recurrent.extent(1), ninp = p.input.extent(2);
    long const G = groups_of(p, d);
    Kokkos::deep_copy(space, U, Scalar(0));
    auto const x_t = columns(xs, ninp, ninp);
    auto const w = Kokkos::subview(p.input, k, Kokkos::ALL, Kokkos::ALL);
    for (long g = 0; g < G; ++g)
      blas::gemm(space, blas::Op::none, blas::Op::transpose, Scalar(1), x_t, gate(w, g, d), Scalar(0),
                 columns(U, g * q, d), mode);
  }

  /// A = S W^T block by block: gate g, layer j gets S_{t-d}[j] W_hh^(j)^T + S_t[j-1] W_hx^(j)^T.
  template <class SV, class AV>
  static void hidden(Exec const& space, scratch_type const&, parameters_type const& p, int k, SV const& S,
                     AV const& A, blas::MathMode mode) {
    long const M = p.recurrent.extent(1), d = p.recurrent.extent(3), q = M * d, G = groups_of(p, d);
    for (long j = 0; j < M; ++j)
      for (long g = 0; g < G; ++g) {
        auto const out = columns(A, g * q + j * d, d);
        blas::gemm(space, blas::Op::none, blas::Op::transpose, Scalar(1), columns(S, j * d, d),
                   gate(block(p.recurrent, k, j), g, d), Scalar(0), out, mode);
        if (j > 0)
          blas::gemm(space, blas::Op::none, blas::Op::transpose, Scalar(1), columns(S, q + (j - 1) * d, d),
                     gate(block(p.upward, k, j), g, d), Scalar(1), out, mode);
      }
  }

  /// dW += dA^T S and dS = dA W, block by block.
  template <class DAV, class SV, class DSV>
  static void hidden_backward(Exec const& space, scratch_type const&, parameters_type const& p,
                              parameters_type const& grads, int k, DAV const& dA, SV const& S, DSV const& dS,
                              blas::MathMode mode) {
    long const M = p.recurrent.extent(1), d = p.recurrent.extent(3), q = M * d, G = groups_of(p, d);
    Kokkos::deep_copy(space, dS, Scalar(0));  // the last block column of tap 1 gets nothing
    for (long j = 0; j < M; ++j)
      for (long g = 0; g < G; ++g) {
        auto const dA_gj = columns(dA, g * q + j * d, d);
        blas::gemm(space, blas::Op::transpose, blas::Op::none, Scalar(1), dA_gj, columns(S, j * d, d), Scalar(1),
                   gate(block(grads.recurrent, k, j), g, d), mode);
        blas::gemm(space, blas::Op::none, blas::Op::none, Scalar(1), dA_gj, gate(block(p.recurrent, k, j), g, d),
                   Scalar(1), columns(dS, j * d, d), mode);
        if (j > 0) {
          blas::gemm(space, blas::Op::transpose, blas::Op::none, Scalar(1), dA_gj, columns(S, q + (j - 1) * d, d),
                     Scalar(1), gate(block(grads.upward, k, j), g, d), mode);
          blas::gemm(space, blas::Op::none, blas::Op::none, Scalar(1), dA_gj, gate(block(p.upward, k, j), g, d),
                     Scalar(1), columns(dS, q + (j - 1) * d, d), mode);
        }
      }
  }

  template <class DUV, class XS>
  static void injection_backward(Exec const& space, scratch_type const&, parameters_type const& p,
                                 parameters_type const& grads, int k, DUV const& dU, XS const& xs,
                                 matrix const& dxs, blas::MathMode mode) {
    long const d = p.recurrent.extent(3), q = d * p.recurrent.extent(1), ninp = p.input.extent(2);
    long const G = groups_of(p, d);
    auto const w = Kokkos::subview(p.input, k, Kokkos::ALL, Kokkos::ALL);
    auto const dw = Kokkos::subview(grads.input, k, Kokkos::ALL, Kokkos::ALL);
    if (dxs.extent(0) > 0) Kokkos::deep_copy(space, dxs, Scalar(0));  // tap 0 of the input is unused
    for (long g = 0; g < G; ++g) {
      auto const dU_g = columns(dU, g * q, d);
      blas::gemm(space, blas::Op::transpose, blas::Op::none, Scalar(1), dU_g, columns(xs, ninp, ninp), Scalar(1),
                 gate(dw, g, d), mode);
      if (dxs.extent(0) > 0)
        blas::gemm(space, blas::Op::none, blas::Op::none, Scalar(1), dU_g, gate(w, g, d), Scalar(1),
                   columns(dxs, ninp, ninp), mode);
    }
  }
};

}  // namespace trellis::detail
