#pragma once
// Linear layer y = x W^T + b over rows, forward and backward side by side.
//   x (R, in), y (R, out), W (out, in), b (out) or empty.
// The weight may alias another layer's storage (a decoder tied to the embedding):
// then its gradient views alias too, and both layers accumulate into them.
#include <Kokkos_Core.hpp>

#include <string>

#include <trellis/blas/gemm.hpp>
#include <trellis/detail/kernel_shape.hpp>
#include <trellis/errors.hpp>

namespace trellis {

template <class ExecutionSpace, class Scalar>
struct Linear {
  using memory_space = typename ExecutionSpace::memory_space;
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space>;
  using vector = Kokkos::View<Scalar*, Kokkos::LayoutRight, memory_space>;

  matrix weight, grad_weight;  ///< (out, in)
  vector bias, grad_bias;      ///< (out), empty without bias

  Linear() = default;
  Linear(std::string const& label, long in, long out, bool with_bias)
      : weight(label + "::weight", out, in), grad_weight(label + "::grad_weight", out, in) {
    if (with_bias) {
      bias = vector(label + "::bias", out);
      grad_bias = vector(label + "::grad_bias", out);
    }
  }

  long in() const { return long(weight.extent(1)); }
  long out() const { return long(weight.extent(0)); }

  /// y = x W^T + b.
  template <class X, class Y>
  void forward(ExecutionSpace const& space, X const& x, Y const& y,
               blas::MathMode math = blas::MathMode::strict) const {
    blas::gemm(space, blas::Op::none, blas::Op::transpose, Scalar(1), x, weight, Scalar(0), y, math);
    if (bias.extent(0) == 0) return;
    auto const b = bias;
    long const cols = out();
    detail::for_each_small(
        "trellis::Linear::forward::bias", space, long(y.extent(0)), KOKKOS_LAMBDA(long r) {
          for (long c = 0; c < cols; ++c) y(r, c) += b(c);
        });
  }

  /// dW += dy^T x, db += column sums of dy; dx = dy W (+ beta dx) when dx is not empty.
  template <class X, class DY, class DX>
  void backward(ExecutionSpace const& space, X const& x, DY const& dy, DX const& dx, Scalar dx_beta = 0,
                blas::MathMode math = blas::MathMode::strict) {
    blas::gemm(space, blas::Op::transpose, blas::Op::none, Scalar(1), dy, x, Scalar(1), grad_weight, math);
    if (grad_bias.extent(0) > 0) {
      auto const db = grad_bias;
      long const rows = long(dy.extent(0));
      // One column per thread, rows in order: deterministic on every backend.
      Kokkos::parallel_for(
          "trellis::Linear::backward::bias", Kokkos::RangePolicy<ExecutionSpace>(space, 0, out()),
          KOKKOS_LAMBDA(long c) {
            Scalar s = 0;
            for (long r = 0; r < rows; ++r) s += dy(r, c);
            db(c) += s;
          });
    }
    if (dx.extent(0) > 0) blas::gemm(space, blas::Op::none, blas::Op::none, Scalar(1), dy, weight, dx_beta, dx, math);
  }
};

}  // namespace trellis
