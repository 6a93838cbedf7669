#pragma once
// Reference recurrent networks, step by step on the host with Eigen, independent of
// the trellis code: x (T, N, input) -> y (T, N, hidden), the top layer's output.
#include <Eigen/Core>

#include <cmath>
#include <vector>

#include <trellis/core/recurrent.hpp>

namespace trellis::naive {

namespace detail {

/// One time step of the whole stack: h, c (per layer) advance given the input x_t.
inline void step_stack(RecurrentWeights const& w, Eigen::VectorXd below, std::vector<Eigen::VectorXd>& h,
                       std::vector<Eigen::VectorXd>& c) {
  long const d = w.hidden_size;
  auto sigmoid = [](double a) { return 1.0 / (1.0 + std::exp(-a)); };
  for (long j = 0; j < w.layers(); ++j) {
    Eigen::VectorXd const a = w.input_weights[j] * below + w.recurrent_weights[j] * h[j];
    if (w.cell == RecurrentCell::lstm) {
      for (long u = 0; u < d; ++u) {
        double const i = sigmoid(a(u)), o = sigmoid(a(d + u)), g = std::tanh(a(2 * d + u)),
                     f = sigmoid(a(3 * d + u));
        c[j](u) = f * c[j](u) + i * g;
        h[j](u) = o * std::tanh(c[j](u));
      }
    } else if (w.cell == RecurrentCell::rnn_tanh) {
      h[j] = a.array().tanh();
    } else {
      h[j] = a.array().max(0.0);
    }
    below = h[j];
  }
}

/// Runs the stack over x[begin..end) of batch row n from a zero state and calls
/// emit(t, h of the top layer) after every step.
template <class Emit>
void run_range(RecurrentWeights const& w, std::vector<double> const& x, long N, long n, long begin, long end,
               Emit&& emit) {
  long const M = w.layers(), d = w.hidden_size, in = w.input_size;
  std::vector<Eigen::VectorXd> h(M, Eigen::VectorXd::Zero(d)), c(M, Eigen::VectorXd::Zero(d));
  Eigen::VectorXd xt(in);
  for (long t = begin; t < end; ++t) {
    for (long k = 0; k < in; ++k) xt(k) = x[(t * N + n) * in + k];
    step_stack(w, xt, h, c);
    emit(t, h[M - 1]);
  }
}

}  // namespace detail

/// The untruncated network over the whole sequence.
inline std::vector<double> run_recurrent(RecurrentWeights const& w, std::vector<double> const& x, long T, long N) {
  long const d = w.hidden_size;
  std::vector<double> y(T * N * d);
  for (long n = 0; n < N; ++n)
    detail::run_range(w, x, N, n, 0, T, [&](long t, Eigen::VectorXd const& h) {
      for (long u = 0; u < d; ++u) y[(t * N + n) * d + u] = h(u);
    });
  return y;
}

/// Truncated to a history of L steps: y_t is the network run on x_{t-L+1..t} from a
/// zero state.
inline std::vector<double> run_truncated(RecurrentWeights const& w, std::vector<double> const& x, long T, long N,
                                         long L) {
  long const d = w.hidden_size;
  std::vector<double> y(T * N * d);
  for (long n = 0; n < N; ++n)
    for (long t = 0; t < T; ++t)
      detail::run_range(w, x, N, n, t - L + 1 < 0 ? 0 : t - L + 1, t + 1, [&](long s, Eigen::VectorXd const& h) {
        if (s == t)
          for (long u = 0; u < d; ++u) y[(t * N + n) * d + u] = h(u);
      });
  return y;
}

}  // namespace trellis::naive
