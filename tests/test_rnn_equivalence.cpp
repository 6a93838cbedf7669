// The paper's Theorem 1 as a test: a TrellisNet with the RnnSparse structure equals an
// M-layer RNN / LSTM truncated to L steps at every t, equals the untruncated one for
// T <= L, and equals its own densified weights run through the Dense structure.
#include <doctest/doctest.h>

#include <trellis/testing/naive_recurrent.hpp>
#include <trellis/trellis.hpp>

#include "helpers.hpp"

namespace {

using namespace trellis::test;
using trellis::RecurrentCell;

template <class Exec, class Scalar, class Structure, class Activation>
using RnnNet = trellis::TrellisNetwork<Exec, Scalar, trellis::TiedAcrossDepth, Structure, Activation>;

/// Runs a network on x (T, N, p) from a zero state; returns out (T, N, nout).
template <class Network>
std::vector<double> run_forward(Network const& net, std::vector<double> const& x, long T, long N) {
  Pass p;
  p.L = T;
  p.N = N;
  p.x = x;
  p.h0.assign(N * net.shape().q(), 0);
  p.c0 = p.h0;
  run_network(const_cast<Network&>(net), p, {}, /*backward=*/false);
  return p.out;
}

/// max|a - b| / max(1, max|b|): absolute for bounded cells, relative for relu.
double difference(std::vector<double> const& a, std::vector<double> const& b) {
  double diff = 0, scale = 1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

template <class Exec, class Scalar, class Activation>
void check_equivalence(RecurrentCell cell, int M, int L) {
  CAPTURE(std::string(trellis::cell_name(cell)));
  CAPTURE(M);
  CAPTURE(L);
  CAPTURE(sizeof(Scalar));
  Exec space;
  long const N = 2, in = 3, d = 4;
  auto w = trellis::RecurrentWeights::random(cell, in, d, M, 100 * M + L);
  auto shape = trellis::trellis_shape_for(w, L);
  RnnNet<Exec, Scalar, trellis::RnnSparse, Activation> sparse(space, shape);
  trellis::load_recurrent(sparse.parameters(), w);
  RnnNet<Exec, Scalar, trellis::Dense, Activation> dense(space, shape);
  auto densified = trellis::densify(sparse.parameters(), shape, Activation::groups);
  Kokkos::deep_copy(dense.parameters().weight1, densified.weight1);
  Kokkos::deep_copy(dense.parameters().weight2, densified.weight2);
  Kokkos::deep_copy(dense.parameters().bias2, densified.bias2);
  double const tol = std::is_same_v<Scalar, double> ? 1e-12 : 1e-5;
  std::mt19937_64 rng(L);
  for (long T : {long(L), 64L}) {
    CAPTURE(T);
    auto x = random_vector(T * N * in, rng);
    auto y = run_forward(sparse, x, T, N);
    double const err_truncated = difference(y, trellis::naive::run_truncated(w, x, T, N, L));
    INFO("max |trellis - truncated RNN| = " << err_truncated);
    CHECK(err_truncated <= tol);
    if (T <= L) {
      double const err_full = difference(y, trellis::naive::run_recurrent(w, x, T, N));
      INFO("max |trellis - RNN| = " << err_full);
      CHECK(err_full <= tol);
    }
    double const err_dense = difference(y, run_forward(dense, x, T, N));
    INFO("max |sparse - dense| = " << err_dense);
    CHECK(err_dense <= tol);
  }
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("a sparse TrellisNet is a truncated RNN", Exec, rnn_equivalence) {
  for (int M : {1, 2, 3})
    for (int L : {1, 4, 16}) {
      check_equivalence<Exec, double, trellis::LSTMGating>(RecurrentCell::lstm, M, L);
      check_equivalence<Exec, double, trellis::ElementwiseTanh>(RecurrentCell::rnn_tanh, M, L);
      check_equivalence<Exec, double, trellis::ElementwiseRelu>(RecurrentCell::rnn_relu, M, L);
      check_equivalence<Exec, float, trellis::LSTMGating>(RecurrentCell::lstm, M, L);
      check_equivalence<Exec, float, trellis::ElementwiseTanh>(RecurrentCell::rnn_tanh, M, L);
      check_equivalence<Exec, float, trellis::ElementwiseRelu>(RecurrentCell::rnn_relu, M, L);
    }
}

TEST_CASE_TEMPLATE_DEFINE("the equivalence test fails when it should", Exec, negative_control) {
  Exec space;
  long const N = 2, in = 3, d = 4, T = 20;
  int const M = 3, L = 4;
  auto w = trellis::RecurrentWeights::random(RecurrentCell::lstm, in, d, M, 7);
  auto shape = trellis::trellis_shape_for(w, L);
  std::mt19937_64 rng(3);
  auto x = random_vector(T * N * in, rng);
  auto const want = trellis::naive::run_truncated(w, x, T, N, L);
  using Sparse = RnnNet<Exec, double, trellis::RnnSparse, trellis::LSTMGating>;
  using DenseNet = RnnNet<Exec, double, trellis::Dense, trellis::LSTMGating>;

  Sparse exact(space, shape);
  trellis::load_recurrent(exact.parameters(), w);
  CHECK(difference(run_forward(exact, x, T, N), want) <= 1e-12);

  SUBCASE("a nonzero bias") {
    Sparse biased(space, shape);
    trellis::load_recurrent(biased.parameters(), w);
    Kokkos::deep_copy(biased.parameters().bias2, 0.1);
    double const err = difference(run_forward(biased, x, T, N), want);
    INFO("with bias 0.1: " << err);
    CHECK(err > 1e-3);
  }
  SUBCASE("a misplaced block") {
    // Move W_hx^(2) of the input gate from tap 1 (time t) to tap 0 (time t - 1).
    auto dense_params = trellis::densify(exact.parameters(), shape, 4);
    auto w2 = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), dense_params.weight2);
    long const q = shape.q();
    for (long a = 0; a < d; ++a)
      for (long b = 0; b < d; ++b) {
        w2(0, d + a, b) = w2(0, d + a, q + b);
        w2(0, d + a, q + b) = 0;
      }
    DenseNet misplaced(space, shape);
    Kokkos::deep_copy(misplaced.parameters().weight1, dense_params.weight1);
    Kokkos::deep_copy(misplaced.parameters().weight2, w2);
    double const err = difference(run_forward(misplaced, x, T, N), want);
    INFO("with a misplaced block: " << err);
    CHECK(err > 1e-3);
  }
}

TEST_CASE_TEMPLATE_DEFINE("the sparse structure's gradients agree with finite differences", Exec, sparse_gradcheck) {
  Exec space;
  std::mt19937_64 rng(21);
  auto w = trellis::RecurrentWeights::random(RecurrentCell::lstm, 2, 3, 2, 5);
  auto shape = trellis::trellis_shape_for(w, 3);
  using Net = RnnNet<Exec, double, trellis::RnnSparse, trellis::LSTMGating>;
  Net net(space, shape);
  trellis::load_recurrent(net.parameters(), w);
  from_host(net.parameters().bias2, random_vector(net.parameters().bias2.span(), rng, -0.3, 0.3));
  Pass base = random_pass(shape, 5, 2, rng);
  Pass analytic = base;
  run_network(net, analytic);
  net.parameters().for_each([&](char const* name, auto const& view) {
    auto values = to_host(view);
    std::vector<double> fd(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      auto plus = values, minus = values;
      plus[i] += 1e-6;
      minus[i] -= 1e-6;
      Pass a = base, b = base;
      from_host(view, plus);
      run_network(net, a, {}, false);
      from_host(view, minus);
      run_network(net, b, {}, false);
      fd[i] = (pass_loss(a) - pass_loss(b)) / 2e-6;
    }
    from_host(view, values);
    std::vector<double> grad;
    net.gradients().for_each([&](char const* gname, auto const& g) {
      if (std::string(gname) == name) grad = to_host(g);
    });
    // Only the stored blocks are parameters; layer 1's upward block is unused (zero gradient).
    check_close(name, grad, fd, 1e-6);
  });
  auto loss_at = [&](Pass p) {
    run_network(net, p, {}, false);
    return pass_loss(p);
  };
  std::vector<double> fdx(base.x.size());
  for (std::size_t i = 0; i < fdx.size(); ++i) {
    Pass a = base, b = base;
    a.x[i] += 1e-6;
    b.x[i] -= 1e-6;
    fdx[i] = (loss_at(a) - loss_at(b)) / 2e-6;
  }
  check_close("x", analytic.dx, fdx, 1e-6);
}

TEST_CASE_TEMPLATE_DEFINE("the sparse structure refuses what it cannot do", Exec, sparse_bad_input) {
  Exec space;
  auto w = trellis::RecurrentWeights::random(RecurrentCell::lstm, 2, 3, 2, 5);
  auto shape = trellis::trellis_shape_for(w, 3);
  using Net = RnnNet<Exec, double, trellis::RnnSparse, trellis::LSTMGating>;
  auto bad = shape;
  bad.weight_norm = true;
  CHECK_THROWS_WITH_AS(Net(space, bad), doctest::Contains("no weight normalisation"), trellis::invalid_argument);
  bad = shape;
  bad.nout = 2;
  bad.nhid = 4;
  CHECK_THROWS_WITH_AS(Net(space, bad), doctest::Contains("q = nhid + nout = layers * d"), trellis::invalid_argument);
  CHECK_THROWS_WITH_AS(trellis::trellis_shape_for(w, 0), doctest::Contains("history must be >= 1"),
                       trellis::invalid_argument);
}

TEST_CASE_TEMPLATE_APPLY(rnn_equivalence, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(negative_control, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(sparse_gradcheck, trellis::test::Backends);
TEST_CASE_TEMPLATE_APPLY(sparse_bad_input, trellis::test::Backends);
