#pragma once
// TrellisStream: exact incremental inference. A TrellisNet's level i at time t reads
// only z and c of the level below at t and t - d_i, and the input at t and t - d_i; so
// N independent streams advance one step at a time from, per level, the last d_i
// columns of the level below (a ring) and the last max(d) inputs. A step costs one
// row-block of the forward's work per level, not a forward over a window, and gives the
// forward's numbers: the same padding (z and c before time 0 are h0 and c0 at every
// level, inputs before time 0 are zero), the same effective weights, the same kernels'
// order of operations. Dropout is off; aux outputs are not produced.
//
//   TrellisStream stream(space, net, N, h0, c0);     // weight norm applied here, once
//   stream.prefill(space, net, prompt, prompt_out);   // optional: one forward over a prompt
//   stream.step(space, x_t, out_t);                   // x_t (N, ninp) -> out_t (N, nout)
//   stream.reset(space, n);                           // a new document in stream n
//
// A step allocates nothing and waits for nothing: per injection slot one GEMM of
// (N, 2 ninp), per level one GEMM of (N, 2q) and one fused kernel that also moves the
// rings. The stream takes the network's weights when it is made (and on prefill and
// refresh_weights); train the network further and refresh them.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#include <trellis/core/detail/stream_gemm.hpp>
#include <trellis/core/detail/stream_kernels.hpp>
#include <trellis/core/network.hpp>
#include <trellis/detail/kernel_shape.hpp>
#include <trellis/detail/memory_limits.hpp>
#include <trellis/detail/views.hpp>
#include <trellis/errors.hpp>

namespace trellis {

template <class Network>
class TrellisStream {
 public:
  using execution_space = typename Network::execution_space;
  using memory_space = typename Network::memory_space;
  using scalar_type = typename Network::scalar_type;
  using activation = typename Network::activation;
  using matrix = Kokkos::View<scalar_type**, Kokkos::LayoutRight, memory_space>;
  using const_matrix = Kokkos::View<scalar_type const**, Kokkos::LayoutRight, memory_space>;
  using sequence_view = typename Network::sequence_view;
  using const_sequence_view = typename Network::const_sequence_view;

  TrellisStream() = default;

  /// `streams` independent sequences starting from (h0, c0), each (streams, q); empty
  /// views start from zeros. Reset streams return to these rows.
  TrellisStream(execution_space const& space, Network const& net, long streams, const_matrix h0 = {},
                const_matrix c0 = {})
      : shape_(net.shape()), N_(streams) {
    char const* call = "trellis::TrellisStream";
    if (streams < 1) detail::fail(call, ": streams is ", streams, ", need at least 1");
    long const q = shape_.q(), p = shape_.ninp, G = Network::groups;
    {
      // Per stream: rings of z and c, the inputs, the injection per slot, the history,
      // gates and cell, h0 and c0; checked before anything is allocated.
      std::uint64_t rows = 0;
      for (int level = 0; level < shape_.nlevels; ++level) rows += std::uint64_t(shape_.dilation_of(level));
      std::uint64_t const per_stream =
          2 * rows * std::uint64_t(q) + std::uint64_t(shape_.max_dilation()) * std::uint64_t(p) +
          std::uint64_t(shape_.nlevels) * std::uint64_t(G * q + 2 * p) + std::uint64_t(8 * q + 2 * G * q);
      detail::check_fits<memory_space>(call, "the state of " + std::to_string(streams) + " streams",
                                       detail::saturating_product({std::uint64_t(streams), per_stream,
                                                                   sizeof(scalar_type)}));
    }
    auto alloc = [&](char const* name) { return detail::uninitialized(space, "trellis::TrellisStream::", name); };
    h0_ = matrix(alloc("h0"), N_, q);
    c0_ = matrix(alloc("c0"), N_, q);
    for (auto [given, mine, name] : {std::tuple{h0, h0_, "h0"}, std::tuple{c0, c0_, "c0"}}) {
      if (given.extent(0) == 0) {
        Kokkos::deep_copy(space, mine, scalar_type(0));
        continue;
      }
      detail::check_shape(call, name, given, {N_, q});
      Kokkos::deep_copy(space, mine, given);
    }
    slots_ = detail::InjectionSlots::for_shape<typename Network::weight_tying>(shape_);
    long rows = 0;
    for (int level = 0; level < shape_.nlevels; ++level) {
      ring_row_.push_back(rows);
      rows += shape_.dilation_of(level);
    }
    below_z_ = matrices(alloc("below_z"), rows, N_, q);
    below_c_ = matrices(alloc("below_c"), activation::has_cell ? rows : 0, N_, q);
    inputs_ = matrices(alloc("inputs"), shape_.max_dilation(), N_, p);
    stacked_ = matrices(alloc("stacked_input"), slots_.count(), N_, 2 * p);
    injection_ = matrices(alloc("injection"), slots_.count(), N_, G * q);
    history_ = matrix(alloc("history"), N_, 2 * q);
    gates_ = matrix(alloc("gates"), N_, G * q);
    cell_prev_ = matrix(alloc("cell_prev"), activation::has_cell ? N_ : 0, q);
    long const tap0_rows = few_rows_possible() ? shape_.nlevels * N_ : 0;
    tap0_in_ = matrix(alloc("tap0_in"), tap0_rows, q);
    tap0_out_ = matrix(alloc("tap0_out"), tap0_rows, G * q);
    Kokkos::deep_copy(space, tap0_out_, scalar_type(0));
    if (few_rows_possible()) {
      wt1_ = matrices(alloc("weight1_transposed"), net.kernels(), 2 * p, G * q);
      wt2_ = matrices(alloc("weight2_transposed"), net.kernels(), 2 * q, G * q);
    }
    {
      space.fence();
      auto const host_h0 = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), h0_);
      zero_padding_ = std::all_of(host_h0.data(), host_h0.data() + host_h0.span(),
                                  [](scalar_type v) { return v == scalar_type(0); });
    }
    Kokkos::View<int*, memory_space> dilation(alloc("slot_dilation"), slots_.count());
    auto host = Kokkos::create_mirror_view(dilation);
    for (int s = 0; s < slots_.count(); ++s) host(s) = slots_.dilation[std::size_t(s)];
    Kokkos::deep_copy(space, dilation, host);
    space.fence();  // `host` is freed at return
    slot_dilation_ = dilation;
    refresh_weights(space, net);
    reset(space);
  }

  long streams() const { return N_; }
  TrellisShape const& shape() const { return shape_; }
  /// Steps taken since the stream was made, fully reset or prefilled (the prompt's length).
  long position() const { return t_; }
  /// Bytes the stream holds on its memory space (effective weights included).
  std::size_t bytes() const {
    std::size_t total = 0;
    auto add = [&](auto const& v) { total += v.span() * sizeof(scalar_type); };
    add(below_z_), add(below_c_), add(inputs_), add(stacked_), add(injection_), add(history_), add(gates_);
    add(cell_prev_), add(h0_), add(c0_), add(tap0_in_), add(tap0_out_), add(wt1_), add(wt2_);
    if constexpr (std::is_same_v<typename Network::structure, Dense>)
      add(weights_.weight1), add(weights_.weight2), add(weights_.weight1_norm), add(weights_.weight2_norm);
    return total;
  }

  /// Takes the network's current weights (weight norm applied here, not per step).
  void refresh_weights(execution_space const& space, Network const& net) {
    if (!(net.shape().describe() == shape_.describe()))
      detail::fail("trellis::TrellisStream::refresh_weights: the network is ", net.shape().describe(),
                   ", the stream was made for ", shape_.describe());
    params_ = net.parameters();
    math_ = net.math_mode();
    structure_ops::prepare(space, weights_, shape_, net.kernels(), Network::groups);
    structure_ops::forward_weights(space, params_, typename Network::masks_type{}, weights_);
    transpose_weights(space);
  }

  /// Every stream back to its (h0, c0), as if just made.
  void reset(execution_space const& space) {
    reset_rows(space, -1);
    t_ = 0;
  }

  /// Stream n alone back to its (h0, c0): its next step is its time 0.
  void reset(execution_space const& space, long n) {
    if (n < 0 || n >= N_) detail::fail("trellis::TrellisStream::reset: stream ", n, " of ", N_);
    reset_rows(space, n);
  }

  /// Advances every stream by one step: x_t (N, ninp) in, out_t (N, nout) out (the last
  /// nout channels of the top level's z_t).
  void step(execution_space const& space, const_matrix x_t, matrix out_t) {
    char const* call = "trellis::TrellisStream::step";
    if (below_z_.extent(0) == 0) detail::fail(call, ": the stream was default-constructed; make it from a network");
    long const q = shape_.q(), p = shape_.ninp, t = t_;
    detail::check_shape(call, "x_t", x_t, {N_, p});
    detail::check_shape(call, "out_t", out_t, {N_, long(shape_.nout)});
    detail::for_each_small_index("trellis::TrellisStream::stack_input", space, N_, p,
                           detail::StreamStackInput<scalar_type, memory_space>{x_t, inputs_, stacked_,
                                                                               slot_dilation_, t, p});
    for (int s = 0; s < slots_.count(); ++s)
      injection(space, slots_.kernel[std::size_t(s)], slot(stacked_, s), slot(injection_, s));
    bool const split = few_rows();
    if (split) tap0_products(space, t);
    detail::for_each_small_index("trellis::TrellisStream::first_history", space, N_, q,
                                 detail::StreamFirstHistory<scalar_type, memory_space, activation::has_cell>{
                                     below_z_, below_c_, history_, cell_prev_, ring_row(0, t), q});
    int const n = shape_.nlevels;
    for (int level = 0; level < n; ++level) {
      int const k = Network::weight_tying::kernel_of(level);
      if (!split)
        structure_ops::hidden(space, weights_, params_, k, history_, gates_, math_);
      else if (level > 0)
        tap1_product(space, k, level == n - 1);
      bool const top = level == n - 1;
      detail::StreamLevel<activation, scalar_type, memory_space> f{
          gates_,     injection_,  params_.bias2, tap0_out_, history_, cell_prev_, below_z_, below_c_, out_t,
          slots_.of_level[std::size_t(level)], k, q, q - shape_.nout, top ? 0 : ring_row(level + 1, t),
          level * N_, N_, top, split, split && level == 0};
      run_level(space, f);
    }
    ++t_;
  }

  /// Resets every stream, then runs one forward of `net` over x (T, N, ninp) from
  /// (h0, c0), writes its outputs to out (T, N, nout) and leaves every stream where
  /// stepping through x would have: the next step is time T. Takes net's weights.
  void prefill(execution_space const& space, Network const& net, const_sequence_view x, sequence_view out) {
    char const* call = "trellis::TrellisStream::prefill";
    long const T = long(x.extent(0)), q = shape_.q(), p = shape_.ninp, nout = shape_.nout;
    if (T == 0) detail::fail(call, ": the prompt x is ", detail::shape_of(x), "; it needs at least one step");
    detail::check_shape(call, "x", x, {T, N_, p});
    detail::check_shape(call, "out", out, {T, N_, nout});
    refresh_weights(space, net);
    Network local = net;  // a handle copy (the same parameters) that keeps every level
    local.set_recompute_interval(1);
    auto alloc = [&](char const* name) { return detail::uninitialized(space, "trellis::TrellisStream::", name); };
    matrix h_new(alloc("h_new"), N_, q), c_new(alloc("c_new"), N_, q);
    typename Network::aux_view aux(alloc("aux"), shape_.naux(), T, N_, nout);
    typename Network::cache_type cache;
    local.forward(space, x, h0_, c0_, out, h_new, c_new, aux, cache);
    auto const& c = cache.state_;
    for (int level = 0; level < shape_.nlevels; ++level) {
      long const d = shape_.dilation_of(level);
      detail::StreamFillRing<activation, scalar_type, memory_space> f{
          below_z_, below_c_, {}, {}, h0_, c0_, ring_row_[std::size_t(level)], d, T, N_, q, level == 0};
      if (level > 0) {
        int const below = c.schedule.slot_of(level - 1);
        f.gates = Kokkos::subview(c.gates, below, Kokkos::ALL, Kokkos::ALL);
        if constexpr (activation::has_cell) f.cell = Kokkos::subview(c.cell, below, Kokkos::ALL, Kokkos::ALL);
      }
      detail::for_each_small_index("trellis::TrellisStream::fill_ring", space, d * N_, q, f);
    }
    long const D = long(inputs_.extent(0));
    detail::for_each_small_index("trellis::TrellisStream::fill_inputs", space, D * N_, p,
                           detail::StreamFillInputs<scalar_type, memory_space>{inputs_, x, D, T, N_});
    space.fence();  // the cache is freed at return
    t_ = T;
  }

 private:
  using structure_ops = typename Network::structure_ops;
  using matrices = Kokkos::View<scalar_type***, Kokkos::LayoutRight, memory_space>;

  static auto slot(matrices const& m, int s) { return Kokkos::subview(m, s, Kokkos::ALL, Kokkos::ALL); }

  template <class M>
  static auto columns(M const& m, long from, long to) {
    return Kokkos::subview(m, Kokkos::ALL, std::make_pair(from, to));
  }

  /// Whether the step takes the host path for a few streams of a dense network: its
  /// products through detail::few_rows_times on transposed weights, and the tap-0 halves of every
  /// level's hidden product (z_{t-d} is in the rings before the step starts) as one
  /// product, so that each level reads only the other half of its kernel.
  bool few_rows() const {
    return few_rows_possible() && math_ != blas::MathMode::bf16 && detail::host_shaped<execution_space>();
  }
  bool few_rows_possible() const {
    constexpr bool host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, memory_space>::accessible;
    return host && std::is_same_v<typename Network::structure, Dense> && N_ <= few_rows_limit;
  }
  static constexpr long few_rows_limit = 4;

  /// U = [x_{t-d} | x_t] W1_k^T for one injection slot.
  template <class XS, class UV>
  void injection(execution_space const& space, int k, XS const& xs, UV const& U) const {
    if constexpr (std::is_same_v<typename Network::structure, Dense>)
      if (few_rows()) return detail::few_rows_times("trellis::TrellisStream::injection", space, xs, slot(wt1_, k), U);
    structure_ops::injection(space, weights_, params_, k, xs, U, math_);
  }

  /// W_tap^T of kernel k (q x G q): tap 0 multiplies z_{t-d}, tap 1 z_t.
  auto tap(int k, int which) const {
    long const q = shape_.q();
    return Kokkos::subview(wt2_, k, std::make_pair(which * q, (which + 1) * q), Kokkos::ALL);
  }

  /// The few-row path's transposed effective weights, from weights_.
  void transpose_weights(execution_space const& space) {
    if constexpr (std::is_same_v<typename Network::structure, Dense>) {
      if (!few_rows_possible()) return;
      space.fence();
      for (auto [w, wt] : {std::pair{weights_.weight1, wt1_}, std::pair{weights_.weight2, wt2_}})
        for (long k = 0; k < long(w.extent(0)); ++k)
          for (long i = 0; i < long(w.extent(1)); ++i)
            for (long c = 0; c < long(w.extent(2)); ++c) wt(k, c, i) = w(k, i, c);
    }
  }

  /// A1 = z_t W_tap1^T of one level (the few-row path); on the top level only the gates
  /// of its output channels.
  void tap1_product(execution_space const& space, int k, bool top) const {
    if constexpr (std::is_same_v<typename Network::structure, Dense>) {
      long const q = shape_.q(), nout = shape_.nout;
      detail::RowBlocks blocks;
      if (top) blocks = {Network::groups, q, q - nout, nout};
      detail::few_rows_times("trellis::TrellisStream::hidden", space, columns(history_, q, 2 * q), tap(k, 1), gates_,
                             blocks);
    }
  }

  /// A0 of every level: z_{t-d} from each level's ring row, times the tap-0 half of its
  /// kernel (one product for all levels when the weights are tied).
  void tap0_products(execution_space const& space, long t) {
    if constexpr (std::is_same_v<typename Network::structure, Dense>) {
      long const q = shape_.q();
      space.fence();
      // With h0 = 0 the lowest level's z_{t-d} is zero at every step: its rows of tap0_out_
      // stay zero (set when the stream was made).
      int const from = zero_padding_ ? 1 : 0;
      for (int level = from; level < shape_.nlevels; ++level) {
        long const r = ring_row(level, t);
        for (long n = 0; n < N_; ++n)
          for (long j = 0; j < q; ++j) tap0_in_(level * N_ + n, j) = below_z_(r, n, j);
      }
      auto const block = [&](matrix const& m, long level, long levels) {
        return Kokkos::subview(m, std::make_pair(level * N_, (level + levels) * N_), Kokkos::ALL);
      };
      if constexpr (Network::weight_tying::tied) {
        if (from < shape_.nlevels)
          detail::few_rows_times("trellis::TrellisStream::tap0", space, block(tap0_in_, from, shape_.nlevels - from),
                                 tap(0, 0), block(tap0_out_, from, shape_.nlevels - from));
      } else {
        for (int level = from; level < shape_.nlevels; ++level)
          detail::few_rows_times("trellis::TrellisStream::tap0", space, block(tap0_in_, level, 1), tap(level, 0),
                                 block(tap0_out_, level, 1));
      }
    }
  }

  /// A level's fused kernel: on host spaces row by row (few rows on the calling thread),
  /// on devices channel by channel.
  template <class F>
  void run_level(execution_space const& space, F const& f) const {
    if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, memory_space>::accessible) {
      if (detail::host_shaped<execution_space>()) {
        if (N_ * shape_.q() <= 8192) {
          space.fence();
          for (long n = 0; n < N_; ++n) f(detail::RowTag{}, n);
        } else {
          Kokkos::parallel_for("trellis::TrellisStream::level", Kokkos::RangePolicy<execution_space, detail::RowTag>(space, 0, N_), f);
        }
        return;
      }
    }
    detail::for_each_index("trellis::TrellisStream::level", space, N_, shape_.q(), f);
  }

  long ring_row(int level, long t) const {
    return ring_row_[std::size_t(level)] + t % shape_.dilation_of(level);
  }

  void reset_rows(execution_space const& space, long stream) {
    long const rows = std::max<long>(long(below_z_.extent(0)), long(inputs_.extent(0)));
    long const cols = std::max<long>(shape_.q(), shape_.ninp);
    detail::for_each_small_index("trellis::TrellisStream::reset", space, rows * (stream < 0 ? N_ : 1), cols,
                           detail::StreamReset<scalar_type, memory_space, activation::has_cell>{
                               below_z_, below_c_, inputs_, h0_, c0_, stream, N_});
  }

  TrellisShape shape_;
  long N_ = 0, t_ = 0;
  bool zero_padding_ = false;  ///< h0 is zero: the lowest level's z_{t-d} always is
  typename Network::parameters_type params_;
  typename detail::StructureScratch<typename Network::structure, memory_space, scalar_type>::type weights_;
  blas::MathMode math_ = blas::MathMode::strict;
  detail::InjectionSlots slots_;
  std::vector<long> ring_row_;  ///< per level: its first row in below_z_ / below_c_
  matrices below_z_, below_c_;  ///< (sum of dilations, N, q): each level's ring of the level below
  matrices inputs_;             ///< (max dilation, N, ninp)
  matrices stacked_, injection_;  ///< per injection slot: (N, 2 ninp), (N, G q)
  matrix history_, gates_, cell_prev_, h0_, c0_;
  matrix tap0_in_, tap0_out_;
  matrices wt1_, wt2_;         ///< few-row path: W1^T, W2^T per kernel (2 ninp or 2q, G q)  ///< (levels N, q), (levels N, G q): z_{t-d} of every level and its product
  Kokkos::View<int const*, memory_space> slot_dilation_;
};

}  // namespace trellis
