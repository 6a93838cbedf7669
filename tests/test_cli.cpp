// The trellis program's from-rnn subcommand, end to end: a PyTorch-style LSTM
// state_dict and an input written as safetensors, the program run as a user would,
// its output compared with the step-by-step truncated LSTM; and its errors.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <trellis/reference/recurrent_reference.hpp>
#include <trellis/recurrent.hpp>
#include <trellis/safetensors.hpp>

namespace st = trellis::safetensors;

namespace {

std::filesystem::path work_dir() {
  auto dir = std::filesystem::temp_directory_path() / "trellis-cli-test";
  std::filesystem::create_directories(dir);
  return dir;
}

/// Runs the program with `args`; returns its exit status and stderr.
std::pair<int, std::string> run_cli(std::string const& args) {
  auto const err = (work_dir() / "stderr.txt").string();
  std::string const cmd = std::string(TRELLIS_CLI_PATH) + " " + args + " > /dev/null 2> " + err;
  int const status = std::system(cmd.c_str());
  std::ifstream in(err);
  std::stringstream text;
  text << in.rdbuf();
  return {WEXITSTATUS(status), text.str()};
}

st::Tensor matrix_tensor(Eigen::MatrixXd const& m) {
  std::vector<double> v;
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j) v.push_back(m(i, j));
  return st::Tensor::from_double(st::DType::F32, {m.rows(), m.cols()}, v);
}

/// The trellis gate order i, o, g, f back to PyTorch's i, f, g, o.
Eigen::MatrixXd to_pytorch(Eigen::MatrixXd const& m, int d) {
  Eigen::MatrixXd out(m.rows(), m.cols());
  int const from[4] = {0, 3, 2, 1};
  for (int b = 0; b < 4; ++b) out.middleRows(b * d, d) = m.middleRows(from[b] * d, d);
  return out;
}

}  // namespace

TEST_CASE("trellis from-rnn reproduces a truncated PyTorch-style LSTM") {
  int const M = 2, d = 3, in = 2, L = 4;
  long const T = 10, N = 2;
  auto w = trellis::RecurrentWeights::random(trellis::RecurrentCell::lstm, in, d, M, 17);
  // Round through float, as the file stores it, so both sides use the same weights.
  for (auto* ms : {&w.input_weights, &w.recurrent_weights})
    for (auto& m : *ms) m = m.cast<float>().cast<double>();
  st::File sd;
  for (int k = 0; k < M; ++k) {
    sd.tensors["weight_ih_l" + std::to_string(k)] = matrix_tensor(to_pytorch(w.input_weights[k], d));
    sd.tensors["weight_hh_l" + std::to_string(k)] = matrix_tensor(to_pytorch(w.recurrent_weights[k], d));
    sd.tensors["bias_ih_l" + std::to_string(k)] = st::Tensor::from_double(st::DType::F32, {4 * d}, std::vector<double>(4 * d, 0));
  }
  std::vector<double> x(T * N * in);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.7 * double(i));
  st::File xin;
  xin.tensors["x"] = st::Tensor::from_double(st::DType::F64, {T, N, in}, x);
  auto const dir = work_dir();
  st::write((dir / "sd.safetensors").string(), sd);
  st::write((dir / "x.safetensors").string(), xin);
  std::string const common = "--state-dict " + (dir / "sd.safetensors").string() + " --cell lstm --history " +
                             std::to_string(L) + " --input " + (dir / "x.safetensors").string();
  auto const want = trellis::reference::run_truncated(w, x, T, N, L);

  for (std::string precision : {"fp64", "fp32"}) {
    CAPTURE(precision);
    auto const out = (dir / ("y_" + precision + ".safetensors")).string();
    auto [status, err] = run_cli("from-rnn " + common + " --output " + out + " --precision " + precision);
    INFO(err);
    REQUIRE(status == 0);
    auto y = st::read(out);
    auto const& t = y.at(out, "y");
    CHECK(t.dtype == (precision == "fp64" ? st::DType::F64 : st::DType::F32));
    CHECK(t.shape == std::vector<std::int64_t>{T, N, d});
    auto const got = t.to_double();
    double diff = 0;
    for (std::size_t i = 0; i < got.size(); ++i) diff = std::max(diff, std::abs(got[i] - want[i]));
    CHECK(diff <= (precision == "fp64" ? 1e-12 : 1e-5));
  }

  SUBCASE("a nonzero bias is refused, naming the tensor") {
    sd.tensors["bias_hh_l1"] = st::Tensor::from_double(st::DType::F32, {4 * d}, std::vector<double>(4 * d, 0.1));
    st::write((dir / "sd_bias.safetensors").string(), sd);
    auto [status, err] = run_cli("from-rnn --state-dict " + (dir / "sd_bias.safetensors").string() +
                                 " --cell lstm --history 4 --input " + (dir / "x.safetensors").string() +
                                 " --output " + (dir / "never.safetensors").string());
    CHECK(status != 0);
    CHECK(err.find("bias_hh_l1") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir / "never.safetensors"));
  }
  SUBCASE("an input of the wrong width") {
    st::File bad;
    bad.tensors["x"] = st::Tensor::from_double(st::DType::F32, {T, N, in + 1}, std::vector<double>(T * N * (in + 1), 0));
    st::write((dir / "x_bad.safetensors").string(), bad);
    auto [status, err] = run_cli("from-rnn --state-dict " + (dir / "sd.safetensors").string() +
                                 " --cell lstm --history 4 --input " + (dir / "x_bad.safetensors").string() +
                                 " --output " + (dir / "never.safetensors").string());
    CHECK(status != 0);
    CHECK(err.find("tensor 'x' has shape (10, 2, 3), expected (T, N, 2)") != std::string::npos);
  }
  SUBCASE("a missing flag and an unknown cell") {
    CHECK(run_cli("from-rnn --cell lstm").first != 0);
    auto [status, err] = run_cli("from-rnn " + common + " --output x.safetensors --cell gru");
    CHECK(status != 0);
    CHECK(err.find("--cell") != std::string::npos);
  }
}
