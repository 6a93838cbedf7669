// The whole models against central finite differences in double (dropout masks fixed):
// embedding, core, tied decoder or mixture of softmaxes, aux losses, AR and TAR; the
// sequence classifier; and the optimisers' PyTorch semantics.
#include <doctest/doctest.h>

#include <trellis/trellis.hpp>

#include "backends.hpp"
#include "helpers.hpp"

namespace {

using namespace trellis::test;

template <class MemorySpace>
auto device_tokens(std::vector<std::int32_t> const& host, long L, long N) {
  Kokkos::View<std::int32_t**, Kokkos::LayoutRight, MemorySpace> v("tokens", L, N);
  auto h = Kokkos::create_mirror_view(v);
  for (long i = 0; i < L * N; ++i) h.data()[i] = host[i];
  Kokkos::deep_copy(v, h);
  return v;
}

/// Compares the analytic gradient of every parameter with central differences of
/// `loss_of()`, on up to `samples` entries per tensor (norm-wise relative error).
template <class List, class Loss>
void check_parameters(List const& params, std::vector<std::vector<double>> const& analytic, Loss&& loss_of,
                      std::size_t samples = 40) {
  double const h = 1e-6, tol = 1e-6;
  std::mt19937_64 pick(3);
  for (std::size_t k = 0; k < params.size(); ++k) {
    auto const& p = params[k];
    auto values = to_host(p.value);
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < values.size(); ++i) idx.push_back(i);
    if (idx.size() > samples) {
      std::shuffle(idx.begin(), idx.end(), pick);
      idx.resize(samples);
    }
    std::vector<double> fd, an;
    for (auto i : idx) {
      auto plus = values, minus = values;
      plus[i] += h;
      minus[i] -= h;
      from_host(p.value, plus);
      double const lp = loss_of();
      from_host(p.value, minus);
      double const lm = loss_of();
      fd.push_back((lp - lm) / (2 * h));
      an.push_back(analytic[k][i]);
    }
    from_host(p.value, values);
    check_close(p.name.c_str(), an, fd, tol);
  }
}

template <class Exec>
void language_model_gradcheck(int experts) {
  Exec space;
  using Model = trellis::LanguageModel<Exec, double>;
  trellis::LanguageModelConfig cfg;
  cfg.core.ninp = 4;
  cfg.core.nhid = 3;
  cfg.core.nout = experts > 0 ? 5 : 4;
  cfg.core.nlevels = 4;
  cfg.core.aux_frequency = 2;
  cfg.core.weight_norm = true;
  cfg.ntoken = 7;
  cfg.n_experts = experts;
  cfg.dropout = cfg.dropouti = cfg.dropouth = cfg.emb_dropout = cfg.wdrop = cfg.dropoutl = 0.3;
  cfg.aux = 0.3;
  cfg.alpha = 2;
  cfg.beta = 1;
  Model model(space, cfg, 5);
  // Larger weights than the reference's init, so that every term matters.
  std::mt19937_64 rng(11);
  for (auto const& p : model.parameters()) from_host(p.value, random_vector(p.value.extent(0), rng, -0.5, 0.5));
  long const L = 6, N = 3, s = 2;
  std::vector<std::int32_t> tok(L * N), tgt(L * N);
  for (auto& t : tok) t = std::int32_t(rng() % 7);
  for (auto& t : tgt) t = std::int32_t(rng() % 7);
  tok[0] = 6;  // a dropped and a kept row of the embedding both appear
  auto const tokens = device_tokens<typename Exec::memory_space>(tok, L, N);
  auto const targets = device_tokens<typename Exec::memory_space>(tgt, L, N);
  auto const masks = model.draw_masks(N, rng);
  auto const h0 = random_vector(N * cfg.core.q(), rng), c0 = random_vector(N * cfg.core.q(), rng);
  auto state = model.make_state(N);
  auto reset = [&] {
    from_host(state.h, h0);
    from_host(state.c, c0);
  };
  reset();
  model.zero_gradients(space);
  auto const step = model.train_step(space, tokens, targets, s, state, masks);
  reset();
  auto const again = model.loss(space, tokens, targets, s, state, masks);
  CHECK(step.total == doctest::Approx(again.total).epsilon(1e-14));
  CHECK(step.count == (L - s) * N);
  auto const params = model.parameters();
  std::vector<std::vector<double>> analytic;
  for (auto const& p : params) analytic.push_back(to_host(p.grad));
  check_parameters(params, analytic, [&] {
    reset();
    return model.loss(space, tokens, targets, s, state, masks).total;
  });
  // Inference: the masks and the regularisers are off; the NLL is the main output's.
  reset();
  auto const eval = model.evaluate(space, tokens, targets, s, state);
  CHECK(std::isfinite(eval.nll_sum));
  CHECK(eval.total == doctest::Approx(eval.nll_sum / double((L - s) * N)));
}

TEST_CASE_TEMPLATE_DEFINE("language model: central differences, tied decoder", Exec, lm_tied) {
  language_model_gradcheck<Exec>(0);
}
TEST_CASE_TEMPLATE_APPLY(lm_tied, Backends);

TEST_CASE_TEMPLATE_DEFINE("language model: central differences, mixture of softmaxes", Exec, lm_mos) {
  language_model_gradcheck<Exec>(3);
}
TEST_CASE_TEMPLATE_APPLY(lm_mos, Backends);

TEST_CASE_TEMPLATE_DEFINE("language model: log-probabilities normalise, evaluation is the NLL", Exec, lm_lp) {
  Exec space;
  for (int experts : {0, 2}) {
    trellis::LanguageModelConfig cfg;
    cfg.core.ninp = 3;
    cfg.core.nhid = 2;
    cfg.core.nout = experts ? 4 : 3;
    cfg.core.nlevels = 3;
    cfg.ntoken = 5;
    cfg.n_experts = experts;
    trellis::LanguageModel<Exec, double> model(space, cfg, 2);
    long const L = 4, N = 2;
    std::vector<std::int32_t> tok{0, 1, 2, 3, 4, 0, 1, 2}, tgt{1, 2, 3, 4, 0, 1, 2, 3};
    auto const tokens = device_tokens<typename Exec::memory_space>(tok, L, N);
    auto const targets = device_tokens<typename Exec::memory_space>(tgt, L, N);
    auto state = model.make_state(N);
    typename trellis::LanguageModel<Exec, double>::matrix lp("lp", (L - 1) * N, 5);
    auto const r = model.evaluate(space, tokens, targets, 1, state, lp);
    auto const h = to_host(lp);
    double nll = 0;
    for (long row = 0; row < (L - 1) * N; ++row) {
      double total = 0;
      for (int v = 0; v < 5; ++v) total += std::exp(h[row * 5 + v]);
      CHECK(total == doctest::Approx(1).epsilon(experts ? 1e-6 : 1e-12));
      nll -= h[row * 5 + tgt[N + row]];
    }
    CHECK(r.nll_sum == doctest::Approx(nll).epsilon(1e-12));
  }
}
TEST_CASE_TEMPLATE_APPLY(lm_lp, Backends);

namespace {
/// A two-level language model over five tokens: the smallest with every part.
trellis::LanguageModelConfig tiny_lm_config() {
  trellis::LanguageModelConfig cfg;
  cfg.core.ninp = 3;
  cfg.core.nhid = 2;
  cfg.core.nout = 3;
  cfg.core.nlevels = 2;
  cfg.ntoken = 5;
  return cfg;
}
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("language model and classifier: bad tokens, labels and shapes are clear errors", Exec, bad) {
  Exec space;
  auto cfg = tiny_lm_config();
  trellis::LanguageModel<Exec, double> model(space, cfg, 2);
  auto const tokens = device_tokens<typename Exec::memory_space>({0, 1, 2, 3, 4, 0}, 3, 2);
  auto const bad = device_tokens<typename Exec::memory_space>({0, 1, 2, 5, 4, 0}, 3, 2);
  auto state = model.make_state(2);
  auto message = [](auto&& f) {
    try {
      f();
    } catch (trellis::invalid_argument const& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(message([&] { model.evaluate(space, bad, tokens, 0, state); }) ==
        "trellis::LanguageModel::evaluate: tokens(1, 1) is 5, outside the vocabulary [0, 5)");
  CHECK(message([&] { model.evaluate(space, tokens, bad, 0, state); }).find("targets(1, 1) is 5") != std::string::npos);
  CHECK(message([&] { model.evaluate(space, tokens, tokens, 3, state); }).find("scored_from is 3") != std::string::npos);
  auto wrong_state = model.make_state(3);
  CHECK(message([&] { model.evaluate(space, tokens, tokens, 0, wrong_state); }).find("state.h") != std::string::npos);
  cfg.core.nout = 4;
  CHECK(message([&] { trellis::LanguageModel<Exec, double>(space, cfg); }).find("nout (4) must equal ninp (3)") !=
        std::string::npos);

  trellis::SequenceClassifierConfig ccfg;
  ccfg.core = cfg.core;
  ccfg.nclasses = 3;
  trellis::SequenceClassifier<Exec, double> classifier(space, ccfg, 1);
  typename trellis::SequenceClassifier<Exec, double>::sequence x("x", 4, 2, 3);
  auto const labels_2d = device_tokens<typename Exec::memory_space>({1, 3}, 1, 2);
  Kokkos::View<std::int32_t const*, Kokkos::LayoutRight, typename Exec::memory_space> labels(labels_2d.data(), 2);
  CHECK(message([&] { classifier.evaluate(space, x, labels); }) ==
        "trellis::SequenceClassifier::evaluate: labels(1) is outside [0, 3)");
}
TEST_CASE_TEMPLATE_APPLY(bad, Backends);

TEST_CASE_TEMPLATE_DEFINE("sequence classifier: central differences", Exec, classifier) {
  Exec space;
  trellis::SequenceClassifierConfig cfg;
  cfg.core.ninp = 2;
  cfg.core.nhid = 4;
  cfg.core.nout = 3;
  cfg.core.nlevels = 3;
  cfg.core.dilation = {1, 2};
  cfg.nclasses = 3;
  cfg.dropout = cfg.dropouti = cfg.dropouth = cfg.wdrop = 0.25;
  trellis::SequenceClassifier<Exec, double> model(space, cfg, 9);
  std::mt19937_64 rng(4);
  for (auto const& p : model.parameters()) from_host(p.value, random_vector(p.value.extent(0), rng, -0.6, 0.6));
  long const L = 5, N = 4;
  typename trellis::SequenceClassifier<Exec, double>::sequence x("x", L, N, 2);
  from_host(x, random_vector(L * N * 2, rng));
  auto const labels_2d = device_tokens<typename Exec::memory_space>({0, 2, 1, 2}, 1, N);
  Kokkos::View<std::int32_t const*, Kokkos::LayoutRight, typename Exec::memory_space> labels(labels_2d.data(), N);
  auto const masks = model.draw_masks(L, N, rng);
  model.zero_gradients(space);
  auto const step = model.train_step(space, x, labels, masks);
  CHECK(step.count == N);
  auto const params = model.parameters();
  std::vector<std::vector<double>> analytic;
  for (auto const& p : params) analytic.push_back(to_host(p.grad));
  check_parameters(params, analytic, [&] { return model.loss(space, x, labels, masks).total; });
  auto const eval = model.evaluate(space, x, labels);
  CHECK(eval.correct >= 0);
  CHECK(eval.correct <= N);
}
TEST_CASE_TEMPLATE_APPLY(classifier, Backends);

TEST_CASE_TEMPLATE_DEFINE("optimisers follow PyTorch: Adam, AdamW, SGD with momentum, clipping", Exec, optim) {
  Exec space;
  using Mem = typename Exec::memory_space;
  Kokkos::View<double*, Kokkos::LayoutRight, Mem> w("w", 2), g("g", 2);
  trellis::ParameterList<Mem, double> list;
  trellis::add_parameter(list, "w", w, g);
  auto set = [&](std::vector<double> wv, std::vector<double> gv) {
    from_host(w, wv);
    from_host(g, gv);
  };
  SUBCASE("Adam with L2 weight decay, two steps") {
    trellis::OptimizerOptions o;
    o.lr = 0.1;
    o.weight_decay = 0.5;
    trellis::Optimizer<Exec, double> adam(trellis::Optimizer<Exec, double>::Kind::adam, list, o);
    set({1.0, -2.0}, {0.5, 0.25});
    adam.step(space);
    // Step 1: g' = g + wd w = (1.0, -0.75); m-hat / sqrt(v-hat) = sign(g'): w -= lr.
    auto w1 = to_host(w);
    CHECK(w1[0] == doctest::Approx(0.9).epsilon(1e-7));
    CHECK(w1[1] == doctest::Approx(-1.9).epsilon(1e-7));
    from_host(g, {0.5, 0.25});
    adam.step(space);
    double const gp0 = 0.5 + 0.5 * w1[0];  // hand-computed second step, first entry
    double const m = 0.9 * 0.1 * 1.0 + 0.1 * gp0, v = 0.999 * 0.001 * 1.0 + 0.001 * gp0 * gp0;
    double const want = w1[0] - 0.1 / (1 - 0.81) * m / (std::sqrt(v) / std::sqrt(1 - 0.999 * 0.999) + 1e-8);
    CHECK(to_host(w)[0] == doctest::Approx(want).epsilon(1e-12));
  }
  SUBCASE("AdamW decays the weight directly") {
    trellis::OptimizerOptions o;
    o.lr = 0.1;
    o.weight_decay = 0.5;
    o.decoupled = true;
    trellis::Optimizer<Exec, double> adam(trellis::Optimizer<Exec, double>::Kind::adam, list, o);
    set({1.0, -2.0}, {0.5, -0.25});
    adam.step(space);
    auto w1 = to_host(w);
    CHECK(w1[0] == doctest::Approx(1.0 * 0.95 - 0.1).epsilon(1e-7));
    CHECK(w1[1] == doctest::Approx(-2.0 * 0.95 + 0.1).epsilon(1e-7));
  }
  SUBCASE("SGD with momentum") {
    trellis::OptimizerOptions o;
    o.lr = 0.5;
    o.momentum = 0.9;
    trellis::Optimizer<Exec, double> sgd(trellis::Optimizer<Exec, double>::Kind::sgd, list, o);
    set({1.0, 1.0}, {1.0, -2.0});
    sgd.step(space);
    sgd.step(space);  // buf = 0.9 g + g
    auto w2 = to_host(w);
    CHECK(w2[0] == doctest::Approx(1.0 - 0.5 * 1.0 - 0.5 * 1.9));
    CHECK(w2[1] == doctest::Approx(1.0 + 0.5 * 2.0 + 0.5 * 3.8));
  }
  SUBCASE("clip_grad_norm scales by clip / (norm + 1e-6) only above clip") {
    set({0, 0}, {3.0, 4.0});
    double const norm = trellis::clip_grad_norm(space, list, 1.0);
    CHECK(norm == doctest::Approx(5.0));
    auto gv = to_host(g);
    CHECK(gv[0] == doctest::Approx(3.0 / (5.0 + 1e-6)).epsilon(1e-12));
    CHECK(trellis::clip_grad_norm(space, list, 10.0) == doctest::Approx(1.0 / (5.0 + 1e-6) * 5.0));
    CHECK(to_host(g)[1] == doctest::Approx(gv[1]));
  }
}
TEST_CASE_TEMPLATE_APPLY(optim, Backends);

TEST_CASE("learning-rate schedules: steps and on plateau") {
  trellis::LrSchedule steps;
  steps.kind = trellis::LrSchedule::Kind::steps;
  steps.milestones = {2, 4};
  double lr = 1;
  for (int e = 1; e <= 5; ++e) lr = steps.update(lr, e, 0);
  CHECK(lr == doctest::Approx(0.01));
  trellis::LrSchedule plateau;
  plateau.kind = trellis::LrSchedule::Kind::plateau;
  plateau.patience = 1;
  plateau.factor = 0.5;
  lr = 1;
  lr = plateau.update(lr, 1, 3.0);  // best
  lr = plateau.update(lr, 2, 3.0);  // 1 bad epoch: within patience
  CHECK(lr == 1);
  lr = plateau.update(lr, 3, 3.0);  // 2 bad epochs: reduce
  CHECK(lr == 0.5);
  lr = plateau.update(lr, 4, 2.0);
  CHECK(lr == 0.5);
}

}  // namespace

TEST_CASE("init_std rescales the reference's N(0, 0.01) draws of the core; other values are refused") {
  using Exec = Kokkos::DefaultHostExecutionSpace;
  Exec space;
  auto cfg = tiny_lm_config();
  trellis::LanguageModel<Exec, double> reference(space, cfg, 7);
  cfg.init_std = 0.05;
  trellis::LanguageModel<Exec, double> wider(space, cfg, 7);
  auto const a = to_host(reference.core().parameters().weight2), b = to_host(wider.core().parameters().weight2);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(b[i] == doctest::Approx(5 * a[i]).epsilon(1e-12));
  CHECK(to_host(reference.encoder().weight) == to_host(wider.encoder().weight));  // the embedding keeps its init
  cfg.init_std = 0;
  using Model = trellis::LanguageModel<Exec, double>;
  CHECK_THROWS_WITH_AS(Model(space, cfg, 7), doctest::Contains("init_std is 0"), trellis::invalid_argument);
}
