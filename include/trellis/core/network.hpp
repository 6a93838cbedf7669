#pragma once
// TrellisNetwork: the TrellisNet core (Bai, Kolter, Koltun, ICLR 2019), forward and
// backward, on any Kokkos execution space.
//
// Shapes (every View LayoutRight, time-major, on the execution space's memory):
//   x      (L, N, ninp)          input sequence
//   h, c   (N, q)                carried state; q = nhid + nout
//   out    (L, N, nout)          last nout channels of the top level's z
//   aux    (naux, L, N, nout)    last nout channels of z at levels F, 2F, ...
//
// Per forward: the injection U = W1x x_{t-d} + W2x x_t once per distinct dilation
// (once per level when untied), then per level one GEMM of the masked history
// S = [m z~_{t-d} | m z~_t] with the hidden kernel and one fused kernel for bias,
// gates (i, o, g, f), cell and output. Backward: per level one fused kernel and the
// weight- and data-gradient GEMMs; the injection's GEMMs once per distinct dilation.
// With a narrow input (InjectionMode), the injection rides in the hidden GEMM instead:
// [S | x_{t-d} | x_t | 1] [W2 | W1 | 0]^T, and no U is kept.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <trellis/blas/gemm.hpp>
#include <trellis/core/activation.hpp>
#include <trellis/core/detail/dense_structure.hpp>
#include <trellis/core/detail/level_kernels.hpp>
#include <trellis/core/detail/rnn_sparse_structure.hpp>
#include <trellis/core/masks.hpp>
#include <trellis/core/parameters.hpp>
#include <trellis/core/shape.hpp>
#include <trellis/core/structure.hpp>
#include <trellis/core/weight_tying.hpp>
#include <trellis/errors.hpp>

namespace trellis {

/// Where the input injection is computed. `separate`: U = Xs W1^T once per distinct
/// dilation, kept (R, G q) per dilation and added by each level's fused kernel.
/// `folded`: the input columns ride in every level's hidden GEMM, K = 2q + 2p + 1
/// (padded to a multiple of 8), and nothing per dilation is kept. `automatic` folds
/// when ninp <= 16 (pixel-by-pixel
/// inputs): there the extra columns cost far less than writing and rereading U, its
/// gradient and their per-dilation GEMMs. Results agree to rounding; RnnSparse is
/// always separate.
enum class InjectionMode { automatic, separate, folded };

/// What forward keeps for backward. Made and resized by forward; reuse one per
/// network so that steady-state steps allocate nothing. Backward also reads the
/// x, h0, c0 and masks that forward was given: keep them unchanged until then.
template <class MemorySpace, class Scalar, class Structure = Dense>
struct TrellisCache {
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, MemorySpace>;
  using matrices = Kokkos::View<Scalar***, Kokkos::LayoutRight, MemorySpace>;
  long length = 0, batch = 0;
  // Inputs of the forward (handles, not copies).
  Kokkos::View<Scalar const***, Kokkos::LayoutRight, MemorySpace> x;
  Kokkos::View<Scalar const**, Kokkos::LayoutRight, MemorySpace> h0, c0;
  TrellisMasks<MemorySpace, Scalar> masks;
  // What the structure's products keep (dense: the effective weights of this forward).
  typename detail::StructureScratch<Structure, MemorySpace, Scalar>::type weights;
  // Activated gates (slots, R, G q) and cell (slots, R, q): one slot per level, or with
  // level recomputation one per kept level plus one block of recomputed levels.
  matrices gates, cell;
  int interval = 0;                  // the recomputation interval the slots were made for
  int resident_lo = 0, resident_hi = -1;  // recomputed levels the block slots now hold
  // Injection U per slot (slots, R, G q); backward turns it into dU. Recomputed levels
  // get their U again in `recomputed_injection` (R, G q), which holds slot
  // `recomputed_slot`'s: one buffer, however many dilations there are.
  matrices injection;
  matrix recomputed_injection;
  int recomputed_slot = -1;
  // Folded injection: the dilation whose input columns `history` holds (-1: none yet).
  bool folded = false;
  int stacked_dilation = -1;
  // Scratch.
  matrix history, d_history;      // (R, 2q); folded: (R, 2q + 2p + 1 + padding), (R, 2q + 2p)
  matrix stacked_input, d_stacked_input;  // (R, 2 ninp), separate injection only
  matrix d_gates;                 // (R, G q)
  matrix d_cell_a, d_cell_b;      // (R, q)
  matrix ones;                    // (1, R): bias gradient as a GEMM
  Kokkos::View<Scalar*, Kokkos::LayoutRight, MemorySpace> zero_row, unit_row;  // (q)
  Kokkos::View<Scalar*, Kokkos::LayoutRight, MemorySpace> zero_gates;          // (G q)

  /// Bytes this cache holds on its memory space (the structure's scratch not counted).
  std::size_t bytes() const {
    std::size_t total = 0;
    auto add = [&](auto const& v) { total += v.span() * sizeof(Scalar); };
    add(gates), add(cell), add(injection), add(recomputed_injection), add(history), add(d_history);
    add(stacked_input), add(d_stacked_input), add(d_gates), add(d_cell_a), add(d_cell_b);
    add(ones), add(zero_row), add(unit_row), add(zero_gates);
    return total;
  }
};

template <class ExecutionSpace, class Scalar, class WeightTying = TiedAcrossDepth,
          class Structure = Dense, class Activation = LSTMGating>
class TrellisNetwork {
  static_assert(Kokkos::is_execution_space<ExecutionSpace>::value,
                "trellis::TrellisNetwork: the first template argument is a Kokkos execution space");
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "trellis::TrellisNetwork: Scalar is float or double");
  static_assert(is_weight_tying_v<WeightTying>,
                "trellis::TrellisNetwork: WeightTying is TiedAcrossDepth or Untied");
  static_assert(is_structure_v<Structure>, "trellis::TrellisNetwork: Structure is Dense or RnnSparse");
  static_assert(is_activation_v<Activation>,
                "trellis::TrellisNetwork: Activation is LSTMGating, ElementwiseTanh or ElementwiseRelu");

 public:
  using execution_space = ExecutionSpace;
  using memory_space = typename ExecutionSpace::memory_space;
  using scalar_type = Scalar;
  using weight_tying = WeightTying;
  using structure = Structure;
  using activation = Activation;
  static constexpr int groups = Activation::groups;

  using sequence_view = Kokkos::View<Scalar***, Kokkos::LayoutRight, memory_space>;
  using const_sequence_view = Kokkos::View<Scalar const***, Kokkos::LayoutRight, memory_space>;
  using state_view = Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space>;
  using const_state_view = Kokkos::View<Scalar const**, Kokkos::LayoutRight, memory_space>;
  using aux_view = Kokkos::View<Scalar****, Kokkos::LayoutRight, memory_space>;
  using const_aux_view = Kokkos::View<Scalar const****, Kokkos::LayoutRight, memory_space>;
  using structure_ops = detail::StructureOps<Structure, ExecutionSpace, Scalar>;
  /// TrellisParameters for Dense, RnnSparseParameters for RnnSparse.
  using parameters_type = typename structure_ops::parameters_type;
  using masks_type = TrellisMasks<memory_space, Scalar>;
  using cache_type = TrellisCache<memory_space, Scalar, Structure>;

  TrellisNetwork(ExecutionSpace const& space, TrellisShape shape, std::uint64_t seed = 20190506)
      : shape_(std::move(shape)) {
    shape_.validate("trellis::TrellisNetwork");
    structure_ops::validate("trellis::TrellisNetwork", shape_);
    int const k = kernels();
    params_ = structure_ops::allocate("trellis::TrellisNetwork::parameters", shape_, k, groups);
    grads_ = structure_ops::allocate("trellis::TrellisNetwork::gradients", shape_, k, groups);
    space.fence();
    structure_ops::initialize(params_, shape_, seed);
    // Injection slots: one per distinct dilation when tied, one per level when untied.
    for (int level = 0; level < shape_.nlevels; ++level) {
      int const d = shape_.dilation_of(level);
      int slot = -1;
      if constexpr (WeightTying::tied) {
        for (std::size_t s = 0; s < slot_dilation_.size(); ++s)
          if (slot_dilation_[s] == d) slot = int(s);
      }
      if (slot < 0) {
        slot = int(slot_dilation_.size());
        slot_dilation_.push_back(d);
        slot_kernel_.push_back(WeightTying::kernel_of(level));
      }
      level_slot_.push_back(slot);
    }
  }

  TrellisShape const& shape() const { return shape_; }
  int kernels() const { return WeightTying::kernels(shape_.nlevels); }
  /// Number of injection GEMMs per forward (distinct dilations, or levels when untied;
  /// none when the injection is folded into the hidden GEMMs).
  int injection_slots() const { return injection_folded() ? 0 : int(slot_dilation_.size()); }

  /// Where the injection is computed (InjectionMode); takes effect at the next forward.
  void set_injection_mode(InjectionMode mode) {
    if (mode == InjectionMode::folded && !structure_ops::can_fold_injection)
      detail::fail("trellis::TrellisNetwork::set_injection_mode: the ", Structure::name,
                   " structure has no folded injection; use separate or automatic");
    injection_mode_ = mode;
  }
  InjectionMode injection_mode() const { return injection_mode_; }
  /// Whether forward folds the injection into the hidden GEMMs (InjectionMode).
  bool injection_folded() const {
    if constexpr (!structure_ops::can_fold_injection) return false;
    return injection_mode_ == InjectionMode::folded ||
           (injection_mode_ == InjectionMode::automatic && shape_.ninp <= fold_max_inputs);
  }
  static constexpr int fold_max_inputs = 16;
  parameters_type& parameters() { return params_; }
  parameters_type const& parameters() const { return params_; }
  parameters_type& gradients() { return grads_; }
  parameters_type const& gradients() const { return grads_; }
  /// Level recomputation (gradient checkpointing): forward keeps the gates and cell of
  /// every k-th level only (levels k, 2k, ...), and backward recomputes the levels in
  /// between from the kept level below them, k - 1 at a time. Memory falls from n
  /// levels to n / k + k - 1, at the cost of about one more forward per backward; the
  /// results are the same to the last bit. k = 1 keeps every level (the default);
  /// k = 0 chooses about sqrt(n). Takes effect at the next forward.
  void set_recompute_interval(int k) {
    if (k < 0)
      detail::fail("trellis::TrellisNetwork::set_recompute_interval: k = ", k,
                   "; use k >= 1 (1 keeps every level), or 0 for about sqrt(nlevels)");
    interval_ = k == 0 ? default_recompute_interval(shape_.nlevels) : k;
  }
  int recompute_interval() const { return interval_; }
  /// About sqrt(n), the interval that minimises n / k + k - 1.
  static int default_recompute_interval(int nlevels) {
    int k = 1;
    while ((k + 1) * (k + 1) <= nlevels) ++k;
    return k;
  }

  /// Precision of the GEMMs in single precision: strict FP32 (default), TF32 on CUDA, or
  /// bf16 products with fp32 sums (AMX on host CPUs that have it, cuBLAS on CUDA).
  void set_math_mode(blas::MathMode mode) { math_ = mode; }
  blas::MathMode math_mode() const { return math_; }

  void zero_gradients(ExecutionSpace const& space) {
    grads_.for_each([&](char const*, auto const& v) { Kokkos::deep_copy(space, v, Scalar(0)); });
  }

  /// Forward pass. Writes out, h_new, c_new and aux (aux may be empty when the network
  /// has no aux outputs). `masks` empty: inference. Fills `cache` for backward.
  void forward(ExecutionSpace const& space, const_sequence_view x, const_state_view h0,
               const_state_view c0, sequence_view out, state_view h_new, state_view c_new,
               aux_view aux, cache_type& cache, masks_type const& masks = {}) const {
    char const* call = "trellis::TrellisNetwork::forward";
    long const L = x.extent(0), N = x.extent(1), q = shape_.q();
    if (L == 0 || N == 0)
      detail::fail(call, ": x is ", detail::shape_of(x), "; length and batch must be >= 1");
    detail::check_shape(call, "x", x, {L, N, shape_.ninp});
    detail::check_shape(call, "h0", h0, {N, q});
    detail::check_shape(call, "c0", c0, {N, q});
    detail::check_shape(call, "out", out, {L, N, shape_.nout});
    detail::check_shape(call, "h_new", h_new, {N, q});
    detail::check_shape(call, "c_new", c_new, {N, q});
    if (shape_.naux() > 0 || aux.extent(0) > 0)
      detail::check_shape(call, "aux", aux, {shape_.naux(), L, N, shape_.nout});
    check_masks(call, masks, N);
    prepare_cache(space, cache, L, N);
    cache.x = x;
    cache.h0 = h0;
    cache.c0 = c0;
    cache.masks = masks;

    structure_ops::forward_weights(space, params_, masks, cache.weights);

    if (cache.folded) {
      if constexpr (structure_ops::can_fold_injection) structure_ops::fold_weights(space, cache.weights);
      cache.stacked_dilation = -1;  // a new x
    }
    for (int s = 0; !cache.folded && s < int(slot_dilation_.size()); ++s) {
      inject(space, cache, s, slot(cache.injection, s));
    }

    for (int level = 0; level < shape_.nlevels; ++level) {
      auto a = level_args(cache, level);
      if (level == 0) detail::first_history<ExecutionSpace, Scalar, memory_space>(space, a);
      a.out = out;
      a.h_new = h_new;
      a.c_new = c_new;
      a.aux_out = aux;
      forward_level(space, cache, level, a);
    }
    // The block of the top level (when it is not a kept one) is still in the block slots.
    int const top = shape_.nlevels - 1;
    if (kept(top, cache.interval)) {
      cache.resident_lo = 0, cache.resident_hi = -1;
    } else {
      cache.resident_lo = block_start(top, cache.interval), cache.resident_hi = top;
    }
  }

  /// Backward pass of the forward that filled `cache`. Accumulates into gradients()
  /// and into dx (L, N, ninp), dh0 and dc0 (N, q); each of those may be empty when it
  /// is not wanted. d_h_new, d_c_new and d_aux may be empty (zero gradient).
  void backward(ExecutionSpace const& space, cache_type& cache, const_sequence_view d_out,
                const_state_view d_h_new, const_state_view d_c_new, const_aux_view d_aux,
                sequence_view dx, state_view dh0, state_view dc0) {
    char const* call = "trellis::TrellisNetwork::backward";
    long const L = cache.length, N = cache.batch, q = shape_.q();
    if (L == 0 || cache.gates.extent(0) == 0)
      detail::fail(call, ": the cache holds no forward pass");
    detail::check_shape(call, "d_out", d_out, {L, N, shape_.nout});
    if (d_h_new.extent(0) > 0) detail::check_shape(call, "d_h_new", d_h_new, {N, q});
    if (d_c_new.extent(0) > 0) detail::check_shape(call, "d_c_new", d_c_new, {N, q});
    if (d_aux.extent(0) > 0)
      detail::check_shape(call, "d_aux", d_aux, {shape_.naux(), L, N, shape_.nout});
    bool const want_dx = dx.extent(0) > 0, want_dh0 = dh0.extent(0) > 0, want_dc0 = dc0.extent(0) > 0;
    if (want_dx) detail::check_shape(call, "dx", dx, {L, N, shape_.ninp});
    if (want_dh0) detail::check_shape(call, "dh0", dh0, {N, q});
    if (want_dc0) detail::check_shape(call, "dc0", dc0, {N, q});

    structure_ops::begin_backward(space, cache.weights);
    bool const recomputing = cache.interval > 1;
    auto const d_injection = cache.injection;  // dU from here on (empty when folded)
    Kokkos::deep_copy(space, d_injection, Scalar(0));
    cache.recomputed_slot = -1;

    detail::LevelGradArgs<Scalar, memory_space> g;
    g.d_out = d_out;
    g.d_h_new = d_h_new;
    g.d_c_new = d_c_new;
    g.d_aux = d_aux;
    g.d_history = cache.d_history;
    g.d_gates = cache.d_gates;
    auto dc_above = cache.d_cell_a, dc_down = cache.d_cell_b;
    for (int level = shape_.nlevels - 1; level >= 0; --level) {
      // A level's backward reads it and the level below it: bring back whichever is gone.
      if (recomputing)
        for (int needed : {level, level - 1})
          if (needed >= 0 && !kept(needed, cache.interval) &&
              !(cache.resident_lo <= needed && needed <= cache.resident_hi))
            recompute_block(space, cache, needed);
      auto a = level_args(cache, level);
      g.d_cell_above = dc_above;
      g.d_cell_down = dc_down;
      if (!cache.folded) g.d_injection = slot(d_injection, level_slot_[level]);
      detail::level_backward<Activation>(space, a, g);
      auto const rows = std::make_pair(0L, a.hidden_rows);
      auto const dA = Kokkos::subview(cache.d_gates, rows, Kokkos::ALL);
      // dW += dA^T S and dS = dA W (level 1: only the rows t < d carry history).
      if (cache.folded)
        folded_backward(space, cache, level, a, want_dx ? dx : sequence_view());
      else
        structure_ops::hidden_backward(space, cache.weights, params_, grads_, WeightTying::kernel_of(level), dA,
                                       Kokkos::subview(cache.history, rows, Kokkos::ALL),
                                       Kokkos::subview(cache.d_history, rows, Kokkos::ALL), math_);
      if (want_dh0 || want_dc0)
        detail::history_backward<Activation, ExecutionSpace, Scalar, memory_space>(
            space, a, cache.d_history, dc_down, dh0, dc0);
      std::swap(dc_above, dc_down);
    }

    for (int s = 0; !cache.folded && s < int(slot_dilation_.size()); ++s) {
      auto const dU = slot(d_injection, s);
      int const k = slot_kernel_[s];
      detail::stack_input<ExecutionSpace, Scalar, memory_space>(space, cache.x, slot_dilation_[s],
                                                               cache.stacked_input);
      structure_ops::injection_backward(space, cache.weights, params_, grads_, k, dU, cache.stacked_input,
                                        want_dx ? cache.d_stacked_input : matrix(), math_);
      blas::gemm(space, blas::Op::none, blas::Op::none, Scalar(1), cache.ones, dU, Scalar(1),
                 Kokkos::subview(grads_.bias2, std::make_pair(k, k + 1), Kokkos::ALL), math_);
      if (want_dx)
        detail::unstack_input_gradient<ExecutionSpace, Scalar, memory_space>(
            space, cache.d_stacked_input, slot_dilation_[s], dx);
    }

    if (cache.folded) {
      if constexpr (structure_ops::can_fold_injection)
        structure_ops::unfold_gradients(space, cache.weights, grads_);
    }
    structure_ops::finish_backward(space, params_, grads_, cache.masks, cache.weights);
  }

 private:
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space>;
  using matrices = Kokkos::View<Scalar***, Kokkos::LayoutRight, memory_space>;

  static auto slot(matrices const& m, int s) { return Kokkos::subview(m, s, Kokkos::ALL, Kokkos::ALL); }

  // Level recomputation with interval k: levels k-1, 2k-1, ... (0-based) are kept, each
  // in its own slot after the k-1 block slots; level i of a block uses block slot i % k.
  static bool kept(int level, int k) { return k <= 1 || (level + 1) % k == 0; }
  static int block_start(int level, int k) { return (level / k) * k; }
  int level_storage(int level, int k) const {
    if (k <= 1) return level;
    int const block_slots = std::min(k - 1, shape_.nlevels);
    return kept(level, k) ? block_slots + (level + 1) / k - 1 : level % k;
  }
  int storage_slots(int k) const {
    if (k <= 1) return shape_.nlevels;
    return std::min(k - 1, shape_.nlevels) + shape_.nlevels / k;
  }

  /// U of injection slot s (its dilation and kernel) from the cached input.
  template <class UV>
  void inject(ExecutionSpace const& space, cache_type const& cache, int s, UV const& U) const {
    detail::stack_input<ExecutionSpace, Scalar, memory_space>(space, cache.x, slot_dilation_[s],
                                                             cache.stacked_input);
    structure_ops::injection(space, cache.weights, params_, slot_kernel_[s], cache.stacked_input, U, math_);
  }

  /// A level's forward after its history is in place: the hidden GEMM, then the fused
  /// kernel, which also writes the next level's history.
  void forward_level(ExecutionSpace const& space, cache_type& cache, int level,
                     detail::LevelArgs<Scalar, memory_space> const& a) const {
    long const R = a.L * a.N;
    auto const rows = std::make_pair(0L, a.hidden_rows), rest = std::make_pair(a.hidden_rows, R);
    if (cache.folded) {
      if constexpr (structure_ops::can_fold_injection) {
        stack_folded_input(space, cache, a.d);
        int const k = WeightTying::kernel_of(level);
        long const q2 = 2 * shape_.q(), width = cache.history.extent(1);
        structure_ops::hidden_folded(space, cache.weights, k, 0, Kokkos::subview(cache.history, rows, Kokkos::ALL),
                                     Kokkos::subview(a.gates, rows, Kokkos::ALL), math_);
        // Level 1 past t = d: its history is zero, the injection alone remains.
        if (a.hidden_rows < R)
          structure_ops::hidden_folded(space, cache.weights, k, q2,
                                       Kokkos::subview(cache.history, rest, std::make_pair(q2, width)),
                                       Kokkos::subview(a.gates, rest, Kokkos::ALL), math_);
      }
    } else {
      structure_ops::hidden(space, cache.weights, params_, WeightTying::kernel_of(level),
                            Kokkos::subview(cache.history, rows, Kokkos::ALL),
                            Kokkos::subview(a.gates, rows, Kokkos::ALL), math_);
      // Level 1's history is zero past t = d: those rows of S W^T are zero.
      if (a.hidden_rows < R) Kokkos::deep_copy(space, Kokkos::subview(a.gates, rest, Kokkos::ALL), Scalar(0));
    }
    detail::level_forward<Activation>(space, a);
  }

  /// Folded injection: the input columns of the history for dilation d, if they hold
  /// another one (levels of one dilation share them, as they share U when separate).
  void stack_folded_input(ExecutionSpace const& space, cache_type& cache, int d) const {
    if (cache.stacked_dilation == d) return;
    detail::stack_input<ExecutionSpace, Scalar, memory_space>(space, cache.x, d, cache.history,
                                                             2 * shape_.q());
    cache.stacked_dilation = d;
  }

  /// Folded injection, one level of backward: dW~ += dA^T [S | Xs | 1] (this gives dW2,
  /// dW1 and the bias gradient at once), dS = dA W2 and, when dx is wanted, dXs = dA W1
  /// added into dx. Level 1's rows past t = d carry the injection alone.
  void folded_backward(ExecutionSpace const& space, cache_type& cache, int level,
                       detail::LevelArgs<Scalar, memory_space> const& a, sequence_view const& dx) const {
    if constexpr (structure_ops::can_fold_injection) {
      long const R = a.L * a.N, q2 = 2 * shape_.q(), width = cache.history.extent(1);
      bool const want_dx = dx.extent(0) > 0;
      long const to = want_dx ? q2 + 2 * shape_.ninp : q2;
      auto const rows = std::make_pair(0L, a.hidden_rows), rest = std::make_pair(a.hidden_rows, R);
      int const k = WeightTying::kernel_of(level);
      stack_folded_input(space, cache, a.d);
      structure_ops::hidden_folded_backward(space, cache.weights, k, 0, to,
                                            Kokkos::subview(cache.d_gates, rows, Kokkos::ALL),
                                            Kokkos::subview(cache.history, rows, Kokkos::ALL),
                                            Kokkos::subview(cache.d_history, rows, std::make_pair(0L, to)), math_);
      if (a.hidden_rows < R) {
        auto dS = Kokkos::subview(cache.d_history, rest, std::make_pair(q2, to));
        using dS_type = decltype(dS);
        if (!want_dx) dS = dS_type();  // these rows' dS is the input's gradient only
        structure_ops::hidden_folded_backward(space, cache.weights, k, q2, to,
                                              Kokkos::subview(cache.d_gates, rest, Kokkos::ALL),
                                              Kokkos::subview(cache.history, rest, std::make_pair(q2, width)),
                                              dS, math_);
      }
      if (want_dx)
        detail::unstack_input_gradient<ExecutionSpace, Scalar, memory_space>(space, cache.d_history, a.d, dx, q2);
    } else {
      (void)space, (void)cache, (void)level, (void)a, (void)dx;
    }
  }

  /// Recomputes the block of levels that holds `level` from the kept level below it
  /// (or from the start), with the same masks and weights as the forward: the same bits.
  /// Outputs, state and aux are not written again.
  void recompute_block(ExecutionSpace const& space, cache_type& cache, int level) const {
    int const k = cache.interval;
    int const lo = block_start(level, k), hi = std::min(lo + k - 2, shape_.nlevels - 1);
    for (int i = lo; i <= hi; ++i) {
      auto a = level_args(cache, i);
      a.top = false;
      a.aux = -1;
      // The slot holds dU by now: the same GEMM on the same input gives U again.
      if (!cache.folded) {
        int const s = level_slot_[i];
        if (cache.recomputed_slot != s) {
          inject(space, cache, s, cache.recomputed_injection);
          cache.recomputed_slot = s;
        }
        a.injection = cache.recomputed_injection;
      }
      if (i == lo) {
        if (i == 0)
          detail::first_history<ExecutionSpace, Scalar, memory_space>(space, a);
        else
          detail::level_history<Activation>(space, a);
      }
      forward_level(space, cache, i, a);
    }
    cache.resident_lo = lo, cache.resident_hi = hi;
  }

  void check_masks(char const* call, masks_type const& m, long N) const {
    if (m.hidden.extent(0) > 0) detail::check_shape(call, "masks.hidden", m.hidden, {N, shape_.q()});
    structure_ops::check_masks(call, shape_, kernels(), groups, m);
  }

  void prepare_cache(ExecutionSpace const& space, cache_type& c, long L, long N) const {
    long const q = shape_.q(), p = shape_.ninp, G = groups, R = L * N;
    auto alloc = [&](char const* name) {
      return Kokkos::view_alloc(space, Kokkos::WithoutInitializing, std::string("trellis::TrellisCache::") + name);
    };
    bool const folded = injection_folded();
    structure_ops::prepare(space, c.weights, shape_, kernels(), groups);
    if constexpr (structure_ops::can_fold_injection)
      structure_ops::prepare_folded(space, c.weights, shape_, kernels(), groups, folded);
    c.resident_lo = 0, c.resident_hi = -1;
    if (c.length == L && c.batch == N && c.interval == interval_ && c.folded == folded &&
        c.gates.extent(0) == std::size_t(storage_slots(interval_)))
      return;
    c.length = L;
    c.batch = N;
    c.interval = interval_;
    c.folded = folded;
    c.stacked_dilation = -1;
    // Release the old buffers first, so that peak memory is the new size, not the sum.
    c.gates = matrices();
    c.cell = matrices();
    c.recomputed_injection = matrix();
    int const slots = storage_slots(interval_);
    c.gates = matrices(alloc("gates"), slots, R, G * q);
    c.cell = matrices(alloc("cell"), Activation::has_cell ? slots : 0, R, q);
    long const separate = folded ? 0 : R;  // rows of what only the separate injection needs
    c.injection = matrices(alloc("injection"), folded ? 0 : int(slot_dilation_.size()), R, G * q);
    c.recomputed_injection = matrix(alloc("recomputed_injection"), interval_ > 1 ? separate : 0, G * q);
    // Folded: [S | x_{t-d} | x_t | 1 | 0 ...]; the ones column gives the bias gradient,
    // the zero columns pad rows to an aligned width (their kernel columns are zero too,
    // but 0 * NaN is not 0: they must be zeros).
    long width = 2 * q;
    if constexpr (structure_ops::can_fold_injection)
      if (folded) width = structure_ops::folded_width(shape_);
    c.history = matrix(alloc("history"), R, width);
    c.d_history = matrix(alloc("d_history"), R, folded ? 2 * q + 2 * p : 2 * q);
    if (folded) {
      auto const tail = Kokkos::subview(c.history, Kokkos::ALL, std::make_pair(2 * q + 2 * p, width));
      Kokkos::deep_copy(space, tail, Scalar(0));
      Kokkos::deep_copy(space, Kokkos::subview(c.history, Kokkos::ALL, 2 * q + 2 * p), Scalar(1));
    }
    c.stacked_input = matrix(alloc("stacked_input"), separate, 2 * p);
    c.d_stacked_input = matrix(alloc("d_stacked_input"), separate, 2 * p);
    c.d_gates = matrix(alloc("d_gates"), R, G * q);
    c.d_cell_a = matrix(alloc("d_cell_a"), Activation::has_cell ? R : 0, q);
    c.d_cell_b = matrix(alloc("d_cell_b"), Activation::has_cell ? R : 0, q);
    c.ones = matrix(alloc("ones"), 1, separate);
    Kokkos::deep_copy(space, c.ones, Scalar(1));
    c.zero_gates = decltype(c.zero_gates)(alloc("zero_gates"), G * q);
    Kokkos::deep_copy(space, c.zero_gates, Scalar(0));
    c.zero_row = decltype(c.zero_row)(alloc("zero_row"), q);
    c.unit_row = decltype(c.unit_row)(alloc("unit_row"), q);
    Kokkos::deep_copy(space, c.zero_row, Scalar(0));
    Kokkos::deep_copy(space, c.unit_row, Scalar(1));
  }

  detail::LevelArgs<Scalar, memory_space> level_args(cache_type const& c, int level) const {
    detail::LevelArgs<Scalar, memory_space> a;
    int const n = shape_.nlevels;
    a.L = c.length;
    a.N = c.batch;
    a.q = shape_.q();
    a.nout = shape_.nout;
    a.d = shape_.dilation_of(level);
    a.d_next = level + 1 < n ? shape_.dilation_of(level + 1) : 1;
    a.d_above = a.d_next;
    a.first = level == 0;
    a.top = level == n - 1;
    a.hidden_rows = level == 0 ? std::min<long>(a.d, a.L) * a.N : a.L * a.N;
    a.aux = shape_.aux_index(level);
    int const here = level_storage(level, c.interval);
    int const below = level > 0 ? level_storage(level - 1, c.interval) : -1;
    a.gates = Kokkos::subview(c.gates, here, Kokkos::ALL, Kokkos::ALL);
    if constexpr (Activation::has_cell) {
      a.cell = Kokkos::subview(c.cell, here, Kokkos::ALL, Kokkos::ALL);
      if (level > 0) a.cell_below = Kokkos::subview(c.cell, below, Kokkos::ALL, Kokkos::ALL);
    }
    if (level > 0) a.gates_below = Kokkos::subview(c.gates, below, Kokkos::ALL, Kokkos::ALL);
    if (!c.folded) a.injection = slot(c.injection, level_slot_[level]);
    a.zero_gates = c.zero_gates;
    a.bias = Kokkos::subview(params_.bias2, WeightTying::kernel_of(level), Kokkos::ALL);
    a.h0 = c.h0;
    a.c0 = c.c0;
    a.mask = c.masks.hidden;
    a.history = c.history;
    a.zero_row = c.zero_row;
    a.unit_row = c.unit_row;
    return a;
  }

  TrellisShape shape_;
  parameters_type params_, grads_;
  std::vector<int> slot_dilation_, slot_kernel_, level_slot_;
  blas::MathMode math_ = blas::MathMode::strict;
  InjectionMode injection_mode_ = InjectionMode::automatic;
  int interval_ = 1;
};

}  // namespace trellis
