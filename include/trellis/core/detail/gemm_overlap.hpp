#pragma once
// Backward of one level on a one-thread host space whose GEMMs have more threads: the
// fused kernel of block k + 1 runs on the calling thread while the GEMMs of block k run
// on another, and a thread with nothing else to do takes GEMM work. On Kokkos::Serial
// the fused kernels are a large part of a step that the GEMMs' threads cannot share;
// overlapped, neither thread waits for the other.
//
// The blocks' dA live in two slots: the fused kernel of block k writes slot k % 2 once
// every GEMM of block k - 2 is done. Each block's GEMMs come in chunks of rows, a
// weight-gradient part (dW += dA^T S over the chunk) and a data-gradient part (the
// chunk's dS). The weight parts add into the same dW, so they run one at a time in
// chunk order whichever thread takes them: the sum, and so the bits, do not depend on
// the schedule. The data parts write disjoint rows.
#include <Kokkos_Core.hpp>

#include <atomic>
#include <exception>
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

/// fused(k): block k's fused kernel (calling thread only; slot k % 2). weights(k, c),
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
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::atomic_flag error_taken = ATOMIC_FLAG_INIT;

  struct Failed {};
  auto const wait = [&](auto const& until) {
    while (!until()) {
      if (failed.load(std::memory_order_acquire)) throw Failed{};
    }
  };
  // Task n: chunk (n % per_block) / 2 of block n / per_block; even: weights, odd: data.
  auto const run = [&](long n) {
    long const k = n / per_block, t = n % per_block;
    int const c = int(t / 2);
    if (t % 2 == 0) {
      long const order = k * chunks + c;
      wait([&] { return weights_done.load(std::memory_order_acquire) == order; });
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
  auto const fail = [&](std::exception_ptr e) {
    if (e && !error_taken.test_and_set()) error = e;
    failed.store(true, std::memory_order_release);
  };

#pragma omp parallel num_threads(2)
  {
    if (omp_get_thread_num() == 0) {
      try {
        for (long k = 0; k < blocks; ++k) {
          if (k >= 2)
            while (!block_done(k - 2)) {
              help(k - 1);
              if (failed.load(std::memory_order_acquire)) throw Failed{};
            }
          fused(k);
          ready.store(k, std::memory_order_release);
          help(k - 1);
        }
        help(blocks);
        for (long k = 0; k < blocks; ++k) wait([&] { return block_done(k); });
      } catch (Failed const&) {
      } catch (...) {
        fail(std::current_exception());
      }
      // Claim every task left so that the other thread stops.
      next.store(tasks, std::memory_order_release);
    } else if (omp_get_thread_num() == 1) {
      // The Views' reference counts are the calling thread's alone (on a Serial-only
      // Kokkos they are not atomic): this thread's copies do not count.
      Kokkos::Impl::SharedAllocationRecord<void, void>::tracking_disable();
      try {
        for (;;) {
          long const n = next.fetch_add(1, std::memory_order_acq_rel);
          if (n >= tasks) break;
          wait([&] { return ready.load(std::memory_order_acquire) >= n / per_block; });
          run(n);
        }
      } catch (Failed const&) {
      } catch (...) {
        fail(std::current_exception());
      }
      Kokkos::Impl::SharedAllocationRecord<void, void>::tracking_enable();
    }
  }
  if (error) std::rethrow_exception(error);
#else
  (void)per_block, (void)tasks;
  run_in_order();
#endif
}

}  // namespace trellis::detail
