// Forward and train step of the TrellisNet core on the benchmark configurations
// below (those the reference's experiments use), with the bare GEMMs of the same step timed alone (the ceiling) and
// the ratio of the two. "Train step" is forward + backward of mean(out^2).
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <trellis/trellis.hpp>

#include "fma_peak.hpp"
#include "memory_meter.hpp"

#if defined(KOKKOS_ENABLE_CUDA)
#include <cuda_runtime.h>
#endif

namespace {

using Exec = Kokkos::DefaultExecutionSpace;
using Scalar = float;
using Net = trellis::TrellisNetwork<Exec, Scalar>;
using Matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, Exec::memory_space>;

struct Config {
  char const* name;
  long N, L;
  int ninp, nhid, nout, nlevels;
  std::vector<int> dilation;
  bool cpu, gpu;
  int repetitions;
};

std::vector<Config> configs() {
  std::vector<int> mnist_dil{1, 1};
  for (int d = 2; d <= 512; d *= 2) mnist_dil.push_back(d);
  mnist_dil.resize(11);
  return {
      {"tiny", 4, 32, 8, 24, 8, 6, {1}, true, true, 5},
      {"seqmnist", 64, 784, 1, 120, 10, 11, mnist_dil, true, true, 3},
      {"charptb-cpu", 24, 140, 200, 1050, 200, 4, {1}, true, false, 3},
      // scripts/demo's model (trellis train --task charlm --data sotu's defaults).
      {"sotu-demo", 16, 128, 64, 128, 64, 8, {1}, true, false, 5},
      {"charptb", 24, 140, 200, 1050, 200, 140, {1}, false, true, 5},
      {"wordptb", 16, 110, 400, 1000, 400, 58, {1}, false, true, 5},
  };
}

trellis::TrellisShape shape_of(Config const& c) {
  return {.ninp = c.ninp, .nhid = c.nhid, .nout = c.nout, .nlevels = c.nlevels, .dilation = c.dilation};
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

/// What the device has in use: tensors, the CUDA context, cuBLAS workspaces, pools.
double device_used_mib() {
#if defined(KOKKOS_ENABLE_CUDA)
  std::size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) == cudaSuccess) return double(total - free) / (1024.0 * 1024.0);
#endif
  return 0;
}

/// The bare GEMMs of one step at the same shapes, each alone: the ceiling. With the
/// injection folded (narrow inputs), the step's hidden GEMMs are 2p + 1 columns wider,
/// level 1's rows past its padding keep those columns only, and there are no
/// injection GEMMs: the ceiling follows.
struct GemmCeiling {
  Matrix S, W, A, X, W1, U, dA, dS, dW, dX, dW1;
  long R, q, p, G = 4;
  long first_rows;  ///< level 1's history is h0 for t < d only: its GEMMs take these rows
  int slots, levels;
  bool folded;
  long width;  ///< columns of the history: 2q, or folded 2q + 2p + 1 padded to 8
  trellis::blas::MathMode mode;  ///< the step's: TF32 rows are held to TF32 GEMMs
  GemmCeiling(Config const& c, int injection_slots, trellis::blas::MathMode math, bool injection_folded = false)
      : R(c.N * c.L),
        q(c.nhid + c.nout),
        p(c.ninp),
        first_rows(std::min<long>(c.dilation.front(), c.L) * c.N),
        slots(injection_slots),
        levels(c.nlevels),
        folded(injection_folded),
        width(injection_folded ? Net::structure_ops::folded_width(shape_of(c)) : 2 * q),
        mode(math) {
    S = Matrix("S", R, width);
    W = Matrix("W", G * q, width);
    A = Matrix("A", R, G * q);
    X = Matrix("X", R, 2 * p);
    W1 = Matrix("W1", G * q, 2 * p);
    U = Matrix("U", R, G * q);
    dA = Matrix("dA", R, G * q);
    dS = Matrix("dS", R, 2 * q);
    dW = Matrix("dW", G * q, width);
    dX = Matrix("dX", R, 2 * p);
    dW1 = Matrix("dW1", G * q, 2 * p);
    Kokkos::deep_copy(S, 0.01f);
    Kokkos::deep_copy(W, 0.01f);
    Kokkos::deep_copy(X, 0.01f);
    Kokkos::deep_copy(W1, 0.01f);
    Kokkos::deep_copy(dA, 0.01f);
  }
  static auto rows(Matrix const& m, long n) { return Kokkos::subview(m, std::make_pair(0L, n), Kokkos::ALL); }
  static auto block(Matrix const& m, long r0, long c0) {
    return Kokkos::subview(m, std::make_pair(r0, long(m.extent(0))), std::make_pair(c0, long(m.extent(1))));
  }
  auto hidden_columns(Matrix const& m) const { return Kokkos::subview(m, Kokkos::ALL, std::make_pair(0L, 2 * q)); }
  void forward(Exec const& space) const {
    using trellis::blas::Op;
    for (int s = 0; s < slots; ++s) trellis::blas::gemm(space, Op::none, Op::transpose, 1.0f, X, W1, 0.0f, U, mode);
    for (int l = 0; l < levels; ++l) {
      long const n = l == 0 ? first_rows : R;
      trellis::blas::gemm(space, Op::none, Op::transpose, 1.0f, rows(S, n), W, 0.0f, rows(A, n), mode);
      if (folded && n < R)
        trellis::blas::gemm(space, Op::none, Op::transpose, 1.0f, block(S, n, 2 * q), block(W, 0, 2 * q), 0.0f,
                            block(A, n, 0), mode);
    }
  }
  void backward(Exec const& space) const {
    using trellis::blas::Op;
    for (int l = 0; l < levels; ++l) {
      long const n = l == 0 ? first_rows : R;
      trellis::blas::gemm(space, Op::transpose, Op::none, 1.0f, rows(dA, n), rows(S, n), 1.0f, dW, mode);
      trellis::blas::gemm(space, Op::none, Op::none, 1.0f, rows(dA, n), hidden_columns(W), 0.0f, rows(dS, n), mode);
      if (folded && n < R)
        trellis::blas::gemm(space, Op::transpose, Op::none, 1.0f, block(dA, n, 0), block(S, n, 2 * q), 1.0f,
                            block(dW, 0, 2 * q), mode);
    }
    for (int s = 0; s < slots; ++s) {
      trellis::blas::gemm(space, Op::transpose, Op::none, 1.0f, U, X, 1.0f, dW1, mode);
      trellis::blas::gemm(space, Op::none, Op::none, 1.0f, U, W1, 0.0f, dX, mode);
    }
  }
  /// The multiply-adds of forward (and backward) above, times 2: the products the step
  /// computes, level 1's skipped rows and the first level's unused dS included as run.
  double flops(bool train) const {
    double f = 0;
    for (int s = 0; s < slots; ++s) f += 2.0 * R * 2 * p * G * q;
    for (int l = 0; l < levels; ++l) {
      long const n = l == 0 ? first_rows : R;
      f += 2.0 * n * width * G * q;
      if (folded && n < R) f += 2.0 * (R - n) * (width - 2 * q) * G * q;
      if (train) {
        f += 2.0 * G * q * width * n + 2.0 * n * 2 * q * G * q;
        if (folded && n < R) f += 2.0 * G * q * (width - 2 * q) * (R - n);
      }
    }
    if (train)
      for (int s = 0; s < slots; ++s) f += 2 * (2.0 * G * q * 2 * p * R);
    return f;
  }
  /// Median seconds of one level's GEMMs alone (forward, and backward when training).
  double level_time(Exec const& space, bool train, int reps) const {
    using trellis::blas::Op;
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
      space.fence();
      auto t0 = std::chrono::steady_clock::now();
      trellis::blas::gemm(space, Op::none, Op::transpose, 1.0f, S, W, 0.0f, A, mode);
      if (train) {
        trellis::blas::gemm(space, Op::transpose, Op::none, 1.0f, dA, S, 1.0f, dW, mode);
        trellis::blas::gemm(space, Op::none, Op::none, 1.0f, dA, hidden_columns(W), 0.0f, dS, mode);
      }
      space.fence();
      t.push_back(seconds_since(t0));
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
  /// Median seconds of `reps` runs of the forward (and backward) GEMM list.
  double time(Exec const& space, bool train, int reps) const {
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
      space.fence();
      auto t0 = std::chrono::steady_clock::now();
      forward(space);
      if (train) backward(space);
      space.fence();
      t.push_back(seconds_since(t0));
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

/// recompute: the core's level recomputation interval (1: keep every level).
void run_step(benchmark::State& state, Config const& c, bool train, trellis::blas::MathMode mode,
              int recompute = 1) {
  trellis_bench::MemoryMeter::reset_peak();
  Exec space;
  auto const s = shape_of(c);
  Net net(space, s);
  net.set_math_mode(mode);
  net.set_recompute_interval(recompute);
  // The forward's and backward's block rows (0: the network's choice), for tuning.
  if (char const* v = std::getenv("TRELLIS_BENCH_FORWARD_BLOCK_ROWS")) net.set_forward_block_rows(std::atol(v));
  if (char const* v = std::getenv("TRELLIS_BENCH_BACKWARD_BLOCK_ROWS")) net.set_backward_block_rows(std::atol(v));
  long const L = c.L, N = c.N, q = s.q();
  Net::sequence_view x("x", L, N, s.ninp), out("out", L, N, s.nout), d_out("d_out", L, N, s.nout);
  Net::state_view h0("h0", N, q), c0("c0", N, q), h("h", N, q), cn("c", N, q);
  Net::aux_view aux;
  Net::cache_type cache;
  {
    auto hx = Kokkos::create_mirror_view(x);
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0, 1);
    for (std::size_t i = 0; i < hx.span(); ++i) hx.data()[i] = normal(rng);
    Kokkos::deep_copy(x, hx);
  }
  Scalar const scale = Scalar(2.0 / double(out.span()));
  auto step = [&] {
    net.forward(space, x, h0, c0, out, h, cn, aux, cache);
    if (train) {
      auto const o = out;
      auto const dout = d_out;
      Kokkos::parallel_for("bench::d_mean_square", Kokkos::RangePolicy<Exec>(space, 0, out.span()),
                           KOKKOS_LAMBDA(long i) { dout.data()[i] = scale * o.data()[i]; });
      net.zero_gradients(space);
      net.backward(space, cache, d_out, {}, {}, {}, {}, {}, {});
    }
  };
  step();  // warm up: allocates the cache
  std::vector<double> times;
  for (auto _ : state) {
    space.fence();
    auto t0 = std::chrono::steady_clock::now();
    step();
    space.fence();
    times.push_back(seconds_since(t0));
    state.SetIterationTime(times.back());
  }
  std::sort(times.begin(), times.end());
  // Memory before the ceiling's own matrices exist.
  state.counters["tensor_peak_MiB"] = trellis_bench::MemoryMeter::peak_mib();
  state.counters["cache_MiB"] = double(cache.bytes()) / (1024.0 * 1024.0);
  state.counters["recompute_k"] = net.recompute_interval();
  if (double const used = device_used_mib(); used > 0) state.counters["device_used_MiB"] = used;
  bool const folded = net.injection_folded();
  GemmCeiling ceiling(c, net.injection_slots(), mode, folded);
  double const gemm_s = ceiling.time(space, train, 3);
  double const level_gemm_s = ceiling.level_time(space, train, 5);
  // The products the step's GEMMs compute (level 1 takes only the rows its padding
  // reaches; a folded injection's bias column and padding count).
  double const flops = ceiling.flops(train);
  state.counters["injection_folded"] = folded ? 1 : 0;
  state.counters["tokens/s"] = benchmark::Counter(double(N * L), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["gemm_ms"] = gemm_s * 1e3;
  // The bare GEMMs' rate against the host's FP32 FMA peak (bench_main's context).
  if (double const peak = trellis_bench::host_peak_gflops(); peak > 0)
    state.counters["gemm_peak_share"] = flops / gemm_s / 1e9 / peak;
  double const median_s = times[times.size() / 2];
  state.counters["ratio_to_gemm"] = median_s / gemm_s;
  // One level: the step's time per level against that level's bare GEMM(s).
  state.counters["level_ms"] = median_s / c.nlevels * 1e3;
  state.counters["level_gemm_ms"] = level_gemm_s * 1e3;
  state.counters["level_ratio"] = median_s / c.nlevels / level_gemm_s;
  state.counters["peak_rss_MiB"] = peak_rss_mib();
}

void run_level_gemm(benchmark::State& state, Config const& c, trellis::blas::MathMode mode) {
  Exec space;
  GemmCeiling g(c, 1, mode);
  std::vector<double> times;
  for (auto _ : state) {
    space.fence();
    auto t0 = std::chrono::steady_clock::now();
    trellis::blas::gemm(space, trellis::blas::Op::none, trellis::blas::Op::transpose, 1.0f, g.S, g.W, 0.0f, g.A, mode);
    space.fence();
    times.push_back(seconds_since(t0));
    state.SetIterationTime(times.back());
  }
  std::sort(times.begin(), times.end());
  double const flops = 2.0 * g.R * g.width * 4 * g.q;
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  if (double const peak = trellis_bench::host_peak_gflops(); peak > 0)
    state.counters["peak_share"] = flops / times[times.size() / 2] / 1e9 / peak;
}

/// Repetitions of each benchmark: the configuration's, or TRELLIS_BENCH_REPETITIONS
/// (Google Benchmark's own flag does not override a count set in code).
int repetitions(Config const& c) {
  if (char const* v = std::getenv("TRELLIS_BENCH_REPETITIONS"); v && std::atoi(v) > 0) return std::atoi(v);
  return c.repetitions;
}

}  // namespace

void register_trellis_benchmarks() {
  bool const gpu = !Kokkos::SpaceAccessibility<Kokkos::HostSpace, Exec::memory_space>::accessible;
  for (auto const& c : configs()) {
    if (gpu ? !c.gpu : !c.cpu) continue;
    std::vector<std::pair<std::string, trellis::blas::MathMode>> modes{{"", trellis::blas::MathMode::strict}};
    if (gpu) modes = {{"/tf32", trellis::blas::MathMode::tf32}, {"/fp32", trellis::blas::MathMode::strict}};
    // bf16 products (AMX tiles, or AVX512-BF16 through oneDNN) where the CPU has them:
    // the CPU's counterpart of TF32.
    if (!gpu && trellis::blas::bf16_products_available()) modes.push_back({"/bf16", trellis::blas::MathMode::bf16});
    for (auto const& [suffix, mode] : modes) {
      auto configure = [&](benchmark::internal::Benchmark* b) {
        int const reps = repetitions(c);
        b->UseManualTime()->Unit(benchmark::kMillisecond)->Repetitions(reps)->ReportAggregatesOnly(true);
        if (c.repetitions <= 3) b->Iterations(1);
      };
      configure(benchmark::RegisterBenchmark((std::string("forward/") + c.name + suffix).c_str(),
                                             [c, mode = mode](benchmark::State& st) { run_step(st, c, false, mode); }));
      configure(benchmark::RegisterBenchmark((std::string("train_step/") + c.name + suffix).c_str(),
                                             [c, mode = mode](benchmark::State& st) { run_step(st, c, true, mode); }));
      // Level recomputation with k about sqrt(levels): memory against time.
      configure(benchmark::RegisterBenchmark((std::string("train_step_recompute/") + c.name + suffix).c_str(),
                                             [c, mode = mode](benchmark::State& st) { run_step(st, c, true, mode, 0); }));
      configure(benchmark::RegisterBenchmark((std::string("level_gemm/") + c.name + suffix).c_str(),
                                             [c, mode = mode](benchmark::State& st) { run_level_gemm(st, c, mode); }));
    }
  }
}
