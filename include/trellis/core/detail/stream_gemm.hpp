#pragma once
// A = S W^T for the few rows of a streaming step on host spaces, from W^T (K x M) kept
// by the stream. A one-row product is bound by reading W, and a whole kernel does not
// fit one core's cache; so the columns of W^T (the outputs) are split statically over
// the space's threads, and each thread reads the same share at every level and every
// step, from its own cache. Per tile of outputs the R rows accumulate in registers,
// k by k (no horizontal sums; each W^T row is read once for all R rows).
#include <Kokkos_Core.hpp>

#include <algorithm>

#include <trellis/errors.hpp>

namespace trellis::detail {

/// Which outputs (columns of W^T and of A) a product takes: in each of `groups` groups
/// of `stride` columns, columns [first, first + count). The default takes them all.
struct RowBlocks {
  long groups = 1, stride = 0, first = 0, count = -1;
};

/// a[n][i] = sum_k s[n][k] wt[k][i] for n < R, i in [from, to), k in order.
template <int R, class Scalar>
void rows_times(Scalar const* s, long lds, Scalar const* wt, long ldwt, Scalar* a, long lda, long K, long from,
                long to) {
  constexpr int tile = 256 / int(sizeof(Scalar));  // four 64-byte vectors of outputs
  long i0 = from;
  for (; i0 + tile <= to; i0 += tile) {
    Scalar acc[R][tile] = {};
    for (long k = 0; k < K; ++k) {
      Scalar const* wk = wt + k * ldwt + i0;
      for (int n = 0; n < R; ++n) {
        Scalar const sv = s[n * lds + k];
        for (int l = 0; l < tile; ++l) acc[n][l] += sv * wk[l];
      }
    }
    for (int n = 0; n < R; ++n)
      for (int l = 0; l < tile; ++l) a[n * lda + i0 + l] = acc[n][l];
  }
  for (long i = i0; i < to; ++i)
    for (int n = 0; n < R; ++n) {
      Scalar sum = 0;
      for (long k = 0; k < K; ++k) sum += s[n * lds + k] * wt[k * ldwt + i];
      a[n * lda + i] = sum;
    }
}

template <int R = 8, class Scalar>
void rows_times_upto(long N, Scalar const* s, long lds, Scalar const* wt, long ldwt, Scalar* a, long lda, long K,
                     long from, long to) {
  if constexpr (R > 1) {
    if (N < R) return rows_times_upto<R - 1>(N, s, lds, wt, ldwt, a, lda, K, from, to);
  }
  rows_times<R>(s, lds, wt, ldwt, a, lda, K, from, to);
}

/// A (N x M) = S (N x K) WT (K x M) on the outputs `blocks` names, N <= 8 at a time.
template <class Exec, class SV, class WV, class AV>
void few_rows_times(char const* label, Exec const& space, SV const& S, WV const& WT, AV const& A,
                    RowBlocks blocks = {}) {
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Exec::memory_space>::accessible) {
    using Scalar = typename AV::non_const_value_type;
    long const N = long(S.extent(0)), K = long(S.extent(1));
    if (blocks.count < 0) blocks = {1, long(WT.extent(1)), 0, long(WT.extent(1))};
    long const outputs = blocks.groups * blocks.count;
    Scalar const* s = S.data();
    Scalar const* wt = WT.data();
    Scalar* a = A.data();
    long const lds = long(S.stride(0)), ldwt = long(WT.stride(0)), lda = long(A.stride(0));
    constexpr long tile = 256 / long(sizeof(Scalar));
    long const parts = std::max<long>(1, std::min<long>(long(space.concurrency()), outputs / (2 * tile)));
    space.fence();
    Kokkos::parallel_for(
        label, Kokkos::RangePolicy<Exec, Kokkos::Schedule<Kokkos::Static>>(space, 0, parts), [=](long part) {
          // Split on whole tiles, so that only the last part has a ragged end.
          long const tiles = (outputs + tile - 1) / tile;
          long const lo = std::min(outputs, tiles * part / parts * tile);
          long const hi = std::min(outputs, tiles * (part + 1) / parts * tile);
          for (long g = lo / blocks.count; g < blocks.groups && g * blocks.count < hi; ++g) {
            long const from = std::max(lo, g * blocks.count), to = std::min(hi, (g + 1) * blocks.count);
            long const column = g * blocks.stride + blocks.first + (from - g * blocks.count);
            for (long n = 0; n < N; n += 8)
              rows_times_upto(std::min<long>(8, N - n), s + n * lds, lds, wt, ldwt, a + n * lda, lda, K, column,
                              column + (to - from));
          }
        });
  } else {
    (void)label, (void)space, (void)S, (void)WT, (void)A, (void)blocks;
    fail("trellis::detail::few_rows_times: host spaces only");
  }
}

}  // namespace trellis::detail
