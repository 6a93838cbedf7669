// The paper's Theorem 1, shown: random RNNs and LSTMs of several depths M, history
// lengths L and sequence lengths T, each run as a sparse TrellisNet of L + M - 1
// levels and step by step. Prints max |trellis - truncated RNN|, max |trellis - RNN|
// for T <= L (the untruncated network), and the time of the sparse and dense modes.
//
//   trellis_rnn_equivalence [--quick]
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <string>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include <trellis/testing/naive_recurrent.hpp>
#include <trellis/trellis.hpp>

namespace {

using Exec = Kokkos::DefaultExecutionSpace;

template <class Structure, class Activation, class Scalar>
using Net = trellis::TrellisNetwork<Exec, Scalar, trellis::TiedAcrossDepth, Structure, Activation>;

/// Forward from a zero state; returns (output, seconds of the median of `reps` runs).
template <class Network>
std::pair<std::vector<double>, double> run(Network const& net, std::vector<double> const& xv, long T, long N,
                                           int reps) {
  Exec space;
  auto const& s = net.shape();
  using Scalar = typename Network::scalar_type;
  typename Network::sequence_view x("x", T, N, s.ninp), out("out", T, N, s.nout);
  typename Network::state_view h0("h0", N, s.q()), c0("c0", N, s.q()), h("h", N, s.q()), c("c", N, s.q());
  auto hx = Kokkos::create_mirror_view(x);
  for (std::size_t i = 0; i < xv.size(); ++i) hx.data()[i] = Scalar(xv[i]);
  Kokkos::deep_copy(x, hx);
  typename Network::cache_type cache;
  std::vector<double> times;
  for (int r = 0; r < reps + 1; ++r) {  // the first run allocates the cache
    space.fence();
    auto t0 = std::chrono::steady_clock::now();
    net.forward(space, x, h0, c0, out, h, c, {}, cache);
    space.fence();
    if (r > 0) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  auto ho = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), out);
  return {std::vector<double>(ho.data(), ho.data() + ho.span()), times[times.size() / 2]};
}

double max_abs_diff(std::vector<double> const& a, std::vector<double> const& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

template <class Activation>
void row(trellis::RecurrentCell cell, int M, int L, long T, long N, long in, long d, bool check = true) {
  auto w = trellis::RecurrentWeights::random(cell, int(in), int(d), M, 1000 * M + L);
  auto shape = trellis::trellis_shape_for(w, L);
  Exec space;
  Net<trellis::RnnSparse, Activation, double> sparse(space, shape);
  trellis::load_recurrent(sparse.parameters(), w);
  std::mt19937_64 rng(T);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> x(T * N * in);
  for (auto& e : x) e = u(rng);
  std::string err_trunc = "-", err_full = "-";
  if (check) {
    auto const y = run(sparse, x, T, N, 1).first;
    char buf[32];
    auto const ref = trellis::naive::run_truncated(w, x, T, N, L);
    std::snprintf(buf, sizeof buf, "%.1e", max_abs_diff(y, ref));
    err_trunc = buf;
  }
  if (check && T <= L) {
    auto const y = run(sparse, x, T, N, 1).first;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1e", max_abs_diff(y, trellis::naive::run_recurrent(w, x, T, N)));
    err_full = buf;
  }
  // Timing in float: the sparse products against the same weights densified.
  Net<trellis::RnnSparse, Activation, float> sparse32(space, shape);
  trellis::load_recurrent(sparse32.parameters(), w);
  Net<trellis::Dense, Activation, float> dense32(space, shape);
  auto dw = trellis::densify(sparse32.parameters(), shape, Activation::groups);
  Kokkos::deep_copy(dense32.parameters().weight1, dw.weight1);
  Kokkos::deep_copy(dense32.parameters().weight2, dw.weight2);
  Kokkos::deep_copy(dense32.parameters().bias2, dw.bias2);
  auto [ys, ts] = run(sparse32, x, T, N, 3);
  auto [yd, td] = run(dense32, x, T, N, 3);
  std::printf("%-9s %2d %3d %4ld %4ld | %9s %9s | %9.1e | %9.3f %9.3f %6.2fx\n", trellis::cell_name(cell), M, L, T,
              d, err_trunc.c_str(), err_full.c_str(), max_abs_diff(ys, yd), ts * 1e3, td * 1e3, td / ts);
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::ScopeGuard guard(argc, argv);
  bool quick = false;
  for (int i = 1; i < argc; ++i) quick = quick || std::strcmp(argv[i], "--quick") == 0;
  std::printf("TrellisNet = truncated RNN (Theorem 1), double precision, on %s\n", Exec::name());
  std::printf("%-9s %2s %3s %4s %4s | %9s %9s | %9s | %9s %9s %7s\n", "cell", "M", "L", "T", "d", "truncated",
              "full", "sp-dense", "sparse ms", "dense ms", "speedup");
  long const N = 4, in = 8;
  for (int M : {1, 2, 3})
    for (int L : {1, 4, 16}) {
      long const T = quick ? 32 : 64, d = 16;
      row<trellis::LSTMGating>(trellis::RecurrentCell::lstm, M, L, T, N, in, d);
      if (L == 16) row<trellis::LSTMGating>(trellis::RecurrentCell::lstm, M, L, L, N, in, d);
      row<trellis::ElementwiseTanh>(trellis::RecurrentCell::rnn_tanh, M, L, T, N, in, d);
      row<trellis::ElementwiseRelu>(trellis::RecurrentCell::rnn_relu, M, L, T, N, in, d);
    }
  if (!quick) {
    std::printf("-- larger (timing only; batch 32, input 128): what the zero blocks would cost\n");
    row<trellis::LSTMGating>(trellis::RecurrentCell::lstm, 4, 32, 128, 32, 128, 128, /*check=*/false);
  }
  std::printf("truncated: max |trellis - RNN on x_{t-L+1..t}|; full: max |trellis - RNN| when T <= L;\n"
              "sp-dense: max |sparse - dense| in float\n");
  return 0;
}
