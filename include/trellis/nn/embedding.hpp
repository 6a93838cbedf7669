#pragma once
// Token embedding with embedding dropout, forward and backward side by side.
//   tokens (L, N) int32, weight (ntoken, ninp), out (L, N, ninp)
//   out(t, n, :) = weight(tokens(t, n), :) * row_mask(tokens(t, n))
// Embedding dropout (training only) drops whole vocabulary rows: row_mask (ntoken)
// holds 0 or 1 / (1 - p); empty: off.
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <string>

#include <trellis/detail/kernel_shape.hpp>
#include <trellis/errors.hpp>

namespace trellis {

template <class ExecutionSpace, class Scalar>
struct Embedding {
  using memory_space = typename ExecutionSpace::memory_space;
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space>;
  using vector = Kokkos::View<Scalar*, Kokkos::LayoutRight, memory_space>;
  using tokens_view = Kokkos::View<std::int32_t const**, Kokkos::LayoutRight, memory_space>;
  using sequence_view = Kokkos::View<Scalar***, Kokkos::LayoutRight, memory_space>;

  matrix weight, grad_weight;  ///< (ntoken, ninp)

  Embedding() = default;
  Embedding(std::string const& label, long ntoken, long ninp)
      : weight(label + "::weight", ntoken, ninp), grad_weight(label + "::grad_weight", ntoken, ninp) {}

  long ntoken() const { return long(weight.extent(0)); }
  long ninp() const { return long(weight.extent(1)); }

  void forward(ExecutionSpace const& space, tokens_view tokens, vector row_mask, sequence_view out) const {
    char const* call = "trellis::Embedding::forward";
    long const L = long(tokens.extent(0)), N = long(tokens.extent(1)), p = ninp();
    detail::check_shape(call, "out", out, {L, N, p});
    if (row_mask.extent(0) > 0) detail::check_shape(call, "row_mask", row_mask, {ntoken()});
    auto const w = weight;
    bool const masked = row_mask.extent(0) > 0;
    detail::for_each_small(
        call, space, L * N, KOKKOS_LAMBDA(long r) {
          long const t = r / N, n = r % N;
          int const tok = tokens(t, n);
          Scalar const m = masked ? row_mask(tok) : Scalar(1);
          for (long j = 0; j < p; ++j) out(t, n, j) = w(tok, j) * m;
        });
  }

  /// grad_weight(tok, :) += d_out(t, n, :) * row_mask(tok) over every position.
  void backward(ExecutionSpace const& space, tokens_view tokens, vector row_mask,
                Kokkos::View<Scalar const***, Kokkos::LayoutRight, memory_space> d_out) {
    long const L = long(tokens.extent(0)), N = long(tokens.extent(1)), p = ninp();
    detail::check_shape("trellis::Embedding::backward", "d_out", d_out, {L, N, p});
    auto const g = grad_weight;
    bool const masked = row_mask.extent(0) > 0;
    // One embedding column per thread, positions in order: no atomics, deterministic.
    Kokkos::parallel_for(
        "trellis::Embedding::backward", Kokkos::RangePolicy<ExecutionSpace>(space, 0, p), KOKKOS_LAMBDA(long j) {
          for (long t = 0; t < L; ++t)
            for (long n = 0; n < N; ++n) {
              int const tok = tokens(t, n);
              g(tok, j) += d_out(t, n, j) * (masked ? row_mask(tok) : Scalar(1));
            }
        });
  }
};

}  // namespace trellis
