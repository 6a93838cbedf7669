// trellis::blas::gemm on every backend against the portable kernel and a host loop.
#include <doctest/doctest.h>

#include <trellis/blas.hpp>

#include "helpers.hpp"

namespace {

using trellis::blas::Op;
using namespace trellis::test;

template <class Exec, class Scalar>
void check_gemm(Op op_a, Op op_b, long m, long n, long k, double alpha, double beta) {
  Exec space;
  std::mt19937_64 rng(m * 131 + n * 17 + k);
  bool const ta = op_a == Op::transpose, tb = op_b == Op::transpose;
  using Matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, typename Exec::memory_space>;
  Matrix A("A", ta ? k : m, ta ? m : k), B("B", tb ? n : k, tb ? k : n), C("C", m, n),
      Cref("Cref", m, n);
  auto a = random_vector(A.span(), rng), b = random_vector(B.span(), rng), c = random_vector(C.span(), rng);
  from_host(A, a);
  from_host(B, b);
  from_host(C, c);
  from_host(Cref, c);
  trellis::blas::gemm(space, op_a, op_b, Scalar(alpha), A, B, Scalar(beta), C);
  trellis::blas::reference_gemm(space, op_a, op_b, Scalar(alpha), A, B, Scalar(beta), Cref);
  std::vector<double> want(m * n);
  for (long i = 0; i < m; ++i)
    for (long j = 0; j < n; ++j) {
      double s = 0;
      for (long l = 0; l < k; ++l)
        s += (ta ? a[l * m + i] : a[i * k + l]) * (tb ? b[j * k + l] : b[l * n + j]);
      want[i * n + j] = alpha * s + beta * c[i * n + j];
    }
  double const tol = 4 * epsilon<Scalar>() * (k + 2);
  check_close("gemm", to_host(C), want, tol);
  check_close("reference_gemm", to_host(Cref), want, tol);
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("gemm matches the portable kernel and a host loop", Exec, gemm_all) {
  for (Op op_a : {Op::none, Op::transpose})
    for (Op op_b : {Op::none, Op::transpose}) {
      CAPTURE(int(op_a));
      CAPTURE(int(op_b));
      check_gemm<Exec, float>(op_a, op_b, 7, 5, 11, 1.0, 0.0);
      check_gemm<Exec, double>(op_a, op_b, 13, 9, 33, 0.5, 1.0);
      check_gemm<Exec, double>(op_a, op_b, 1, 64, 40, 1.0, 0.25);
      check_gemm<Exec, float>(op_a, op_b, 3, 4, 0, 1.0, 0.5);
    }
}

TEST_CASE_TEMPLATE_DEFINE("gemm on column blocks of a row-major matrix", Exec, gemm_strided) {
  Exec space;
  using Matrix = Kokkos::View<double**, Kokkos::LayoutRight, typename Exec::memory_space>;
  std::mt19937_64 rng(3);
  Matrix big("big", 6, 10), B("B", 4, 3), Cbig("Cbig", 6, 8), Cref("Cref", 6, 3);
  auto const hbig = random_vector(big.span(), rng), hb = random_vector(B.span(), rng);
  from_host(big, hbig);
  from_host(B, hb);
  // Column blocks keep the parent's row stride (10 and 8), whatever layout type
  // Kokkos gives the subview.
  auto A = Kokkos::subview(big, Kokkos::ALL, std::make_pair(3, 7));
  auto C = Kokkos::subview(Cbig, Kokkos::ALL, std::make_pair(2, 5));
  trellis::blas::gemm(space, Op::none, Op::none, 1.0, A, B, 0.0, C);
  trellis::blas::reference_gemm(space, Op::none, Op::none, 1.0, A, B, 0.0, Cref);
  std::vector<double> want(6 * 3, 0);
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) want[i * 3 + j] += hbig[i * 10 + 3 + k] * hb[k * 3 + j];
  auto const cbig = to_host(Cbig);
  std::vector<double> got;
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 3; ++j) got.push_back(cbig[i * 8 + 2 + j]);
  check_close("strided A and C", got, want, 1e-14);
  check_close("strided A, reference", to_host(Cref), want, 1e-14);
}

TEST_CASE_TEMPLATE_DEFINE("gemm names the call and the shapes on a mismatch", Exec, gemm_shapes) {
  Exec space;
  using Matrix = Kokkos::View<double**, Kokkos::LayoutRight, typename Exec::memory_space>;
  Matrix A("A", 3, 4), B("B", 5, 2), C("C", 3, 2);
  CHECK_THROWS_WITH_AS(trellis::blas::gemm(space, Op::none, Op::none, 1.0, A, B, 0.0, C),
                       doctest::Contains("trellis::blas::gemm: op(A) is 3 x 4, op(B) is 5 x 2"),
                       trellis::invalid_argument);
}

TEST_CASE_TEMPLATE_APPLY(gemm_all, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(gemm_strided, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(gemm_shapes, trellis::test::Backends);
