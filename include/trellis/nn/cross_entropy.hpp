#pragma once
// Softmax cross-entropy, forward and backward fused (the loss is the end of the graph):
//   loss = sum_r -log softmax(logits(r, :))[target(r)]
//   d logits(r, v) = scale * (softmax(logits(r, :))[v] - [v == target(r)])
// logits (R, V) are overwritten with their gradient when `scale` is not zero (training),
// left alone otherwise; log_probs (R, V), when not empty, receives log softmax.
#include <Kokkos_Core.hpp>

#include <cstdint>

#include <trellis/detail/kokkos_compat.hpp>
#include <trellis/detail/kernel_shape.hpp>
#include <trellis/errors.hpp>

namespace trellis {

namespace detail {

/// The sum over rows r < R of what f(r, sum) adds to sum, in double: a loss summed
/// over the scored positions.
template <class Exec, class F>
double sum_over_rows(char const* label, Exec const& space, long R, F const& f) {
  return sum_small(label, space, R, f);
}

/// max and sum of exp(x - max) over columns [0, V) of row r: the log-sum-exp is
/// max + log(sum); computed without overflow.
template <class Matrix, class Scalar>
KOKKOS_INLINE_FUNCTION void row_softmax_stats(Matrix const& x, long r, long V, Scalar& max, Scalar& sum) {
  max = x(r, 0);
  for (long v = 1; v < V; ++v) max = x(r, v) > max ? x(r, v) : max;
  sum = 0;
  for (long v = 0; v < V; ++v) sum += exp(x(r, v) - max);
}

}  // namespace detail

template <class Exec, class Logits, class Targets, class LogProbs = Logits>
double softmax_cross_entropy(Exec const& space, Logits const& logits, Targets const& targets,
                             typename Logits::value_type scale, LogProbs const& log_probs = LogProbs()) {
  using Scalar = typename Logits::value_type;
  char const* call = "trellis::softmax_cross_entropy";
  long const R = long(logits.extent(0)), V = long(logits.extent(1));
  detail::check_shape(call, "targets", targets, {R});
  bool const want_log_probs = log_probs.extent(0) > 0;
  if (want_log_probs) detail::check_shape(call, "log_probs", log_probs, {R, V});
  bool const want_grad = scale != Scalar(0);
  return detail::sum_over_rows(
      call, space, R, KOKKOS_LAMBDA(long r, double& sum) {
        Scalar m, s;
        detail::row_softmax_stats(logits, r, V, m, s);
        Scalar const lse = m + detail::log(s);
        int const y = targets(r);
        sum += double(lse - logits(r, y));
        if (want_log_probs)
          for (long v = 0; v < V; ++v) log_probs(r, v) = logits(r, v) - lse;
        if (want_grad) {
          Scalar const inv = Scalar(1) / s;
          for (long v = 0; v < V; ++v) logits(r, v) = scale * detail::exp(logits(r, v) - m) * inv;
          logits(r, y) -= scale;
        }
      });
}

}  // namespace trellis
