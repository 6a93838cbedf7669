#pragma once
// Small View helpers every layer uses: labelled uninitialised allocation, and filling
// a View of any memory space with host-drawn values in storage order (random
// initialisations and masks, so that a seed gives the same values on every backend).
#include <Kokkos_Core.hpp>

#include <cstddef>
#include <string>
#include <utility>

namespace trellis::detail {

/// Allocation properties for a View labelled `owner` + `name` on `space`, left
/// uninitialised (what is written before it is read).
template <class Exec>
auto uninitialized(Exec const& space, char const* owner, char const* name) {
  return Kokkos::view_alloc(space, Kokkos::WithoutInitializing, std::string(owner) + name);
}

inline auto uninitialized(char const* owner, char const* name) {
  return Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string(owner) + name);
}

/// view.data()[i] = draw() for i in storage order, drawn on the host.
template <class View, class Draw>
void fill_on_host(View const& view, Draw&& draw) {
  auto host = Kokkos::create_mirror_view(view);
  using T = typename View::non_const_value_type;
  for (std::size_t i = 0; i < host.span(); ++i) host.data()[i] = T(draw());
  Kokkos::deep_copy(view, host);
}

/// The first storage-order index of an integer View whose value is outside [0, bound),
/// with that value; {span, 0} when every value is inside. Views that index an embedding
/// or a softmax are checked with it before they are used.
template <class Exec, class View>
std::pair<long, long> first_outside(Exec const& space, char const* label, View const& v, long bound) {
  using T = typename View::non_const_value_type;
  Kokkos::View<T const*, Kokkos::LayoutRight, typename View::memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>
      flat(v.data(), v.span());
  long const count = long(v.span());
  long first = count;
  Kokkos::parallel_reduce(
      label, Kokkos::RangePolicy<Exec>(space, 0, count),
      KOKKOS_LAMBDA(long i, long& lowest) {
        long const x = long(flat(i));
        if ((x < 0 || x >= bound) && i < lowest) lowest = i;
      },
      Kokkos::Min<long>(first));
  if (first == count) return {count, 0};
  T value{};
  Kokkos::deep_copy(space, Kokkos::View<T, Kokkos::HostSpace>(&value), Kokkos::subview(flat, first));
  space.fence();
  return {first, long(value)};
}

}  // namespace trellis::detail
