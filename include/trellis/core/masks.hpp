#pragma once
// The dropout masks of the core, drawn once per forward: the variational hidden mask
// m (N, q), shared by every level and time step, and the two weight-drop
// (DropConnect) masks on tap 0 of weight1 and of weight2. Inverted scaling: kept
// entries hold 1 / (1 - p). Empty views mean "off" (inference). Drawn from a
// sequential generator, or keyed by (seed, step, global row) (core/dropout_key.hpp) so
// that data-parallel ranks draw what one process draws.
#include <Kokkos_Core.hpp>

#include <random>
#include <string>

#include <trellis/core/dropout_key.hpp>
#include <trellis/errors.hpp>
#include <trellis/detail/views.hpp>

namespace trellis {

template <class MemorySpace, class Scalar>
struct TrellisMasks {
  using rows = Kokkos::View<Scalar**, Kokkos::LayoutRight, MemorySpace>;
  using matrices = Kokkos::View<Scalar***, Kokkos::LayoutRight, MemorySpace>;
  rows hidden;            ///< (N, q): m, or empty
  matrices weight1_drop;  ///< (kernels, G q, ninp): on tap 0 of weight1, or empty
  matrices weight2_drop;  ///< (kernels, G q, q): on tap 0 of weight2, or empty
};

namespace detail {

/// A Bernoulli(1 - p) mask scaled by 1 / (1 - p), drawn on the host.
template <class View>
void fill_dropout_mask(View const& mask, double p, std::mt19937_64& rng) {
  if (!(p >= 0.0 && p < 1.0)) fail("trellis::draw_masks: dropout probability ", p, " is not in [0, 1)");
  std::bernoulli_distribution keep(1.0 - p);
  using Scalar = typename View::value_type;
  Scalar const scale = Scalar(1.0 / (1.0 - p));
  fill_on_host(mask, [&] { return keep(rng) ? scale : Scalar(0); });
}

}  // namespace detail

/// Draws the core's masks for a batch of N: hidden dropout `dropouth` on (N, q),
/// weight drop `wdrop` on tap 0 of both kernels. A probability of 0 leaves that mask off.
template <class Network>
auto draw_masks(Network const& net, long batch, double dropouth, double wdrop,
                std::mt19937_64& rng) {
  using masks = TrellisMasks<typename Network::memory_space, typename Network::scalar_type>;
  masks m;
  auto const& s = net.shape();
  long const rows = long(Network::groups) * s.q();
  if (dropouth > 0) {
    m.hidden = typename masks::rows("trellis::TrellisMasks::hidden", batch, s.q());
    detail::fill_dropout_mask(m.hidden, dropouth, rng);
  }
  if (wdrop > 0) {
    m.weight1_drop = typename masks::matrices("trellis::TrellisMasks::weight1_drop", net.kernels(), rows, s.ninp);
    m.weight2_drop = typename masks::matrices("trellis::TrellisMasks::weight2_drop", net.kernels(), rows, s.q());
    detail::fill_dropout_mask(m.weight1_drop, wdrop, rng);
    detail::fill_dropout_mask(m.weight2_drop, wdrop, rng);
  }
  return m;
}

/// The masks of draw_masks keyed by `key`: the hidden mask per sample (row
/// key.first_row + n), the weight-drop masks shared by the batch.
template <class Network>
auto draw_masks(Network const& net, long batch, double dropouth, double wdrop, DropoutKey const& key) {
  using masks = TrellisMasks<typename Network::memory_space, typename Network::scalar_type>;
  using matrices = typename masks::matrices;
  auto const& s = net.shape();
  long const rows = long(Network::groups) * s.q();
  masks m;
  m.hidden = make_keyed_mask<typename masks::rows, MaskScope::sample>("trellis::TrellisMasks::hidden", dropouth, key,
                                                                      1, batch, s.q());
  m.weight1_drop = make_keyed_mask<matrices, MaskScope::shared>("trellis::TrellisMasks::weight1_drop", wdrop, key, 2,
                                                                net.kernels(), rows, s.ninp);
  m.weight2_drop = make_keyed_mask<matrices, MaskScope::shared>("trellis::TrellisMasks::weight2_drop", wdrop, key, 3,
                                                                net.kernels(), rows, s.q());
  return m;
}

}  // namespace trellis
