// Benchmark main: Kokkos initialised once, its configuration in the benchmark context.
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>

#include <cstdlib>
#include <string>

#include <trellis/version.hpp>

#include <trellis/blas/gemm.hpp>

#include "fma_peak.hpp"
#include "memory_meter.hpp"

void register_trellis_benchmarks();
void register_rnn_sparse_benchmarks();
void register_stream_benchmarks();

int main(int argc, char** argv) {
  Kokkos::ScopeGuard guard(argc, argv);
  using Exec = Kokkos::DefaultExecutionSpace;
  trellis_bench::MemoryMeter::install<Exec::memory_space>();
  benchmark::AddCustomContext("trellis", trellis::version_string);
  benchmark::AddCustomContext("kokkos_version", std::to_string(KOKKOS_VERSION));
  benchmark::AddCustomContext("execution_space", Exec::name());
  benchmark::AddCustomContext("concurrency", std::to_string(Exec().concurrency()));
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, Exec::memory_space>::accessible) {
    // The threads the host GEMMs use: the space's, or on Serial serial_gemm_threads,
    // which TRELLIS_BENCH_GEMM_THREADS sets.
    if (char const* v = std::getenv("TRELLIS_BENCH_GEMM_THREADS"); v && std::atoi(v) > 0)
      trellis::blas::set_serial_gemm_threads(std::atoi(v));
    auto const peak = trellis_bench::fma_peak(trellis::blas::host_gemm_threads(Exec()));
    trellis_bench::host_peak_gflops() = peak.gflops();
    benchmark::AddCustomContext("host_gemm", trellis::blas::host_gemm_library());
    benchmark::AddCustomContext("gemm_threads", std::to_string(peak.threads));
    benchmark::AddCustomContext("fp32_fma_peak", peak.how);
    benchmark::AddCustomContext("fp32_fma_peak_GFLOPs", std::to_string(peak.gflops()));
  }
  register_trellis_benchmarks();
  register_rnn_sparse_benchmarks();
  register_stream_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
