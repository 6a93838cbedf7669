#pragma once
// Host GEMM in float through oneDNN's matmul (libdnnl, a configure-time choice:
// Trellis_HOST_GEMM). Its JIT kernels run the level GEMMs' shapes faster than Eigen in
// fp32, and on CPUs with AVX512-BF16 they give MathMode::bf16 its bf16 products with
// fp32 sums where there is no AMX: the operands are rounded to bf16 (nearest even) by
// oneDNN's reorder, then multiplied in bf16 with fp32 accumulation, C kept in fp32.
//
// Primitives are made once per shape, strides, alpha, beta and thread count, and kept
// per calling thread, so a training loop creates none after its first step. oneDNN
// here uses the OpenMP runtime: its threads are set for each call to the space's (or
// on Serial to serial_gemm_threads()). Double stays on Eigen (matmul has no f64).
#include <Kokkos_Core.hpp>

#include <trellis/blas/detail/matrix_ref.hpp>
#include <trellis/blas/host_threads.hpp>

#if defined(TRELLIS_HAVE_ONEDNN)
#include <omp.h>

#include <dnnl.hpp>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <trellis/errors.hpp>
#endif

namespace trellis::detail {

struct OnednnGemm {};

#if defined(TRELLIS_HAVE_ONEDNN)

namespace onednn {

inline dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

/// What one cached primitive was made for.
struct Key {
  std::int64_t m, n, k, lda, ldb, ldc;
  bool ta, tb, bf16;
  float alpha, beta;
  int threads;
  bool operator==(Key const&) const = default;
};
struct KeyHash {
  std::size_t operator()(Key const& key) const {
    std::size_t h = 1469598103934665603ull;
    auto mix = [&h](std::uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    for (std::int64_t v : {key.m, key.n, key.k, key.lda, key.ldb, key.ldc}) mix(std::uint64_t(v));
    mix((std::uint64_t(key.ta) << 2) | (std::uint64_t(key.tb) << 1) | std::uint64_t(key.bf16));
    std::uint32_t a = 0, b = 0;
    std::memcpy(&a, &key.alpha, 4);
    std::memcpy(&b, &key.beta, 4);
    mix((std::uint64_t(a) << 32) | b);
    mix(std::uint64_t(key.threads));
    return h;
  }
};

struct Plan {
  dnnl::memory::desc a32, b32, c32, a16, b16;  // op(A) as {m, k}, op(B) as {k, n}
  dnnl::matmul matmul;
  dnnl::reorder round_a, round_b;  // bf16 only
};

using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;

inline Plan make_plan(Key const& key) {
  Plan p;
  // Row-major A (m x k) has strides {lda, 1}; transposed storage (k x m), {1, lda}.
  dims const ad{key.m, key.k}, bd{key.k, key.n}, cd{key.m, key.n};
  dims const as = key.ta ? dims{1, key.lda} : dims{key.lda, 1};
  dims const bs = key.tb ? dims{1, key.ldb} : dims{key.ldb, 1};
  p.a32 = dnnl::memory::desc(ad, dt::f32, as);
  p.b32 = dnnl::memory::desc(bd, dt::f32, bs);
  p.c32 = dnnl::memory::desc(cd, dt::f32, dims{key.ldc, 1});
  dnnl::primitive_attr attr;
  if (key.alpha != 1.0f) attr.set_output_scales(0, {key.alpha});
  if (key.beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(key.beta);
    attr.set_post_ops(ops);
  }
  if (key.bf16) {
    // Dense bf16 copies in the operands' own memory order: the rounding streams.
    p.a16 = dnnl::memory::desc(ad, dt::bf16, key.ta ? dims{1, key.m} : dims{key.k, 1});
    p.b16 = dnnl::memory::desc(bd, dt::bf16, key.tb ? dims{1, key.k} : dims{key.n, 1});
    p.round_a = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), p.a32, engine(), p.a16));
    p.round_b = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), p.b32, engine(), p.b16));
    p.matmul = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(p.a16, p.b16, p.c32), attr, engine()));
  } else {
    p.matmul = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(p.a32, p.b32, p.c32), attr, engine()));
  }
  return p;
}

/// Per calling thread: its stream, its primitives, its bf16 workspace.
struct ThreadState {
  dnnl::stream stream{engine()};
  std::unordered_map<Key, Plan, KeyHash> plans;
  std::vector<std::uint16_t> workspace;
};
inline ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

/// Sets OpenMP's thread count for this thread's next parallel regions, and back.
struct OmpThreads {
  int saved;
  explicit OmpThreads(int n) : saved(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved); }
  OmpThreads(OmpThreads const&) = delete;
  OmpThreads& operator=(OmpThreads const&) = delete;
};

}  // namespace onednn

/// True where MathMode::bf16 can run on oneDNN's bf16 kernels on this CPU (AVX512-BF16
/// or AMX, as oneDNN itself detects them).
inline bool onednn_bf16_available() {
  static bool const ok = [] {
    try {
      auto const isa = dnnl::get_effective_cpu_isa();
      return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
    } catch (...) {
      return false;
    }
  }();
  return ok;
}

/// Below this many multiply-adds oneDNN's call costs more than Eigen's GEMM: fp32
/// products that small stay on Eigen.
inline constexpr double onednn_min_multiply_adds = 131072;

template <class Exec>
void gemm_impl(OnednnGemm, Exec const& space, bool trans_a, bool trans_b, float alpha,
               MatrixRef<float const> a, MatrixRef<float const> b, float beta,
               MatrixRef<float> c, std::size_t inner, bool bf16) {
  if (c.rows == 0 || c.cols == 0) return;
  trellis::blas::detail::fence_before_host_gemm(space);
  int const threads = trellis::blas::host_gemm_threads(space);
  onednn::Key const key{std::int64_t(c.rows), std::int64_t(c.cols), std::int64_t(inner), std::int64_t(a.ld),
                        std::int64_t(b.ld),   std::int64_t(c.ld),   trans_a,  trans_b, bf16, alpha, beta, threads};
  auto& state = onednn::thread_state();
  onednn::OmpThreads const use(threads);
  try {
    auto found = state.plans.find(key);
    if (found == state.plans.end()) {
      if (state.plans.size() >= 512) state.plans.clear();  // shapes of an unusual program: start over
      found = state.plans.emplace(key, onednn::make_plan(key)).first;
    }
    auto& p = found->second;
    auto& e = onednn::engine();
    // oneDNN takes non-const handles; it only reads A and B.
    dnnl::memory ma(p.a32, e, const_cast<float*>(a.data)), mb(p.b32, e, const_cast<float*>(b.data));
    dnnl::memory mc(p.c32, e, c.data);
    if (bf16) {
      std::size_t const na = c.rows * inner, nb = inner * c.cols;
      if (state.workspace.size() < na + nb) state.workspace.resize(na + nb);
      dnnl::memory ra(p.a16, e, state.workspace.data()), rb(p.b16, e, state.workspace.data() + na);
      p.round_a.execute(state.stream, ma, ra);
      p.round_b.execute(state.stream, mb, rb);
      p.matmul.execute(state.stream, {{DNNL_ARG_SRC, ra}, {DNNL_ARG_WEIGHTS, rb}, {DNNL_ARG_DST, mc}});
    } else {
      p.matmul.execute(state.stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
    }
    state.stream.wait();
  } catch (dnnl::error const& err) {
    throw trellis::backend_error(message("trellis::blas::gemm: oneDNN", bf16 ? " (bf16)" : "", " failed for C ",
                                         c.rows, " x ", c.cols, " with inner dimension ", inner, ": ", err.what()));
  }
}

#else

inline bool onednn_bf16_available() { return false; }
inline constexpr double onednn_min_multiply_adds = 0;

template <class Exec>
void gemm_impl(OnednnGemm, Exec const&, bool, bool, float, MatrixRef<float const>, MatrixRef<float const>, float,
               MatrixRef<float>, std::size_t, bool) {}

#endif

}  // namespace trellis::detail
