// Tests of the inference kernels (infer_kernels.h) against the training ops
// that define them: attention_cached_forward must give rows pos0 .. pos0+n-1 of
// causal attention over the whole sequence (oracle: ref::attention_forward),
// reading no cache row past pos0+n, on each code path of the one-row case;
// matvec, matvec_bf16, matvec_batch, matvec_rows and linear_forward_bf16 are
// ref::linear_forward in double (BF16 weights widened exactly), on every
// matvec code path this CPU has and on odd sizes that leave SIMD tails; the
// BF16 row conversions match core/bf16.h bit for bit.
// Does not test the decoder that drives them (test_infer.cpp does).
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/bf16.h"
#include "kernel_test_util.h"
#include "kernels/infer_kernels.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref_kernels.h"

namespace {

using namespace stem::test;
namespace k = stem::kernels;
namespace ref = stem::kernels::ref;

// Every matvec code path this CPU supports; restores the default on exit.
struct EachMatvecPath {
  std::vector<k::MatvecPath> paths;
  EachMatvecPath() {
    for (int p = 0; p <= static_cast<int>(k::matvec_best_path()); ++p)
      paths.push_back(static_cast<k::MatvecPath>(p));
  }
  ~EachMatvecPath() { k::set_matvec_path(k::matvec_best_path()); }
};

struct CachedCase {
  int64_t pos0, n, H, Hkv, hd;
};

TEST(KernelInfer, AttentionCachedEqualsRowsOfFullAttention) {
  std::mt19937 rng(71);
  // hd 80 and 130: a second 64-float block of the output, and a masked tail;
  // pos0 300: heads split across threads.
  const std::vector<CachedCase> cases = {
      {0, 1, 4, 2, 8},    {0, 5, 4, 2, 8},   {7, 1, 4, 2, 8},    {7, 5, 3, 1, 6},
      {33, 17, 2, 2, 16}, {100, 1, 1, 1, 2}, {130, 3, 8, 2, 64}, {5, 1, 2, 1, 80},
      {40, 1, 3, 3, 130}, {300, 1, 8, 8, 64}};
  EachMatvecPath each;  // the one-row path has an AVX-512 and a portable version
  for (const auto path : each.paths) {
    k::set_matvec_path(path);
    for (const auto& c : cases) {
      SCOPED_TRACE(testing::Message() << "path=" << static_cast<int>(path) << " pos0=" << c.pos0
                                      << " n=" << c.n << " H=" << c.H << " Hkv=" << c.Hkv
                                      << " hd=" << c.hd);
      const int64_t T = c.pos0 + c.n, cap = T + 9;  // cache rows past T hold NaN
      const VecF q = randu(rng, T * c.H * c.hd);
      VecF kc = randu(rng, cap * c.Hkv * c.hd), vc = randu(rng, cap * c.Hkv * c.hd);
      for (int64_t i = T * c.Hkv * c.hd; i < cap * c.Hkv * c.hd; ++i) kc[i] = vc[i] = NAN;

      VecD full(T * c.H * c.hd), lse(c.H * T);
      ref::attention_forward(full.data(), lse.data(), to_d(q).data(), to_d(kc).data(),
                             to_d(vc).data(), 1, T, c.H, c.Hkv, c.hd, nullptr);
      const VecD want(full.begin() + c.pos0 * c.H * c.hd, full.end());

      VecF out(c.n * c.H * c.hd, -1.0f);
      VecF scratch(k::attention_cached_scratch(c.n, c.pos0, c.H));
      k::attention_cached_forward(out.data(), scratch.data(), q.data() + c.pos0 * c.H * c.hd,
                                  kc.data(), vc.data(), c.n, c.pos0, c.H, c.Hkv, c.hd);
      EXPECT_TRUE(near_rel(out, want, 1e-5));

      // And the training kernel on the same sequence: agreement to round-off.
      VecF fast_full(T * c.H * c.hd), fast_lse(c.H * T);
      k::attention_forward(fast_full.data(), fast_lse.data(), q.data(), kc.data(), vc.data(), 1, T,
                           c.H, c.Hkv, c.hd, nullptr);
      const VecF fast_rows(fast_full.begin() + c.pos0 * c.H * c.hd, fast_full.end());
      EXPECT_TRUE(near_rel(out, fast_rows, 1e-5)) << "vs attention_forward";
    }
  }
}

using VecB = std::vector<uint16_t>;

// Random weights rounded to BF16, and their exact values in double.
VecB rand_bf16(std::mt19937& rng, int64_t n) {
  const VecF f = randu(rng, n);
  VecB b(f.size());
  for (size_t i = 0; i < f.size(); ++i) b[i] = stem::core::float_to_bf16(f[i]);
  return b;
}
VecD widen_d(const VecB& b) {
  VecD d(b.size());
  for (size_t i = 0; i < b.size(); ++i) d[i] = stem::core::bf16_to_float(b[i]);
  return d;
}

struct Shape {
  int64_t out, in;
};
// Odd sizes (tails of 16-wide SIMD and of 16-, 8- and 4-row passes), sizes on
// both sides of the one-thread threshold, and the model's.
const std::vector<Shape> kMatvecShapes = {{1, 1},     {1, 5},     {7, 24},     {37, 1029},
                                          {515, 64},  {9, 17},    {40, 512},   {1376, 512},
                                          {512, 1376}, {300, 257}, {64, 2752}};

TEST(KernelInfer, MatvecMatchesLinearForward) {
  std::mt19937 rng(72);
  EachMatvecPath each;
  for (const auto path : each.paths)
    for (const auto& sh : kMatvecShapes)
      for (bool acc : {false, true}) {
        SCOPED_TRACE(testing::Message() << "path=" << static_cast<int>(path) << " out=" << sh.out
                                        << " in=" << sh.in << " acc=" << acc);
        k::set_matvec_path(path);
        const VecF W = randu(rng, sh.out * sh.in), x = randu(rng, sh.in);
        VecF y = randu(rng, sh.out);
        VecD yw = to_d(y);
        k::matvec(y.data(), W.data(), x.data(), sh.out, sh.in, acc);
        ref::linear_forward(yw.data(), to_d(x).data(), to_d(W).data(), 1, sh.in, sh.out, acc);
        EXPECT_TRUE(near_rel(y, yw, 1e-5));
      }
}

TEST(KernelInfer, MatvecBf16MatchesLinearForwardOnWidenedWeights) {
  std::mt19937 rng(73);
  EachMatvecPath each;
  for (const auto path : each.paths)
    for (const auto& sh : kMatvecShapes)
      for (bool acc : {false, true}) {
        SCOPED_TRACE(testing::Message() << "path=" << static_cast<int>(path) << " out=" << sh.out
                                        << " in=" << sh.in << " acc=" << acc);
        k::set_matvec_path(path);
        const VecB W = rand_bf16(rng, sh.out * sh.in);
        const VecF x = randu(rng, sh.in);
        VecF y = randu(rng, sh.out);
        VecD yw = to_d(y);
        k::matvec_bf16(y.data(), W.data(), x.data(), sh.out, sh.in, acc);
        ref::linear_forward(yw.data(), to_d(x).data(), widen_d(W).data(), 1, sh.in, sh.out, acc);
        EXPECT_TRUE(near_rel(y, yw, 1e-5));
      }
}

TEST(KernelInfer, MatvecEmptyInputGivesZeroOrKeepsY) {
  VecF y = {1.0f, 2.0f, 3.0f};
  const VecF W, x;
  k::matvec(y.data(), W.data(), x.data(), 3, 0, /*accumulate=*/true);
  EXPECT_EQ(y, (VecF{1.0f, 2.0f, 3.0f}));
  k::matvec(y.data(), W.data(), x.data(), 3, 0);
  EXPECT_EQ(y, (VecF{0.0f, 0.0f, 0.0f}));
}

// q/k/v-like and gate/up-like groups, F32 and BF16 mixed, small (one thread)
// and large (rows split across threads, shares ending inside a job).
TEST(KernelInfer, MatvecBatchEqualsSeparateProducts) {
  std::mt19937 rng(74);
  struct Case {
    int64_t in;
    std::vector<int64_t> outs;
    std::vector<bool> bf16, acc;
  };
  const std::vector<Case> cases = {
      {5, {3, 1, 2}, {false, true, false}, {false, false, true}},
      {512, {512, 128, 128}, {false, false, false}, {false, false, false}},
      {1029, {37, 515, 0, 9}, {true, false, true, true}, {true, false, false, true}},
      {512, {1376, 1376}, {true, true}, {false, true}},
      {257, {300}, {true}, {false}},
  };
  EachMatvecPath each;
  for (const auto path : each.paths)
    for (const auto& c : cases) {
      SCOPED_TRACE(testing::Message() << "path=" << static_cast<int>(path) << " in=" << c.in
                                      << " jobs=" << c.outs.size());
      k::set_matvec_path(path);
      const size_t n = c.outs.size();
      const VecF x = randu(rng, c.in);
      std::vector<VecF> Wf(n), y(n);
      std::vector<VecB> Wb(n);
      std::vector<VecD> want(n);
      std::vector<k::MatvecJob> jobs(n);
      for (size_t i = 0; i < n; ++i) {
        const int64_t out = c.outs[i];
        VecD Wd;
        if (c.bf16[i]) {
          Wb[i] = rand_bf16(rng, out * c.in);
          Wd = widen_d(Wb[i]);
        } else {
          Wf[i] = randu(rng, out * c.in);
          Wd = to_d(Wf[i]);
        }
        y[i] = randu(rng, out);
        want[i] = to_d(y[i]);
        ref::linear_forward(want[i].data(), to_d(x).data(), Wd.data(), 1, c.in, out, c.acc[i]);
        jobs[i] = k::MatvecJob{y[i].data(),
                               c.bf16[i] ? static_cast<const void*>(Wb[i].data()) : Wf[i].data(),
                               out, c.bf16[i], c.acc[i]};
      }
      k::matvec_batch(jobs.data(), static_cast<int>(n), x.data(), c.in);
      for (size_t i = 0; i < n; ++i) EXPECT_TRUE(near_rel(y[i], want[i], 1e-5)) << "job " << i;
    }
}

// matvec_rows: each row of y bit for bit matvec on that row of x (the batched
// decode step changes no product), and near the double reference; every n it
// takes, row counts that leave a partial block (out % (16 / n)), in with and
// without a SIMD tail, one thread and split across threads, accumulate.
TEST(KernelInfer, MatvecRowsEqualsMatvecOnEachRowBitForBit) {
  std::mt19937 rng(75);
  struct Case {
    int64_t out, in;
  };
  const std::vector<Case> cases = {{1, 1}, {7, 5}, {33, 16}, {37, 131}, {515, 512}, {300, 1376}};
  EachMatvecPath each;
  for (const auto path : each.paths)
    for (const auto& c : cases)
      for (int64_t n = 1; n <= k::kMatvecRowsMax; ++n)
        for (const bool acc : {false, true}) {
          SCOPED_TRACE(testing::Message() << "path=" << static_cast<int>(path) << " out=" << c.out
                                          << " in=" << c.in << " n=" << n << " acc=" << acc);
          k::set_matvec_path(path);
          const VecF W = randu(rng, c.out * c.in), x = randu(rng, n * c.in), y0 = randu(rng, n * c.out);
          VecF y = y0, want = y0;
          k::matvec_rows(y.data(), W.data(), x.data(), n, c.out, c.in, acc);
          for (int64_t b = 0; b < n; ++b)
            k::matvec(want.data() + b * c.out, W.data(), x.data() + b * c.in, c.out, c.in, acc);
          ASSERT_EQ(0, std::memcmp(y.data(), want.data(), y.size() * sizeof(float)));
          VecD ref_y = to_d(y0);
          ref::linear_forward(ref_y.data(), to_d(x).data(), to_d(W).data(), n, c.in, c.out, acc);
          EXPECT_TRUE(near_rel(y, ref_y, 1e-5));
          // BF16 weights: against matvec_bf16, and the reference on the widened W.
          const VecB Wb = rand_bf16(rng, c.out * c.in);
          y = y0, want = y0;
          k::matvec_rows_bf16(y.data(), Wb.data(), x.data(), n, c.out, c.in, acc);
          for (int64_t b = 0; b < n; ++b)
            k::matvec_bf16(want.data() + b * c.out, Wb.data(), x.data() + b * c.in, c.out, c.in, acc);
          ASSERT_EQ(0, std::memcmp(y.data(), want.data(), y.size() * sizeof(float))) << "bf16";
          ref_y = to_d(y0);
          ref::linear_forward(ref_y.data(), to_d(x).data(), widen_d(Wb).data(), n, c.in, c.out, acc);
          EXPECT_TRUE(near_rel(y, ref_y, 1e-5)) << "bf16";
        }
}

TEST(KernelInfer, LinearForwardBf16MatchesLinearForwardOnWidenedWeights) {
  std::mt19937 rng(75);
  struct Case {
    int64_t N, in, out;
  };
  // One panel, several panels (in*out > the scratch cap), rows longer than the
  // whole scratch (K split into blocks), and the model's shapes.
  const std::vector<Case> cases = {{1, 5, 3},       {2, 5, 1},       {3, 1029, 37},
                                   {17, 64, 515},   {64, 512, 1376}, {5, 1029, 700},
                                   {2, 600000, 1},  {3, 600000, 2},  {64, 1376, 512}};
  for (const auto& c : cases)
    for (bool acc : {false, true}) {
      SCOPED_TRACE(testing::Message() << "N=" << c.N << " in=" << c.in << " out=" << c.out
                                      << " acc=" << acc);
      const VecB W = rand_bf16(rng, c.out * c.in);
      const VecF x = randu(rng, c.N * c.in);
      VecF y = randu(rng, c.N * c.out);
      VecD want = to_d(y);
      ref::linear_forward(want.data(), to_d(x).data(), widen_d(W).data(), c.N, c.in, c.out, acc);
      // Exactly the documented scratch, then a guard band that must stay put.
      const int64_t S = k::linear_bf16_scratch(c.in, c.out);
      EXPECT_LE(S, k::kLinearBf16ScratchMax);
      VecF scratch(S + 64, 7.0f);
      k::linear_forward_bf16(y.data(), x.data(), W.data(), c.N, c.in, c.out, acc, scratch.data());
      EXPECT_TRUE(near_rel(y, want, 1e-5));
      for (int64_t i = S; i < S + 64; ++i) ASSERT_EQ(scratch[i], 7.0f) << "scratch overrun at " << i;
    }
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(KernelInfer, Bf16ToF32RowIsExactForEveryPattern) {
  VecB all(65536 + 3);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  VecF out(all.size());
  k::bf16_to_f32_row(out.data(), all.data(), static_cast<int64_t>(all.size()));
  for (size_t i = 0; i < all.size(); ++i)
    ASSERT_EQ(bits(out[i]), static_cast<uint32_t>(all[i]) << 16) << "pattern " << all[i];
}

TEST(KernelInfer, F32ToBf16RowRoundsLikeFloatToBf16) {
  // Bit patterns with the expected BF16: ties to even, carries into the
  // exponent and to inf, infinities, quiet and signalling NaNs of both signs
  // (made quiet, sign kept), zeros and subnormals.
  const std::vector<std::pair<uint32_t, uint16_t>> special = {
      {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80}, {0x3f818000u, 0x3f82},
      {0x3f808001u, 0x3f81}, {0x3f817fffu, 0x3f81}, {0xbf818000u, 0xbf82},
      {0x3fffffffu, 0x4000}, {0x7f7fffffu, 0x7f80}, {0x7f7f8000u, 0x7f80},
      {0x7f7f7fffu, 0x7f7f}, {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80},
      {0x7fc00000u, 0x7fc0}, {0x7f800001u, 0x7fc0}, {0xffa00000u, 0xffe0},
      {0x7fffffffu, 0x7fff}, {0xff800001u, 0xffc0}, {0x00000000u, 0x0000},
      {0x80000000u, 0x8000}, {0x00000001u, 0x0000}, {0x00008000u, 0x0000},
      {0x00018000u, 0x0002}, {0x807fffffu, 0x8080}};
  VecF in;
  for (const auto& [u, b] : special) in.push_back(from_bits(u));
  VecB out(in.size());
  k::f32_to_bf16_row(out.data(), in.data(), static_cast<int64_t>(in.size()));
  for (size_t i = 0; i < special.size(); ++i) {
    EXPECT_EQ(out[i], special[i].second) << std::hex << "0x" << special[i].first;
    EXPECT_EQ(out[i], stem::core::float_to_bf16(in[i])) << std::hex << "0x" << special[i].first;
  }
  // Random bit patterns (every exponent, NaNs included), at every offset and
  // length up to 40 (SIMD tails), then a long run.
  std::mt19937 rng(76);
  VecF r(1 << 20);
  for (auto& v : r) v = from_bits(static_cast<uint32_t>(rng()));
  VecB rb(r.size(), 0xdead);
  for (int64_t off = 0; off < 17; ++off)
    for (int64_t n = 0; n <= 40; ++n) {
      std::fill(rb.begin(), rb.begin() + 64, 0xdead);
      k::f32_to_bf16_row(rb.data() + off, r.data() + off, n);
      for (int64_t i = 0; i < 64; ++i) {
        const uint16_t want = i >= off && i < off + n ? stem::core::float_to_bf16(r[i]) : 0xdead;
        ASSERT_EQ(rb[i], want) << "off " << off << " n " << n << " i " << i;
      }
    }
  k::f32_to_bf16_row(rb.data(), r.data(), static_cast<int64_t>(r.size()));
  for (size_t i = 0; i < r.size(); ++i)
    ASSERT_EQ(rb[i], stem::core::float_to_bf16(r[i])) << std::hex << "0x" << bits(r[i]);
}

}  // namespace
