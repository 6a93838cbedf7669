#pragma once
// Host GEMM in bfloat16 products with fp32 accumulation on Intel AMX tiles
// (AMX-BF16: Sapphire Rapids and later), for blas::MathMode::bf16 in float. The CPU's
// counterpart of TF32 on GPUs: the operands are rounded to bf16 (nearest even), every
// product and sum is exact in fp32, and C keeps fp32. A tile multiply does 16x16x32
// multiply-adds where an AVX-512 instruction does 16, which is why it pays.
//
// op(A) and op(B) are packed into the tiles' layouts (A: 16 rows x 32 k; B: 16 k-pairs
// x 16 columns x 2, "VNNI"), zero-padded to whole blocks, then each thread multiplies
// 32 x 32 blocks of C over the whole k range and applies alpha and beta on the way out.
// Only built by GCC and Clang for x86-64, and not seen by nvcc; elsewhere, and on CPUs
// or kernels without AMX, amx_available() is false and the caller keeps fp32.
#include <algorithm>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include <trellis/blas/detail/matrix_ref.hpp>
#include <trellis/blas/host_threads.hpp>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__) && \
    !defined(__NVCOMPILER) && defined(__linux__)
#define TRELLIS_HAVE_AMX_KERNEL 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace trellis::detail {

struct AmxGemm {};

#if defined(TRELLIS_HAVE_AMX_KERNEL)

namespace amx {

#define TRELLIS_AMX_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16")))

inline bool cpu_and_kernel_allow() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  bool const amx_bf16 = (d >> 22) & 1u, amx_tile = (d >> 24) & 1u;
  bool const avx512bw = (b >> 30) & 1u, avx512f = (b >> 16) & 1u;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  bool const avx512bf16 = (a >> 5) & 1u;
  if (!(amx_bf16 && amx_tile && avx512bw && avx512f && avx512bf16)) return false;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1u)) return false;  // OSXSAVE
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 0xe6u) != 0xe6u) return false;  // the OS saves the AVX-512 state
  // Linux hands out the tile data state per process, on request (ARCH_REQ_XCOMP_PERM).
  long constexpr arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
  return syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0;
}

struct alignas(64) TileConfig {
  std::uint8_t palette = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};

// Packed operand geometry: tiles of 512 bf16 (1 KiB), blocks of two tiles per 32 rows of
// op(A) or 32 columns of op(B).
inline std::size_t round_up(std::size_t x, std::size_t m) { return (x + m - 1) / m * m; }

// unique_ptr's delete[] of an over-aligned array needs the aligned operator delete[].
struct AlignedDelete {
  void operator()(std::uint16_t* p) const { ::operator delete[](p, std::align_val_t(64)); }
};
struct AlignedWorkspace {
  std::unique_ptr<std::uint16_t[], AlignedDelete> data;
  std::size_t size = 0;
  std::uint16_t* get(std::size_t n) {
    if (n > size) {
      data.reset(new (std::align_val_t(64)) std::uint16_t[n]);
      size = n;
    }
    return data.get();
  }
};

TRELLIS_AMX_TARGET inline __mmask16 column_mask(std::ptrdiff_t valid) {
  if (valid >= 16) return __mmask16(0xffff);
  if (valid <= 0) return __mmask16(0);
  return __mmask16((1u << valid) - 1u);
}

// Two fp32 rows of 16 -> 16 dwords, dword j = (bf16 lo[j], bf16 hi[j]).
TRELLIS_AMX_TARGET inline __m512i interleave_pairs(__m512 lo, __m512 hi) {
  __m512i const both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);  // lo in elements 0..15
  __m512i const idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                       23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(idx, both);
}

// 32 consecutive fp32 (k) -> 16 dwords, dword p = (bf16 k=2p, bf16 k=2p+1).
TRELLIS_AMX_TARGET inline __m512i consecutive_pairs(float const* x, std::ptrdiff_t valid) {
  __m512 const lo = _mm512_maskz_loadu_ps(column_mask(valid), x);
  __m512 const hi = _mm512_maskz_loadu_ps(column_mask(valid - 16), x + 16);
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/// The 16 dwords of v to first[0], first[step], ...: one store when they are adjacent.
TRELLIS_AMX_TARGET inline void store_dwords(std::uint32_t* first, std::size_t step, __m512i v) {
  if (step == 1) {
    _mm512_store_si512(first, v);
    return;
  }
  alignas(64) std::uint32_t lane[16];
  _mm512_store_si512(lane, v);
  for (std::size_t i = 0; i < 16; ++i) first[i * step] = lane[i];
}

/// Tile (r, kc) of a packed operand holds rows/columns 16r.. and k 32kc..; `rows` is
/// op(X)'s extent along M (for A) or N (for B), `inner` is K. `x_k_major` says whether
/// consecutive k are adjacent in memory (A not transposed, B transposed).
/// A tiles are row-major 16 x 16 dwords (row = m, dword = k pair); B tiles are
/// 16 x 16 dwords (row = k pair, dword = n). One routine packs both: for A, the dword
/// at (m, p) is the pair (x(m, 2p), x(m, 2p+1)); for B the same pair lands at (p, n).
TRELLIS_AMX_TARGET inline void pack_tile(MatrixRef<float const> x, bool x_k_major, bool pair_rows,
                                         std::size_t rows, std::size_t inner, std::size_t r,
                                         std::size_t kc, std::uint32_t* tile) {
  std::size_t const m0 = r * 16, k0 = kc * 32;
  std::ptrdiff_t const m_valid = std::ptrdiff_t(rows) - std::ptrdiff_t(m0);
  std::ptrdiff_t const k_valid = std::ptrdiff_t(inner) - std::ptrdiff_t(k0);
  // Dword (m, p) goes to tile[m * 16 + p] for A, tile[p * 16 + m] for B.
  std::size_t const m_step = pair_rows ? 16 : 1, p_step = pair_rows ? 1 : 16;
  if (x_k_major) {
    // Element (m, k) at x.data[m * ld + k]: one row of 32 k per m.
    for (std::size_t m = 0; m < 16; ++m) {
      __m512i v = _mm512_setzero_si512();
      if (std::ptrdiff_t(m) < m_valid && k_valid > 0)
        v = consecutive_pairs(x.data + (m0 + m) * x.ld + k0, k_valid);
      store_dwords(tile + m * m_step, p_step, v);
    }
  } else {
    // Element (m, k) at x.data[k * ld + m]: one row of 16 m per k.
    __mmask16 const mm = column_mask(m_valid);
    for (std::size_t p = 0; p < 16; ++p) {
      std::ptrdiff_t const k = std::ptrdiff_t(2 * p);
      __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
      if (k < k_valid) lo = _mm512_maskz_loadu_ps(mm, x.data + (k0 + k) * x.ld + m0);
      if (k + 1 < k_valid) hi = _mm512_maskz_loadu_ps(mm, x.data + (k0 + k + 1) * x.ld + m0);
      __m512i const v = interleave_pairs(lo, hi);  // dword m = pair (m, p)
      store_dwords(tile + p * p_step, m_step, v);
    }
  }
}

/// C block (32 x 32 at rows 32 bi, columns 32 bj) = alpha * sum_k A B + beta * C.
TRELLIS_AMX_TARGET inline void multiply_block(std::uint16_t const* pa, std::uint16_t const* pb,
                                              std::size_t kt, std::size_t bi, std::size_t bj,
                                              float alpha, float beta, MatrixRef<float> c) {
  std::uint16_t const* a0 = pa + (2 * bi) * kt * 512;
  std::uint16_t const* a1 = a0 + kt * 512;
  std::uint16_t const* b0 = pb + (2 * bj) * kt * 512;
  std::uint16_t const* b1 = b0 + kt * 512;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (std::size_t kc = 0; kc < kt; ++kc) {
    _tile_loadd(4, a0 + kc * 512, 64);
    _tile_loadd(6, b0 + kc * 512, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, b1 + kc * 512, 64);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a1 + kc * 512, 64);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) float acc[32 * 32];
  _tile_stored(0, acc, 128);
  _tile_stored(1, acc + 16, 128);
  _tile_stored(2, acc + 16 * 32, 128);
  _tile_stored(3, acc + 16 * 32 + 16, 128);
  std::size_t const i0 = bi * 32, j0 = bj * 32;
  std::size_t const ni = c.rows - i0 < 32 ? c.rows - i0 : 32;
  __m512 const va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (std::size_t i = 0; i < ni; ++i) {
    float* row = c.data + (i0 + i) * c.ld + j0;
    for (std::size_t h = 0; h < 2; ++h) {
      __mmask16 const mask = column_mask(std::ptrdiff_t(c.cols) - std::ptrdiff_t(j0 + 16 * h));
      if (!mask) break;
      __m512 v = _mm512_mul_ps(va, _mm512_load_ps(acc + i * 32 + 16 * h));
      if (beta != 0.0f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask, row + 16 * h), v);
      _mm512_mask_storeu_ps(row + 16 * h, mask, v);
    }
  }
}

TRELLIS_AMX_TARGET inline void configure_tiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  // GCC 12 does not see ldtilecfg read the 64 bytes and drops the stores above without
  // this barrier (then every tile has 0 rows and the first tile op faults).
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

TRELLIS_AMX_TARGET inline void release_tiles() { _tile_release(); }

/// f(i) for i in [0, count) on `threads` OpenMP threads, each taking one contiguous run
/// (so a thread's rows of A stay in its cache), or in order on the calling thread.
template <class F>
void on_host_threads(int threads, std::int64_t count, F const& f) {
#if defined(_OPENMP)
  if (threads > 1 && count > 1) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i) f(i);
    return;
  }
#endif
  (void)threads;
  for (std::int64_t i = 0; i < count; ++i) f(i);
}

}  // namespace amx

/// True where this process may run the AMX-BF16 kernel (checked once).
inline bool amx_available() {
  static bool const ok = amx::cpu_and_kernel_allow();
  return ok;
}

// Runs on the host GEMM threads (blas::host_gemm_threads), not through the space's
// kernels: on Kokkos::Serial the tiles then use every core the GEMMs are given, and a
// GEMM overlapped with the space's fused kernels (on the one thread inside the region)
// launches nothing there.
template <class Exec>
void gemm_impl(AmxGemm, Exec const& space, bool trans_a, bool trans_b, float alpha,
               MatrixRef<float const> a, MatrixRef<float const> b, float beta,
               MatrixRef<float> c, std::size_t inner) {
  if (c.rows == 0 || c.cols == 0) return;
  std::size_t const m = c.rows, n = c.cols;
  std::size_t const mb = amx::round_up(m, 32) / 32, nb = amx::round_up(n, 32) / 32;
  std::size_t const kt = amx::round_up(inner == 0 ? 1 : inner, 32) / 32;
  std::size_t const a_tiles = 2 * mb * kt, b_tiles = 2 * nb * kt;
  // One workspace per calling host thread, grown once and kept: no allocation in the
  // level loop after the first step.
  thread_local amx::AlignedWorkspace workspace;
  std::uint16_t* const pa = workspace.get((a_tiles + b_tiles) * 512);
  std::uint16_t* const pb = pa + a_tiles * 512;
  trellis::blas::detail::fence_before_host_gemm(space);
  int const threads = trellis::blas::host_gemm_threads(space);
  // op(A)(i, k) has k adjacent in memory unless A is transposed; op(B)(k, j) has k
  // adjacent only when B is transposed.
  amx::on_host_threads(threads, std::int64_t(a_tiles + b_tiles), [=](std::int64_t t) {
    bool const is_a = std::size_t(t) < a_tiles;
    std::size_t const local = is_a ? std::size_t(t) : std::size_t(t) - a_tiles;
    std::size_t const r = local / kt, kc = local % kt;
    auto* tile = reinterpret_cast<std::uint32_t*>((is_a ? pa : pb) + local * 512);
    if (is_a)
      amx::pack_tile(a, !trans_a, true, m, inner, r, kc, tile);
    else
      amx::pack_tile(b, trans_b, false, n, inner, r, kc, tile);
  });
  // Threads take contiguous runs of blocks, row-block major, so a thread's 32 rows of A
  // stay in L1 while it sweeps B.
  std::int64_t const blocks = std::int64_t(mb * nb);
  std::int64_t const chunks = std::min<std::int64_t>(blocks, threads);
  amx::on_host_threads(threads, chunks, [=](std::int64_t w) {
    std::int64_t const begin = blocks * w / chunks, end = blocks * (w + 1) / chunks;
    amx::configure_tiles();
    for (std::int64_t blk = begin; blk < end; ++blk)
      amx::multiply_block(pa, pb, kt, std::size_t(blk) / nb, std::size_t(blk) % nb, alpha, beta, c);
    amx::release_tiles();
  });
}

#else

inline bool amx_available() { return false; }

template <class Exec>
void gemm_impl(AmxGemm, Exec const&, bool, bool, float, MatrixRef<float const>,
               MatrixRef<float const>, float, MatrixRef<float>, std::size_t) {}

#endif

}  // namespace trellis::detail
