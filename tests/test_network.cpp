// The fast TrellisNetwork against the naive reference, on every backend, in float and
// double: forward outputs, state and aux outputs, and every gradient.
#include <doctest/doctest.h>

#include <trellis/trellis.hpp>

#include "helpers.hpp"

namespace {

using namespace trellis::test;

struct Case {
  char const* name;
  trellis::TrellisShape shape;
  long L, N;
  bool masks;
};

std::vector<Case> cases() {
  auto shape = [](int ninp, int nhid, int nout, int nlevels, std::vector<int> dil, int aux, bool wn) {
    trellis::TrellisShape s;
    s.ninp = ninp;
    s.nhid = nhid;
    s.nout = nout;
    s.nlevels = nlevels;
    s.dilation = dil;
    s.aux_frequency = aux;
    s.weight_norm = wn;
    return s;
  };
  return {
      {"plain", shape(3, 5, 2, 3, {1}, 0, false), 6, 2, false},
      {"wnorm, aux, masks", shape(4, 6, 3, 4, {1}, 2, true), 7, 3, true},
      {"dilation cycle", shape(2, 4, 2, 5, {1, 2, 4}, 2, true), 9, 2, true},
      {"dilation longer than the sequence", shape(3, 3, 3, 3, {1, 8}, 3, false), 5, 2, true},
      {"one step, one level", shape(2, 3, 1, 1, {1}, 1, true), 1, 1, false},
  };
}

template <class Network>
typename Network::masks_type fixed_masks(Network const& net, long N, std::mt19937_64& rng) {
  typename Network::masks_type m;
  auto const& s = net.shape();
  long const rows = long(Network::groups) * s.q();
  m.hidden = typename Network::masks_type::rows("m", N, s.q());
  m.weight1_drop = typename Network::masks_type::matrices("w1drop", net.kernels(), rows, s.ninp);
  m.weight2_drop = typename Network::masks_type::matrices("w2drop", net.kernels(), rows, s.q());
  from_host(m.hidden, random_mask(m.hidden.span(), 0.3, rng));
  from_host(m.weight1_drop, random_mask(m.weight1_drop.span(), 0.25, rng));
  from_host(m.weight2_drop, random_mask(m.weight2_drop.span(), 0.25, rng));
  return m;
}

/// What a check ran on, for the failure messages.
template <class Scalar, class Tying, class Activation>
std::string describe(Case const& c, trellis::InjectionMode injection, std::string const& more) {
  return std::string(c.name) + ", injection " + std::to_string(int(injection)) + ", " + Tying::name + ", " +
         Activation::name + ", " + std::to_string(sizeof(Scalar)) + "-byte scalars, " + more;
}

template <class Exec, class Scalar, class Tying, class Activation = trellis::LSTMGating>
Pass check_case(Case const& c, trellis::blas::MathMode math = trellis::blas::MathMode::strict,
                trellis::InjectionMode injection = trellis::InjectionMode::automatic) {
  auto const what = describe<Scalar, Tying, Activation>(c, injection, "math " + std::to_string(int(math)));
  INFO(what);
  Exec space;
  std::mt19937_64 rng(42);
  trellis::TrellisNetwork<Exec, Scalar, Tying, trellis::Dense, Activation> net(space, c.shape);
  net.set_math_mode(math);
  net.set_injection_mode(injection);
  randomize_parameters(net, rng);
  auto masks = c.masks ? fixed_masks(net, c.N, rng) : typename decltype(net)::masks_type{};
  Pass p = random_pass(c.shape, c.L, c.N, rng);
  run_network(net, p, masks);
  // Errors grow with the inner dimension of the products and with depth; bf16 operands
  // carry a relative error of 2^-9 each into every product, and the weight-norm gains'
  // gradients (sums of products that cancel) amplify it a few times.
  double const inner = 2.0 * (c.shape.q() + c.shape.ninp);
  double const unit = math == trellis::blas::MathMode::bf16 && std::is_same_v<Scalar, float>
                          ? std::ldexp(1.0, -6)
                          : 16 * epsilon<Scalar>() * inner;
  check_against_naive(net, p, masks, unit * c.shape.nlevels);
  return p;
}

// Two passes of the same inputs by two dense networks (or modes): every output and
// gradient within tol.
void check_same_pass(Pass const& b, Pass const& a, double tol) {
  using Field = std::vector<double> Pass::*;
  std::pair<char const*, Field> const fields[] = {
      {"out", &Pass::out}, {"h", &Pass::h}, {"c", &Pass::c}, {"aux", &Pass::aux}, {"dx", &Pass::dx},
      {"dh0", &Pass::dh0}, {"dc0", &Pass::dc0}, {"d weight1", &Pass::g_weight1},
      {"d weight1_g", &Pass::g_weight1_g}, {"d weight2", &Pass::g_weight2}, {"d weight2_g", &Pass::g_weight2_g},
      {"d bias2", &Pass::g_bias2}};
  for (auto const& [name, field] : fields) check_close(name, b.*field, a.*field, tol);
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("TrellisNetwork matches the naive reference", Exec, network_vs_naive) {
  using trellis::InjectionMode;
  for (auto const& c : cases())
    for (auto injection : {InjectionMode::separate, InjectionMode::folded}) {
      auto const strict = trellis::blas::MathMode::strict;
      check_case<Exec, double, trellis::TiedAcrossDepth>(c, strict, injection);
      check_case<Exec, float, trellis::TiedAcrossDepth>(c, strict, injection);
      check_case<Exec, double, trellis::Untied>(c, strict, injection);
      check_case<Exec, float, trellis::Untied>(c, strict, injection);
    }
}

TEST_CASE_TEMPLATE_DEFINE("the folded injection gives the separate injection's results", Exec, folded_injection) {
  using trellis::InjectionMode;
  Exec space;
  auto c = cases()[2];  // dilation cycle [1, 2, 4], wnorm, aux, masks
  c.shape.nlevels = 7;
  c.L = 12;
  using Net = trellis::TrellisNetwork<Exec, double>;
  // Narrow inputs fold by default; wide ones keep U; RnnSparse cannot fold.
  for (int ninp : {1, 16, 17}) {
    auto s = c.shape;
    s.ninp = ninp;
    Net net(space, s);
    CHECK(net.injection_folded() == (ninp <= 16));
    CHECK(net.injection_slots() == (ninp <= 16 ? 0 : 3));
    net.set_injection_mode(InjectionMode::separate);
    CHECK(!net.injection_folded());
    net.set_injection_mode(InjectionMode::folded);
    CHECK(net.injection_folded());
  }
  {
    trellis::TrellisShape s;
    s.ninp = 2, s.nhid = 2, s.nout = 2, s.nlevels = 2, s.layers = 2, s.weight_norm = false;
    trellis::TrellisNetwork<Exec, double, trellis::TiedAcrossDepth, trellis::RnnSparse> sparse(space, s);
    CHECK(!sparse.injection_folded());
    CHECK_THROWS_WITH_AS(sparse.set_injection_mode(InjectionMode::folded),
                         doctest::Contains("rnn-sparse structure has no folded injection"), std::invalid_argument);
  }
  // One network, one cache, the two modes in turn: the same results to rounding (the
  // folded GEMM sums the injection with the hidden products in another order), and the
  // folded cache keeps no U per dilation.
  std::mt19937_64 rng(3);
  Net net(space, c.shape);
  randomize_parameters(net, rng);
  auto masks = fixed_masks(net, c.N, rng);
  Pass const pass = random_pass(c.shape, c.L, c.N, rng);
  typename Net::cache_type cache;
  Pass runs[3] = {pass, pass, pass};
  std::size_t bytes[3];
  for (int i = 0; i < 3; ++i) {
    net.set_injection_mode(i == 1 ? InjectionMode::folded : InjectionMode::separate);
    for (int k : {1, 3}) {  // and with level recomputation
      net.set_recompute_interval(k);
      Pass r = pass;
      run_network(net, r, masks, true, &cache);
      if (k == 1) runs[i] = r, bytes[i] = cache.bytes();
      check_close("recomputed out", r.out, runs[i].out, 0.0);
      check_close("recomputed d weight2", r.g_weight2, runs[i].g_weight2, 0.0);
      check_close("recomputed dx", r.dx, runs[i].dx, 0.0);
    }
  }
  CHECK(bytes[1] < bytes[0]);
  CHECK(bytes[2] == bytes[0]);
  check_same_pass(runs[1], runs[0], 1e-13);
  check_close("separate again", runs[2].g_weight1, runs[0].g_weight1, 0.0);
}

TEST_CASE_TEMPLATE_DEFINE("bf16 products keep the network within bf16 error of the reference", Exec,
                          network_bf16) {
  auto all = cases();
  trellis::TrellisShape wide = all[2].shape;
  wide.ninp = 24;
  wide.nhid = 40;
  wide.nout = 16;
  wide.nlevels = 6;
  wide.dilation = {1, 2};
  all.push_back({"wide enough for whole tiles", wide, 20, 4, true});
  bool const amx = trellis::blas::bf16_products_available();
  bool const host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible;
  for (auto const& c : all) {
    Pass const reduced = check_case<Exec, float, trellis::TiedAcrossDepth>(c, trellis::blas::MathMode::bf16);
    check_case<Exec, float, trellis::Untied>(c, trellis::blas::MathMode::bf16);
    Pass const strict = check_case<Exec, float, trellis::TiedAcrossDepth>(c);
    // The reduced path really ran where it exists (else the test above proves nothing).
    if (amx || !host) CHECK(reduced.out != strict.out);
    else CHECK(reduced.out == strict.out);
    // Double ignores the mode.
    CHECK(check_case<Exec, double, trellis::TiedAcrossDepth>(c, trellis::blas::MathMode::bf16).g_weight2 ==
          check_case<Exec, double, trellis::TiedAcrossDepth>(c).g_weight2);
  }
}

TEST_CASE_TEMPLATE_DEFINE("elementwise activations match the naive reference", Exec, elementwise) {
  for (auto const& c : cases()) {
    check_case<Exec, double, trellis::TiedAcrossDepth, trellis::ElementwiseTanh>(
        c, trellis::blas::MathMode::strict, trellis::InjectionMode::separate);
    check_case<Exec, double, trellis::TiedAcrossDepth, trellis::ElementwiseTanh>(c);
    check_case<Exec, double, trellis::Untied, trellis::ElementwiseRelu>(c);
    check_case<Exec, float, trellis::TiedAcrossDepth, trellis::ElementwiseRelu>(c);
  }
}

TEST_CASE_TEMPLATE_DEFINE("an untied network with equal kernels is the tied network", Exec, untied_equal) {
  Exec space;
  std::mt19937_64 rng(7);
  auto c = cases()[2];
  trellis::TrellisNetwork<Exec, double> tied(space, c.shape);
  trellis::TrellisNetwork<Exec, double, trellis::Untied> untied(space, c.shape);
  randomize_parameters(tied, rng);
  auto copy_kernels = [&](auto const& from, auto const& to) {
    auto h = to_host(from);
    std::vector<double> rep;
    for (int k = 0; k < c.shape.nlevels; ++k) rep.insert(rep.end(), h.begin(), h.end());
    from_host(to, rep);
  };
  copy_kernels(tied.parameters().weight1, untied.parameters().weight1);
  copy_kernels(tied.parameters().weight2, untied.parameters().weight2);
  copy_kernels(tied.parameters().bias2, untied.parameters().bias2);
  copy_kernels(tied.parameters().weight1_g, untied.parameters().weight1_g);
  copy_kernels(tied.parameters().weight2_g, untied.parameters().weight2_g);
  Pass a = random_pass(c.shape, c.L, c.N, rng), b = a;
  run_network(tied, a);
  run_network(untied, b);
  check_close("out", b.out, a.out, 1e-13);
  check_close("h", b.h, a.h, 1e-13);
  check_close("c", b.c, a.c, 1e-13);
  check_close("aux", b.aux, a.aux, 1e-13);
  check_close("dx", b.dx, a.dx, 1e-12);
  // The tied gradient is the sum of the untied per-level gradients.
  auto sum_levels = [&](std::vector<double> const& g) {
    std::size_t const per = g.size() / c.shape.nlevels;
    std::vector<double> s(per, 0);
    for (std::size_t i = 0; i < g.size(); ++i) s[i % per] += g[i];
    return s;
  };
  check_close("d weight2", sum_levels(b.g_weight2), a.g_weight2, 1e-12);
  check_close("d weight1", sum_levels(b.g_weight1), a.g_weight1, 1e-12);
  check_close("d bias2", sum_levels(b.g_bias2), a.g_bias2, 1e-12);
}

TEST_CASE_TEMPLATE_DEFINE("two segments with the carried state follow the reference", Exec, segments) {
  Exec space;
  std::mt19937_64 rng(11);
  auto c = cases()[2];
  trellis::TrellisNetwork<Exec, float> net(space, c.shape);
  randomize_parameters(net, rng);
  auto masks = fixed_masks(net, c.N, rng);
  // Segment 1 from a zero state; segment 2 from segment 1's (h, c): the reference's repack.
  Pass one = random_pass(c.shape, c.L, c.N, rng, /*with_state=*/false);
  run_network(net, one, masks, /*backward=*/false);
  Pass two = random_pass(c.shape, 6, c.N, rng);
  two.h0 = one.h;
  two.c0 = one.c;
  run_network(net, two, masks);
  auto ref = naive_copy(net, masks);
  auto r1 = ref.forward(one.x, one.h0, one.c0, one.L, one.N);
  auto r2 = ref.forward(two.x, r1.h, r1.c, two.L, two.N);
  double const tol = 16 * epsilon<float>() * 2 * (c.shape.q() + c.shape.ninp) * c.shape.nlevels * 2;
  check_close("segment 2 out", two.out, r2.out, tol);
  check_close("segment 2 h", two.h, r2.h, tol);
  check_close("segment 2 c", two.c, r2.c, tol);
  auto gr = ref.backward(two.d_out, two.d_h, two.d_c, two.d_aux);
  check_close("segment 2 dh0", two.dh0, gr.dh0, tol);
  check_close("segment 2 dc0", two.dc0, gr.dc0, tol);
}

namespace {

// With level recomputation the recomputed levels see the same history, weights and
// masks as forward did, so on the host every result is the full-memory one bit for bit;
// devices get a few ulps of room for GEMM algorithms that may differ by workspace.
template <class Exec, class Scalar, class Tying, class Activation>
void check_recomputation(Case const& c, int k,
                         trellis::InjectionMode injection = trellis::InjectionMode::automatic) {
  auto const what = describe<Scalar, Tying, Activation>(c, injection, "recompute interval " + std::to_string(k));
  INFO(what);
  Exec space;
  std::mt19937_64 rng(5);
  using Network = trellis::TrellisNetwork<Exec, Scalar, Tying, trellis::Dense, Activation>;
  Network full(space, c.shape), recomputing(space, c.shape);
  randomize_parameters(full, rng);
  auto const& P = full.parameters();
  auto& Q = recomputing.parameters();
  Kokkos::deep_copy(Q.weight1, P.weight1);
  Kokkos::deep_copy(Q.weight2, P.weight2);
  Kokkos::deep_copy(Q.bias2, P.bias2);
  Kokkos::deep_copy(Q.weight1_g, P.weight1_g);
  Kokkos::deep_copy(Q.weight2_g, P.weight2_g);
  recomputing.set_recompute_interval(k);
  full.set_injection_mode(injection);
  recomputing.set_injection_mode(injection);
  auto masks = c.masks ? fixed_masks(full, c.N, rng) : typename Network::masks_type{};
  Pass a = random_pass(c.shape, c.L, c.N, rng), b = a;
  run_network(full, a, masks);
  run_network(recomputing, b, masks);
  bool const host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible;
  check_same_pass(b, a, host ? 0.0 : 64 * epsilon<Scalar>());
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("level recomputation gives the full-memory results", Exec, recomputation) {
  auto all = cases();
  trellis::TrellisShape deep = all[2].shape;
  deep.nlevels = 10;
  deep.dilation = {1, 2, 3};
  deep.aux_frequency = 3;
  all.push_back({"ten levels, dilation [1,2,3]", deep, 8, 3, true});
  for (auto const& c : all) {
    int const n = c.shape.nlevels;
    for (int k : {0, 2, 3, n, n + 2}) {
      check_recomputation<Exec, double, trellis::TiedAcrossDepth, trellis::LSTMGating>(c, k);
      check_recomputation<Exec, float, trellis::TiedAcrossDepth, trellis::LSTMGating>(c, k);
    }
  }
  auto const& c = all.back();
  for (int k : {0, 4}) {
    check_recomputation<Exec, float, trellis::TiedAcrossDepth, trellis::LSTMGating>(
        c, k, trellis::InjectionMode::separate);
    check_recomputation<Exec, double, trellis::Untied, trellis::LSTMGating>(c, k);
    check_recomputation<Exec, double, trellis::TiedAcrossDepth, trellis::ElementwiseTanh>(c, k);
    check_recomputation<Exec, float, trellis::TiedAcrossDepth, trellis::ElementwiseRelu>(c, k);
  }
}

// The kernels' device shapes (level kernels: one work item per pack of 4, 2 or 1
// channels; the others: flat ranges) forced on the host, so that the code a GPU runs is
// checked on every backend.
struct DeviceShapedKernels {
  DeviceShapedKernels() { trellis::detail::kernel_shape_override() = trellis::detail::KernelShape::device; }
  ~DeviceShapedKernels() { trellis::detail::kernel_shape_override() = trellis::detail::KernelShape::automatic; }
  DeviceShapedKernels(DeviceShapedKernels const&) = delete;
  DeviceShapedKernels& operator=(DeviceShapedKernels const&) = delete;
};

TEST_CASE_TEMPLATE_DEFINE("the device-shaped level kernels match the naive reference", Exec, pack_kernels) {
  using trellis::InjectionMode;
  using trellis::detail::pack_width;
  using Matrix = Kokkos::View<float**, Kokkos::LayoutRight, typename Exec::memory_space>;
  // The widest 16-byte pack that q, every row stride and every View's alignment allow.
  Matrix gates("gates", 6, 4 * 8), cell("cell", 6, 8);
  CHECK(pack_width<float>(8, gates, cell) == 4);
  CHECK(pack_width<float>(6, Matrix("g", 6, 24), Matrix("c", 6, 6)) == 2);
  CHECK(pack_width<float>(5, Matrix("g", 6, 20)) == 1);
  CHECK(pack_width<float>(8, gates, Kokkos::subview(cell, std::make_pair(1, 6), std::make_pair(2, 8))) == 2);
  CHECK(pack_width<float>(8, gates, Matrix()) == 4);  // empty Views do not count
  CHECK(pack_width<double>(8, Kokkos::View<double**, Kokkos::LayoutRight, typename Exec::memory_space>("d", 2, 8)) ==
        2);

  auto const strict = trellis::blas::MathMode::strict;
  // q = nhid + nout = 7, 9, 6, 6, 4, 8: packs of 1, 1, 2, 2, 4 and 4 in float (2 in double)
  auto all = cases();
  auto wide = all[2];
  wide.name = "dilation cycle, q = 8";
  wide.shape.nhid = 6;
  all.push_back(wide);
  std::vector<Pass> rows;
  for (auto const& c : all) rows.push_back(check_case<Exec, float, trellis::TiedAcrossDepth>(c));
  DeviceShapedKernels packs;
  // On the host, the packs do the row loops' operations in their order: the same bits.
  // (On devices both runs are packs; only the GEMMs' run-to-run rounding may differ.)
  bool const host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible;
  for (std::size_t i = 0; i < all.size(); ++i) {
    auto const& c = all[i];
    check_same_pass(check_case<Exec, float, trellis::TiedAcrossDepth>(c), rows[i], host ? 0.0 : 64 * epsilon<float>());
    for (auto injection : {InjectionMode::separate, InjectionMode::folded}) {
      check_case<Exec, double, trellis::TiedAcrossDepth>(c, strict, injection);
      check_case<Exec, float, trellis::TiedAcrossDepth>(c, strict, injection);
      check_case<Exec, float, trellis::Untied>(c, strict, injection);
    }
    check_case<Exec, double, trellis::TiedAcrossDepth, trellis::ElementwiseTanh>(c, strict, InjectionMode::separate);
    check_case<Exec, float, trellis::Untied, trellis::ElementwiseRelu>(c);
  }
  // The history rebuild of recomputed blocks.
  for (int k : {2, 3}) {
    check_recomputation<Exec, float, trellis::TiedAcrossDepth, trellis::LSTMGating>(all[1], k);
    check_recomputation<Exec, float, trellis::TiedAcrossDepth, trellis::LSTMGating>(all.back(), k);
    check_recomputation<Exec, double, trellis::TiedAcrossDepth, trellis::LSTMGating>(all[2], k,
                                                                                      InjectionMode::separate);
    check_recomputation<Exec, float, trellis::TiedAcrossDepth, trellis::ElementwiseTanh>(all[2], k);
  }
}

namespace {

struct StepEvents {
  long allocations, fences;
};

// One train step (forward, zero_gradients, backward with every input gradient) of p's
// x and d_out, from a zero state, on the given cache; the Kokkos events it made.
template <class Net>
StepEvents train_step(Net& net, typename Net::cache_type& cache, Pass const& p,
                      typename Net::masks_type const& m = {}) {
  using Exec = typename Net::execution_space;
  Exec space;
  auto const& s = net.shape();
  long const L = p.L, N = p.N, q = s.q();
  typename Net::sequence_view x("x", L, N, s.ninp), out("out", L, N, s.nout), d_out("d_out", L, N, s.nout),
      dx("dx", L, N, s.ninp);
  typename Net::state_view h0("h0", N, q), c0("c0", N, q), h("h", N, q), c("c", N, q), dh0("dh0", N, q),
      dc0("dc0", N, q);
  typename Net::aux_view aux("aux", s.naux(), L, N, s.nout);
  from_host(x, p.x);
  from_host(d_out, p.d_out);
  space.fence();
  StepEvents e{};
  {
    KokkosEventCounter counter;
    net.forward(space, x, h0, c0, out, h, c, aux, cache, m);
    net.zero_gradients(space);
    net.backward(space, cache, d_out, {}, {}, {}, dx, dh0, dc0);
    e = {KokkosEventCounter::allocations, KokkosEventCounter::fences};
  }
  space.fence();
  return e;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("level recomputation keeps n / k + k - 1 levels and reuses its cache", Exec,
                          recomputation_memory) {
  Exec space;
  std::mt19937_64 rng(9);
  auto c = cases()[2];
  c.shape.nlevels = 12;
  trellis::TrellisNetwork<Exec, double> net(space, c.shape);
  randomize_parameters(net, rng);
  CHECK(net.recompute_interval() == 1);
  CHECK_THROWS_WITH_AS(net.set_recompute_interval(-1),
                       doctest::Contains("set_recompute_interval: k = -1"), std::invalid_argument);
  net.set_recompute_interval(0);
  CHECK(net.recompute_interval() == 3);  // about sqrt(12)
  CHECK(decltype(net)::default_recompute_interval(140) == 11);
  CHECK(decltype(net)::default_recompute_interval(1) == 1);

  // One cache through full, recomputing and full again: each pass equals a fresh one.
  Pass const p = random_pass(c.shape, c.L, c.N, rng);
  typename decltype(net)::cache_type cache;
  std::vector<double> grads[3];
  std::size_t bytes[3];
  long slots[3];
  for (int pass = 0; pass < 3; ++pass) {
    net.set_recompute_interval(pass == 1 ? 3 : 1);
    train_step(net, cache, p);
    grads[pass] = to_host(net.gradients().weight2);
    bytes[pass] = cache.bytes();
    slots[pass] = cache.level_slots();
  }
  CHECK(slots[0] == 12);
  CHECK(slots[1] == 12 / 3 + 3 - 1);
  CHECK(slots[2] == 12);
  CHECK(bytes[1] < bytes[0]);
  CHECK(bytes[2] == bytes[0]);
  bool const host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible;
  check_close("recomputing, same cache", grads[1], grads[0], host ? 0.0 : 1e-13);
  check_close("full again, same cache", grads[2], grads[0], host ? 0.0 : 1e-13);
}


// Issue 7: no allocation inside the level loop (every buffer lives in the cache, sized
// on the first step), and on devices no host synchronisation in it either (a fence per
// level would show as more fences in a deeper network). Host spaces are synchronous:
// their fences (before every Eigen GEMM, in every host memset) are not a wait.
TEST_CASE_TEMPLATE_DEFINE("a train step on a sized cache allocates nothing and waits for nothing per level", Exec,
                          no_allocation_in_level_loop) {
  bool const host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible;
  auto base = cases()[1];  // wnorm, aux and masks: every per-level kernel runs
  for (int k : {1, 3}) {
    for (auto injection : {trellis::InjectionMode::separate, trellis::InjectionMode::folded}) {
      StepEvents warm[2];
      int i = 0;
      for (int nlevels : {3, 9}) {
        CAPTURE(k);
        CAPTURE(int(injection));
        CAPTURE(nlevels);
        auto c = base;
        c.shape.nlevels = nlevels;
        std::mt19937_64 rng(5);
        Exec space;
        trellis::TrellisNetwork<Exec, float> net(space, c.shape);
        net.set_injection_mode(injection);
        net.set_recompute_interval(k);
        randomize_parameters(net, rng);
        auto masks = fixed_masks(net, c.N, rng);
        Pass p = random_pass(c.shape, c.L, c.N, rng);
        typename decltype(net)::cache_type cache;
        auto const cold = train_step(net, cache, p, masks);
        CHECK(cold.allocations > 0);  // the cache is sized here (and the counter counts)
        warm[i] = train_step(net, cache, p, masks);
        CHECK(warm[i].allocations == 0);
        ++i;
      }
      if (!host) CHECK(warm[1].fences == warm[0].fences);
    }
  }
}

namespace {

// Forward and backward in blocks of rows against whole levels (the same network, inputs
// and masks): every row's gates, dA, S and dS are computed as before, only GEMMs on
// fewer rows may sum in another order and dW sums over blocks.
template <class Exec, class Scalar, class Tying, class Activation>
void check_blocks(Case const& c, long forward_rows, long backward_rows, trellis::InjectionMode injection,
                  int recompute) {
  auto const what = describe<Scalar, Tying, Activation>(
      c, injection,
      "forward blocks of " + std::to_string(forward_rows) + " rows, backward blocks of " +
          std::to_string(backward_rows) + " rows, recompute interval " + std::to_string(recompute));
  INFO(what);
  Exec space;
  std::mt19937_64 rng(9);
  trellis::TrellisNetwork<Exec, Scalar, Tying, trellis::Dense, Activation> net(space, c.shape);
  net.set_injection_mode(injection);
  net.set_recompute_interval(recompute);
  randomize_parameters(net, rng);
  auto masks = c.masks ? fixed_masks(net, c.N, rng) : typename decltype(net)::masks_type{};
  Pass const pass = random_pass(c.shape, c.L, c.N, rng);
  Pass whole = pass, blocked = pass;
  typename decltype(net)::cache_type cache;
  long const R = c.L * c.N;
  net.set_forward_block_rows(R);
  net.set_backward_block_rows(R);
  run_network(net, whole, masks, true, &cache);
  std::size_t const whole_bytes = cache.bytes();
  net.set_forward_block_rows(forward_rows);
  net.set_backward_block_rows(backward_rows);
  run_network(net, blocked, masks, true, &cache);
  // dA is kept for one block only.
  if (backward_rows < R) CHECK(cache.bytes() < whole_bytes);
  check_same_pass(blocked, whole, 64 * epsilon<Scalar>() * (c.shape.q() + c.shape.ninp) * c.shape.nlevels);
  double const inner = 2.0 * (c.shape.q() + c.shape.ninp);
  check_against_naive(net, blocked, masks, 16 * epsilon<Scalar>() * inner * c.shape.nlevels);
  // Recomputed levels go through the same blocks as the forward: the same bits.
  if (net.recompute_interval() > 1) {
    Pass kept = pass;
    net.set_recompute_interval(1);
    run_network(net, kept, masks, true, &cache);
    check_same_pass(blocked, kept, 0.0);
  }
}

/// Host GEMMs on `n` threads of a one-thread space for a scope.
struct SerialGemmThreads {
  int saved = trellis::blas::serial_gemm_threads();
  explicit SerialGemmThreads(int n) { trellis::blas::set_serial_gemm_threads(n); }
  ~SerialGemmThreads() { trellis::blas::set_serial_gemm_threads(saved); }
  SerialGemmThreads(SerialGemmThreads const&) = delete;
  SerialGemmThreads& operator=(SerialGemmThreads const&) = delete;
};

// Forward and backward with their GEMMs overlapped with the fused kernels
// (Kokkos::Serial, GEMMs on two threads) against the same network in sequence: the
// gates and dS are the same, dW sums over the chunks in their order; and again, the
// same bits whatever the threads' timing. forward_rows 0: the overlap's eight blocks.
template <class Exec, class Scalar, class Tying, class Activation>
void check_overlap(Case const& c, long backward_rows, long forward_rows, trellis::InjectionMode injection,
                   int recompute, trellis::blas::MathMode math = trellis::blas::MathMode::strict) {
  auto const what = describe<Scalar, Tying, Activation>(
      c, injection,
      "overlapped GEMMs, backward blocks of " + std::to_string(backward_rows) + " rows, forward blocks of " +
          std::to_string(forward_rows) + ", recompute interval " + std::to_string(recompute));
  INFO(what);
  Exec space;
  std::mt19937_64 rng(11);
  trellis::TrellisNetwork<Exec, Scalar, Tying, trellis::Dense, Activation> net(space, c.shape);
  net.set_injection_mode(injection);
  net.set_recompute_interval(recompute);
  net.set_math_mode(math);
  randomize_parameters(net, rng);
  auto masks = c.masks ? fixed_masks(net, c.N, rng) : typename decltype(net)::masks_type{};
  Pass const pass = random_pass(c.shape, c.L, c.N, rng);
  Pass in_order = pass, overlapped = pass, again = pass;
  typename decltype(net)::cache_type cache;
  long const R = c.L * c.N;
  SerialGemmThreads const two(2);
  net.set_backward_block_rows(backward_rows);
  net.set_forward_block_rows(forward_rows);
  net.set_gemm_overlap(trellis::GemmOverlap::off);
  CHECK_FALSE(net.overlaps_gemms(R));
  run_network(net, in_order, masks, true, &cache);
  std::size_t const in_order_bytes = cache.bytes();
  net.set_gemm_overlap(trellis::GemmOverlap::on);
  bool expected = trellis::detail::gemm_overlap_supported && !net.injection_folded();
#if defined(KOKKOS_ENABLE_SERIAL)
  expected = expected && std::is_same_v<Exec, Kokkos::Serial>;
#else
  expected = false;
#endif
  CHECK(net.overlaps_gemms(R) == expected);
  run_network(net, overlapped, masks, true, &cache);
  // Two blocks' dA when overlapped.
  if (expected && backward_rows < R) CHECK(cache.bytes() > in_order_bytes);
  run_network(net, again, masks, true, &cache);
  double const tol = math == trellis::blas::MathMode::bf16
                         ? 1e-2
                         : 64 * epsilon<Scalar>() * (c.shape.q() + c.shape.ninp) * c.shape.nlevels;
  check_same_pass(overlapped, in_order, tol);
  check_same_pass(again, overlapped, 0.0);
  if (math == trellis::blas::MathMode::strict) {
    double const inner = 2.0 * (c.shape.q() + c.shape.ninp);
    check_against_naive(net, overlapped, masks, 16 * epsilon<Scalar>() * inner * c.shape.nlevels);
  }
  // On one GEMM thread nothing is overlapped.
  trellis::blas::set_serial_gemm_threads(1);
  CHECK_FALSE(net.overlaps_gemms(R));
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("forward and backward with their GEMMs overlapped give the in-order results", Exec, overlapped_gemms) {
  using trellis::InjectionMode;
  auto all = cases();
  for (auto const& c : all) {
    long const R = c.L * c.N;
    for (long rows : {1L, 3L, 5L, R - 1, R + 4}) {
      if (rows < 1) continue;
      for (auto injection : {InjectionMode::separate, InjectionMode::folded}) {
        check_overlap<Exec, double, trellis::TiedAcrossDepth, trellis::LSTMGating>(c, rows, 0, injection, 1);
        check_overlap<Exec, float, trellis::Untied, trellis::LSTMGating>(c, rows, rows, injection, 1);
      }
    }
  }
  for (auto const& c : {all[2], all[3]}) {
    check_overlap<Exec, double, trellis::TiedAcrossDepth, trellis::LSTMGating>(c, 3, 0, InjectionMode::separate, 2);
    check_overlap<Exec, double, trellis::TiedAcrossDepth, trellis::LSTMGating>(c, 3, 2, InjectionMode::separate, 3);
    check_overlap<Exec, double, trellis::TiedAcrossDepth, trellis::ElementwiseTanh>(c, 4, 0, InjectionMode::separate,
                                                                                    1);
    check_overlap<Exec, float, trellis::TiedAcrossDepth, trellis::LSTMGating>(c, 4, 0, InjectionMode::separate, 1,
                                                                               trellis::blas::MathMode::bf16);
  }
  // Automatic: small levels are not overlapped, and a whole level becomes eight blocks.
  Exec space;
  trellis::TrellisNetwork<Exec, float> net(space, all[0].shape);
  CHECK(net.gemm_overlap() == trellis::GemmOverlap::automatic);
  SerialGemmThreads const two(2);
  CHECK_FALSE(net.overlaps_gemms(all[0].L * all[0].N));
  trellis::TrellisShape wide = all[0].shape;
  wide.nhid = 190, wide.nout = 2, wide.ninp = 64;  // q = 192: the demo's level
  trellis::TrellisNetwork<Exec, float> demo(space, wide);
  bool const serial = trellis::detail::gemm_overlap_supported &&
#if defined(KOKKOS_ENABLE_SERIAL)
                      std::is_same_v<Exec, Kokkos::Serial>;
#else
                      false;
#endif
  CHECK(demo.overlaps_gemms(2048) == serial);
  CHECK((demo.backward_block_rows_for(2048) == 256) == serial);
  CHECK((demo.forward_block_rows_for(2048) == 256) == serial);
  demo.set_gemm_overlap(trellis::GemmOverlap::off);
  CHECK(demo.backward_block_rows_for(2048) == 2048);
  CHECK(demo.forward_block_rows_for(2048) == 2048);
}

TEST_CASE_TEMPLATE_DEFINE("forward and backward in blocks of rows give the whole-level results", Exec,
                          level_blocks) {
  using trellis::InjectionMode;
  auto all = cases();
  for (auto const& c : all) {
    long const R = c.L * c.N;
    // Blocks shorter and longer than a level's dilation times the batch, which is how
    // far the fused forward shifts the next level's history.
    for (long rows : {1L, 3L, 5L, R - 1, R + 4}) {
      if (rows < 1) continue;
      for (auto injection : {InjectionMode::separate, InjectionMode::folded}) {
        check_blocks<Exec, double, trellis::TiedAcrossDepth, trellis::LSTMGating>(c, rows, R, injection, 1);
        check_blocks<Exec, double, trellis::TiedAcrossDepth, trellis::LSTMGating>(c, R, rows, injection, 1);
        check_blocks<Exec, float, trellis::Untied, trellis::LSTMGating>(c, rows, rows + 1, injection, 1);
      }
    }
  }
  // Level recomputation, the elementwise activations and the dilation longer than the
  // sequence (level 1's history is its padding alone).
  for (auto const& c : {all[2], all[3]})
    for (auto injection : {InjectionMode::separate, InjectionMode::folded}) {
      check_blocks<Exec, double, trellis::TiedAcrossDepth, trellis::LSTMGating>(c, 3, 4, injection, 2);
      check_blocks<Exec, double, trellis::TiedAcrossDepth, trellis::ElementwiseTanh>(c, 5, 4, injection, 1);
      check_blocks<Exec, float, trellis::Untied, trellis::ElementwiseRelu>(c, 2, 7, injection, 0);
    }
  {  // The pack-shaped kernels a device runs, in blocks when asked.
    DeviceShapedKernels const device;
    for (auto injection : {InjectionMode::separate, InjectionMode::folded})
      check_blocks<Exec, double, trellis::TiedAcrossDepth, trellis::LSTMGating>(all[2], 3, 5, injection, 2);
  }
  Exec space;
  trellis::TrellisNetwork<Exec, float> net(space, all[0].shape);
  CHECK(net.backward_block_rows() == 0);
  CHECK(net.forward_block_rows() == 0);
  CHECK_THROWS_WITH_AS(net.set_backward_block_rows(-1),
                       doctest::Contains("set_backward_block_rows: rows = -1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(net.set_forward_block_rows(-2),
                       doctest::Contains("set_forward_block_rows: rows = -2"), std::invalid_argument);
  // Devices take whole levels unless asked; a wide level on the host takes whole levels
  // too when its W (forward) or dW (backward) would be read more often than it pays.
  bool const host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible;
  CHECK((net.backward_block_rows_for(1L << 30) < (1L << 30)) == host);
  CHECK((net.forward_block_rows_for(1L << 30) < (1L << 30)) == host);
  CHECK(net.backward_block_rows_for(12) == 12);
  CHECK(net.forward_block_rows_for(12) == 12);
  net.set_backward_block_rows(5);
  net.set_forward_block_rows(4);
  CHECK(net.backward_block_rows_for(12) == 5);
  CHECK(net.backward_block_rows_for(3) == 3);
  CHECK(net.forward_block_rows_for(12) == 4);
  CHECK(net.forward_block_rows_for(3) == 3);
}

TEST_CASE_TEMPLATE_APPLY(network_vs_naive, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(level_blocks, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(overlapped_gemms, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(folded_injection, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(elementwise, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(network_bf16, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(untied_equal, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(segments, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(recomputation, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(recomputation_memory, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(pack_kernels, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(no_allocation_in_level_loop, trellis::test::Backends);
