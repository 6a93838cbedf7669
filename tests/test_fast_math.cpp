// The single-precision gate functions against the double-precision library ones, on
// the host and inside a kernel on every backend.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include <trellis/core/detail/fast_math.hpp>
#include <trellis/runtime.hpp>

#include "helpers.hpp"

namespace {

std::vector<float> sample_points() {
  std::vector<float> x;
  for (int i = -20000; i <= 20000; ++i) x.push_back(float(i) * 1e-3f);  // [-20, 20]
  for (float v : {1e-30f, 1e-8f, 1e-4f, 0.1249f, 0.125f, 0.1251f, 50.f, 87.f, 88.f, 100.f, 3e4f, 1e10f})
    for (float s : {1.f, -1.f}) x.push_back(s * v);
  x.push_back(0.f);
  return x;
}

/// Relative error, floored at float's smallest normal for the tiny results.
double rel(double got, double want) {
  return std::abs(got - want) / std::max(std::abs(want), double(std::numeric_limits<float>::min()));
}

}  // namespace

TEST_CASE("float gate functions are within a few ulp of the library's") {
  double worst_exp = 0, worst_sig = 0, worst_tanh = 0;
  int nan_results = 0;  // std::max would pass over a NaN error
  for (float x : sample_points()) {
    nan_results += std::isnan(trellis::detail::gate_tanh(x)) + std::isnan(trellis::detail::gate_sigmoid(x));
    if (std::abs(x) <= 87.f) worst_exp = std::max(worst_exp, rel(trellis::detail::exp_float(x), std::exp(double(x))));
    // Below x = -87 the sigmoid is subnormal (under 1e-38): only its absolute error counts.
    if (x >= -87.f) worst_sig = std::max(worst_sig, rel(trellis::detail::gate_sigmoid(x), 1 / (1 + std::exp(-double(x)))));
    worst_tanh = std::max(worst_tanh, rel(trellis::detail::gate_tanh(x), std::tanh(double(x))));
  }
  double const ulp = std::numeric_limits<float>::epsilon();
  INFO("worst relative errors: exp " << worst_exp / ulp << " ulp, sigmoid " << worst_sig / ulp
                                     << " ulp, tanh " << worst_tanh / ulp << " ulp");
  CHECK(worst_exp <= 4 * ulp);
  CHECK(worst_sig <= 4 * ulp);
  CHECK(worst_tanh <= 4 * ulp);
  CHECK(trellis::detail::exp_float(-200.f) == 0.f);
  CHECK(std::isinf(trellis::detail::exp_float(1e10f)) == false);
  CHECK(trellis::detail::gate_sigmoid(-1e10f) < 1e-37f);
  CHECK(trellis::detail::gate_sigmoid(1e10f) == 1.f);
  CHECK(nan_results == 0);
  // Where the Taylor series overflows (|x| above about 2.9e4) tanh is still +-1.
  float const inf = std::numeric_limits<float>::infinity();
  for (float x : {3e4f, 1e10f, std::numeric_limits<float>::max(), inf}) {
    CHECK(trellis::detail::gate_tanh(x) == 1.f);
    CHECK(trellis::detail::gate_tanh(-x) == -1.f);
  }
  CHECK(trellis::detail::exp_float(inf) == trellis::detail::exp_float(88.f));
  CHECK(trellis::detail::exp_float(-inf) == 0.f);
  CHECK(std::isnan(trellis::detail::gate_tanh(std::numeric_limits<float>::quiet_NaN())));
  CHECK(std::isnan(trellis::detail::gate_sigmoid(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE_TEMPLATE_DEFINE("the gate functions agree on every backend", Exec, fast_math_backends) {
  auto const xs = sample_points();
  Kokkos::View<float*, Kokkos::LayoutRight, typename Exec::memory_space> x("x", xs.size()), s("s", xs.size()),
      t("t", xs.size());
  trellis::test::from_host(x, std::vector<double>(xs.begin(), xs.end()));
  Kokkos::parallel_for(
      "test::gates", Kokkos::RangePolicy<Exec>(Exec(), 0, xs.size()), KOKKOS_LAMBDA(long i) {
        s(i) = trellis::detail::gate_sigmoid(x(i));
        t(i) = trellis::detail::gate_tanh(x(i));
      });
  auto hs = trellis::test::to_host(s), ht = trellis::test::to_host(t);
  // Kernels may contract or vectorise differently from the host call: within 2 ulp.
  double worst = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    worst = std::max(worst, rel(hs[i], trellis::detail::gate_sigmoid(xs[i])));
    worst = std::max(worst, rel(ht[i], trellis::detail::gate_tanh(xs[i])));
  }
  CHECK(worst <= 2 * double(std::numeric_limits<float>::epsilon()));
}

TEST_CASE_TEMPLATE_APPLY(fast_math_backends, trellis::test::Backends);

// flush_subnormals(space) reaches every host thread of the space: a product whose
// result is subnormal gives zero on each of them, and again the subnormal when kept.
TEST_CASE_TEMPLATE_DEFINE("flush_subnormals sets every host thread of the space, and undoes it", Exec, subnormals) {
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible) {
    Exec space;
    long const threads = long(space.concurrency());
    auto subnormal_results = [&] {
      long count = 0;
      Kokkos::parallel_reduce(
          "test::subnormal_products", Kokkos::RangePolicy<Exec, Kokkos::Schedule<Kokkos::Static>>(space, 0, threads),
          [](long, long& n) {
            volatile float a = 1e-30f, b = 1e-10f;  // 1e-40: subnormal in float
            float const c = a * b;
            n += c != 0.0f ? 1 : 0;
          },
          count);
      return count;
    };
    bool const was = trellis::subnormals_flushed();
    if (!trellis::flush_subnormals(space, true)) return;  // not x86: nothing to flush
    CHECK(trellis::subnormals_flushed());
    CHECK(subnormal_results() == 0);
    trellis::flush_subnormals(space, false);
    CHECK(!trellis::subnormals_flushed());
    CHECK(subnormal_results() == threads);
    trellis::flush_subnormals(space, was);
  }
}

TEST_CASE_TEMPLATE_APPLY(subnormals, trellis::test::Backends);
