#pragma once
// GEMM through cuBLAS on the execution space's stream. Row-major data goes through
// column-major cuBLAS by swapping the operands: C^T = op(B)^T op(A)^T.
#include <Kokkos_Core.hpp>

#if defined(KOKKOS_ENABLE_CUDA)
#include <cublas_v2.h>

#include <map>
#include <mutex>
#include <sstream>
#include <type_traits>

#include <trellis/blas/detail/matrix_ref.hpp>
#include <trellis/errors.hpp>

namespace trellis::detail {

struct CublasGemm {};

inline void check_cublas(cublasStatus_t status, char const* call, char const* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    std::ostringstream out;
    out << "trellis::blas: " << call << " failed with cuBLAS status " << int(status) << " ("
        << file << ":" << line << ")";
    throw trellis::backend_error(out.str());
  }
}
#define TRELLIS_CUBLAS(call) ::trellis::detail::check_cublas((call), #call, __FILE__, __LINE__)

/// One cuBLAS handle per device, made on first use and destroyed at Kokkos::finalize.
inline cublasHandle_t cublas_handle() {
  static std::mutex guard;
  static std::map<int, cublasHandle_t> handles;
  std::lock_guard<std::mutex> lock(guard);
  int device = 0;
  cudaGetDevice(&device);
  auto found = handles.find(device);
  if (found != handles.end()) return found->second;
  cublasHandle_t handle;
  TRELLIS_CUBLAS(cublasCreate(&handle));
  if (handles.empty()) {
    Kokkos::push_finalize_hook([] {
      std::lock_guard<std::mutex> lock_at_exit(guard);
      for (auto& [dev, h] : handles) cublasDestroy(h);
      handles.clear();
    });
  }
  handles[device] = handle;
  return handle;
}

/// blas::MathMode as a cuBLAS compute type: 0 strict, 1 TF32, 2 bf16 products (fp32
/// accumulation in both reduced modes).
inline cublasComputeType_t compute_type(int math_mode) {
  if (math_mode == 1) return CUBLAS_COMPUTE_32F_FAST_TF32;
  if (math_mode == 2) return CUBLAS_COMPUTE_32F_FAST_16BF;
  return CUBLAS_COMPUTE_32F;
}

template <class Scalar>
void gemm_impl(CublasGemm, Kokkos::Cuda const& space, bool trans_a, bool trans_b,
               Scalar alpha, MatrixRef<Scalar const> a, MatrixRef<Scalar const> b,
               Scalar beta, MatrixRef<Scalar> c, std::size_t inner, int math_mode) {
  if (c.rows == 0 || c.cols == 0) return;
  cublasHandle_t handle = cublas_handle();
  TRELLIS_CUBLAS(cublasSetStream(handle, space.cuda_stream()));
  cublasOperation_t const op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t const op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  int const m = int(c.cols), n = int(c.rows), k = int(inner);
  if constexpr (std::is_same_v<Scalar, float>) {
    TRELLIS_CUBLAS(cublasGemmEx(handle, op_b, op_a, m, n, k, &alpha, b.data, CUDA_R_32F,
                                int(b.ld), a.data, CUDA_R_32F, int(a.ld), &beta, c.data,
                                CUDA_R_32F, int(c.ld),
                                compute_type(math_mode),
                                CUBLAS_GEMM_DEFAULT));
  } else {
    static_assert(std::is_same_v<Scalar, double>, "trellis::blas: cuBLAS path is float or double");
    TRELLIS_CUBLAS(cublasDgemm(handle, op_b, op_a, m, n, k, &alpha, b.data, int(b.ld), a.data,
                               int(a.ld), &beta, c.data, int(c.ld)));
  }
}

}  // namespace trellis::detail
#endif
