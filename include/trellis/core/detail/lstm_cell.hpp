#pragma once
// The LSTM-style gated activation of one channel (the paper's f), forward and backward
// side by side: what every level's fused kernel computes per channel.
#include <Kokkos_Core.hpp>

#include <trellis/core/detail/fast_math.hpp>

namespace trellis::detail {

/// The LSTM gating of one channel: gates from pre-activations, the cell from the
/// lower level's cell, the output.
template <class Scalar>
struct LstmStep {
  Scalar ig, og, gg, fg, c, z;
};

template <class Scalar>
KOKKOS_INLINE_FUNCTION LstmStep<Scalar> lstm_forward(Scalar a_i, Scalar a_o, Scalar a_g, Scalar a_f,
                                                     Scalar c_prev) {
  LstmStep<Scalar> s;
  s.ig = gate_sigmoid(a_i);
  s.og = gate_sigmoid(a_o);
  s.gg = gate_tanh(a_g);
  s.fg = gate_sigmoid(a_f);
  s.c = s.fg * c_prev + s.ig * s.gg;
  s.z = s.og * gate_tanh(s.c);
  return s;
}

/// Backward of lstm_forward: from dL/dz and dL/dc (from above) to the pre-activation
/// gradients (i, o, g, f) and dL/dc_prev.
template <class Scalar>
struct LstmGrad {
  Scalar da_i, da_o, da_g, da_f, dc_prev;
};

template <class Scalar>
KOKKOS_INLINE_FUNCTION LstmGrad<Scalar> lstm_backward(Scalar ig, Scalar og, Scalar gg, Scalar fg,
                                                      Scalar c, Scalar c_prev, Scalar dz, Scalar dc) {
  Scalar const tc = gate_tanh(c);
  Scalar const dct = dc + dz * og * (Scalar(1) - tc * tc);
  LstmGrad<Scalar> g;
  g.da_i = dct * gg * ig * (Scalar(1) - ig);
  g.da_o = dz * tc * og * (Scalar(1) - og);
  g.da_g = dct * ig * (Scalar(1) - gg * gg);
  g.da_f = dct * c_prev * fg * (Scalar(1) - fg);
  g.dc_prev = dct * fg;
  return g;
}

}  // namespace trellis::detail
