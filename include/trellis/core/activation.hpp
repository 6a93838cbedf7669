#pragma once
// The activation of a level, as a policy. LSTMGating is TrellisNet's: 4 groups of q
// pre-activation rows in the order i, o, g, f and a cell c. The elementwise policies
// (tanh, relu) have one group and no cell: z = s(a), the Elman RNN's nonlinearity.
#include <Kokkos_Core.hpp>

#include <trellis/detail/kokkos_compat.hpp>

namespace trellis {

struct LSTMGating {
  static constexpr int groups = 4;  // rows per hidden channel: i, o, g, f
  static constexpr bool has_cell = true;
  static constexpr char const* name = "lstm";
};

struct ElementwiseTanh {
  static constexpr int groups = 1;
  static constexpr bool has_cell = false;
  static constexpr char const* name = "tanh";
  template <class Scalar>
  KOKKOS_INLINE_FUNCTION static Scalar apply(Scalar a) { return detail::tanh(a); }
  /// ds/da written through the output z = s(a).
  template <class Scalar>
  KOKKOS_INLINE_FUNCTION static Scalar derivative_from_output(Scalar z) { return Scalar(1) - z * z; }
};

struct ElementwiseRelu {
  static constexpr int groups = 1;
  static constexpr bool has_cell = false;
  static constexpr char const* name = "relu";
  template <class Scalar>
  KOKKOS_INLINE_FUNCTION static Scalar apply(Scalar a) { return a > Scalar(0) ? a : Scalar(0); }
  template <class Scalar>
  KOKKOS_INLINE_FUNCTION static Scalar derivative_from_output(Scalar z) {
    return z > Scalar(0) ? Scalar(1) : Scalar(0);
  }
};

template <class T>
inline constexpr bool is_activation_v = std::is_same_v<T, LSTMGating> ||
                                        std::is_same_v<T, ElementwiseTanh> ||
                                        std::is_same_v<T, ElementwiseRelu>;

}  // namespace trellis
