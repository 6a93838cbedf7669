#pragma once
// Sequential image classification as a Trainer task: a SequenceClassifier reads an
// image row by row (rows of `cols` values) or pixel by pixel (one value a step), the
// pixels optionally in a fixed permuted order. The metric is accuracy.
//
// Over a group of ranks (a Communicator) each rank takes its contiguous part of every
// training batch and of each split it scores; masks are keyed by global row and
// gradients averaged over the ranks, so that the figures are one process's.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <trellis/data/image_set.hpp>
#include <trellis/errors.hpp>
#include <trellis/io/model_files.hpp>
#include <trellis/nn/sequence_classifier.hpp>
#include <trellis/train/communicator.hpp>
#include <trellis/train/gradient_reducer.hpp>
#include <trellis/train/optimizers.hpp>
#include <trellis/train/step_result.hpp>

namespace trellis {

enum class ImageSequence { rows, pixels };

struct ClassifierTaskOptions {
  SequenceClassifierConfig model;   ///< nclasses is taken from the data
  OptimizerKind optimizer = OptimizerKind::adam;
  OptimizerOptions optimizer_options;
  ImageSequence sequence = ImageSequence::rows;
  std::vector<std::int64_t> permutation;  ///< pixel order (empty: natural); kept in checkpoints
  double clip = 0;                  ///< global gradient-norm clip (0: off)
  long batch_size = 64;             ///< over all ranks
  long eval_batch_size = 500;
  long valid_images = 0;            ///< validate() scores this many valid images (0: all)
  std::uint64_t seed = 1111;        ///< the model's initialisation and the epochs' shuffles
  std::size_t gradient_bucket_bytes = std::size_t(25) << 20;  ///< data-parallel: the size of a summed bucket
};

/// A fixed random pixel order for permuted tasks, from `seed`.
inline std::vector<std::int64_t> pixel_permutation(long pixels, std::uint64_t seed) {
  std::vector<std::int64_t> p(static_cast<std::size_t>(pixels));
  std::iota(p.begin(), p.end(), 0);
  std::mt19937_64 rng{seed};
  std::shuffle(p.begin(), p.end(), rng);
  return p;
}

/// Policies: the core's weight tying, structure and activation (TrellisNetwork's).
template <class ExecutionSpace, class Scalar, class... Policies>
class ClassifierTask {
 public:
  using Model = SequenceClassifier<ExecutionSpace, Scalar, Policies...>;
  using memory_space = typename ExecutionSpace::memory_space;
  using labels_view = Kokkos::View<std::int32_t*, Kokkos::LayoutRight, memory_space>;

  /// `comm`: the ranks that share the work (this process alone by default).
  ClassifierTask(ExecutionSpace const& space, ClassifierTaskOptions const& options, data::ImageSplits splits,
                 Communicator& comm = single_process())
      : space_(space), comm_(&comm), splits_(std::move(splits)), options_(checked(options, splits_)),
        model_(space, options_.model, options_.seed),
        optimizer_(options_.optimizer, model_.parameters(), options_.optimizer_options),
        shard_(batch_shard(options_.batch_size, comm, "trellis::ClassifierTask: batch_size")),
        reducer_(comm, model_.parameters(), Model::gradient_stages(), options_.gradient_bucket_bytes) {
    order_.resize(std::size_t(splits_.train.count));
  }

  std::string metric() const { return "accuracy"; }
  std::string unit() const { return "sequences"; }
  bool lower_is_better() const { return false; }
  long batches_per_epoch() const { return splits_.train.count / options_.batch_size; }
  Model& model() { return model_; }
  Optimizer<ExecutionSpace, Scalar>& optimizer() { return optimizer_; }
  Communicator& communicator() { return *comm_; }
  /// This rank's rows of the training batch.
  Shard shard() const { return shard_; }

  /// A fresh shuffle per epoch from (seed, epoch): resuming reproduces it.
  void start_epoch(long epoch) {
    std::iota(order_.begin(), order_.end(), 0L);
    std::mt19937_64 shuffle(options_.seed * 1000003u + std::uint64_t(epoch));
    std::shuffle(order_.begin(), order_.end(), shuffle);
  }
  void resume_epoch(long epoch) { start_epoch(epoch); }

  /// One optimiser step on this rank's part of the batch; the result is this rank's
  /// (the trainer combines the ranks').
  StepResult step(long batch_index, DropoutKey const& key) {
    auto const first = order_.begin() + batch_index * options_.batch_size + shard_.first;
    std::vector<long> idx(first, first + shard_.count);
    // Not a structured binding: clang before 16 cannot capture one in the lambda below.
    auto const batch = gather(splits_.train, idx);
    auto const& x = batch.first;
    auto const& labels = batch.second;
    auto const masks = model_.draw_masks(long(x.extent(0)), shard_.count, key.offset(shard_.first));
    StageFinal on_stage_final;
    if (reducer_.active()) on_stage_final = [&](int stage) { reducer_.stage_final(space_, stage); };
    auto const step = optimizer_step(
        space_, model_, optimizer_, options_.clip,
        [&] { return model_.train_step(space_, x, labels, masks, on_stage_final); },
        [&] { reducer_.finish(space_); });
    auto const& r = step.result;
    return StepResult{r.total, r.nll_sum, r.count, r.correct, step.non_finite};
  }

  /// Accuracy on a split ("train", "valid", "test"); its first `limit` images when limit > 0.
  double evaluate(std::string const& split, long limit = 0) {
    if (split != "train" && split != "valid" && split != "test")
      detail::fail("trellis::ClassifierTask::evaluate: split '", split, "': expected train, valid or test");
    auto const& set = split == "test" ? splits_.test : split == "valid" ? splits_.valid : splits_.train;
    long const n = limit > 0 ? std::min(limit, set.count) : set.count;
    // Every rank scores its contiguous part of the images; counts add up exactly.
    auto const mine = even_shard(n, comm_->rank(), comm_->size());
    std::int64_t correct = 0;
    for (long start = mine.first; start < mine.first + mine.count; start += options_.eval_batch_size) {
      std::vector<long> idx;
      for (long i = start; i < std::min(mine.first + mine.count, start + options_.eval_batch_size); ++i)
        idx.push_back(i);
      auto const [x, labels] = gather(set, idx);
      correct += model_.evaluate(space_, x, labels).correct;
    }
    comm_->sum(&correct, 1, Element::i64);
    return double(correct) / double(n);
  }
  double validate() { return evaluate("valid", options_.valid_images); }
  double train_metric(StepResult const& window) const {
    return double(window.correct) / double(std::max(1L, window.count));
  }

  void save(safetensors::File& f, safetensors::DType dtype) {
    write_sequence_classifier(f, model_, dtype);
    if (!options_.permutation.empty()) {
      std::vector<double> p(options_.permutation.begin(), options_.permutation.end());
      f.tensors["permutation"] =
          safetensors::Tensor::from_double(safetensors::DType::I64, {std::int64_t(p.size())}, p);
    }
  }
  /// `also`: what the caller reads from the same file itself.
  void load(safetensors::File const& f, std::string const& path, std::vector<std::string> also) {
    also.push_back("permutation");
    read_sequence_classifier(f, path, model_, also);
    if (!options_.permutation.empty()) {
      auto const v = f.at(path, "permutation").to_double();
      if (std::vector<std::int64_t>(v.begin(), v.end()) != options_.permutation)
        throw file_error(path + ": tensor 'permutation' differs from the task's pixel order (another seed)");
    }
  }

 private:
  static ClassifierTaskOptions checked(ClassifierTaskOptions o, data::ImageSplits const& splits) {
    char const* call = "trellis::ClassifierTask";
    auto const& set = splits.train;
    long const pixels = long(set.rows) * set.cols;
    long const want = o.sequence == ImageSequence::rows ? set.cols : 1;
    if (o.model.core.ninp != want)
      detail::fail(call, ": ninp ", o.model.core.ninp, ": the images (", set.rows, " x ", set.cols, ") read ",
                   o.sequence == ImageSequence::rows ? "by rows" : "by pixels", " feed ", want, " value(s) per step");
    if (!o.permutation.empty() && long(o.permutation.size()) != pixels)
      detail::fail(call, ": the permutation has ", o.permutation.size(), " entries; the images have ", pixels, " pixels");
    if (o.batch_size < 1 || o.eval_batch_size < 1)
      detail::fail(call, ": batch_size ", o.batch_size, " and eval_batch_size ", o.eval_batch_size, " must be at least 1");
    if (o.batch_size > set.count)
      detail::fail(call, ": batch_size ", o.batch_size, " exceeds the ", set.count, " training images");
    o.model.nclasses = set.nclasses;
    return o;
  }

  std::pair<typename Model::sequence, labels_view> gather(data::ImageSet const& set, std::vector<long> const& idx) {
    bool const rows = options_.sequence == ImageSequence::rows;
    auto const& permutation = options_.permutation;
    long const N = long(idx.size()), pixels = long(set.rows) * set.cols;
    long const L = rows ? set.rows : pixels, C = rows ? set.cols : 1;
    typename Model::sequence x(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string("trellis::ClassifierTask::x")),
                               L, N, C);
    labels_view labels(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string("trellis::ClassifierTask::labels")), N);
    auto hx = Kokkos::create_mirror_view(x);
    auto hl = Kokkos::create_mirror_view(labels);
    for (long n = 0; n < N; ++n) {
      float const* img = set.pixels.data() + idx[std::size_t(n)] * pixels;
      hl(n) = set.labels[std::size_t(idx[std::size_t(n)])];
      for (long t = 0; t < L; ++t)
        for (long c = 0; c < C; ++c) {
          long const pixel = t * C + c;
          hx(t, n, c) = Scalar(img[permutation.empty() ? pixel : permutation[std::size_t(pixel)]]);
        }
    }
    Kokkos::deep_copy(x, hx);
    Kokkos::deep_copy(labels, hl);
    return {x, labels};
  }

  ExecutionSpace space_;
  Communicator* comm_;
  data::ImageSplits splits_;
  ClassifierTaskOptions options_;
  Model model_;
  Optimizer<ExecutionSpace, Scalar> optimizer_;
  Shard shard_;
  GradientReducer<ExecutionSpace, Scalar> reducer_;
  std::vector<long> order_;
};

}  // namespace trellis
