#pragma once
// The Dense structure's products: the whole (G q) x (2 q) hidden kernel and the
// (G q) x (2 p) injection kernel, each one GEMM, after weight drop and weight norm.
#include <Kokkos_Core.hpp>

#include <trellis/blas/gemm.hpp>
#include <trellis/core/detail/weight_norm.hpp>
#include <trellis/core/masks.hpp>
#include <trellis/core/parameters.hpp>
#include <trellis/core/shape.hpp>
#include <trellis/core/structure.hpp>
#include <trellis/detail/kernel_shape.hpp>
#include <trellis/errors.hpp>
#include <trellis/detail/views.hpp>

namespace trellis::detail {

/// A structure's products (forward and backward GEMMs, effective weights), by trait.
template <class Structure, class Exec, class Scalar>
struct StructureOps;

/// What a structure keeps between forward and backward, by memory space.
template <class Structure, class MemorySpace, class Scalar>
struct StructureScratch {
  struct type {};
};

/// Scratch the dense products keep per network: the effective weights of the current
/// forward and the gradients with respect to them.
template <class MemorySpace, class Scalar>
struct DenseScratch {
  using matrices = Kokkos::View<Scalar***, Kokkos::LayoutRight, MemorySpace>;
  using rows = Kokkos::View<Scalar**, Kokkos::LayoutRight, MemorySpace>;
  matrices weight1, weight2, d_weight1, d_weight2;
  rows weight1_norm, weight2_norm;
  // With the injection folded into the hidden GEMM: [W2_k | W1_k | 0] (kernels, G q,
  // folded_width) and its gradient, whose column 2q + 2p is the bias gradient.
  matrices weight_folded, d_weight_folded;
};

template <class MemorySpace, class Scalar>
struct StructureScratch<Dense, MemorySpace, Scalar> {
  using type = DenseScratch<MemorySpace, Scalar>;
};

template <class Exec, class Scalar>
struct StructureOps<Dense, Exec, Scalar> {
  using memory_space = typename Exec::memory_space;
  using parameters_type = TrellisParameters<memory_space, Scalar>;
  using masks_type = TrellisMasks<memory_space, Scalar>;
  using scratch_type = DenseScratch<memory_space, Scalar>;
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space>;

  // The injection can ride in the hidden GEMM: [S | Xs | 1] [W2 | W1 | 0]^T.
  static constexpr bool can_fold_injection = true;

  static void validate(char const*, TrellisShape const&) {}

  static parameters_type allocate(std::string const& label, TrellisShape const& s, int kernels, int groups) {
    return parameters_type::zeros(label, s, kernels, groups);
  }
  static void initialize(parameters_type const& p, TrellisShape const&, std::uint64_t seed) {
    initialize_parameters(p, seed);
  }

  static void check_masks(char const* call, TrellisShape const& s, int kernels, int groups,
                          masks_type const& m) {
    long const rows = long(groups) * s.q();
    if (m.weight1_drop.extent(0) > 0)
      check_shape(call, "masks.weight1_drop", m.weight1_drop, {kernels, rows, s.ninp});
    if (m.weight2_drop.extent(0) > 0)
      check_shape(call, "masks.weight2_drop", m.weight2_drop, {kernels, rows, s.q()});
  }

  static void prepare(Exec const& space, scratch_type& c, TrellisShape const& s, int kernels, int groups) {
    long const q = s.q(), p = s.ninp, G = groups;
    if (c.weight1.extent(0) == std::size_t(kernels) && c.weight1.extent(2) == std::size_t(2 * p) &&
        c.weight2.extent(2) == std::size_t(2 * q) && c.weight2.extent(1) == std::size_t(G * q))
      return;
    auto alloc = [&](char const* name) { return uninitialized(space, "trellis::TrellisCache::", name); };
    using matrices = typename scratch_type::matrices;
    using rows = typename scratch_type::rows;
    c.weight1 = matrices(alloc("weight1"), kernels, G * q, 2 * p);
    c.weight2 = matrices(alloc("weight2"), kernels, G * q, 2 * q);
    c.d_weight1 = matrices(alloc("d_weight1"), kernels, G * q, 2 * p);
    c.d_weight2 = matrices(alloc("d_weight2"), kernels, G * q, 2 * q);
    c.weight1_norm = rows(alloc("weight1_norm"), kernels, G * q);
    c.weight2_norm = rows(alloc("weight2_norm"), kernels, G * q);
  }

  /// Columns of the folded history and kernels: 2q + 2p + 1 rounded up to a multiple
  /// of 8 with zeros, so that rows stay 32-byte aligned (Eigen's GEMM is slower on
  /// misaligned rows).
  static long folded_width(TrellisShape const& s) { return (2 * s.q() + 2 * s.ninp + 1 + 7) / 8 * 8; }

  /// Allocates the folded kernels (once per shape) or releases them.
  static void prepare_folded(Exec const& space, scratch_type& c, TrellisShape const& s, int kernels, int groups,
                             bool folded) {
    long const width = folded_width(s), rows = long(groups) * s.q();
    if (!folded) {
      c.weight_folded = {};
      c.d_weight_folded = {};
      return;
    }
    if (c.weight_folded.extent(0) == std::size_t(kernels) && c.weight_folded.extent(1) == std::size_t(rows) &&
        c.weight_folded.extent(2) == std::size_t(width))
      return;
    auto alloc = [&](char const* name) { return uninitialized(space, "trellis::TrellisCache::", name); };
    c.weight_folded = typename scratch_type::matrices(alloc("weight_folded"), kernels, rows, width);
    c.d_weight_folded = typename scratch_type::matrices(alloc("d_weight_folded"), kernels, rows, width);
  }

  /// W~_k = [W2_k | W1_k | 0 ...] from this forward's effective weights.
  static void fold_weights(Exec const& space, scratch_type const& c) {
    auto const w1 = c.weight1, w2 = c.weight2, wf = c.weight_folded;
    long const q2 = w2.extent(2), p2 = w1.extent(2);
    long const rows = wf.extent(1);
    for_each_index(
        "trellis::fold_weights", space, long(wf.extent(0)) * rows, long(wf.extent(2)), KOKKOS_LAMBDA(long ki, long j) {
          long const k = ki / rows, i = ki % rows;
          wf(k, i, j) = j < q2 ? w2(k, i, j) : j < q2 + p2 ? w1(k, i, j - q2) : Scalar(0);
        });
  }

  /// The folded kernel's columns [from, to): 0 and folded_width for all of it.
  static auto folded(typename scratch_type::matrices const& w, int k, long from, long to) {
    return Kokkos::subview(w, k, Kokkos::ALL, std::make_pair(from, to));
  }

  /// A = Se W~_k^T, Se = columns [from, folded_width) of the extended history on the
  /// given rows (from = 2q: the injection alone, for level 1's rows past its padding).
  template <class SV, class AV>
  static void hidden_folded(Exec const& space, scratch_type const& c, int k, long from, SV const& Se,
                            AV const& A, blas::MathMode mode) {
    long const width = c.weight_folded.extent(2);
    blas::gemm(space, blas::Op::none, blas::Op::transpose, Scalar(1), Se, folded(c.weight_folded, k, from, width),
               Scalar(0), A, mode);
  }

  /// dW~_k[:, from:] += dA^T Se; dSe = dA W~_k[:, from:to] when wanted (dSe non-empty;
  /// to = 2q without the input's gradient, 2q + 2p with it).
  template <class DAV, class SV, class DSV>
  static void hidden_folded_backward(Exec const& space, scratch_type const& c, int k, long from, long to,
                                     DAV const& dA, SV const& Se, DSV const& dSe, blas::MathMode mode) {
    long const width = c.weight_folded.extent(2);
    blas::gemm(space, blas::Op::transpose, blas::Op::none, Scalar(1), dA, Se,
               Scalar(1), folded(c.d_weight_folded, k, from, width), mode);
    if (dSe.extent(0) > 0 && to > from)
      blas::gemm(space, blas::Op::none, blas::Op::none, Scalar(1), dA, folded(c.weight_folded, k, from, to),
                 Scalar(0), dSe, mode);
  }

  /// Splits dW~ into the effective weights' gradients, and adds its column 2q + 2p (the
  /// sums of dA over rows and levels, from the history's ones) into the bias gradient.
  static void unfold_gradients(Exec const& space, scratch_type const& c, parameters_type const& grads) {
    auto const d1 = c.d_weight1, d2 = c.d_weight2, df = c.d_weight_folded;
    auto const db = grads.bias2;
    long const q2 = d2.extent(2), p2 = d1.extent(2), ones = q2 + p2;
    long const rows = df.extent(1);
    for_each_index(
        "trellis::unfold_gradients", space, long(df.extent(0)) * rows, ones + 1, KOKKOS_LAMBDA(long ki, long j) {
          long const k = ki / rows, i = ki % rows;
          if (j < q2)
            d2(k, i, j) = df(k, i, j);
          else if (j < ones)
            d1(k, i, j - q2) = df(k, i, j);
          else
            db(k, i) += df(k, i, ones);
        });
  }

  static WeightNormArgs<Scalar, memory_space> norm_args(int which, parameters_type const& p,
                                                        masks_type const& m, scratch_type const& c) {
    WeightNormArgs<Scalar, memory_space> a;
    a.v = which == 1 ? p.weight1 : p.weight2;
    a.g = which == 1 ? p.weight1_g : p.weight2_g;
    a.drop = which == 1 ? m.weight1_drop : m.weight2_drop;
    a.w = which == 1 ? c.weight1 : c.weight2;
    a.norm = which == 1 ? c.weight1_norm : c.weight2_norm;
    return a;
  }

  /// The effective weights of this forward: weight drop, then weight norm.
  static void forward_weights(Exec const& space, parameters_type const& p, masks_type const& m,
                              scratch_type const& c) {
    weight_norm_forward(space, norm_args(1, p, m, c));
    weight_norm_forward(space, norm_args(2, p, m, c));
  }

  static auto kernel(typename scratch_type::matrices const& w, int k) {
    return Kokkos::subview(w, k, Kokkos::ALL, Kokkos::ALL);
  }

  /// U = Xs W1_k^T, Xs = [x_{t-d} | x_t] (R, 2p).
  template <class XS, class UV>
  static void injection(Exec const& space, scratch_type const& c, parameters_type const&, int k, XS const& xs,
                        UV const& U, blas::MathMode mode) {
    blas::gemm(space, blas::Op::none, blas::Op::transpose, Scalar(1), xs, kernel(c.weight1, k), Scalar(0), U, mode);
  }

  /// A = S W2_k^T on the given rows.
  template <class SV, class AV>
  static void hidden(Exec const& space, scratch_type const& c, parameters_type const&, int k, SV const& S,
                     AV const& A, blas::MathMode mode) {
    blas::gemm(space, blas::Op::none, blas::Op::transpose, Scalar(1), S, kernel(c.weight2, k), Scalar(0), A, mode);
  }

  static void begin_backward(Exec const& space, scratch_type const& c) {
    Kokkos::deep_copy(space, c.d_weight1, Scalar(0));
    Kokkos::deep_copy(space, c.d_weight2, Scalar(0));
    if (c.d_weight_folded.extent(0) > 0) Kokkos::deep_copy(space, c.d_weight_folded, Scalar(0));
  }

  /// dW2_k += dA^T S; dS = dA W2_k.
  template <class DAV, class SV, class DSV>
  static void hidden_backward(Exec const& space, scratch_type const& c, parameters_type const&,
                              parameters_type const&, int k,
                              DAV const& dA, SV const& S, DSV const& dS, blas::MathMode mode) {
    hidden_weight_backward(space, c, k, dA, S, mode);
    hidden_data_backward(space, c, k, dA, dS, mode);
  }
  /// The two halves of hidden_backward, for a schedule that runs them apart.
  template <class DAV, class SV>
  static void hidden_weight_backward(Exec const& space, scratch_type const& c, int k, DAV const& dA, SV const& S,
                                     blas::MathMode mode) {
    blas::gemm(space, blas::Op::transpose, blas::Op::none, Scalar(1), dA, S, Scalar(1), kernel(c.d_weight2, k), mode);
  }
  template <class DAV, class DSV>
  static void hidden_data_backward(Exec const& space, scratch_type const& c, int k, DAV const& dA, DSV const& dS,
                                   blas::MathMode mode) {
    blas::gemm(space, blas::Op::none, blas::Op::none, Scalar(1), dA, kernel(c.weight2, k), Scalar(0), dS, mode);
  }

  /// dW1_k += dU^T Xs; dXs = dU W1_k when wanted (dXs non-empty).
  template <class DUV, class XS>
  static void injection_backward(Exec const& space, scratch_type const& c, parameters_type const&,
                                 parameters_type const&, int k,
                                 DUV const& dU, XS const& xs, matrix const& dxs, blas::MathMode mode) {
    blas::gemm(space, blas::Op::transpose, blas::Op::none, Scalar(1), dU, xs, Scalar(1), kernel(c.d_weight1, k), mode);
    if (dxs.extent(0) > 0)
      blas::gemm(space, blas::Op::none, blas::Op::none, Scalar(1), dU, kernel(c.weight1, k), Scalar(0), dxs, mode);
  }

  /// From the effective weights' gradients to the parameters' (weight norm, weight drop).
  static void finish_backward(Exec const& space, parameters_type const& p, parameters_type const& grads,
                              masks_type const& m, scratch_type const& c) {
    weight_norm_backward(space, norm_args(1, p, m, c), c.d_weight1, grads.weight1, grads.weight1_g);
    weight_norm_backward(space, norm_args(2, p, m, c), c.d_weight2, grads.weight2, grads.weight2_g);
  }
};

}  // namespace trellis::detail
