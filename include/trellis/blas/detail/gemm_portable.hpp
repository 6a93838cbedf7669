#pragma once
// The portable GEMM: one thread per entry of C, a plain inner product. Slow and
// obviously right; it is the tests' reference and the fallback of every backend.
#include <Kokkos_Core.hpp>

#include <trellis/blas/detail/matrix_ref.hpp>
#include <trellis/detail/kernel_shape.hpp>
#include <trellis/detail/kokkos_compat.hpp>

namespace trellis::detail {

struct PortableGemm {};

template <class Exec, class Scalar>
void gemm_impl(PortableGemm, Exec const& space, bool trans_a, bool trans_b, Scalar alpha,
               MatrixRef<Scalar const> a, MatrixRef<Scalar const> b, Scalar beta,
               MatrixRef<Scalar> c, std::size_t inner) {
  if (c.rows == 0 || c.cols == 0) return;
  Kokkos::parallel_for(
      "trellis::blas::gemm_portable",
      Grid2<Exec>(space, {0, 0},
                                                    {(long)c.rows, (long)c.cols}),
      KOKKOS_LAMBDA(long i, long j) {
        Scalar sum = 0;
        for (std::size_t k = 0; k < inner; ++k) {
          Scalar const aik = trans_a ? a.data[k * a.ld + i] : a.data[i * a.ld + k];
          Scalar const bkj = trans_b ? b.data[j * b.ld + k] : b.data[k * b.ld + j];
          sum += aik * bkj;
        }
        Scalar& cij = c.data[i * c.ld + j];
        // beta == 0 overwrites, as BLAS does: C may hold NaN from uninitialised memory.
        cij = beta == Scalar(0) ? alpha * sum : alpha * sum + beta * cij;
      });
}

}  // namespace trellis::detail
