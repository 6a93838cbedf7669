#pragma once
// Starting Kokkos from a program that takes a thread count (the trellis program, the
// examples); a program that owns its Kokkos setup does not need this.
#include <Kokkos_Core.hpp>

namespace trellis {

/// Kokkos::initialize with a thread count (0: Kokkos' default); the settings type
/// differs between Kokkos 3.4 and 4.x, so callers need not know which they have.
inline void initialize_kokkos(int num_threads) {
#if KOKKOS_VERSION >= 40000
  Kokkos::InitializationSettings settings;
  if (num_threads > 0) settings.set_num_threads(num_threads);
  Kokkos::initialize(settings);
#else
  Kokkos::InitArguments args;
  if (num_threads > 0) args.num_threads = num_threads;
  Kokkos::initialize(args);
#endif
}

}  // namespace trellis
