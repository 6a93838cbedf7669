// Benchmark main: Kokkos initialised once, its configuration in the benchmark context.
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>

#include <string>

#include <trellis/version.hpp>

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
  register_trellis_benchmarks();
  register_rnn_sparse_benchmarks();
  register_stream_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
