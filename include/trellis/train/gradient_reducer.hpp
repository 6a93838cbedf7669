#pragma once
// The data-parallel gradient: every rank's gradients summed over the group and divided
// by its size, in buckets whose sums start as soon as backward has finished their
// gradients, and are waited on before clipping and the optimiser step.
//
// A model's backward finishes its gradients in stages (the language model: the decoder
// bias and the mixture of softmaxes, then the core, then the embedding; the classifier:
// the linear head, then the core). The reducer lays the gradients end to end in that
// order and cuts them into buckets of at most bucket_bytes (a tensor may span two); a
// bucket's sum starts when the last stage it holds is final.
#include <Kokkos_Core.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <trellis/detail/views.hpp>
#include <trellis/errors.hpp>
#include <trellis/nn/parameter_list.hpp>
#include <trellis/train/communicator.hpp>

namespace trellis {

template <class ExecutionSpace, class Scalar>
class GradientReducer {
 public:
  using memory_space = typename ExecutionSpace::memory_space;
  using flat_view = Kokkos::View<Scalar*, Kokkos::LayoutRight, memory_space>;
  static constexpr std::size_t default_bucket_bytes = std::size_t(25) << 20;

  GradientReducer() = default;
  GradientReducer(Communicator& comm, ParameterList<memory_space, Scalar> params, GradientStages const& stages,
                  std::size_t bucket_bytes = default_bucket_bytes)
      : comm_(&comm), params_(std::move(params)) {
    if (bucket_bytes < sizeof(Scalar))
      detail::fail("trellis::GradientReducer: bucket_bytes ", bucket_bytes, " holds no gradient");
    if (comm.size() == 1) return;  // nothing to sum
    nstages_ = int(stages.size()) + 1;  // a last stage takes what no prefix names
    std::vector<int> stage_of(params_.size(), nstages_ - 1);
    for (std::size_t i = 0; i < params_.size(); ++i)
      for (int s = 0; s < int(stages.size()) && stage_of[i] == nstages_ - 1; ++s)
        for (auto const& prefix : stages[std::size_t(s)])
          if (params_[i].name.rfind(prefix, 0) == 0) stage_of[i] = s;
    long const per_bucket = long(bucket_bytes / sizeof(Scalar));
    if (per_bucket > 2147483647L)
      detail::fail("trellis::GradientReducer: bucket_bytes ", bucket_bytes, " holds more values than one MPI message takes");
    for (int s = 0; s < nstages_; ++s)
      for (std::size_t i = 0; i < params_.size(); ++i) {
        if (stage_of[i] != s) continue;
        long const n = long(params_[i].grad.extent(0));
        for (long from = 0; from < n;) {
          if (buckets_.empty() || buckets_.back().length == per_bucket) buckets_.push_back(Bucket{});
          auto& b = buckets_.back();
          long const take = std::min(n - from, per_bucket - b.length);
          b.pieces.push_back(Piece{i, from, b.length, take});
          b.length += take;
          b.stage = s;
          from += take;
        }
      }
    for (auto& b : buckets_) {
      b.buffer = flat_view(detail::uninitialized("trellis::GradientReducer::", "bucket"), b.length);
      if (!host_accessible)  // sums run on host memory (Communicator::start_sum)
        b.staging = Kokkos::View<Scalar*, Kokkos::HostSpace>(
            detail::uninitialized("trellis::GradientReducer::", "staging"), b.length);
    }
  }

  bool active() const { return comm_ && comm_->size() > 1; }
  std::size_t buckets() const { return buckets_.size(); }
  std::size_t bucket_length(std::size_t b) const { return std::size_t(buckets_[b].length); }
  /// Buckets whose sums are in flight (started, not yet waited on).
  std::size_t in_flight() const {
    std::size_t n = 0;
    for (auto const& b : buckets_) n += b.pending ? 1 : 0;
    return n;
  }

  /// Backward has finished the gradients of `stage` (and of every stage before it):
  /// the sums of the buckets they complete start now.
  void stage_final(ExecutionSpace const& space, int stage) {
    if (!active()) return;
    for (auto& b : buckets_)
      if (!b.pending && b.stage <= stage) start(space, b);
  }

  /// Waits on every sum (starting those not started) and leaves each gradient the
  /// group's mean.
  void finish(ExecutionSpace const& space) {
    if (!active()) return;
    for (auto& b : buckets_)
      if (!b.pending) start(space, b);
    Scalar const inv = Scalar(1.0 / double(comm_->size()));
    for (auto& b : buckets_) {
      b.pending->wait();
      b.pending.reset();
      if (b.staging.extent(0) > 0) Kokkos::deep_copy(space, b.buffer, b.staging);
      for (auto const& piece : b.pieces)
        copy(space, "trellis::GradientReducer::mean", b.buffer, piece.bucket_offset, params_[piece.param].grad,
             piece.param_offset, piece.length, inv);
    }
  }

 private:
  struct Bucket;

 public:  // nvcc: a function holding a __device__ lambda may not be private; internal all the same
  /// to(to_offset + i) = scale * from(from_offset + i) for i < n.
  static void copy(ExecutionSpace const& space, char const* label, flat_view const& from, long from_offset,
                   flat_view const& to, long to_offset, long n, Scalar scale) {
    Kokkos::parallel_for(
        label, Kokkos::RangePolicy<ExecutionSpace>(space, 0, n),
        KOKKOS_LAMBDA(long i) { to(to_offset + i) = scale * from(from_offset + i); });
  }

  void start(ExecutionSpace const& space, Bucket& b) {
    for (auto const& piece : b.pieces)
      copy(space, "trellis::GradientReducer::pack", params_[piece.param].grad, piece.param_offset, b.buffer,
           piece.bucket_offset, piece.length, Scalar(1));
    Scalar* data = b.buffer.data();
    if (b.staging.extent(0) > 0) {
      Kokkos::deep_copy(space, b.staging, b.buffer);
      data = b.staging.data();
    }
    space.fence();  // the group reads the buffer from outside the execution space
    b.pending = comm_->start_sum(data, std::size_t(b.length), element_of<Scalar>());
  }


 private:
  static constexpr bool host_accessible =
      Kokkos::SpaceAccessibility<Kokkos::HostSpace, memory_space>::accessible;

  struct Piece {
    std::size_t param;
    long param_offset, bucket_offset, length;
  };
  struct Bucket {
    std::vector<Piece> pieces;
    long length = 0;
    int stage = 0;
    flat_view buffer;
    Kokkos::View<Scalar*, Kokkos::HostSpace> staging;
    std::unique_ptr<Communicator::Pending> pending;
  };

  Communicator* comm_ = nullptr;
  ParameterList<memory_space, Scalar> params_;
  int nstages_ = 0;
  std::vector<Bucket> buckets_;
};

}  // namespace trellis
