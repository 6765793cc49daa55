// The kernels at training-like sizes, fast against the double oracle, forward
// and backward. The other kernel tests use shapes small enough for finite
// differences, which leave the multi-threaded paths of the CPU backend (taken
// only above a size threshold), multi-block attention and long vocabulary rows
// untested; these cases cover them. Gradients here are checked against the
// oracle's backward, which the finite-difference tests hold to account.
// Does not measure speed (bench/kernels_bench.cpp does).
#include <array>
#include <cstring>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref_kernels.h"

namespace {

using namespace stem::test;
namespace k = stem::kernels;
namespace ref = stem::kernels::ref;

constexpr double kTol = 1e-5;      // forward, relative to max |want|
constexpr double kGradTol = 1e-4;  // backward through several float GEMMs

TEST(KernelLarge, RowsGatherScatterEmbedding) {
  std::mt19937 rng(61);
  const int64_t N = 5000, K = 3000, C = 40;
  const VecI ids = rand_ids(rng, N, K);
  const VecF table = randu(rng, K * C), dsrc = randu(rng, N * C);
  VecF out(N * C), want(N * C);
  k::gather_rows(out.data(), table.data(), ids.data(), N, C);
  ref::gather_rows(want.data(), table.data(), ids.data(), N, C);
  EXPECT_EQ(out, want);
  const k::RowIndex index = k::build_row_index(ids.data(), N, K);
  VecF drows = randu(rng, index.n_unique() * C);
  VecD drows_w = to_d(drows);
  k::embedding_backward(drows.data(), dsrc.data(), index, C);
  ref::embedding_backward(drows_w.data(), to_d(dsrc).data(), index, C);
  EXPECT_TRUE(near_rel(drows, drows_w, 1e-6));
}

TEST(KernelLarge, LinearForwardBackward) {
  std::mt19937 rng(62);
  const int64_t N = 64, in = 512, out = 344;
  const VecF x = randu(rng, N * in), W = randu(rng, out * in), dy = randu(rng, N * out);
  VecF y(N * out), dx = randu(rng, N * in), dW = randu(rng, out * in);
  VecD yw(N * out), dxw = to_d(dx), dWw = to_d(dW);
  k::linear_forward(y.data(), x.data(), W.data(), N, in, out);
  k::linear_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), N, in, out, true);
  const VecD xd = to_d(x), Wd = to_d(W);
  ref::linear_forward(yw.data(), xd.data(), Wd.data(), N, in, out);
  ref::linear_backward(dxw.data(), dWw.data(), to_d(dy).data(), xd.data(), Wd.data(), N, in, out,
                       true);
  EXPECT_TRUE(near_rel(y, yw, kTol)) << "y";
  EXPECT_TRUE(near_rel(dx, dxw, kTol)) << "dx";
  EXPECT_TRUE(near_rel(dW, dWw, kTol)) << "dW";
}

TEST(KernelLarge, RmsNormForwardBackward) {
  std::mt19937 rng(63);
  const int64_t N = 300, d = 512;
  const VecF x = randu(rng, N * d, 2.0f), w = randu(rng, d), dy = randu(rng, N * d);
  VecF y(N * d), rstd(N), dx = randu(rng, N * d), dw = randu(rng, d);
  VecD yw(N * d), rw(N), dxw = to_d(dx), dww = to_d(dw);
  const VecD xd = to_d(x), wd = to_d(w);
  k::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, d, 1e-5f);
  ref::rmsnorm_forward(yw.data(), rw.data(), xd.data(), wd.data(), N, d, 1e-5f);
  EXPECT_TRUE(near_rel(y, yw, kTol)) << "y";
  EXPECT_TRUE(near_rel(rstd, rw, kTol)) << "rstd";
  k::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, d);
  ref::rmsnorm_backward(dxw.data(), dww.data(), to_d(dy).data(), xd.data(), wd.data(), rw.data(), N,
                        d);
  EXPECT_TRUE(near_rel(dx, dxw, kGradTol)) << "dx +=";
  EXPECT_TRUE(near_rel(dw, dww, kGradTol)) << "dw +=";
}

TEST(KernelLarge, RopeForwardBackward) {
  std::mt19937 rng(64);
  const int64_t B = 2, T = 300, nh = 4, hd = 64, pos0 = 5, n = B * T * nh * hd;
  VecF cs((pos0 + T) * hd / 2), sn((pos0 + T) * hd / 2);
  k::rope_tables(cs.data(), sn.data(), pos0 + T, hd, 10000.0);
  const VecD csd = to_d(cs), snd = to_d(sn);
  VecF x = randu(rng, n), dy = randu(rng, n);
  VecD xw = to_d(x), dyw = to_d(dy);
  k::rope_forward(x.data(), cs.data(), sn.data(), B, T, nh, hd, pos0, nullptr);
  ref::rope_forward(xw.data(), csd.data(), snd.data(), B, T, nh, hd, pos0, nullptr);
  EXPECT_TRUE(near_rel(x, xw, 1e-6)) << "forward";
  k::rope_backward(dy.data(), cs.data(), sn.data(), B, T, nh, hd, pos0, nullptr);
  ref::rope_backward(dyw.data(), csd.data(), snd.data(), B, T, nh, hd, pos0, nullptr);
  EXPECT_TRUE(near_rel(dy, dyw, 1e-6)) << "backward";
}

TEST(KernelLarge, SwiGLUIndexedForwardBackward) {
  std::mt19937 rng(65);
  const int64_t N = 300, f = 344, R = 50;
  const VecF g = randu(rng, N * f, 6.0f), rows = randu(rng, R * f), dh = randu(rng, N * f);
  const VecI row_of = rand_ids(rng, N, R);
  VecF h(N * f), dg(N * f), du(N * f);
  VecD hw(N * f), dgw(N * f), duw(N * f);
  const VecD gd = to_d(g), rd = to_d(rows);
  k::swiglu_forward(h.data(), g.data(), rows.data(), row_of.data(), N, f);
  ref::swiglu_forward(hw.data(), gd.data(), rd.data(), row_of.data(), N, f);
  EXPECT_TRUE(near_rel(h, hw, kTol)) << "hact";
  k::swiglu_backward(dg.data(), du.data(), dh.data(), g.data(), rows.data(), row_of.data(), N, f);
  ref::swiglu_backward(dgw.data(), duw.data(), to_d(dh).data(), gd.data(), rd.data(), row_of.data(),
                       N, f);
  EXPECT_TRUE(near_rel(dg, dgw, kTol)) << "dg";
  EXPECT_TRUE(near_rel(du, duw, kTol)) << "du";
}

// Gate pre-activations far into both tails: silu must saturate, never NaN.
TEST(KernelLarge, SwiGLUExtremeGates) {
  const VecF g = {-1000.0f, -100.0f, -30.0f, -1e-30f, 0.0f, 1e-30f, 30.0f, 100.0f, 1000.0f};
  const int64_t f = int64_t(g.size());
  const VecF u(f, 1.5f), dh(f, 1.0f);
  VecF h(f), dg(f), du(f);
  VecD hw(f), dgw(f), duw(f);
  k::swiglu_forward(h.data(), g.data(), u.data(), nullptr, 1, f);
  k::swiglu_backward(dg.data(), du.data(), dh.data(), g.data(), u.data(), nullptr, 1, f);
  ref::swiglu_forward(hw.data(), to_d(g).data(), to_d(u).data(), nullptr, 1, f);
  ref::swiglu_backward(dgw.data(), duw.data(), to_d(dh).data(), to_d(g).data(), to_d(u).data(),
                       nullptr, 1, f);
  EXPECT_TRUE(near_rel(h, hw, kTol)) << "hact";
  EXPECT_TRUE(near_rel(dg, dgw, kTol)) << "dg";
  EXPECT_TRUE(near_rel(du, duw, kTol)) << "du";
}

TEST(KernelLarge, StemFfnForwardBackward) {
  std::mt19937 rng(66);
  const int64_t N = 300, d = 136, f = 96, V = 1000, nx = N * d, na = N * f, nw = f * d;
  const VecF x = randu(rng, nx), Wg = randu(rng, nw, 0.2f), Wd = randu(rng, nw, 0.2f),
             table = randu(rng, V * f), dy = randu(rng, nx);
  const VecI ids = rand_ids(rng, N, V);
  const k::RowIndex index = k::build_row_index(ids.data(), N, V);
  const int64_t U = index.n_unique();
  VecF y(nx), g(na), h(na), sa(na), sb(na);
  k::stem_ffn_forward(y.data(), g.data(), h.data(), x.data(), Wg.data(), Wd.data(), table.data(),
                      ids.data(), N, d, f);
  const VecD xd = to_d(x), Wgd = to_d(Wg), Wdd = to_d(Wd), td = to_d(table);
  VecD yw(nx), gw(na), hw(na);
  ref::stem_ffn_forward(yw.data(), gw.data(), hw.data(), xd.data(), Wgd.data(), Wdd.data(),
                        td.data(), ids.data(), N, d, f);
  EXPECT_TRUE(near_rel(y, yw, kTol)) << "y";

  VecF dx = randu(rng, nx), dWg = randu(rng, nw), dWd = randu(rng, nw), drows = randu(rng, U * f);
  VecD dxw = to_d(dx), dWgw = to_d(dWg), dWdw = to_d(dWd), drw = to_d(drows);
  k::stem_ffn_backward(dx.data(), dWg.data(), dWd.data(), drows.data(), dy.data(), x.data(),
                       g.data(), h.data(), Wg.data(), Wd.data(), table.data(), ids.data(), index,
                       sa.data(), sb.data(), N, d, f);
  ref::stem_ffn_backward<double>(dxw.data(), dWgw.data(), dWdw.data(), drw.data(), to_d(dy).data(),
                                 xd.data(), gw.data(), hw.data(), Wgd.data(), Wdd.data(), td.data(),
                                 ids.data(), index, nullptr, nullptr, N, d, f);
  EXPECT_TRUE(near_rel(dx, dxw, kGradTol)) << "dx +=";
  EXPECT_TRUE(near_rel(dWg, dWgw, kGradTol)) << "dWg +=";
  EXPECT_TRUE(near_rel(dWd, dWdw, kGradTol)) << "dWd +=";
  EXPECT_TRUE(near_rel(drows, drw, kGradTol)) << "drows +=";
}

TEST(KernelLarge, HashMoeForwardBackwardWithEmptyExpert) {
  std::mt19937 rng(67);
  const int64_t N = 300, d = 136, f = 64, E = 4, nx = N * d, na = N * f, nw = f * d;
  std::vector<VecF> W(3 * E);  // Wg[e], Wu[e], Wd[e] at e, E + e, 2E + e
  std::vector<VecD> Wd(3 * E);
  std::vector<VecF> dW(3 * E);
  std::vector<VecD> dWw(3 * E);
  for (int64_t i = 0; i < 3 * E; ++i) {
    W[i] = randu(rng, nw, 0.2f), Wd[i] = to_d(W[i]);
    dW[i] = randu(rng, nw), dWw[i] = to_d(dW[i]);
  }
  auto ptrs = [&](auto& v, int64_t which) {
    std::vector<decltype(v[0].data())> p;
    for (int64_t e = 0; e < E; ++e) p.push_back(v[which * E + e].data());
    return p;
  };
  const auto fg = ptrs(W, 0), fu = ptrs(W, 1), fd = ptrs(W, 2);
  const auto rg = ptrs(Wd, 0), ru = ptrs(Wd, 1), rdn = ptrs(Wd, 2);
  const auto gg = ptrs(dW, 0), gu = ptrs(dW, 1), gd = ptrs(dW, 2);
  const auto qg = ptrs(dWw, 0), qu = ptrs(dWw, 1), qd = ptrs(dWw, 2);
  const k::MoeWeights w{fg.data(), fu.data(), fd.data()};
  const ref::MoeWeights<double> ww{rg.data(), ru.data(), rdn.data()};
  const k::MoeGrads grads{gg.data(), gu.data(), gd.data()};
  const ref::MoeGrads<double> grads_w{qg.data(), qu.data(), qd.data()};

  VecI keys = rand_ids(rng, N, E - 1);  // expert E-1 stays empty
  const k::RowIndex route = k::build_row_index(keys.data(), N, E);
  const VecF x = randu(rng, nx), dy = randu(rng, nx);
  VecF y(nx), xe(nx), g(na), u(na), h(na), ye(nx), dye(nx), dxe(nx), sa(na), sb(na);
  VecD yw(nx), xew(nx), gw(na), uw(na), hw(na), yew(nx);
  k::hash_moe_forward(y.data(), xe.data(), g.data(), u.data(), h.data(), ye.data(), x.data(), w,
                      route, N, d, f);
  ref::hash_moe_forward(yw.data(), xew.data(), gw.data(), uw.data(), hw.data(), yew.data(),
                        to_d(x).data(), ww, route, N, d, f);
  EXPECT_TRUE(near_rel(y, yw, kTol)) << "y";

  VecF dx = randu(rng, nx);
  VecD dxw = to_d(dx);
  k::hash_moe_backward(dx.data(), grads, dy.data(), xe.data(), g.data(), u.data(), h.data(), w,
                       route, dye.data(), dxe.data(), sa.data(), sb.data(), N, d, f);
  ref::hash_moe_backward<double>(dxw.data(), grads_w, to_d(dy).data(), xew.data(), gw.data(),
                                 uw.data(), hw.data(), ww, route, nullptr, nullptr, nullptr,
                                 nullptr, N, d, f);
  EXPECT_TRUE(near_rel(dx, dxw, kGradTol)) << "dx +=";
  for (int64_t i = 0; i < 3 * E; ++i)
    EXPECT_TRUE(near_rel(dW[i], dWw[i], kGradTol)) << "gradient "
                                                   << "gud"[i / E] << " expert " << i % E;
}

TEST(KernelLarge, CrossEntropyVocab8192) {
  std::mt19937 rng(68);
  const int64_t N = 17, V = 8192;
  const VecF logits = randu(rng, N * V, 8.0f);
  VecI targets = rand_ids(rng, N, V);
  targets[3] = -1;
  VecF losses(N);
  VecD lw(N);
  const double s = k::cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V);
  const double sw =
      ref::cross_entropy_forward(lw.data(), to_d(logits).data(), targets.data(), N, V);
  EXPECT_TRUE(near_rel(losses, lw, kTol));
  EXPECT_NEAR(s, sw, kTol * sw);
  VecF dl = logits;  // in place, as the trainer does
  VecD dlw(N * V);
  k::cross_entropy_backward(dl.data(), dl.data(), targets.data(), 1.0f / 16, N, V);
  ref::cross_entropy_backward(dlw.data(), to_d(logits).data(), targets.data(), 1.0f / 16, N, V);
  EXPECT_TRUE(near_rel(dl, dlw, kTol));
}

TEST(KernelLarge, AdamWDenseAndRows) {
  std::mt19937 rng(69);
  const int64_t R = 3001, C = 40, n = R * C;
  VecF p = randu(rng, n), m(n, 0.0f), v(n, 0.0f);
  VecF pw = p, mw = m, vw = v, pr = p, mr = m, vr = v;
  k::AdamWHyper h;
  h.weight_decay = 0.1f;
  for (int64_t step = 1; step <= 4; ++step) {
    SCOPED_TRACE(testing::Message() << "step " << step);
    h.step = step;
    const VecF g = randu(rng, n, 0.01f);
    const float* gp = step == 2 ? nullptr : g.data();
    k::adamw_update(p.data(), m.data(), v.data(), gp, n, h);
    ref::adamw_update(pw.data(), mw.data(), vw.data(), gp, n, h);
    EXPECT_TRUE(near_rel(p, pw, 1e-6)) << "p";
    EXPECT_TRUE(near_rel(m, mw, 1e-5)) << "m";
    EXPECT_TRUE(near_rel(v, vw, 1e-5)) << "v";

    const VecI ids = rand_ids(rng, 2000, R);
    const k::RowIndex index = k::build_row_index(ids.data(), 2000, R);
    const VecF drows = randu(rng, index.n_unique() * C, 0.01f);
    VecF pr2 = pr, mr2 = mr, vr2 = vr;
    k::adamw_update_rows(pr.data(), mr.data(), vr.data(), drows.data(), index, R, C, h);
    ref::adamw_update_rows(pr2.data(), mr2.data(), vr2.data(), drows.data(), index, R, C, h);
    EXPECT_TRUE(near_rel(pr, pr2, 1e-6)) << "rows p";
    EXPECT_TRUE(near_rel(mr, mr2, 1e-5)) << "rows m";
    EXPECT_TRUE(near_rel(vr, vr2, 1e-5)) << "rows v";
    pr = pr2, mr = mr2, vr = vr2;  // both continue from the oracle's state
  }
}

}  // namespace
