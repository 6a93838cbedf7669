#pragma once
// Mixture of softmaxes (Yang et al. 2018) as the reference's word-level head, forward
// and backward fused with its NLL loss. For rows x (R, nout), experts m:
//   pi     = softmax(prior(x))                                  (R, m)
//   h      = tanh(dropoutl(latent(x)))  seen as (R m, ninp)      mask (N, m ninp), row r -> n = r % N
//   p_e    = softmax(decoder(h_e))      decoder tied to the embedding, (R m, ntoken)
//   out    = log(sum_e pi_e p_e + 1e-8),  loss = -sum_r out(r, target(r))
// Backward with g_r = -scale / (mix(r, y) + 1e-8):
//   d logit_e(v) = pi_e g p_e(y) ([v == y] - p_e(v)),  d prior_e = pi_e (g p_e(y) - sum_f pi_f g p_f(y))
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <string>

#include <trellis/detail/kokkos_compat.hpp>
#include <trellis/errors.hpp>
#include <trellis/nn/cross_entropy.hpp>
#include <trellis/nn/linear.hpp>
#include <trellis/detail/views.hpp>

namespace trellis {

namespace detail {

/// f(r, j, m) for every latent element h(r, j), with m its variational mask (the
/// mask's row for sequence r % batch; 1 without a mask).
template <class Exec, class H, class Mask, class F>
void for_each_latent(char const* label, Exec const& space, H const& h, Mask const& mask, long batch, F const& f) {
  using Scalar = typename H::non_const_value_type;
  long const width = long(h.extent(1));
  bool const masked = mask.extent(0) > 0;
  Kokkos::parallel_for(
      label, Kokkos::RangePolicy<Exec>(space, 0, long(h.extent(0))), KOKKOS_LAMBDA(long r) {
        long const n = r % batch;
        for (long j = 0; j < width; ++j) f(r, j, masked ? mask(n, j) : Scalar(1));
      });
}

}  // namespace detail

template <class ExecutionSpace, class Scalar>
class MixtureOfSoftmaxes {
 public:
  using memory_space = typename ExecutionSpace::memory_space;
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space>;
  using vector = Kokkos::View<Scalar*, Kokkos::LayoutRight, memory_space>;
  using targets_view = Kokkos::View<std::int32_t const*, Kokkos::LayoutRight, memory_space>;

  Linear<ExecutionSpace, Scalar> prior, latent;

  MixtureOfSoftmaxes() = default;
  MixtureOfSoftmaxes(std::string const& label, long nout, long ninp, long experts)
      : prior(label + "::prior", nout, experts, true), latent(label + "::latent", nout, experts * ninp, true),
        experts_(experts), ninp_(ninp) {}

  long experts() const { return experts_; }

  /// Sum over rows of the NLL; when scale != 0 also accumulates every gradient (the
  /// decoder's included) and writes dx (R, nout). log_probs (R, ntoken) is optional.
  template <class X, class DX>
  double forward_backward(ExecutionSpace const& space, Linear<ExecutionSpace, Scalar>& decoder, X const& x,
                          targets_view targets, matrix latent_mask, long batch, Scalar scale, DX const& dx,
                          matrix log_probs = matrix(), blas::MathMode math = blas::MathMode::strict) {
    char const* call = "trellis::MixtureOfSoftmaxes::forward_backward";
    long const R = long(x.extent(0)), m = experts_, p = ninp_, V = decoder.out();
    if (decoder.in() != p) detail::fail(call, ": the decoder takes ", decoder.in(), " inputs, the experts give ", p);
    detail::check_shape(call, "targets", targets, {R});
    if (latent_mask.extent(0) > 0) detail::check_shape(call, "latent_mask", latent_mask, {batch, m * p});
    bool const want_grad = scale != Scalar(0), want_lp = log_probs.extent(0) > 0;
    if (want_lp) detail::check_shape(call, "log_probs", log_probs, {R, V});
    prepare(space, R, V);
    prior.forward(space, x, prior_logits_, math);
    latent.forward(space, x, hidden_, math);
    {
      auto const h = hidden_;
      detail::for_each_latent("trellis::MixtureOfSoftmaxes::latent", space, h, latent_mask, batch,
                              KOKKOS_LAMBDA(long r, long j, Scalar mask) { h(r, j) = detail::tanh(h(r, j) * mask); });
    }
    matrix const h_rows(hidden_.data(), R * m, p);
    decoder.forward(space, h_rows, logits_, math);

    auto const logits = logits_, pl = prior_logits_, pi = pi_, dprior = d_prior_;
    auto const mx = row_max_, sm = row_sum_;
    double const loss = detail::sum_over_rows(
        call, space, R, KOKKOS_LAMBDA(long r, double& sum) {
          Scalar pm, ps;
          detail::row_softmax_stats(pl, r, m, pm, ps);
          for (long e = 0; e < m; ++e) pi(r, e) = detail::exp(pl(r, e) - pm) / ps;
          int const y = targets(r);
          Scalar mix_y = 0;
          for (long e = 0; e < m; ++e) {
            long const row = r * m + e;
            Scalar lm, s;
            detail::row_softmax_stats(logits, row, V, lm, s);
            mx(row) = lm;
            sm(row) = s;
            mix_y += pi(r, e) * detail::exp(logits(row, y) - lm) / s;
          }
          sum += -double(detail::log(mix_y + Scalar(1e-8)));
          if (want_lp)
            for (long v = 0; v < V; ++v) {
              Scalar mix = 0;
              for (long e = 0; e < m; ++e) mix += pi(r, e) * detail::exp(logits(r * m + e, v) - mx(r * m + e)) / sm(r * m + e);
              log_probs(r, v) = detail::log(mix + Scalar(1e-8));
            }
          if (want_grad) {
            Scalar const g = -scale / (mix_y + Scalar(1e-8));
            Scalar total = 0;
            for (long e = 0; e < m; ++e) {
              long const row = r * m + e;
              Scalar const py = detail::exp(logits(row, y) - mx(row)) / sm(row);
              dprior(r, e) = g * py;  // d pi_e, turned into d prior below
              total += pi(r, e) * g * py;
              Scalar const a = pi(r, e) * g * py;
              Scalar const inv = Scalar(1) / sm(row);
              for (long v = 0; v < V; ++v) logits(row, v) = -a * detail::exp(logits(row, v) - mx(row)) * inv;
              logits(row, y) += a;
            }
            for (long e = 0; e < m; ++e) dprior(r, e) = pi(r, e) * (dprior(r, e) - total);
          }
        });
    if (!want_grad) return loss;

    decoder.backward(space, h_rows, logits_, d_hidden_rows(R), Scalar(0), math);
    {
      auto const h = hidden_, dh = d_hidden_;
      detail::for_each_latent("trellis::MixtureOfSoftmaxes::latent_backward", space, h, latent_mask, batch,
                              KOKKOS_LAMBDA(long r, long j, Scalar mask) {
                                dh(r, j) = dh(r, j) * (Scalar(1) - h(r, j) * h(r, j)) * mask;
                              });
    }
    latent.backward(space, x, d_hidden_, dx, Scalar(0), math);
    prior.backward(space, x, d_prior_, dx, Scalar(1), math);
    return loss;
  }

 private:
  matrix d_hidden_rows(long R) const { return matrix(d_hidden_.data(), R * experts_, ninp_); }

  void prepare(ExecutionSpace const& space, long R, long V) {
    (void)space;
    if (long(logits_.extent(0)) == R * experts_ && long(logits_.extent(1)) == V) return;
    auto alloc = [](char const* name) { return detail::uninitialized("trellis::MixtureOfSoftmaxes::", name); };
    long const m = experts_;
    prior_logits_ = matrix(alloc("prior_logits"), R, m);
    pi_ = matrix(alloc("pi"), R, m);
    d_prior_ = matrix(alloc("d_prior"), R, m);
    hidden_ = matrix(alloc("hidden"), R, m * ninp_);
    d_hidden_ = matrix(alloc("d_hidden"), R, m * ninp_);
    logits_ = matrix(alloc("logits"), R * m, V);
    row_max_ = vector(alloc("row_max"), R * m);
    row_sum_ = vector(alloc("row_sum"), R * m);
  }

  long experts_ = 0, ninp_ = 0;
  matrix prior_logits_, pi_, d_prior_, hidden_, d_hidden_, logits_;
  vector row_max_, row_sum_;
};

}  // namespace trellis
