// Tests of causal grouped-query attention (kernels.h attention_forward /
// attention_backward): forward and lse against the naive full-softmax oracle,
// every gradient (dq, dk, dv) against finite differences in double, the
// overwrite convention of the gradients, T = 1, Hkv = 1 and large scores; and
// the same with a document mask (doc_start), plus masked attention over a
// window against attention over each of its documents alone.
// Does not test speed or the memory the kernel uses.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
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

struct AttnCase {
  int64_t B, T, H, Hkv, hd;
};
testing::Message describe(const AttnCase& c) {
  return testing::Message() << "B=" << c.B << " T=" << c.T << " H=" << c.H << " Hkv=" << c.Hkv
                            << " hd=" << c.hd;
}

struct AttnData {
  VecF q, k, v;
};
AttnData make_qkv(std::mt19937& rng, const AttnCase& c, float scale = 1.0f) {
  return {randu(rng, c.B * c.T * c.H * c.hd, scale), randu(rng, c.B * c.T * c.Hkv * c.hd, scale),
          randu(rng, c.B * c.T * c.Hkv * c.hd)};
}

TEST(KernelAttention, ForwardMatchesRef) {
  std::mt19937 rng(31);
  const std::vector<AttnCase> cases = {{1, 1, 1, 1, 2},   {2, 1, 4, 2, 8},  {2, 5, 4, 2, 8},
                                       {1, 33, 3, 1, 16}, {2, 17, 4, 4, 6}, {1, 33, 2, 1, 64},
                                       {1, 5, 4, 1, 2},   {3, 33, 2, 2, 8}, {1, 130, 2, 1, 16}};
  for (const auto& c : cases) {
    SCOPED_TRACE(describe(c));
    const AttnData a = make_qkv(rng, c);
    VecF out(c.B * c.T * c.H * c.hd, NAN), lse(c.B * c.H * c.T, NAN);
    VecD outw(out.size()), lsew(lse.size());
    k::attention_forward(out.data(), lse.data(), a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H,
                         c.Hkv, c.hd, nullptr);
    ref::attention_forward(outw.data(), lsew.data(), to_d(a.q).data(), to_d(a.k).data(),
                           to_d(a.v).data(), c.B, c.T, c.H, c.Hkv, c.hd, nullptr);
    EXPECT_TRUE(near_rel(out, outw, 1e-5)) << "out";
    EXPECT_TRUE(near_rel(lse, lsew, 1e-5)) << "lse";
  }
}

// With a single position each head attends to itself only: out = v of its kv
// head, lse = q.k / sqrt(hd).
TEST(KernelAttention, SinglePositionReturnsValue) {
  std::mt19937 rng(32);
  const AttnCase c{2, 1, 4, 2, 8};
  const AttnData a = make_qkv(rng, c);
  VecF out(c.B * c.H * c.hd), lse(c.B * c.H);
  k::attention_forward(out.data(), lse.data(), a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H,
                       c.Hkv, c.hd, nullptr);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h) {
      const int64_t kvh = h / (c.H / c.Hkv);
      double s = 0;
      for (int64_t e = 0; e < c.hd; ++e) {
        EXPECT_NEAR(out[(b * c.H + h) * c.hd + e], a.v[(b * c.Hkv + kvh) * c.hd + e], 1e-6);
        s += double(a.q[(b * c.H + h) * c.hd + e]) * a.k[(b * c.Hkv + kvh) * c.hd + e];
      }
      EXPECT_NEAR(lse[b * c.H + h], s / std::sqrt(double(c.hd)), 1e-5) << "b=" << b << " h=" << h;
    }
}

// Scores in the hundreds: a kernel without the max subtraction overflows.
TEST(KernelAttention, LargeScoresStayFinite) {
  std::mt19937 rng(33);
  const AttnCase c{1, 17, 2, 1, 16};
  const AttnData a = make_qkv(rng, c, 12.0f);
  VecF out(c.B * c.T * c.H * c.hd), lse(c.B * c.H * c.T);
  VecD outw(out.size()), lsew(lse.size());
  k::attention_forward(out.data(), lse.data(), a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H,
                       c.Hkv, c.hd, nullptr);
  ref::attention_forward(outw.data(), lsew.data(), to_d(a.q).data(), to_d(a.k).data(),
                         to_d(a.v).data(), c.B, c.T, c.H, c.Hkv, c.hd, nullptr);
  EXPECT_GT(max_abs(lsew), 100.0);  // the case is as hard as intended
  EXPECT_TRUE(near_rel(out, outw, 1e-4)) << "out";
  EXPECT_TRUE(near_rel(lse, lsew, 1e-5)) << "lse";
}

// The fast backward, given the fast forward's out and lse, against central
// differences of L = sum(dout * out) on the double oracle.
TEST(KernelAttention, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(34);
  const std::vector<AttnCase> cases = {{1, 1, 1, 1, 2}, {1, 1, 4, 2, 8}, {2, 5, 4, 2, 8},
                                       {1, 5, 3, 1, 6}, {1, 6, 2, 2, 2}, {1, 9, 4, 1, 16}};
  for (const auto& c : cases) {
    SCOPED_TRACE(describe(c));
    const AttnData a = make_qkv(rng, c);
    const int64_t nq = c.B * c.T * c.H * c.hd, nkv = c.B * c.T * c.Hkv * c.hd;
    const VecF dout = randu(rng, nq);
    VecF out(nq), lse(c.B * c.H * c.T);
    k::attention_forward(out.data(), lse.data(), a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H,
                         c.Hkv, c.hd, nullptr);
    // Garbage in the gradients: they are overwritten, not accumulated.
    VecF dq = randu(rng, nq), dk = randu(rng, nkv), dv = randu(rng, nkv);
    k::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                          a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H, c.Hkv, c.hd, nullptr);

    VecD qd = to_d(a.q), kd = to_d(a.k), vd = to_d(a.v), od(nq), ld(lse.size());
    const VecD doutd = to_d(dout);
    auto L = [&] {
      ref::attention_forward(od.data(), ld.data(), qd.data(), kd.data(), vd.data(), c.B, c.T, c.H,
                             c.Hkv, c.hd, nullptr);
      return dot(doutd, od);
    };
    // With T = 1, dq and dk are exactly zero (one key, softmax = 1): a float
    // kernel leaves round-off of order 1e-8, hence the floor of 1e-3 (the data
    // and the other gradients are of order 1).
    EXPECT_TRUE(near_rel(dq, finite_diff(qd, L), 1e-3, 1e-3)) << "dq";
    EXPECT_TRUE(near_rel(dk, finite_diff(kd, L), 1e-3, 1e-3)) << "dk";
    EXPECT_TRUE(near_rel(dv, finite_diff(vd, L), 1e-3, 1e-3)) << "dv";
  }
}

// Shapes too large for finite differences: the fast backward against the
// oracle's backward (itself checked against finite differences below).
TEST(KernelAttention, BackwardMatchesRefOnLargerShapes) {
  std::mt19937 rng(35);
  // T = 130 and 257 span several query blocks of a tiled kernel.
  const std::vector<AttnCase> cases = {{2, 33, 4, 2, 16}, {1, 17, 3, 3, 6},  {1, 64, 8, 2, 64},
                                       {2, 33, 2, 1, 8},  {2, 130, 4, 2, 8}, {1, 257, 2, 1, 16}};
  for (const auto& c : cases) {
    SCOPED_TRACE(describe(c));
    const AttnData a = make_qkv(rng, c);
    const int64_t nq = c.B * c.T * c.H * c.hd, nkv = c.B * c.T * c.Hkv * c.hd;
    const VecF dout = randu(rng, nq);
    VecF out(nq), lse(c.B * c.H * c.T), dq(nq), dk(nkv), dv(nkv);
    k::attention_forward(out.data(), lse.data(), a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H,
                         c.Hkv, c.hd, nullptr);
    k::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                          a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H, c.Hkv, c.hd, nullptr);
    VecD dqw(nq), dkw(nkv), dvw(nkv);
    ref::attention_backward<double>(dqw.data(), dkw.data(), dvw.data(), to_d(dout).data(), nullptr,
                                    nullptr, to_d(a.q).data(), to_d(a.k).data(), to_d(a.v).data(),
                                    c.B, c.T, c.H, c.Hkv, c.hd, nullptr);
    EXPECT_TRUE(near_rel(dq, dqw, 1e-4)) << "dq";
    EXPECT_TRUE(near_rel(dk, dkw, 1e-4)) << "dk";
    EXPECT_TRUE(near_rel(dv, dvw, 1e-4)) << "dv";
  }
}

// The oracle's own backward against finite differences (double throughout).
TEST(KernelAttention, RefBackwardMatchesFiniteDifferences) {
  std::mt19937 rng(36);
  const AttnCase c{2, 5, 4, 2, 6};
  const AttnData a = make_qkv(rng, c);
  const int64_t nq = c.B * c.T * c.H * c.hd, nkv = c.B * c.T * c.Hkv * c.hd;
  VecD qd = to_d(a.q), kd = to_d(a.k), vd = to_d(a.v), od(nq), ld(c.B * c.H * c.T);
  const VecD doutd = to_d(randu(rng, nq));
  VecD dq(nq), dk(nkv), dv(nkv);
  ref::attention_backward<double>(dq.data(), dk.data(), dv.data(), doutd.data(), nullptr, nullptr,
                                  qd.data(), kd.data(), vd.data(), c.B, c.T, c.H, c.Hkv, c.hd,
                                  nullptr);
  auto L = [&] {
    ref::attention_forward(od.data(), ld.data(), qd.data(), kd.data(), vd.data(), c.B, c.T, c.H,
                           c.Hkv, c.hd, nullptr);
    return dot(doutd, od);
  };
  EXPECT_TRUE(near_rel(dq, finite_diff(qd, L), 1e-7)) << "dq";
  EXPECT_TRUE(near_rel(dk, finite_diff(kd, L), 1e-7)) << "dk";
  EXPECT_TRUE(near_rel(dv, finite_diff(vd, L), 1e-7)) << "dv";
}

// ---------------------------------------------------------------- document mask

// Windows cut into documents of the given lengths. T = 300 is not a multiple
// of the CPU kernel's block size (128): blocks [0, 128), [128, 256), [256,
// 300), with documents that start before, inside and at their edges; also a
// document of length 1, a window with no boundary, and GQA (H != Hkv).
struct MaskCase {
  AttnCase shape;
  std::vector<std::vector<int64_t>> lens;  // [B] document lengths, each row summing to T
};
testing::Message describe(const MaskCase& c) {
  testing::Message m = describe(c.shape);
  m << " docs";
  for (const auto& row : c.lens) {
    m << " |";
    for (int64_t len : row) m << " " << len;
  }
  return m;
}

const std::vector<MaskCase> kMaskCases = {
    {{2, 7, 2, 1, 8}, {{1, 3, 3}, {7}}},
    {{3, 20, 3, 1, 8}, {{5, 1, 14}, {20}, {1, 1, 18}}},
    {{1, 33, 4, 2, 16}, {{10, 12, 11}}},
    {{2, 300, 4, 2, 16}, {{1, 130, 50, 119}, {300}}},
    {{1, 300, 2, 2, 8}, {{127, 2, 128, 1, 42}}},
};

// doc_start [B*T] of a case.
VecI starts(const MaskCase& c) {
  VecI ds;
  for (const auto& row : c.lens) {
    int64_t at = 0;
    for (int64_t len : row) {
      for (int64_t i = 0; i < len; ++i) ds.push_back(static_cast<int32_t>(at));
      at += len;
    }
    EXPECT_EQ(at, c.shape.T) << "document lengths of a case";
  }
  return ds;
}

TEST(KernelAttentionMask, ForwardMatchesRef) {
  std::mt19937 rng(41);
  for (const auto& mc : kMaskCases) {
    SCOPED_TRACE(describe(mc));
    const AttnCase& c = mc.shape;
    const AttnData a = make_qkv(rng, c);
    const VecI ds = starts(mc);
    VecF out(c.B * c.T * c.H * c.hd, NAN), lse(c.B * c.H * c.T, NAN);
    VecD outw(out.size()), lsew(lse.size());
    k::attention_forward(out.data(), lse.data(), a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H,
                         c.Hkv, c.hd, ds.data());
    ref::attention_forward(outw.data(), lsew.data(), to_d(a.q).data(), to_d(a.k).data(),
                           to_d(a.v).data(), c.B, c.T, c.H, c.Hkv, c.hd, ds.data());
    EXPECT_TRUE(near_rel(out, outw, 1e-5)) << "out";
    EXPECT_TRUE(near_rel(lse, lsew, 1e-5)) << "lse";
    // The mask matters: plain causal attention differs where a document
    // starts after 0.
    VecD outc(out.size()), lsec(lse.size());
    ref::attention_forward(outc.data(), lsec.data(), to_d(a.q).data(), to_d(a.k).data(),
                           to_d(a.v).data(), c.B, c.T, c.H, c.Hkv, c.hd, nullptr);
    if (*std::max_element(ds.begin(), ds.end()) > 0) EXPECT_FALSE(near_rel(out, outc, 1e-3));
  }
}

// Each document of a masked window gives exactly what it gives alone (same
// kernel, one sequence of its length, no mask).
TEST(KernelAttentionMask, WindowEqualsDocumentsAlone) {
  std::mt19937 rng(42);
  double worst = 0;
  for (const auto& mc : kMaskCases) {
    SCOPED_TRACE(describe(mc));
    const AttnCase& c = mc.shape;
    const AttnData a = make_qkv(rng, c);
    const VecI ds = starts(mc);
    VecF out(c.B * c.T * c.H * c.hd), lse(c.B * c.H * c.T);
    k::attention_forward(out.data(), lse.data(), a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H,
                         c.Hkv, c.hd, ds.data());
    const int64_t qr = c.H * c.hd, kr = c.Hkv * c.hd;
    for (int64_t b = 0; b < c.B; ++b) {
      int64_t at = 0;
      for (int64_t len : mc.lens[b]) {
        const int64_t row0 = b * c.T + at;
        const VecF q(a.q.begin() + row0 * qr, a.q.begin() + (row0 + len) * qr);
        const VecF kk(a.k.begin() + row0 * kr, a.k.begin() + (row0 + len) * kr);
        const VecF v(a.v.begin() + row0 * kr, a.v.begin() + (row0 + len) * kr);
        VecF o(len * qr), l(c.H * len);
        k::attention_forward(o.data(), l.data(), q.data(), kk.data(), v.data(), 1, len, c.H, c.Hkv,
                             c.hd, nullptr);
        const VecF got(out.begin() + row0 * qr, out.begin() + (row0 + len) * qr);
        for (size_t i = 0; i < o.size(); ++i)
          worst = std::max(worst, double(std::fabs(got[i] - o[i])));
        EXPECT_TRUE(near_rel(got, o, 1e-6)) << "b=" << b << " document at " << at;
        for (int64_t h = 0; h < c.H; ++h)
          for (int64_t i = 0; i < len; ++i)
            EXPECT_NEAR(lse[(b * c.H + h) * c.T + at + i], l[h * len + i], 1e-5);
        at += len;
      }
    }
  }
  RecordProperty("max_abs_diff", std::to_string(worst));
  std::printf("masked window vs documents alone: max |diff| of out %.3g\n", worst);
}

TEST(KernelAttentionMask, BackwardMatchesRef) {
  std::mt19937 rng(43);
  for (const auto& mc : kMaskCases) {
    SCOPED_TRACE(describe(mc));
    const AttnCase& c = mc.shape;
    const AttnData a = make_qkv(rng, c);
    const VecI ds = starts(mc);
    const int64_t nq = c.B * c.T * c.H * c.hd, nkv = c.B * c.T * c.Hkv * c.hd;
    const VecF dout = randu(rng, nq);
    VecF out(nq), lse(c.B * c.H * c.T);
    k::attention_forward(out.data(), lse.data(), a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H,
                         c.Hkv, c.hd, ds.data());
    // Garbage in the gradients: they are overwritten, not accumulated.
    VecF dq = randu(rng, nq), dk = randu(rng, nkv), dv = randu(rng, nkv);
    k::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                          a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H, c.Hkv, c.hd,
                          ds.data());
    VecD dqw(nq), dkw(nkv), dvw(nkv);
    ref::attention_backward<double>(dqw.data(), dkw.data(), dvw.data(), to_d(dout).data(), nullptr,
                                    nullptr, to_d(a.q).data(), to_d(a.k).data(), to_d(a.v).data(),
                                    c.B, c.T, c.H, c.Hkv, c.hd, ds.data());
    // A document of length 1 has dq = dk = 0 exactly (one key): round-off
    // below the floor.
    EXPECT_TRUE(near_rel(dq, dqw, 1e-4, 1e-3)) << "dq";
    EXPECT_TRUE(near_rel(dk, dkw, 1e-4, 1e-3)) << "dk";
    EXPECT_TRUE(near_rel(dv, dvw, 1e-4)) << "dv";
  }
}

// The masked oracle's backward (and so the fast one above) against central
// differences of L = sum(dout * out) in double.
TEST(KernelAttentionMask, RefBackwardMatchesFiniteDifferences) {
  std::mt19937 rng(44);
  for (size_t ci = 0; ci < 2; ++ci) {
    const MaskCase& mc = kMaskCases[ci];
    SCOPED_TRACE(describe(mc));
    const AttnCase& c = mc.shape;
    const AttnData a = make_qkv(rng, c);
    const VecI ds = starts(mc);
    const int64_t nq = c.B * c.T * c.H * c.hd, nkv = c.B * c.T * c.Hkv * c.hd;
    VecD qd = to_d(a.q), kd = to_d(a.k), vd = to_d(a.v), od(nq), ld(c.B * c.H * c.T);
    const VecD doutd = to_d(randu(rng, nq));
    VecD dq(nq), dk(nkv), dv(nkv);
    ref::attention_backward<double>(dq.data(), dk.data(), dv.data(), doutd.data(), nullptr, nullptr,
                                    qd.data(), kd.data(), vd.data(), c.B, c.T, c.H, c.Hkv, c.hd,
                                    ds.data());
    auto L = [&] {
      ref::attention_forward(od.data(), ld.data(), qd.data(), kd.data(), vd.data(), c.B, c.T, c.H,
                             c.Hkv, c.hd, ds.data());
      return dot(doutd, od);
    };
    EXPECT_TRUE(near_rel(dq, finite_diff(qd, L), 1e-7, 1e-3)) << "dq";
    EXPECT_TRUE(near_rel(dk, finite_diff(kd, L), 1e-7, 1e-3)) << "dk";
    EXPECT_TRUE(near_rel(dv, finite_diff(vd, L), 1e-7)) << "dv";
  }
}

// Document starts from token ids: BOS opens a document, EOS closes one, a
// negative id turns its rule off.
TEST(KernelAttentionMask, DocStartsFollowBosAndEos) {
  const int32_t bos = 1, eos = 2;
  // window 0: the end of a document cut by the window, EOS; BOS ... EOS; BOS
  //           alone (a document of length 1); BOS and one more token.
  // window 1: BOS ... EOS; a document after an EOS with no BOS; BOS ... EOS.
  const VecI tokens = {7, 2, 1, 5, 2, 1, 1, 9,   //
                       1, 4, 2, 8, 8, 1, 3, 2};
  VecI ds(tokens.size()), pos(tokens.size());
  k::doc_starts(ds.data(), tokens.data(), 2, 8, bos, eos);
  EXPECT_EQ(ds, (VecI{0, 0, 2, 2, 2, 5, 6, 6,  //
                      0, 0, 0, 3, 3, 5, 5, 5}));
  k::doc_positions(pos.data(), ds.data(), 2, 8);
  EXPECT_EQ(pos, (VecI{0, 1, 0, 1, 2, 0, 0, 1,  //
                       0, 1, 2, 0, 1, 0, 1, 2}));
  k::doc_starts(ds.data(), tokens.data(), 2, 8, bos, -1);  // BOS only
  EXPECT_EQ(ds, (VecI{0, 0, 2, 2, 2, 5, 6, 6,  //
                      0, 0, 0, 0, 0, 5, 5, 5}));
  k::doc_starts(ds.data(), tokens.data(), 2, 8, -1, eos);  // EOS only
  EXPECT_EQ(ds, (VecI{0, 0, 2, 2, 2, 5, 5, 5,  //
                      0, 0, 0, 3, 3, 3, 3, 3}));
  k::doc_starts(ds.data(), tokens.data(), 2, 8, -1, -1);  // off
  EXPECT_EQ(ds, VecI(16, 0));
}

}  // namespace
