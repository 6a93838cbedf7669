#pragma once
// Test helpers: host copies, random fills, relative errors, and the mapping between
// the library's parameter layout and the naive reference's.
#include <doctest/doctest.h>

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <trellis/core/network.hpp>
#include <trellis/io/torch_layout.hpp>
#include <trellis/testing/naive_trellis.hpp>

#include "backends.hpp"

namespace trellis::test {

// Counts, through Kokkos' tool callbacks, the allocations (in every memory space) and
// the fences (global and per instance) made while it is alive; restores the callbacks
// it found.
struct KokkosEventCounter {
  static inline long allocations = 0, fences = 0;
  Kokkos::Tools::Experimental::EventSet saved = Kokkos::Tools::Experimental::get_callbacks();
  KokkosEventCounter() {
    allocations = fences = 0;
    Kokkos::Tools::Experimental::set_allocate_data_callback(
        [](Kokkos_Profiling_SpaceHandle, char const*, void const*, std::uint64_t) { ++allocations; });
    Kokkos::Tools::Experimental::set_begin_fence_callback([](char const*, std::uint32_t, std::uint64_t*) { ++fences; });
  }
  ~KokkosEventCounter() { Kokkos::Tools::Experimental::set_callbacks(saved); }
  KokkosEventCounter(KokkosEventCounter const&) = delete;
  KokkosEventCounter& operator=(KokkosEventCounter const&) = delete;
};

/// Elements of a contiguous View, in index order, as doubles.
template <class View>
std::vector<double> to_host(View const& v) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  std::vector<double> out(h.span());
  for (std::size_t i = 0; i < h.span(); ++i) out[i] = double(h.data()[i]);
  return out;
}

template <class View>
void from_host(View const& v, std::vector<double> const& values) {
  auto h = Kokkos::create_mirror_view(v);
  REQUIRE(values.size() == h.span());
  using T = typename View::non_const_value_type;
  for (std::size_t i = 0; i < h.span(); ++i) h.data()[i] = T(values[i]);
  Kokkos::deep_copy(v, h);
}

inline std::vector<double> random_vector(std::size_t n, std::mt19937_64& rng, double lo = -1,
                                         double hi = 1) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(n);
  for (auto& e : v) e = u(rng);
  return v;
}

/// Dropout-style mask: 0 or 1 / (1 - p).
inline std::vector<double> random_mask(std::size_t n, double p, std::mt19937_64& rng) {
  std::bernoulli_distribution keep(1 - p);
  std::vector<double> v(n);
  for (auto& e : v) e = keep(rng) ? 1 / (1 - p) : 0;
  return v;
}

/// max|a - b| / max|b|.
inline double relative_error(std::vector<double> const& a, std::vector<double> const& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

/// Asserts a relative error below tol, printing it (llm.c's habit).
inline void check_close(char const* what, std::vector<double> const& got,
                        std::vector<double> const& want, double tol) {
  double const err = relative_error(got, want);
  INFO(std::string(what) << ": relative error " << err << " (tolerance " << tol << ")");
  CHECK(err <= tol);
}

template <class Scalar>
double epsilon() {
  return double(std::numeric_limits<Scalar>::epsilon());
}

inline std::vector<double> to_reference_layout(std::vector<double> const& ours, long k, long rows,
                                               long in) {
  return trellis::kernel_to_torch_layout(ours.data(), k, rows, in);
}

inline std::vector<double> slice(std::vector<double> const& v, long k, long size) {
  return std::vector<double>(v.begin() + k * size, v.begin() + (k + 1) * size);
}

/// A NaiveTrellis with the network's parameters and masks.
template <class Network>
naive::NaiveTrellis<double> naive_copy(Network const& net,
                                           typename Network::masks_type const& masks = {}) {
  auto const& s = net.shape();
  long const G = Network::groups, q = s.q(), p = s.ninp, rows = G * q;
  naive::NaiveTrellis<double> ref;
  ref.shape = s;
  ref.activation = Network::activation::name;
  ref.tied = Network::weight_tying::tied;
  auto const& P = net.parameters();
  auto w1 = to_host(P.weight1), w2 = to_host(P.weight2), b = to_host(P.bias2);
  auto g1 = to_host(P.weight1_g), g2 = to_host(P.weight2_g);
  for (long k = 0; k < net.kernels(); ++k) {
    naive::NaiveKernel<double> kern;
    kern.weight1 = to_reference_layout(w1, k, rows, p);
    kern.weight2 = to_reference_layout(w2, k, rows, q);
    kern.bias2 = slice(b, k, rows);
    if (s.weight_norm) {
      kern.weight1_g = slice(g1, k, rows);
      kern.weight2_g = slice(g2, k, rows);
    }
    ref.kernels.push_back(kern);
  }
  if (masks.hidden.extent(0) > 0) ref.hidden_mask = to_host(masks.hidden);
  if (masks.weight1_drop.extent(0) > 0) {
    auto m1 = to_host(masks.weight1_drop), m2 = to_host(masks.weight2_drop);
    for (long k = 0; k < net.kernels(); ++k) {
      ref.weight1_drop.push_back(slice(m1, k, rows * p));
      ref.weight2_drop.push_back(slice(m2, k, rows * q));
    }
  }
  return ref;
}

/// Every parameter of the network drawn from U(-scale, scale) (gains from U(0.5, 1.5)).
template <class Network>
void randomize_parameters(Network& net, std::mt19937_64& rng, double scale = 0.5) {
  auto& P = net.parameters();
  from_host(P.weight1, random_vector(P.weight1.span(), rng, -scale, scale));
  from_host(P.weight2, random_vector(P.weight2.span(), rng, -scale, scale));
  from_host(P.bias2, random_vector(P.bias2.span(), rng, -scale, scale));
  from_host(P.weight1_g, random_vector(P.weight1_g.span(), rng, 0.5, 1.5));
  from_host(P.weight2_g, random_vector(P.weight2_g.span(), rng, 0.5, 1.5));
}

/// The network's gradient of one tensor in the reference layout, kernel by kernel.
inline std::vector<double> gradient_in_reference_layout(std::vector<double> const& ours, long k,
                                                        long rows, long in) {
  return to_reference_layout(ours, k, rows, in);
}

}  // namespace trellis::test

namespace trellis::test {

/// Host-side inputs, outputs and gradients of one forward + backward.
struct Pass {
  long L = 0, N = 0;
  std::vector<double> x, h0, c0;             // inputs
  std::vector<double> d_out, d_h, d_c, d_aux; // incoming gradients (d_h, d_c, d_aux may be empty)
  std::vector<double> out, h, c, aux;        // outputs
  std::vector<double> dx, dh0, dc0;          // input gradients
  std::vector<double> g_weight1, g_weight1_g, g_weight2, g_weight2_g, g_bias2;  // ours layout
};

/// Random inputs and incoming gradients for a network of `shape`.
inline Pass random_pass(TrellisShape const& s, long L, long N, std::mt19937_64& rng,
                        bool with_state = true) {
  Pass p;
  p.L = L;
  p.N = N;
  long const q = s.q();
  p.x = random_vector(L * N * s.ninp, rng);
  p.h0 = with_state ? random_vector(N * q, rng, -0.5, 0.5) : std::vector<double>(N * q, 0);
  p.c0 = with_state ? random_vector(N * q, rng, -0.5, 0.5) : std::vector<double>(N * q, 0);
  p.d_out = random_vector(L * N * s.nout, rng);
  p.d_h = random_vector(N * q, rng);
  p.d_c = random_vector(N * q, rng);
  p.d_aux = random_vector(std::size_t(s.naux()) * L * N * s.nout, rng);
  return p;
}

/// Runs the network's forward (and, when `backward`, its backward) on `p`, in a fresh
/// cache unless one is given.
template <class Network>
void run_network(Network& net, Pass& p, typename Network::masks_type const& masks = {},
                 bool backward = true, typename Network::cache_type* reused = nullptr) {
  using Exec = typename Network::execution_space;
  Exec space;
  auto const& s = net.shape();
  long const L = p.L, N = p.N, q = s.q(), naux = s.naux();
  typename Network::sequence_view x("x", L, N, s.ninp), out("out", L, N, s.nout),
      dx("dx", L, N, s.ninp), d_out("d_out", L, N, s.nout);
  typename Network::state_view h0("h0", N, q), c0("c0", N, q), h("h", N, q), c("c", N, q),
      dh0("dh0", N, q), dc0("dc0", N, q), d_h, d_c;
  typename Network::aux_view aux("aux", naux, L, N, s.nout), d_aux;
  from_host(x, p.x);
  from_host(h0, p.h0);
  from_host(c0, p.c0);
  typename Network::cache_type fresh;
  auto& cache = reused ? *reused : fresh;
  net.forward(space, x, h0, c0, out, h, c, aux, cache, masks);
  p.out = to_host(out);
  p.h = to_host(h);
  p.c = to_host(c);
  p.aux = to_host(aux);
  if (!backward) return;
  from_host(d_out, p.d_out);
  if (!p.d_h.empty()) {
    d_h = typename Network::state_view("d_h", N, q);
    from_host(d_h, p.d_h);
  }
  if (!p.d_c.empty()) {
    d_c = typename Network::state_view("d_c", N, q);
    from_host(d_c, p.d_c);
  }
  if (!p.d_aux.empty()) {
    d_aux = typename Network::aux_view("d_aux", naux, L, N, s.nout);
    from_host(d_aux, p.d_aux);
  }
  net.zero_gradients(space);
  net.backward(space, cache, d_out, d_h, d_c, d_aux, dx, dh0, dc0);
  p.dx = to_host(dx);
  p.dh0 = to_host(dh0);
  p.dc0 = to_host(dc0);
  auto const& G = net.gradients();
  p.g_bias2 = to_host(G.bias2);
  if constexpr (std::is_same_v<typename Network::structure, Dense>) {
    p.g_weight1 = to_host(G.weight1);
    p.g_weight1_g = to_host(G.weight1_g);
    p.g_weight2 = to_host(G.weight2);
    p.g_weight2_g = to_host(G.weight2_g);
  }
}

/// The scalar loss whose gradients backward computes:
/// sum(d_out out) + sum(d_h h) + sum(d_c c) + sum(d_aux aux).
inline double pass_loss(Pass const& p) {
  auto dot = [](std::vector<double> const& a, std::vector<double> const& b) {
    double s = 0;
    for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) s += a[i] * b[i];
    return s;
  };
  return dot(p.d_out, p.out) + dot(p.d_h, p.h) + dot(p.d_c, p.c) + dot(p.d_aux, p.aux);
}

/// Compares a fast pass against the naive reference's forward and backward.
template <class Network>
void check_against_naive(Network const& net, Pass const& fast,
                         typename Network::masks_type const& masks, double tol) {
  auto ref = naive_copy(net, masks);
  auto const& s = net.shape();
  auto res = ref.forward(fast.x, fast.h0, fast.c0, fast.L, fast.N);
  check_close("out", fast.out, res.out, tol);
  check_close("h", fast.h, res.h, tol);
  if (Network::activation::has_cell) check_close("c", fast.c, res.c, tol);
  if (s.naux() > 0) check_close("aux", fast.aux, res.aux, tol);
  if (fast.dx.empty()) return;
  auto gr = ref.backward(fast.d_out, fast.d_h, Network::activation::has_cell ? fast.d_c : std::vector<double>{},
                         fast.d_aux);
  check_close("dx", fast.dx, gr.dx, tol);
  check_close("dh0", fast.dh0, gr.dh0, tol);
  if (Network::activation::has_cell) check_close("dc0", fast.dc0, gr.dc0, tol);
  long const rows = long(Network::groups) * s.q();
  for (long k = 0; k < net.kernels(); ++k) {
    INFO("kernel " << k);
    check_close("d weight1", to_reference_layout(fast.g_weight1, k, rows, s.ninp), gr.kernels[k].weight1, tol);
    check_close("d weight2", to_reference_layout(fast.g_weight2, k, rows, s.q()), gr.kernels[k].weight2, tol);
    check_close("d bias2", slice(fast.g_bias2, k, rows), gr.kernels[k].bias2, tol);
    if (s.weight_norm) {
      check_close("d weight1_g", slice(fast.g_weight1_g, k, rows), gr.kernels[k].weight1_g, tol);
      check_close("d weight2_g", slice(fast.g_weight2_g, k, rows), gr.kernels[k].weight2_g, tol);
    }
  }
}

}  // namespace trellis::test
