// The trellis program (../shared/docs/INTERFACES.md). Results go to stdout, progress
// and logs to stderr; errors to stderr with a non-zero exit status, naming the file,
// tensor or flag at fault.
//
//   trellis from-rnn --state-dict R.safetensors --cell lstm|rnn-tanh|rnn-relu
//                    --history L --input X.safetensors --output Y.safetensors
#include <CLI/CLI.hpp>
#include <Kokkos_Core.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include <trellis/trellis.hpp>

namespace {

struct Common {
  std::string backend;
  std::string precision = "fp32";
  int threads = 0;
  bool tf32 = false;
};

std::string default_backend() {
#if defined(KOKKOS_ENABLE_CUDA)
  return "cuda";
#elif defined(KOKKOS_ENABLE_OPENMP)
  return "openmp";
#else
  return "serial";
#endif
}

std::string enabled_backends() {
  std::string out;
#if defined(KOKKOS_ENABLE_SERIAL)
  out += " serial";
#endif
#if defined(KOKKOS_ENABLE_OPENMP)
  out += " openmp";
#endif
#if defined(KOKKOS_ENABLE_CUDA)
  out += " cuda";
#endif
  return out;
}

/// Calls f.template operator()<Exec>() for the execution space named by `backend`.
template <class F>
void with_backend(std::string const& backend, F&& f) {
#if defined(KOKKOS_ENABLE_SERIAL)
  if (backend == "serial") return f.template operator()<Kokkos::Serial>();
#endif
#if defined(KOKKOS_ENABLE_OPENMP)
  if (backend == "openmp") return f.template operator()<Kokkos::OpenMP>();
#endif
#if defined(KOKKOS_ENABLE_CUDA)
  if (backend == "cuda") return f.template operator()<Kokkos::Cuda>();
#endif
  throw trellis::invalid_argument("--backend " + backend + ": not enabled in this build (enabled:" +
                                  enabled_backends() + ")");
}

template <class F>
void with_precision(std::string const& precision, F&& f) {
  if (precision == "fp32") return f(float{});
  if (precision == "fp64") return f(double{});
  throw trellis::invalid_argument("--precision " + precision + ": expected fp32 or fp64");
}

template <class F>
void with_cell(trellis::RecurrentCell cell, F&& f) {
  switch (cell) {
    case trellis::RecurrentCell::lstm: return f(trellis::LSTMGating{});
    case trellis::RecurrentCell::rnn_tanh: return f(trellis::ElementwiseTanh{});
    case trellis::RecurrentCell::rnn_relu: return f(trellis::ElementwiseRelu{});
  }
}

struct FromRnn {
  std::string state_dict, cell, input, output;
  int history = 0;
};

template <class Exec, class Scalar, class Activation>
void run_from_rnn(FromRnn const& a, Common const& common, trellis::RecurrentWeights const& w,
                  trellis::safetensors::File const& input) {
  Exec space;
  auto const shape = trellis::trellis_shape_for(w, a.history);
  using Net = trellis::TrellisNetwork<Exec, Scalar, trellis::TiedAcrossDepth, trellis::RnnSparse, Activation>;
  Net net(space, shape);
  if (common.tf32) net.set_math_mode(trellis::blas::MathMode::tf32);
  trellis::load_recurrent(net.parameters(), w);
  auto const& xt = input.at(a.input, "x");
  if (xt.shape.size() != 3 || xt.shape[2] != w.input_size || xt.shape[0] < 1 || xt.shape[1] < 1)
    throw trellis::file_error(a.input + ": tensor 'x' has shape " +
                              trellis::detail::shape_of(std::vector<long>(xt.shape.begin(), xt.shape.end())) +
                              ", expected (T, N, " + std::to_string(w.input_size) + ") with T, N >= 1");
  long const T = xt.shape[0], N = xt.shape[1], d = w.hidden_size, q = shape.q();
  typename Net::sequence_view x("x", T, N, w.input_size), y("y", T, N, d);
  trellis::from_tensor(x, xt, a.input, "x");
  typename Net::state_view h0("h0", N, q), c0("c0", N, q), h("h", N, q), c("c", N, q);
  typename Net::cache_type cache;
  auto const start = std::chrono::steady_clock::now();
  net.forward(space, x, h0, c0, y, h, c, {}, cache);
  space.fence();
  double const seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  trellis::safetensors::File out;
  out.tensors["y"] = trellis::to_tensor(y, std::is_same_v<Scalar, double> ? trellis::safetensors::DType::F64
                                                                        : trellis::safetensors::DType::F32);
  out.metadata["cell"] = a.cell;
  out.metadata["history"] = std::to_string(a.history);
  out.metadata["layers"] = std::to_string(w.layers());
  trellis::safetensors::write(a.output, out);
  std::fprintf(stderr, "trellis from-rnn: %s, %d layers, hidden %d, history %d: %ld levels on %s in %.3f s\n",
               a.cell.c_str(), w.layers(), w.hidden_size, a.history, long(shape.nlevels), Exec::name(), seconds);
  std::printf("wrote y (%ld, %ld, %ld) to %s\n", T, N, d, a.output.c_str());
}

void from_rnn(FromRnn const& a, Common const& common) {
  auto const cell = trellis::parse_cell(a.cell);
  auto const sd = trellis::safetensors::read(a.state_dict);
  auto const w = trellis::recurrent_from_pytorch(sd, cell, a.state_dict);
  auto const input = trellis::safetensors::read(a.input);
  with_backend(common.backend, [&]<class Exec>() {
    with_precision(common.precision, [&](auto scalar) {
      with_cell(cell, [&](auto activation) {
        run_from_rnn<Exec, decltype(scalar), decltype(activation)>(a, common, w, input);
      });
    });
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"trellis: Trellis Networks on Kokkos"};
  app.require_subcommand(1);
  Common common;
  common.backend = default_backend();
  auto add_common = [&](CLI::App* sub) {
    sub->add_option("--backend", common.backend, "serial|openmp|cuda (default: the best enabled)")
        ->capture_default_str();
    sub->add_option("--precision", common.precision, "fp32|fp64")->capture_default_str();
    sub->add_option("--threads", common.threads, "host threads (default: Kokkos' default)");
    sub->add_flag("--tf32", common.tf32, "allow TF32 tensor cores on CUDA in fp32");
  };

  FromRnn fr;
  auto* from_rnn_cmd = app.add_subcommand(
      "from-rnn", "build the sparse TrellisNet equal to a PyTorch nn.LSTM / nn.RNN truncated to --history steps, run it on x, write y");
  from_rnn_cmd->add_option("--state-dict", fr.state_dict, "the nn.LSTM / nn.RNN state_dict as safetensors")->required();
  from_rnn_cmd->add_option("--cell", fr.cell, "lstm|rnn-tanh|rnn-relu")->required()->check(
      CLI::IsMember({"lstm", "rnn-tanh", "rnn-relu"}));
  from_rnn_cmd->add_option("--history", fr.history, "L: the truncation length")->required()->check(CLI::PositiveNumber);
  from_rnn_cmd->add_option("--input", fr.input, "safetensors with x (T, N, input)")->required();
  from_rnn_cmd->add_option("--output", fr.output, "safetensors to write y (T, N, hidden) to")->required();
  add_common(from_rnn_cmd);

  try {
    app.parse(argc, argv);
  } catch (CLI::ParseError const& e) {
    return app.exit(e);
  }
  trellis::detail::initialize_kokkos(common.threads);
  int status = 0;
  try {
    if (*from_rnn_cmd) from_rnn(fr, common);
  } catch (std::exception const& e) {
    std::fprintf(stderr, "trellis %s: %s\n", app.get_subcommands().front()->get_name().c_str(), e.what());
    status = 1;
  }
  Kokkos::finalize();
  return status;
}
