// The trellis program's from-rnn subcommand, end to end: a PyTorch-style LSTM
// state_dict and an input written as safetensors, the program run as a user would,
// its output compared with the step-by-step truncated LSTM; and its errors.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <trellis/core/recurrent.hpp>
#include <trellis/io/safetensors.hpp>
#include <trellis/testing/naive_recurrent.hpp>

#include "helpers.hpp"

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
  // With OMP_PROC_BIND unset, as a user's shell has it (ctest sets it).
  std::string const cmd = "env -u OMP_PROC_BIND " + std::string(TRELLIS_CLI_PATH) + " " + args + " > /dev/null 2> " + err;
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
  auto const want = trellis::naive::run_truncated(w, x, T, N, L);

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

namespace {

std::string fixture_file(std::string const& name, char const* file) {
  return std::string(TRELLIS_FIXTURES_DIR) + "/" + name + "/" + file;
}

/// max|a - b| / max|b| of the tensor `key` of two files.
double relative_difference(st::File const& got, std::string const& key, st::File const& want, std::string const& wkey) {
  auto const& a = got.at("output", key);
  auto const& b = want.at("expected", wkey);
  REQUIRE(a.shape == b.shape);
  return trellis::test::relative_error(a.to_double(), b.to_double());
}

}  // namespace

TEST_CASE("trellis run reproduces PyTorch's forward pass of a core and of a language model") {
  auto const dir = work_dir();
  for (std::string precision : {"fp64", "fp32"}) {
    CAPTURE(precision);
    double const tol = precision == "fp64" ? 1e-10 : 1e-5;
    std::string const tag = precision == "fp64" ? "f64." : "f32.";
    for (std::string name : {"core_wnorm_d213", "core_plain_d12"}) {
      CAPTURE(name);
      auto const out = (dir / ("run_" + name + precision + ".safetensors")).string();
      auto [status, err] = run_cli("run --model " + fixture_file(name, "model.safetensors") + " --input " +
                                   fixture_file(name, "input.safetensors") + " --output " + out + " --precision " +
                                   precision);
      REQUIRE_MESSAGE(status == 0, err);
      auto const got = st::read(out);
      auto const want = st::read(fixture_file(name, "expected.safetensors"));
      CHECK(got.tensors.size() == 4);
      for (std::string key : {"out", "h", "c", "aux"}) CHECK(relative_difference(got, key, want, tag + key) <= tol);
    }
    auto const out = (dir / ("run_lm" + precision + ".safetensors")).string();
    auto [status, err] = run_cli("run --model " + fixture_file("lm_mos", "model.safetensors") + " --input " +
                                 fixture_file("lm_mos", "input.safetensors") + " --output " + out + " --precision " +
                                 precision);
    REQUIRE_MESSAGE(status == 0, err);
    auto const got = st::read(out);
    auto const want = st::read(fixture_file("lm_mos", "expected.safetensors"));
    for (std::string key : {"log_probs", "h", "c"}) CHECK(relative_difference(got, key, want, tag + key) <= tol);
  }

  SUBCASE("errors name the file and the tensor, and write nothing") {
    auto const never = (dir / "never.safetensors").string();
    std::filesystem::remove(never);
    auto run = [&](std::string const& model, std::string const& input) {
      return run_cli("run --model " + model + " --input " + input + " --output " + never);
    };
    auto const core_model = fixture_file("core_wnorm_d12", "model.safetensors");
    auto const lm_model = fixture_file("lm_tied", "model.safetensors");

    st::File x_only;
    x_only.tensors["x"] = st::Tensor::from_double(st::DType::F32, {2, 4, 5}, std::vector<double>(40, 0.5));
    st::write((dir / "x_wide.safetensors").string(), x_only);
    auto [s1, e1] = run(core_model, (dir / "x_wide.safetensors").string());
    CHECK(s1 != 0);
    CHECK(e1.find("tensor 'x' has shape (2, 4, 5), expected (N, 3, L)") != std::string::npos);

    st::File typo;
    typo.tensors["x"] = st::Tensor::from_double(st::DType::F32, {2, 3, 5}, std::vector<double>(30, 0.5));
    typo.tensors["h0"] = st::Tensor::from_double(st::DType::F32, {2, 7, 1}, std::vector<double>(14, 0.5));
    st::write((dir / "x_typo.safetensors").string(), typo);
    auto [s2, e2] = run(core_model, (dir / "x_typo.safetensors").string());
    CHECK(s2 != 0);
    CHECK(e2.find("tensor 'h0' is not an input of this model") != std::string::npos);

    st::File bad_state;
    bad_state.tensors["x"] = typo.tensors["x"];
    bad_state.tensors["h"] = st::Tensor::from_double(st::DType::F32, {2, 6, 1}, std::vector<double>(12, 0.5));
    st::write((dir / "x_state.safetensors").string(), bad_state);
    auto [s3, e3] = run(core_model, (dir / "x_state.safetensors").string());
    CHECK(s3 != 0);
    CHECK(e3.find("tensor 'h' has shape (2, 6, 1), expected (2, 7, 1)") != std::string::npos);

    st::File tokens;
    tokens.tensors["tokens"] = st::Tensor::from_double(st::DType::I64, {1, 3}, {1, 13, 2});
    st::write((dir / "tokens_bad.safetensors").string(), tokens);
    auto [s4, e4] = run(lm_model, (dir / "tokens_bad.safetensors").string());
    CHECK(s4 != 0);
    CHECK(e4.find("tensor 'tokens' holds 13.000000 at (0, 1); tokens are integers in [0, 13)") != std::string::npos);

    auto model = st::read(core_model);
    model.tensors["full_conv.weight3_v"] = model.tensors.at("full_conv.weight1_v");
    st::write((dir / "model_extra.safetensors").string(), model);
    auto [s5, e5] = run((dir / "model_extra.safetensors").string(), fixture_file("core_wnorm_d12", "input.safetensors"));
    CHECK(s5 != 0);
    CHECK(e5.find("tensor 'full_conv.weight3_v' is not part of a core with weight normalisation") != std::string::npos);

    auto [s6, e6] = run(fixture_file("lm_tied", "model.safetensors"), fixture_file("core_wnorm_d12", "input.safetensors"));
    CHECK(s6 != 0);
    CHECK(e6.find("tensor 'x' is not an input of this model (inputs: c h tokens)") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(never));
  }
}

#if defined(KOKKOS_ENABLE_OPENMP)
TEST_CASE("the program chooses its thread binding: no Kokkos advice about OMP_PROC_BIND when it is unset") {
  // Another Kokkos program started so prints four lines of advice; this one sets the
  // binding it runs with (unbound) before Kokkos starts, and says only its own error.
  auto [status, err] = run_cli("generate --backend openmp --checkpoint " +
                               (work_dir() / "absent.safetensors").string() + " --prompt a --tokens 1");
  INFO(err);
  CHECK(status != 0);
  CHECK(err.find("cannot open") != std::string::npos);
  CHECK(err.find("OMP_PROC_BIND") == std::string::npos);
}
#endif
