#pragma once
// Channel spans: V consecutive channels of a row moved as one V * sizeof(Scalar)-byte
// access on GPUs, element loops on host spaces; and the launch that maps a level's rows
// x channels onto an execution space.
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <type_traits>

#include <trellis/detail/kernel_shape.hpp>

namespace trellis::detail {

/// V consecutive channels of one row, moved as one V * sizeof(Scalar)-byte access: on
/// GPUs a warp then reads 32 x 16 contiguous bytes per instruction.
template <class Scalar, int V>
struct alignas(sizeof(Scalar) * V) Pack {
  Scalar v[V];
};

template <int V, class Scalar>
KOKKOS_INLINE_FUNCTION Pack<Scalar, V> load_pack(Scalar const* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<Pack<Scalar, V> const*>(p);  // CUDA's idiom for wide loads
#else
  Pack<Scalar, V> x;
  for (int k = 0; k < V; ++k) x.v[k] = p[k];
  return x;
#endif
}

template <int V, class Scalar>
KOKKOS_INLINE_FUNCTION void store_pack(Scalar* p, Pack<Scalar, V> const& x) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<Pack<Scalar, V>*>(p) = x;
#else
  for (int k = 0; k < V; ++k) p[k] = x.v[k];
#endif
}

/// p[0:V] += x
template <int V, class Scalar>
KOKKOS_INLINE_FUNCTION void add_pack(Scalar* p, Pack<Scalar, V> const& x) {
  auto y = load_pack<V>(p);
  for (int k = 0; k < V; ++k) y.v[k] += x.v[k];
  store_pack(p, y);
}

/// The fused kernels' work items: one row on host spaces; one channel pack on devices,
/// consecutive threads on consecutive packs. Each kernel has one body over a span of V
/// channels [j, j + V) of a row, called per pack on devices and, on host spaces, along
/// the row in spans of host_span channels (128 bytes: the body's lane loops vectorise,
/// and the per-span work, such as a row's position and branches, is spread over enough
/// channels not to show) and then single channels.
struct RowTag {};
template <int V>
struct PackTag {};

template <class Scalar>
inline constexpr int host_span = 128 / int(sizeof(Scalar));

/// Row r of a level: time t and sequence n (r = t * N + n), computed once per row.
struct RowPosition {
  long r, t, n;
};

KOKKOS_INLINE_FUNCTION RowPosition row_position(long r, long N) { return {r, r / N, r % N}; }

/// body.template channels<V>(row, j) over row r's channels: spans of host_span, then ones.
template <class Scalar, class Body>
KOKKOS_INLINE_FUNCTION void along_row(Body const& body, long r, long N, long q) {
  constexpr int W = host_span<Scalar>;
  RowPosition const row = row_position(r, N);
  long j = 0;
  for (; j + W <= q; j += W) body.template channels<W>(row, j);
  for (; j < q; ++j) body.template channels<1>(row, j);
}

/// body.template channels<V>(row, j) for pack i of width V in a level of q channels.
template <int V, class Body>
KOKKOS_INLINE_FUNCTION void at_pack(Body const& body, long i, long N, long q) {
  long const packs = q / V, r = i / packs;
  body.template channels<V>(row_position(r, N), (i - r * packs) * V);
}

/// The widest pack (at most 16 bytes) that divides q and every row stride and whose
/// alignment every View's data has. Empty Views do not count.
template <class Scalar, class... Views>
int pack_width(long q, Views const&... views) {
  for (int V = 16 / int(sizeof(Scalar)); V > 1; V /= 2) {
    bool fits = q % V == 0;
    auto const check = [&](auto const& v) {
      if (v.span() == 0) return;
      if (reinterpret_cast<std::uintptr_t>(v.data()) % (V * sizeof(Scalar)) != 0) fits = false;
      if constexpr (std::decay_t<decltype(v)>::rank == 2)
        if (v.stride(0) % V != 0) fits = false;
    };
    (check(views), ...);
    if (fits) return V;
  }
  return 1;
}

/// Runs f over rows [begin, end) x q channels of a level: rows on host spaces, packs of
/// `width` channels on devices (or when tests ask).
template <class Scalar, class Exec, class Functor>
void for_each_channel(char const* label, Exec const& space, long begin, long end, long q, int width,
                      Functor const& f) {
  if (host_shaped<Exec>()) {
    if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible)
      Kokkos::parallel_for(label, Kokkos::RangePolicy<Exec, RowTag>(space, begin, end), f);
    return;
  }
  auto const packs = [&](auto tag, long V) {
    Kokkos::parallel_for(label, Kokkos::RangePolicy<Exec, decltype(tag)>(space, begin * (q / V), end * (q / V)), f);
  };
  constexpr int widest = 16 / int(sizeof(Scalar));
  if constexpr (widest >= 4) {
    if (width == 4) return packs(PackTag<4>{}, 4);
  }
  if (width == 2)
    packs(PackTag<2>{}, 2);
  else
    packs(PackTag<1>{}, 1);
}

}  // namespace trellis::detail
