#pragma once
// Between Kokkos Views and safetensors tensors: row-major order, any memory space.
#include <Kokkos_Core.hpp>

#include <string>
#include <vector>

#include <trellis/errors.hpp>
#include <trellis/io/safetensors.hpp>

namespace trellis {

/// The View's values as a tensor of `dtype` (LayoutRight Views: row-major).
template <class View>
safetensors::Tensor to_tensor(View const& v, safetensors::DType dtype) {
  static_assert(std::is_same_v<typename View::array_layout, Kokkos::LayoutRight>,
                "trellis::to_tensor: Views are LayoutRight (row-major, like the file)");
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  std::vector<std::int64_t> shape;
  for (unsigned r = 0; r < View::rank; ++r) shape.push_back(std::int64_t(v.extent(r)));
  std::vector<double> values(h.data(), h.data() + h.span());
  return safetensors::Tensor::from_double(dtype, shape, values);
}

/// Fills the View from a tensor whose shape must equal the View's extents.
template <class View>
void from_tensor(View const& v, safetensors::Tensor const& t, std::string const& path, std::string const& name) {
  static_assert(std::is_same_v<typename View::array_layout, Kokkos::LayoutRight>,
                "trellis::from_tensor: Views are LayoutRight (row-major, like the file)");
  std::vector<long> want, have(t.shape.begin(), t.shape.end());
  for (unsigned r = 0; r < View::rank; ++r) want.push_back(long(v.extent(r)));
  if (want != have) fail_tensor_shape(path, name, have, want);
  auto h = Kokkos::create_mirror_view(v);
  auto const values = t.to_double();
  using T = typename View::non_const_value_type;
  for (std::size_t i = 0; i < values.size(); ++i) h.data()[i] = T(values[i]);
  Kokkos::deep_copy(v, h);
}

}  // namespace trellis
