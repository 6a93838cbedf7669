#pragma once
// A = S W^T for the few rows of a streaming step on host spaces. A one-row product is
// bound by reading W, and a whole kernel does not fit one core's cache; so the rows of
// W are split statically over the space's threads, each thread multiplies its share
// with Eigen (alone: Eigen runs sequentially inside a parallel region), and reads the
// same share at every level and every step, from its own cache.
#include <Kokkos_Core.hpp>
#include <Eigen/Core>

#include <algorithm>

#include <trellis/errors.hpp>

namespace trellis::detail {

template <class Exec, class SV, class WV, class AV>
void few_rows_times_transpose(char const* label, Exec const& space, SV const& S, WV const& W, AV const& A) {
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible) {
    using Scalar = typename AV::non_const_value_type;
    using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Stride = Eigen::OuterStride<>;
    long const N = long(S.extent(0)), K = long(S.extent(1)), M = long(W.extent(0));
    Scalar const* s = S.data();
    Scalar const* w = W.data();
    Scalar* a = A.data();
    long const lds = long(S.stride(0)), ldw = long(W.stride(0)), lda = long(A.stride(0));
    long const parts = std::max<long>(1, std::min<long>(long(space.concurrency()), M / 64));
    space.fence();
    Eigen::setNbThreads(1);
    Kokkos::parallel_for(label, Kokkos::RangePolicy<Exec, Kokkos::Schedule<Kokkos::Static>>(space, 0, parts),
                         [=](long part) {
                           long const lo = M * part / parts, hi = M * (part + 1) / parts;
                           Eigen::Map<Matrix const, Eigen::Unaligned, Stride> Sm(s, N, K, Stride(lds));
                           Eigen::Map<Matrix const, Eigen::Unaligned, Stride> Wm(w + lo * ldw, hi - lo, K, Stride(ldw));
                           Eigen::Map<Matrix, Eigen::Unaligned, Stride> Am(a + lo, N, hi - lo, Stride(lda));
                           Am.noalias() = Sm * Wm.transpose();
                         });
  } else {
    (void)label, (void)space, (void)S, (void)W, (void)A;
    fail("trellis::detail::few_rows_times_transpose: host spaces only");
  }
}

}  // namespace trellis::detail
