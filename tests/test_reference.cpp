// The library against PyTorch. tests/fixtures holds what tools/trellis_torch.py (a
// PyTorch TrellisNet written from the reference's math, checked against the reference
// code) computes for small random models (tools/make_fixtures.py): outputs and every gradient
// of the core, with and without weight normalisation, for three dilation cycles, and of
// the language model with a tied decoder and with a mixture of softmaxes; and the losses
// of twenty Adam and SGD steps. Each is read through the library's readers of the
// reference's files and compared, max|a - b| / max|b|, within 1e-5 in float and 1e-10
// in double (1e-9 for the losses of the twenty steps).
#include <doctest/doctest.h>

#include <cstdlib>

#include <trellis/trellis.hpp>

#include "backends.hpp"
#include "helpers.hpp"

namespace st = trellis::safetensors;

namespace {

// TRELLIS_FIXTURES_DIR in the environment: the fixtures where the build is carried to.
std::string fixture(std::string const& name, char const* file) {
  char const* env = std::getenv("TRELLIS_FIXTURES_DIR");
  return std::string(env ? env : TRELLIS_FIXTURES_DIR) + "/" + name + "/" + file;
}

struct Fixture {
  std::string name;
  st::File model, input, expected;
  explicit Fixture(std::string n)
      : name(std::move(n)),
        model(st::read(fixture(name, "model.safetensors"))),
        input(st::read(fixture(name, "input.safetensors"))),
        expected(st::read(fixture(name, "expected.safetensors"))) {}
  st::Tensor const& want(std::string const& key) const { return expected.at(name + "/expected", key); }
  st::Tensor const& in(std::string const& key) const { return input.at(name + "/input", key); }
};

/// max|a - b| / max|b|.
void check(std::string const& what, st::Tensor const& got, st::Tensor const& want, double tol) {
  CAPTURE(what);
  REQUIRE(got.shape == want.shape);
  double const rel = trellis::test::relative_error(got.to_double(), want.to_double());
  CHECK_MESSAGE(rel <= tol, what << ": max|a - b| / max|b| = " << rel);
}

template <class Scalar>
std::string tag() {
  return std::is_same_v<Scalar, float> ? "f32." : "f64.";
}
template <class Scalar>
double tolerance() {
  return std::is_same_v<Scalar, float> ? 1e-5 : 1e-10;
}

/// The (N, L) slice s of an integer tensor (S, N, L).
st::Tensor slice(st::Tensor const& t, long s) {
  long const N = t.shape[1], L = t.shape[2];
  auto const v = t.to_double();
  std::vector<double> out(v.begin() + s * N * L, v.begin() + (s + 1) * N * L);
  return st::Tensor::from_double(st::DType::I64, {N, L}, out);
}

template <class Exec, class Scalar>
void core_matches_pytorch(std::string const& name) {
  CAPTURE(name);
  Exec space;
  Fixture const f(name);
  using Net = trellis::TrellisNetwork<Exec, Scalar>;
  auto const shape = trellis::read_core_shape(f.model, name);
  Net net(space, shape);
  trellis::read_core_model(f.model, name, net);
  auto const& xt = f.in("x");
  long const N = xt.shape[0], L = xt.shape[2], q = shape.q(), A = shape.naux();
  REQUIRE(A > 0);
  typename Net::sequence_view x("x", L, N, shape.ninp), dx("dx", L, N, shape.ninp);
  typename Net::sequence_view out("out", L, N, shape.nout), d_out("d_out", L, N, shape.nout);
  typename Net::state_view h0("h0", N, q), c0("c0", N, q), h("h", N, q), c("c", N, q);
  typename Net::state_view dh0("dh0", N, q), dc0("dc0", N, q), d_h("d_h", N, q), d_c("d_c", N, q);
  typename Net::aux_view aux("aux", A, L, N, shape.nout), d_aux("d_aux", A, L, N, shape.nout);
  trellis::sequence_from_torch(x, xt, name, "x");
  trellis::state_from_torch(h0, f.in("h"), name, "h");
  trellis::state_from_torch(c0, f.in("c"), name, "c");
  typename Net::cache_type cache;
  net.forward(space, x, h0, c0, out, h, c, aux, cache);

  auto const t = tag<Scalar>();
  double const tol = tolerance<Scalar>();
  auto const F64 = st::DType::F64;
  check("out", trellis::output_to_torch(out, F64), f.want(t + "out"), tol);
  check("h", trellis::state_to_torch(h, F64), f.want(t + "h"), tol);
  check("c", trellis::state_to_torch(c, F64), f.want(t + "c"), tol);
  check("aux", trellis::aux_to_torch(aux, F64), f.want(t + "aux"), tol);

  // The loss sum(out r_out) + sum(h r_h) + sum(c r_c) + sum(aux r_aux).
  trellis::output_from_torch(d_out, f.want("r_out"), name, "r_out");
  trellis::state_from_torch(d_h, f.want("r_h"), name, "r_h");
  trellis::state_from_torch(d_c, f.want("r_c"), name, "r_c");
  trellis::aux_from_torch(d_aux, f.want("r_aux"), name, "r_aux");
  net.zero_gradients(space);
  net.backward(space, cache, d_out, d_h, d_c, d_aux, dx, dh0, dc0);
  st::File grads;
  trellis::write_core_tensors(grads, "full_conv.", net.gradients(), shape.weight_norm, false, F64);
  CHECK(grads.tensors.size() == (shape.weight_norm ? 5u : 3u));
  for (auto const& [key, g] : grads.tensors) check("grad " + key, g, f.want(t + "grad." + key), tol);
  check("grad x", trellis::sequence_to_torch(dx, F64), f.want(t + "grad.x"), tol);
  check("grad h0", trellis::state_to_torch(dh0, F64), f.want(t + "grad.h0"), tol);
  check("grad c0", trellis::state_to_torch(dc0, F64), f.want(t + "grad.c0"), tol);
}

template <class Exec, class Scalar>
void language_model_matches_pytorch(std::string const& name) {
  CAPTURE(name);
  Exec space;
  Fixture const f(name);
  using Model = trellis::LanguageModel<Exec, Scalar>;
  auto config = trellis::read_language_model_config(f.model, name);
  config.aux = f.want("aux_weight").to_double().at(0);
  Model lm(space, config);
  trellis::read_language_model(f.model, name, lm);
  auto const& tt = f.in("tokens");
  long const N = tt.shape[0], L = tt.shape[1], V = config.ntoken;
  Kokkos::View<std::int32_t**, Kokkos::LayoutRight, typename Exec::memory_space> tokens("tokens", L, N),
      targets("targets", L, N);
  trellis::tokens_from_torch(tokens, tt, V, name, "tokens");
  trellis::tokens_from_torch(targets, f.want("targets"), V, name, "targets");

  auto const t = tag<Scalar>();
  double const tol = tolerance<Scalar>();
  auto const F64 = st::DType::F64;
  auto start = [&] {
    auto s = lm.make_state(N);
    trellis::state_from_torch(s.h, f.in("h"), name, "h");
    trellis::state_from_torch(s.c, f.in("c"), name, "c");
    return s;
  };
  auto state = start();
  typename Model::matrix log_probs("log_probs", L * N, V);
  lm.evaluate(space, tokens, targets, 0, state, log_probs);
  check("log_probs", trellis::rows_to_torch(log_probs, L, N, F64), f.want(t + "log_probs"), tol);
  check("h", trellis::state_to_torch(state.h, F64), f.want(t + "h"), tol);
  check("c", trellis::state_to_torch(state.c, F64), f.want(t + "c"), tol);

  auto train_state = start();
  std::mt19937_64 rng(1);
  lm.zero_gradients(space);
  auto const loss = lm.train_step(space, tokens, targets, 0, train_state, lm.draw_masks(N, rng));
  check("loss", st::Tensor::from_double(F64, {1}, std::vector<double>{loss.total}), f.want(t + "loss"), tol);

  // The gradients in the reference's names and layouts: a second model holds them as
  // its weights and is written as the reference's state_dict.
  Model grads(space, config);
  auto from = lm.parameters(), to = grads.parameters();
  REQUIRE(from.size() == to.size());
  for (std::size_t k = 0; k < from.size(); ++k) Kokkos::deep_copy(to[k].value, from[k].grad);
  st::File g;
  trellis::write_language_model(g, grads, F64);
  int compared = 0;
  for (auto const& [key, tensor] : f.expected.tensors) {
    if (key.rfind(t + "grad.", 0) != 0) continue;
    check("grad " + key, g.at("gradients", key.substr(t.size() + 5)), tensor, tol);
    ++compared;
  }
  CHECK(compared == int(from.size()));
}

template <class Exec>
void training_matches_pytorch(std::string const& name) {
  CAPTURE(name);
  Exec space;
  Fixture const f(name);
  using Model = trellis::LanguageModel<Exec, double>;
  auto const config = trellis::read_language_model_config(f.model, name);
  Model lm(space, config);
  trellis::read_language_model(f.model, name, lm);
  auto const& meta = f.model.metadata;
  trellis::OptimizerOptions o;
  o.lr = std::stod(meta.at("train.lr"));
  o.weight_decay = std::stod(meta.at("train.wdecay"));
  o.momentum = std::stod(meta.at("train.momentum"));
  auto const kind = meta.at("train.optim") == "adam" ? trellis::Optimizer<Exec, double>::Kind::adam
                                                     : trellis::Optimizer<Exec, double>::Kind::sgd;
  double const clip = std::stod(meta.at("train.clip"));
  auto params = lm.parameters();
  trellis::Optimizer<Exec, double> opt(kind, params, o);

  auto const& all_tokens = f.in("tokens");
  auto const& all_targets = f.want("targets");
  auto const want = f.want("losses").to_double();
  long const S = all_tokens.shape[0], N = all_tokens.shape[1], L = all_tokens.shape[2];
  REQUIRE(long(want.size()) == S);
  Kokkos::View<std::int32_t**, Kokkos::LayoutRight, typename Exec::memory_space> tokens("tokens", L, N),
      targets("targets", L, N);
  auto state = lm.make_state(N);
  std::mt19937_64 rng(1);
  double worst = 0;
  for (long s = 0; s < S; ++s) {
    trellis::tokens_from_torch(tokens, slice(all_tokens, s), config.ntoken, name, "tokens");
    trellis::tokens_from_torch(targets, slice(all_targets, s), config.ntoken, name, "targets");
    lm.zero_gradients(space);
    auto const loss = lm.train_step(space, tokens, targets, 0, state, lm.draw_masks(N, rng));
    trellis::clip_grad_norm(space, params, clip);
    opt.step(space);
    double const rel = std::abs(loss.total - want[s]) / std::abs(want[s]);
    worst = std::max(worst, rel);
    CHECK_MESSAGE(rel <= 1e-9, "step " << s + 1 << ": loss " << loss.total << ", PyTorch " << want[s]);
  }
  // The steps must move the loss, or the comparison says little about the optimiser.
  CHECK(std::abs(want.back() - want.front()) > 1e-3);
  MESSAGE(name << ": worst relative difference of the 20 losses " << worst);
}

template <class Exec, class Scalar>
void core_fixtures() {
  for (char const* name :
       {"core_plain_d1", "core_plain_d12", "core_plain_d213", "core_wnorm_d1", "core_wnorm_d12", "core_wnorm_d213"})
    core_matches_pytorch<Exec, Scalar>(name);
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("core outputs and gradients match PyTorch", Exec, core_reference) {
  core_fixtures<Exec, double>();
  core_fixtures<Exec, float>();
}
TEST_CASE_TEMPLATE_APPLY(core_reference, trellis::test::Backends);

TEST_CASE_TEMPLATE_DEFINE("language model outputs and gradients match PyTorch", Exec, lm_reference) {
  for (char const* name : {"lm_tied", "lm_mos"}) {
    language_model_matches_pytorch<Exec, double>(name);
    language_model_matches_pytorch<Exec, float>(name);
  }
}
TEST_CASE_TEMPLATE_APPLY(lm_reference, trellis::test::Backends);

TEST_CASE_TEMPLATE_DEFINE("twenty optimiser steps reproduce PyTorch's losses", Exec, train_reference) {
  training_matches_pytorch<Exec>("train_adam");
  training_matches_pytorch<Exec>("train_sgd");
}
TEST_CASE_TEMPLATE_APPLY(train_reference, trellis::test::Backends);

TEST_CASE("reading the reference's files: unknown, missing and misshaped tensors name the tensor") {
  using Exec = Kokkos::DefaultHostExecutionSpace;
  Exec space;
  Fixture const f("core_wnorm_d12");
  auto const shape = trellis::read_core_shape(f.model, "m");
  trellis::TrellisNetwork<Exec, double> net(space, shape);
  auto expect_error = [&](st::File const& file, std::string const& needle) {
    CAPTURE(needle);
    try {
      trellis::read_core_model(file, "m.safetensors", net);
      FAIL("no error");
    } catch (trellis::file_error const& e) {
      CHECK_MESSAGE(std::string(e.what()).find(needle) != std::string::npos, e.what());
    }
  };
  auto extra = f.model;
  extra.tensors["full_conv.weight3"] = extra.tensors.at("full_conv.bias2");
  expect_error(extra, "'full_conv.weight3' is not part of a core with weight normalisation");
  auto missing = f.model;
  missing.tensors.erase("full_conv.weight2_g");
  expect_error(missing, "full_conv.weight2_g");
  auto misshaped = f.model;
  misshaped.tensors["full_conv.bias2"] = st::Tensor::from_double(st::DType::F64, {3}, {1, 2, 3});
  expect_error(misshaped, "full_conv.bias2");

  // What write_core_model writes, read_core_model reads back: the same file.
  trellis::read_core_model(f.model, "m.safetensors", net);
  st::File round;
  trellis::write_core_model(round, net, st::DType::F64);
  CHECK(round.metadata == f.model.metadata);
  REQUIRE(round.tensors.size() == f.model.tensors.size());
  for (auto const& [key, t] : f.model.tensors) CHECK(round.at("round", key).to_double() == t.to_double());

  Fixture const lmf("lm_mos");
  auto const config = trellis::read_language_model_config(lmf.model, "lm");
  trellis::LanguageModel<Exec, double> lm(space, config);
  auto lm_extra = lmf.model;
  lm_extra.tensors["mixsoft.prior.weight2"] = lm_extra.tensors.at("decoder.bias");
  try {
    trellis::read_language_model(lm_extra, "lm.safetensors", lm);
    FAIL("no error");
  } catch (trellis::file_error const& e) {
    CHECK(std::string(e.what()).find("'mixsoft.prior.weight2' is not part of a language model") != std::string::npos);
  }
  // Duplicates are accepted only when equal to their twins.
  auto twin = lmf.model;
  auto bias = twin.tensors.at("network.1.prior.bias").to_double();
  bias[0] += 1;
  twin.tensors["network.1.prior.bias"] = st::Tensor::from_double(st::DType::F64, {long(bias.size())}, bias);
  try {
    trellis::read_language_model(twin, "lm.safetensors", lm);
    FAIL("no error");
  } catch (trellis::file_error const& e) {
    CHECK(std::string(e.what()).find("network.1.prior.bias") != std::string::npos);
  }
  trellis::read_language_model(lmf.model, "lm.safetensors", lm);  // the file itself reads
}
