#pragma once
// Language modelling as a Trainer task: a LanguageModel over a tokenised corpus, either
// as one stream cut into consecutive segments that carry the state (character level:
// every position scored) or as windows whose first `nlevels` positions only warm the
// state up (word level). The metric is bits per character or perplexity.
//
// Over a group of ranks (a Communicator) each rank holds its contiguous rows of the
// training streams, with their carried state, and of the evaluation streams; masks
// are keyed by global row, gradients averaged over the ranks in buckets, and
// evaluation sums every rank's NLL: the figures of one process with the same batch.
#include <Kokkos_Core.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <trellis/data/batching.hpp>
#include <trellis/data/text_corpus.hpp>
#include <trellis/errors.hpp>
#include <trellis/io/model_files.hpp>
#include <trellis/io/tensor_io.hpp>
#include <trellis/nn/language_model.hpp>
#include <trellis/train/communicator.hpp>
#include <trellis/train/gradient_reducer.hpp>
#include <trellis/train/optimizers.hpp>
#include <trellis/train/step_result.hpp>

namespace trellis {

struct LanguageTaskOptions {
  LanguageModelConfig model;
  OptimizerKind optimizer = OptimizerKind::adam;
  OptimizerOptions optimizer_options;
  double clip = 0;            ///< global gradient-norm clip (0: off)
  long batch_size = 16;       ///< rows of the training stream (over all ranks)
  long seq_len = 128;         ///< positions per training segment
  long eval_batch_size = 32;  ///< rows of evaluation streams
  long valid_tokens = 0;      ///< validate() scores this many tokens of the valid split (0: all)
  std::uint64_t seed = 1111;  ///< the model's initialisation
  std::size_t gradient_bucket_bytes = std::size_t(25) << 20;  ///< data-parallel: the size of a summed bucket
};

/// Policies: the core's weight tying, structure and activation (TrellisNetwork's).
template <class ExecutionSpace, class Scalar, class... Policies>
class LanguageTask {
 public:
  using Model = LanguageModel<ExecutionSpace, Scalar, Policies...>;
  using memory_space = typename ExecutionSpace::memory_space;
  using tokens_view = Kokkos::View<std::int32_t**, Kokkos::LayoutRight, memory_space>;

  /// `comm`: the ranks that share the work (this process alone by default).
  LanguageTask(ExecutionSpace const& space, LanguageTaskOptions const& options, data::Corpus corpus,
               Communicator& comm = single_process())
      : space_(space), comm_(&comm), corpus_(std::move(corpus)), options_(with_vocabulary(options, corpus_)),
        model_(space, options_.model, options_.seed),
        optimizer_(options_.optimizer, model_.parameters(), options_.optimizer_options) {
    char const* call = "trellis::LanguageTask";
    if (options_.batch_size < 1 || options_.eval_batch_size < 1 || options_.seq_len < 1)
      detail::fail(call, ": batch_size ", options_.batch_size, ", eval_batch_size ", options_.eval_batch_size,
                   " and seq_len ", options_.seq_len, " must be at least 1");
    history_ = corpus_.level == data::TokenLevel::words ? options_.model.core.nlevels : 0;
    if (history_ >= options_.seq_len)
      detail::fail(call, ": seq_len ", options_.seq_len, ": word-level windows score the positions after the first nlevels (",
                   history_, "), so seq_len must exceed nlevels");
    shard_ = batch_shard(options_.batch_size, comm, "trellis::LanguageTask: batch_size");
    train_ = data::row_shard(data::batchify(corpus_.train, options_.batch_size, "train split"), shard_.first,
                             shard_.count);
    train_segments_ = data::segments(train_.steps, options_.seq_len, history_);
    state_ = model_.make_state(shard_.count);
    reducer_ = GradientReducer<ExecutionSpace, Scalar>(comm, model_.parameters(), Model::gradient_stages(),
                                                       options_.gradient_bucket_bytes);
  }

  std::string metric() const { return words() ? "ppl" : "bpc"; }
  std::string unit() const { return "tokens"; }
  bool lower_is_better() const { return true; }
  long batches_per_epoch() const { return long(train_segments_.size()); }
  Model& model() { return model_; }
  Optimizer<ExecutionSpace, Scalar>& optimizer() { return optimizer_; }
  Communicator& communicator() { return *comm_; }
  data::Corpus const& corpus() const { return corpus_; }
  /// This rank's rows of the training batch.
  Shard shard() const { return shard_; }

  /// A new epoch starts the stream over from a zero state.
  void start_epoch(long) { reset(state_); }
  /// Mid-epoch, a resumed run keeps the carried state its checkpoint holds.
  void resume_epoch(long) {}

  /// One optimiser step on this rank's rows; the result is this rank's (the trainer
  /// combines the ranks').
  StepResult step(long batch_index, DropoutKey const& key) {
    auto const& seg = train_segments_[std::size_t(batch_index)];
    // Not a structured binding: clang before 16 cannot capture one in the lambda below.
    auto const batch = segment(train_, seg, shard_.count);
    auto const& tokens = batch.first;
    auto const& targets = batch.second;
    if (seg.reset_state) reset(state_);
    auto const masks = model_.draw_masks(shard_.count, key.offset(shard_.first));
    StageFinal on_stage_final;
    if (reducer_.active()) on_stage_final = [&](int stage) { reducer_.stage_final(space_, stage); };
    auto const step = optimizer_step(
        space_, model_, optimizer_, options_.clip,
        [&] { return model_.train_step(space_, tokens, targets, seg.scored_from, state_, masks, on_stage_final); },
        [&] { reducer_.finish(space_); });
    auto const& r = step.result;
    return StepResult{r.total, r.nll_sum, r.count, 0, step.non_finite};
  }

  /// The metric over a split ("train", "valid", "test"); its first `limit` tokens when limit > 0.
  double evaluate(std::string const& split, long limit = 0) { return metric_of(mean_nll(split, limit)); }
  double validate() { return evaluate("valid", options_.valid_tokens); }
  /// The metric of a window of training steps.
  double train_metric(StepResult const& window) const {
    return metric_of(window.nll / double(std::max(1L, window.count)));
  }

  /// The model, the carried state of every row (gathered from the ranks: call on
  /// every rank; the file is complete on rank 0) and the vocabulary (so that a
  /// checkpoint is not resumed on other data).
  void save(safetensors::File& f, safetensors::DType dtype) {
    write_language_model(f, model_, dtype);
    f.tensors["state.h"] = global_state(state_.h, dtype);
    f.tensors["state.c"] = global_state(state_.c, dtype);
    f.metadata["vocabulary"] = vocabulary_json(corpus_.vocabulary);
  }
  /// `also`: what the caller reads from the same file itself.
  void load(safetensors::File const& f, std::string const& path, std::vector<std::string> also) {
    check_vocabulary(f, path);
    also.insert(also.end(), {"state.h", "state.c"});
    read_language_model(f, path, model_, also);
    if (f.has("state.h")) {
      local_state(state_.h, f.at(path, "state.h"), path, "state.h");
      local_state(state_.c, f.at(path, "state.c"), path, "state.c");
    }
  }

  /// The vocabulary as JSON: each token the list of its bytes (tokens need not be UTF-8).
  static std::string vocabulary_json(std::vector<std::string> const& vocabulary) {
    nlohmann::json j = nlohmann::json::array();
    for (auto const& token : vocabulary) {
      std::vector<int> bytes;
      for (unsigned char c : token) bytes.push_back(c);
      j.push_back(bytes);
    }
    return j.dump();
  }

 private:
  static LanguageTaskOptions with_vocabulary(LanguageTaskOptions o, data::Corpus const& corpus) {
    o.model.ntoken = long(corpus.vocabulary.size());
    return o;
  }

  bool words() const { return corpus_.level == data::TokenLevel::words; }
  /// Mean NLL (nats per token) to the task's metric.
  double metric_of(double nll) const { return words() ? std::exp(nll) : nll / std::log(2.0); }

  safetensors::Tensor global_state(typename Model::matrix const& local, safetensors::DType dtype) const {
    if (comm_->size() == 1) return to_tensor(local, dtype);
    auto const mine = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), local);
    Kokkos::View<Scalar**, Kokkos::LayoutRight, Kokkos::HostSpace> all("trellis::LanguageTask::state",
                                                                      options_.batch_size, local.extent(1));
    comm_->gather(mine.data(), mine.span(), all.data(), element_of<Scalar>(), 0);
    return to_tensor(all, dtype);
  }

  /// This rank's rows of a checkpoint's (batch_size, q) state, whatever the number of
  /// ranks that wrote it.
  void local_state(typename Model::matrix const& local, safetensors::Tensor const& t, std::string const& path,
                   std::string const& name) const {
    if (comm_->size() == 1) return from_tensor(local, t, path, name);
    typename Model::matrix all("trellis::LanguageTask::state", options_.batch_size, local.extent(1));
    from_tensor(all, t, path, name);
    Kokkos::deep_copy(local, Kokkos::subview(all, std::make_pair(shard_.first, shard_.first + shard_.count),
                                             Kokkos::ALL));
  }

  void reset(typename Model::State& s) {
    Kokkos::deep_copy(space_, s.h, Scalar(0));
    Kokkos::deep_copy(space_, s.c, Scalar(0));
  }

  std::pair<tokens_view, tokens_view> segment(data::TokenBatches const& b, data::Segment const& seg, long rows) const {
    tokens_view tokens(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string("trellis::LanguageTask::tokens")),
                       seg.length, rows);
    tokens_view targets(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string("trellis::LanguageTask::targets")),
                        seg.length, rows);
    auto ht = Kokkos::create_mirror_view(tokens);
    auto hg = Kokkos::create_mirror_view(targets);
    data::fill_segment(b, seg, ht.data(), hg.data());
    Kokkos::deep_copy(tokens, ht);
    Kokkos::deep_copy(targets, hg);
    return {tokens, targets};
  }

  double mean_nll(std::string const& split, long limit) {
    if (split != "train" && split != "valid" && split != "test")
      detail::fail("trellis::LanguageTask::evaluate: split '", split, "': expected train, valid or test");
    auto stream = split == "test" ? corpus_.test : split == "valid" ? corpus_.valid : corpus_.train;
    if (limit > 0 && long(stream.size()) > limit) stream.resize(std::size_t(limit));
    long const rows =
        std::min<long>(options_.eval_batch_size, std::max<long>(1, long(stream.size()) / (options_.seq_len + 1)));
    // Every rank scores its rows of the streams; the sums make the one-process figure.
    auto const mine = even_shard(rows, comm_->rank(), comm_->size());
    double sums[2] = {0, 0};  // NLL, count
    if (mine.count > 0) {
      auto const batches =
          data::row_shard(data::batchify(stream, rows, split + " split"), mine.first, mine.count);
      auto const segs = data::segments(batches.steps, options_.seq_len, history_);
      auto state = model_.make_state(mine.count);
      for (auto const& seg : segs) {
        auto const [tokens, targets] = segment(batches, seg, mine.count);
        if (seg.reset_state) reset(state);
        auto const r = model_.evaluate(space_, tokens, targets, seg.scored_from, state);
        sums[0] += r.nll_sum;
        sums[1] += double(r.count);
      }
    }
    comm_->sum(sums, 2, Element::f64);
    return sums[0] / sums[1];
  }

  void check_vocabulary(safetensors::File const& f, std::string const& path) const {
    auto it = f.metadata.find("vocabulary");
    if (it == f.metadata.end()) return;
    if (it->second != vocabulary_json(corpus_.vocabulary))
      throw file_error(path + ": its vocabulary differs from the one the data give (" +
                       std::to_string(corpus_.vocabulary.size()) + " tokens): another data set or version");
  }

  ExecutionSpace space_;
  Communicator* comm_;
  data::Corpus corpus_;
  LanguageTaskOptions options_;
  Model model_;
  Optimizer<ExecutionSpace, Scalar> optimizer_;
  long history_ = 0;
  Shard shard_;
  GradientReducer<ExecutionSpace, Scalar> reducer_;
  data::TokenBatches train_;
  std::vector<data::Segment> train_segments_;
  typename Model::State state_;
};

}  // namespace trellis
