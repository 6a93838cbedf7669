#pragma once
// The Dense structure's products: the whole (G q) x (2 q) hidden kernel and the
// (G q) x (2 p) injection kernel, each one GEMM, after weight drop and weight norm.
#include <Kokkos_Core.hpp>

#include <trellis/blas.hpp>
#include <trellis/detail/weight_norm.hpp>
#include <trellis/dropout.hpp>
#include <trellis/errors.hpp>
#include <trellis/parameters.hpp>
#include <trellis/shape.hpp>
#include <trellis/structure.hpp>

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
    auto alloc = [&](char const* name) {
      return Kokkos::view_alloc(space, Kokkos::WithoutInitializing, std::string("trellis::TrellisCache::") + name);
    };
    using matrices = typename scratch_type::matrices;
    using rows = typename scratch_type::rows;
    c.weight1 = matrices(alloc("weight1"), kernels, G * q, 2 * p);
    c.weight2 = matrices(alloc("weight2"), kernels, G * q, 2 * q);
    c.d_weight1 = matrices(alloc("d_weight1"), kernels, G * q, 2 * p);
    c.d_weight2 = matrices(alloc("d_weight2"), kernels, G * q, 2 * q);
    c.weight1_norm = rows(alloc("weight1_norm"), kernels, G * q);
    c.weight2_norm = rows(alloc("weight2_norm"), kernels, G * q);
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
  }

  /// dW2_k += dA^T S; dS = dA W2_k.
  template <class DAV, class SV, class DSV>
  static void hidden_backward(Exec const& space, scratch_type const& c, parameters_type const&,
                              parameters_type const&, int k,
                              DAV const& dA, SV const& S, DSV const& dS, blas::MathMode mode) {
    blas::gemm(space, blas::Op::transpose, blas::Op::none, Scalar(1), dA, S, Scalar(1), kernel(c.d_weight2, k), mode);
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
