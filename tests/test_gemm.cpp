// trellis::blas::gemm on every backend against the portable kernel and a host loop.
#include <doctest/doctest.h>

#include <trellis/blas/gemm.hpp>

#include <cstdint>
#include <cstring>

#include "helpers.hpp"

namespace {

using trellis::blas::Op;
using namespace trellis::test;

/// gemm and naive_gemm against a host loop in double; with `pad`, A, B and C are the
/// first columns of wider matrices (ld > cols).
template <class Exec, class Scalar>
void check_gemm(Op op_a, Op op_b, long m, long n, long k, double alpha, double beta, long pad = 0) {
  CAPTURE(m);
  CAPTURE(n);
  CAPTURE(k);
  CAPTURE(pad);
  Exec space;
  std::mt19937_64 rng(m * 131 + n * 17 + k);
  bool const ta = op_a == Op::transpose, tb = op_b == Op::transpose;
  using Matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, typename Exec::memory_space>;
  long const ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  Matrix A("A", ar, ac + pad), B("B", br, bc + pad), C("C", m, n + pad), Cref("Cref", m, n + pad);
  auto a = random_vector(A.span(), rng), b = random_vector(B.span(), rng), c = random_vector(C.span(), rng);
  from_host(A, a);
  from_host(B, b);
  from_host(C, c);
  from_host(Cref, c);
  auto cols = [](Matrix const& x, long w) { return Kokkos::subview(x, Kokkos::ALL, std::make_pair(0L, w)); };
  trellis::blas::gemm(space, op_a, op_b, Scalar(alpha), cols(A, ac), cols(B, bc), Scalar(beta), cols(C, n));
  trellis::blas::naive_gemm(space, op_a, op_b, Scalar(alpha), cols(A, ac), cols(B, bc), Scalar(beta), cols(Cref, n));
  std::vector<double> want(c.begin(), c.end());
  for (long i = 0; i < m; ++i)
    for (long j = 0; j < n; ++j) {
      double s = 0;
      for (long l = 0; l < k; ++l)
        s += (ta ? a[l * (ac + pad) + i] : a[i * (ac + pad) + l]) * (tb ? b[j * (bc + pad) + l] : b[l * (bc + pad) + j]);
      want[i * (n + pad) + j] = alpha * s + beta * double(Scalar(c[i * (n + pad) + j]));
    }
  double const tol = 4 * epsilon<Scalar>() * (k + 2);
  check_close("gemm", to_host(C), want, tol);
  check_close("naive_gemm", to_host(Cref), want, tol);
}

/// Round to the nearest bfloat16, ties to even (what AMX and cuBLAS do to the operands).
double to_bf16(double x) {
  float f = float(x);
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return double(f);
}

/// MathMode::bf16 in float: where the bf16 path runs (AMX on the host, cuBLAS on CUDA),
/// C is the exact product of the bf16-rounded operands up to fp32 sums; A, B and C may
/// be column blocks of wider matrices (ld > cols).
template <class Exec>
void check_bf16_gemm(Op op_a, Op op_b, long m, long n, long k, float alpha, float beta, long pad) {
  CAPTURE(m);
  CAPTURE(n);
  CAPTURE(k);
  CAPTURE(pad);
  Exec space;
  std::mt19937_64 rng(m * 7 + n * 3 + k);
  bool const ta = op_a == Op::transpose, tb = op_b == Op::transpose;
  using Matrix = Kokkos::View<float**, Kokkos::LayoutRight, typename Exec::memory_space>;
  long const ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  Matrix A("A", ar, ac + pad), B("B", br, bc + pad), C("C", m, n + pad);
  auto a = random_vector(A.span(), rng), b = random_vector(B.span(), rng), c = random_vector(C.span(), rng);
  from_host(A, a);
  from_host(B, b);
  from_host(C, c);
  auto cols = [](Matrix const& x, long w) { return Kokkos::subview(x, Kokkos::ALL, std::make_pair(0L, w)); };
  trellis::blas::gemm(space, op_a, op_b, alpha, cols(A, ac), cols(B, bc), beta, cols(C, n),
                      trellis::blas::MathMode::bf16);
  bool const host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible;
  // The host's AMX kernel is held to the rounded operands exactly; elsewhere (cuBLAS,
  // whose rounding of the operands is its own) only the bf16 error bound applies.
  bool const rounded = host && trellis::blas::bf16_products_available();
  auto const got = to_host(C);
  double worst = 0;
  for (long i = 0; i < m; ++i)
    for (long j = 0; j < n; ++j) {
      double s = 0, sr = 0, mag = 0;
      for (long l = 0; l < k; ++l) {
        double const x = ta ? a[l * (ac + pad) + i] : a[i * (ac + pad) + l];
        double const y = tb ? b[j * (bc + pad) + l] : b[l * (bc + pad) + j];
        s += x * y;
        sr += to_bf16(x) * to_bf16(y);
        mag += std::fabs(x * y);
      }
      double const base = beta * c[i * (n + pad) + j];
      double const g = got[i * (n + pad) + j];
      double const fp32_sums = 4 * epsilon<float>() * (k + 2) * (std::fabs(alpha) * mag + std::fabs(base));
      double const err_r = std::fabs(g - (alpha * sr + base)), err_e = std::fabs(g - (alpha * s + base));
      if (rounded) {
        if (err_r > fp32_sums) worst = std::max(worst, err_r / fp32_sums);
      } else if (err_e > fp32_sums) {
        worst = std::max(worst, err_e / fp32_sums);
      }
      // bf16 operands: each has a relative error of at most 2^-9.
      CHECK(err_e <= 2.0 * std::ldexp(1.0, -8) * std::fabs(alpha) * mag + fp32_sums);
    }
  // Padding columns stay as they were.
  for (long i = 0; i < m; ++i)
    for (long j = n; j < n + pad; ++j) CHECK(got[i * (n + pad) + j] == float(c[i * (n + pad) + j]));
  CHECK_MESSAGE(worst == 0, "error over the bound by a factor ", worst);
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("gemm in bf16 products is the product of the rounded operands", Exec, gemm_bf16) {
  bool const host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible;
  if (host && !trellis::blas::bf16_products_available())
    MESSAGE("no AMX-BF16, and no AVX512-BF16 with oneDNN, here: MathMode::bf16 is strict fp32 on this host, "
            "checked as such");
  for (Op op_a : {Op::none, Op::transpose})
    for (Op op_b : {Op::none, Op::transpose}) {
      CAPTURE(int(op_a));
      CAPTURE(int(op_b));
      // Whole tiles, ragged edges in every dimension, a single row, and k = 0.
      check_bf16_gemm<Exec>(op_a, op_b, 64, 32, 64, 1.0f, 0.0f, 0);
      check_bf16_gemm<Exec>(op_a, op_b, 37, 53, 71, 0.5f, 0.75f, 3);
      check_bf16_gemm<Exec>(op_a, op_b, 1, 17, 33, 1.0f, 1.0f, 1);
      check_bf16_gemm<Exec>(op_a, op_b, 100, 70, 300, -2.0f, 0.0f, 0);
      check_bf16_gemm<Exec>(op_a, op_b, 5, 6, 0, 1.0f, 0.5f, 2);
    }
  // Double ignores the mode: the strict result to the last bit.
  Exec space;
  using Matrix = Kokkos::View<double**, Kokkos::LayoutRight, typename Exec::memory_space>;
  std::mt19937_64 rng(9);
  Matrix A("A", 9, 40), B("B", 40, 33), C1("C1", 9, 33), C2("C2", 9, 33);
  from_host(A, random_vector(A.span(), rng));
  from_host(B, random_vector(B.span(), rng));
  trellis::blas::gemm(space, Op::none, Op::none, 1.0, A, B, 0.0, C1);
  trellis::blas::gemm(space, Op::none, Op::none, 1.0, A, B, 0.0, C2, trellis::blas::MathMode::bf16);
  CHECK(to_host(C1) == to_host(C2));
}

TEST_CASE_TEMPLATE_DEFINE("gemm matches the portable kernel and a host loop", Exec, gemm_all) {
  for (Op op_a : {Op::none, Op::transpose})
    for (Op op_b : {Op::none, Op::transpose}) {
      CAPTURE(int(op_a));
      CAPTURE(int(op_b));
      check_gemm<Exec, float>(op_a, op_b, 7, 5, 11, 1.0, 0.0);
      check_gemm<Exec, double>(op_a, op_b, 13, 9, 33, 0.5, 1.0);
      check_gemm<Exec, double>(op_a, op_b, 1, 64, 40, 1.0, 0.25);
      check_gemm<Exec, float>(op_a, op_b, 3, 4, 0, 1.0, 0.5);
      // Large enough for oneDNN where the build has it (in float), with alpha, beta
      // and column blocks of wider matrices.
      check_gemm<Exec, float>(op_a, op_b, 70, 65, 37, 0.5, 1.0);
      check_gemm<Exec, float>(op_a, op_b, 33, 129, 64, 1.0, 0.0, 5);
      check_gemm<Exec, float>(op_a, op_b, 40, 50, 60, -1.5, 0.25, 1);
      check_gemm<Exec, float>(op_a, op_b, 1, 300, 200, 1.0, 0.0);
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
  trellis::blas::naive_gemm(space, Op::none, Op::none, 1.0, A, B, 0.0, Cref);
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
TEST_CASE_TEMPLATE_APPLY(gemm_bf16, trellis::test::Backends);

#if defined(KOKKOS_ENABLE_SERIAL)
TEST_CASE("host GEMMs on Serial run on serial_gemm_threads() threads where the build has OpenMP") {
  using trellis::blas::serial_gemm_threads;
  using trellis::blas::set_serial_gemm_threads;
  Kokkos::Serial space;
  CHECK(serial_gemm_threads() == 1);  // the default: no oversubscription
  CHECK(trellis::blas::host_gemm_threads(space) == 1);
  CHECK_THROWS_WITH_AS(set_serial_gemm_threads(0), doctest::Contains("set_serial_gemm_threads: 0 threads"),
                       trellis::invalid_argument);
  set_serial_gemm_threads(2);
  CHECK(serial_gemm_threads() == 2);
  CHECK(trellis::blas::host_gemm_threads(space) == (trellis::blas::serial_gemm_threads_supported ? 2 : 1));
  // Large enough for Eigen to split it; the result is the reference's either way.
  for (Op op_b : {Op::none, Op::transpose}) {
    check_gemm<Kokkos::Serial, double>(Op::none, op_b, 300, 257, 260, 1.0, 0.5);
    check_gemm<Kokkos::Serial, float>(Op::transpose, op_b, 129, 300, 200, 1.0, 0.0);
  }
  // bf16 products (AMX tiles or oneDNN) on the same threads: the rounded-operand bound
  // holds with C split between them.
  for (Op op_a : {Op::none, Op::transpose})
    for (Op op_b : {Op::none, Op::transpose}) {
      check_bf16_gemm<Kokkos::Serial>(op_a, op_b, 100, 70, 300, -2.0f, 0.0f, 0);
      check_bf16_gemm<Kokkos::Serial>(op_a, op_b, 161, 97, 64, 0.5f, 0.75f, 3);
    }
  CHECK(Eigen::nbThreads() == (trellis::blas::serial_gemm_threads_supported ? 2 : 1));
  set_serial_gemm_threads(1);
  check_gemm<Kokkos::Serial, double>(Op::none, Op::none, 64, 64, 64, 1.0, 0.0);
  CHECK(Eigen::nbThreads() == 1);
#if defined(KOKKOS_ENABLE_OPENMP)
  // A space with threads of its own keeps them.
  Kokkos::OpenMP omp;
  CHECK(trellis::blas::host_gemm_threads(omp) == omp.concurrency());
#endif
}
#endif
