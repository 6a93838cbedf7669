#pragma once
// The structure of the trellis weights, fixed at compile time.
//  - Dense: the whole (G q) x (2 q) hidden kernel and (G q) x (2 p) injection kernel,
//    stored and multiplied whole; weight norm and weight drop apply.
//  - RnnSparse: the block pattern of the paper's Theorem 1, under which a TrellisNet
//    is an M-layer RNN truncated to a history of L steps (q = M d, n = L + M - 1
//    levels). Only the nonzero blocks are stored and multiplied: per gate, the
//    recurrent blocks W_hh^(j) on the diagonal of tap 0, the upward blocks W_hx^(j)
//    on the sub-diagonal of tap 1, and W_hx^(1) in the injection's tap 1.
#include <type_traits>

namespace trellis {

struct Dense {
  static constexpr char const* name = "dense";
};

struct RnnSparse {
  static constexpr char const* name = "rnn-sparse";
};

template <class T>
inline constexpr bool is_structure_v = std::is_same_v<T, Dense> || std::is_same_v<T, RnnSparse>;

}  // namespace trellis
