#pragma once
// Weight tying across depth, fixed at compile time. TiedAcrossDepth is the
// TrellisNet: one kernel (weight1, weight2, bias2) serves every level. Untied gives
// each level its own kernel: the gated temporal convolutional network the paper
// compares against. Both run through the same code path.
#include <Kokkos_Core.hpp>

namespace trellis {

struct TiedAcrossDepth {
  static constexpr bool tied = true;
  static constexpr char const* name = "tied";
  /// Number of kernels (sets of weights) for a network of `nlevels` levels.
  static constexpr int kernels(int /*nlevels*/) { return 1; }
  /// The kernel that level `level` (0-based) uses.
  KOKKOS_INLINE_FUNCTION static constexpr int kernel_of(int /*level*/) { return 0; }
};

struct Untied {
  static constexpr bool tied = false;
  static constexpr char const* name = "untied";
  static constexpr int kernels(int nlevels) { return nlevels; }
  KOKKOS_INLINE_FUNCTION static constexpr int kernel_of(int level) { return level; }
};

template <class T>
inline constexpr bool is_weight_tying_v =
    std::is_same_v<T, TiedAcrossDepth> || std::is_same_v<T, Untied>;

/// f(Untied{}) when `untied` (a file's metadata or a flag said so), else f(TiedAcrossDepth{}):
/// from a choice made at run time to the compile-time policy.
template <class F>
decltype(auto) with_weight_tying(bool untied, F&& f) {
  if (untied) return f(Untied{});
  return f(TiedAcrossDepth{});
}

}  // namespace trellis
