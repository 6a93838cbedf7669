#pragma once
// A TrellisNet language model as the reference's (model.py): embedding with embedding
// dropout, variational input dropout, the core, variational output (and aux) dropout,
// then a decoder tied to the embedding or a mixture of softmaxes, and the loss
//   CE(scored) + aux * sum_a CE_a(scored) + alpha * AR + beta * TAR.
// Forward and backward of the whole model are one call, train_step; evaluate is the
// forward alone with every dropout off.
//
// Shapes (time-major like the core, LayoutRight, on the space's memory):
//   tokens, targets (L, N) int32; state h, c (N, q). Positions t >= scored_from are scored.
#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <trellis/blas/gemm.hpp>
#include <trellis/core/network.hpp>
#include <trellis/errors.hpp>
#include <trellis/nn/cross_entropy.hpp>
#include <trellis/nn/dropout.hpp>
#include <trellis/nn/embedding.hpp>
#include <trellis/nn/linear.hpp>
#include <trellis/nn/mixture_of_softmaxes.hpp>
#include <trellis/nn/parameter_list.hpp>
#include <trellis/detail/memory_limits.hpp>
#include <trellis/detail/views.hpp>

namespace trellis {

struct LanguageModelConfig {
  TrellisShape core;     ///< ninp is the embedding width
  long ntoken = 0;       ///< vocabulary size
  int n_experts = 0;     ///< mixture of softmaxes with this many experts; 0: tied decoder (nout == ninp)
  double dropout = 0;    ///< variational, on the output and the aux outputs
  double dropouti = 0;   ///< variational, on the embedded input
  double dropouth = 0;   ///< the core's hidden mask
  double dropoutl = 0;   ///< variational, on the MoS latent
  double emb_dropout = 0;  ///< whole vocabulary rows of the embedding
  double wdrop = 0;      ///< the core's weight drop
  double aux = 0;        ///< weight of the aux losses
  double alpha = 0, beta = 0;  ///< AR and TAR
  double init_std = 0.01;  ///< the core's weights and bias start from N(0, init_std); 0.01 in the reference

  void validate(char const* call) const {
    core.validate(call);
    if (ntoken < 2) detail::fail(call, ": ntoken is ", ntoken, ", need at least 2");
    if (n_experts < 0) detail::fail(call, ": n_experts is ", n_experts);
    if (!(init_std > 0 && std::isfinite(init_std))) detail::fail(call, ": init_std is ", init_std, ", need a positive number");
    if (n_experts == 0 && core.nout != core.ninp)
      detail::fail(call, ": the decoder is tied to the embedding, so nout (", core.nout, ") must equal ninp (",
                   core.ninp, ") without a mixture of softmaxes");
    for (double p : {dropout, dropouti, dropouth, dropoutl, emb_dropout, wdrop})
      if (!(p >= 0 && p < 1)) detail::fail(call, ": a dropout probability is ", p, ", not in [0, 1)");
  }
};

/// What one step reports: the loss it differentiated (total) and the main NLL summed
/// over the scored positions (for bpc / ppl), with their count.
struct StepLoss {
  double total = 0, nll_sum = 0;
  long count = 0;
};

/// The core is TrellisNetwork<ExecutionSpace, Scalar, WeightTying, Structure, Activation>:
/// the TrellisNet by default, the gated TCN of the paper's comparison with Untied.
template <class ExecutionSpace, class Scalar, class WeightTying = TiedAcrossDepth, class Structure = Dense,
          class Activation = LSTMGating>
class LanguageModel {
 public:
  using memory_space = typename ExecutionSpace::memory_space;
  using core_type = TrellisNetwork<ExecutionSpace, Scalar, WeightTying, Structure, Activation>;
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space>;
  using vector = Kokkos::View<Scalar*, Kokkos::LayoutRight, memory_space>;
  using sequence = Kokkos::View<Scalar***, Kokkos::LayoutRight, memory_space>;
  using tokens_view = Kokkos::View<std::int32_t const**, Kokkos::LayoutRight, memory_space>;
  using flat_targets = Kokkos::View<std::int32_t const*, Kokkos::LayoutRight, memory_space>;

  /// The carried (h, c), each (N, q).
  struct State {
    matrix h, c;
  };

  /// Every dropout mask of one training step (empty: off).
  struct Masks {
    typename core_type::masks_type core;
    vector embedding;  ///< (ntoken)
    matrix input;      ///< (N, ninp)
    matrix output;     ///< (N, nout)
    std::vector<matrix> aux;  ///< naux of (N, nout)
    matrix latent;     ///< (N, m ninp)
  };

  LanguageModel(ExecutionSpace const& space, LanguageModelConfig config, std::uint64_t seed = 1111)
      : config_((config.validate("trellis::LanguageModel"), check_memory(config), std::move(config))),
        core_(space, config_.core, seed),
        encoder_("trellis::LanguageModel::encoder", config_.ntoken, config_.core.ninp) {
    auto const& s = config_.core;
    decoder_.weight = encoder_.weight;  // tied: the same storage, the same gradient
    decoder_.grad_weight = encoder_.grad_weight;
    decoder_.bias = vector("trellis::LanguageModel::decoder::bias", config_.ntoken);
    decoder_.grad_bias = vector("trellis::LanguageModel::decoder::grad_bias", config_.ntoken);
    if (config_.n_experts > 0)
      mixsoft_ = MixtureOfSoftmaxes<ExecutionSpace, Scalar>("trellis::LanguageModel::mixsoft", s.nout, s.ninp,
                                                            config_.n_experts);
    // The core drew N(0, 0.01) from this seed; the same draws, rescaled, for another std.
    if (config_.init_std != 0.01) detail::initialize_parameters(core_.parameters(), seed, config_.init_std);
    initialize(seed);
  }

  LanguageModelConfig const& config() const { return config_; }

  /// The embedding (tied to the decoder) and the mixture of softmaxes, with their
  /// gradients, must fit the machine: checked before anything is allocated.
  static void check_memory(LanguageModelConfig const& c) {
    auto const p = std::uint64_t(c.core.ninp), nout = std::uint64_t(c.core.nout), m = std::uint64_t(c.n_experts);
    std::uint64_t const embedding = detail::saturating_product({std::uint64_t(c.ntoken), p + 1});
    std::uint64_t const mixture = detail::saturating_product({nout + 1, m * (p + 1)});
    detail::check_fits<memory_space>(
        "trellis::LanguageModel",
        "its embedding of " + std::to_string(c.ntoken) + " x " + std::to_string(c.core.ninp) +
            " and its gradient",
        detail::saturating_product({2, detail::saturating_sum(embedding, mixture), sizeof(Scalar)}));
  }
  core_type& core() { return core_; }
  core_type const& core() const { return core_; }
  Embedding<ExecutionSpace, Scalar>& encoder() { return encoder_; }
  Linear<ExecutionSpace, Scalar>& decoder() { return decoder_; }
  MixtureOfSoftmaxes<ExecutionSpace, Scalar>& mixsoft() { return mixsoft_; }

  /// Every learnable tensor once (the tied decoder weight is the encoder's).
  ParameterList<memory_space, Scalar> parameters() {
    ParameterList<memory_space, Scalar> list;
    add_parameter(list, "encoder.weight", encoder_.weight, encoder_.grad_weight);
    add_core_parameters(list, core_);
    add_parameter(list, "decoder.bias", decoder_.bias, decoder_.grad_bias);
    if (config_.n_experts > 0) {
      add_parameter(list, "mixsoft.prior.weight", mixsoft_.prior.weight, mixsoft_.prior.grad_weight);
      add_parameter(list, "mixsoft.prior.bias", mixsoft_.prior.bias, mixsoft_.prior.grad_bias);
      add_parameter(list, "mixsoft.latent.weight", mixsoft_.latent.weight, mixsoft_.latent.grad_weight);
      add_parameter(list, "mixsoft.latent.bias", mixsoft_.latent.bias, mixsoft_.latent.grad_bias);
    }
    return list;
  }

  State make_state(long batch) const {
    long const q = config_.core.q();
    return State{matrix("trellis::LanguageModel::h", batch, q), matrix("trellis::LanguageModel::c", batch, q)};
  }

  /// Draws every mask of a training step for a batch of N (host RNG, copied over).
  Masks draw_masks(long batch, std::mt19937_64& rng) const {
    auto const& s = config_.core;
    Masks m;
    m.core = trellis::draw_masks(core_, batch, config_.dropouth, config_.wdrop, rng);
    m.embedding = make_dropout_mask<vector>("trellis::LanguageModel::embedding_mask", config_.emb_dropout, rng,
                                            config_.ntoken);
    m.input = make_dropout_mask<matrix>("trellis::LanguageModel::input_mask", config_.dropouti, rng, batch, s.ninp);
    m.output = make_dropout_mask<matrix>("trellis::LanguageModel::output_mask", config_.dropout, rng, batch, s.nout);
    for (int a = 0; a < s.naux(); ++a)
      m.aux.push_back(
          make_dropout_mask<matrix>("trellis::LanguageModel::aux_mask", config_.dropout, rng, batch, s.nout));
    if (config_.n_experts > 0)
      m.latent = make_dropout_mask<matrix>("trellis::LanguageModel::latent_mask", config_.dropoutl, rng, batch,
                                           long(config_.n_experts) * s.ninp);
    return m;
  }

  /// Every mask of a training step keyed by (seed, step, global row): per sample for
  /// rows key.first_row onwards, shared by the batch for the embedding and weight drop.
  Masks draw_masks(long batch, DropoutKey const& key) const {
    auto const& s = config_.core;
    auto per_sample = [&](char const* label, double p, std::uint64_t id, long columns) {
      return make_keyed_mask<matrix, MaskScope::sample>(label, p, key, id, batch, columns);
    };
    Masks m;
    m.core = trellis::draw_masks(core_, batch, config_.dropouth, config_.wdrop, key);
    m.embedding = make_keyed_mask<vector, MaskScope::shared>("trellis::LanguageModel::embedding_mask",
                                                             config_.emb_dropout, key, 10, config_.ntoken);
    m.input = per_sample("trellis::LanguageModel::input_mask", config_.dropouti, 11, s.ninp);
    m.output = per_sample("trellis::LanguageModel::output_mask", config_.dropout, 12, s.nout);
    for (int a = 0; a < s.naux(); ++a)
      m.aux.push_back(per_sample("trellis::LanguageModel::aux_mask", config_.dropout, std::uint64_t(100 + a), s.nout));
    if (config_.n_experts > 0)
      m.latent = per_sample("trellis::LanguageModel::latent_mask", config_.dropoutl, 13,
                            long(config_.n_experts) * s.ninp);
    return m;
  }

  /// The order in which train_step finishes the gradients, stage by stage (name
  /// prefixes): the heads first, then the core, the embedding (the tied decoder) last.
  static GradientStages gradient_stages() { return {{"decoder.", "mixsoft."}, {"core."}, {"encoder."}}; }

  /// Forward and backward of one batch with the given masks; gradients accumulate (zero
  /// them first). The state moves on to the end of the batch (no gradient flows into it).
  /// `on_stage_final(k)` is called when the gradients of gradient_stages()[k] are final.
  StepLoss train_step(ExecutionSpace const& space, tokens_view tokens, tokens_view targets, long scored_from,
                      State& state, Masks const& masks, StageFinal const& on_stage_final = {}) {
    return run(space, tokens, targets, scored_from, state, masks, Mode::train, matrix(), on_stage_final);
  }

  /// The loss train_step would differentiate, without gradients (for gradient checks).
  StepLoss loss(ExecutionSpace const& space, tokens_view tokens, tokens_view targets, long scored_from,
                State& state, Masks const& masks) {
    return run(space, tokens, targets, scored_from, state, masks, Mode::loss, matrix());
  }

  /// Inference: every dropout off; the NLL of the main output over the scored positions.
  /// log_probs ((L - scored_from) N, ntoken), when given, receives the model's log-probabilities.
  StepLoss evaluate(ExecutionSpace const& space, tokens_view tokens, tokens_view targets, long scored_from,
                    State& state, matrix log_probs = matrix()) {
    return run(space, tokens, targets, scored_from, state, Masks(), Mode::eval, log_probs);
  }

  void zero_gradients(ExecutionSpace const& space) { trellis::zero_gradients(space, parameters()); }

 private:
  void initialize(std::uint64_t seed) {
    // The reference: embedding U(-0.1, 0.1), decoder bias 0; the MoS weights
    // U(-0.1, 0.1), their biases PyTorch's Linear default U(-1/sqrt(in), 1/sqrt(in)).
    std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
    auto uniform = [&](auto const& view, double bound) {
      std::uniform_real_distribution<double> u(-bound, bound);
      detail::fill_on_host(view, [&] { return u(rng); });
    };
    uniform(encoder_.weight, 0.1);
    if (config_.n_experts > 0) {
      double const b = 1.0 / std::sqrt(double(config_.core.nout));
      uniform(mixsoft_.prior.weight, 0.1);
      uniform(mixsoft_.prior.bias, b);
      uniform(mixsoft_.latent.weight, 0.1);
      uniform(mixsoft_.latent.bias, b);
    }
  }

  void prepare(long L, long N) {
    if (L == L_ && N == N_) return;
    auto const& s = config_.core;
    auto alloc = [](char const* name) { return detail::uninitialized("trellis::LanguageModel::", name); };
    L_ = L;
    N_ = N;
    x_ = sequence(alloc("x"), L, N, s.ninp);
    dx_ = sequence(alloc("dx"), L, N, s.ninp);
    out_raw_ = sequence(alloc("out_raw"), L, N, s.nout);
    out_d_ = sequence(alloc("out_dropped"), L, N, s.nout);
    d_out_ = sequence(alloc("d_out"), L, N, s.nout);
    aux_raw_ = typename core_type::aux_view(alloc("aux_raw"), s.naux(), L, N, s.nout);
    aux_d_ = typename core_type::aux_view(alloc("aux_dropped"), s.naux(), L, N, s.nout);
    d_aux_ = typename core_type::aux_view(alloc("d_aux"), s.naux(), L, N, s.nout);
    h_new_ = matrix(alloc("h_new"), N, s.q());
    c_new_ = matrix(alloc("c_new"), N, s.q());
    logits_ = matrix(alloc("logits"), config_.n_experts > 0 ? 0 : L * N, config_.ntoken);
  }

  /// The head on rows (R, nout) against targets (R): sum of NLL; with scale != 0 also
  /// the gradients of the head and d_rows.
  double head(ExecutionSpace const& space, matrix rows, flat_targets targets, Masks const& masks, Scalar scale,
              matrix d_rows, matrix log_probs) {
    long const R = long(rows.extent(0));
    if (config_.n_experts > 0)
      return mixsoft_.forward_backward(space, decoder_, rows, targets, masks.latent, N_, scale, d_rows, log_probs);
    matrix const logits(logits_.data(), R, config_.ntoken);
    decoder_.forward(space, rows, logits);
    double const nll = softmax_cross_entropy(space, logits, targets, scale, log_probs);
    if (scale != Scalar(0)) decoder_.backward(space, rows, logits, d_rows);
    return nll;
  }

  enum class Mode { train, loss, eval };

  StepLoss run(ExecutionSpace const& space, tokens_view tokens, tokens_view targets, long s, State& state,
               Masks const& masks, Mode mode, matrix log_probs, StageFinal const& on_stage_final = {}) {
    bool const grad = mode == Mode::train;
    char const* call = grad ? "trellis::LanguageModel::train_step" : "trellis::LanguageModel::evaluate";
    auto const& shape = config_.core;
    long const L = long(tokens.extent(0)), N = long(tokens.extent(1)), nout = shape.nout;
    if (L == 0 || N == 0) detail::fail(call, ": tokens are ", detail::shape_of(tokens), ", need at least one");
    detail::check_shape(call, "targets", targets, {L, N});
    if (s < 0 || s >= L) detail::fail(call, ": scored_from is ", s, ", the batch has ", L, " positions");
    detail::check_shape(call, "state.h", state.h, {N, shape.q()});
    detail::check_shape(call, "state.c", state.c, {N, shape.q()});
    check_tokens(space, call, "tokens", tokens);
    check_tokens(space, call, "targets", targets);
    prepare(L, N);
    long const Rs = (L - s) * N, off = s * N;

    encoder_.forward(space, tokens, masks.embedding, x_);
    variational_dropout(space, x_, masks.input, x_);
    core_.forward(space, x_, state.h, state.c, out_raw_, h_new_, c_new_, aux_raw_, cache_, masks.core);
    variational_dropout(space, out_raw_, masks.output, out_d_);
    int const naux = shape.naux();
    for (int a = 0; a < naux; ++a) {
      auto const raw = Kokkos::subview(aux_raw_, a, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL);
      auto const dropped = Kokkos::subview(aux_d_, a, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL);
      variational_dropout(space, raw, a < int(masks.aux.size()) ? masks.aux[a] : matrix(), dropped);
    }

    flat_targets const scored_targets(targets.data() + off, Rs);
    auto rows_of = [&](Scalar* base) { return matrix(base + off * nout, Rs, nout); };
    StepLoss result;
    result.count = Rs;
    Scalar const scale = grad ? Scalar(1.0 / double(Rs)) : Scalar(0);
    if (grad) {
      Kokkos::deep_copy(space, d_out_, Scalar(0));
      if (naux > 0) Kokkos::deep_copy(space, d_aux_, Scalar(0));
    }
    result.nll_sum = head(space, rows_of(out_d_.data()), scored_targets, masks, scale, rows_of(d_out_.data()), log_probs);
    result.total = result.nll_sum / double(Rs);
    // The aux losses and AR / TAR belong to the training loss; evaluation scores the main output.
    if (mode != Mode::eval && config_.aux > 0)
      for (int a = 0; a < naux; ++a) {
        Scalar* base = aux_d_.data() + std::size_t(a) * L * N * nout;
        Scalar* dbase = d_aux_.data() + std::size_t(a) * L * N * nout;
        double const nll = head(space, rows_of(base), scored_targets, masks, Scalar(config_.aux) * scale,
                                rows_of(dbase), matrix());
        result.total += config_.aux * nll / double(Rs);
      }
    if (mode != Mode::eval) result.total += regularisers(space, L, N, s, grad);
    if (!grad) {
      std::swap(state.h, h_new_);
      std::swap(state.c, c_new_);
      return result;
    }

    // Back through the output dropouts (variational: the same product), then the core.
    variational_dropout(space, d_out_, masks.output, d_out_);
    for (int a = 0; a < naux; ++a) {
      auto const d = Kokkos::subview(d_aux_, a, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL);
      variational_dropout(space, d, a < int(masks.aux.size()) ? masks.aux[a] : matrix(), d);
    }
    if (config_.beta > 0) tar_backward(space, L, N, s);
    if (on_stage_final) on_stage_final(0);
    // The core accumulates into dx and rereads x for its injection: a separate buffer.
    Kokkos::deep_copy(space, dx_, Scalar(0));
    core_.backward(space, cache_, d_out_, matrix(), matrix(), d_aux_, dx_, matrix(), matrix());
    if (on_stage_final) on_stage_final(1);
    variational_dropout(space, dx_, masks.input, dx_);
    encoder_.backward(space, tokens, masks.embedding, dx_);
    if (on_stage_final) on_stage_final(2);
    std::swap(state.h, h_new_);
    std::swap(state.c, c_new_);
    return result;
  }

 public:  // nvcc: a function holding a __device__ lambda may not be private; internal all the same
  /// A token outside [0, ntoken) would index past the embedding or the softmax: an error
  /// naming the first such position and its value.
  void check_tokens(ExecutionSpace const& space, char const* call, char const* name, tokens_view t) const {
    long const N = long(t.extent(1)), V = config_.ntoken;
    auto const [first, value] = detail::first_outside(space, "trellis::LanguageModel::check_tokens", t, V);
    if (first < long(t.span()))
      detail::fail(call, ": ", name, "(", first / N, ", ", first % N, ") is ", value,
                   ", outside the vocabulary [0, ", V, ")");
  }

  /// alpha * mean(out_d^2) + beta * mean((raw_{t+1} - raw_t)^2) over the scored
  /// positions; with grad, AR's gradient is added to d_out (the dropped output's).
  double regularisers(ExecutionSpace const& space, long L, long N, long s, bool grad) {
    long const nout = config_.core.nout;
    double total = 0;
    if (config_.alpha > 0) {
      long const off = s * N * nout, n = (L - s) * N * nout;
      auto const od = out_d_, dd = d_out_;
      Scalar const* od_p = od.data();
      Scalar* dd_p = dd.data();
      double sum = 0;
      Kokkos::parallel_reduce(
          "trellis::LanguageModel::ar", Kokkos::RangePolicy<ExecutionSpace>(space, off, off + n),
          KOKKOS_LAMBDA(long i, double& acc) { acc += double(od_p[i]) * double(od_p[i]); }, sum);
      total += config_.alpha * sum / double(n);
      if (grad) {
        Scalar const g = Scalar(2 * config_.alpha / double(n));
        Kokkos::parallel_for(
            "trellis::LanguageModel::ar_backward", Kokkos::RangePolicy<ExecutionSpace>(space, off, off + n),
            KOKKOS_LAMBDA(long i) { dd_p[i] += g * od_p[i]; });
      }
    }
    if (config_.beta > 0 && L - s >= 2) {
      long const width = N * nout, n = (L - s - 1) * width;
      Scalar const* raw = out_raw_.data();
      long const from = s * width;
      double sum = 0;
      Kokkos::parallel_reduce(
          "trellis::LanguageModel::tar", Kokkos::RangePolicy<ExecutionSpace>(space, from, from + n),
          KOKKOS_LAMBDA(long i, double& acc) {
            double const d = double(raw[i + width]) - double(raw[i]);
            acc += d * d;
          },
          sum);
      total += config_.beta * sum / double(n);
    }
    return total;
  }

  /// TAR's gradient on the raw output, added to d_out after the output dropout.
  void tar_backward(ExecutionSpace const& space, long L, long N, long s) {
    if (L - s < 2) return;
    long const width = N * config_.core.nout, n = (L - s - 1) * width, from = s * width;
    Scalar const* raw = out_raw_.data();
    Scalar* d = d_out_.data();
    Scalar const g = Scalar(2 * config_.beta / double(n));
    // Position i gets +g (x_i - x_{i-w}) from the pair before it and -g (x_{i+w} - x_i) from the one after.
    Kokkos::parallel_for(
        "trellis::LanguageModel::tar_backward", Kokkos::RangePolicy<ExecutionSpace>(space, from, from + n + width),
        KOKKOS_LAMBDA(long i) {
          Scalar v = 0;
          if (i - width >= from) v += g * (raw[i] - raw[i - width]);
          if (i + width < from + n + width) v -= g * (raw[i + width] - raw[i]);
          d[i] += v;
        });
  }

 private:
  LanguageModelConfig config_;
  core_type core_;
  Embedding<ExecutionSpace, Scalar> encoder_;
  Linear<ExecutionSpace, Scalar> decoder_;
  MixtureOfSoftmaxes<ExecutionSpace, Scalar> mixsoft_;
  typename core_type::cache_type cache_;
  long L_ = -1, N_ = -1;
  sequence x_, dx_, out_raw_, out_d_, d_out_;
  typename core_type::aux_view aux_raw_, aux_d_, d_aux_;
  matrix h_new_, c_new_, logits_;
};

}  // namespace trellis
