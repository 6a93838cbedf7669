// Text generation by exact streaming against recomputing the window: per new token,
// one LanguageModelStream step (embedding, one row-block per level, head) against a
// LanguageModel::evaluate over the last L tokens from the zero state, scoring only the
// last position (what TCN users do to extend a sequence). Both sides run in turn in
// every iteration, so that the ratio survives the machine's drift; the counters are
// medians over the iterations.
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <trellis/trellis.hpp>

namespace {

using Exec = Kokkos::DefaultExecutionSpace;
using Scalar = float;
using Model = trellis::LanguageModel<Exec, Scalar>;

struct StreamConfig {
  char const* name;
  int ninp, nhid, nout, nlevels;
  long L, ntoken;  ///< training length (the window), vocabulary
};

std::vector<StreamConfig> stream_configs() {
  return {
      // scripts/demo's charlm on the State of the Union texts (its defaults, 94 characters).
      {"sotu-demo", 64, 128, 64, 8, 128, 94},
      // charptb-cpu's core (BENCHMARKS: emsize 200, nhid 1050, 4 levels, L 140), 50 characters.
      {"charptb-cpu", 200, 1050, 200, 4, 140, 50},
  };
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Multiply-adds x 2 of the core's GEMMs for `rows` rows per level (level 1: rows_first).
double core_flops(StreamConfig const& c, double rows, double rows_first) {
  double const q = c.nhid + c.nout, G = 4, p = c.ninp;
  double const injection = 2 * rows * 2 * p * G * q;  // one dilation: one injection slot
  double const hidden = 2 * 2 * q * G * q;
  return injection + hidden * (rows_first + (c.nlevels - 1) * rows);
}

void stream_vs_window(benchmark::State& state, StreamConfig const& c, long N) {
  Exec space;
  trellis::LanguageModelConfig config;
  config.core = {.ninp = c.ninp, .nhid = c.nhid, .nout = c.nout, .nlevels = c.nlevels, .dilation = {1},
                 .weight_norm = false};
  config.ntoken = c.ntoken;
  Model lm(space, config);
  std::mt19937_64 rng(3);
  Kokkos::View<std::int32_t**, Kokkos::LayoutRight, Exec::memory_space> window("window", c.L, N);
  auto host = Kokkos::create_mirror_view(window);
  for (std::size_t i = 0; i < host.span(); ++i) host.data()[i] = std::int32_t(rng() % std::uint64_t(c.ntoken));
  Kokkos::deep_copy(window, host);
  trellis::LanguageModelStream<Model> stream(space, lm, N);
  stream.prefill(space, window);
  auto const next = Kokkos::subview(window, c.L - 1, Kokkos::ALL);
  auto zero_state = lm.make_state(N);
  typename Model::matrix log_probs("log_probs", N, c.ntoken);
  constexpr int steps = 16;  // streaming steps per iteration, for a steady timing
  auto now = [] { return std::chrono::steady_clock::now(); };
  auto since = [](auto t0) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  lm.evaluate(space, window, window, c.L - 1, zero_state, log_probs);  // sizes the model's buffers
  std::vector<double> streamed, recomputed, ratios;
  for (auto _ : state) {
    space.fence();
    auto t0 = now();
    for (int k = 0; k < steps; ++k) stream.step(space, next);
    space.fence();
    double const ts = since(t0) / steps;
    Kokkos::deep_copy(space, zero_state.h, Scalar(0));
    Kokkos::deep_copy(space, zero_state.c, Scalar(0));
    space.fence();
    t0 = now();
    lm.evaluate(space, window, window, c.L - 1, zero_state, log_probs);
    space.fence();
    double const tw = since(t0);
    state.SetIterationTime(ts);
    streamed.push_back(ts);
    recomputed.push_back(tw);
    ratios.push_back(tw / ts);
  }
  double const ts = median(streamed), tw = median(recomputed);
  state.counters["stream_ms"] = ts * 1e3;
  state.counters["window_ms"] = tw * 1e3;
  state.counters["stream_tokens/s"] = double(N) / ts;
  state.counters["window_tokens/s"] = double(N) / tw;
  state.counters["speedup"] = median(ratios);
  state.counters["flop_ratio"] =
      core_flops(c, double(c.L * N), double(N)) / core_flops(c, double(N), double(N));
  state.counters["window_L"] = double(c.L);
}

}  // namespace

void register_stream_benchmarks() {
  for (auto const& c : stream_configs())
    for (long N : {1L, 32L}) {
      // Enough window passes for a median, without minutes on the big ones.
      long const work = long(c.nhid + c.nout) * (c.nhid + c.nout) * c.nlevels * N;
      int const iterations = work > 50'000'000 ? 3 : work > 5'000'000 ? 9 : 41;
      benchmark::RegisterBenchmark((std::string("generate/") + c.name + "/streams:" + std::to_string(N)).c_str(),
                                   [c, N](benchmark::State& st) { stream_vs_window(st, c, N); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond)
          ->Iterations(iterations);
    }
}
