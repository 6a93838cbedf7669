// The RnnSparse structure against the same weights densified (Theorem 1's TrellisNet):
// M = 4 layers, d = 128, history L = 32 (35 levels), batch 32, T = 128, LSTM cell.
// Reports both times, the measured speed-up, and the ideal one from the block density.
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

#include <trellis/trellis.hpp>

namespace {

using Exec = Kokkos::DefaultExecutionSpace;

template <class Network>
double median_step(Network& net, long T, long N, bool train, int reps) {
  Exec space;
  auto const& s = net.shape();
  typename Network::sequence_view x("x", T, N, s.ninp), out("out", T, N, s.nout), d_out("d_out", T, N, s.nout);
  typename Network::state_view h0("h0", N, s.q()), c0("c0", N, s.q()), h("h", N, s.q()), c("c", N, s.q());
  Kokkos::deep_copy(x, 0.5f);
  Kokkos::deep_copy(d_out, 1e-3f);
  typename Network::cache_type cache;
  std::vector<double> times;
  for (int r = 0; r <= reps; ++r) {
    space.fence();
    auto t0 = std::chrono::steady_clock::now();
    net.forward(space, x, h0, c0, out, h, c, {}, cache);
    if (train) net.backward(space, cache, d_out, {}, {}, {}, {}, {}, {});
    space.fence();
    if (r > 0) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void sparse_vs_dense(benchmark::State& state, bool train) {
  int const M = 4, d = 128, L = 32, in = 128;
  long const N = 32, T = 128;
  Exec space;
  auto w = trellis::RecurrentWeights::random(trellis::RecurrentCell::lstm, in, d, M, 1);
  auto shape = trellis::trellis_shape_for(w, L);
  trellis::TrellisNetwork<Exec, float, trellis::TiedAcrossDepth, trellis::RnnSparse> sparse(space, shape);
  trellis::load_recurrent(sparse.parameters(), w);
  trellis::TrellisNetwork<Exec, float> dense(space, shape);
  auto dw = trellis::densify(sparse.parameters(), shape, 4);
  Kokkos::deep_copy(dense.parameters().weight1, dw.weight1);
  Kokkos::deep_copy(dense.parameters().weight2, dw.weight2);
  Kokkos::deep_copy(dense.parameters().bias2, dw.bias2);
  double t_sparse = 0, t_dense = 0;
  for (auto _ : state) {
    t_sparse = median_step(sparse, T, N, train, 3);
    t_dense = median_step(dense, T, N, train, 3);
    state.SetIterationTime(t_sparse);
  }
  // Per gate, layer j stores W_hh^(j) and (j > 1) W_hx^(j): 2M - 1 of the 2M^2 hidden
  // blocks; the injection stores 1 of 2M blocks of its (G q) x (2 in) kernel.
  double const q = M * d, G = 4;
  double const dense_flops = G * q * 2 * q + G * q * 2 * in / shape.nlevels;
  double const sparse_flops = G * (2 * M - 1) * double(d) * d + G * double(d) * in / shape.nlevels;
  state.counters["sparse_ms"] = t_sparse * 1e3;
  state.counters["dense_ms"] = t_dense * 1e3;
  state.counters["speedup"] = t_dense / t_sparse;
  state.counters["ideal_hidden"] = 2.0 * M * M / (2 * M - 1);
  state.counters["ideal_all"] = dense_flops / sparse_flops;
}

}  // namespace

void register_rnn_sparse_benchmarks() {
  benchmark::RegisterBenchmark("rnn_sparse_vs_dense/forward", [](benchmark::State& s) { sparse_vs_dense(s, false); })
      ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);
  benchmark::RegisterBenchmark("rnn_sparse_vs_dense/train_step", [](benchmark::State& s) { sparse_vs_dense(s, true); })
      ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);
}
