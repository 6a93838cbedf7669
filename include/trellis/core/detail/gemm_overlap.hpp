#pragma once
// A level's GEMMs on a second thread while the fused kernels run on a one-thread host
// space whose GEMMs have more threads. On Kokkos::Serial the fused kernels are a large
// part of a step that the GEMMs' threads cannot share; overlapped, neither thread
// waits long for the other, and a thread with nothing else to do takes GEMM work.
//
// Forward (gemms_ahead): a block's hidden GEMM reads only history rows that no fused
// kernel of the level writes before that block's own, so the GEMMs run ahead and the
// fused kernel of block k waits for block k's GEMM alone.
//
// Backward (overlapped_blocks): the fused kernel of block k + 1 runs while block k's
// GEMMs run. The blocks' dA live in two slots: the fused kernel of block k writes slot
// k % 2 once every GEMM of block k - 2 is done. Each block's GEMMs come in chunks of
// rows, a weight-gradient part (dW += dA^T S over the chunk) and a data-gradient part
// (the chunk's dS). The weight parts add into the same dW, so they run one at a time in
// chunk order whichever thread takes them: the sum, and so the bits, do not depend on
// the schedule. The data parts write disjoint rows.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <atomic>
#include <exception>
#include <utility>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace trellis::detail {

/// Whether this build can overlap (it has OpenMP for the second thread).
inline constexpr bool gemm_overlap_supported =
#if defined(_OPENMP)
    true;
#else
    false;
#endif

/// Rows [first, second) of chunk c of block k, for blocks of `block` rows of R.
inline std::pair<long, long> block_chunk(long R, long block, long k, int c, int chunks) {
  long const r0 = k * block, r1 = std::min(R, r0 + block);
  return {r0 + c * (r1 - r0) / chunks, r0 + (c + 1) * (r1 - r0) / chunks};
}

/// What the two threads of an overlap share about failure: the first exception is
/// kept and rethrown by the caller; the other thread stops waiting once it is set.
class OverlapFailure {
 public:
  struct Stop {};
  void check() const {
    if (failed_.load(std::memory_order_acquire)) throw Stop{};
  }
  template <class Until>
  void wait(Until const& until) const {
    while (!until()) check();
  }
  /// Runs body; a failure in it is kept, and ends the other thread's waits.
  template <class Body>
  void guard(Body const& body) {
    try {
      body();
    } catch (Stop const&) {
    } catch (...) {
      if (!taken_.test_and_set()) error_ = std::current_exception();
      failed_.store(true, std::memory_order_release);
    }
  }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::atomic_flag taken_ = ATOMIC_FLAG_INIT;
  std::exception_ptr error_;
};

/// On the second thread: the Views' reference counts are the calling thread's alone
/// (on a Serial-only Kokkos they are not atomic), so this thread's copies do not count.
struct UntrackedViews {
  UntrackedViews() { Kokkos::Impl::SharedAllocationRecord<void, void>::tracking_disable(); }
  ~UntrackedViews() { Kokkos::Impl::SharedAllocationRecord<void, void>::tracking_enable(); }
  UntrackedViews(UntrackedViews const&) = delete;
  UntrackedViews& operator=(UntrackedViews const&) = delete;
};

/// Forward: gemm(k, c), chunk c of block k's GEMM, on either thread; fused(k), block
/// k's kernels once its GEMM is done (calling thread only, in block order). Without
/// OpenMP, or for one block, in order.
template <class Gemm, class Fused>
void gemms_ahead(long blocks, int chunks, Gemm const& gemm, Fused const& fused) {
  long const tasks = blocks * chunks;
  auto const run_in_order = [&] {
    for (long k = 0; k < blocks; ++k) {
      for (int c = 0; c < chunks; ++c) gemm(k, c);
      fused(k);
    }
  };
#if defined(_OPENMP)
  if (blocks < 2) return run_in_order();
  std::atomic<long> next{0};  // the next chunk to claim, in order
  std::vector<std::atomic<int>> done(static_cast<std::size_t>(blocks));  // chunks done per block
  for (auto& d : done) d.store(0);
  OverlapFailure failure;
  auto const run = [&](long n) {
    gemm(n / chunks, int(n % chunks));
    done[std::size_t(n / chunks)].fetch_add(1, std::memory_order_acq_rel);
  };
#pragma omp parallel num_threads(2)
  {
    if (omp_get_thread_num() == 0) {
      failure.guard([&] {
        for (long k = 0; k < blocks; ++k) {
          while (done[std::size_t(k)].load(std::memory_order_acquire) < chunks) {
            long n = next.load(std::memory_order_acquire);
            if (n < tasks && n / chunks <= k && next.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel))
              run(n);
            failure.check();
          }
          fused(k);
        }
      });
      next.store(tasks, std::memory_order_release);  // the other thread stops
    } else if (omp_get_thread_num() == 1) {
      UntrackedViews const untracked;
      failure.guard([&] {
        for (long n; (n = next.fetch_add(1, std::memory_order_acq_rel)) < tasks;) run(n);
      });
    }
  }
  failure.rethrow();
#else
  (void)tasks;
  run_in_order();
#endif
}

/// Backward: fused(k), block k's fused kernel (calling thread only; slot k % 2). weights(k, c),
/// data(k, c): chunk c of block k's GEMMs. Without OpenMP, or for one block, in order.
template <class Fused, class Weights, class Data>
void overlapped_blocks(long blocks, int chunks, Fused const& fused, Weights const& weights, Data const& data) {
  long const per_block = 2L * chunks, tasks = blocks * per_block;
  auto const run_in_order = [&] {
    for (long k = 0; k < blocks; ++k) {
      fused(k);
      for (int c = 0; c < chunks; ++c) weights(k, c), data(k, c);
    }
  };
#if defined(_OPENMP)
  if (blocks < 2) return run_in_order();
  std::atomic<long> next{0};           // the next task to claim, in order
  std::atomic<long> ready{-1};         // the last block whose fused kernel is done
  std::atomic<long> weights_done{0};   // weight parts done, in chunk order
  std::vector<std::atomic<int>> done(static_cast<std::size_t>(blocks));  // tasks done per block
  for (auto& d : done) d.store(0);
  OverlapFailure failure;
  // Task n: chunk (n % per_block) / 2 of block n / per_block; even: weights, odd: data.
  auto const run = [&](long n) {
    long const k = n / per_block, t = n % per_block;
    int const c = int(t / 2);
    if (t % 2 == 0) {
      long const order = k * chunks + c;
      failure.wait([&] { return weights_done.load(std::memory_order_acquire) == order; });
      weights(k, c);
      weights_done.store(order + 1, std::memory_order_release);
    } else {
      data(k, c);
    }
    done[std::size_t(k)].fetch_add(1, std::memory_order_acq_rel);
  };
  // Takes tasks of blocks up to `last` while there are any.
  auto const help = [&](long last) {
    for (;;) {
      long n = next.load(std::memory_order_acquire);
      if (n >= tasks || n / per_block > last) return;
      if (next.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel)) run(n);
    }
  };
  auto const block_done = [&](long k) { return done[std::size_t(k)].load(std::memory_order_acquire) == per_block; };

#pragma omp parallel num_threads(2)
  {
    if (omp_get_thread_num() == 0) {
      failure.guard([&] {
        for (long k = 0; k < blocks; ++k) {
          if (k >= 2)
            while (!block_done(k - 2)) {
              help(k - 1);
              failure.check();
            }
          fused(k);
          ready.store(k, std::memory_order_release);
          help(k - 1);
        }
        help(blocks);
        for (long k = 0; k < blocks; ++k) failure.wait([&] { return block_done(k); });
      });
      next.store(tasks, std::memory_order_release);  // the other thread stops
    } else if (omp_get_thread_num() == 1) {
      UntrackedViews const untracked;
      failure.guard([&] {
        for (;;) {
          long const n = next.fetch_add(1, std::memory_order_acq_rel);
          if (n >= tasks) break;
          failure.wait([&] { return ready.load(std::memory_order_acquire) >= n / per_block; });
          run(n);
        }
      });
    }
  }
  failure.rethrow();
#else
  (void)per_block, (void)tasks;
  run_in_order();
#endif
}

}  // namespace trellis::detail
