#pragma once
// Host GEMM through Eigen, on the Views' own memory (Eigen::Map, no copies).
// Called from host code only, never inside a Kokkos parallel region.
#include <Kokkos_Core.hpp>
#include <Eigen/Core>

#include <trellis/blas/detail/matrix_ref.hpp>
#include <trellis/blas/host_threads.hpp>

namespace trellis::detail {

struct EigenGemm {};

template <class Exec, class Scalar>
void gemm_impl(EigenGemm, Exec const& space, bool trans_a, bool trans_b, Scalar alpha,
               MatrixRef<Scalar const> a, MatrixRef<Scalar const> b, Scalar beta,
               MatrixRef<Scalar> c, std::size_t inner) {
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  using ConstMap = Eigen::Map<Matrix const, Eigen::Unaligned, Stride>;
  using Map = Eigen::Map<Matrix, Eigen::Unaligned, Stride>;
  if (c.rows == 0 || c.cols == 0) return;
  trellis::blas::detail::fence_before_host_gemm(space);
#if defined(_OPENMP)
  // Inside a parallel region (an overlapped GEMM) Eigen keeps to the calling thread, and
  // its thread count is a global the other thread reads: leave it as it is.
  if (!omp_in_parallel())
#endif
    Eigen::setNbThreads(trellis::blas::host_gemm_threads(space));
  ConstMap A(a.data, a.rows, a.cols, Stride(a.ld));
  ConstMap B(b.data, b.rows, b.cols, Stride(b.ld));
  Map C(c.data, c.rows, c.cols, Stride(c.ld));
  if (inner == 0) {
    if (beta == Scalar(0)) C.setZero(); else C *= beta;
    return;
  }
  auto product = [&](auto const& opA, auto const& opB) {
    if (beta == Scalar(0)) {
      C.noalias() = alpha * (opA * opB);
    } else {
      if (beta != Scalar(1)) C *= beta;
      C.noalias() += alpha * (opA * opB);
    }
  };
  if (!trans_a && !trans_b) product(A, B);
  else if (trans_a && !trans_b) product(A.transpose(), B);
  else if (!trans_a && trans_b) product(A, B.transpose());
  else product(A.transpose(), B.transpose());
}

}  // namespace trellis::detail
