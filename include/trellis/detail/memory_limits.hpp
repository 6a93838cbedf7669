#pragma once
// Sizes checked before allocating: a configuration or a file that asks for more memory
// than the machine has is an error giving the size, not an allocation that fails late
// or, with the kernel's overcommit, succeeds and is killed when first touched.
#include <Kokkos_Core.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <string>

#include <trellis/errors.hpp>

namespace trellis::detail {

/// The product of `factors`, saturating at the largest std::uint64_t instead of wrapping.
inline std::uint64_t saturating_product(std::initializer_list<std::uint64_t> factors) {
  std::uint64_t p = 1;
  for (auto f : factors) {
    if (f != 0 && p > std::numeric_limits<std::uint64_t>::max() / f) return std::numeric_limits<std::uint64_t>::max();
    p *= f;
  }
  return p;
}

inline std::uint64_t saturating_sum(std::uint64_t a, std::uint64_t b) {
  return a > std::numeric_limits<std::uint64_t>::max() - b ? std::numeric_limits<std::uint64_t>::max() : a + b;
}

/// "12.3 GiB" (or "more than 16 EiB" for a saturated size).
inline std::string format_bytes(std::uint64_t bytes) {
  if (bytes == std::numeric_limits<std::uint64_t>::max()) return "more than 16 EiB";
  char const* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) v /= 1024, ++u;
  char text[48];
  std::snprintf(text, sizeof text, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return text;
}

/// The memory a memory space can hold: the host's physical memory for host spaces; 0
/// (not known here) for device spaces, whose allocations fail with Kokkos' own error.
template <class MemorySpace>
std::uint64_t memory_of() {
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, MemorySpace>::accessible) {
    long const pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? std::uint64_t(pages) * std::uint64_t(page) : 0;
  } else {
    return 0;
  }
}

/// Fails, naming the call, what it would allocate and the size, when `bytes` exceed the
/// memory of MemorySpace.
template <class MemorySpace>
void check_fits(char const* call, std::string const& what, std::uint64_t bytes) {
  std::uint64_t const have = memory_of<MemorySpace>();
  if (have > 0 && bytes > have)
    fail(call, ": ", what, " need ", format_bytes(bytes), ", more than the ", format_bytes(have),
         " of memory this machine has");
}

}  // namespace trellis::detail
