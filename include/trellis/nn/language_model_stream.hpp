#pragma once
// LanguageModelStream: a language model one token at a time, exactly: embedding, the
// core's TrellisStream, then the tied decoder or the mixture of softmaxes, to the
// log-probabilities of every stream's next token. What LanguageModel::evaluate gives at
// the last position of a window from the zero state, without recomputing the window.
//
//   LanguageModelStream stream(space, model, N);
//   auto lp = stream.prefill(space, prompt);   // prompt (T, N) int32: lp (N, ntoken) after it
//   lp = stream.step(space, tokens);           // tokens (N): the next token of each stream
//
// Dropout is off. The stream takes the model's weights when made and on prefill.
#include <Kokkos_Core.hpp>

#include <cstdint>

#include <trellis/core/stream.hpp>
#include <trellis/errors.hpp>
#include <trellis/nn/cross_entropy.hpp>
#include <trellis/nn/language_model.hpp>
#include <trellis/detail/views.hpp>

namespace trellis {

template <class Model>
class LanguageModelStream {
 public:
  using core_type = typename Model::core_type;
  using execution_space = typename core_type::execution_space;
  using memory_space = typename core_type::memory_space;
  using scalar_type = typename core_type::scalar_type;
  using matrix = typename Model::matrix;
  using tokens_view = typename Model::tokens_view;
  using token_row = Kokkos::View<std::int32_t const*, Kokkos::LayoutRight, memory_space>;

  LanguageModelStream(execution_space const& space, Model& model, long streams)
      : model_(&model), core_(space, model.core(), streams) {
    auto const& c = model.config();
    long const N = streams;
    auto alloc = [&](char const* name) { return detail::uninitialized(space, "trellis::LanguageModelStream::", name); };
    x_ = typename core_type::sequence_view(alloc("x"), 1, N, c.core.ninp);
    out_ = matrix(alloc("out"), N, c.core.nout);
    logits_ = matrix(alloc("logits"), c.n_experts > 0 ? 0 : N, c.ntoken);
    log_probs_ = matrix(alloc("log_probs"), N, c.ntoken);
    targets_ = Kokkos::View<std::int32_t*, Kokkos::LayoutRight, memory_space>("trellis::LanguageModelStream::targets", N);
  }

  long streams() const { return core_.streams(); }
  /// Tokens every stream has taken since it was made, reset or prefilled.
  long position() const { return core_.position(); }
  TrellisStream<core_type> const& core_stream() const { return core_; }

  /// The log-probabilities (N, ntoken) of the last prefill or step.
  matrix log_probs() const { return log_probs_; }

  /// Every stream back to the zero state (prompt of its own: a new document).
  void reset(execution_space const& space) { core_.reset(space); }
  void reset(execution_space const& space, long n) { core_.reset(space, n); }

  /// Resets every stream and reads prompt (T, N) in one forward: the log-probabilities
  /// of each stream's token after it.
  matrix prefill(execution_space const& space, tokens_view prompt) {
    char const* call = "trellis::LanguageModelStream::prefill";
    auto const& c = model_->config();
    long const T = long(prompt.extent(0)), N = streams();
    if (T == 0) detail::fail(call, ": the prompt is ", detail::shape_of(prompt), "; give at least one token, or reset");
    detail::check_shape(call, "prompt", prompt, {T, N});
    model_->check_tokens(space, call, "prompt", prompt);
    auto alloc = [&](char const* name) { return detail::uninitialized(space, "trellis::LanguageModelStream::", name); };
    typename core_type::sequence_view x(alloc("prompt_x"), T, N, c.core.ninp), out(alloc("prompt_out"), T, N, c.core.nout);
    model_->encoder().forward(space, prompt, {}, x);
    core_.prefill(space, model_->core(), x, out);
    head(space, matrix(out.data() + (T - 1) * N * c.core.nout, N, c.core.nout));
    space.fence();  // x and out are freed at return
    return log_probs_;
  }

  /// Each stream takes its next token, tokens (N): the log-probabilities of the one after.
  matrix step(execution_space const& space, token_row tokens) {
    char const* call = "trellis::LanguageModelStream::step";
    long const N = streams();
    detail::check_shape(call, "tokens", tokens, {N});
    tokens_view const as_sequence(tokens.data(), 1, N);
    model_->check_tokens(space, call, "tokens", as_sequence);
    model_->encoder().forward(space, as_sequence, {}, x_);
    core_.step(space, Kokkos::subview(x_, 0, Kokkos::ALL, Kokkos::ALL), out_);
    head(space, out_);
    return log_probs_;
  }

 private:
  /// The model's head on rows (N, nout): log_probs_. Scoring against zeros fills the
  /// log-probabilities; the NLL is not used.
  void head(execution_space const& space, matrix rows) {
    long const N = streams();
    if (model_->config().n_experts > 0) {
      model_->mixsoft().forward_backward(space, model_->decoder(), rows, targets_, matrix(), N, scalar_type(0), matrix(),
                                         log_probs_);
      return;
    }
    model_->decoder().forward(space, rows, logits_);
    softmax_cross_entropy(space, logits_, targets_, scalar_type(0), log_probs_);
  }

  Model* model_;
  TrellisStream<core_type> core_;
  typename core_type::sequence_view x_;
  matrix out_, logits_, log_probs_;
  Kokkos::View<std::int32_t*, Kokkos::LayoutRight, memory_space> targets_;
};

}  // namespace trellis
