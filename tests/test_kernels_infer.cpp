// Tests of the inference kernels (infer_kernels.h) against the training ops
// that define them: attention_cached_forward must give rows pos0 .. pos0+n-1 of
// causal attention over the whole sequence (oracle: ref::attention_forward),
// reading no cache row past pos0+n; matvec is linear_forward with one row.
// Does not test the decoder that drives them (test_infer.cpp does).
#include <cmath>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/infer_kernels.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref_kernels.h"

namespace {

using namespace stem::test;
namespace k = stem::kernels;
namespace ref = stem::kernels::ref;

struct CachedCase {
  int64_t pos0, n, H, Hkv, hd;
};

TEST(KernelInfer, AttentionCachedEqualsRowsOfFullAttention) {
  std::mt19937 rng(71);
  const std::vector<CachedCase> cases = {{0, 1, 4, 2, 8},   {0, 5, 4, 2, 8},    {7, 1, 4, 2, 8},
                                         {7, 5, 3, 1, 6},   {33, 17, 2, 2, 16}, {100, 1, 1, 1, 2},
                                         {130, 3, 8, 2, 64}};
  for (const auto& c : cases) {
    SCOPED_TRACE(testing::Message() << "pos0=" << c.pos0 << " n=" << c.n << " H=" << c.H
                                    << " Hkv=" << c.Hkv << " hd=" << c.hd);
    const int64_t T = c.pos0 + c.n, cap = T + 9;  // cache rows past T hold NaN
    const VecF q = randu(rng, T * c.H * c.hd);
    VecF kc = randu(rng, cap * c.Hkv * c.hd), vc = randu(rng, cap * c.Hkv * c.hd);
    for (int64_t i = T * c.Hkv * c.hd; i < cap * c.Hkv * c.hd; ++i) kc[i] = vc[i] = NAN;

    VecD full(T * c.H * c.hd), lse(c.H * T);
    ref::attention_forward(full.data(), lse.data(), to_d(q).data(), to_d(kc).data(),
                           to_d(vc).data(), 1, T, c.H, c.Hkv, c.hd);
    const VecD want(full.begin() + c.pos0 * c.H * c.hd, full.end());

    VecF out(c.n * c.H * c.hd, -1.0f);
    VecF scratch(k::attention_cached_scratch(c.n, c.pos0, c.H));
    k::attention_cached_forward(out.data(), scratch.data(), q.data() + c.pos0 * c.H * c.hd,
                                kc.data(), vc.data(), c.n, c.pos0, c.H, c.Hkv, c.hd);
    EXPECT_TRUE(near_rel(out, want, 1e-5));

    // And the training kernel on the same sequence: agreement to round-off.
    VecF fast_full(T * c.H * c.hd), fast_lse(c.H * T);
    k::attention_forward(fast_full.data(), fast_lse.data(), q.data(), kc.data(), vc.data(), 1, T,
                         c.H, c.Hkv, c.hd);
    const VecF fast_rows(fast_full.begin() + c.pos0 * c.H * c.hd, fast_full.end());
    EXPECT_TRUE(near_rel(out, fast_rows, 1e-5)) << "vs attention_forward";
  }
}

TEST(KernelInfer, MatvecMatchesLinearForward) {
  std::mt19937 rng(72);
  for (int64_t out : {1, 7, 40, 1376})
    for (int64_t in : {5, 24, 512})
      for (bool acc : {false, true}) {
        SCOPED_TRACE(testing::Message() << "out=" << out << " in=" << in << " acc=" << acc);
        const VecF W = randu(rng, out * in), x = randu(rng, in);
        VecF y = randu(rng, out);
        VecD yw = to_d(y);
        k::matvec(y.data(), W.data(), x.data(), out, in, acc);
        ref::linear_forward(yw.data(), to_d(x).data(), to_d(W).data(), 1, in, out, acc);
        EXPECT_TRUE(near_rel(y, yw, 1e-5));
      }
}

}  // namespace
