// Exact streaming inference: a TrellisStream stepped T times gives one forward's
// outputs over the same T steps from the same (h0, c0), on every backend; a prefill
// then steps gives the forward over prompt and continuation; a reset stream is a fresh
// one; and a perturbed state fails the same comparison (the tests can fail).
#include <doctest/doctest.h>

#include <trellis/core/stream.hpp>
#include <trellis/trellis.hpp>

#include "helpers.hpp"

namespace {

using namespace trellis::test;

trellis::TrellisShape stream_shape(std::vector<int> dilation, bool wnorm, int nlevels = 5) {
  trellis::TrellisShape s;
  s.ninp = 3;
  s.nhid = 5;
  s.nout = 2;
  s.nlevels = nlevels;
  s.dilation = std::move(dilation);
  s.aux_frequency = 2;  // the forward's aux outputs must not disturb the stream
  s.weight_norm = wnorm;
  return s;
}

/// The forward's out (T, N, nout) on x (T, N, p) from (h0, c0), as doubles.
template <class Net>
std::vector<double> forward_out(Net const& net, std::vector<double> const& x, std::vector<double> const& h0,
                                std::vector<double> const& c0, long T, long N) {
  Pass p;
  p.L = T;
  p.N = N;
  p.x = x;
  p.h0 = h0;
  p.c0 = c0;
  Net copy = net;
  run_network(copy, p, {}, false);
  return p.out;
}

/// Steps `stream` through x (T, N, p); its outputs (T, N, nout).
template <class Stream>
std::vector<double> stream_out(Stream& stream, std::vector<double> const& x, long T) {
  using Exec = typename Stream::execution_space;
  using Scalar = typename Stream::scalar_type;
  using Mem = typename Stream::memory_space;
  Exec space;
  auto const& s = stream.shape();
  long const N = stream.streams();
  Kokkos::View<Scalar***, Kokkos::LayoutRight, Mem> xs("x", T, N, s.ninp), out("out", T, N, s.nout);
  from_host(xs, x);
  for (long t = 0; t < T; ++t)
    stream.step(space, Kokkos::subview(xs, t, Kokkos::ALL, Kokkos::ALL), Kokkos::subview(out, t, Kokkos::ALL, Kokkos::ALL));
  return to_host(out);
}

template <class Net>
typename Net::state_view device_state(std::vector<double> const& v, long N, long q) {
  typename Net::state_view m("state", N, q);
  from_host(m, v);
  return m;
}

/// Largest |a - b| / (1 + |b|).
double max_error(std::vector<double> const& a, std::vector<double> const& b) {
  REQUIRE(a.size() == b.size());
  double e = 0;
  for (std::size_t i = 0; i < a.size(); ++i) e = std::max(e, std::abs(a[i] - b[i]) / (1 + std::abs(b[i])));
  return e;
}

template <class Exec, class Tying, class Activation>
void check_stream_equals_forward(trellis::TrellisShape const& shape, trellis::InjectionMode injection, long N = 3,
                                 bool zero_state = false) {
  CAPTURE(shape.describe());
  CAPTURE(Tying::name);
  CAPTURE(Activation::name);
  CAPTURE(int(injection));
  CAPTURE(N);
  CAPTURE(zero_state);
  Exec space;
  std::mt19937_64 rng(7);
  trellis::TrellisNetwork<Exec, double, Tying, trellis::Dense, Activation> net(space, shape);
  net.set_injection_mode(injection);
  randomize_parameters(net, rng);
  long const q = shape.q();
  // Three times the longest window a model of this depth and dilation sees at once.
  long const T = 3 * shape.nlevels * shape.max_dilation() + 7;
  auto const x = random_vector(T * N * shape.ninp, rng);
  auto h0 = random_vector(N * q, rng, -0.5, 0.5), c0 = random_vector(N * q, rng, -0.5, 0.5);
  if (zero_state) h0.assign(h0.size(), 0.0), c0.assign(c0.size(), 0.0);
  auto const want = forward_out(net, x, h0, c0, T, N);
  using Net = decltype(net);
  trellis::TrellisStream<Net> stream(space, net, N, device_state<Net>(h0, N, q), device_state<Net>(c0, N, q));
  CHECK(max_error(stream_out(stream, x, T), want) <= 1e-12);
  CHECK(stream.position() == T);
  if (zero_state) return;

  // Negative control: the same comparison fails for a stream whose state is off by
  // 1e-9 in one channel of h0.
  auto h0_off = h0;
  h0_off[1] += 1e-9;
  trellis::TrellisStream<Net> off(space, net, N, device_state<Net>(h0_off, N, q), device_state<Net>(c0, N, q));
  CHECK(max_error(stream_out(off, x, T), want) > 1e-12);
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("a stream stepped T times equals one forward over the T steps", Exec, stream_forward) {
  using trellis::InjectionMode;
  for (auto dilation : {std::vector<int>{1, 2, 4}, std::vector<int>{2, 1, 3}, std::vector<int>{1}})
    for (bool wnorm : {true, false}) {
      auto const shape = stream_shape(dilation, wnorm);
      for (auto injection : {InjectionMode::separate, InjectionMode::folded}) {
        check_stream_equals_forward<Exec, trellis::TiedAcrossDepth, trellis::LSTMGating>(shape, injection);
        check_stream_equals_forward<Exec, trellis::Untied, trellis::LSTMGating>(shape, injection);
      }
      check_stream_equals_forward<Exec, trellis::TiedAcrossDepth, trellis::ElementwiseTanh>(shape,
                                                                                           InjectionMode::separate);
      check_stream_equals_forward<Exec, trellis::Untied, trellis::ElementwiseRelu>(shape, InjectionMode::separate);
    }
  // A dilation longer than the run, and a single level.
  check_stream_equals_forward<Exec, trellis::TiedAcrossDepth, trellis::LSTMGating>(
      stream_shape({1, 40}, true, 3), InjectionMode::separate);
  check_stream_equals_forward<Exec, trellis::TiedAcrossDepth, trellis::LSTMGating>(stream_shape({3}, true, 1),
                                                                                  InjectionMode::separate);
  // One stream from the zero state (a language model's case: the lowest level's tap-0
  // product is known to be zero and skipped), tied and untied.
  for (auto dilation : {std::vector<int>{1}, std::vector<int>{2, 1, 3}}) {
    check_stream_equals_forward<Exec, trellis::TiedAcrossDepth, trellis::LSTMGating>(stream_shape(dilation, true),
                                                                                    InjectionMode::separate, 1, true);
    check_stream_equals_forward<Exec, trellis::Untied, trellis::LSTMGating>(stream_shape(dilation, false),
                                                                           InjectionMode::folded, 1, true);
    check_stream_equals_forward<Exec, trellis::TiedAcrossDepth, trellis::LSTMGating>(stream_shape(dilation, true),
                                                                                    InjectionMode::separate, 1);
  }
  // Wide enough for whole tiles of outputs split over the threads, and an output block
  // of the top level that is not a tile.
  auto wide = stream_shape({1, 2, 4}, true, 3);
  wide.nhid = 70;
  wide.nout = 10;
  for (long N : {1L, 3L}) {
    check_stream_equals_forward<Exec, trellis::TiedAcrossDepth, trellis::LSTMGating>(wide, InjectionMode::separate, N);
    check_stream_equals_forward<Exec, trellis::Untied, trellis::LSTMGating>(wide, InjectionMode::separate, N, true);
  }
  // More streams than the host's few-row path takes: one GEMM of both taps per level.
  for (auto dilation : {std::vector<int>{1, 2, 4}, std::vector<int>{2, 1, 3}}) {
    check_stream_equals_forward<Exec, trellis::TiedAcrossDepth, trellis::LSTMGating>(stream_shape(dilation, true),
                                                                                    InjectionMode::separate, 6);
    check_stream_equals_forward<Exec, trellis::Untied, trellis::ElementwiseTanh>(stream_shape(dilation, false),
                                                                                InjectionMode::separate, 6);
  }
  // The kernels a GPU runs (channel by channel, no few-row path), on this backend.
  trellis::detail::kernel_shape_override() = trellis::detail::KernelShape::device;
  check_stream_equals_forward<Exec, trellis::TiedAcrossDepth, trellis::LSTMGating>(stream_shape({2, 1, 3}, true),
                                                                                  InjectionMode::separate, 2);
  check_stream_equals_forward<Exec, trellis::Untied, trellis::ElementwiseRelu>(stream_shape({1, 2, 4}, false),
                                                                              InjectionMode::separate, 5);
  trellis::detail::kernel_shape_override() = trellis::detail::KernelShape::automatic;
}

TEST_CASE_TEMPLATE_DEFINE("a prefill then steps equals one forward over prompt and continuation", Exec,
                          stream_prefill) {
  Exec space;
  std::mt19937_64 rng(11);
  for (long prompt : {1L, 2L, 17L}) {
    CAPTURE(prompt);
    auto const shape = stream_shape({2, 1, 3}, true);
    trellis::TrellisNetwork<Exec, double, trellis::Untied> net(space, shape);
    net.set_recompute_interval(2);  // the prefill keeps every level whatever the network does in training
    randomize_parameters(net, rng);
    using Net = decltype(net);
    long const N = 2, q = shape.q(), p = shape.ninp, more = 40, T = prompt + more;
    auto const x = random_vector(T * N * p, rng);
    auto const h0 = random_vector(N * q, rng, -0.5, 0.5), c0 = random_vector(N * q, rng, -0.5, 0.5);
    auto const want = forward_out(net, x, h0, c0, T, N);
    trellis::TrellisStream<Net> stream(space, net, N, device_state<Net>(h0, N, q), device_state<Net>(c0, N, q));
    typename Net::sequence_view xp("prompt", prompt, N, p), outp("prompt_out", prompt, N, shape.nout);
    from_host(xp, std::vector<double>(x.begin(), x.begin() + prompt * N * p));
    stream.prefill(space, net, xp, outp);
    CHECK(stream.position() == prompt);
    auto got = to_host(outp);
    auto const rest = stream_out(stream, std::vector<double>(x.begin() + prompt * N * p, x.end()), more);
    got.insert(got.end(), rest.begin(), rest.end());
    CHECK(max_error(got, want) <= 1e-12);
  }
}

TEST_CASE_TEMPLATE_DEFINE("a reset stream equals a fresh one and leaves the others alone", Exec, stream_reset) {
  Exec space;
  std::mt19937_64 rng(13);
  auto const shape = stream_shape({1, 2, 4}, false);
  trellis::TrellisNetwork<Exec, double> net(space, shape);
  randomize_parameters(net, rng);
  using Net = decltype(net);
  long const N = 3, q = shape.q(), p = shape.ninp, before = 23, after = 45, T = before + after;
  auto const x = random_vector(T * N * p, rng);
  auto const h0 = random_vector(N * q, rng, -0.5, 0.5), c0 = random_vector(N * q, rng, -0.5, 0.5);
  trellis::TrellisStream<Net> stream(space, net, N, device_state<Net>(h0, N, q), device_state<Net>(c0, N, q));
  auto const first = stream_out(stream, std::vector<double>(x.begin(), x.begin() + before * N * p), before);
  stream.reset(space, 1);
  auto const second = stream_out(stream, std::vector<double>(x.begin() + before * N * p, x.end()), after);

  // Streams 0 and 2 went on: one forward over all T steps.
  auto const whole = forward_out(net, x, h0, c0, T, N);
  // Stream 1 started again at `before`: a fresh stream over the last steps alone.
  auto const fresh = forward_out(net, std::vector<double>(x.begin() + before * N * p, x.end()), h0, c0, after, N);
  long const nout = shape.nout;
  auto row = [&](std::vector<double> const& v, long t, long n) {
    return std::vector<double>(v.begin() + (t * N + n) * nout, v.begin() + (t * N + n + 1) * nout);
  };
  double kept = 0, restarted = 0, not_restarted = 0;
  for (long t = 0; t < after; ++t) {
    for (long n : {0L, 2L}) kept = std::max(kept, max_error(row(second, t, n), row(whole, before + t, n)));
    restarted = std::max(restarted, max_error(row(second, t, 1), row(fresh, t, 1)));
    not_restarted = std::max(not_restarted, max_error(row(second, t, 1), row(whole, before + t, 1)));
  }
  CHECK(max_error(first, std::vector<double>(whole.begin(), whole.begin() + before * N * nout)) <= 1e-12);
  CHECK(kept <= 1e-12);
  CHECK(restarted <= 1e-12);
  CHECK(not_restarted > 1e-6);  // the reset did something

  // A full reset: every stream from the start again.
  stream.reset(space);
  CHECK(stream.position() == 0);
  CHECK(max_error(stream_out(stream, x, T), whole) <= 1e-12);
}

TEST_CASE_TEMPLATE_DEFINE("the sparse structure streams as a truncated RNN", Exec, stream_sparse) {
  Exec space;
  std::mt19937_64 rng(17);
  trellis::TrellisShape s;
  s.ninp = 3;
  s.nout = 2;  // d
  s.layers = 2;
  s.nhid = 2;  // q = M d = 4
  s.nlevels = 6;
  s.weight_norm = false;
  trellis::TrellisNetwork<Exec, double, trellis::TiedAcrossDepth, trellis::RnnSparse> net(space, s);
  net.parameters().for_each([&](char const*, auto const& v) { from_host(v, random_vector(v.span(), rng)); });
  using Net = decltype(net);
  long const N = 2, T = 40;
  auto const x = random_vector(T * N * s.ninp, rng);
  std::vector<double> const zeros(N * s.q(), 0.0);
  trellis::TrellisStream<Net> stream(space, net, N);
  CHECK(max_error(stream_out(stream, x, T), forward_out(net, x, zeros, zeros, T, N)) <= 1e-12);
}

TEST_CASE_TEMPLATE_DEFINE("a stream step allocates nothing and, on devices, waits for nothing", Exec, stream_events) {
  bool const host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible;
  Exec space;
  std::mt19937_64 rng(19);
  auto const shape = stream_shape({1, 2, 4}, true, 6);
  trellis::TrellisNetwork<Exec, float> net(space, shape);
  using Net = decltype(net);
  trellis::TrellisStream<Net> stream(space, net, 4);
  typename Net::state_view x("x", 4, shape.ninp), out("out", 4, shape.nout);
  from_host(x, random_vector(x.span(), rng));
  stream.step(space, x, out);
  space.fence();
  long allocations = 0, fences = 0;
  {
    KokkosEventCounter counter;
    for (int i = 0; i < 5; ++i) stream.step(space, x, out);
    allocations = KokkosEventCounter::allocations;
    fences = KokkosEventCounter::fences;
  }
  CHECK(allocations == 0);
  if (!host) CHECK(fences == 0);
}

TEST_CASE_TEMPLATE_DEFINE("a stream names the call and the shape it was given", Exec, stream_errors) {
  Exec space;
  auto const shape = stream_shape({1, 2}, true);
  trellis::TrellisNetwork<Exec, double> net(space, shape);
  using Net = decltype(net);
  CHECK_THROWS_WITH_AS(trellis::TrellisStream<Net>(space, net, 0), doctest::Contains("streams is 0"),
                       std::invalid_argument);
  if (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible)
    CHECK_THROWS_WITH_AS(trellis::TrellisStream<Net>(space, net, 1L << 50),
                         doctest::Contains("the state of 1125899906842624 streams need"), std::invalid_argument);
  typename Net::state_view wrong("h0", 2, shape.q() + 1);
  CHECK_THROWS_WITH_AS(trellis::TrellisStream<Net>(space, net, 2, wrong),
                       doctest::Contains("trellis::TrellisStream: h0 is (2, 8), expected (2, 7)"),
                       std::invalid_argument);
  trellis::TrellisStream<Net> stream(space, net, 2);
  typename Net::state_view x("x", 3, shape.ninp), out("out", 2, shape.nout);
  CHECK_THROWS_WITH_AS(stream.step(space, x, out), doctest::Contains("trellis::TrellisStream::step: x_t is (3, 3)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(stream.reset(space, 2), doctest::Contains("reset: stream 2 of 2"), std::invalid_argument);
  typename Net::sequence_view none("none", 0, 2, shape.ninp), none_out("none_out", 0, 2, shape.nout);
  CHECK_THROWS_WITH_AS(stream.prefill(space, net, none, none_out), doctest::Contains("at least one step"),
                       std::invalid_argument);
  trellis::TrellisNetwork<Exec, double> other(space, stream_shape({1, 2}, false));
  CHECK_THROWS_WITH_AS(stream.refresh_weights(space, other), doctest::Contains("the stream was made for"),
                       std::invalid_argument);
}

TEST_CASE_TEMPLATE_APPLY(stream_forward, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(stream_prefill, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(stream_reset, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(stream_sparse, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(stream_events, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(stream_errors, trellis::test::Backends);

namespace {

/// A language model's streamed log-probabilities (prefill of `prompt` tokens, then one
/// step per token) against evaluate's over the whole sequence from the zero state.
template <class Exec>
void check_language_model_stream(int n_experts) {
  CAPTURE(n_experts);
  Exec space;
  std::mt19937_64 rng(23);
  trellis::LanguageModelConfig config;
  config.core = stream_shape({1, 2, 4}, true, 4);
  config.core.ninp = 6;
  config.core.nout = n_experts > 0 ? 5 : 6;
  config.ntoken = 11;
  config.n_experts = n_experts;
  using Model = trellis::LanguageModel<Exec, double>;
  Model lm(space, config);
  randomize_parameters(lm.core(), rng);
  long const N = 2, T = 50, prompt = 9, V = config.ntoken;
  std::vector<double> ids(T * N);
  for (auto& t : ids) t = double(rng() % V);
  Kokkos::View<std::int32_t**, Kokkos::LayoutRight, typename Exec::memory_space> tokens("tokens", T, N);
  auto host = Kokkos::create_mirror_view(tokens);
  for (long i = 0; i < T * N; ++i) host.data()[i] = std::int32_t(ids[std::size_t(i)]);
  Kokkos::deep_copy(tokens, host);
  auto state = lm.make_state(N);
  typename Model::matrix all("all", T * N, V);
  lm.evaluate(space, tokens, tokens, 0, state, all);
  auto const want = to_host(all);

  trellis::LanguageModelStream<Model> stream(space, lm, N);
  std::vector<double> got;
  auto const lp = stream.prefill(space, Kokkos::subview(tokens, std::make_pair(0L, prompt), Kokkos::ALL));
  auto keep = [&](auto const& v) {
    auto const h = to_host(v);
    got.insert(got.end(), h.begin(), h.end());
  };
  keep(lp);
  for (long t = prompt; t < T; ++t) keep(stream.step(space, Kokkos::subview(tokens, t, Kokkos::ALL)));
  CHECK(stream.position() == T);
  // evaluate's rows t (prompt - 1 onwards) predict token t + 1.
  std::vector<double> const tail(want.begin() + (prompt - 1) * N * V, want.end());
  CHECK(max_error(got, tail) <= 1e-12);
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("a language model's stream gives evaluate's log-probabilities", Exec, lm_stream) {
  check_language_model_stream<Exec>(0);
  check_language_model_stream<Exec>(3);
}

TEST_CASE("the token sampler: seeded, greedy at temperature 0, top-k and top-p keep the likeliest") {
  std::vector<double> lp{std::log(0.05), std::log(0.4), std::log(0.1), std::log(0.3), std::log(0.15)};
  long const V = long(lp.size());
  auto draws = [&](trellis::SamplingOptions o, std::uint64_t seed, int n) {
    trellis::TokenSampler s(o, seed);
    std::vector<int> out;
    for (int i = 0; i < n; ++i) out.push_back(s(lp.data(), V));
    return out;
  };
  trellis::SamplingOptions plain;
  CHECK(draws(plain, 1, 200) == draws(plain, 1, 200));
  CHECK(draws(plain, 1, 200) != draws(plain, 2, 200));
  // Frequencies follow the probabilities.
  auto const many = draws(plain, 3, 20000);
  CHECK(std::count(many.begin(), many.end(), 1) == doctest::Approx(8000).epsilon(0.05));
  CHECK(std::count(many.begin(), many.end(), 0) == doctest::Approx(1000).epsilon(0.15));
  auto only = [](std::vector<int> const& v, std::vector<int> const& allowed) {
    return std::all_of(v.begin(), v.end(),
                       [&](int t) { return std::find(allowed.begin(), allowed.end(), t) != allowed.end(); });
  };
  trellis::SamplingOptions greedy;
  greedy.temperature = 0;
  CHECK(only(draws(greedy, 4, 50), {1}));
  trellis::SamplingOptions k2;
  k2.top_k = 2;
  auto const top2 = draws(k2, 5, 2000);
  CHECK(only(top2, {1, 3}));
  CHECK(std::count(top2.begin(), top2.end(), 3) == doctest::Approx(2000 * 0.3 / 0.7).epsilon(0.1));
  trellis::SamplingOptions nucleus;
  nucleus.top_p = 0.8;  // 0.4 + 0.3 + 0.15 reaches it
  CHECK(only(draws(nucleus, 6, 2000), {1, 3, 4}));
  nucleus.top_p = 0.1;
  CHECK(only(draws(nucleus, 7, 100), {1}));
  // A low temperature sharpens: the likeliest token nearly always.
  trellis::SamplingOptions cold;
  cold.temperature = 0.05;
  auto const c = draws(cold, 8, 1000);
  CHECK(std::count(c.begin(), c.end(), 1) > 990);

  auto bad = [](double t, long k, double p) {
    trellis::SamplingOptions o;
    o.temperature = t;
    o.top_k = k;
    o.top_p = p;
    return o;
  };
  CHECK_THROWS_WITH_AS(trellis::TokenSampler(bad(-1, 0, 1), 1), doctest::Contains("temperature is -1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(trellis::TokenSampler(bad(1, -2, 1), 1), doctest::Contains("top-k is -2"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(trellis::TokenSampler(bad(1, 0, 1.5), 1), doctest::Contains("top-p is 1.5"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(trellis::TokenSampler(bad(1, 0, 0), 1), doctest::Contains("top-p is 0"), std::invalid_argument);
}

TEST_CASE_TEMPLATE_APPLY(lm_stream, trellis::test::Backends);
