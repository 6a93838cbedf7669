#pragma once
// A row-major matrix described by pointer, extents and leading dimension: what every
// GEMM backend needs from a rank-2 View (LayoutRight, or LayoutStride with unit
// stride along columns, e.g. a block of columns of a LayoutRight matrix).
#include <Kokkos_Core.hpp>

#include <cstddef>
#include <type_traits>

#include <trellis/errors.hpp>

namespace trellis::detail {

template <class Scalar>
struct MatrixRef {
  Scalar* data;
  std::size_t rows;
  std::size_t cols;
  std::size_t ld;  // elements between consecutive rows
};

template <class View>
auto matrix_ref(char const* call, char const* name, View const& v) {
  static_assert(View::rank == 2, "trellis::blas: matrices are rank-2 Views");
  using layout = typename View::array_layout;
  static_assert(std::is_same_v<layout, Kokkos::LayoutRight> ||
                    std::is_same_v<layout, Kokkos::LayoutStride>,
                "trellis::blas: matrices are row-major (LayoutRight or LayoutStride)");
  using value_type = typename View::value_type;
  // A LayoutRight subview of columns keeps its parent's row stride, so always ask.
  if (v.extent(0) * v.extent(1) > 0 && v.extent(1) > 1 && v.stride(1) != 1)
    fail(call, ": ", name, " ", shape_of(v), " must have unit stride along columns, has ", v.stride(1));
  std::size_t ld = v.extent(0) > 1 ? std::size_t(v.stride(0)) : std::size_t(v.extent(1));
  if (ld < v.extent(1)) ld = v.extent(1);
  if (ld == 0) ld = 1;
  return MatrixRef<value_type>{v.data(), v.extent(0), v.extent(1), ld};
}

}  // namespace trellis::detail
