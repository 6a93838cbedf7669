#pragma once
// The input injection of every level, as two strategies the network runs the same way:
//   SeparateInjection  U = Xs W1^T once per slot (a distinct dilation when tied, a level
//                      when untied), kept (R, G q) per slot and added by each level's
//                      fused kernel; backward turns each U into dU in place.
//   FoldedInjection    the input columns ride in every level's hidden GEMM:
//                      [S | x_{t-d} | x_t | 1] [W2 | W1 | 0]^T; nothing per slot is kept,
//                      and the same GEMMs give the weight, input and bias gradients.
// Each one: begin_forward, attach (a level's injection view), hidden (one block of a
// level's rows: its GEMM), recompute (before a recomputed level), begin_backward, attach_gradient,
// hidden_backward (one block of a level's rows), finish_level_backward and end_backward.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <utility>
#include <vector>

#include <trellis/blas/gemm.hpp>
#include <trellis/core/detail/cache_state.hpp>
#include <trellis/core/detail/level_kernels.hpp>
#include <trellis/core/parameters.hpp>
#include <trellis/core/shape.hpp>

namespace trellis::detail {

/// Which injection each level uses: one slot per distinct dilation when the weights are
/// tied across depth (levels of one dilation share U), one per level when untied.
struct InjectionSlots {
  std::vector<int> dilation, kernel;  ///< per slot
  std::vector<int> of_level;          ///< per level

  template <class WeightTying>
  static InjectionSlots for_shape(TrellisShape const& shape) {
    InjectionSlots s;
    for (int level = 0; level < shape.nlevels; ++level) {
      int const d = shape.dilation_of(level);
      int slot = -1;
      if constexpr (WeightTying::tied) {
        for (std::size_t i = 0; i < s.dilation.size(); ++i)
          if (s.dilation[i] == d) slot = int(i);
      }
      if (slot < 0) {
        slot = int(s.dilation.size());
        s.dilation.push_back(d);
        s.kernel.push_back(WeightTying::kernel_of(level));
      }
      s.of_level.push_back(slot);
    }
    return s;
  }
  int count() const { return int(dilation.size()); }
};

/// What one forward or backward of a network works with.
template <class Net>
struct CoreStep {
  using execution_space = typename Net::execution_space;
  using memory_space = typename Net::memory_space;
  using scalar_type = typename Net::scalar_type;
  using parameters_type = typename Net::parameters_type;
  using state_type = CacheState<memory_space, scalar_type, typename Net::structure>;
  using sequence = Kokkos::View<scalar_type***, Kokkos::LayoutRight, memory_space>;
  using matrix = Kokkos::View<scalar_type**, Kokkos::LayoutRight, memory_space>;
  using matrices = Kokkos::View<scalar_type***, Kokkos::LayoutRight, memory_space>;

  execution_space const& space;
  TrellisShape const& shape;
  parameters_type const& params;
  parameters_type const* grads;  ///< backward only
  InjectionSlots const& slots;
  blas::MathMode math;
  state_type& cache;

  static auto slot(matrices const& m, int s) { return Kokkos::subview(m, s, Kokkos::ALL, Kokkos::ALL); }
  int kernel_of(int level) const { return Net::weight_tying::kernel_of(level); }
};

/// The names both strategies use.
template <class Net>
struct InjectionTypes {
  using Step = CoreStep<Net>;
  using Scalar = typename Net::scalar_type;
  using Mem = typename Net::memory_space;
  using Exec = typename Net::execution_space;
  using ops = typename Net::structure_ops;

  /// Where the rows of [r0, r1) that carry history end: level 1's history is zero
  /// from t = d on, every other level's nowhere.
  static long hidden_end(LevelArgs<Scalar, Mem> const& a, long r0, long r1) {
    return std::clamp(a.hidden_rows, r0, r1);
  }
};

template <class Net>
struct SeparateInjection : InjectionTypes<Net> {
  using typename InjectionTypes<Net>::Step, typename InjectionTypes<Net>::Scalar, typename InjectionTypes<Net>::Mem,
      typename InjectionTypes<Net>::Exec, typename InjectionTypes<Net>::ops;
  using InjectionTypes<Net>::hidden_end;

  /// U of slot s (its dilation and kernel) from the cached input.
  template <class UV>
  static void inject(Step& st, int s, UV const& U) {
    stack_input<Exec, Scalar, Mem>(st.space, st.cache.x, st.slots.dilation[std::size_t(s)], st.cache.stacked_input);
    ops::injection(st.space, st.cache.weights, st.params, st.slots.kernel[std::size_t(s)], st.cache.stacked_input, U,
                   st.math);
  }

  static void begin_forward(Step& st) {
    for (int s = 0; s < st.slots.count(); ++s) inject(st, s, Step::slot(st.cache.injection, s));
  }

  static void attach(Step& st, int level, LevelArgs<Scalar, Mem>& a) {
    a.injection = Step::slot(st.cache.injection, st.slots.of_level[std::size_t(level)]);
  }

  /// The hidden GEMM S W^T on rows [r0, r1) of the level.
  static void hidden(Step& st, int level, LevelArgs<Scalar, Mem> const& a, long r0, long r1) {
    hidden_gemm(st, level, a, r0, r1);
    hidden_padding(st, a, r0, r1);
  }
  /// hidden's two parts apart, for a schedule that runs the GEMM on another thread
  /// (gemm_overlap.hpp): the GEMM, and the rows it leaves out (a kernel on the space).
  static void hidden_gemm(Step& st, int level, LevelArgs<Scalar, Mem> const& a, long r0, long r1) {
    long const split = hidden_end(a, r0, r1);
    auto const rows = std::make_pair(r0, split);
    if (split > r0)
      ops::hidden(st.space, st.cache.weights, st.params, st.kernel_of(level),
                  Kokkos::subview(st.cache.history, rows, Kokkos::ALL), Kokkos::subview(a.gates, rows, Kokkos::ALL),
                  st.math);
  }
  static void hidden_padding(Step& st, LevelArgs<Scalar, Mem> const& a, long r0, long r1) {
    long const split = hidden_end(a, r0, r1);
    // Level 1's history is zero past t = d: those rows of S W^T are zero.
    if (split < r1)
      Kokkos::deep_copy(st.space, Kokkos::subview(a.gates, std::make_pair(split, r1), Kokkos::ALL), Scalar(0));
  }

  /// By backward, the slots hold dU: a recomputed level gets its U again, from the
  /// same GEMM on the same input, in one buffer shared by every slot.
  static void recompute(Step& st, int level, LevelArgs<Scalar, Mem>& a) {
    int const s = st.slots.of_level[std::size_t(level)];
    if (st.cache.recomputed_slot != s) {
      inject(st, s, st.cache.recomputed_injection);
      st.cache.recomputed_slot = s;
    }
    a.injection = st.cache.recomputed_injection;
  }

  static void begin_backward(Step& st) {
    Kokkos::deep_copy(st.space, st.cache.injection, Scalar(0));  // dU from here on
    st.cache.recomputed_slot = -1;
  }

  static void attach_gradient(Step& st, int level, LevelGradArgs<Scalar, Mem>& g) {
    g.d_injection = Step::slot(st.cache.injection, st.slots.of_level[std::size_t(level)]);
  }

  /// On rows [r0, r1), whose dA the cache's d_gates holds: dW += dA^T S and dS = dA W
  /// (level 1: only the rows t < d carry history).
  static void hidden_backward(Step& st, int level, LevelArgs<Scalar, Mem> const& a, long r0, long r1, bool) {
    on_hidden_rows(a, st.cache.d_gates, r0, r1, [&](auto const& dA_rows, auto rows) {
      ops::hidden_backward(st.space, st.cache.weights, st.params, *st.grads, st.kernel_of(level), dA_rows,
                           Kokkos::subview(st.cache.history, rows, Kokkos::ALL),
                           Kokkos::subview(st.cache.d_history, rows, Kokkos::ALL), st.math);
    });
  }

  /// hidden_backward's two halves apart, on rows [r0, r1) whose dA is `dA` (row 0 is
  /// r0): dW += dA^T S, and dS = dA W. For a schedule that overlaps them with the fused
  /// kernel (gemm_overlap.hpp); dense kernels only.
  template <class DAV>
  static void hidden_weight_backward(Step& st, int level, LevelArgs<Scalar, Mem> const& a, DAV const& dA, long r0,
                                     long r1) {
    on_hidden_rows(a, dA, r0, r1, [&](auto const& dA_rows, auto rows) {
      ops::hidden_weight_backward(st.space, st.cache.weights, st.kernel_of(level), dA_rows,
                                  Kokkos::subview(st.cache.history, rows, Kokkos::ALL), st.math);
    });
  }
  template <class DAV>
  static void hidden_data_backward(Step& st, int level, LevelArgs<Scalar, Mem> const& a, DAV const& dA, long r0,
                                   long r1) {
    on_hidden_rows(a, dA, r0, r1, [&](auto const& dA_rows, auto rows) {
      ops::hidden_data_backward(st.space, st.cache.weights, st.kernel_of(level), dA_rows,
                                Kokkos::subview(st.cache.d_history, rows, Kokkos::ALL), st.math);
    });
  }
  /// Rows [r0, r1) clipped to the level's hidden rows, and their part of dA (row 0 is
  /// r0); nothing when no row of them carries history.
  template <class DAV, class Apply>
  static void on_hidden_rows(LevelArgs<Scalar, Mem> const& a, DAV const& dA, long r0, long r1, Apply const& apply) {
    long const end = hidden_end(a, r0, r1);
    if (end > r0) apply(Kokkos::subview(dA, std::make_pair(0L, end - r0), Kokkos::ALL), std::make_pair(r0, end));
  }

  static void finish_level_backward(Step&, LevelArgs<Scalar, Mem> const&, typename Step::sequence const&) {}

  /// Per slot: dW1 += dU^T Xs, the bias gradient 1^T dU, and dx from dXs = dU W1.
  static void end_backward(Step& st, typename Step::sequence const& dx) {
    bool const want_dx = dx.extent(0) > 0;
    auto& c = st.cache;
    for (int s = 0; s < st.slots.count(); ++s) {
      auto const dU = Step::slot(c.injection, s);
      int const k = st.slots.kernel[std::size_t(s)], d = st.slots.dilation[std::size_t(s)];
      stack_input<Exec, Scalar, Mem>(st.space, c.x, d, c.stacked_input);
      ops::injection_backward(st.space, c.weights, st.params, *st.grads, k, dU, c.stacked_input,
                              want_dx ? c.d_stacked_input : typename Step::matrix(), st.math);
      blas::gemm(st.space, blas::Op::none, blas::Op::none, Scalar(1), c.ones, dU, Scalar(1),
                 Kokkos::subview(st.grads->bias2, std::make_pair(k, k + 1), Kokkos::ALL), st.math);
      if (want_dx) unstack_input_gradient<Exec, Scalar, Mem>(st.space, c.d_stacked_input, d, dx);
    }
  }
};

template <class Net>
struct FoldedInjection : InjectionTypes<Net> {
  using typename InjectionTypes<Net>::Step, typename InjectionTypes<Net>::Scalar, typename InjectionTypes<Net>::Mem,
      typename InjectionTypes<Net>::Exec, typename InjectionTypes<Net>::ops;
  using InjectionTypes<Net>::hidden_end;

  static void begin_forward(Step& st) {
    ops::fold_weights(st.space, st.cache.weights);
    st.cache.stacked_dilation = -1;  // a new x
  }

  static void attach(Step&, int, LevelArgs<Scalar, Mem>&) {}

  /// The input columns of the history for dilation d, unless they hold it already
  /// (levels of one dilation share them, as they share U when separate).
  static void stack(Step& st, int d) {
    if (st.cache.stacked_dilation == d) return;
    stack_input<Exec, Scalar, Mem>(st.space, st.cache.x, d, st.cache.history, 2 * st.shape.q());
    st.cache.stacked_dilation = d;
  }

  /// The hidden GEMM [S | Xs | 1] W~^T on rows [r0, r1) of the level.
  static void hidden(Step& st, int level, LevelArgs<Scalar, Mem> const& a, long r0, long r1) {
    long const q2 = 2 * st.shape.q(), width = long(st.cache.history.extent(1));
    long const split = hidden_end(a, r0, r1);
    auto const rows = std::make_pair(r0, split), rest = std::make_pair(split, r1);
    stack(st, a.d);
    int const k = st.kernel_of(level);
    if (split > r0)
      ops::hidden_folded(st.space, st.cache.weights, k, 0, Kokkos::subview(st.cache.history, rows, Kokkos::ALL),
                         Kokkos::subview(a.gates, rows, Kokkos::ALL), st.math);
    // Level 1 past t = d: its history is zero, the injection alone remains.
    if (split < r1)
      ops::hidden_folded(st.space, st.cache.weights, k, q2,
                         Kokkos::subview(st.cache.history, rest, std::make_pair(q2, width)),
                         Kokkos::subview(a.gates, rest, Kokkos::ALL), st.math);
  }

  static void recompute(Step&, int, LevelArgs<Scalar, Mem>&) {}
  static void begin_backward(Step& st) { st.cache.recomputed_slot = -1; }
  static void attach_gradient(Step&, int, LevelGradArgs<Scalar, Mem>&) {}

  /// On rows [r0, r1), whose dA the cache's d_gates holds: dW~ += dA^T [S | Xs | 1]
  /// (dW2, dW1 and the bias gradient at once), dS = dA W2 and, when dx is wanted,
  /// dXs = dA W1. Level 1's rows past t = d carry the injection alone.
  static void hidden_backward(Step& st, int level, LevelArgs<Scalar, Mem> const& a, long r0, long r1,
                              bool want_dx) {
    auto& c = st.cache;
    long const q2 = 2 * st.shape.q(), width = long(c.history.extent(1));
    long const to = want_dx ? q2 + 2 * st.shape.ninp : q2;
    int const k = st.kernel_of(level);
    stack(st, a.d);
    auto const dA = [&](long from, long until) {
      return Kokkos::subview(c.d_gates, std::make_pair(from - r0, until - r0), Kokkos::ALL);
    };
    long const split = hidden_end(a, r0, r1);
    if (split > r0) {
      auto const rows = std::make_pair(r0, split);
      ops::hidden_folded_backward(st.space, c.weights, k, 0, to, dA(r0, split),
                                  Kokkos::subview(c.history, rows, Kokkos::ALL),
                                  Kokkos::subview(c.d_history, rows, std::make_pair(0L, to)), st.math);
    }
    if (split < r1) {
      auto const rest = std::make_pair(split, r1);
      auto dS = Kokkos::subview(c.d_history, rest, std::make_pair(q2, to));
      using dS_type = decltype(dS);
      if (!want_dx) dS = dS_type();  // these rows' dS is the input's gradient only
      ops::hidden_folded_backward(st.space, c.weights, k, q2, to, dA(split, r1),
                                  Kokkos::subview(c.history, rest, std::make_pair(q2, width)), dS, st.math);
    }
  }

  /// After every block of a level: its dXs into dx.
  static void finish_level_backward(Step& st, LevelArgs<Scalar, Mem> const& a, typename Step::sequence const& dx) {
    if (dx.extent(0) > 0)
      unstack_input_gradient<Exec, Scalar, Mem>(st.space, st.cache.d_history, a.d, dx, 2 * st.shape.q());
  }

  static void end_backward(Step& st, typename Step::sequence const&) {
    ops::unfold_gradients(st.space, st.cache.weights, *st.grads);
  }
};

}  // namespace trellis::detail
