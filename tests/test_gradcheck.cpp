// Central finite differences in double: every parameter, the input and the initial
// state, with weight norm, weight drop, hidden dropout, aux outputs and a dilation cycle.
#include <doctest/doctest.h>

#include <trellis/trellis.hpp>

#include "helpers.hpp"

namespace {

using namespace trellis::test;

template <class Network>
void gradcheck(Network& net, typename Network::masks_type const& masks, Pass const& base) {
  double const h = 1e-6, tol = 1e-6;
  Pass analytic = base;
  run_network(net, analytic, masks);
  auto loss_at = [&](Pass p) {
    run_network(net, p, masks, /*backward=*/false);
    return pass_loss(p);
  };
  auto fd_parameter = [&](char const* name, auto const& view, std::vector<double> const& grad) {
    if (view.span() == 0) return;
    auto values = to_host(view);
    std::vector<double> fd(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      auto plus = values, minus = values;
      plus[i] += h;
      minus[i] -= h;
      from_host(view, plus);
      double const lp = loss_at(base);
      from_host(view, minus);
      double const lm = loss_at(base);
      fd[i] = (lp - lm) / (2 * h);
    }
    from_host(view, values);
    check_close(name, grad, fd, tol);
  };
  auto fd_input = [&](char const* name, std::vector<double> Pass::*member, std::vector<double> const& grad) {
    std::vector<double> fd((base.*member).size());
    for (std::size_t i = 0; i < fd.size(); ++i) {
      Pass plus = base, minus = base;
      (plus.*member)[i] += h;
      (minus.*member)[i] -= h;
      fd[i] = (loss_at(plus) - loss_at(minus)) / (2 * h);
    }
    check_close(name, grad, fd, tol);
  };
  auto const& P = net.parameters();
  fd_parameter("weight1", P.weight1, analytic.g_weight1);
  fd_parameter("weight1_g", P.weight1_g, analytic.g_weight1_g);
  fd_parameter("weight2", P.weight2, analytic.g_weight2);
  fd_parameter("weight2_g", P.weight2_g, analytic.g_weight2_g);
  fd_parameter("bias2", P.bias2, analytic.g_bias2);
  fd_input("x", &Pass::x, analytic.dx);
  fd_input("h0", &Pass::h0, analytic.dh0);
  if (Network::activation::has_cell) fd_input("c0", &Pass::c0, analytic.dc0);
}

template <class Exec, class Tying, class Activation>
void gradcheck_case(bool wnorm, bool masked) {
  CAPTURE(std::string(Tying::name));
  CAPTURE(std::string(Activation::name));
  CAPTURE(wnorm);
  CAPTURE(masked);
  Exec space;
  std::mt19937_64 rng(5);
  trellis::TrellisShape const s{
      .ninp = 2, .nhid = 3, .nout = 2, .nlevels = 4, .dilation = {1, 2}, .aux_frequency = 2, .weight_norm = wnorm};
  using Network = trellis::TrellisNetwork<Exec, double, Tying, trellis::Dense, Activation>;
  Network net(space, s);
  randomize_parameters(net, rng, 0.6);
  typename Network::masks_type masks;
  if (masked) {
    long const rows = long(Network::groups) * s.q();
    masks.hidden = typename Network::masks_type::rows("m", 2, s.q());
    masks.weight1_drop = typename Network::masks_type::matrices("w1", net.kernels(), rows, s.ninp);
    masks.weight2_drop = typename Network::masks_type::matrices("w2", net.kernels(), rows, s.q());
    from_host(masks.hidden, random_mask(masks.hidden.span(), 0.2, rng));
    from_host(masks.weight1_drop, random_mask(masks.weight1_drop.span(), 0.2, rng));
    from_host(masks.weight2_drop, random_mask(masks.weight2_drop.span(), 0.2, rng));
  }
  Pass base = random_pass(s, 5, 2, rng);
  gradcheck(net, masks, base);
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("central finite differences agree with backward", Exec, gradcheck_all) {
  gradcheck_case<Exec, trellis::TiedAcrossDepth, trellis::LSTMGating>(true, true);
  gradcheck_case<Exec, trellis::TiedAcrossDepth, trellis::LSTMGating>(false, false);
  gradcheck_case<Exec, trellis::Untied, trellis::LSTMGating>(true, true);
  gradcheck_case<Exec, trellis::TiedAcrossDepth, trellis::ElementwiseTanh>(true, true);
}

TEST_CASE("the naive reference's backward agrees with finite differences") {
  std::mt19937_64 rng(9);
  trellis::TrellisShape const s{
      .ninp = 2, .nhid = 2, .nout = 2, .nlevels = 3, .dilation = {1, 2}, .aux_frequency = 2, .weight_norm = true};
  trellis::naive::NaiveTrellis<double> ref;
  ref.shape = s;
  long const rows = 4 * s.q();
  trellis::naive::NaiveKernel<double> k;
  k.weight1 = random_vector(rows * s.ninp * 2, rng);
  k.weight2 = random_vector(rows * s.q() * 2, rng);
  k.bias2 = random_vector(rows, rng);
  k.weight1_g = random_vector(rows, rng, 0.5, 1.5);
  k.weight2_g = random_vector(rows, rng, 0.5, 1.5);
  ref.kernels = {k};
  ref.hidden_mask = random_mask(2 * s.q(), 0.2, rng);
  Pass p = random_pass(s, 4, 2, rng);
  auto loss = [&](std::vector<double> const& x) {
    auto r = ref.forward(x, p.h0, p.c0, p.L, p.N);
    Pass q = p;
    q.out = r.out;
    q.h = r.h;
    q.c = r.c;
    q.aux = r.aux;
    return pass_loss(q);
  };
  loss(p.x);
  auto gr = ref.backward(p.d_out, p.d_h, p.d_c, p.d_aux);
  std::vector<double> fd(p.x.size());
  for (std::size_t i = 0; i < fd.size(); ++i) {
    auto a = p.x, b = p.x;
    a[i] += 1e-6;
    b[i] -= 1e-6;
    fd[i] = (loss(a) - loss(b)) / 2e-6;
  }
  check_close("naive dx", gr.dx, fd, 1e-6);
  std::vector<double> fdw(ref.kernels[0].weight2.size());
  auto const w = ref.kernels[0].weight2;
  for (std::size_t i = 0; i < fdw.size(); ++i) {
    ref.kernels[0].weight2 = w;
    ref.kernels[0].weight2[i] += 1e-6;
    double const lp = loss(p.x);
    ref.kernels[0].weight2 = w;
    ref.kernels[0].weight2[i] -= 1e-6;
    fdw[i] = (lp - loss(p.x)) / 2e-6;
  }
  check_close("naive d weight2", gr.kernels[0].weight2, fdw, 1e-6);
}

TEST_CASE_TEMPLATE_APPLY(gradcheck_all, trellis::test::Backends);
