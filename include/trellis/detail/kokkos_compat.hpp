#pragma once
// The one place where Kokkos 3.4 (Debian's) and Kokkos >= 4.3 differ for this
// library: the math functions moved from Kokkos::Experimental to Kokkos.
#include <Kokkos_Core.hpp>

namespace trellis::detail {

#if KOKKOS_VERSION >= 40000
using Kokkos::exp;
using Kokkos::log;
using Kokkos::sqrt;
using Kokkos::tanh;
#else
using Kokkos::Experimental::exp;
using Kokkos::Experimental::log;
using Kokkos::Experimental::sqrt;
using Kokkos::Experimental::tanh;
#endif

}  // namespace trellis::detail

/// Before a host loop whose iterations are independent: lets the compiler vectorise
/// without run-time alias checks (too many of them make it give up).
#if defined(__clang__) && !defined(__CUDA_ARCH__)
#define TRELLIS_PRAGMA_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__) && !defined(__NVCC__) && !defined(__CUDA_ARCH__)
#define TRELLIS_PRAGMA_IVDEP _Pragma("GCC ivdep")
#else
#define TRELLIS_PRAGMA_IVDEP
#endif
