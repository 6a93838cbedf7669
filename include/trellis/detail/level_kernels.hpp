#pragma once
// The fused kernels of one level, forward and backward side by side, and the small
// kernels around them (input stacking, history). Rows are time-major: r = t * N + n.
//
//   history S   (R, 2q): [m * z~_{t-d} | m * z~_t], the hidden input of a level
//   gates       (R, G q): the GEMM S W^T lands here; the fused kernel adds the
//                         injection U and the bias, then stores the activated gates
//   cell        (R, q)
#include <Kokkos_Core.hpp>

#include <trellis/activation.hpp>
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

/// Stacks the input for the injection of dilation d: Xs(r) = [x_{t-d} | x_t], x_{<0} = 0.
template <class Exec, class Scalar, class MemorySpace>
void stack_input(Exec const& space, typename LevelViews<Scalar, MemorySpace>::csequence x, int d,
                 typename LevelViews<Scalar, MemorySpace>::matrix xs) {
  long const L = x.extent(0), N = x.extent(1), p = x.extent(2);
  Kokkos::parallel_for(
      "trellis::stack_input",
      Kokkos::MDRangePolicy<Exec, Kokkos::Rank<2>>(space, {0, 0}, {L * N, p}),
      KOKKOS_LAMBDA(long r, long j) {
        long const t = r / N, n = r % N;
        xs(r, j) = t >= d ? x(t - d, n, j) : Scalar(0);
        xs(r, p + j) = x(t, n, j);
      });
}

/// dx(t) += dXs(t)[p:2p] + dXs(t + d)[0:p].
template <class Exec, class Scalar, class MemorySpace>
void unstack_input_gradient(Exec const& space, typename LevelViews<Scalar, MemorySpace>::cmatrix dxs,
                            int d, typename LevelViews<Scalar, MemorySpace>::sequence dx) {
  long const L = dx.extent(0), N = dx.extent(1), p = dx.extent(2);
  Kokkos::parallel_for(
      "trellis::unstack_input_gradient",
      Kokkos::MDRangePolicy<Exec, Kokkos::Rank<2>>(space, {0, 0}, {L * N, p}),
      KOKKOS_LAMBDA(long r, long j) {
        long const t = r / N, n = r % N;
        Scalar sum = dxs(r, p + j);
        if (t + d < L) sum += dxs(r + d * N, j);
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
  typename V::cmatrix injection;   // (R, G q): U for this level's dilation
  typename V::vector bias;         // (G q)
  typename V::cmatrix h0, c0;      // (N, q)
  typename V::cmatrix mask;        // (N, q) hidden dropout m, or empty
  typename V::matrix history;      // (R, 2q): S
  typename V::sequence out;        // (L, N, nout), top level
  typename V::matrix h_new, c_new; // (N, q), top level
  typename V::aux4 aux_out;        // (naux, L, N, nout)
};

/// Level 1's history: S = [m * h0 for t < d, else 0 | 0].
template <class Exec, class Scalar, class MemorySpace>
void first_history(Exec const& space, LevelArgs<Scalar, MemorySpace> const& a) {
  auto const S = a.history;
  auto const h0 = a.h0, mask = a.mask;
  long const N = a.N, q = a.q, d = a.d;
  bool const masked = mask.extent(0) > 0;
  Kokkos::parallel_for(
      "trellis::first_history",
      Kokkos::MDRangePolicy<Exec, Kokkos::Rank<2>>(space, {0, 0}, {a.L * N, q}),
      KOKKOS_LAMBDA(long r, long j) {
        long const t = r / N, n = r % N;
        Scalar const m = masked ? mask(n, j) : Scalar(1);
        S(r, j) = t < d ? m * h0(n, j) : Scalar(0);
        S(r, q + j) = Scalar(0);
      });
}

/// Output z of one (row, channel) of a level from its stored gates and cell.
template <class Activation, class Scalar, class Gates, class Cell>
KOKKOS_INLINE_FUNCTION Scalar level_output(Gates const& gates, Cell const& cell, long r, long j,
                                           long q) {
  if constexpr (Activation::has_cell) {
    return gates(r, q + j) * tanh(cell(r, j));
  } else {
    (void)cell;
    (void)q;
    return gates(r, j);
  }
}

/// Forward of one level after its hidden GEMM: bias, injection, gates, cell, output,
/// and the masked history of the next level, in one pass.
template <class Activation, class Exec, class Scalar, class MemorySpace>
void level_forward(Exec const& space, LevelArgs<Scalar, MemorySpace> const& a) {
  auto const gates = a.gates, cell = a.cell, S = a.history, h_new = a.h_new, c_new = a.c_new;
  auto const cell_below = a.cell_below, U = a.injection, h0 = a.h0, c0 = a.c0, mask = a.mask;
  auto const bias = a.bias;
  auto const out = a.out;
  auto const aux_out = a.aux_out;
  long const L = a.L, N = a.N, q = a.q, off = a.q - a.nout, d = a.d, dn = a.d_next,
             hidden_rows = a.hidden_rows;
  bool const first = a.first, top = a.top, masked = mask.extent(0) > 0;
  int const aux = a.aux;
  Kokkos::parallel_for(
      "trellis::level_forward",
      Kokkos::MDRangePolicy<Exec, Kokkos::Rank<2>>(space, {0, 0}, {L * N, q}),
      KOKKOS_LAMBDA(long r, long j) {
        // nvcc: a lambda must not capture a variable first inside `if constexpr`.
        (void)cell, (void)cell_below, (void)c0, (void)c_new, (void)gates, (void)q, (void)d, (void)first;
        long const t = r / N, n = r % N;
        bool const has_hidden = r < hidden_rows;
        auto pre = [&](long row) {
          return (has_hidden ? gates(r, row) : Scalar(0)) + U(r, row) + bias(row);
        };
        Scalar z, c = 0;
        if constexpr (Activation::has_cell) {
          Scalar const ig = sigmoid(pre(j)), og = sigmoid(pre(q + j));
          Scalar const gg = tanh(pre(2 * q + j)), fg = sigmoid(pre(3 * q + j));
          // The cell comes from the level below at t - d; c0 pads every level.
          Scalar const c_prev = t >= d ? (first ? Scalar(0) : cell_below(r - d * N, j)) : c0(n, j);
          c = fg * c_prev + ig * gg;
          z = og * tanh(c);
          gates(r, j) = ig;
          gates(r, q + j) = og;
          gates(r, 2 * q + j) = gg;
          gates(r, 3 * q + j) = fg;
          cell(r, j) = c;
        } else {
          z = Activation::apply(pre(j));
          gates(r, j) = z;
        }
        if (j >= off) {
          if (top) out(t, n, j - off) = z;
          if (aux >= 0) aux_out(aux, t, n, j - off) = z;
        }
        if (top) {
          if (t == L - 1) {
            h_new(n, j) = z;
            if constexpr (Activation::has_cell) c_new(n, j) = c;
          }
        } else {
          Scalar const m = masked ? mask(n, j) : Scalar(1);
          S(r, q + j) = m * z;
          if (t + dn < L) S(r + dn * N, j) = m * z;
          if (t < dn) S(r, j) = m * h0(n, j);
        }
      });
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
  typename V::matrix d_gates;         // (R, G q)
  typename V::matrix d_injection;     // (R, G q): accumulates dA
};

/// Backward of one level's fused kernel: collects dL/dz and dL/dc of the level, writes
/// dA (pre-activation gradient), the cell gradient sent down, adds dA into the
/// injection's gradient, and rebuilds this level's history S (needed by dW = dA^T S).
template <class Activation, class Exec, class Scalar, class MemorySpace>
void level_backward(Exec const& space, LevelArgs<Scalar, MemorySpace> const& a,
                    LevelGradArgs<Scalar, MemorySpace> const& b) {
  auto const gates = a.gates, cell = a.cell, S = a.history;
  auto const cell_below = a.cell_below, gates_below = a.gates_below, h0 = a.h0, c0 = a.c0,
             mask = a.mask;
  auto const d_out = b.d_out;
  auto const d_h_new = b.d_h_new, d_c_new = b.d_c_new, dS = b.d_history,
             dc_above = b.d_cell_above;
  auto const d_aux = b.d_aux;
  auto const dc_down = b.d_cell_down, dA = b.d_gates, dU = b.d_injection;
  long const L = a.L, N = a.N, q = a.q, off = a.q - a.nout, d = a.d, du = a.d_above;
  bool const first = a.first, top = a.top, masked = mask.extent(0) > 0;
  bool const has_dh = d_h_new.extent(0) > 0, has_dc = d_c_new.extent(0) > 0,
             has_daux = d_aux.extent(0) > 0;
  int const aux = a.aux;
  Kokkos::parallel_for(
      "trellis::level_backward",
      Kokkos::MDRangePolicy<Exec, Kokkos::Rank<2>>(space, {0, 0}, {L * N, q}),
      KOKKOS_LAMBDA(long r, long j) {
        // nvcc: a lambda must not capture a variable first inside `if constexpr`.
        (void)cell, (void)c0, (void)d_c_new, (void)dc_above, (void)dc_down, (void)has_dc, (void)gates,
            (void)d, (void)first, (void)cell_below, (void)dA, (void)dU;
        long const t = r / N, n = r % N;
        Scalar const m = masked ? mask(n, j) : Scalar(1);
        // dL/dz of this level at t.
        Scalar dz = 0;
        if (top) {
          if (j >= off) dz += d_out(t, n, j - off);
          if (has_dh && t == L - 1) dz += d_h_new(n, j);
        } else {
          Scalar s = dS(r, q + j);
          if (t + du < L) s += dS(r + du * N, j);
          dz += m * s;
        }
        if (has_daux && aux >= 0 && j >= off) dz += d_aux(aux, t, n, j - off);
        if constexpr (Activation::has_cell) {
          Scalar dc = 0;
          if (top) {
            if (has_dc && t == L - 1) dc = d_c_new(n, j);
          } else if (t + du < L) {
            dc = dc_above(r + du * N, j);
          }
          Scalar const ig = gates(r, j), og = gates(r, q + j), gg = gates(r, 2 * q + j),
                       fg = gates(r, 3 * q + j);
          Scalar const tc = tanh(cell(r, j));
          Scalar const dct = dc + dz * og * (Scalar(1) - tc * tc);
          Scalar const c_prev = t >= d ? (first ? Scalar(0) : cell_below(r - d * N, j)) : c0(n, j);
          Scalar const da_i = dct * gg * ig * (Scalar(1) - ig);
          Scalar const da_o = dz * tc * og * (Scalar(1) - og);
          Scalar const da_g = dct * ig * (Scalar(1) - gg * gg);
          Scalar const da_f = dct * c_prev * fg * (Scalar(1) - fg);
          dA(r, j) = da_i;
          dA(r, q + j) = da_o;
          dA(r, 2 * q + j) = da_g;
          dA(r, 3 * q + j) = da_f;
          dU(r, j) += da_i;
          dU(r, q + j) += da_o;
          dU(r, 2 * q + j) += da_g;
          dU(r, 3 * q + j) += da_f;
          dc_down(r, j) = dct * fg;
        } else {
          Scalar const da = dz * Activation::derivative_from_output(gates(r, j));
          dA(r, j) = da;
          dU(r, j) += da;
        }
        // Rebuild S of this level from the level below (z^(0) = 0, padding m * h0).
        if (first) {
          S(r, j) = t < d ? m * h0(n, j) : Scalar(0);
          S(r, q + j) = Scalar(0);
        } else {
          Scalar const zb = m * level_output<Activation, Scalar>(gates_below, cell_below, r, j, q);
          S(r, q + j) = zb;
          if (t + d < L) S(r + d * N, j) = zb;
          if (t < d) S(r, j) = m * h0(n, j);
        }
      });
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
  Kokkos::parallel_for(
      "trellis::history_backward",
      Kokkos::MDRangePolicy<Exec, Kokkos::Rank<2>>(space, {0, 0}, {N, a.q}),
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
