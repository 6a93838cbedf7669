#pragma once
// Language modelling as a Trainer task: a LanguageModel over a tokenised corpus, either
// as one stream cut into consecutive segments that carry the state (character level:
// every position scored) or as windows whose first `nlevels` positions only warm the
// state up (word level). The metric is bits per character or perplexity.
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
#include <trellis/train/step_result.hpp>
#include <trellis/train/optimizers.hpp>

namespace trellis {

struct LanguageTaskOptions {
  LanguageModelConfig model;
  OptimizerKind optimizer = OptimizerKind::adam;
  OptimizerOptions optimizer_options;
  double clip = 0;            ///< global gradient-norm clip (0: off)
  long batch_size = 16;       ///< rows of the training stream
  long seq_len = 128;         ///< positions per training segment
  long eval_batch_size = 32;  ///< rows of evaluation streams
  long valid_tokens = 0;      ///< validate() scores this many tokens of the valid split (0: all)
  std::uint64_t seed = 1111;  ///< the model's initialisation
};

/// Policies: the core's weight tying, structure and activation (TrellisNetwork's).
template <class ExecutionSpace, class Scalar, class... Policies>
class LanguageTask {
 public:
  using Model = LanguageModel<ExecutionSpace, Scalar, Policies...>;
  using memory_space = typename ExecutionSpace::memory_space;
  using tokens_view = Kokkos::View<std::int32_t**, Kokkos::LayoutRight, memory_space>;

  LanguageTask(ExecutionSpace const& space, LanguageTaskOptions const& options, data::Corpus corpus)
      : space_(space), corpus_(std::move(corpus)), options_(with_vocabulary(options, corpus_)),
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
    train_ = data::batchify(corpus_.train, options_.batch_size, "train split");
    train_segments_ = data::segments(train_.steps, options_.seq_len, history_);
    state_ = model_.make_state(options_.batch_size);
  }

  std::string metric() const { return words() ? "ppl" : "bpc"; }
  std::string unit() const { return "tokens"; }
  bool lower_is_better() const { return true; }
  long batches_per_epoch() const { return long(train_segments_.size()); }
  Model& model() { return model_; }
  Optimizer<ExecutionSpace, Scalar>& optimizer() { return optimizer_; }
  data::Corpus const& corpus() const { return corpus_; }

  /// A new epoch starts the stream over from a zero state.
  void start_epoch(long) { reset(state_); }
  /// Mid-epoch, a resumed run keeps the carried state its checkpoint holds.
  void resume_epoch(long) {}

  StepResult step(long batch_index, std::mt19937_64& rng) {
    auto const& seg = train_segments_[std::size_t(batch_index)];
    auto const [tokens, targets] = segment(train_, seg, options_.batch_size);
    if (seg.reset_state) reset(state_);
    auto const masks = model_.draw_masks(options_.batch_size, rng);
    auto const r = optimizer_step(space_, model_, optimizer_, options_.clip, [&] {
      return model_.train_step(space_, tokens, targets, seg.scored_from, state_, masks);
    });
    return StepResult{r.total, r.nll_sum, r.count, 0};
  }

  /// The metric over a split ("train", "valid", "test"); its first `limit` tokens when limit > 0.
  double evaluate(std::string const& split, long limit = 0) { return metric_of(mean_nll(split, limit)); }
  double validate() { return evaluate("valid", options_.valid_tokens); }
  /// The metric of a window of training steps.
  double train_metric(StepResult const& window) const {
    return metric_of(window.nll / double(std::max(1L, window.count)));
  }

  /// The model, the carried state and the vocabulary (so that a checkpoint is not
  /// resumed on other data).
  void save(safetensors::File& f, safetensors::DType dtype) {
    write_language_model(f, model_, dtype);
    f.tensors["state.h"] = to_tensor(state_.h, dtype);
    f.tensors["state.c"] = to_tensor(state_.c, dtype);
    f.metadata["vocabulary"] = vocabulary_json(corpus_.vocabulary);
  }
  /// `also`: what the caller reads from the same file itself.
  void load(safetensors::File const& f, std::string const& path, std::vector<std::string> also) {
    check_vocabulary(f, path);
    also.insert(also.end(), {"state.h", "state.c"});
    read_language_model(f, path, model_, also);
    if (f.has("state.h")) {
      from_tensor(state_.h, f.at(path, "state.h"), path, "state.h");
      from_tensor(state_.c, f.at(path, "state.c"), path, "state.c");
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
    auto const batches = data::batchify(stream, rows, split + " split");
    auto const segs = data::segments(batches.steps, options_.seq_len, history_);
    auto state = model_.make_state(rows);
    double nll = 0;
    long count = 0;
    for (auto const& seg : segs) {
      auto const [tokens, targets] = segment(batches, seg, rows);
      if (seg.reset_state) reset(state);
      auto const r = model_.evaluate(space_, tokens, targets, seg.scored_from, state);
      nll += r.nll_sum;
      count += r.count;
    }
    return nll / double(count);
  }

  void check_vocabulary(safetensors::File const& f, std::string const& path) const {
    auto it = f.metadata.find("vocabulary");
    if (it == f.metadata.end()) return;
    if (it->second != vocabulary_json(corpus_.vocabulary))
      throw file_error(path + ": its vocabulary differs from the one the data give (" +
                       std::to_string(corpus_.vocabulary.size()) + " tokens): another data set or version");
  }

  ExecutionSpace space_;
  data::Corpus corpus_;
  LanguageTaskOptions options_;
  Model model_;
  Optimizer<ExecutionSpace, Scalar> optimizer_;
  long history_ = 0;
  data::TokenBatches train_;
  std::vector<data::Segment> train_segments_;
  typename Model::State state_;
};

}  // namespace trellis
