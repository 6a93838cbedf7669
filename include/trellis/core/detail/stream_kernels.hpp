#pragma once
// The kernels of one streaming step, over (stream n, channel j). A level's ring holds
// the last d columns of z and c of the level below it: row (t mod d) holds time t - d
// before the step at time t reads it, and time t after the step writes it.
#include <Kokkos_Core.hpp>

#include <trellis/core/detail/channel_span.hpp>
#include <trellis/core/detail/lstm_cell.hpp>

namespace trellis::detail {

template <class Scalar, class MemorySpace>
struct StreamViews {
  using matrix = Kokkos::View<Scalar**, Kokkos::LayoutRight, MemorySpace>;
  using cmatrix = Kokkos::View<Scalar const**, Kokkos::LayoutRight, MemorySpace>;
  using matrices = Kokkos::View<Scalar***, Kokkos::LayoutRight, MemorySpace>;
  using cmatrices = Kokkos::View<Scalar const***, Kokkos::LayoutRight, MemorySpace>;
};

/// Per injection slot s: xs(s) = [x_{t-d_s} | x_t] from the input ring (D rows, zero
/// before time 0), then x_t goes into ring row t mod D.
template <class Scalar, class MemorySpace>
struct StreamStackInput {
  using V = StreamViews<Scalar, MemorySpace>;
  typename V::cmatrix x;          // (N, p)
  typename V::matrices ring;      // (D, N, p)
  typename V::matrices xs;        // (slots, N, 2p)
  Kokkos::View<int const*, MemorySpace> dilation;  // (slots)
  long t, p;

  KOKKOS_INLINE_FUNCTION void operator()(long n, long j) const {
    long const D = long(ring.extent(0));
    Scalar const now = x(n, j);
    for (long s = 0; s < long(xs.extent(0)); ++s) {
      long const back = ((t - dilation(s)) % D + D) % D;
      xs(s, n, j) = ring(back, n, j);
      xs(s, n, p + j) = now;
    }
    ring(t % D, n, j) = now;
  }
};

/// The lowest level's history [z^(0)_{t-d} | z^(0)_t] and cell c^(0)_{t-d}: h0 and c0
/// before time 0, zero after; its ring row takes the zero of time t.
template <class Scalar, class MemorySpace, bool HasCell>
struct StreamFirstHistory {
  using V = StreamViews<Scalar, MemorySpace>;
  typename V::matrices below_z, below_c;  // rings of every level, rows of this one at `row`
  typename V::matrix history, cell_prev;  // (N, 2q), (N, q)
  long row, q;

  KOKKOS_INLINE_FUNCTION void operator()(long n, long j) const {
    history(n, j) = below_z(row, n, j);
    history(n, q + j) = Scalar(0);
    below_z(row, n, j) = Scalar(0);
    if constexpr (HasCell) {
      cell_prev(n, j) = below_c(row, n, j);
      below_c(row, n, j) = Scalar(0);
    }
  }
};

/// One level after its hidden GEMM: pre-activation A + U + bias (the order of the full
/// forward's fused kernel), the activation, then either the output (top level) or the
/// history and lower cell of the level above, swapping z_t and c_t into its ring row.
/// With `split`, A is the sum of two products: A0 = z_{t-d} W_tap0^T of every level at
/// once (rows tap0_row onwards of tap0) and A1 = z_t W_tap1^T (gates; absent on the
/// lowest level, whose z_t is zero), and the history keeps only z_t.
template <class Activation, class Scalar, class MemorySpace>
struct StreamLevel {
  using V = StreamViews<Scalar, MemorySpace>;
  typename V::matrix gates;          // (N, G q): S W^T, or A1 when split
  typename V::cmatrices injection;   // (slots, N, G q)
  typename V::cmatrix bias;          // (kernels, G q)
  typename V::cmatrix tap0;          // (levels N, G q) when split
  typename V::matrix history, cell_prev;
  typename V::matrices below_z, below_c;
  typename V::matrix out;            // (N, nout), top level
  long slot, kernel, q, off, row;    // row: the ring row of the level above (unused on top)
  long tap0_row, N;
  bool top, split, no_tap1;

  template <int W>
  KOKKOS_INLINE_FUNCTION void channels(RowPosition const& position, long j) const {
    using P = Pack<Scalar, W>;
    long const n = position.r;
    auto pre = [&](long col) {
      P a = no_tap1 ? P{} : load_pack<W>(&gates(n, col));
      if (split) {
        P const a0 = load_pack<W>(&tap0(tap0_row + n, col));
        for (int k = 0; k < W; ++k) a.v[k] = a0.v[k] + a.v[k];
      }
      P const u = load_pack<W>(&injection(slot, n, col));
      P const b = load_pack<W>(&bias(kernel, col));
      for (int k = 0; k < W; ++k) a.v[k] = a.v[k] + u.v[k] + b.v[k];
      return a;
    };
    P z, c{};
    if constexpr (Activation::has_cell) {
      P const ai = pre(j), ao = pre(q + j), ag = pre(2 * q + j), af = pre(3 * q + j);
      P const c_prev = load_pack<W>(&cell_prev(n, j));
      for (int k = 0; k < W; ++k) {
        auto const s = lstm_forward(ai.v[k], ao.v[k], ag.v[k], af.v[k], c_prev.v[k]);
        z.v[k] = s.z;
        c.v[k] = s.c;
      }
    } else {
      P const a = pre(j);
      for (int k = 0; k < W; ++k) z.v[k] = Activation::apply(a.v[k]);
    }
    if (top) {
      for (int k = 0; k < W; ++k)
        if (j + k >= off) out(n, j + k - off) = z.v[k];
      return;
    }
    P const older = load_pack<W>(&below_z(row, n, j));
    if (!split) store_pack(&history(n, j), older);
    store_pack(&history(n, q + j), z);
    store_pack(&below_z(row, n, j), z);
    if constexpr (Activation::has_cell) {
      store_pack(&cell_prev(n, j), load_pack<W>(&below_c(row, n, j)));
      store_pack(&below_c(row, n, j), c);
    }
  }

  KOKKOS_INLINE_FUNCTION void operator()(long n, long j) const { channels<1>(RowPosition{n, 0, n}, j); }
  /// Host spaces: stream n's channels in spans whose lane loops vectorise; the top level
  /// only its output channels (with `split`, its other gates are not computed).
  KOKKOS_INLINE_FUNCTION void operator()(RowTag, long n) const {
    constexpr int span = host_span<Scalar>;
    RowPosition const position{n, 0, n};
    long j = top ? off : 0;
    for (; j + span <= q; j += span) channels<span>(position, j);
    for (; j < q; ++j) channels<1>(position, j);
  }
};

/// After a forward over T steps: ring row u of a level of dilation d holds time
/// tau in [T - d, T) with tau mod d = u, of the level below: its z and c from the
/// forward's stored gates and cell, h0 and c0 for tau < 0, zero for the lowest level.
template <class Activation, class Scalar, class MemorySpace>
struct StreamFillRing {
  using V = StreamViews<Scalar, MemorySpace>;
  typename V::matrices below_z, below_c;
  typename V::cmatrix gates, cell;    // the level below's (T N, G q), (T N, q); unused when first
  typename V::cmatrix h0, c0;
  long first_row, d, T, N, q;
  bool first;

  KOKKOS_INLINE_FUNCTION void operator()(long un, long j) const {
    long const u = un / N, n = un % N;
    long const tau = T - d + (((u - (T - d)) % d) + d) % d;
    Scalar z = Scalar(0), c = Scalar(0);
    if (tau < 0) {
      z = h0(n, j);
      if constexpr (Activation::has_cell) c = c0(n, j);
    } else if (!first) {
      long const r = tau * N + n;
      if constexpr (Activation::has_cell) {
        c = cell(r, j);
        z = gates(r, q + j) * gate_tanh(c);
      } else {
        z = gates(r, j);
      }
    }
    below_z(first_row + u, n, j) = z;
    if constexpr (Activation::has_cell) below_c(first_row + u, n, j) = c;
  }
};

/// The input ring after a forward over x (T, N, p): row u holds x_tau, tau in [T - D, T)
/// with tau mod D = u, zero for tau < 0.
template <class Scalar, class MemorySpace>
struct StreamFillInputs {
  using V = StreamViews<Scalar, MemorySpace>;
  typename V::matrices ring;
  typename V::cmatrices x;
  long D, T, N;

  KOKKOS_INLINE_FUNCTION void operator()(long un, long j) const {
    long const u = un / N, n = un % N;
    long const tau = T - D + (((u - (T - D)) % D) + D) % D;
    ring(u, n, j) = tau < 0 ? Scalar(0) : x(tau, n, j);
  }
};

/// Stream n (or every stream, n < 0) back to its initial state: every ring row of
/// every level h0 and c0, the inputs zero.
template <class Scalar, class MemorySpace, bool HasCell>
struct StreamReset {
  using V = StreamViews<Scalar, MemorySpace>;
  typename V::matrices below_z, below_c, inputs;
  typename V::cmatrix h0, c0;
  long stream, N;

  KOKKOS_INLINE_FUNCTION void operator()(long rn, long j) const {
    long const streams = stream < 0 ? N : 1;
    long const row = rn / streams, n = stream < 0 ? rn % streams : stream;
    if (row < long(below_z.extent(0)) && j < long(below_z.extent(2))) {
      below_z(row, n, j) = h0(n, j);
      if constexpr (HasCell) below_c(row, n, j) = c0(n, j);
    }
    if (row < long(inputs.extent(0)) && j < long(inputs.extent(2))) inputs(row, n, j) = Scalar(0);
  }
};

}  // namespace trellis::detail
