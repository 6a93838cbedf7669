#pragma once
// Running a model file on an input file, both safetensors in the reference's layouts:
//   a core:            x (N, ninp, L) [h, c (N, q, 1)] -> out (N, L, nout), h, c [, aux]
//   a language model:  tokens (N, L) [h, c]            -> log_probs (N, L, ntoken), h, c
//   a recurrent net:   x (T, N, input) (nn.LSTM / nn.RNN order) -> y (T, N, hidden),
//                      through the sparse TrellisNet equal to it truncated to a history.
// The outputs come back as a file to write; every misnamed or misshapen input is an
// error naming the file and the tensor.
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <set>
#include <string>

#include <trellis/blas/gemm.hpp>
#include <trellis/core/network.hpp>
#include <trellis/core/recurrent.hpp>
#include <trellis/core/weight_tying.hpp>
#include <trellis/errors.hpp>
#include <trellis/io/core_file.hpp>
#include <trellis/io/model_files.hpp>
#include <trellis/io/safetensors.hpp>
#include <trellis/io/tensor_io.hpp>
#include <trellis/io/torch_layout.hpp>

namespace trellis {

namespace detail {
/// Every input tensor must be one the model reads: a misspelt name is an error, not ignored.
inline void check_input_names(safetensors::File const& input, std::string const& path,
                              std::set<std::string> const& names) {
  for (auto const& [name, t] : input.tensors)
    if (!names.count(name)) {
      std::string list;
      for (auto const& n : names) list += " " + n;
      throw file_error(path + ": tensor '" + name + "' is not an input of this model (inputs:" + list + ")");
    }
}
}  // namespace detail

/// The core's forward pass on x and optional initial h, c.
template <class Exec, class Scalar, class WeightTying>
safetensors::File run_core_file(Exec const& space, safetensors::File const& model, std::string const& model_path,
                                safetensors::File const& input, std::string const& input_path,
                                blas::MathMode math = blas::MathMode::strict) {
  auto const shape = read_core_shape(model, model_path);
  using Net = TrellisNetwork<Exec, Scalar, WeightTying>;
  Net net(space, shape);
  net.set_math_mode(math);
  read_core_model(model, model_path, net);
  detail::check_input_names(input, input_path, {"x", "h", "c"});
  auto const& xt = input.at(input_path, "x");
  if (xt.shape.size() != 3 || xt.shape[1] != shape.ninp || xt.shape[0] < 1 || xt.shape[2] < 1)
    fail_tensor_shape(input_path, "x", tensor_shape(xt), "(N, " + std::to_string(shape.ninp) + ", L) with N, L >= 1");
  long const N = xt.shape[0], L = xt.shape[2], q = shape.q();
  typename Net::sequence_view x("x", L, N, shape.ninp), out("out", L, N, shape.nout);
  sequence_from_torch(x, xt, input_path, "x");
  typename Net::state_view h0("h0", N, q), c0("c0", N, q), h("h", N, q), c("c", N, q);
  if (input.has("h")) state_from_torch(h0, input.at(input_path, "h"), input_path, "h");
  if (input.has("c")) state_from_torch(c0, input.at(input_path, "c"), input_path, "c");
  typename Net::aux_view aux;
  if (shape.naux() > 0) aux = typename Net::aux_view("aux", shape.naux(), L, N, shape.nout);
  typename Net::cache_type cache;
  net.forward(space, x, h0, c0, out, h, c, aux, cache);
  safetensors::File o;
  constexpr auto dtype = safetensors::dtype_of<Scalar>();
  o.tensors["out"] = output_to_torch(out, dtype);
  o.tensors["h"] = state_to_torch(h, dtype);
  o.tensors["c"] = state_to_torch(c, dtype);
  if (shape.naux() > 0) o.tensors["aux"] = aux_to_torch(aux, dtype);
  return o;
}

/// The language model's log-probabilities of every next token, and the final state.
template <class Exec, class Scalar, class WeightTying>
safetensors::File run_language_model_file(Exec const& space, safetensors::File const& model,
                                          std::string const& model_path, safetensors::File const& input,
                                          std::string const& input_path,
                                          blas::MathMode math = blas::MathMode::strict) {
  using Model = LanguageModel<Exec, Scalar, WeightTying>;
  Model lm(space, read_language_model_config(model, model_path));
  lm.core().set_math_mode(math);
  read_language_model(model, model_path, lm);
  detail::check_input_names(input, input_path, {"tokens", "h", "c"});
  auto const& tt = input.at(input_path, "tokens");
  if (tt.shape.size() != 2 || tt.shape[0] < 1 || tt.shape[1] < 1)
    fail_tensor_shape(input_path, "tokens", tensor_shape(tt), "(N, L) with N, L >= 1");
  long const N = tt.shape[0], L = tt.shape[1], V = lm.config().ntoken;
  Kokkos::View<std::int32_t**, Kokkos::LayoutRight, typename Exec::memory_space> tokens("tokens", L, N);
  tokens_from_torch(tokens, tt, V, input_path, "tokens");
  auto state = lm.make_state(N);
  if (input.has("h")) state_from_torch(state.h, input.at(input_path, "h"), input_path, "h");
  if (input.has("c")) state_from_torch(state.c, input.at(input_path, "c"), input_path, "c");
  typename Model::matrix log_probs("log_probs", L * N, V);
  // Scoring the tokens against themselves only fills log_probs; the NLL is not used.
  lm.evaluate(space, tokens, tokens, 0, state, log_probs);
  safetensors::File o;
  constexpr auto dtype = safetensors::dtype_of<Scalar>();
  o.tensors["log_probs"] = rows_to_torch(log_probs, L, N, dtype);
  o.tensors["h"] = state_to_torch(state.h, dtype);
  o.tensors["c"] = state_to_torch(state.c, dtype);
  return o;
}

/// A core or, when its metadata has ntoken, a language model; tied or untied as its
/// metadata says.
template <class Exec, class Scalar>
safetensors::File run_model_file(Exec const& space, safetensors::File const& model, std::string const& model_path,
                                 safetensors::File const& input, std::string const& input_path,
                                 blas::MathMode math = blas::MathMode::strict) {
  auto const tying = model.metadata.find("weight_tying");
  bool const untied = tying != model.metadata.end() && tying->second == Untied::name;
  return with_weight_tying(untied, [&](auto t) {
    using Tying = decltype(t);
    if (model.metadata.count("ntoken"))
      return run_language_model_file<Exec, Scalar, Tying>(space, model, model_path, input, input_path, math);
    return run_core_file<Exec, Scalar, Tying>(space, model, model_path, input, input_path, math);
  });
}

/// The recurrent network of `w` truncated to `history` steps, as the sparse TrellisNet
/// of the paper's Theorem 1, on x (T, N, input): y (T, N, hidden).
template <class Exec, class Scalar>
safetensors::File run_recurrent_file(Exec const& space, RecurrentWeights const& w, int history,
                                     safetensors::File const& input, std::string const& input_path,
                                     blas::MathMode math = blas::MathMode::strict) {
  auto const shape = trellis_shape_for(w, history);
  return with_cell(w.cell, [&](auto activation) {
    using Net = TrellisNetwork<Exec, Scalar, TiedAcrossDepth, RnnSparse, decltype(activation)>;
    Net net(space, shape);
    net.set_math_mode(math);
    load_recurrent(net.parameters(), w);
    auto const& xt = input.at(input_path, "x");
    if (xt.shape.size() != 3 || xt.shape[2] != w.input_size || xt.shape[0] < 1 || xt.shape[1] < 1)
      fail_tensor_shape(input_path, "x", tensor_shape(xt),
                        "(T, N, " + std::to_string(w.input_size) + ") with T, N >= 1");
    long const T = xt.shape[0], N = xt.shape[1], q = shape.q();
    typename Net::sequence_view x("x", T, N, w.input_size), y("y", T, N, w.hidden_size);
    from_tensor(x, xt, input_path, "x");
    typename Net::state_view h0("h0", N, q), c0("c0", N, q), h("h", N, q), c("c", N, q);
    typename Net::cache_type cache;
    net.forward(space, x, h0, c0, y, h, c, {}, cache);
    safetensors::File out;
    out.tensors["y"] = to_tensor(y, safetensors::dtype_of<Scalar>());
    out.metadata["cell"] = cell_name(w.cell);
    out.metadata["history"] = std::to_string(history);
    out.metadata["layers"] = std::to_string(w.layers());
    return out;
  });
}

}  // namespace trellis
