#pragma once
// Recurrent networks without bias (Elman with tanh or relu, LSTM), M layers, as the
// paper's Theorem 1 states them; their weights from PyTorch state_dicts; and the
// TrellisNet that equals them truncated to a history of L steps.
#include <Kokkos_Core.hpp>
#include <Eigen/Core>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <trellis/core/activation.hpp>
#include <trellis/core/rnn_sparse.hpp>
#include <trellis/core/shape.hpp>
#include <trellis/errors.hpp>
#include <trellis/io/safetensors.hpp>

namespace trellis {

enum class RecurrentCell { lstm, rnn_tanh, rnn_relu };

inline char const* cell_name(RecurrentCell c) {
  return c == RecurrentCell::lstm ? "lstm" : c == RecurrentCell::rnn_tanh ? "rnn-tanh" : "rnn-relu";
}

inline RecurrentCell parse_cell(std::string const& name) {
  if (name == "lstm") return RecurrentCell::lstm;
  if (name == "rnn-tanh") return RecurrentCell::rnn_tanh;
  if (name == "rnn-relu") return RecurrentCell::rnn_relu;
  detail::fail("trellis::parse_cell: unknown cell '", name, "' (lstm, rnn-tanh or rnn-relu)");
}

/// f(activation) with the TrellisNet activation that reproduces `cell`.
template <class F>
decltype(auto) with_cell(RecurrentCell cell, F&& f) {
  switch (cell) {
    case RecurrentCell::rnn_tanh: return f(ElementwiseTanh{});
    case RecurrentCell::rnn_relu: return f(ElementwiseRelu{});
    default: return f(LSTMGating{});
  }
}

/// Weights of an M-layer recurrent network without bias. Layer j computes
/// a = W_ih^(j) h^(j-1)_t + W_hh^(j) h^(j)_{t-1}; the LSTM's gate rows are in the
/// trellis order i, o, g, f (groups of d rows).
struct RecurrentWeights {
  RecurrentCell cell = RecurrentCell::lstm;
  int input_size = 0, hidden_size = 0;
  std::vector<Eigen::MatrixXd> input_weights;      // layer j: (G d, input or d)
  std::vector<Eigen::MatrixXd> recurrent_weights;  // layer j: (G d, d)

  int layers() const { return int(recurrent_weights.size()); }
  int groups() const { return cell == RecurrentCell::lstm ? 4 : 1; }

  /// Random weights of spectral norm about `scale`: entries N(0, scale^2 / (4 d)), since a
  /// d x d Gaussian matrix of entry deviation s has largest singular value about 2 s sqrt(d).
  static RecurrentWeights random(RecurrentCell cell, int input_size, int hidden_size, int layers,
                                 std::uint64_t seed, double scale = 1.0) {
    RecurrentWeights w;
    w.cell = cell;
    w.input_size = input_size;
    w.hidden_size = hidden_size;
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, scale / (2.0 * std::sqrt(double(hidden_size))));
    auto draw = [&](int rows, int cols) {
      Eigen::MatrixXd m(rows, cols);
      for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j) m(i, j) = normal(rng);
      return m;
    };
    int const G = w.groups();
    for (int j = 0; j < layers; ++j) {
      w.input_weights.push_back(draw(G * hidden_size, j == 0 ? input_size : hidden_size));
      w.recurrent_weights.push_back(draw(G * hidden_size, hidden_size));
    }
    return w;
  }
};

namespace detail {

/// PyTorch's LSTM gate blocks are i, f, g, o; the trellis's i, o, g, f.
inline Eigen::MatrixXd pytorch_gates_to_trellis(Eigen::MatrixXd const& m, int d) {
  Eigen::MatrixXd out(m.rows(), m.cols());
  int const from[4] = {0, 3, 2, 1};  // trellis block b comes from PyTorch block from[b]
  for (int b = 0; b < 4; ++b) out.middleRows(b * d, d) = m.middleRows(from[b] * d, d);
  return out;
}

inline Eigen::MatrixXd to_matrix(safetensors::Tensor const& t) {
  auto const v = t.to_double();
  Eigen::MatrixXd m(t.shape[0], t.shape[1]);
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j) m(i, j) = v[i * m.cols() + j];
  return m;
}

}  // namespace detail

/// Reads the weights of a PyTorch nn.LSTM or nn.RNN state_dict (weight_ih_l{k},
/// weight_hh_l{k}; biases only if all zero). `path` names the file in errors.
inline RecurrentWeights recurrent_from_pytorch(safetensors::File const& file, RecurrentCell cell,
                                               std::string const& path) {
  RecurrentWeights w;
  w.cell = cell;
  int const G = w.groups();
  for (auto const& [name, t] : file.tensors) {
    bool known = false;
    for (char const* prefix : {"weight_ih_l", "weight_hh_l", "bias_ih_l", "bias_hh_l"})
      known = known || name.rfind(prefix, 0) == 0;
    if (!known)
      throw file_error(path + ": tensor '" + name + "' is not part of an nn.LSTM / nn.RNN state_dict "
                       "(expected weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k})");
    if (name.rfind("bias", 0) == 0)
      for (double v : t.to_double())
        if (v != 0.0)
          throw file_error(path + ": tensor '" + name + "' is a nonzero bias; the trellis equivalence "
                           "(Theorem 1) holds for recurrent networks without bias");
  }
  for (int k = 0;; ++k) {
    std::string const ih = "weight_ih_l" + std::to_string(k), hh = "weight_hh_l" + std::to_string(k);
    if (!file.has(ih) && !file.has(hh)) break;
    auto const& tih = file.at(path, ih);
    auto const& thh = file.at(path, hh);
    if (thh.shape.size() != 2 || tih.shape.size() != 2 || thh.shape[0] % G != 0 ||
        thh.shape[1] * G != thh.shape[0])
      fail_tensor_shape(path, hh, tensor_shape(thh),
                        "(" + std::to_string(G) + " d, d) for cell " + cell_name(cell));
    int const d = int(thh.shape[1]);
    if (k == 0) {
      w.hidden_size = d;
      w.input_size = int(tih.shape[1]);
    }
    int const in = k == 0 ? w.input_size : d;
    if (d != w.hidden_size || tih.shape[0] != G * d || tih.shape[1] != in)
      fail_tensor_shape(path, ih, tensor_shape(tih),
                        std::vector<long>{G * long(w.hidden_size), long(in)});
    Eigen::MatrixXd mih = detail::to_matrix(tih), mhh = detail::to_matrix(thh);
    if (cell == RecurrentCell::lstm) {
      mih = detail::pytorch_gates_to_trellis(mih, d);
      mhh = detail::pytorch_gates_to_trellis(mhh, d);
    }
    w.input_weights.push_back(mih);
    w.recurrent_weights.push_back(mhh);
  }
  if (w.layers() == 0) throw file_error(path + ": no weight_ih_l0 / weight_hh_l0: not an nn.LSTM / nn.RNN state_dict");
  return w;
}

/// The TrellisNet shape equal to `w` truncated to a history of L steps: q = M d,
/// nout = d, n = L + M - 1 levels, dilation 1, no weight norm.
inline TrellisShape trellis_shape_for(RecurrentWeights const& w, int history) {
  if (history < 1) detail::fail("trellis::trellis_shape_for: the history must be >= 1, got ", history);
  TrellisShape s;
  s.layers = w.layers();
  s.ninp = w.input_size;
  s.nout = w.hidden_size;
  s.nhid = (w.layers() - 1) * w.hidden_size;
  s.nlevels = history + w.layers() - 1;
  s.dilation = {1};
  s.aux_frequency = 0;
  s.weight_norm = false;
  return s;
}

/// Places the RNN's layer matrices into kernel 0 of RnnSparse parameters (bias zero).
template <class MemorySpace, class Scalar>
void load_recurrent(RnnSparseParameters<MemorySpace, Scalar> const& p, RecurrentWeights const& w) {
  long const M = w.layers(), d = w.hidden_size, G = w.groups();
  if (long(p.recurrent.extent(1)) != M || long(p.recurrent.extent(3)) != d ||
      long(p.recurrent.extent(2)) != G * d || long(p.input.extent(2)) != w.input_size)
    detail::fail("trellis::load_recurrent: parameters ", detail::shape_of(p.recurrent), " do not fit a ",
                 cell_name(w.cell), " of ", M, " layers, input ", w.input_size, ", hidden ", d);
  auto rec = Kokkos::create_mirror_view(p.recurrent);
  auto up = Kokkos::create_mirror_view(p.upward);
  auto in = Kokkos::create_mirror_view(p.input);
  Kokkos::deep_copy(rec, Scalar(0));
  Kokkos::deep_copy(up, Scalar(0));
  for (long j = 0; j < M; ++j)
    for (long r = 0; r < G * d; ++r)
      for (long b = 0; b < d; ++b) {
        rec(0, j, r, b) = Scalar(w.recurrent_weights[j](r, b));
        if (j > 0) up(0, j, r, b) = Scalar(w.input_weights[j](r, b));
      }
  for (long r = 0; r < G * d; ++r)
    for (long b = 0; b < w.input_size; ++b) in(0, r, b) = Scalar(w.input_weights[0](r, b));
  Kokkos::deep_copy(p.recurrent, rec);
  Kokkos::deep_copy(p.upward, up);
  Kokkos::deep_copy(p.input, in);
  Kokkos::deep_copy(p.bias2, Scalar(0));
}

}  // namespace trellis
