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
// (once per level when untied), then per level, one block of rows at a time, one GEMM
// of the masked history S = [m z~_{t-d} | m z~_t] with the hidden kernel and one fused
// kernel for bias, gates (i, o, g, f), cell and output. Backward: per level, one block
// of rows at a time, one fused kernel and the weight- and data-gradient GEMMs; the
// injection's GEMMs once per distinct dilation.
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
#include <trellis/core/cache.hpp>
#include <trellis/core/detail/dense_structure.hpp>
#include <trellis/core/detail/gemm_overlap.hpp>
#include <trellis/core/detail/injection.hpp>
#include <trellis/core/detail/level_kernels.hpp>
#include <trellis/core/detail/recompute_schedule.hpp>
#include <trellis/core/detail/rnn_sparse_structure.hpp>
#include <trellis/core/masks.hpp>
#include <trellis/core/parameters.hpp>
#include <trellis/core/shape.hpp>
#include <trellis/core/structure.hpp>
#include <trellis/core/weight_tying.hpp>
#include <trellis/errors.hpp>
#include <trellis/detail/memory_limits.hpp>
#include <trellis/detail/views.hpp>

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

/// Whether forward and backward overlap a level's GEMMs with its fused kernels on a
/// one-thread host space whose GEMMs have more threads (TrellisNetwork::overlaps_gemms):
/// `automatic` where the levels are large enough to pay for it, `on` wherever it can,
/// `off` never.
enum class GemmOverlap { automatic, on, off };

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
    if constexpr (std::is_same_v<Structure, Dense>) {
      // Weights (2p + 2q columns), their two gains and the bias, per output row; and the gradients.
      std::uint64_t const rows = detail::saturating_product({std::uint64_t(k), std::uint64_t(groups),
                                                             std::uint64_t(shape_.q())});
      std::uint64_t const columns = 2 * std::uint64_t(shape_.ninp) + 2 * std::uint64_t(shape_.q()) + 3;
      detail::check_fits<memory_space>("trellis::TrellisNetwork", "its parameters and their gradients (" +
                                                                      shape_.describe() + ")",
                                       detail::saturating_product({2, rows, columns, sizeof(Scalar)}));
    }
    params_ = structure_ops::allocate("trellis::TrellisNetwork::parameters", shape_, k, groups);
    grads_ = structure_ops::allocate("trellis::TrellisNetwork::gradients", shape_, k, groups);
    space.fence();
    structure_ops::initialize(params_, shape_, seed);
    slots_ = detail::InjectionSlots::for_shape<WeightTying>(shape_);
  }

  TrellisShape const& shape() const { return shape_; }
  int kernels() const { return WeightTying::kernels(shape_.nlevels); }
  /// Number of injection GEMMs per forward (distinct dilations, or levels when untied;
  /// none when the injection is folded into the hidden GEMMs).
  int injection_slots() const { return injection_folded() ? 0 : slots_.count(); }

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
  static int default_recompute_interval(int nlevels) { return detail::RecomputeSchedule::default_interval(nlevels); }

  /// Rows of a level that backward takes at a time: the fused kernel writes dA and the
  /// history S of one block, and the weight- and data-gradient GEMMs read them while
  /// they are still in cache; dA is kept for one block only (two when the GEMMs are
  /// overlapped). 0 (the default) chooses: blocks sized to the cache on host spaces
  /// where the GEMMs stay large enough (eight per level at least when overlapped), whole
  /// levels on devices and for RnnSparse. Results agree with whole levels to rounding
  /// (dW sums over blocks). Takes effect at the next forward.
  void set_backward_block_rows(long rows) { block_rows_ = checked_block_rows("set_backward_block_rows", rows); }
  long backward_block_rows() const { return block_rows_; }
  /// The block backward uses for R = length x batch rows (set_backward_block_rows).
  long backward_block_rows_for(long R) const {
    // Per row of a block: its gates read, dA, S and dS. Every block reads and writes dW.
    long const rows = block_rows_for(block_rows_, R, [](long Gq, long q, long width, bool) {
      return BlockTraffic{2 * Gq + width + 2 * q, 3 * Gq + width};
    });
    // Overlapped, a whole level would leave the other thread idle: eight blocks.
    if (block_rows_ == 0 && rows >= R && overlaps_gemms(R)) return overlap_block_rows(R);
    return rows;
  }

  /// Whether forward and backward run a level's GEMMs on a second thread while the fused
  /// kernels run on the space's one (core/detail/gemm_overlap.hpp): on Kokkos::Serial with host
  /// GEMMs on two or more threads (blas::set_serial_gemm_threads), dense kernels, the
  /// injection kept apart, and levels large enough to pay for it. Results agree with the
  /// sequential order to rounding, and do not depend on the threads' timing.
  bool overlaps_gemms(long R) const {
#if defined(KOKKOS_ENABLE_SERIAL)
    if constexpr (detail::gemm_overlap_supported && std::is_same_v<Structure, Dense> &&
                  std::is_same_v<ExecutionSpace, Kokkos::Serial>) {
      if (overlap_ == GemmOverlap::off || blas::host_gemm_threads(ExecutionSpace()) < 2 || injection_folded())
        return false;
      long const q = shape_.q();
      return overlap_ == GemmOverlap::on || double(R) * double(groups * q) * double(2 * q) >= overlap_min_multiply_adds;
    }
#endif
    (void)R;
    return false;
  }
  /// Takes effect at the next forward.
  void set_gemm_overlap(GemmOverlap mode) { overlap_ = mode; }
  GemmOverlap gemm_overlap() const { return overlap_; }
  /// A level's hidden GEMM below this many multiply-adds is not overlapped.
  static constexpr double overlap_min_multiply_adds = double(1L << 26);
  /// An eighth of a level, in whole multiples of eight rows.
  static long overlap_block_rows(long R) { return std::min(R, ((R + 7) / 8 + 7) / 8 * 8); }

  /// Rows of a level that forward takes at a time: the hidden GEMM writes one block's
  /// gates and the fused kernel reads them while they are still in cache. 0 (the
  /// default) chooses: blocks sized to the cache on host spaces where the GEMMs stay
  /// large enough (eight per level at least when overlapped), whole levels on devices
  /// and for RnnSparse. Results agree with whole
  /// levels to rounding (a GEMM on fewer rows may sum in another order). Takes effect
  /// at the next forward.
  void set_forward_block_rows(long rows) { forward_rows_ = checked_block_rows("set_forward_block_rows", rows); }
  long forward_block_rows() const { return forward_rows_; }
  /// The block forward uses for R = length x batch rows (set_forward_block_rows).
  long forward_block_rows_for(long R) const {
    // Per row of a block: the gates written and read, U, S and the cell. Every block
    // reads W again.
    long const rows = block_rows_for(forward_rows_, R, [](long Gq, long q, long width, bool folded) {
      return BlockTraffic{Gq + (folded ? 0 : Gq) + width + q, Gq + width};
    });
    // Overlapped, a whole level would leave the other thread idle: eight blocks.
    if (forward_rows_ == 0 && rows >= R && overlaps_gemms(R)) return overlap_block_rows(R);
    return rows;
  }
  /// What a block of rows holds, forward or backward, when the network chooses.
  static constexpr long block_bytes = 6L << 20;

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
               aux_view aux, cache_type& outer, masks_type const& masks = {}) const {
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
    auto& cache = outer.state_;
    prepare_cache(space, cache, L, N);
    cache.x = x;
    cache.h0 = h0;
    cache.c0 = c0;
    cache.masks = masks;
    structure_ops::forward_weights(space, params_, masks, cache.weights);

    step_type st{space, shape_, params_, nullptr, slots_, math_, cache};
    with_injection(cache, [&](auto injection) {
      injection.begin_forward(st);
      for (int level = 0; level < shape_.nlevels; ++level) {
        auto a = level_args(cache, level);
        injection.attach(st, level, a);
        if (level == 0) detail::first_history<ExecutionSpace, Scalar, memory_space>(space, a);
        a.out = out;
        a.h_new = h_new;
        a.c_new = c_new;
        a.aux_out = aux;
        forward_level(st, injection, level, a);
      }
    });
    // The block of the top level (when it is not a kept one) is still in the block slots.
    int const top = shape_.nlevels - 1;
    if (cache.schedule.kept(top)) cache.resident_lo = 0, cache.resident_hi = -1;
    else cache.resident_lo = cache.schedule.block_start(top), cache.resident_hi = top;
  }

  /// Backward pass of the forward that filled `cache`. Accumulates into gradients()
  /// and into dx (L, N, ninp), dh0 and dc0 (N, q); each of those may be empty when it
  /// is not wanted. d_h_new, d_c_new and d_aux may be empty (zero gradient).
  void backward(ExecutionSpace const& space, cache_type& outer, const_sequence_view d_out,
                const_state_view d_h_new, const_state_view d_c_new, const_aux_view d_aux,
                sequence_view dx, state_view dh0, state_view dc0) {
    char const* call = "trellis::TrellisNetwork::backward";
    auto& cache = outer.state_;
    long const L = cache.length, N = cache.batch, q = shape_.q();
    if (L == 0 || cache.gates.extent(0) == 0)
      detail::fail(call, ": the cache holds no forward pass");
    detail::check_shape(call, "d_out", d_out, {L, N, shape_.nout});
    if (d_h_new.extent(0) > 0) detail::check_shape(call, "d_h_new", d_h_new, {N, q});
    if (d_c_new.extent(0) > 0) detail::check_shape(call, "d_c_new", d_c_new, {N, q});
    if (d_aux.extent(0) > 0)
      detail::check_shape(call, "d_aux", d_aux, {shape_.naux(), L, N, shape_.nout});
    bool const want_dh0 = dh0.extent(0) > 0, want_dc0 = dc0.extent(0) > 0;
    if (dx.extent(0) > 0) detail::check_shape(call, "dx", dx, {L, N, shape_.ninp});
    if (want_dh0) detail::check_shape(call, "dh0", dh0, {N, q});
    if (want_dc0) detail::check_shape(call, "dc0", dc0, {N, q});

    structure_ops::begin_backward(space, cache.weights);
    step_type st{space, shape_, params_, &grads_, slots_, math_, cache};
    long const R = L * N, block = cache.backward_block;
    detail::LevelGradArgs<Scalar, memory_space> g;
    g.d_out = d_out;
    g.d_h_new = d_h_new;
    g.d_c_new = d_c_new;
    g.d_aux = d_aux;
    g.d_history = cache.d_history;
    g.d_gates = cache.d_gates;
    with_injection(cache, [&](auto injection) {
      injection.begin_backward(st);
      auto dc_above = cache.d_cell_a, dc_down = cache.d_cell_b;
      for (int level = shape_.nlevels - 1; level >= 0; --level) {
        // A level's backward reads it and the level below it: bring back whichever is gone.
        for (int needed : {level, level - 1})
          if (needed >= 0 && !resident(cache, needed)) recompute_block(st, injection, needed);
        auto a = level_args(cache, level);
        injection.attach(st, level, a);
        g.d_cell_above = dc_above;
        g.d_cell_down = dc_down;
        injection.attach_gradient(st, level, g);
        bool done = false;
        if constexpr (std::is_same_v<decltype(injection), detail::SeparateInjection<TrellisNetwork>> &&
                      std::is_same_v<Structure, Dense>) {
          // Decided by the forward that sized the cache, and still so.
          if (cache.overlapped && overlaps_gemms(R)) {
            overlapped_level_backward(st, injection, level, a, g);
            done = true;
          }
        }
        // Block by block, so that dA and S are still in cache when the GEMMs read them.
        for (long r0 = 0; !done && r0 < R; r0 += block) {
          long const r1 = std::min(R, r0 + block);
          g.d_gates_row = r0;
          detail::level_backward<Activation>(space, a, g, r0, r1);
          injection.hidden_backward(st, level, a, r0, r1, dx.extent(0) > 0);
        }
        injection.finish_level_backward(st, a, dx);
        if (want_dh0 || want_dc0)
          detail::history_backward<Activation, ExecutionSpace, Scalar, memory_space>(space, a, cache.d_history,
                                                                                     dc_down, dh0, dc0);
        std::swap(dc_above, dc_down);
      }
      injection.end_backward(st, dx);
    });
    structure_ops::finish_backward(space, params_, grads_, cache.masks, cache.weights);
  }

 private:
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space>;
  using matrices = Kokkos::View<Scalar***, Kokkos::LayoutRight, memory_space>;

  using state_type = detail::CacheState<memory_space, Scalar, Structure>;
  using step_type = detail::CoreStep<TrellisNetwork>;

  /// f(the injection strategy this cache was made for).
  template <class F>
  static void with_injection(state_type const& c, F&& f) {
    if constexpr (structure_ops::can_fold_injection) {
      if (c.folded) return f(detail::FoldedInjection<TrellisNetwork>{});
    }
    f(detail::SeparateInjection<TrellisNetwork>{});
  }

  /// Whether a level's gates and cell are in the cache now: kept, or in the block of
  /// recomputed levels the block slots hold.
  static bool resident(state_type const& c, int level) {
    return c.schedule.kept(level) || (c.resident_lo <= level && level <= c.resident_hi);
  }

  /// Recomputes the block of levels that holds `level` from the kept level below it
  /// (or from the start), with the same masks and weights as the forward: the same bits.
  /// Outputs, state and aux are not written again.
  template <class Injection>
  void recompute_block(step_type& st, Injection injection, int level) const {
    auto& cache = st.cache;
    int const lo = cache.schedule.block_start(level), hi = cache.schedule.block_end(level);
    for (int i = lo; i <= hi; ++i) {
      auto a = level_args(cache, i);
      a.top = false;
      a.aux = -1;
      injection.recompute(st, i, a);
      if (i == lo) {
        if (i == 0)
          detail::first_history<ExecutionSpace, Scalar, memory_space>(st.space, a);
        else
          detail::level_history<Activation>(st.space, a);
      }
      forward_level(st, injection, i, a);
    }
    cache.resident_lo = lo, cache.resident_hi = hi;
  }

  /// A level's backward blocks with their GEMMs overlapped (gemm_overlap.hpp): the fused
  /// kernel of block k writes its dA into slot k % 2 of the cache's d_gates; each
  /// block's GEMMs come in two chunks of rows.
  template <class Injection>
  void overlapped_level_backward(step_type& st, Injection injection, int level,
                                 detail::LevelArgs<Scalar, memory_space> const& a,
                                 detail::LevelGradArgs<Scalar, memory_space> const& g) const {
    auto& cache = st.cache;
    long const R = a.L * a.N, block = cache.backward_block, blocks = (R + block - 1) / block;
    constexpr int chunks = 2;
    // Everything the two threads share is made here: in the loop, Views are only read.
    detail::LevelGradArgs<Scalar, memory_space> slot_args[2] = {g, g};
    matrix slots[2];
    for (int s = 0; s < 2; ++s) {
      slots[s] = Kokkos::subview(cache.d_gates, std::make_pair(s * block, (s + 1) * block), Kokkos::ALL);
      slot_args[s].d_gates = slots[s];
    }
    auto const chunk = [&](long k, int c) { return detail::block_chunk(R, block, k, c, chunks); };
    auto const dA = [&](long k, std::pair<long, long> rows) {
      return Kokkos::subview(slots[k % 2], std::make_pair(rows.first - k * block, rows.second - k * block),
                             Kokkos::ALL);
    };
    detail::overlapped_blocks(
        blocks, chunks,
        [&](long k) {
          auto& b = slot_args[k % 2];
          b.d_gates_row = k * block;
          detail::level_backward<Activation>(st.space, a, b, k * block, std::min(R, (k + 1) * block));
        },
        [&](long k, int c) {
          auto const rows = chunk(k, c);
          injection.hidden_weight_backward(st, level, a, dA(k, rows), rows.first, rows.second);
        },
        [&](long k, int c) {
          auto const rows = chunk(k, c);
          injection.hidden_data_backward(st, level, a, dA(k, rows), rows.first, rows.second);
        });
  }

  /// A level's hidden GEMM and fused forward, block by block, so that the fused kernel
  /// reads the gates the GEMM wrote while they are still in cache. The kernel writes the
  /// next level's history over this level's: a block writes the rows shifted into later
  /// blocks only after their GEMM has read them. Forward and recomputation go through
  /// here alike, so recomputed levels get the same bits.
  template <class Injection>
  void forward_level(step_type& st, Injection injection, int level,
                     detail::LevelArgs<Scalar, memory_space> const& a) const {
    long const R = a.L * a.N, block = forward_block_rows_for(R), shift = long(a.d_next) * a.N;
    auto const fused = [&](long r0, long r1) {
      if (r0 > 0 && !a.top) detail::shifted_history(st.space, a, r0, std::min(r1, r0 + shift));
      detail::level_forward<Activation>(st.space, a, r0, r1, r1);
    };
    if constexpr (std::is_same_v<Injection, detail::SeparateInjection<TrellisNetwork>> &&
                  std::is_same_v<Structure, Dense>) {
      if (block < R && overlaps_gemms(R)) {
        // Block k's GEMM reads history rows no fused kernel before block k's writes.
        constexpr int chunks = 2;
        detail::gemms_ahead(
            (R + block - 1) / block, chunks,
            [&](long k, int c) {
              auto const rows = detail::block_chunk(R, block, k, c, chunks);
              injection.hidden_gemm(st, level, a, rows.first, rows.second);
            },
            [&](long k) {
              long const r0 = k * block, r1 = std::min(R, r0 + block);
              injection.hidden_padding(st, a, r0, r1);
              fused(r0, r1);
            });
        return;
      }
    }
    for (long r0 = 0; r0 < R; r0 += block) {
      long const r1 = std::min(R, r0 + block);
      injection.hidden(st, level, a, r0, r1);
      fused(r0, r1);
    }
  }

  /// Per row of a block, in scalars: what a block keeps in cache, and what it moves
  /// that pays for rereading the GEMM's weights (or their gradient) once per block.
  struct BlockTraffic {
    long kept, moved;
  };

  static long checked_block_rows(char const* call, long rows) {
    if (rows < 0)
      detail::fail("trellis::TrellisNetwork::", call, ": rows = ", rows,
                   "; use rows >= 1, or 0 to let the network choose");
    return rows;
  }

  /// The rows per block for a level of R rows: `set` when given; else, on host spaces,
  /// blocks of about block_bytes, or the whole level where a block moves too
  /// little against the 4q x width weights it rereads. Devices and RnnSparse: whole.
  template <class Traffic>
  long block_rows_for(long set, long R, Traffic traffic) const {
    if (set > 0) return std::min(set, R);
    if constexpr (!std::is_same_v<Structure, Dense> ||
                  !Kokkos::SpaceAccessibility<Kokkos::HostSpace, memory_space>::accessible) {
      (void)traffic;
      return R;
    } else {
      long const q = shape_.q(), Gq = groups * q;
      bool const folded = injection_folded();
      long const width = folded ? structure_ops::folded_width(shape_) : 2 * q;
      BlockTraffic const t = traffic(Gq, q, width, folded);
      long const rows = std::max<long>(1, block_bytes / (long(sizeof(Scalar)) * t.kept));
      if (rows >= R || rows * t.moved < 8 * Gq * width) return R;
      return rows;
    }
  }

  void check_masks(char const* call, masks_type const& m, long N) const {
    if (m.hidden.extent(0) > 0) detail::check_shape(call, "masks.hidden", m.hidden, {N, shape_.q()});
    structure_ops::check_masks(call, shape_, kernels(), groups, m);
  }

  void prepare_cache(ExecutionSpace const& space, state_type& c, long L, long N) const {
    long const q = shape_.q(), p = shape_.ninp, G = groups, R = L * N;
    auto alloc = [&](char const* name) { return detail::uninitialized(space, "trellis::TrellisCache::", name); };
    bool const folded = injection_folded();
    structure_ops::prepare(space, c.weights, shape_, kernels(), groups);
    if constexpr (structure_ops::can_fold_injection)
      structure_ops::prepare_folded(space, c.weights, shape_, kernels(), groups, folded);
    c.resident_lo = 0, c.resident_hi = -1;
    detail::RecomputeSchedule const schedule{interval_, shape_.nlevels};
    long const block = backward_block_rows_for(R);
    bool const overlapped = overlaps_gemms(R) && block < R;
    long const d_gates_rows = (overlapped ? 2 : 1) * block;
    if (c.length == L && c.batch == N && c.schedule.interval == interval_ && c.folded == folded &&
        c.gates.extent(0) == std::size_t(schedule.slots()) && c.d_gates.extent(0) == std::size_t(d_gates_rows) &&
        c.backward_block == block && c.overlapped == overlapped)
      return;
    c.backward_block = block;
    c.overlapped = overlapped;
    c.length = L;
    c.batch = N;
    c.schedule = schedule;
    c.folded = folded;
    c.stacked_dilation = -1;
    // Release the old buffers first, so that peak memory is the new size, not the sum.
    c.gates = matrices();
    c.cell = matrices();
    c.recomputed_injection = matrix();
    c.d_gates = matrix();
    int const slots = schedule.slots();
    c.gates = matrices(alloc("gates"), slots, R, G * q);
    c.cell = matrices(alloc("cell"), Activation::has_cell ? slots : 0, R, q);
    long const separate = folded ? 0 : R;  // rows of what only the separate injection needs
    c.injection = matrices(alloc("injection"), folded ? 0 : slots_.count(), R, G * q);
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
    c.d_gates = matrix(alloc("d_gates"), d_gates_rows, G * q);
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

  detail::LevelArgs<Scalar, memory_space> level_args(state_type const& c, int level) const {
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
    int const here = c.schedule.slot_of(level);
    int const below = level > 0 ? c.schedule.slot_of(level - 1) : -1;
    a.gates = Kokkos::subview(c.gates, here, Kokkos::ALL, Kokkos::ALL);
    if constexpr (Activation::has_cell) {
      a.cell = Kokkos::subview(c.cell, here, Kokkos::ALL, Kokkos::ALL);
      if (level > 0) a.cell_below = Kokkos::subview(c.cell, below, Kokkos::ALL, Kokkos::ALL);
    }
    if (level > 0) a.gates_below = Kokkos::subview(c.gates, below, Kokkos::ALL, Kokkos::ALL);
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
  detail::InjectionSlots slots_;
  blas::MathMode math_ = blas::MathMode::strict;
  InjectionMode injection_mode_ = InjectionMode::automatic;
  int interval_ = 1;
  long block_rows_ = 0;
  GemmOverlap overlap_ = GemmOverlap::automatic;
  long forward_rows_ = 0;
};

}  // namespace trellis
