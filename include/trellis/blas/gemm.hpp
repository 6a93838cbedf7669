#pragma once
// trellis::blas::gemm(space, ...): one entry that checks shapes, then dispatches by a
// trait on the execution space: Eigen on host spaces (oneDNN for float where the build
// chose it, AMX tiles for bf16 products), cuBLAS on Kokkos::Cuda, and a
// portable Kokkos kernel elsewhere (also reachable as naive_gemm, the tests'
// reference). All matrices are row-major rank-2 Views.
#include <Kokkos_Core.hpp>

#include <string>
#include <type_traits>

#include <trellis/blas/detail/gemm_amx.hpp>
#include <trellis/blas/detail/gemm_cublas.hpp>
#include <trellis/blas/detail/gemm_eigen.hpp>
#include <trellis/blas/detail/gemm_onednn.hpp>
#include <trellis/blas/detail/gemm_portable.hpp>
#include <trellis/blas/detail/matrix_ref.hpp>
#include <trellis/blas/host_threads.hpp>
#include <trellis/errors.hpp>

namespace trellis::blas {

enum class Op { none, transpose };

/// Precision of single-precision products: strict FP32 (the default); TF32 tensor cores
/// on GPUs (ignored on host spaces); or bfloat16 products with fp32 accumulation (on
/// host CPUs: AMX tiles where the CPU has AMX-BF16, else oneDNN's AVX512-BF16 kernels
/// where the build has oneDNN and the CPU those instructions, else strict FP32; bf16
/// tensor cores through cuBLAS on GPUs). Ignored in double.
enum class MathMode { strict, tf32, bf16 };

/// True where MathMode::bf16 runs on AMX tiles on this host CPU (checked once).
inline bool bf16_tiles_available() { return trellis::detail::amx_available(); }

/// True where MathMode::bf16 has bf16 products on this host CPU: AMX tiles, or
/// oneDNN's AVX512-BF16 kernels; where false, host GEMMs in that mode stay strict FP32.
inline bool bf16_products_available() {
  return trellis::detail::amx_available() || trellis::detail::onednn_bf16_available();
}

/// Which library computes host GEMMs in fp32 in this build: "oneDNN" or "Eigen"
/// (double is always Eigen's; small products stay on Eigen either way).
inline char const* host_gemm_library() {
#if defined(TRELLIS_HAVE_ONEDNN)
  return "oneDNN";
#else
  return "Eigen";
#endif
}

/// How fp32 GEMMs of `mode` round on Exec, for logs: "" when strict; otherwise what the
/// mode does there, or that it has no effect (TF32 on a CPU; bf16 without bf16 products).
template <class Exec>
std::string math_mode_note(MathMode mode) {
  if (mode == MathMode::strict) return "";
  bool const host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible;
  if (mode == MathMode::tf32) return host ? " (--tf32 has no effect on the CPU)" : " with TF32 GEMMs";
  if (!host) return " with bf16 GEMMs";
  if (bf16_tiles_available()) return " with bf16 GEMMs on AMX tiles";
  if (trellis::detail::onednn_bf16_available()) return " with bf16 GEMMs (oneDNN, AVX512-BF16)";
#if defined(TRELLIS_HAVE_ONEDNN)
  return " (--bf16: this CPU has neither AMX-BF16 nor AVX512-BF16, GEMMs stay fp32)";
#else
  return " (--bf16: this CPU has no AMX-BF16 and this build no oneDNN for AVX512-BF16, GEMMs stay fp32)";
#endif
}

namespace detail {

/// Which GEMM an execution space uses. Host-accessible spaces use Eigen.
template <class Exec, class Enable = void>
struct gemm_backend {
  using type = std::conditional_t<
      Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible,
      trellis::detail::EigenGemm, trellis::detail::PortableGemm>;
};
#if defined(KOKKOS_ENABLE_CUDA)
template <>
struct gemm_backend<Kokkos::Cuda> {
  using type = trellis::detail::CublasGemm;
};
#endif

template <class Backend, class Exec, class AV, class BV, class CV>
void gemm_checked(char const* call, Exec const& space, Op op_a, Op op_b,
                  typename CV::value_type alpha, AV const& a, BV const& b,
                  typename CV::value_type beta, CV const& c, MathMode mode) {
  using Scalar = typename CV::value_type;
  static_assert(std::is_same_v<std::remove_const_t<typename AV::value_type>, Scalar> &&
                    std::is_same_v<std::remove_const_t<typename BV::value_type>, Scalar>,
                "trellis::blas::gemm: A, B and C must hold the same scalar type");
  static_assert(!std::is_const_v<typename CV::value_type>, "trellis::blas::gemm: C is written");
  static_assert(Kokkos::SpaceAccessibility<Exec, typename AV::memory_space>::accessible &&
                    Kokkos::SpaceAccessibility<Exec, typename BV::memory_space>::accessible &&
                    Kokkos::SpaceAccessibility<Exec, typename CV::memory_space>::accessible,
                "trellis::blas::gemm: the execution space cannot reach A, B or C");
  bool const ta = op_a == Op::transpose, tb = op_b == Op::transpose;
  auto const ra = trellis::detail::matrix_ref(call, "A", a);
  auto const rb = trellis::detail::matrix_ref(call, "B", b);
  auto const rc = trellis::detail::matrix_ref(call, "C", c);
  std::size_t const m = ta ? ra.cols : ra.rows, k = ta ? ra.rows : ra.cols;
  std::size_t const kb = tb ? rb.cols : rb.rows, n = tb ? rb.rows : rb.cols;
  if (k != kb || rc.rows != m || rc.cols != n)
    trellis::detail::fail(call, ": op(A) is ", m, " x ", k, ", op(B) is ", kb, " x ", n,
                          ", C is ", rc.rows, " x ", rc.cols, " (A ",
                          trellis::detail::shape_of(a), ta ? " transposed" : "", ", B ",
                          trellis::detail::shape_of(b), tb ? " transposed" : "", ")");
  trellis::detail::MatrixRef<Scalar const> ca{ra.data, ra.rows, ra.cols, ra.ld};
  trellis::detail::MatrixRef<Scalar const> cb{rb.data, rb.rows, rb.cols, rb.ld};
  if constexpr (std::is_same_v<Backend, trellis::detail::EigenGemm>) {
    if constexpr (std::is_same_v<Scalar, float>) {
      bool const bf16 = mode == MathMode::bf16;
      if (bf16 && trellis::detail::amx_available()) {
        trellis::detail::gemm_impl(trellis::detail::AmxGemm{}, space, ta, tb, alpha, ca, cb,
                                   beta, rc, k);
        return;
      }
#if defined(TRELLIS_HAVE_ONEDNN)
      // bf16 products on every size (the mode's rounding does not depend on shape);
      // fp32 ones where oneDNN's call pays for itself.
      bool const reduced = bf16 && trellis::detail::onednn_bf16_available();
      if (k > 0 && (reduced || double(m) * double(n) * double(k) >= trellis::detail::onednn_min_multiply_adds)) {
        trellis::detail::gemm_impl(trellis::detail::OnednnGemm{}, space, ta, tb, alpha, ca, cb, beta, rc, k,
                                   reduced);
        return;
      }
#endif
    }
    trellis::detail::gemm_impl(Backend{}, space, ta, tb, alpha, ca, cb, beta, rc, k);
  } else if constexpr (std::is_same_v<Backend, trellis::detail::PortableGemm>) {
    (void)mode;
    trellis::detail::gemm_impl(Backend{}, space, ta, tb, alpha, ca, cb, beta, rc, k);
  } else {
    trellis::detail::gemm_impl(Backend{}, space, ta, tb, alpha, ca, cb, beta, rc, k,
                               static_cast<int>(mode));
  }
}

}  // namespace detail

/// C = alpha op(A) op(B) + beta C on `space`'s backend. beta == 0 overwrites C.
template <class Exec, class AV, class BV, class CV>
void gemm(Exec const& space, Op op_a, Op op_b, typename CV::value_type alpha, AV const& a,
          BV const& b, typename CV::value_type beta, CV const& c,
          MathMode mode = MathMode::strict) {
  static_assert(Kokkos::is_execution_space<Exec>::value,
                "trellis::blas::gemm: the first argument is an execution space instance");
  detail::gemm_checked<typename detail::gemm_backend<Exec>::type>("trellis::blas::gemm", space,
                                                                  op_a, op_b, alpha, a, b, beta,
                                                                  c, mode);
}

/// The portable kernel on any backend: the reference every fast GEMM is tested against.
template <class Exec, class AV, class BV, class CV>
void naive_gemm(Exec const& space, Op op_a, Op op_b, typename CV::value_type alpha,
                    AV const& a, BV const& b, typename CV::value_type beta, CV const& c) {
  static_assert(Kokkos::is_execution_space<Exec>::value,
                "trellis::blas::naive_gemm: the first argument is an execution space instance");
  detail::gemm_checked<trellis::detail::PortableGemm>("trellis::blas::naive_gemm", space,
                                                      op_a, op_b, alpha, a, b, beta, c,
                                                      MathMode::strict);
}

}  // namespace trellis::blas
