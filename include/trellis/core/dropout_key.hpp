#pragma once
// Dropout masks from a counter-based generator: each kept-or-dropped decision is a
// hash of (seed, step, mask, row, index), not the next number of a sequential
// generator. A sample's mask therefore depends on its row in the global batch, not on
// which process holds it or how many rows that process holds, so that data-parallel
// training over any number of ranks draws the masks one process draws.
//   per sample:  element (n, c) of an (N, C) mask, or (t, n, c) of an (L, N, C) mask,
//                hashes row first_row + n and index c (or t C + c);
//   shared:      a mask of the whole batch (embedding dropout, weight drop) hashes row
//                `shared_row` and the element's flat index.
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <string>

#include <trellis/detail/views.hpp>
#include <trellis/errors.hpp>

namespace trellis {

/// Which masks one training step draws: the run's seed, the step (1-based), and the
/// global row of this process's first sample.
struct DropoutKey {
  std::uint64_t seed = 0;
  std::uint64_t step = 0;
  long first_row = 0;

  /// The same step for the rows that start `rows` further on.
  DropoutKey offset(long rows) const { return DropoutKey{seed, step, first_row + rows}; }
};

namespace detail {

inline constexpr std::uint64_t mix64(std::uint64_t z) {
  // The splitmix64 finaliser: every input bit reaches every output bit.
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// Uniform in [0, 1) from the full key.
inline double keyed_uniform(DropoutKey const& key, std::uint64_t mask, std::uint64_t row, std::uint64_t index) {
  std::uint64_t h = mix64(key.seed + 0x9e3779b97f4a7c15ull);
  h = mix64(h ^ (key.step + 0x632be59bd9b4e019ull));
  h = mix64(h ^ (mask * 0x8cb92ba72f3d8dd7ull));
  h = mix64(h ^ row);
  h = mix64(h ^ (index + 0xd6e8feb86659fd93ull));
  return double(h >> 11) * 0x1.0p-53;
}

/// The row that batch-shared masks hash: no sample's.
inline constexpr std::uint64_t shared_row = ~std::uint64_t(0);

template <class View>
void check_probability(View const&, double p) {
  if (!(p >= 0.0 && p < 1.0)) fail("trellis::draw_masks: dropout probability ", p, " is not in [0, 1)");
}

}  // namespace detail

/// Fills a per-sample mask: (N, C) with rows along axis 0, or (L, N, C) with rows along
/// axis 1. `mask_id` tells the masks of one step apart.
template <class View>
void fill_sample_mask(View const& mask, double p, DropoutKey const& key, std::uint64_t mask_id) {
  detail::check_probability(mask, p);
  using Scalar = typename View::value_type;
  Scalar const scale = Scalar(1.0 / (1.0 - p));
  auto h = Kokkos::create_mirror_view(mask);
  if constexpr (View::rank == 2) {
    for (long n = 0; n < long(mask.extent(0)); ++n)
      for (long c = 0; c < long(mask.extent(1)); ++c)
        h(n, c) = detail::keyed_uniform(key, mask_id, std::uint64_t(key.first_row + n), std::uint64_t(c)) < 1.0 - p
                      ? scale
                      : Scalar(0);
  } else {
    static_assert(View::rank == 3, "trellis::fill_sample_mask: masks are (N, C) or (L, N, C)");
    long const C = long(mask.extent(2));
    for (long t = 0; t < long(mask.extent(0)); ++t)
      for (long n = 0; n < long(mask.extent(1)); ++n)
        for (long c = 0; c < C; ++c)
          h(t, n, c) = detail::keyed_uniform(key, mask_id, std::uint64_t(key.first_row + n),
                                             std::uint64_t(t * C + c)) < 1.0 - p
                           ? scale
                           : Scalar(0);
  }
  Kokkos::deep_copy(mask, h);
}

/// Fills a mask the whole batch shares, element by flat index.
template <class View>
void fill_shared_mask(View const& mask, double p, DropoutKey const& key, std::uint64_t mask_id) {
  detail::check_probability(mask, p);
  using Scalar = typename View::value_type;
  Scalar const scale = Scalar(1.0 / (1.0 - p));
  auto h = Kokkos::create_mirror_view(mask);
  Scalar* out = h.data();
  for (std::size_t i = 0; i < h.span(); ++i)
    out[i] = detail::keyed_uniform(key, mask_id, detail::shared_row, i) < 1.0 - p ? scale : Scalar(0);
  Kokkos::deep_copy(mask, h);
}

/// A per-sample mask of the given extents, or an empty View when p == 0.
template <class View, class... Extents>
View make_sample_mask(char const* label, double p, DropoutKey const& key, std::uint64_t mask_id, Extents... extents) {
  if (p == 0) return View();
  View mask(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string(label)), extents...);
  fill_sample_mask(mask, p, key, mask_id);
  return mask;
}

/// A mask the batch shares, of the given extents, or an empty View when p == 0.
template <class View, class... Extents>
View make_shared_mask(char const* label, double p, DropoutKey const& key, std::uint64_t mask_id, Extents... extents) {
  if (p == 0) return View();
  View mask(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string(label)), extents...);
  fill_shared_mask(mask, p, key, mask_id);
  return mask;
}

}  // namespace trellis
