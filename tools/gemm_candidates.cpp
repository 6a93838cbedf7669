// Host GEMM libraries side by side on the level GEMMs of seqmnist, charptb-cpu and
// the SOTU demo (forward C = S W^T, backward dW = dA^T S and dS = dA W), in fp32 and,
// for oneDNN, bf16 products: the measurement behind the choice of host GEMM
// (README, Benchmarks). One library per build, because OpenBLAS and BLIS export the
// same CBLAS names; tools/gemm-candidates builds and runs each.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <vector>

#if defined(CANDIDATE_EIGEN)
#include <Eigen/Core>
#elif defined(CANDIDATE_OPENBLAS)
#include <cblas.h>
extern "C" char* openblas_get_corename();
#elif defined(CANDIDATE_BLIS)
#include <blis.h>
#elif defined(CANDIDATE_ONEDNN)
#include <dnnl.hpp>
#endif

namespace {

struct Shape {
  char const* config;
  long m, n, k;
  bool ta, tb;
};

std::vector<Shape> shapes() {
  struct Level {
    char const* name;
    long R, q;
  };
  std::vector<Shape> out;
  for (Level c : {Level{"seqmnist", 64 * 784, 130}, Level{"charptb-cpu", 24 * 140, 1250},
                  Level{"sotu-demo", 16 * 128, 192}}) {
    out.push_back({c.name, c.R, 4 * c.q, 2 * c.q, false, true});
    out.push_back({c.name, 4 * c.q, 2 * c.q, c.R, true, false});
    out.push_back({c.name, c.R, 2 * c.q, 4 * c.q, false, false});
  }
  return out;
}

double median_seconds(std::function<void()> const& f, int reps) {
  f();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto const t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void report(char const* library, Shape const& s, double seconds) {
  std::printf("%-22s %-12s %c%c  m %6ld  n %5ld  k %6ld  %9.3f ms  %7.1f GFLOP/s\n", library, s.config,
              s.ta ? 'T' : 'N', s.tb ? 'T' : 'N', s.m, s.n, s.k, seconds * 1e3, 2.0 * s.m * s.n * s.k / seconds / 1e9);
}

}  // namespace

int main() {
  int const threads = 2;
  int const reps = 5;
#if defined(CANDIDATE_OPENBLAS)
  openblas_set_num_threads(threads);
  std::printf("OpenBLAS core: %s\n", openblas_get_corename());
#elif defined(CANDIDATE_BLIS)
  bli_thread_set_num_threads(threads);
  std::printf("BLIS kernels: %s\n", bli_arch_string(bli_arch_query_id()));
#elif defined(CANDIDATE_EIGEN)
  Eigen::setNbThreads(threads);
#elif defined(CANDIDATE_ONEDNN)
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
#endif
  for (Shape const& s : shapes()) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<float> A(s.m * s.k), B(s.k * s.n), C(s.m * s.n);
    for (float& x : A) x = u(rng);
    for (float& x : B) x = u(rng);
    long const lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n;
#if defined(CANDIDATE_EIGEN)
    using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<M> a(A.data(), s.ta ? s.k : s.m, lda), b(B.data(), s.tb ? s.n : s.k, ldb), c(C.data(), s.m, s.n);
    report("Eigen", s, median_seconds([&] {
      if (s.tb) c.noalias() = a * b.transpose();
      else if (s.ta) c.noalias() = a.transpose() * b;
      else c.noalias() = a * b;
    }, reps));
#elif defined(CANDIDATE_OPENBLAS)
    report("OpenBLAS", s, median_seconds([&] {
      cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans, s.m, s.n, s.k,
                  1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(), s.n);
    }, reps));
#elif defined(CANDIDATE_BLIS)
    float one = 1, zero = 0;
    report("BLIS", s, median_seconds([&] {
      bli_sgemm(s.ta ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, s.tb ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, s.m, s.n, s.k,
                &one, A.data(), lda, 1, B.data(), ldb, 1, &zero, C.data(), s.n, 1);
    }, reps));
#elif defined(CANDIDATE_ONEDNN)
    using dims = dnnl::memory::dims;
    using dt = dnnl::memory::data_type;
    for (bool bf16 : {false, true}) {
      dims const as = s.ta ? dims{1, s.m} : dims{s.k, 1}, bs = s.tb ? dims{1, s.k} : dims{s.n, 1};
      dnnl::memory::desc a32({s.m, s.k}, dt::f32, as), b32({s.k, s.n}, dt::f32, bs), c32({s.m, s.n}, dt::f32, dims{s.n, 1});
      dnnl::memory::desc a16({s.m, s.k}, dt::bf16, as), b16({s.k, s.n}, dt::bf16, bs);
      std::optional<dnnl::matmul> made;
      try {
        made.emplace(dnnl::matmul::primitive_desc(dnnl::matmul::desc(bf16 ? a16 : a32, bf16 ? b16 : b32, c32), engine));
      } catch (dnnl::error const&) {  // bf16 products need AVX512-BF16 or AMX
        std::printf("%-22s %-12s %c%c  no kernel on this CPU\n", bf16 ? "oneDNN bf16 products" : "oneDNN fp32",
                    s.config, s.ta ? 'T' : 'N', s.tb ? 'T' : 'N');
        continue;
      }
      dnnl::matmul& mm = *made;
      dnnl::memory ma(a32, engine, A.data()), mb(b32, engine, B.data()), mc(c32, engine, C.data());
      dnnl::memory ra(a16, engine), rb(b16, engine);
      if (bf16) {  // operands rounded once, outside the timing: the product alone
        dnnl::reorder(ma, ra).execute(stream, ma, ra);
        dnnl::reorder(mb, rb).execute(stream, mb, rb);
      }
      report(bf16 ? "oneDNN bf16 products" : "oneDNN fp32", s, median_seconds([&] {
        mm.execute(stream, {{DNNL_ARG_SRC, bf16 ? ra : ma}, {DNNL_ARG_WEIGHTS, bf16 ? rb : mb}, {DNNL_ARG_DST, mc}});
        stream.wait();
      }, reps));
    }
#endif
  }
  return 0;
}
