#pragma once
// Peak memory of the tensors a benchmark allocates through Kokkos, read from Kokkos'
// tool callbacks (what torch.cuda.max_memory_allocated counts for the reference). The
// CUDA context, cuBLAS workspaces and Eigen's packing buffers are not Kokkos
// allocations; the benchmarks report the device's used memory beside this figure.
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <cstring>

namespace trellis_bench {

struct MemoryMeter {
  static inline char space[64] = {};  ///< the memory space counted (e.g. "Cuda", "Host")
  static inline std::int64_t current = 0, peak = 0;

  static void on_allocate(Kokkos_Profiling_SpaceHandle handle, char const*, void const*, std::uint64_t bytes) {
    if (std::strncmp(handle.name, space, sizeof space) != 0) return;
    current += std::int64_t(bytes);
    if (current > peak) peak = current;
  }
  static void on_deallocate(Kokkos_Profiling_SpaceHandle handle, char const*, void const*, std::uint64_t bytes) {
    if (std::strncmp(handle.name, space, sizeof space) != 0) return;
    current -= std::int64_t(bytes);
  }

  /// Counts the allocations in MemorySpace from now on (call after Kokkos::initialize).
  template <class MemorySpace>
  static void install() {
    std::strncpy(space, MemorySpace::name(), sizeof space - 1);
    Kokkos::Tools::Experimental::set_allocate_data_callback(&on_allocate);
    Kokkos::Tools::Experimental::set_deallocate_data_callback(&on_deallocate);
  }
  /// Starts a new high-water mark at what is allocated now.
  static void reset_peak() { peak = current; }
  static double peak_mib() { return double(peak) / (1024.0 * 1024.0); }
};

}  // namespace trellis_bench
