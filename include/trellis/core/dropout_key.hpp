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

/// Whether a mask is drawn per sample (by global row) or once for the whole batch.
enum class MaskScope { sample, shared };

/// Fills a mask: per sample, an (N, C) mask (rows along axis 0) or an (L, N, C) one
/// (rows along axis 1); shared, any mask, element by flat index. `mask_id` tells the
/// masks of one step apart.
template <MaskScope Scope, class View>
void fill_keyed_mask(View const& mask, double p, DropoutKey const& key, std::uint64_t mask_id) {
  static_assert(Scope == MaskScope::shared || View::rank == 2 || View::rank == 3,
                "trellis::fill_keyed_mask: per-sample masks are (N, C) or (L, N, C)");
  detail::check_probability(mask, p);
  using Scalar = typename View::value_type;
  Scalar const scale = Scalar(1.0 / (1.0 - p));
  auto h = Kokkos::create_mirror_view(mask);
  Scalar* out = h.data();
  for (std::size_t i = 0; i < h.span(); ++i) {
    std::uint64_t row = detail::shared_row, index = i;
    if constexpr (Scope == MaskScope::sample) {
      // Row-major: element i is (t, n, c), t = 0 for an (N, C) mask.
      std::size_t const C = mask.extent(View::rank - 1), N = mask.extent(View::rank - 2);
      std::size_t const c = i % C, n = (i / C) % N, t = i / (C * N);
      row = std::uint64_t(key.first_row + long(n));
      index = t * C + c;
    }
    out[i] = detail::keyed_uniform(key, mask_id, row, index) < 1.0 - p ? scale : Scalar(0);
  }
  Kokkos::deep_copy(mask, h);
}

/// A mask of the given extents, per sample or shared (`Scope`), or an empty View when
/// p == 0.
template <class View, MaskScope Scope, class... Extents>
View make_keyed_mask(char const* label, double p, DropoutKey const& key, std::uint64_t mask_id, Extents... extents) {
  if (p == 0) return View();
  View mask(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string(label)), extents...);
  fill_keyed_mask<Scope>(mask, p, key, mask_id);
  return mask;
}

}  // namespace trellis
