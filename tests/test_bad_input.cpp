// Bad input is an exception that names the call and the shapes, never a crash.
#include <doctest/doctest.h>

#include <trellis/trellis.hpp>

#include "helpers.hpp"

namespace {

trellis::TrellisShape small_shape() {
  trellis::TrellisShape s;
  s.ninp = 3;
  s.nhid = 4;
  s.nout = 2;
  s.nlevels = 2;
  s.aux_frequency = 1;
  return s;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("bad configurations and shapes are clear errors", Exec, bad_input) {
  Exec space;
  using Net = trellis::TrellisNetwork<Exec, double>;
  SUBCASE("a dilation cycle with a zero") {
    auto s = small_shape();
    s.dilation = {1, 0};
    CHECK_THROWS_WITH_AS(Net(space, s), doctest::Contains("dilation cycle holds 0"),
                         trellis::invalid_argument);
  }
  SUBCASE("an empty dilation cycle and nonsense widths") {
    auto s = small_shape();
    s.dilation = {};
    CHECK_THROWS_AS(Net(space, s), trellis::invalid_argument);
    s = small_shape();
    s.nout = 0;
    CHECK_THROWS_WITH_AS(Net(space, s), doctest::Contains("trellis::TrellisNetwork: need"),
                         trellis::invalid_argument);
  }
  Net net(space, small_shape());
  long const L = 4, N = 2, q = 6;
  typename Net::sequence_view x("x", L, N, 3), out("out", L, N, 2);
  typename Net::state_view h("h", N, q), c("c", N, q), hn("hn", N, q), cn("cn", N, q);
  typename Net::aux_view aux("aux", 2, L, N, 2);
  typename Net::cache_type cache;
  SUBCASE("mismatched input width") {
    typename Net::sequence_view bad("bad", L, N, 4);
    CHECK_THROWS_WITH_AS(net.forward(space, bad, h, c, out, hn, cn, aux, cache),
                         doctest::Contains("trellis::TrellisNetwork::forward: x is (4, 2, 4), expected (4, 2, 3)"),
                         trellis::invalid_argument);
  }
  SUBCASE("zero length") {
    typename Net::sequence_view empty("empty", 0, N, 3);
    CHECK_THROWS_WITH_AS(net.forward(space, empty, h, c, out, hn, cn, aux, cache),
                         doctest::Contains("length and batch must be >= 1"), trellis::invalid_argument);
  }
  SUBCASE("state of the wrong batch") {
    typename Net::state_view bad("bad", N + 1, q);
    CHECK_THROWS_WITH_AS(net.forward(space, x, bad, c, out, hn, cn, aux, cache),
                         doctest::Contains("h0 is (3, 6), expected (2, 6)"), trellis::invalid_argument);
  }
  SUBCASE("aux outputs of the wrong count") {
    typename Net::aux_view bad("bad", 1, L, N, 2);
    CHECK_THROWS_WITH_AS(net.forward(space, x, h, c, out, hn, cn, bad, cache),
                         doctest::Contains("aux is (1, 4, 2, 2), expected (2, 4, 2, 2)"),
                         trellis::invalid_argument);
  }
  SUBCASE("a hidden mask of the wrong shape") {
    typename Net::masks_type masks;
    masks.hidden = typename Net::masks_type::rows("m", N, q + 1);
    CHECK_THROWS_WITH_AS(net.forward(space, x, h, c, out, hn, cn, aux, cache, masks),
                         doctest::Contains("masks.hidden is (2, 7)"), trellis::invalid_argument);
  }
  SUBCASE("backward before forward, and with a wrong gradient") {
    typename Net::cache_type fresh;
    CHECK_THROWS_WITH_AS(net.backward(space, fresh, out, {}, {}, {}, x, h, c),
                         doctest::Contains("backward: the cache holds no forward pass"),
                         trellis::invalid_argument);
    net.forward(space, x, h, c, out, hn, cn, aux, cache);
    typename Net::sequence_view bad("bad", L + 1, N, 2);
    CHECK_THROWS_WITH_AS(net.backward(space, cache, bad, {}, {}, {}, x, h, c),
                         doctest::Contains("d_out is (5, 2, 2), expected (4, 2, 2)"),
                         trellis::invalid_argument);
  }
}

// Type misuse is a compile-time error; these are the traits behind those static_asserts.
static_assert(trellis::is_weight_tying_v<trellis::Untied>);
static_assert(!trellis::is_weight_tying_v<trellis::Dense>);
static_assert(!trellis::is_activation_v<int>);

TEST_CASE_TEMPLATE_APPLY(bad_input, trellis::test::Backends);

// Configurations that would allocate more than the machine has fail before allocating,
// with the size they asked for (and a sum of sizes that wraps 64 bits saturates).
TEST_CASE_TEMPLATE_DEFINE("sizes past the machine's memory fail before allocating", Exec, memory_limits) {
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible) {
    Exec space;
    trellis::TrellisShape s;
    s.ninp = 8;
    s.nhid = 10'000'000;
    s.nout = 8;
    s.nlevels = 2;
    long allocations = 0;
    {
      trellis::test::KokkosEventCounter counter;
      CHECK_THROWS_WITH_AS((trellis::TrellisNetwork<Exec, float>(space, s)),
                           doctest::Contains("trellis::TrellisNetwork: its parameters and their gradients (ninp=8 "
                                             "nhid=10000000"),
                           std::invalid_argument);
      CHECK_THROWS_WITH_AS((trellis::TrellisNetwork<Exec, float>(space, s)),
                           doctest::Contains("need 5.7 PiB, more than the"), std::invalid_argument);
      allocations = trellis::test::KokkosEventCounter::allocations;
    }
    CHECK(allocations == 0);
    // Untied, more levels: the same check, larger.
    s.nlevels = 100000;
    CHECK_THROWS_WITH_AS((trellis::TrellisNetwork<Exec, float, trellis::Untied>(space, s)),
                         doctest::Contains("more than the"), std::invalid_argument);

    trellis::LanguageModelConfig c;
    c.core.ninp = c.core.nout = 16;
    c.core.nhid = 16;
    c.core.nlevels = 2;
    c.ntoken = 1L << 40;
    CHECK_THROWS_WITH_AS((trellis::LanguageModel<Exec, float>(space, c)),
                         doctest::Contains("trellis::LanguageModel: its embedding of 1099511627776 x 16 and its "
                                           "gradient need 136.0 TiB, more than the"),
                         std::invalid_argument);
    CHECK(trellis::detail::format_bytes(~std::uint64_t(0)) == "more than 16 EiB");
    CHECK(trellis::detail::saturating_product({1ULL << 40, 1ULL << 40}) == ~std::uint64_t(0));
  }
}

TEST_CASE_TEMPLATE_APPLY(memory_limits, trellis::test::Backends);

// Found while fuzzing the flags: the JSON library casts 1e20 or 2.5 to int. A file's
// metadata takes the same path.
TEST_CASE("a dilation list in a file's metadata holds integers that fit an int") {
  std::map<std::string, std::string> meta{{"ninp", "2"},   {"nhid", "3"},          {"nout", "2"},
                                          {"nlevels", "2"}, {"aux_frequency", "0"}, {"wnorm", "true"}};
  for (char const* bad : {"[1e20]", "[2.5]", "[4294967297]", "[\"1\"]", "{}", "[1,"}) {
    meta["dilation"] = bad;
    CHECK_THROWS_WITH_AS(trellis::read_shape_metadata(meta, "m.safetensors"),
                         doctest::Contains("metadata 'dilation' is"), trellis::file_error);
  }
  meta["dilation"] = "[1, 2, 4]";
  CHECK(trellis::read_shape_metadata(meta, "m.safetensors").dilation == std::vector<int>{1, 2, 4});
}
