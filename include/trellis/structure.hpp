#pragma once
// The structure of the hidden kernel weight2. Dense stores and multiplies the whole
// (groups q) x (2 q) matrix. The RNN-sparse structure of the paper's Theorem 1 (a
// block pattern whose zero blocks cost nothing) plugs in here as another tag.
#include <type_traits>

namespace trellis {

struct Dense {
  static constexpr char const* name = "dense";
};

template <class T>
inline constexpr bool is_structure_v = std::is_same_v<T, Dense>;

}  // namespace trellis
