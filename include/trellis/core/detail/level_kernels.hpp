#pragma once
// The fused kernels of one level, forward and backward side by side, and the small
// kernels around them (input stacking, history). Rows are time-major: r = t * N + n.
//
//   history S   (R, 2q): [m * z~_{t-d} | m * z~_t], the hidden input of a level; with
//                         the injection folded in, (R, 2q + 2p + 1 + zero padding):
//                         [... | x_{t-d} | x_t | 1 | 0 ...]
//   gates       (R, G q): the GEMM S W^T lands here; the fused kernel adds the
//                         injection U (unless folded) and the bias, then stores the
//                         activated gates
//   cell        (R, q)
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <trellis/core/activation.hpp>
#include <trellis/core/detail/channel_span.hpp>
#include <trellis/core/detail/fast_math.hpp>
#include <trellis/core/detail/lstm_cell.hpp>
#include <trellis/detail/kernel_shape.hpp>
#include <trellis/detail/kokkos_compat.hpp>

namespace trellis::detail {

template <class Scalar, class MemorySpace>
struct LevelViews {
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, MemorySpace>;
  using cmatrix = Kokkos::View<Scalar const**, Kokkos::LayoutRight, MemorySpace>;
  using sequence = Kokkos::View<Scalar***, Kokkos::LayoutRight, MemorySpace>;
  using csequence = Kokkos::View<Scalar const***, Kokkos::LayoutRight, MemorySpace>;
  using aux4 = Kokkos::View<Scalar****, Kokkos::LayoutRight, MemorySpace>;
  using caux4 = Kokkos::View<Scalar const****, Kokkos::LayoutRight, MemorySpace>;
  using vector = Kokkos::View<Scalar*, Kokkos::LayoutRight, MemorySpace>;
};

/// Stacks the input for the injection of dilation d into columns [col, col + 2p) of xs:
/// Xs(r) = [x_{t-d} | x_t], x_{<0} = 0.
template <class Exec, class Scalar, class MemorySpace>
void stack_input(Exec const& space, typename LevelViews<Scalar, MemorySpace>::csequence x, int d,
                 typename LevelViews<Scalar, MemorySpace>::matrix xs, long col = 0) {
  long const L = x.extent(0), N = x.extent(1), p = x.extent(2);
  for_each_index(
      "trellis::stack_input", space, L * N, p,
      KOKKOS_LAMBDA(long r, long j) {
        long const t = r / N, n = r % N;
        xs(r, col + j) = t >= d ? x(t - d, n, j) : Scalar(0);
        xs(r, col + p + j) = x(t, n, j);
      });
}

/// dx(t) += dXs(t)[p:2p] + dXs(t + d)[0:p], dXs in columns [col, col + 2p) of dxs.
template <class Exec, class Scalar, class MemorySpace>
void unstack_input_gradient(Exec const& space, typename LevelViews<Scalar, MemorySpace>::cmatrix dxs,
                            int d, typename LevelViews<Scalar, MemorySpace>::sequence dx, long col = 0) {
  long const L = dx.extent(0), N = dx.extent(1), p = dx.extent(2);
  for_each_index(
      "trellis::unstack_input_gradient", space, L * N, p,
      KOKKOS_LAMBDA(long r, long j) {
        long const t = r / N, n = r % N;
        Scalar sum = dxs(r, col + p + j);
        if (t + d < L) sum += dxs(r + d * N, col + j);
        dx(t, n, j) += sum;
      });
}

/// Everything a level's fused kernels read and write.
template <class Scalar, class MemorySpace>
struct LevelArgs {
  using V = LevelViews<Scalar, MemorySpace>;
  long L = 0, N = 0, q = 0, nout = 0;
  int d = 1;              // this level's dilation
  int d_next = 1;         // dilation of the level above (forward) / of this level's history
  int d_above = 1;        // dilation of the level above (backward)
  bool first = false;     // level 1: the lower level is z^(0) = 0, c^(0) = 0
  bool top = false;
  long hidden_rows = 0;   // rows of `gates` the hidden GEMM wrote (level 1: t < d only)
  int aux = -1;           // aux index of this level, or -1
  typename V::matrix gates;        // (R, G q)
  typename V::matrix cell;         // (R, q), this level
  typename V::cmatrix cell_below;  // (R, q), level i-1 (unused on level 1)
  typename V::cmatrix gates_below; // (R, G q), level i-1 (backward, history rebuild)
  typename V::cmatrix injection;   // (R, G q): U for this level's dilation; empty when the
                                   // injection is folded into the hidden GEMM
  typename V::vector bias;         // (G q)
  typename V::cmatrix h0, c0;      // (N, q)
  typename V::cmatrix mask;        // (N, q) hidden dropout m, or empty
  typename V::matrix history;      // (R, 2q): S
  typename V::sequence out;        // (L, N, nout), top level
  typename V::matrix h_new, c_new; // (N, q), top level
  typename V::aux4 aux_out;        // (naux, L, N, nout)
  typename V::vector zero_row;     // (q) zeros, unit_row (q) ones: they stand in for an
  typename V::vector unit_row;     // absent cell or mask so that row loops stay branch-free
  typename V::vector zero_gates;   // (G q) zeros: the U of a folded injection
};

/// Level 1's history: S = [m * h0 for t < d, else 0 | 0].
template <class Exec, class Scalar, class MemorySpace>
void first_history(Exec const& space, LevelArgs<Scalar, MemorySpace> const& a) {
  auto const S = a.history;
  auto const h0 = a.h0, mask = a.mask;
  long const N = a.N, q = a.q, d = a.d;
  bool const masked = mask.extent(0) > 0;
  for_each_index(
      "trellis::first_history", space, a.L * N, q,
      KOKKOS_LAMBDA(long r, long j) {
        long const t = r / N, n = r % N;
        Scalar const m = masked ? mask(n, j) : Scalar(1);
        S(r, j) = t < d ? m * h0(n, j) : Scalar(0);
        S(r, q + j) = Scalar(0);
      });
}

/// The pack width every View of a level's kernels allows.
template <class Scalar, class MemorySpace>
int level_pack_width(LevelArgs<Scalar, MemorySpace> const& a) {
  return pack_width<Scalar>(a.q, a.gates, a.cell, a.cell_below, a.gates_below, a.injection, a.bias, a.h0, a.c0,
                            a.mask, a.history, a.h_new, a.c_new, a.zero_row, a.unit_row, a.zero_gates);
}

/// The two launch shapes of a level's functor, which has the level's args `a` and the
/// one body channels<V>(row, j): a row on host spaces, a pack on devices.
template <class Derived, class Scalar>
struct ChannelLaunch {
  KOKKOS_INLINE_FUNCTION void operator()(RowTag, long r) const {
    auto const& self = static_cast<Derived const&>(*this);
    along_row<Scalar>(self, r, self.a.N, self.a.q);
  }
  template <int V>
  KOKKOS_INLINE_FUNCTION void operator()(PackTag<V>, long i) const {
    auto const& self = static_cast<Derived const&>(*this);
    at_pack<V>(self, i, self.a.N, self.a.q);
  }
};

/// Forward of one level after its hidden GEMM: bias, injection, gates, cell, output,
/// and the masked history of the next level, in one pass over channels [j, j + V) of
/// row r (the one body of both shapes: see channel_span.hpp).
template <class Activation, class Scalar, class MemorySpace>
struct LevelForward : ChannelLaunch<LevelForward<Activation, Scalar, MemorySpace>, Scalar> {
  LevelArgs<Scalar, MemorySpace> a;
  long off;
  long shifted_end;  // the next level's history is written to rows below this only
  bool masked, injected;


  template <int V>
  KOKKOS_INLINE_FUNCTION void channels(RowPosition const& row, long j) const {
    using P = Pack<Scalar, V>;
    long const q = a.q, N = a.N, r = row.r, t = row.t, n = row.n, d = a.d, dn = a.d_next;
    Scalar* const gates = &a.gates(r, 0);
    auto pre = [&](long col) {  // A + U + bias
      P x = load_pack<V>(gates + col);
      P const u = injected ? load_pack<V>(&a.injection(r, col)) : P{};
      P const bias = load_pack<V>(&a.bias(col));
      for (int k = 0; k < V; ++k) x.v[k] = x.v[k] + u.v[k] + bias.v[k];
      return x;
    };
    P z, c;
    if constexpr (Activation::has_cell) {
      P const ai = pre(j), ao = pre(q + j), ag = pre(2 * q + j), af = pre(3 * q + j);
      P const c_prev = t >= d ? (a.first ? P{} : load_pack<V>(&a.cell_below(r - d * N, j))) : load_pack<V>(&a.c0(n, j));
      P ig, og, gg, fg;
      for (int k = 0; k < V; ++k) {
        auto const s = lstm_forward(ai.v[k], ao.v[k], ag.v[k], af.v[k], c_prev.v[k]);
        ig.v[k] = s.ig, og.v[k] = s.og, gg.v[k] = s.gg, fg.v[k] = s.fg, c.v[k] = s.c, z.v[k] = s.z;
      }
      store_pack(gates + j, ig);
      store_pack(gates + q + j, og);
      store_pack(gates + 2 * q + j, gg);
      store_pack(gates + 3 * q + j, fg);
      store_pack(&a.cell(r, j), c);
    } else {
      P const x = pre(j);
      for (int k = 0; k < V; ++k) z.v[k] = Activation::apply(x.v[k]);
      store_pack(gates + j, z);
    }
    if ((a.top || a.aux >= 0) && j + V > off)
      for (int k = 0; k < V; ++k)
        if (j + k >= off) {
          if (a.top) a.out(t, n, j + k - off) = z.v[k];
          if (a.aux >= 0) a.aux_out(a.aux, t, n, j + k - off) = z.v[k];
        }
    if (a.top) {
      if (t == a.L - 1) {
        store_pack(&a.h_new(n, j), z);
        if constexpr (Activation::has_cell) store_pack(&a.c_new(n, j), c);
      }
      return;
    }
    // The next level's history: [m z~_{t-dn} | m z~_t], padded with m h0.
    P const m = load_pack<V>(masked ? &a.mask(n, j) : &a.unit_row(j));
    for (int k = 0; k < V; ++k) z.v[k] *= m.v[k];
    store_pack(&a.history(r, q + j), z);
    if (r + dn * N < shifted_end) store_pack(&a.history(r + dn * N, j), z);
    if (t < dn) {
      P h0 = load_pack<V>(&a.h0(n, j));
      for (int k = 0; k < V; ++k) h0.v[k] = m.v[k] * h0.v[k];
      store_pack(&a.history(r, j), h0);
    }
  }
};

/// The fused forward on rows [begin, end) of the level, whose hidden GEMM has run. It
/// writes the next level's history in place, so a row shifted d_next * N rows on is
/// written only below `shifted_end` (rows whose GEMM has read them); shifted_history
/// writes the rest once their GEMM has run.
template <class Activation, class Exec, class Scalar, class MemorySpace>
void level_forward(Exec const& space, LevelArgs<Scalar, MemorySpace> const& a, long begin, long end,
                   long shifted_end) {
  LevelForward<Activation, Scalar, MemorySpace> f{{}, a, a.q - a.nout, shifted_end, a.mask.extent(0) > 0,
                                                  a.injection.extent(0) > 0};
  for_each_channel<Scalar>("trellis::level_forward", space, begin, end, a.q, level_pack_width(a), f);
}

template <class Activation, class Exec, class Scalar, class MemorySpace>
void level_forward(Exec const& space, LevelArgs<Scalar, MemorySpace> const& a) {
  level_forward<Activation>(space, a, 0, a.L * a.N, a.L * a.N);
}

/// The next level's shifted history on rows [begin, end): S(r)[0:q] = S(r - d_next N)[q:2q],
/// the masked output the level's fused kernel stored there (rows t < d_next hold the
/// padding the kernel wrote already).
template <class Exec, class Scalar, class MemorySpace>
void shifted_history(Exec const& space, LevelArgs<Scalar, MemorySpace> const& a, long begin, long end) {
  auto const S = a.history;
  long const q = a.q, shift = long(a.d_next) * a.N;
  begin = std::max(begin, shift);
  if (end <= begin) return;
  for_each_index(
      "trellis::shifted_history", space, end - begin, q,
      KOKKOS_LAMBDA(long i, long j) { S(begin + i, j) = S(begin + i - shift, q + j); });
}

/// A level's history S over channels [j, j + V) of row r, rebuilt from the level
/// below's stored gates and cell (z^(0) = 0, padding m * h0): backward needs it for
/// dW = dA^T S, and level recomputation for the first level of a recomputed block.
template <class Activation, int V, class Scalar, class MemorySpace>
KOKKOS_INLINE_FUNCTION void history_channels(LevelArgs<Scalar, MemorySpace> const& a, RowPosition const& row, long j,
                                             Pack<Scalar, V> const& m) {
  using P = Pack<Scalar, V>;
  long const q = a.q, N = a.N, r = row.r, t = row.t, n = row.n, d = a.d;
  auto padding = [&] {  // m * h0
    P h0 = load_pack<V>(&a.h0(n, j));
    for (int k = 0; k < V; ++k) h0.v[k] = m.v[k] * h0.v[k];
    return h0;
  };
  if (a.first) {
    store_pack(&a.history(r, j), t < d ? padding() : P{});
    store_pack(&a.history(r, q + j), P{});
    return;
  }
  P zb;
  if constexpr (Activation::has_cell) {
    P const og = load_pack<V>(&a.gates_below(r, q + j)), c = load_pack<V>(&a.cell_below(r, j));
    for (int k = 0; k < V; ++k) zb.v[k] = m.v[k] * (og.v[k] * gate_tanh(c.v[k]));
  } else {
    P const y = load_pack<V>(&a.gates_below(r, j));
    for (int k = 0; k < V; ++k) zb.v[k] = m.v[k] * y.v[k];
  }
  store_pack(&a.history(r, q + j), zb);
  if (t + d < a.L) store_pack(&a.history(r + d * N, j), zb);
  if (t < d) store_pack(&a.history(r, j), padding());
}

template <class Activation, class Scalar, class MemorySpace>
struct LevelHistory : ChannelLaunch<LevelHistory<Activation, Scalar, MemorySpace>, Scalar> {
  LevelArgs<Scalar, MemorySpace> a;
  bool masked;
  template <int V>
  KOKKOS_INLINE_FUNCTION void channels(RowPosition const& row, long j) const {
    history_channels<Activation, V>(a, row, j, load_pack<V>(masked ? &a.mask(row.n, j) : &a.unit_row(j)));
  }
};

template <class Activation, class Exec, class Scalar, class MemorySpace>
void level_history(Exec const& space, LevelArgs<Scalar, MemorySpace> const& a) {
  LevelHistory<Activation, Scalar, MemorySpace> f{{}, a, a.mask.extent(0) > 0};
  for_each_channel<Scalar>("trellis::level_history", space, 0, a.L * a.N, a.q, level_pack_width(a), f);
}

/// Gradients that reach a level from outside the level stack.
template <class Scalar, class MemorySpace>
struct LevelGradArgs {
  using V = LevelViews<Scalar, MemorySpace>;
  typename V::csequence d_out;        // (L, N, nout)
  typename V::cmatrix d_h_new, d_c_new; // (N, q), may be empty
  typename V::caux4 d_aux;            // (naux, L, N, nout), may be empty
  typename V::cmatrix d_history;      // (R, 2q): dS of the level above
  typename V::cmatrix d_cell_above;   // (R, q): dL/dc~ sent down by the level above, at its t
  typename V::matrix d_cell_down;     // (R, q): this level's dL/dc~_{t-d} = dct * f, at t
  typename V::matrix d_gates;         // (rows, G q): dA of rows [d_gates_row, d_gates_row + rows)
  long d_gates_row = 0;               // backward may take a level in blocks of rows
  typename V::matrix d_injection;     // (R, G q): accumulates dA; empty when folded
};

/// Backward of one level's fused kernel over channels [j, j + V) of row r: collects
/// dL/dz and dL/dc of the level, writes dA (pre-activation gradient) and the cell
/// gradient sent down, adds dA into the injection's gradient, and rebuilds this level's
/// history S (needed by dW = dA^T S).
template <class Activation, class Scalar, class MemorySpace>
struct LevelBackward : ChannelLaunch<LevelBackward<Activation, Scalar, MemorySpace>, Scalar> {
  LevelArgs<Scalar, MemorySpace> a;
  LevelGradArgs<Scalar, MemorySpace> b;
  long off;
  bool masked, has_dh, has_dc, has_daux, injected;


  /// dL/dz of the span: from the output (top level) or the history above, plus aux.
  template <int V>
  KOKKOS_INLINE_FUNCTION Pack<Scalar, V> output_gradient(RowPosition const& row, long j, Pack<Scalar, V> const& m) const {
    using P = Pack<Scalar, V>;
    long const q = a.q, N = a.N, L = a.L, r = row.r, t = row.t, n = row.n, du = a.d_above;
    P dz{};
    if (a.top) {
      for (int k = 0; k < V; ++k)
        if (j + k >= off) dz.v[k] = b.d_out(t, n, j + k - off);
      if (has_dh && t == L - 1) {
        P const dh = load_pack<V>(&b.d_h_new(n, j));
        for (int k = 0; k < V; ++k) dz.v[k] += dh.v[k];
      }
    } else {
      P const above = load_pack<V>(&b.d_history(r, q + j));
      P const later = t + du < L ? load_pack<V>(&b.d_history(r + du * N, j)) : P{};
      for (int k = 0; k < V; ++k) dz.v[k] = m.v[k] * (t + du < L ? above.v[k] + later.v[k] : above.v[k]);
    }
    if (has_daux && a.aux >= 0)
      for (int k = 0; k < V; ++k)
        if (j + k >= off) dz.v[k] += b.d_aux(a.aux, t, n, j + k - off);
    return dz;
  }

  template <int V>
  KOKKOS_INLINE_FUNCTION void channels(RowPosition const& row, long j) const {
    using P = Pack<Scalar, V>;
    long const q = a.q, N = a.N, L = a.L, r = row.r, t = row.t, n = row.n, d = a.d, du = a.d_above;
    P const m = load_pack<V>(masked ? &a.mask(n, j) : &a.unit_row(j));
    P const dz = output_gradient<V>(row, j, m);
    Scalar const* const gates = &a.gates(r, 0);
    Scalar* const dA = &b.d_gates(r - b.d_gates_row, 0);
    if constexpr (Activation::has_cell) {
      P dc{};
      if (a.top) {
        if (has_dc && t == L - 1) dc = load_pack<V>(&b.d_c_new(n, j));
      } else if (t + du < L) {
        dc = load_pack<V>(&b.d_cell_above(r + du * N, j));
      }
      P const c_prev = t >= d ? (a.first ? P{} : load_pack<V>(&a.cell_below(r - d * N, j))) : load_pack<V>(&a.c0(n, j));
      P const ig = load_pack<V>(gates + j), og = load_pack<V>(gates + q + j);
      P const gg = load_pack<V>(gates + 2 * q + j), fg = load_pack<V>(gates + 3 * q + j);
      P const c = load_pack<V>(&a.cell(r, j));
      P da_i, da_o, da_g, da_f, dc_prev;
      for (int k = 0; k < V; ++k) {
        auto const g = lstm_backward(ig.v[k], og.v[k], gg.v[k], fg.v[k], c.v[k], c_prev.v[k], dz.v[k], dc.v[k]);
        da_i.v[k] = g.da_i, da_o.v[k] = g.da_o, da_g.v[k] = g.da_g, da_f.v[k] = g.da_f, dc_prev.v[k] = g.dc_prev;
      }
      store_pack(dA + j, da_i);
      store_pack(dA + q + j, da_o);
      store_pack(dA + 2 * q + j, da_g);
      store_pack(dA + 3 * q + j, da_f);
      if (injected) {
        Scalar* const dU = &b.d_injection(r, 0);
        add_pack(dU + j, da_i);
        add_pack(dU + q + j, da_o);
        add_pack(dU + 2 * q + j, da_g);
        add_pack(dU + 3 * q + j, da_f);
      }
      store_pack(&b.d_cell_down(r, j), dc_prev);
    } else {
      P const y = load_pack<V>(gates + j);
      P da;
      for (int k = 0; k < V; ++k) da.v[k] = dz.v[k] * Activation::derivative_from_output(y.v[k]);
      store_pack(dA + j, da);
      if (injected) add_pack(&b.d_injection(r, j), da);
    }
    history_channels<Activation, V>(a, row, j, m);
  }
};

template <class Scalar, class MemorySpace>
int level_pack_width(LevelArgs<Scalar, MemorySpace> const& a, LevelGradArgs<Scalar, MemorySpace> const& b) {
  return std::min(level_pack_width(a), pack_width<Scalar>(a.q, b.d_h_new, b.d_c_new, b.d_history, b.d_cell_above,
                                                          b.d_cell_down, b.d_gates, b.d_injection));
}

/// The fused backward on rows [begin, end) of the level; b.d_gates holds those rows' dA.
template <class Activation, class Exec, class Scalar, class MemorySpace>
void level_backward(Exec const& space, LevelArgs<Scalar, MemorySpace> const& a,
                    LevelGradArgs<Scalar, MemorySpace> const& b, long begin, long end) {
  LevelBackward<Activation, Scalar, MemorySpace> f{{}, a, b, a.q - a.nout, a.mask.extent(0) > 0,
                                                   b.d_h_new.extent(0) > 0, b.d_c_new.extent(0) > 0,
                                                   b.d_aux.extent(0) > 0, b.d_injection.extent(0) > 0};
  for_each_channel<Scalar>("trellis::level_backward", space, begin, end, a.q, level_pack_width(a, b), f);
}

/// The history's share of the initial-state gradient at one level:
/// dh0 += m * sum_{t<d} dS(t)[0:q], dc0 += sum_{t<d} dc_down(t).
template <class Activation, class Exec, class Scalar, class MemorySpace>
void history_backward(Exec const& space, LevelArgs<Scalar, MemorySpace> const& a,
                      typename LevelViews<Scalar, MemorySpace>::cmatrix dS,
                      typename LevelViews<Scalar, MemorySpace>::cmatrix dc_down,
                      typename LevelViews<Scalar, MemorySpace>::matrix dh0,
                      typename LevelViews<Scalar, MemorySpace>::matrix dc0) {
  // Either may be empty: that gradient is not wanted.
  bool const want_h = dh0.extent(0) > 0, want_c = dc0.extent(0) > 0;
  auto const mask = a.mask;
  long const N = a.N, steps = a.d < a.L ? a.d : a.L;
  bool const masked = mask.extent(0) > 0;
  for_each_index(
      "trellis::history_backward", space, N, a.q,
      KOKKOS_LAMBDA(long n, long j) {
        (void)dc_down, (void)dc0, (void)want_c;  // nvcc: no first capture in `if constexpr`
        Scalar sh = 0, sc = 0;
        for (long t = 0; t < steps; ++t) {
          sh += dS(t * N + n, j);
          if constexpr (Activation::has_cell) sc += dc_down(t * N + n, j);
        }
        if (want_h) dh0(n, j) += (masked ? mask(n, j) : Scalar(1)) * sh;
        if constexpr (Activation::has_cell) {
          if (want_c) dc0(n, j) += sc;
        }
      });
}

}  // namespace trellis::detail
