// The rest of the op table on every backend (see test_backend_ops.cpp, which
// instantiates the suite): the backward ops, the FFNs, hash-MoE, the loss
// gradient, the optimizers, the decode ops and the BF16 conversions, each
// through the backend's own buffers against the double-precision reference.
// And the list that makes a new op fail until it has a test here.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "backend_test_util.h"
#include "core/bf16.h"
#include "kernels/ref/ref_kernels.h"

namespace {

using namespace stem::test;
using stem::DType;
namespace kern = stem::kernels;
namespace ref = stem::kernels::ref;

TEST(BackendOpsCoverage, EveryOpOfTheTableHasABackendTest) {
  // The ops tested by TEST_P(BackendOps, ...) in this file and test_backend_ops.cpp.
  const std::set<std::string> tested = {
      "gemm", "linear_forward", "linear_backward", "gather_rows", "scatter_add_rows", "embedding_forward",
      "embedding_backward", "embedding_backward_dense", "rmsnorm_forward", "rmsnorm_backward", "rope_forward",
      "rope_backward", "attention_forward", "attention_backward", "swiglu_forward", "swiglu_backward",
      "dense_ffn_forward", "dense_ffn_backward", "stem_ffn_forward", "stem_ffn_backward", "hash_moe_forward",
      "hash_moe_backward", "cross_entropy_forward", "cross_entropy_backward", "distill_forward",
      "distill_backward", "add", "add_inplace",
      "adamw_update", "adamw_update_rows", "adamw_update_rows_lazy", "scale_rows", "sum_squares",
      "scale_inplace", "attention_cached_forward", "attention_cached_slots_forward", "matvec", "matvec_bf16", "matvec_batch", "matvec_rows", "matvec_rows_bf16",
      "linear_forward_bf16", "bf16_to_f32_row", "f32_to_bf16_row", "gemm_bf16", "round_to_bf16",
      "attention_forward_bf16", "attention_backward_bf16", "quantize_q8_row", "dequantize_q8_row", "matvec_q8",
      "linear_forward_q8"};
  std::set<std::string> all;
  for (int i = 0; i < kern::kOpCount; ++i) all.insert(kern::op_name(static_cast<kern::Op>(i)));
  EXPECT_EQ(all, tested);
}

TEST_P(BackendOps, GemmWithTransposesAndStrides) {
  const int64_t M = 9, N = 13, K = 7;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int64_t lda = (ta ? M : K) + 2, ldb = (tb ? K : N) + 2, ldc = N + 2;
      const VecF A = randu(rng, (ta ? K : M) * lda), B = randu(rng, (tb ? N : K) * ldb), C = randu(rng, M * ldc);
      float* c = dev.put(C);
      k().gemm(ta, tb, M, N, K, 0.5f, dev.put(A), lda, dev.put(B), ldb, -0.7f, c, ldc);
      VecD want = to_d(C);
      ref::gemm<double>(ta, tb, M, N, K, 0.5, to_d(A).data(), lda, to_d(B).data(), ldb, -0.7, want.data(), ldc);
      EXPECT_TRUE(near_rel(dev.get(c, M * ldc), want, kTol)) << ta << tb;
    }
}

TEST_P(BackendOps, RowsAndEmbeddings) {
  const int64_t N = 40, R = 9, C = 11;
  const VecF rows = randu(rng, R * C), src = randu(rng, N * C);
  const VecI row_of = rand_ids(rng, N, R);
  const kern::RowIndex index = kern::build_row_index(row_of.data(), N, R);
  float* out = dev.zeros(N * C);
  k().gather_rows(out, dev.put(rows), row_of.data(), N, C);
  VecD want(N * C);
  ref::gather_rows(want.data(), to_d(rows).data(), row_of.data(), N, C);
  EXPECT_TRUE(near_rel(dev.get(out, N * C), want, 0.0));
  k().embedding_forward(out, dev.put(rows), row_of.data(), N, C);
  EXPECT_TRUE(near_rel(dev.get(out, N * C), want, 0.0));

  const int64_t U = index.n_unique();
  float* drows = dev.zeros(U * C);
  k().scatter_add_rows(drows, dev.put(src), index, C);
  VecD dwant(U * C, 0.0);
  ref::scatter_add_rows(dwant.data(), to_d(src).data(), index, C);
  EXPECT_TRUE(near_rel(dev.get(drows, U * C), dwant, kTol));
  float* demb = dev.zeros(U * C);
  k().embedding_backward(demb, dev.put(src), index, C);
  EXPECT_TRUE(near_rel(dev.get(demb, U * C), dwant, kTol));
}

TEST_P(BackendOps, RmsNormBackward) {
  const int64_t N = 9, d = 24;
  const VecF x = randu(rng, N * d), w = randu(rng, d), dy = randu(rng, N * d), dx0 = randu(rng, N * d);
  VecD yd(N * d), rstd(N);
  ref::rmsnorm_forward(yd.data(), rstd.data(), to_d(x).data(), to_d(w).data(), N, d, 1e-5);
  const VecF rstd_f = to_f(rstd);
  float* dx = dev.put(dx0);
  float* dw = dev.zeros(d);
  k().rmsnorm_backward(dx, dw, dev.put(dy), dev.put(x), dev.put(w), dev.put(rstd_f), N, d);
  VecD dxd = to_d(dx0), dwd(d, 0.0);
  ref::rmsnorm_backward(dxd.data(), dwd.data(), to_d(dy).data(), to_d(x).data(), to_d(w).data(), to_d(rstd_f).data(),
                        N, d);
  EXPECT_TRUE(near_rel(dev.get(dx, N * d), dxd, kTol));
  EXPECT_TRUE(near_rel(dev.get(dw, d), dwd, kTol));
}

TEST_P(BackendOps, RopeForwardAndBackward) {
  const int64_t B = 2, T = 5, nh = 3, hd = 8, P = 16, pos0 = 4;
  VecD cos(P * hd / 2), sin(P * hd / 2);
  ref::rope_tables(cos.data(), sin.data(), P, hd, 10000.0);
  const VecF x = randu(rng, B * T * nh * hd);
  float* c = dev.put(to_f(cos));
  float* s = dev.put(to_f(sin));
  float* y = dev.put(x);
  k().rope_forward(y, c, s, B, T, nh, hd, pos0, nullptr);
  VecD want = to_d(x);
  ref::rope_forward(want.data(), cos.data(), sin.data(), B, T, nh, hd, pos0, nullptr);
  EXPECT_TRUE(near_rel(dev.get(y, B * T * nh * hd), want, kTol));
  k().rope_backward(y, c, s, B, T, nh, hd, pos0, nullptr);  // the inverse rotation: back to x
  EXPECT_TRUE(near_rel(dev.get(y, B * T * nh * hd), to_d(x), kTol));
}

TEST_P(BackendOps, AttentionBackward) {
  const int64_t B = 1, T = 7, H = 4, Hkv = 2, hd = 8, nq = B * T * H * hd, nk = B * T * Hkv * hd;
  const VecF q = randu(rng, nq), kk = randu(rng, nk), v = randu(rng, nk), dout = randu(rng, nq);
  float *qd = dev.put(q), *kd = dev.put(kk), *vd = dev.put(v);
  float *out = dev.zeros(nq), *lse = dev.zeros(B * H * T);
  k().attention_forward(out, lse, qd, kd, vd, B, T, H, Hkv, hd, nullptr);
  float *dq = dev.zeros(nq), *dk = dev.zeros(nk), *dv = dev.zeros(nk);
  k().attention_backward(dq, dk, dv, dev.put(dout), out, lse, qd, kd, vd, B, T, H, Hkv, hd, nullptr);
  VecD dqd(nq), dkd(nk), dvd(nk);
  ref::attention_backward<double>(dqd.data(), dkd.data(), dvd.data(), to_d(dout).data(), nullptr, nullptr,
                                  to_d(q).data(), to_d(kk).data(), to_d(v).data(), B, T, H, Hkv, hd, nullptr);
  EXPECT_TRUE(near_rel(dev.get(dq, nq), dqd, kTol));
  EXPECT_TRUE(near_rel(dev.get(dk, nk), dkd, kTol));
  EXPECT_TRUE(near_rel(dev.get(dv, nk), dvd, kTol));
}

TEST_P(BackendOps, SwigluAndDenseFfnForwardAndBackward) {
  const int64_t N = 6, d = 10, f = 14;
  const VecF g = randu(rng, N * f), u = randu(rng, N * f), dh = randu(rng, N * f);
  float* hact = dev.zeros(N * f);
  k().swiglu_forward(hact, dev.put(g), dev.put(u), nullptr, N, f);
  VecD hd(N * f);
  ref::swiglu_forward<double>(hd.data(), to_d(g).data(), to_d(u).data(), nullptr, N, f);
  EXPECT_TRUE(near_rel(dev.get(hact, N * f), hd, kTol));
  float *dg = dev.zeros(N * f), *du = dev.zeros(N * f);
  k().swiglu_backward(dg, du, dev.put(dh), dev.put(g), dev.put(u), nullptr, N, f);
  VecD dgd(N * f), dud(N * f);
  ref::swiglu_backward<double>(dgd.data(), dud.data(), to_d(dh).data(), to_d(g).data(), to_d(u).data(), nullptr, N, f);
  EXPECT_TRUE(near_rel(dev.get(dg, N * f), dgd, kTol));
  EXPECT_TRUE(near_rel(dev.get(du, N * f), dud, kTol));

  const VecF x = randu(rng, N * d), Wg = randu(rng, f * d), Wu = randu(rng, f * d), Wd = randu(rng, d * f);
  const VecF dy = randu(rng, N * d);
  float *y = dev.zeros(N * d), *G = dev.zeros(N * f), *U = dev.zeros(N * f), *A = dev.zeros(N * f);
  float *xd = dev.put(x), *wg = dev.put(Wg), *wu = dev.put(Wu), *wd = dev.put(Wd);
  k().dense_ffn_forward(y, G, U, A, xd, wg, wu, wd, N, d, f);
  VecD yd(N * d), Gd(N * f), Ud(N * f), Ad(N * f);
  ref::dense_ffn_forward(yd.data(), Gd.data(), Ud.data(), Ad.data(), to_d(x).data(), to_d(Wg).data(),
                         to_d(Wu).data(), to_d(Wd).data(), N, d, f);
  EXPECT_TRUE(near_rel(dev.get(y, N * d), yd, kTol));
  float *dx = dev.zeros(N * d), *dWg = dev.zeros(f * d), *dWu = dev.zeros(f * d), *dWd = dev.zeros(d * f);
  k().dense_ffn_backward(dx, dWg, dWu, dWd, dev.put(dy), xd, G, U, A, wg, wu, wd, dev.zeros(N * f), dev.zeros(N * f),
                         N, d, f);
  VecD dxd(N * d, 0.0), dWgd(f * d, 0.0), dWud(f * d, 0.0), dWdd(d * f, 0.0);
  ref::dense_ffn_backward<double>(dxd.data(), dWgd.data(), dWud.data(), dWdd.data(), to_d(dy).data(), to_d(x).data(),
                                  Gd.data(), Ud.data(), Ad.data(), to_d(Wg).data(), to_d(Wu).data(), to_d(Wd).data(),
                                  nullptr, nullptr, N, d, f);
  EXPECT_TRUE(near_rel(dev.get(dx, N * d), dxd, kTol));
  EXPECT_TRUE(near_rel(dev.get(dWg, f * d), dWgd, kTol));
  EXPECT_TRUE(near_rel(dev.get(dWu, f * d), dWud, kTol));
  EXPECT_TRUE(near_rel(dev.get(dWd, d * f), dWdd, kTol));
}

TEST_P(BackendOps, StemFfnBackwardGivesRowSparseTableGradients) {
  const int64_t N = 12, d = 8, f = 10, V = 6;
  const VecI tokens = rand_ids(rng, N, V);
  const kern::RowIndex index = kern::build_row_index(tokens.data(), N, V);
  const int64_t U = index.n_unique();
  const VecF x = randu(rng, N * d), Wg = randu(rng, f * d), Wd = randu(rng, d * f), table = randu(rng, V * f);
  const VecF dy = randu(rng, N * d);
  float *y = dev.zeros(N * d), *g = dev.zeros(N * f), *h = dev.zeros(N * f);
  float *xd = dev.put(x), *wg = dev.put(Wg), *wd = dev.put(Wd), *tb = dev.put(table);
  k().stem_ffn_forward(y, g, h, xd, wg, wd, tb, tokens.data(), N, d, f);
  float *dx = dev.zeros(N * d), *dWg = dev.zeros(f * d), *dWd = dev.zeros(d * f), *drows = dev.zeros(U * f);
  k().stem_ffn_backward(dx, dWg, dWd, drows, dev.put(dy), xd, g, h, wg, wd, tb, tokens.data(), index,
                        dev.zeros(N * f), dev.zeros(N * f), N, d, f);
  VecD yd(N * d), gd(N * f), hd(N * f);
  ref::stem_ffn_forward(yd.data(), gd.data(), hd.data(), to_d(x).data(), to_d(Wg).data(), to_d(Wd).data(),
                        to_d(table).data(), tokens.data(), N, d, f);
  VecD dxd(N * d, 0.0), dWgd(f * d, 0.0), dWdd(d * f, 0.0), drd(U * f, 0.0);
  ref::stem_ffn_backward<double>(dxd.data(), dWgd.data(), dWdd.data(), drd.data(), to_d(dy).data(), to_d(x).data(),
                                 gd.data(), hd.data(), to_d(Wg).data(), to_d(Wd).data(), to_d(table).data(),
                                 tokens.data(), index, nullptr, nullptr, N, d, f);
  EXPECT_TRUE(near_rel(dev.get(dx, N * d), dxd, kTol));
  EXPECT_TRUE(near_rel(dev.get(dWg, f * d), dWgd, kTol));
  EXPECT_TRUE(near_rel(dev.get(dWd, d * f), dWdd, kTol));
  EXPECT_TRUE(near_rel(dev.get(drows, U * f), drd, kTol));
}

TEST_P(BackendOps, HashMoeForwardAndBackward) {
  const int64_t N = 10, d = 6, f = 8, E = 3;
  const VecI expert = rand_ids(rng, N, E);
  const kern::RowIndex route = kern::build_row_index(expert.data(), N, E);
  const VecF x = randu(rng, N * d), dy = randu(rng, N * d);
  std::vector<VecF> Wg, Wu, Wd;
  std::vector<VecD> Wgd, Wud, Wdd, dWgd, dWud, dWdd;
  std::vector<const float*> pg, pu, pd;
  std::vector<float*> pdg, pdu, pdd;
  std::vector<const double*> rg, ru, rd;
  std::vector<double*> rdg, rdu, rdd;
  for (int64_t e = 0; e < E; ++e) {
    Wg.push_back(randu(rng, f * d));
    Wu.push_back(randu(rng, f * d));
    Wd.push_back(randu(rng, d * f));
    pg.push_back(dev.put(Wg[e]));
    pu.push_back(dev.put(Wu[e]));
    pd.push_back(dev.put(Wd[e]));
    pdg.push_back(dev.zeros(f * d));
    pdu.push_back(dev.zeros(f * d));
    pdd.push_back(dev.zeros(d * f));
    Wgd.push_back(to_d(Wg[e]));
    Wud.push_back(to_d(Wu[e]));
    Wdd.push_back(to_d(Wd[e]));
    dWgd.emplace_back(f * d, 0.0);
    dWud.emplace_back(f * d, 0.0);
    dWdd.emplace_back(d * f, 0.0);
  }
  for (int64_t e = 0; e < E; ++e) {
    rg.push_back(Wgd[e].data());
    ru.push_back(Wud[e].data());
    rd.push_back(Wdd[e].data());
    rdg.push_back(dWgd[e].data());
    rdu.push_back(dWud[e].data());
    rdd.push_back(dWdd[e].data());
  }
  float *y = dev.zeros(N * d), *xe = dev.zeros(N * d), *g = dev.zeros(N * f), *u = dev.zeros(N * f);
  float *h = dev.zeros(N * f), *ye = dev.zeros(N * d);
  const kern::MoeWeights w{pg.data(), pu.data(), pd.data()};
  k().hash_moe_forward(y, xe, g, u, h, ye, dev.put(x), w, route, N, d, f);
  VecD yd(N * d), xed(N * d), gd(N * f), ud(N * f), hd(N * f), yed(N * d);
  const ref::MoeWeights<double> rw{rg.data(), ru.data(), rd.data()};
  ref::hash_moe_forward(yd.data(), xed.data(), gd.data(), ud.data(), hd.data(), yed.data(), to_d(x).data(), rw, route,
                        N, d, f);
  EXPECT_TRUE(near_rel(dev.get(y, N * d), yd, kTol));
  float* dx = dev.zeros(N * d);
  k().hash_moe_backward(dx, kern::MoeGrads{pdg.data(), pdu.data(), pdd.data()}, dev.put(dy), xe, g, u, h, w, route,
                        dev.zeros(N * d), dev.zeros(N * d), dev.zeros(N * f), dev.zeros(N * f), N, d, f);
  VecD dxd(N * d, 0.0);
  ref::hash_moe_backward<double>(dxd.data(), ref::MoeGrads<double>{rdg.data(), rdu.data(), rdd.data()},
                                 to_d(dy).data(), xed.data(), gd.data(), ud.data(), hd.data(), rw, route, nullptr,
                                 nullptr, nullptr, nullptr, N, d, f);
  EXPECT_TRUE(near_rel(dev.get(dx, N * d), dxd, kTol));
  for (int64_t e = 0; e < E; ++e) {
    EXPECT_TRUE(near_rel(dev.get(pdg[e], f * d), dWgd[e], kTol)) << e;
    EXPECT_TRUE(near_rel(dev.get(pdd[e], d * f), dWdd[e], kTol)) << e;
  }
}

TEST_P(BackendOps, CrossEntropyBackwardInPlace) {
  const int64_t N = 5, V = 30;
  const VecF logits = randu(rng, N * V, 3.0f);
  VecI targets = rand_ids(rng, N, V);
  targets[1] = -1;
  float* z = dev.put(logits);
  k().cross_entropy_backward(z, z, targets.data(), 0.25f, N, V);
  VecD want = to_d(logits);
  ref::cross_entropy_backward(want.data(), want.data(), targets.data(), 0.25f, N, V);
  EXPECT_TRUE(near_rel(dev.get(z, N * V), want, kTol));
}

TEST_P(BackendOps, DistillForwardAndBackwardInPlace) {
  const int64_t N = 5, V = 30;
  const VecF logits = randu(rng, N * V, 3.0f), teacher = randu(rng, N * V, 3.0f);
  VecI targets = rand_ids(rng, N, V);
  targets[2] = -1;
  float* z = dev.put(logits);
  const float* y = dev.put(teacher);
  float* losses = dev.zeros(N);
  const double sum = k().distill_forward(losses, z, y, targets.data(), 0.4f, 2.0f, N, V);
  VecD lw(N), want = to_d(logits);
  const double sw = ref::distill_forward(lw.data(), want.data(), to_d(teacher).data(), targets.data(), 0.4f, 2.0f, N, V);
  EXPECT_NEAR(sum, sw, 1e-5 * std::abs(sw));
  EXPECT_TRUE(near_rel(dev.get(losses, N), lw, kTol));
  k().distill_backward(z, z, y, targets.data(), 0.4f, 2.0f, 0.25f, N, V);
  ref::distill_backward(want.data(), want.data(), to_d(teacher).data(), targets.data(), 0.4f, 2.0f, 0.25f, N, V);
  EXPECT_TRUE(near_rel(dev.get(z, N * V), want, kTol));
}

TEST_P(BackendOps, RowOptimizersAndReductions) {
  const int64_t R = 12, C = 9;
  const VecI ids = {2, 7, 7, 11, 0};
  const kern::RowIndex index = kern::build_row_index(ids.data(), 5, R);
  const int64_t U = index.n_unique();
  const VecF p = randu(rng, R * C), m = randu(rng, R * C, 0.1f), drows = randu(rng, U * C);
  VecF v = randu(rng, R * C, 0.1f);
  for (float& x : v) x = std::abs(x);
  kern::AdamWHyper h;
  h.lr = 1e-2f;
  h.weight_decay = 0.1f;
  h.step = 4;
  for (bool lazy : {false, true}) {
    SCOPED_TRACE(lazy ? "lazy" : "dense");
    float *pp = dev.put(p), *mm = dev.put(m), *vv = dev.put(v), *dr = dev.put(drows);
    VecD pd = to_d(p), md = to_d(m), vd = to_d(v);
    const VecF pdec = {0.99f, 0.98f, 0.97f, 0.96f}, mdec = {0.9f, 0.8f, 0.7f, 0.6f}, vdec = {0.95f, 0.9f, 0.85f, 0.8f};
    if (lazy) {
      k().adamw_update_rows_lazy(pp, mm, vv, dr, index, C, pdec.data(), mdec.data(), vdec.data(), h);
      ref::adamw_update_rows_lazy(pd.data(), md.data(), vd.data(), to_d(drows).data(), index, C, to_d(pdec).data(),
                                  to_d(mdec).data(), to_d(vdec).data(), h);
    } else {
      k().adamw_update_rows(pp, mm, vv, dr, index, R, C, h);
      ref::adamw_update_rows(pd.data(), md.data(), vd.data(), to_d(drows).data(), index, R, C, h);
    }
    EXPECT_TRUE(near_rel(dev.get(pp, R * C), pd, kTol));
    EXPECT_TRUE(near_rel(dev.get(mm, R * C), md, kTol));
    EXPECT_TRUE(near_rel(dev.get(vv, R * C), vd, kTol));
  }
  const VecF x = randu(rng, 100000);
  float* xd = dev.put(x);
  const double ss = k().sum_squares(xd, 100000);
  EXPECT_NEAR(ss, ref::sum_squares(to_d(x).data(), 100000), 1e-6 * ss);
  k().scale_inplace(xd, 100000, -0.5f);
  VecD xs = to_d(x);
  ref::scale_inplace(xs.data(), 100000, -0.5f);
  EXPECT_TRUE(near_rel(dev.get(xd, 100000), xs, 0.0));
}

// The one-chunk attention against a KV cache equals full causal attention at
// the chunk's positions.
TEST_P(BackendOps, CachedAttentionEqualsFullAttentionAtItsPositions) {
  const int64_t ctx = 11, pos0 = 7, n = ctx - pos0, H = 4, Hkv = 2, hd = 8;
  const VecF q = randu(rng, ctx * H * hd), kk = randu(rng, ctx * Hkv * hd), v = randu(rng, ctx * Hkv * hd);
  VecD full(ctx * H * hd), lse(H * ctx);
  ref::attention_forward(full.data(), lse.data(), to_d(q).data(), to_d(kk).data(), to_d(v).data(), 1, ctx, H, Hkv, hd, nullptr);
  const VecF qn(q.begin() + pos0 * H * hd, q.end());
  float* out = dev.zeros(n * H * hd);
  k().attention_cached_forward(out, dev.zeros(kern::attention_cached_scratch(n, pos0, H)), dev.put(qn), dev.put(kk),
                               dev.put(v), n, pos0, H, Hkv, hd);
  EXPECT_TRUE(near_rel(dev.get(out, n * H * hd), VecD(full.begin() + pos0 * H * hd, full.end()), kTol));
}

// The decode step of several sequences, each with its own cache (slots of
// one buffer, queries at any rows, contexts of different lengths), equals
// full causal attention over each sequence at its last position.
TEST_P(BackendOps, SlotAttentionEqualsFullAttentionOfEachSequence) {
  const int64_t H = 4, Hkv = 2, hd = 8, cap = 12, slots = 3, kd = Hkv * hd, stride = 2 * cap * kd;
  const std::vector<kern::CachedQuery> queries = {{2, 1, 5}, {0, 2, 12}, {3, 0, 1}};
  const int64_t rows = 4;
  const VecF kk = randu(rng, slots * stride), v = randu(rng, slots * stride), q = randu(rng, rows * H * hd);
  float* out = dev.zeros(rows * H * hd);
  k().attention_cached_slots_forward(out, dev.zeros(kern::attention_cached_slots_scratch(3, cap, H)), dev.put(q),
                                     dev.put(kk), dev.put(v), stride, queries.data(), 3, H, Hkv, hd);
  const VecF got = dev.get(out, rows * H * hd);
  for (const kern::CachedQuery& c : queries) {
    // Sequence c.slot: its cached keys and values, with q at its last position.
    VecD qs(c.ctx * H * hd, 0.0), ks(c.ctx * kd), vs(c.ctx * kd), full(c.ctx * H * hd), lse(H * c.ctx);
    for (int64_t i = 0; i < c.ctx * kd; ++i) {
      ks[i] = kk[c.slot * stride + i];
      vs[i] = v[c.slot * stride + i];
    }
    for (int64_t i = 0; i < H * hd; ++i) qs[(c.ctx - 1) * H * hd + i] = q[c.row * H * hd + i];
    ref::attention_forward(full.data(), lse.data(), qs.data(), ks.data(), vs.data(), 1, c.ctx, H, Hkv, hd, nullptr);
    EXPECT_TRUE(near_rel(VecF(got.begin() + c.row * H * hd, got.begin() + (c.row + 1) * H * hd),
                         VecD(full.end() - H * hd, full.end()), kTol))
        << "slot " << c.slot;
  }
  // Row 1 belongs to no query: untouched.
  EXPECT_EQ(VecF(got.begin() + H * hd, got.begin() + 2 * H * hd), VecF(H * hd, 0.0f));
}

// The mixed-precision ops (tests/test_bf16.cpp derives the bounds): the BF16
// GEMM against double on the rounded operands, the array rounding, and BF16
// attention against the double oracle on rounded q, k, v.
TEST_P(BackendOps, Bf16GemmRoundingAndAttention) {
  const double unit = 1.0 / 256;
  const int64_t M = 9, N = 13, K = 70;
  const VecF A = randu(rng, M * K), B = randu(rng, N * K), C = randu(rng, M * N);
  std::vector<uint16_t> a(A.size()), b(B.size());
  uint16_t* a_dev = dev.put(a);
  uint16_t* b_dev = dev.put(b);
  k().round_to_bf16(a_dev, dev.put(A), M * K);
  k().round_to_bf16(b_dev, dev.put(B), N * K);
  a = dev.get(a_dev, M * K);
  b = dev.get(b_dev, N * K);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], stem::core::float_to_bf16(A[i]));
  for (size_t i = 0; i < b.size(); ++i) ASSERT_EQ(b[i], stem::core::float_to_bf16(B[i]));
  VecD Ad(a.size()), Bd(b.size());
  for (size_t i = 0; i < a.size(); ++i) Ad[i] = stem::core::bf16_to_float(a[i]);
  for (size_t i = 0; i < b.size(); ++i) Bd[i] = stem::core::bf16_to_float(b[i]);
  float* c = dev.put(C);
  k().gemm_bf16(false, true, M, N, K, 1.0f, a_dev, K, b_dev, K, 1.0f, c, N);
  VecD want = to_d(C);
  ref::gemm<double>(false, true, M, N, K, 1.0, Ad.data(), K, Bd.data(), K, 1.0, want.data(), N);
  EXPECT_TRUE(near_rel(dev.get(c, M * N), want, kTol));

  const int64_t Bt = 2, T = 33, H = 4, Hkv = 2, hd = 8, nq = Bt * T * H * hd, nkv = Bt * T * Hkv * hd;
  std::vector<uint16_t> q(nq), kk(nkv), v(nkv);
  for (auto* x : {&q, &kk, &v})
    for (auto& e : *x) e = stem::core::float_to_bf16(randu(rng, 1)[0]);
  const VecF dout = randu(rng, nq);
  float *out = dev.zeros(nq), *lse = dev.zeros(Bt * H * T), *dq = dev.zeros(nq), *dk = dev.zeros(nkv),
        *dv = dev.zeros(nkv);
  uint16_t *qd = dev.put(q), *kd = dev.put(kk), *vd = dev.put(v);
  k().attention_forward_bf16(out, lse, qd, kd, vd, Bt, T, H, Hkv, hd, nullptr);
  k().attention_backward_bf16(dq, dk, dv, dev.put(dout), out, lse, qd, kd, vd, Bt, T, H, Hkv, hd, nullptr);
  auto widen = [](const std::vector<uint16_t>& x) {
    VecD r(x.size());
    for (size_t i = 0; i < x.size(); ++i) r[i] = stem::core::bf16_to_float(x[i]);
    return r;
  };
  const VecD qw = widen(q), kw = widen(kk), vw = widen(v);
  VecD outw(nq), lsew(Bt * H * T), dqw(nq), dkw(nkv), dvw(nkv);
  ref::attention_forward(outw.data(), lsew.data(), qw.data(), kw.data(), vw.data(), Bt, T, H, Hkv, hd, nullptr);
  ref::attention_backward<double>(dqw.data(), dkw.data(), dvw.data(), to_d(dout).data(), nullptr, nullptr,
                                  qw.data(), kw.data(), vw.data(), Bt, T, H, Hkv, hd, nullptr);
  EXPECT_TRUE(near_rel(dev.get(lse, Bt * H * T), lsew, 1e-5));
  EXPECT_TRUE(near_rel(dev.get(out, nq), outw, 2 * unit));
  EXPECT_TRUE(near_rel(dev.get(dq, nq), dqw, 4 * unit));
  EXPECT_TRUE(near_rel(dev.get(dk, nkv), dkw, 4 * unit));
  EXPECT_TRUE(near_rel(dev.get(dv, nkv), dvw, 4 * unit));
}

// Q8 weights (tests/test_q8.cpp has the details): quantize and dequantize
// rows, then the matvec and the prefill linear against double products of
// the dequantized weights.
TEST_P(BackendOps, Q8QuantizeMatvecAndPrefillLinear) {
  if (!be().supports(kern::Op::matvec_q8, DType::Q8)) GTEST_SKIP() << "no Q8 ops";
  const int64_t in = 70, out = 24, N = 5, row = kern::q8_row_bytes(in);
  const VecF W = randu(rng, out * in), x = randu(rng, N * in);
  uint8_t* q = dev.put(std::vector<uint8_t>(out * row, 0));
  float* w_dev = dev.put(W);
  for (int64_t r = 0; r < out; ++r) k().quantize_q8_row(q + r * row, w_dev + r * in, in);
  float* back = dev.zeros(out * in);
  for (int64_t r = 0; r < out; ++r) k().dequantize_q8_row(back + r * in, q + r * row, in);
  const VecF deq = dev.get(back, out * in);
  EXPECT_TRUE(near_rel(deq, W, 1.0 / 254));  // half a step of 1/127 of each block's max
  // The matvec multiplies with x quantized as a Q8 row too.
  float* x1 = dev.put(VecF(x.begin(), x.begin() + in));
  uint8_t* x1q = dev.put(std::vector<uint8_t>(row, 0));
  k().quantize_q8_row(x1q, x1, in);
  float* x1_back = dev.zeros(in);
  k().dequantize_q8_row(x1_back, x1q, in);
  float* y1 = dev.zeros(out);
  k().matvec_q8(y1, q, x1, out, in, false);
  VecD y1d(out);
  ref::linear_forward(y1d.data(), to_d(dev.get(x1_back, in)).data(), to_d(deq).data(), 1, in, out, false);
  EXPECT_TRUE(near_rel(dev.get(y1, out), y1d, kTol));
  float* y = dev.zeros(N * out);
  k().linear_forward_q8(y, dev.put(x), q, N, in, out, false, dev.zeros(kern::linear_bf16_scratch(in, out)));
  VecD yd(N * out);
  ref::linear_forward(yd.data(), to_d(x).data(), to_d(deq).data(), N, in, out, false);
  EXPECT_TRUE(near_rel(dev.get(y, N * out), yd, kTol));
}

TEST_P(BackendOps, Bf16MatvecBatchPrefillLinearAndConversions) {
  if (!be().supports(kern::Op::linear_forward_bf16, DType::BF16)) GTEST_SKIP() << "no BF16 ops";
  const int64_t in = 40, out = 24, N = 5;
  const VecF W = randu(rng, out * in), x = randu(rng, N * in);
  std::vector<uint16_t> Wb(out * in);
  VecF Ww(out * in);
  for (int64_t i = 0; i < out * in; ++i) Ww[i] = stem::core::bf16_to_float(Wb[i] = stem::core::float_to_bf16(W[i]));
  // Conversions, device to device.
  uint16_t* wb = dev.put(Wb);
  float* widened = dev.zeros(out * in);
  k().bf16_to_f32_row(widened, wb, out * in);
  EXPECT_EQ(dev.get(widened, out * in), Ww);
  uint16_t* rounded = dev.put(std::vector<uint16_t>(out * in, 0));
  k().f32_to_bf16_row(rounded, dev.put(W), out * in);
  EXPECT_EQ(dev.get(rounded, out * in), Wb);
  // The prefill linear with BF16 weights.
  float* y = dev.zeros(N * out);
  k().linear_forward_bf16(y, dev.put(x), wb, N, in, out, false, dev.zeros(kern::linear_bf16_scratch(in, out)));
  VecD yd(N * out);
  ref::linear_forward(yd.data(), to_d(x).data(), to_d(Ww).data(), N, in, out, false);
  EXPECT_TRUE(near_rel(dev.get(y, N * out), yd, kTol));
  // Two products of one x in one call: one F32, one BF16 accumulating.
  const VecF x1(x.begin(), x.begin() + in), y0 = randu(rng, out);
  float* y1 = dev.zeros(out);
  float* y2 = dev.put(y0);
  const kern::MatvecJob jobs[2] = {{y1, dev.put(W), out, false, false}, {y2, wb, out, true, true}};
  k().matvec_batch(jobs, 2, dev.put(x1), in);
  VecD w1(out), w2 = to_d(y0);
  ref::linear_forward(w1.data(), to_d(x1).data(), to_d(W).data(), 1, in, out, false);
  ref::linear_forward(w2.data(), to_d(x1).data(), to_d(Ww).data(), 1, in, out, true);
  EXPECT_TRUE(near_rel(dev.get(y1, out), w1, kTol));
  EXPECT_TRUE(near_rel(dev.get(y2, out), w2, kTol));
}

}  // namespace
