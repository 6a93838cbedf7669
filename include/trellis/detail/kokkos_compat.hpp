#pragma once
// The one place where Kokkos 3.4 (Debian's) and Kokkos >= 4.3 differ for this
// library: the math functions moved from Kokkos::Experimental to Kokkos.
#include <Kokkos_Core.hpp>

namespace trellis::detail {

#if KOKKOS_VERSION >= 40000
using Kokkos::exp;
using Kokkos::sqrt;
using Kokkos::tanh;
#else
using Kokkos::Experimental::exp;
using Kokkos::Experimental::sqrt;
using Kokkos::Experimental::tanh;
#endif

template <class Scalar>
KOKKOS_INLINE_FUNCTION Scalar sigmoid(Scalar a) {
  return Scalar(1) / (Scalar(1) + exp(-a));
}

}  // namespace trellis::detail
