// Tests of causal grouped-query attention (kernels.h attention_forward /
// attention_backward): forward and lse against the naive full-softmax oracle,
// every gradient (dq, dk, dv) against finite differences in double, the
// overwrite convention of the gradients, T = 1, Hkv = 1 and large scores.
// Does not test speed or the memory the kernel uses.
#include <array>
#include <cmath>
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
                         c.Hkv, c.hd);
    ref::attention_forward(outw.data(), lsew.data(), to_d(a.q).data(), to_d(a.k).data(),
                           to_d(a.v).data(), c.B, c.T, c.H, c.Hkv, c.hd);
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
                       c.Hkv, c.hd);
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
                       c.Hkv, c.hd);
  ref::attention_forward(outw.data(), lsew.data(), to_d(a.q).data(), to_d(a.k).data(),
                         to_d(a.v).data(), c.B, c.T, c.H, c.Hkv, c.hd);
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
                         c.Hkv, c.hd);
    // Garbage in the gradients: they are overwritten, not accumulated.
    VecF dq = randu(rng, nq), dk = randu(rng, nkv), dv = randu(rng, nkv);
    k::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                          a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H, c.Hkv, c.hd);

    VecD qd = to_d(a.q), kd = to_d(a.k), vd = to_d(a.v), od(nq), ld(lse.size());
    const VecD doutd = to_d(dout);
    auto L = [&] {
      ref::attention_forward(od.data(), ld.data(), qd.data(), kd.data(), vd.data(), c.B, c.T, c.H,
                             c.Hkv, c.hd);
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
                         c.Hkv, c.hd);
    k::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                          a.q.data(), a.k.data(), a.v.data(), c.B, c.T, c.H, c.Hkv, c.hd);
    VecD dqw(nq), dkw(nkv), dvw(nkv);
    ref::attention_backward<double>(dqw.data(), dkw.data(), dvw.data(), to_d(dout).data(), nullptr,
                                    nullptr, to_d(a.q).data(), to_d(a.k).data(), to_d(a.v).data(),
                                    c.B, c.T, c.H, c.Hkv, c.hd);
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
                                  qd.data(), kd.data(), vd.data(), c.B, c.T, c.H, c.Hkv, c.hd);
  auto L = [&] {
    ref::attention_forward(od.data(), ld.data(), qd.data(), kd.data(), vd.data(), c.B, c.T, c.H,
                           c.Hkv, c.hd);
    return dot(doutd, od);
  };
  EXPECT_TRUE(near_rel(dq, finite_diff(qd, L), 1e-7)) << "dq";
  EXPECT_TRUE(near_rel(dk, finite_diff(kd, L), 1e-7)) << "dk";
  EXPECT_TRUE(near_rel(dv, finite_diff(vd, L), 1e-7)) << "dv";
}

}  // namespace
