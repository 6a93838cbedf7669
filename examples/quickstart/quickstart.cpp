// The smallest real thing trellis does: build a TrellisNet, check one forward and
// backward against the naive reference, then train it with plain SGD to predict the
// next value of noisy sine waves, printing the loss as it falls.
//
//   trellis_quickstart [--small] [--kokkos-num-threads=N]
#include <Kokkos_Core.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include <trellis/testing/naive_trellis.hpp>
#include <trellis/trellis.hpp>

namespace {

using Exec = Kokkos::DefaultExecutionSpace;
using Net = trellis::TrellisNetwork<Exec, float>;

template <class View>
std::vector<double> host(View const& v) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  return std::vector<double>(h.data(), h.data() + h.span());
}

/// Our (1, rows, 2 in) kernel in the naive reference's (rows, in, 2) layout.
std::vector<double> reference_layout(std::vector<double> const& ours, long rows, long in) {
  return trellis::kernel_to_torch_layout(ours.data(), 0, rows, in);
}

/// Max relative difference of the network's output against the naive reference.
double check_against_reference(Net const& net, Net::sequence_view x, long L, long N) {
  Exec space;
  auto const& s = net.shape();
  Net::state_view h0("h0", N, s.q()), c0("c0", N, s.q()), h("h", N, s.q()), c("c", N, s.q());
  Net::sequence_view out("out", L, N, s.nout);
  Net::aux_view aux("aux", s.naux(), L, N, s.nout);
  Net::cache_type cache;
  net.forward(space, x, h0, c0, out, h, c, aux, cache);
  trellis::naive::NaiveTrellis<double> ref;
  ref.shape = s;
  long const rows = 4 * s.q();
  auto const& P = net.parameters();
  ref.kernels.push_back({reference_layout(host(P.weight1), rows, s.ninp), host(P.weight1_g),
                         reference_layout(host(P.weight2), rows, s.q()), host(P.weight2_g),
                         host(P.bias2)});
  auto r = ref.forward(host(x), host(h0), host(c0), L, N);
  auto got = host(out);
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    diff = std::max(diff, std::abs(got[i] - r.out[i]));
    scale = std::max(scale, std::abs(r.out[i]));
  }
  return diff / scale;
}

/// p -= lr * g, elementwise over a parameter tensor.
template <class View>
void sgd(Exec const& space, float lr, View const& p, View const& g) {
  float* pd = p.data();
  float const* gd = g.data();
  Kokkos::parallel_for("quickstart::sgd", Kokkos::RangePolicy<Exec>(space, 0, p.span()),
                       KOKKOS_LAMBDA(long i) { pd[i] -= lr * gd[i]; });
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::ScopeGuard guard(argc, argv);
  bool small = false;
  for (int i = 1; i < argc; ++i) small = small || std::strcmp(argv[i], "--small") == 0;
  Exec space;
  std::printf("trellis %s on %s (concurrency %d)\n", trellis::version_string, Exec::name(),
              int(space.concurrency()));

  trellis::TrellisShape const shape{.ninp = 1, .nhid = 24, .nout = 8, .nlevels = 6, .dilation = {1, 2}};
  long const L = 48, N = 16;
  Net net(space, shape);
  std::printf("TrellisNet: %s\n", shape.describe().c_str());

  // Readout: the mean of the nout output channels predicts x_{t+1}.
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> phase(0, 6.283), freq(0.15, 0.45);
  std::normal_distribution<double> noise(0, 0.05);
  Net::sequence_view x("x", L, N, 1), out("out", L, N, shape.nout), d_out("d_out", L, N, shape.nout);
  auto hx = Kokkos::create_mirror_view(x);
  std::vector<double> target(L * N);
  auto draw_batch = [&] {
    for (long n = 0; n < N; ++n) {
      double const ph = phase(rng), f = freq(rng);
      for (long t = 0; t < L; ++t) {
        hx(t, n, 0) = float(std::sin(ph + f * t) + noise(rng));
        target[t * N + n] = std::sin(ph + f * (t + 1));
      }
    }
    Kokkos::deep_copy(x, hx);
  };
  draw_batch();
  double const rel = check_against_reference(net, x, L, N);
  std::printf("forward vs naive reference: max relative difference %.2e\n", rel);
  if (!(rel < 1e-4)) {
    std::fprintf(stderr, "trellis_quickstart: the fast path disagrees with the reference\n");
    return 1;
  }

  Net::state_view h0("h0", N, shape.q()), c0("c0", N, shape.q()), h("h", N, shape.q()),
      c("c", N, shape.q());
  Net::aux_view aux;
  Net::cache_type cache;
  auto hout = Kokkos::create_mirror_view(out);
  auto hdout = Kokkos::create_mirror_view(d_out);
  int const steps = small ? 20 : 300;
  float const lr = 0.5f;
  auto start = std::chrono::steady_clock::now();
  double first_loss = 0, loss = 0;
  for (int step = 0; step < steps; ++step) {
    draw_batch();
    net.forward(space, x, h0, c0, out, h, c, aux, cache);
    Kokkos::deep_copy(hout, out);
    loss = 0;
    for (long t = 0; t < L; ++t)
      for (long n = 0; n < N; ++n) {
        double pred = 0;
        for (long j = 0; j < shape.nout; ++j) pred += hout(t, n, j);
        pred /= shape.nout;
        double const err = pred - target[t * N + n];
        loss += err * err / (L * N);
        for (long j = 0; j < shape.nout; ++j) hdout(t, n, j) = float(2 * err / (L * N) / shape.nout);
      }
    Kokkos::deep_copy(d_out, hdout);
    net.zero_gradients(space);
    net.backward(space, cache, d_out, {}, {}, {}, {}, {}, {});
    // Plain SGD on every parameter.
    auto& P = net.parameters();
    auto const& G = net.gradients();
    sgd(space, lr, P.weight1, G.weight1);
    sgd(space, lr, P.weight1_g, G.weight1_g);
    sgd(space, lr, P.weight2, G.weight2);
    sgd(space, lr, P.weight2_g, G.weight2_g);
    sgd(space, lr, P.bias2, G.bias2);
    if (step == 0) first_loss = loss;
    if (step % 50 == 0 || step == steps - 1) std::printf("step %4d  mse %.5f\n", step, loss);
  }
  space.fence();
  double const seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("trained %d steps in %.2f s (%.0f tokens/s): mse %.5f -> %.5f\n", steps, seconds,
              steps * double(L * N) / seconds, first_loss, loss);
  if (!small && !(loss < 0.5 * first_loss)) {
    std::fprintf(stderr, "trellis_quickstart: the loss did not fall\n");
    return 1;
  }
  return 0;
}
