#pragma once
// A naive TrellisNet on the host: plain loops over the math of the paper as the
// reference code computes it, in the reference's weight layout (rows, in, 2), with
// every intermediate kept. Slow and obviously right: every fast path is tested
// against it. Shapes are flat row-major vectors: x (L, N, p), h0/c0 (N, q),
// out (L, N, nout), aux (naux, L, N, nout).
#include <cmath>
#include <string>
#include <vector>

#include <trellis/errors.hpp>
#include <trellis/core/shape.hpp>

namespace trellis::naive {

template <class Real>
struct NaiveKernel {
  std::vector<Real> weight1;    // (G q, p, 2): v with weight norm, else the weight
  std::vector<Real> weight1_g;  // (G q), empty without weight norm
  std::vector<Real> weight2;    // (G q, q, 2)
  std::vector<Real> weight2_g;  // (G q)
  std::vector<Real> bias2;      // (G q)
};

template <class Real>
struct NaiveGradients {
  std::vector<NaiveKernel<Real>> kernels;
  std::vector<Real> dx, dh0, dc0;
};

/// activation: "lstm" (groups 4: i, o, g, f), "tanh" or "relu" (groups 1).
template <class Real>
class NaiveTrellis {
 public:
  TrellisShape shape;
  std::string activation = "lstm";
  bool tied = true;
  std::vector<NaiveKernel<Real>> kernels;           // 1 when tied, nlevels when untied
  std::vector<Real> hidden_mask;                    // (N, q) or empty
  std::vector<std::vector<Real>> weight1_drop;      // per kernel (G q, p) or empty
  std::vector<std::vector<Real>> weight2_drop;      // per kernel (G q, q) or empty

  int groups() const { return activation == "lstm" ? 4 : 1; }

  struct Result {
    std::vector<Real> out, h, c, aux;
  };

  Result forward(std::vector<Real> const& x, std::vector<Real> const& h0,
                 std::vector<Real> const& c0, long L, long N) {
    L_ = L;
    N_ = N;
    x_ = x;
    h0_ = h0;
    c0_ = c0;
    long const q = shape.q(), p = shape.ninp, G = groups(), n = shape.nlevels;
    effective_weights();
    a_.assign(n, std::vector<Real>(L * N * G * q));
    c_.assign(n, std::vector<Real>(L * N * q));
    z_.assign(n, std::vector<Real>(L * N * q));
    for (long i = 0; i < n; ++i) {
      auto const& k = eff_[tied ? 0 : i];
      long const d = shape.dilation_of(int(i));
      for (long t = 0; t < L; ++t)
        for (long b = 0; b < N; ++b)
          for (long r = 0; r < G * q; ++r) {
            Real a = k.bias2[r];
            for (long j = 0; j < p; ++j) {
              if (t - d >= 0) a += k.weight1[(r * p + j) * 2 + 0] * x[((t - d) * N + b) * p + j];
              a += k.weight1[(r * p + j) * 2 + 1] * x[(t * N + b) * p + j];
            }
            for (long j = 0; j < q; ++j) {
              Real const m = mask(b, j);
              a += k.weight2[(r * q + j) * 2 + 0] * m * z_tilde(i, t - d, b, j);
              a += k.weight2[(r * q + j) * 2 + 1] * m * z_below(i, t, b, j);
            }
            a_[i][(t * N + b) * G * q + r] = a;
          }
      for (long t = 0; t < L; ++t)
        for (long b = 0; b < N; ++b)
          for (long j = 0; j < q; ++j) {
            Real const* a = &a_[i][(t * N + b) * G * q];
            long const e = (t * N + b) * q + j;
            if (G == 4) {
              Real const ig = sig(a[j]), og = sig(a[q + j]), gg = std::tanh(a[2 * q + j]),
                         fg = sig(a[3 * q + j]);
              c_[i][e] = fg * c_tilde(i, t - d, b, j) + ig * gg;
              z_[i][e] = og * std::tanh(c_[i][e]);
            } else {
              z_[i][e] = activation == "tanh" ? std::tanh(a[j]) : (a[j] > 0 ? a[j] : Real(0));
            }
          }
    }
    Result res;
    long const off = q - shape.nout, nout = shape.nout, naux = shape.naux();
    res.out.resize(L * N * nout);
    res.aux.resize(naux * L * N * nout);
    for (long t = 0; t < L; ++t)
      for (long b = 0; b < N; ++b)
        for (long j = 0; j < nout; ++j) {
          res.out[(t * N + b) * nout + j] = z_[n - 1][(t * N + b) * q + off + j];
          for (long i = 0; i < n; ++i)
            if (shape.aux_index(int(i)) >= 0)
              res.aux[((shape.aux_index(int(i)) * L + t) * N + b) * nout + j] =
                  z_[i][(t * N + b) * q + off + j];
        }
    res.h.resize(N * q);
    res.c.resize(N * q);
    for (long b = 0; b < N; ++b)
      for (long j = 0; j < q; ++j) {
        res.h[b * q + j] = z_[n - 1][((L - 1) * N + b) * q + j];
        res.c[b * q + j] = G == 4 ? c_[n - 1][((L - 1) * N + b) * q + j] : Real(0);
      }
    return res;
  }

  /// Gradients of sum(dout * out) + sum(dh * h) + sum(dc * c) + sum(daux * aux); any of
  /// dh, dc, daux may be empty.
  NaiveGradients<Real> backward(std::vector<Real> const& dout, std::vector<Real> const& dh,
                                std::vector<Real> const& dc, std::vector<Real> const& daux) {
    long const L = L_, N = N_, q = shape.q(), p = shape.ninp, G = groups(), n = shape.nlevels;
    long const off = q - shape.nout, nout = shape.nout;
    NaiveGradients<Real> gr;
    std::vector<NaiveKernel<Real>> deff(eff_.size());
    for (auto& k : deff) {
      k.weight1.assign(G * q * p * 2, 0);
      k.weight2.assign(G * q * q * 2, 0);
      k.bias2.assign(G * q, 0);
    }
    gr.dx.assign(L * N * p, 0);
    gr.dh0.assign(N * q, 0);
    gr.dc0.assign(N * q, 0);
    std::vector<Real> dz(L * N * q, 0), dcl(L * N * q, 0);
    for (long t = 0; t < L; ++t)
      for (long b = 0; b < N; ++b)
        for (long j = 0; j < nout; ++j) dz[(t * N + b) * q + off + j] = dout[(t * N + b) * nout + j];
    for (long b = 0; b < N; ++b)
      for (long j = 0; j < q; ++j) {
        if (!dh.empty()) dz[((L - 1) * N + b) * q + j] += dh[b * q + j];
        if (!dc.empty()) dcl[((L - 1) * N + b) * q + j] += dc[b * q + j];
      }
    for (long i = n - 1; i >= 0; --i) {
      long const ai = shape.aux_index(int(i));
      if (ai >= 0 && !daux.empty())
        for (long t = 0; t < L; ++t)
          for (long b = 0; b < N; ++b)
            for (long j = 0; j < nout; ++j)
              dz[(t * N + b) * q + off + j] += daux[((ai * L + t) * N + b) * nout + j];
      long const d = shape.dilation_of(int(i));
      auto const& k = eff_[tied ? 0 : i];
      auto& dk = deff[tied ? 0 : i];
      std::vector<Real> dA(L * N * G * q);
      std::vector<Real> dz_below(L * N * q, 0), dc_below(L * N * q, 0);
      for (long t = 0; t < L; ++t)
        for (long b = 0; b < N; ++b)
          for (long j = 0; j < q; ++j) {
            long const e = (t * N + b) * q + j;
            Real const* a = &a_[i][(t * N + b) * G * q];
            Real* da = &dA[(t * N + b) * G * q];
            if (G == 4) {
              Real const ig = sig(a[j]), og = sig(a[q + j]), gg = std::tanh(a[2 * q + j]),
                         fg = sig(a[3 * q + j]);
              Real const tc = std::tanh(c_[i][e]);
              Real const dct = dcl[e] + dz[e] * og * (1 - tc * tc);
              Real const cp = c_tilde(i, t - d, b, j);
              da[j] = dct * gg * ig * (1 - ig);
              da[q + j] = dz[e] * tc * og * (1 - og);
              da[2 * q + j] = dct * ig * (1 - gg * gg);
              da[3 * q + j] = dct * cp * fg * (1 - fg);
              Real const back = dct * fg;
              if (t - d >= 0) {
                if (i > 0) dc_below[((t - d) * N + b) * q + j] += back;
              } else {
                gr.dc0[b * q + j] += back;
              }
            } else {
              Real const z = z_[i][e];
              Real const ds = activation == "tanh" ? 1 - z * z : (z > 0 ? Real(1) : Real(0));
              da[j] = dz[e] * ds;
            }
          }
      for (long t = 0; t < L; ++t)
        for (long b = 0; b < N; ++b)
          for (long r = 0; r < G * q; ++r) {
            Real const da = dA[(t * N + b) * G * q + r];
            dk.bias2[r] += da;
            for (long j = 0; j < p; ++j) {
              if (t - d >= 0) {
                dk.weight1[(r * p + j) * 2 + 0] += da * x_[((t - d) * N + b) * p + j];
                gr.dx[((t - d) * N + b) * p + j] += k.weight1[(r * p + j) * 2 + 0] * da;
              }
              dk.weight1[(r * p + j) * 2 + 1] += da * x_[(t * N + b) * p + j];
              gr.dx[(t * N + b) * p + j] += k.weight1[(r * p + j) * 2 + 1] * da;
            }
            for (long j = 0; j < q; ++j) {
              Real const m = mask(b, j);
              dk.weight2[(r * q + j) * 2 + 0] += da * m * z_tilde(i, t - d, b, j);
              dk.weight2[(r * q + j) * 2 + 1] += da * m * z_below(i, t, b, j);
              Real const g0 = m * k.weight2[(r * q + j) * 2 + 0] * da;
              if (t - d >= 0) {
                if (i > 0) dz_below[((t - d) * N + b) * q + j] += g0;
              } else {
                gr.dh0[b * q + j] += g0;
              }
              if (i > 0) dz_below[(t * N + b) * q + j] += m * k.weight2[(r * q + j) * 2 + 1] * da;
            }
          }
      dz.swap(dz_below);
      dcl.swap(dc_below);
    }
    // Weight drop and weight norm, per kernel.
    gr.kernels.resize(kernels.size());
    for (std::size_t kk = 0; kk < kernels.size(); ++kk) {
      auto& out = gr.kernels[kk];
      out.bias2 = deff[kk].bias2;
      norm_backward(kernels[kk].weight1, kernels[kk].weight1_g, drop(weight1_drop, kk), p,
                    deff[kk].weight1, out.weight1, out.weight1_g);
      norm_backward(kernels[kk].weight2, kernels[kk].weight2_g, drop(weight2_drop, kk), q,
                    deff[kk].weight2, out.weight2, out.weight2_g);
    }
    return gr;
  }

 private:
  static Real sig(Real a) { return Real(1) / (Real(1) + std::exp(-a)); }
  Real mask(long b, long j) const { return hidden_mask.empty() ? Real(1) : hidden_mask[b * shape.q() + j]; }
  // z of level i-1 at time s (zero at level 0).
  Real z_below(long i, long s, long b, long j) const {
    return i == 0 ? Real(0) : z_[i - 1][(s * N_ + b) * shape.q() + j];
  }
  // z~ of level i-1 at time s, with the carried h0 for s < 0.
  Real z_tilde(long i, long s, long b, long j) const {
    return s < 0 ? h0_[b * shape.q() + j] : z_below(i, s, b, j);
  }
  Real c_tilde(long i, long s, long b, long j) const {
    if (s < 0) return c0_[b * shape.q() + j];
    return i == 0 ? Real(0) : c_[i - 1][(s * N_ + b) * shape.q() + j];
  }
  static std::vector<Real> const* drop(std::vector<std::vector<Real>> const& masks, std::size_t k) {
    return masks.empty() ? nullptr : &masks[k];
  }
  // Effective weights: weight drop on tap 0, then weight norm per row.
  void effective(std::vector<Real> const& v, std::vector<Real> const& g,
                 std::vector<Real> const* dropmask, long in, std::vector<Real>& w) const {
    long const rows = long(v.size()) / (in * 2);
    w = v;
    for (long r = 0; r < rows; ++r) {
      if (dropmask)
        for (long j = 0; j < in; ++j) w[(r * in + j) * 2 + 0] *= (*dropmask)[r * in + j];
      if (shape.weight_norm) {
        Real s = 0;
        for (long e = 0; e < in * 2; ++e) s += w[r * in * 2 + e] * w[r * in * 2 + e];
        Real const scale = g[r] / std::sqrt(s);
        for (long e = 0; e < in * 2; ++e) w[r * in * 2 + e] *= scale;
      }
    }
  }
  void effective_weights() {
    if (kernels.size() != (tied ? 1u : std::size_t(shape.nlevels)))
      trellis::detail::fail("trellis::naive::NaiveTrellis: ", kernels.size(), " kernels for ",
                   tied ? "a tied" : "an untied", " network of ", shape.nlevels, " levels");
    eff_.resize(kernels.size());
    for (std::size_t k = 0; k < kernels.size(); ++k) {
      effective(kernels[k].weight1, kernels[k].weight1_g, drop(weight1_drop, k), shape.ninp, eff_[k].weight1);
      effective(kernels[k].weight2, kernels[k].weight2_g, drop(weight2_drop, k), shape.q(), eff_[k].weight2);
      eff_[k].bias2 = kernels[k].bias2;
    }
  }
  void norm_backward(std::vector<Real> const& v, std::vector<Real> const& g,
                     std::vector<Real> const* dropmask, long in, std::vector<Real> const& G,
                     std::vector<Real>& dv, std::vector<Real>& dg) const {
    long const rows = long(v.size()) / (in * 2);
    dv.assign(v.size(), 0);
    dg.assign(shape.weight_norm ? rows : 0, 0);
    for (long r = 0; r < rows; ++r) {
      std::vector<Real> M(in * 2, 1), vd(in * 2);
      if (dropmask)
        for (long j = 0; j < in; ++j) M[j * 2 + 0] = (*dropmask)[r * in + j];
      for (long e = 0; e < in * 2; ++e) vd[e] = v[r * in * 2 + e] * M[e];
      if (!shape.weight_norm) {
        for (long e = 0; e < in * 2; ++e) dv[r * in * 2 + e] = M[e] * G[r * in * 2 + e];
        continue;
      }
      Real s = 0, dot = 0;
      for (long e = 0; e < in * 2; ++e) {
        s += vd[e] * vd[e];
        dot += G[r * in * 2 + e] * vd[e];
      }
      Real const nrm = std::sqrt(s);
      dg[r] = dot / nrm;
      for (long e = 0; e < in * 2; ++e)
        dv[r * in * 2 + e] = M[e] * (g[r] / nrm) * (G[r * in * 2 + e] - dot / (nrm * nrm) * vd[e]);
    }
  }

  long L_ = 0, N_ = 0;
  std::vector<Real> x_, h0_, c0_;
  std::vector<NaiveKernel<Real>> eff_;
  std::vector<std::vector<Real>> a_, c_, z_;
};

}  // namespace trellis::naive
