#pragma once
// A TrellisNet sequence classifier as the reference's for sequential MNIST / CIFAR:
// elementwise dropout on the input, the core, a Linear(nout -> nclasses) on the last
// time step, dropout on its output, then log-softmax and the NLL. (The reference keeps
// the two dropouts on at test time by mistake; evaluate here has every dropout off.)
//
// Shapes (time-major, LayoutRight, on the space's memory): x (L, N, ninp), labels (N) int32.
#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>

#include <trellis/core/network.hpp>
#include <trellis/errors.hpp>
#include <trellis/nn/cross_entropy.hpp>
#include <trellis/nn/dropout.hpp>
#include <trellis/nn/linear.hpp>
#include <trellis/nn/parameter_list.hpp>
#include <trellis/detail/views.hpp>

namespace trellis {

struct SequenceClassifierConfig {
  TrellisShape core;
  long nclasses = 10;
  double dropout = 0;   ///< on the linear layer's output
  double dropouti = 0;  ///< elementwise, on the input
  double dropouth = 0;  ///< the core's hidden mask
  double wdrop = 0;     ///< the core's weight drop
  double init_std = 0.01;  ///< the core's weights and bias start from N(0, init_std); 0.01 in the reference

  void validate(char const* call) const {
    core.validate(call);
    if (nclasses < 2) detail::fail(call, ": nclasses is ", nclasses, ", need at least 2");
    if (!(init_std > 0 && std::isfinite(init_std))) detail::fail(call, ": init_std is ", init_std, ", need a positive number");
    for (double p : {dropout, dropouti, dropouth, wdrop})
      if (!(p >= 0 && p < 1)) detail::fail(call, ": a dropout probability is ", p, ", not in [0, 1)");
  }
};

/// Loss of a batch and how many of its predictions were right.
struct ClassifierLoss {
  double total = 0, nll_sum = 0;
  long count = 0, correct = 0;
};

/// The core is TrellisNetwork<ExecutionSpace, Scalar, WeightTying, Structure, Activation>:
/// the TrellisNet by default, the gated TCN of the paper's comparison with Untied.
template <class ExecutionSpace, class Scalar, class WeightTying = TiedAcrossDepth, class Structure = Dense,
          class Activation = LSTMGating>
class SequenceClassifier {
 public:
  using memory_space = typename ExecutionSpace::memory_space;
  using core_type = TrellisNetwork<ExecutionSpace, Scalar, WeightTying, Structure, Activation>;
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space>;
  using sequence = Kokkos::View<Scalar***, Kokkos::LayoutRight, memory_space>;
  using const_sequence = Kokkos::View<Scalar const***, Kokkos::LayoutRight, memory_space>;
  using labels_view = Kokkos::View<std::int32_t const*, Kokkos::LayoutRight, memory_space>;

  struct Masks {
    typename core_type::masks_type core;
    sequence input;  ///< (L, N, ninp)
    matrix output;   ///< (N, nclasses)
  };

  SequenceClassifier(ExecutionSpace const& space, SequenceClassifierConfig config, std::uint64_t seed = 1111)
      : config_((config.validate("trellis::SequenceClassifier"), std::move(config))),
        core_(space, config_.core, seed),
        linear_("trellis::SequenceClassifier::linear", config_.core.nout, config_.nclasses, true) {
    if (config_.init_std != 0.01) detail::initialize_parameters(core_.parameters(), seed, config_.init_std);
    // PyTorch's Linear default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    std::mt19937_64 rng(seed ^ 0x5851f42d4c957f2dull);
    double const b = 1.0 / std::sqrt(double(config_.core.nout));
    std::uniform_real_distribution<double> u(-b, b);
    detail::fill_on_host(linear_.weight, [&] { return u(rng); });
    detail::fill_on_host(linear_.bias, [&] { return u(rng); });
  }

  SequenceClassifierConfig const& config() const { return config_; }
  core_type& core() { return core_; }
  Linear<ExecutionSpace, Scalar>& linear() { return linear_; }

  ParameterList<memory_space, Scalar> parameters() {
    ParameterList<memory_space, Scalar> list;
    add_core_parameters(list, core_);
    add_parameter(list, "linear.weight", linear_.weight, linear_.grad_weight);
    add_parameter(list, "linear.bias", linear_.bias, linear_.grad_bias);
    return list;
  }

  Masks draw_masks(long length, long batch, std::mt19937_64& rng) const {
    Masks m;
    m.core = trellis::draw_masks(core_, batch, config_.dropouth, config_.wdrop, rng);
    m.input = make_dropout_mask<sequence>("trellis::SequenceClassifier::input_mask", config_.dropouti, rng, length,
                                          batch, long(config_.core.ninp));
    m.output = make_dropout_mask<matrix>("trellis::SequenceClassifier::output_mask", config_.dropout, rng, batch,
                                         config_.nclasses);
    return m;
  }

  /// The masks of a training step keyed by (seed, step, global row), every one per sample.
  Masks draw_masks(long length, long batch, DropoutKey const& key) const {
    Masks m;
    m.core = trellis::draw_masks(core_, batch, config_.dropouth, config_.wdrop, key);
    m.input = make_keyed_mask<sequence, MaskScope::sample>("trellis::SequenceClassifier::input_mask",
                                                           config_.dropouti, key, 11, length, batch,
                                                           long(config_.core.ninp));
    m.output = make_keyed_mask<matrix, MaskScope::sample>("trellis::SequenceClassifier::output_mask",
                                                          config_.dropout, key, 12, batch, config_.nclasses);
    return m;
  }

  /// The order in which train_step finishes the gradients: the head, then the core.
  static GradientStages gradient_stages() { return {{"linear."}, {"core."}}; }

  /// Forward and backward (gradients accumulate) of the mean NLL over the batch;
  /// `on_stage_final(k)` is called when the gradients of gradient_stages()[k] are final.
  ClassifierLoss train_step(ExecutionSpace const& space, const_sequence x, labels_view labels, Masks const& masks,
                            StageFinal const& on_stage_final = {}) {
    return run(space, x, labels, masks, true, matrix(), on_stage_final);
  }
  ClassifierLoss loss(ExecutionSpace const& space, const_sequence x, labels_view labels, Masks const& masks) {
    return run(space, x, labels, masks, false, matrix());
  }
  /// Every dropout off. log_probs (N, nclasses), when given, receives the model's output.
  ClassifierLoss evaluate(ExecutionSpace const& space, const_sequence x, labels_view labels,
                          matrix log_probs = matrix()) {
    return run(space, x, labels, Masks(), false, log_probs);
  }

  void zero_gradients(ExecutionSpace const& space) { trellis::zero_gradients(space, parameters()); }

 private:
  void prepare(long L, long N) {
    if (L == L_ && N == N_) return;
    auto alloc = [](char const* name) { return detail::uninitialized("trellis::SequenceClassifier::", name); };
    auto const& s = config_.core;
    L_ = L;
    N_ = N;
    x_ = sequence(alloc("x"), L, N, s.ninp);
    out_ = sequence(alloc("out"), L, N, s.nout);
    d_out_ = sequence("trellis::SequenceClassifier::d_out", L, N, s.nout);
    state_ = matrix("trellis::SequenceClassifier::zero_state", N, s.q());
    h_new_ = matrix(alloc("h_new"), N, s.q());
    c_new_ = matrix(alloc("c_new"), N, s.q());
    logits_ = matrix(alloc("logits"), N, config_.nclasses);
    aux_ = typename core_type::aux_view(alloc("aux"), s.naux(), L, N, s.nout);
  }

 public:  // nvcc: a function holding a __device__ lambda may not be private; internal all the same
  ClassifierLoss run(ExecutionSpace const& space, const_sequence x, labels_view labels, Masks const& masks, bool grad,
                     matrix log_probs, StageFinal const& on_stage_final = {}) {
    char const* call = grad ? "trellis::SequenceClassifier::train_step" : "trellis::SequenceClassifier::evaluate";
    long const L = long(x.extent(0)), N = long(x.extent(1)), C = config_.nclasses, nout = config_.core.nout;
    if (L == 0 || N == 0) detail::fail(call, ": x is ", detail::shape_of(x), ", need at least one step and sequence");
    detail::check_shape(call, "x", x, {L, N, long(config_.core.ninp)});
    detail::check_shape(call, "labels", labels, {N});
    if (long const first = detail::first_outside(space, "trellis::SequenceClassifier::check_labels", labels, C).first;
        first < N)
      detail::fail(call, ": labels(", first, ") is outside [0, ", C, ")");
    prepare(L, N);
    elementwise_dropout(space, x, masks.input, x_);
    core_.forward(space, x_, state_, state_, out_, h_new_, c_new_, aux_, cache_, masks.core);
    matrix const last(out_.data() + (L - 1) * N * nout, N, nout);
    linear_.forward(space, last, logits_);
    elementwise_dropout(space, logits_, masks.output, logits_);

    // Predictions before the loss overwrites the logits with their gradient.
    auto const logits = logits_;
    long correct = 0;
    Kokkos::parallel_reduce(
        "trellis::SequenceClassifier::correct", Kokkos::RangePolicy<ExecutionSpace>(space, 0, N),
        KOKKOS_LAMBDA(long n, long& acc) {
          long best = 0;
          for (long c = 1; c < C; ++c) best = logits(n, c) > logits(n, best) ? c : best;
          acc += best == long(labels(n)) ? 1 : 0;
        },
        correct);
    Scalar const scale = grad ? Scalar(1.0 / double(N)) : Scalar(0);
    ClassifierLoss result;
    result.count = N;
    result.correct = correct;
    result.nll_sum = softmax_cross_entropy(space, logits_, labels, scale, log_probs);
    result.total = result.nll_sum / double(N);
    if (!grad) return result;

    elementwise_dropout(space, logits_, masks.output, logits_);
    Kokkos::deep_copy(space, d_out_, Scalar(0));
    matrix const d_last(d_out_.data() + (L - 1) * N * nout, N, nout);
    linear_.backward(space, last, logits_, d_last);
    if (on_stage_final) on_stage_final(0);
    core_.backward(space, cache_, d_out_, matrix(), matrix(), typename core_type::aux_view(), sequence(), matrix(),
                   matrix());
    if (on_stage_final) on_stage_final(1);
    return result;
  }

 private:
  SequenceClassifierConfig config_;
  core_type core_;
  Linear<ExecutionSpace, Scalar> linear_;
  typename core_type::cache_type cache_;
  long L_ = -1, N_ = -1;
  sequence x_, out_, d_out_;
  matrix state_, h_new_, c_new_, logits_;
  typename core_type::aux_view aux_;
};

}  // namespace trellis
