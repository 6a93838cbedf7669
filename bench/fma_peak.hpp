#pragma once
// The host's FP32 FMA peak for the benchmark context: threads x clock x FLOP per
// cycle, each with where it came from, and what a loop of independent FMAs reaches on
// those threads (the figure the GEMM shares are taken against: a VM's clock reading
// can be the base clock while the cores run faster).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace trellis_bench {

struct FmaPeak {
  int threads = 1;
  double ghz = 0;               // 0: unknown
  int flops_per_cycle = 0;      // per core, fp32; 0: unknown
  double nominal_gflops = 0;    // threads x ghz x flops_per_cycle
  double measured_gflops = 0;   // the FMA loop
  std::string how;
  /// What shares are taken against: the larger of the two.
  double gflops() const { return std::max(nominal_gflops, measured_gflops); }
};

/// The peak this run's host GEMMs have, once main has measured it (0: not measured,
/// or a device backend).
inline double& host_peak_gflops() {
  static double peak = 0;
  return peak;
}

namespace detail {

/// GHz from cpufreq's maximum, else /proc/cpuinfo's "cpu MHz" (a VM's often the base).
inline double clock_ghz(std::string& source) {
  if (std::ifstream f("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"); f) {
    double khz = 0;
    if (f >> khz && khz > 0) {
      source = "cpufreq cpuinfo_max_freq";
      return khz / 1e6;
    }
  }
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("cpu MHz", 0) == 0) {
      source = "/proc/cpuinfo cpu MHz";
      return std::stod(line.substr(line.find(':') + 1)) / 1e3;
    }
  source = "unknown";
  return 0;
}

/// FP32 FLOP per cycle per core from the vector width this build uses and the FMA
/// units of the CPU's family (not readable from CPUID, so from the vendors' figures).
inline int flops_per_cycle(std::string& source) {
#if defined(__x86_64__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  __get_cpuid(0, &a, &b, &c, &d);
  bool const amd = b == 0x68747541u;  // "Auth"enticAMD
  __get_cpuid(1, &a, &b, &c, &d);
  unsigned const family = ((a >> 8) & 0xfu) + (((a >> 8) & 0xfu) == 0xfu ? ((a >> 20) & 0xffu) : 0u);
#if defined(__AVX512F__)
  int const lanes = 16;
#elif defined(__FMA__)
  int const lanes = 8;
#else
  int const lanes = 0;
#endif
  if (lanes == 0) {
    source = "no FMA in this build";
    return 0;
  }
  // Two FMA pipes on every recent core; Zen 4's are 256 bits wide (AVX-512 in two
  // halves), Zen 5's and Intel's AVX-512 cores' (most server parts) 512.
  int width = lanes;
  std::string core = amd ? "AMD family " + std::to_string(family) : "Intel family " + std::to_string(family);
  if (amd && family < 0x1a && lanes == 16) {
    width = 8;
    core += " (Zen 4 or older: 256-bit FMA pipes)";
  } else if (amd && family >= 0x1a) {
    core += " (Zen 5: 512-bit FMA pipes)";
  }
  source = "2 FMA pipes x " + std::to_string(width) + " fp32 lanes x 2, " + core;
  return 2 * width * 2;
#else
  source = "not an x86-64 build";
  return 0;
#endif
}

/// One thread's FMA loop: 12 independent accumulators (enough to cover the latency on
/// two pipes), `iterations` rounds. Returns FLOPs done.
inline double fma_loop(long iterations, float* sink) {
#if defined(__AVX512F__)
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(float(i) * 1e-3f);
  __m512 const m = _mm512_set1_ps(0.999999f), k = _mm512_set1_ps(1e-7f);
  for (long it = 0; it < iterations; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, k);
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  float out[16];
  _mm512_storeu_ps(out, s);  // (GCC 12's _mm512_reduce_add_ps trips -Wuninitialized)
  *sink = out[0];
  return double(iterations) * 12 * 16 * 2;
#elif defined(__FMA__)
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(float(i) * 1e-3f);
  __m256 const m = _mm256_set1_ps(0.999999f), k = _mm256_set1_ps(1e-7f);
  for (long it = 0; it < iterations; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, k);
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  *sink = out[0];
  return double(iterations) * 12 * 8 * 2;
#else
  (void)iterations;
  *sink = 0;
  return 0;
#endif
}

}  // namespace detail

/// The peak for `threads` threads: the nominal figure and the FMA loop's, best of a
/// few tries (each thread about 0.1 s).
inline FmaPeak fma_peak(int threads) {
  FmaPeak p;
  p.threads = threads;
  std::string clock_source, flops_source;
  p.ghz = detail::clock_ghz(clock_source);
  p.flops_per_cycle = detail::flops_per_cycle(flops_source);
  p.nominal_gflops = threads * p.ghz * p.flops_per_cycle;
  long const iterations = 20'000'000;
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::vector<float> sinks(std::size_t(threads) * 16);
    std::vector<double> flops(threads);
    auto const t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] { flops[t] = detail::fma_loop(iterations, &sinks[std::size_t(t) * 16]); });
    for (auto& t : pool) t.join();
    double const s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double total = 0;
    for (double f : flops) total += f;
    if (s > 0) p.measured_gflops = std::max(p.measured_gflops, total / s / 1e9);
  }
  std::ostringstream how;
  how.precision(3);
  how << threads << " threads x " << p.ghz << " GHz (" << clock_source << ") x " << p.flops_per_cycle
      << " FLOP/cycle (" << flops_source << ") = " << p.nominal_gflops << " GFLOP/s; an FMA loop on " << threads
      << " threads: " << p.measured_gflops << " GFLOP/s";
  p.how = how.str();
  return p;
}

}  // namespace trellis_bench
