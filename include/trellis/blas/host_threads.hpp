#pragma once
// The threads host GEMMs use. On a host space with several threads (Kokkos::OpenMP)
// they are the space's own. On a space that runs one thread (Kokkos::Serial) the level
// kernels stay on that thread, but the GEMMs, most of the work, can still spread over
// the cores through Eigen's OpenMP when the build has OpenMP: this setting says how
// many. It defaults to one, so that a program running one process per core is not
// oversubscribed.
#include <atomic>
#include <string>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <trellis/errors.hpp>

namespace trellis::blas {

/// Whether this build can run host GEMMs on several threads of a one-thread space
/// (compiled with OpenMP, which Eigen then uses).
inline constexpr bool serial_gemm_threads_supported =
#if defined(_OPENMP)
    true;
#else
    false;
#endif

namespace detail {
inline std::atomic<int>& serial_gemm_threads_setting() {
  static std::atomic<int> threads{1};
  return threads;
}
}  // namespace detail

/// Threads of host GEMMs on a one-thread host space (Kokkos::Serial); 1 unless set.
inline int serial_gemm_threads() { return detail::serial_gemm_threads_setting().load(std::memory_order_relaxed); }

/// Sets serial_gemm_threads() for the GEMMs issued from now on, from any thread. At
/// least 1; without OpenMP in the build the GEMMs stay on one thread whatever is set
/// (serial_gemm_threads_supported says which).
inline void set_serial_gemm_threads(int threads) {
  if (threads < 1)
    throw invalid_argument("trellis::blas::set_serial_gemm_threads: " + std::to_string(threads) +
                           " threads (at least 1)");
  detail::serial_gemm_threads_setting().store(threads, std::memory_order_relaxed);
}

/// The threads a host GEMM on `space` runs on: the space's concurrency, or on a
/// one-thread space serial_gemm_threads() where the build has OpenMP, except inside a
/// parallel region (a GEMM overlapped with other work), where it is the calling thread.
template <class Exec>
int host_gemm_threads(Exec const& space) {
  int const own = static_cast<int>(space.concurrency());
  if (own > 1 || !serial_gemm_threads_supported) return own;
#if defined(_OPENMP)
  if (omp_in_parallel()) return 1;
#endif
  return serial_gemm_threads();
}

namespace detail {
/// The fence a host GEMM makes first (earlier kernels on the space wrote its operands).
/// Inside a parallel region on a one-thread space the GEMM is overlapped with the
/// space's kernels on another thread, whose schedule orders them; Serial's fence would
/// wait for the kernel running there.
template <class Exec>
void fence_before_host_gemm(Exec const& space) {
#if defined(_OPENMP)
  if (omp_in_parallel() && space.concurrency() == 1) return;
#endif
  space.fence();
}
}  // namespace detail

}  // namespace trellis::blas
