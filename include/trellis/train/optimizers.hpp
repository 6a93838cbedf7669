#pragma once
// Optimisers with PyTorch's semantics, and global-norm gradient clipping as
// torch.nn.utils.clip_grad_norm_.
//   SGD:   g += wd p;  buf = momentum buf + g (buf = g at the first step);  p -= lr buf
//   Adam:  g += wd p (L2; AdamW instead scales p by 1 - lr wd);  m = b1 m + (1 - b1) g;
//          v = b2 v + (1 - b2) g^2;  p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// State lives beside each parameter, named for checkpoints: "<param>.exp_avg", ...
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <trellis/detail/kokkos_compat.hpp>
#include <trellis/errors.hpp>
#include <trellis/nn/parameter_list.hpp>

namespace trellis {

/// The global 2-norm of every gradient.
template <class Exec, class MemorySpace, class Scalar>
double gradient_norm(Exec const& space, ParameterList<MemorySpace, Scalar> const& params) {
  double total = 0;
  for (auto const& p : params) {
    auto const g = p.grad;
    double s = 0;
    Kokkos::parallel_reduce(
        "trellis::gradient_norm", Kokkos::RangePolicy<Exec>(space, 0, long(g.extent(0))),
        KOKKOS_LAMBDA(long i, double& acc) { acc += double(g(i)) * double(g(i)); }, s);
    total += s;
  }
  return std::sqrt(total);
}

/// The name of the first parameter whose gradient holds a NaN or an infinity; "" when
/// every gradient is finite.
template <class Exec, class MemorySpace, class Scalar>
std::string first_non_finite_gradient(Exec const& space, ParameterList<MemorySpace, Scalar> const& params) {
  for (auto const& p : params) {
    auto const g = p.grad;
    long bad = 0;
    // x - x is 0 for every finite x and NaN for NaN and the infinities.
    Kokkos::parallel_reduce(
        "trellis::first_non_finite_gradient", Kokkos::RangePolicy<Exec>(space, 0, long(g.extent(0))),
        KOKKOS_LAMBDA(long i, long& n) { n += g(i) - g(i) != Scalar(0) ? 1 : 0; }, bad);
    if (bad > 0) return p.name;
  }
  return "";
}

/// Scales every gradient by clip / (norm + 1e-6) when their global 2-norm exceeds
/// clip; returns the norm before clipping (as PyTorch does). clip <= 0: only the norm.
template <class Exec, class MemorySpace, class Scalar>
double clip_grad_norm(Exec const& space, ParameterList<MemorySpace, Scalar> const& params, double clip,
                      double norm = -1) {
  if (norm < 0) norm = gradient_norm(space, params);
  if (clip > 0) {
    double const coef = clip / (norm + 1e-6);
    if (coef < 1) {
      Scalar const c = Scalar(coef);
      for (auto const& p : params) {
        auto const g = p.grad;
        Kokkos::parallel_for(
            "trellis::clip_grad_norm::scale", Kokkos::RangePolicy<Exec>(space, 0, long(g.extent(0))),
            KOKKOS_LAMBDA(long i) { g(i) *= c; });
      }
    }
  }
  return norm;
}

enum class OptimizerKind { sgd, adam };

struct OptimizerOptions {
  double lr = 1e-3;
  double weight_decay = 0;
  double momentum = 0;           ///< SGD
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  ///< Adam
  bool decoupled = false;        ///< Adam: AdamW's decoupled weight decay
};

/// SGD or Adam over a ParameterList. The state tensors (flat, like the parameters)
/// are exposed for checkpoints through state().
template <class ExecutionSpace, class Scalar>
class Optimizer {
 public:
  using memory_space = typename ExecutionSpace::memory_space;
  using flat_view = Kokkos::View<Scalar*, Kokkos::LayoutRight, memory_space>;
  using Kind = OptimizerKind;

  Optimizer(Kind kind, ParameterList<memory_space, Scalar> params, OptimizerOptions options)
      : kind_(kind), params_(std::move(params)), options_(options) {
    char const* call = "trellis::Optimizer";
    if (!(options_.lr >= 0)) detail::fail(call, ": learning rate ", options_.lr, " is negative");
    if (!(options_.weight_decay >= 0)) detail::fail(call, ": weight decay ", options_.weight_decay, " is negative");
    if (!(options_.beta1 >= 0 && options_.beta1 < 1 && options_.beta2 >= 0 && options_.beta2 < 1))
      detail::fail(call, ": betas (", options_.beta1, ", ", options_.beta2, ") are not in [0, 1)");
    for (auto const& p : params_) {
      if (kind_ == Kind::adam) {
        state_[p.name + ".exp_avg"] = flat_view(p.name + ".exp_avg", p.value.extent(0));
        state_[p.name + ".exp_avg_sq"] = flat_view(p.name + ".exp_avg_sq", p.value.extent(0));
      } else if (options_.momentum > 0) {
        state_[p.name + ".momentum_buffer"] = flat_view(p.name + ".momentum_buffer", p.value.extent(0));
      }
    }
  }

  Kind kind() const { return kind_; }
  double lr() const { return options_.lr; }
  void set_lr(double lr) { options_.lr = lr; }
  long steps() const { return steps_; }
  void set_steps(long steps) { steps_ = steps; }
  OptimizerOptions const& options() const { return options_; }
  std::map<std::string, flat_view> const& state() const { return state_; }
  ParameterList<memory_space, Scalar> const& parameters() const { return params_; }

  void step(ExecutionSpace const& space) {
    ++steps_;
    for (auto const& p : params_) {
      if (kind_ == Kind::adam)
        adam(space, p);
      else
        sgd(space, p);
    }
  }

 public:  // nvcc: a function holding a __device__ lambda may not be private; internal all the same
  void sgd(ExecutionSpace const& space, ParameterRef<memory_space, Scalar> const& p) {
    auto const w = p.value, g = p.grad;
    Scalar const lr = Scalar(options_.lr), wd = Scalar(options_.weight_decay), mom = Scalar(options_.momentum);
    bool const first = steps_ == 1;
    flat_view buf;
    if (options_.momentum > 0) buf = state_.at(p.name + ".momentum_buffer");
    bool const with_momentum = options_.momentum > 0;
    Kokkos::parallel_for(
        "trellis::Optimizer::sgd", Kokkos::RangePolicy<ExecutionSpace>(space, 0, long(w.extent(0))),
        KOKKOS_LAMBDA(long i) {
          Scalar d = g(i) + wd * w(i);
          if (with_momentum) {
            buf(i) = first ? d : mom * buf(i) + d;
            d = buf(i);
          }
          w(i) -= lr * d;
        });
  }

  void adam(ExecutionSpace const& space, ParameterRef<memory_space, Scalar> const& p) {
    auto const w = p.value, g = p.grad;
    auto const m = state_.at(p.name + ".exp_avg"), v = state_.at(p.name + ".exp_avg_sq");
    double const bc1 = 1 - std::pow(options_.beta1, double(steps_));
    double const bc2 = 1 - std::pow(options_.beta2, double(steps_));
    Scalar const b1 = Scalar(options_.beta1), b2 = Scalar(options_.beta2), eps = Scalar(options_.eps);
    Scalar const step_size = Scalar(options_.lr / bc1), sqrt_bc2 = Scalar(std::sqrt(bc2));
    Scalar const wd = Scalar(options_.weight_decay), lr = Scalar(options_.lr);
    bool const decoupled = options_.decoupled;
    Kokkos::parallel_for(
        "trellis::Optimizer::adam", Kokkos::RangePolicy<ExecutionSpace>(space, 0, long(w.extent(0))),
        KOKKOS_LAMBDA(long i) {
          Scalar gi = g(i);
          if (decoupled)
            w(i) *= Scalar(1) - lr * wd;
          else
            gi += wd * w(i);
          m(i) = b1 * m(i) + (Scalar(1) - b1) * gi;
          v(i) = b2 * v(i) + (Scalar(1) - b2) * gi * gi;
          w(i) -= step_size * m(i) / (detail::sqrt(v(i)) / sqrt_bc2 + eps);
        });
  }

 private:
  Kind kind_;
  ParameterList<memory_space, Scalar> params_;
  OptimizerOptions options_;
  std::map<std::string, flat_view> state_;
  long steps_ = 0;
};

/// What optimizer_step did: the step's result and, when it skipped the update, why.
template <class Result>
struct GuardedStep {
  Result result;
  /// Empty: the optimiser stepped. Otherwise the update was skipped (parameters and
  /// optimiser state unchanged) because the gradients were not finite: the first
  /// parameter whose gradient held a NaN or an infinity.
  std::string non_finite;
};

/// One update of a model: zero its gradients, run `loss_and_gradients` (a model's
/// train_step, which accumulates them), run `complete_gradients` (data-parallel
/// training sums them over the ranks there), clip their global norm, step the
/// optimiser. A gradient that is not finite skips the update: the decision rests on
/// the completed gradients, so every rank of a group makes the same one.
template <class Exec, class Model, class Scalar, class F, class G>
auto optimizer_step(Exec const& space, Model& model, Optimizer<Exec, Scalar>& optimizer, double clip,
                    F&& loss_and_gradients, G&& complete_gradients) {
  model.zero_gradients(space);
  GuardedStep<decltype(loss_and_gradients())> out{loss_and_gradients(), {}};
  complete_gradients();
  auto const& params = optimizer.parameters();
  double const norm = gradient_norm(space, params);
  if (!std::isfinite(norm)) {
    out.non_finite = first_non_finite_gradient(space, params);
    // Every gradient finite and their squares' sum not: name the sum.
    if (out.non_finite.empty()) out.non_finite = "the gradients' norm (finite gradients whose squares overflow)";
    return out;
  }
  clip_grad_norm(space, params, clip, norm);
  optimizer.step(space);
  return out;
}

template <class Exec, class Model, class Scalar, class F>
auto optimizer_step(Exec const& space, Model& model, Optimizer<Exec, Scalar>& optimizer, double clip,
                    F&& loss_and_gradients) {
  return optimizer_step(space, model, optimizer, clip, std::forward<F>(loss_and_gradients), [] {});
}

}  // namespace trellis
