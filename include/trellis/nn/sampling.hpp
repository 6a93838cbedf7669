#pragma once
// Drawing the next token from a row of log-probabilities: temperature, top-k, top-p
// (nucleus), or greedy (temperature 0), from a seeded generator: the same seed and the
// same log-probabilities give the same tokens on every machine (the draws use the
// generator's raw bits, not a library's distributions, whose algorithms may differ).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include <trellis/errors.hpp>

namespace trellis {

struct SamplingOptions {
  double temperature = 1;  ///< divides the log-probabilities; 0 takes the most likely token (greedy)
  long top_k = 0;          ///< keep the k most likely tokens; 0 keeps all
  double top_p = 1;        ///< keep the most likely tokens whose probabilities sum to at least p, in (0, 1]

  void validate(char const* call) const {
    if (!(temperature >= 0 && std::isfinite(temperature)))
      detail::fail(call, ": temperature is ", temperature, "; use a finite number >= 0 (0: greedy)");
    if (top_k < 0) detail::fail(call, ": top-k is ", top_k, "; use k >= 1, or 0 to keep every token");
    if (!(top_p > 0 && top_p <= 1)) detail::fail(call, ": top-p is ", top_p, "; use p in (0, 1]");
  }
};

class TokenSampler {
 public:
  TokenSampler(SamplingOptions options, std::uint64_t seed) : options_(options), rng_(seed) {
    options_.validate("trellis::TokenSampler");
  }

  SamplingOptions const& options() const { return options_; }

  /// A token drawn from log_probs[0 .. V): ties go to the lower id.
  template <class T>
  std::int32_t operator()(T const* log_probs, long V) {
    if (V < 1) detail::fail("trellis::TokenSampler: a row of ", V, " log-probabilities");
    long best = 0;
    for (long v = 1; v < V; ++v)
      if (log_probs[v] > log_probs[best]) best = v;
    if (options_.temperature == 0 || options_.top_k == 1) return std::int32_t(best);
    // Weights exp((l - max) / T), most likely first.
    double const top = double(log_probs[best]);
    weights_.resize(std::size_t(V));
    order_.resize(std::size_t(V));
    for (long v = 0; v < V; ++v) weights_[std::size_t(v)] = std::exp((double(log_probs[v]) - top) / options_.temperature);
    std::iota(order_.begin(), order_.end(), 0);
    long keep = options_.top_k > 0 ? std::min(options_.top_k, V) : V;
    auto const more_likely = [&](std::int32_t a, std::int32_t b) {
      return weights_[std::size_t(a)] > weights_[std::size_t(b)] ||
             (weights_[std::size_t(a)] == weights_[std::size_t(b)] && a < b);
    };
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), more_likely);
    double total = 0;
    for (long i = 0; i < keep; ++i) total += weights_[std::size_t(order_[std::size_t(i)])];
    if (options_.top_p < 1) {
      double cumulative = 0;
      long nucleus = 0;
      while (nucleus < keep) {
        cumulative += weights_[std::size_t(order_[std::size_t(nucleus++)])];
        if (cumulative >= options_.top_p * total) break;
      }
      keep = nucleus;
      total = cumulative;
    }
    // u in [0, total) from the generator's top 53 bits.
    double const u = double(rng_() >> 11) * 0x1p-53 * total;
    double cumulative = 0;
    for (long i = 0; i < keep; ++i) {
      cumulative += weights_[std::size_t(order_[std::size_t(i)])];
      if (u < cumulative) return order_[std::size_t(i)];
    }
    return order_[std::size_t(keep - 1)];
  }

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
  std::vector<double> weights_;
  std::vector<std::int32_t> order_;
};

}  // namespace trellis
