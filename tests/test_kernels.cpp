// Tests of the CPU kernels (kernels.h) that are not attention or FFNs: row
// grouping, GEMM, linear, rows/embedding, RMSNorm, RoPE, cross-entropy, AdamW
// and the small vector ops. Each forward is checked against the scalar oracle
// (kernels/ref), each backward against central finite differences in double of
// the oracle's forward, and the accumulate-vs-overwrite convention of every
// output is pinned down. Attention: test_kernels_attention.cpp; FFNs:
// test_kernels_ffn.cpp. Does not test performance or threading.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref_kernels.h"

namespace {

using namespace stem::test;
namespace k = stem::kernels;
namespace ref = stem::kernels::ref;

constexpr double kFwdTol = 1e-5;  // float kernel vs double oracle, relative to max |want|
constexpr double kFdTol = 1e-3;   // float backward vs double finite differences

// ---------------------------------------------------------------- row index

struct NaiveIndex {
  VecI unique, slot, offsets, order;
};
NaiveIndex naive_index(const VecI& keys) {
  NaiveIndex r;
  std::map<int32_t, std::vector<int32_t>> groups;  // ordered by key
  for (size_t n = 0; n < keys.size(); ++n) groups[keys[n]].push_back(int32_t(n));
  r.offsets.push_back(0);
  for (const auto& [key, pos] : groups) {
    r.unique.push_back(key);
    for (int32_t p : pos) r.order.push_back(p);
    r.offsets.push_back(int32_t(r.order.size()));
  }
  r.slot.resize(keys.size());
  for (size_t n = 0; n < keys.size(); ++n)
    r.slot[n] = int32_t(std::find(r.unique.begin(), r.unique.end(), keys[n]) - r.unique.begin());
  return r;
}

TEST(KernelRowIndex, MatchesNaiveGrouping) {
  std::mt19937 rng(1);
  for (const auto& [N, K] : std::vector<std::array<int64_t, 2>>{
           {1, 1}, {5, 1}, {17, 3}, {100, 7}, {1000, 50}, {33, 1000}, {4096, 8192}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " K=" << K);
    VecI keys = rand_ids(rng, N, K);
    if (K > 1) keys[N - 1] = int32_t(K - 1);  // the largest key
    const k::RowIndex got = k::build_row_index(keys.data(), N, K);
    const NaiveIndex want = naive_index(keys);
    EXPECT_EQ(got.unique, want.unique);
    EXPECT_EQ(got.slot, want.slot);
    EXPECT_EQ(got.offsets, want.offsets);
    EXPECT_EQ(got.order, want.order);
    EXPECT_EQ(got.n_unique(), int64_t(want.unique.size()));
  }
}

TEST(KernelRowIndexDeathTest, KeyOutOfRangeAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const VecI too_big = {0, 3, 1};
  const VecI negative = {0, -1};
  EXPECT_DEATH(k::build_row_index(too_big.data(), 3, 3), "");
  EXPECT_DEATH(k::build_row_index(negative.data(), 2, 3), "");
}

// ---------------------------------------------------------------- GEMM

TEST(KernelGemm, MatchesRefAllTransposesAndStrides) {
  std::mt19937 rng(2);
  for (const auto& [M, N, K] : std::vector<std::array<int64_t, 3>>{
           {1, 1, 1}, {3, 5, 7}, {17, 40, 24}, {64, 33, 96}, {2, 257, 5}})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.0f, 1.0f, -0.7f}) {
          const float alpha = beta == 1.0f ? 0.5f : 1.0f;
          SCOPED_TRACE(testing::Message()
                       << "M=" << M << " N=" << N << " K=" << K << " ta=" << ta << " tb=" << tb
                       << " alpha=" << alpha << " beta=" << beta);
          // Leading dimensions padded by 3 to catch ld mix-ups.
          const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 3, ldc = N + 3;
          const VecF A = randu(rng, (ta ? K : M) * lda), B = randu(rng, (tb ? N : K) * ldb);
          VecF C = randu(rng, M * ldc);
          VecD Cd = to_d(C);
          const VecF C0 = C;
          k::gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
          ref::gemm<double>(ta, tb, M, N, K, alpha, to_d(A).data(), lda, to_d(B).data(), ldb, beta,
                            Cd.data(), ldc);
          EXPECT_TRUE(near_rel(C, Cd, kFwdTol));
          for (int64_t i = 0; i < M; ++i)  // padding columns untouched
            for (int64_t j = N; j < ldc; ++j) ASSERT_EQ(C[i * ldc + j], C0[i * ldc + j]);
        }
}

// ---------------------------------------------------------------- linear

TEST(KernelLinear, ForwardMatchesRef) {
  std::mt19937 rng(3);
  for (int64_t N : {1, 3, 17})
    for (int64_t in : {5, 24, 96})
      for (int64_t out : {7, 40})
        for (bool acc : {false, true}) {
          SCOPED_TRACE(testing::Message()
                       << "N=" << N << " in=" << in << " out=" << out << " acc=" << acc);
          const VecF x = randu(rng, N * in), W = randu(rng, out * in);
          VecF y = randu(rng, N * out);
          VecD yd = to_d(y);
          k::linear_forward(y.data(), x.data(), W.data(), N, in, out, acc);
          ref::linear_forward(yd.data(), to_d(x).data(), to_d(W).data(), N, in, out, acc);
          EXPECT_TRUE(near_rel(y, yd, kFwdTol));
        }
}

TEST(KernelLinear, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(4);
  for (const auto& [N, in, out] :
       std::vector<std::array<int64_t, 3>>{{1, 5, 7}, {3, 24, 7}, {17, 5, 40}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " in=" << in << " out=" << out);
    const VecF x = randu(rng, N * in), W = randu(rng, out * in), dy = randu(rng, N * out);
    VecF dx = randu(rng, N * in);  // garbage: overwritten when !accumulate_dx
    VecF dW(out * in, 0.0f);
    k::linear_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), N, in, out, false);
    VecD xd = to_d(x), Wd = to_d(W), yd(N * out);
    const VecD dyd = to_d(dy);
    auto L = [&] {
      ref::linear_forward(yd.data(), xd.data(), Wd.data(), N, in, out);
      return dot(dyd, yd);
    };
    EXPECT_TRUE(near_rel(dx, finite_diff(xd, L), kFdTol)) << "dx";
    EXPECT_TRUE(near_rel(dW, finite_diff(Wd, L), kFdTol)) << "dW";
  }
}

TEST(KernelLinear, BackwardAccumulatesAndAcceptsNulls) {
  std::mt19937 rng(5);
  const int64_t N = 17, in = 24, out = 40;
  const VecF x = randu(rng, N * in), W = randu(rng, out * in), dy = randu(rng, N * out);
  VecF dx1(N * in), dW1(out * in, 0.0f);
  k::linear_backward(dx1.data(), dW1.data(), dy.data(), x.data(), W.data(), N, in, out, false);

  // A second call adds the same dW again; accumulate_dx adds onto a preset dx.
  const VecF preset = randu(rng, N * in);
  VecF dx2 = preset, dW2 = dW1;
  k::linear_backward(dx2.data(), dW2.data(), dy.data(), x.data(), W.data(), N, in, out, true);
  EXPECT_TRUE(near_rel(dW2, plus(dW1, dW1), 1e-6)) << "dW twice";
  EXPECT_TRUE(near_rel(dx2, plus(preset, dx1), 1e-6)) << "dx +=";

  VecF dW3(out * in, 0.0f), dx3(N * in);
  k::linear_backward(nullptr, dW3.data(), dy.data(), x.data(), W.data(), N, in, out, false);
  k::linear_backward(dx3.data(), nullptr, dy.data(), x.data(), W.data(), N, in, out, false);
  EXPECT_TRUE(near_rel(dW3, dW1, 1e-6)) << "dx == nullptr";
  EXPECT_TRUE(near_rel(dx3, dx1, 1e-6)) << "dW == nullptr";
}

// ---------------------------------------------------------------- rows, embedding

TEST(KernelRows, GatherRepeatedIds) {
  std::mt19937 rng(6);
  const int64_t R = 10, C = 7;
  const VecI row_of = {3, 3, 0, 9, 3, 0, 5, 9, 9, 1, 3, 2, 2, 8, 7, 3, 0};
  const int64_t N = int64_t(row_of.size());
  const VecF rows = randu(rng, R * C);
  VecF got(N * C, -1.0f), want(N * C);
  k::gather_rows(got.data(), rows.data(), row_of.data(), N, C);
  ref::gather_rows(want.data(), rows.data(), row_of.data(), N, C);
  EXPECT_EQ(got, want);  // a copy: bitwise
}

TEST(KernelRows, ScatterAddRepeatedIdsAccumulates) {
  std::mt19937 rng(7);
  for (const auto& [N, K, C] :
       std::vector<std::array<int64_t, 3>>{{1, 1, 5}, {17, 10, 7}, {33, 1, 24}, {200, 50, 40}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " K=" << K << " C=" << C);
    const VecI ids = rand_ids(rng, N, K);
    const k::RowIndex index = k::build_row_index(ids.data(), N, K);
    const int64_t U = index.n_unique();
    const VecF dsrc = randu(rng, N * C);
    VecF got = randu(rng, U * C);  // preset: += semantics
    VecD want = to_d(got);
    k::scatter_add_rows(got.data(), dsrc.data(), index, C);
    ref::scatter_add_rows(want.data(), to_d(dsrc).data(), index, C);
    EXPECT_TRUE(near_rel(got, want, 1e-6));
  }
}

// index.dest sends slot u into row dest[u] of a larger gradient block (the
// rows of a whole step, filled by several micro-batches).
TEST(KernelRows, ScatterAddIntoDestRows) {
  std::mt19937 rng(21);
  for (const auto& [N, K, C] :
       std::vector<std::array<int64_t, 3>>{{1, 1, 5}, {17, 10, 7}, {3000, 2000, 24}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " K=" << K << " C=" << C);
    const VecI ids = rand_ids(rng, N, K);
    k::RowIndex index = k::build_row_index(ids.data(), N, K);
    const int64_t U = index.n_unique(), rows = U + 7;
    VecI perm(rows);
    for (int64_t i = 0; i < rows; ++i) perm[i] = int32_t(i);
    std::shuffle(perm.begin(), perm.end(), rng);
    index.dest.assign(perm.begin(), perm.begin() + U);  // distinct rows of [rows, C]
    const VecF dsrc = randu(rng, N * C);
    VecF got = randu(rng, rows * C);
    VecD want = to_d(got);
    const VecF before = got;
    k::scatter_add_rows(got.data(), dsrc.data(), index, C);
    ref::scatter_add_rows(want.data(), to_d(dsrc).data(), index, C);
    EXPECT_TRUE(near_rel(got, want, 1e-6));
    for (int64_t i = U; i < rows; ++i)  // rows no slot maps to: untouched
      for (int64_t c = 0; c < C; ++c)
        ASSERT_EQ(got[perm[i] * C + c], before[perm[i] * C + c]) << "row " << perm[i];

    VecF emb = before;  // embedding_backward honours dest the same way
    k::embedding_backward(emb.data(), dsrc.data(), index, C);
    EXPECT_TRUE(near_rel(emb, got, 1e-6)) << "embedding_backward";
  }
}

TEST(KernelEmbedding, ForwardAndBackwardWithRepeatedIds) {
  std::mt19937 rng(8);
  for (const auto& [N, V, d] :
       std::vector<std::array<int64_t, 3>>{{1, 3, 5}, {17, 3, 24}, {33, 50, 40}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " V=" << V << " d=" << d);
    const VecI ids = rand_ids(rng, N, V);
    const VecF table = randu(rng, V * d), dh = randu(rng, N * d);
    VecF h(N * d), hw(N * d);
    k::embedding_forward(h.data(), table.data(), ids.data(), N, d);
    ref::embedding_forward(hw.data(), table.data(), ids.data(), N, d);
    EXPECT_EQ(h, hw);

    const k::RowIndex index = k::build_row_index(ids.data(), N, V);
    const int64_t U = index.n_unique();
    VecF drows(U * d, 0.0f);
    k::embedding_backward(drows.data(), dh.data(), index, d);
    VecD tab = to_d(table), hd(N * d);
    const VecD dhd = to_d(dh);
    auto L = [&] {
      ref::embedding_forward(hd.data(), tab.data(), ids.data(), N, d);
      return dot(dhd, hd);
    };
    const VecD fd = finite_diff(tab, L);
    VecD fd_rows(U * d);  // the rows of the distinct ids, in index order
    for (int64_t u = 0; u < U; ++u)
      for (int64_t c = 0; c < d; ++c) fd_rows[u * d + c] = fd[index.unique[u] * d + c];
    EXPECT_TRUE(near_rel(drows, fd_rows, kFdTol));

    VecF twice = drows;
    k::embedding_backward(twice.data(), dh.data(), index, d);
    EXPECT_TRUE(near_rel(twice, plus(drows, drows), 1e-6)) << "drows +=";
  }
}

// ---------------------------------------------------------------- RMSNorm

TEST(KernelRmsNorm, ForwardMatchesRef) {
  std::mt19937 rng(9);
  for (int64_t N : {1, 3, 17})
    for (int64_t d : {5, 24, 40, 96}) {
      SCOPED_TRACE(testing::Message() << "N=" << N << " d=" << d);
      const VecF x = randu(rng, N * d, 2.0f), w = randu(rng, d);
      VecF y(N * d), rstd(N);
      VecD yd(N * d), rstdd(N);
      k::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, d, 1e-5f);
      ref::rmsnorm_forward(yd.data(), rstdd.data(), to_d(x).data(), to_d(w).data(), N, d, 1e-5f);
      EXPECT_TRUE(near_rel(y, yd, kFwdTol)) << "y";
      EXPECT_TRUE(near_rel(rstd, rstdd, kFwdTol)) << "rstd";
    }
}

TEST(KernelRmsNorm, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(10);
  for (const auto& [N, d] : std::vector<std::array<int64_t, 2>>{{1, 5}, {3, 24}, {4, 40}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " d=" << d);
    const float eps = 1e-5f;
    const VecF x = randu(rng, N * d), w = randu(rng, d), dy = randu(rng, N * d);
    VecF y(N * d), rstd(N), dx(N * d, 0.0f), dw(d, 0.0f);
    k::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, d, eps);
    k::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, d);
    VecD xd = to_d(x), wd = to_d(w), yd(N * d), rd(N);
    const VecD dyd = to_d(dy);
    auto L = [&] {
      ref::rmsnorm_forward(yd.data(), rd.data(), xd.data(), wd.data(), N, d, eps);
      return dot(dyd, yd);
    };
    EXPECT_TRUE(near_rel(dx, finite_diff(xd, L), kFdTol)) << "dx";
    EXPECT_TRUE(near_rel(dw, finite_diff(wd, L), kFdTol)) << "dw";
  }
}

TEST(KernelRmsNorm, BackwardAccumulates) {
  std::mt19937 rng(11);
  const int64_t N = 17, d = 40;
  const VecF x = randu(rng, N * d), w = randu(rng, d), dy = randu(rng, N * d);
  VecF y(N * d), rstd(N), dx1(N * d, 0.0f), dw1(d, 0.0f);
  k::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, d, 1e-5f);
  k::rmsnorm_backward(dx1.data(), dw1.data(), dy.data(), x.data(), w.data(), rstd.data(), N, d);
  const VecF preset = randu(rng, N * d);
  VecF dx2 = preset, dw2 = dw1;
  k::rmsnorm_backward(dx2.data(), dw2.data(), dy.data(), x.data(), w.data(), rstd.data(), N, d);
  EXPECT_TRUE(near_rel(dx2, plus(preset, dx1), 1e-6)) << "dx +=";
  EXPECT_TRUE(near_rel(dw2, plus(dw1, dw1), 1e-6)) << "dw twice";
}

// ---------------------------------------------------------------- RoPE

TEST(KernelRope, TablesMatchRef) {
  for (int64_t hd : {2, 6, 8, 16, 64})
    for (double theta : {10000.0, 500000.0}) {
      SCOPED_TRACE(testing::Message() << "hd=" << hd << " theta=" << theta);
      const int64_t P = 4100;  // far positions expose angles computed in float
      VecF c(P * hd / 2), s(P * hd / 2), cw(P * hd / 2), sw(P * hd / 2);
      k::rope_tables(c.data(), s.data(), P, hd, theta);
      ref::rope_tables(cw.data(), sw.data(), P, hd, theta);
      EXPECT_TRUE(near_rel(c, cw, 1e-6)) << "cos";
      EXPECT_TRUE(near_rel(s, sw, 1e-6)) << "sin";
    }
}

struct RopeCase {
  int64_t B, T, nh, hd, pos0;
};
const std::vector<RopeCase> kRopeCases = {
    {1, 1, 1, 2, 0}, {2, 5, 3, 6, 0}, {1, 33, 2, 8, 7}, {2, 5, 4, 16, 100}, {1, 17, 1, 64, 3}};

TEST(KernelRope, ForwardMatchesRef) {
  std::mt19937 rng(12);
  for (const auto& c : kRopeCases) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " T=" << c.T << " nh=" << c.nh
                                    << " hd=" << c.hd << " pos0=" << c.pos0);
    const int64_t P = c.pos0 + c.T, n = c.B * c.T * c.nh * c.hd;
    VecF cs(P * c.hd / 2), sn(P * c.hd / 2);
    k::rope_tables(cs.data(), sn.data(), P, c.hd, 10000.0);
    VecF x = randu(rng, n);
    VecD xd = to_d(x);
    k::rope_forward(x.data(), cs.data(), sn.data(), c.B, c.T, c.nh, c.hd, c.pos0, nullptr);
    ref::rope_forward(xd.data(), to_d(cs).data(), to_d(sn).data(), c.B, c.T, c.nh, c.hd, c.pos0,
                      nullptr);
    EXPECT_TRUE(near_rel(x, xd, 1e-6));
  }
}

TEST(KernelRope, BackwardIsInverseAndMatchesFiniteDifferences) {
  std::mt19937 rng(13);
  for (const auto& c : kRopeCases) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " T=" << c.T << " nh=" << c.nh
                                    << " hd=" << c.hd << " pos0=" << c.pos0);
    const int64_t P = c.pos0 + c.T, n = c.B * c.T * c.nh * c.hd;
    VecF cs(P * c.hd / 2), sn(P * c.hd / 2);
    k::rope_tables(cs.data(), sn.data(), P, c.hd, 10000.0);
    const VecF x0 = randu(rng, n);
    VecF x = x0;
    k::rope_forward(x.data(), cs.data(), sn.data(), c.B, c.T, c.nh, c.hd, c.pos0, nullptr);
    k::rope_backward(x.data(), cs.data(), sn.data(), c.B, c.T, c.nh, c.hd, c.pos0, nullptr);
    EXPECT_TRUE(near_rel(x, x0, 1e-6)) << "backward(forward(x)) != x";

    const VecF dy = randu(rng, n);
    VecF dx = dy;
    k::rope_backward(dx.data(), cs.data(), sn.data(), c.B, c.T, c.nh, c.hd, c.pos0, nullptr);
    VecD xd = to_d(x0), yd(n);
    const VecD dyd = to_d(dy), csd = to_d(cs), snd = to_d(sn);
    auto L = [&] {
      yd = xd;
      ref::rope_forward(yd.data(), csd.data(), snd.data(), c.B, c.T, c.nh, c.hd, c.pos0, nullptr);
      return dot(dyd, yd);
    };
    EXPECT_TRUE(near_rel(dx, finite_diff(xd, L), kFdTol)) << "dx";
  }
}

// Rows t of a sequence at offset pos0 are rotated as rows pos0 + t of a longer one.
TEST(KernelRope, Pos0OffsetEqualsLongerSequence) {
  std::mt19937 rng(14);
  const int64_t B = 2, nh = 3, hd = 8, T_long = 12, pos0 = 7, T = T_long - pos0;
  VecF cs(T_long * hd / 2), sn(T_long * hd / 2);
  k::rope_tables(cs.data(), sn.data(), T_long, hd, 10000.0);
  VecF xl = randu(rng, B * T_long * nh * hd);
  VecF xs(B * T * nh * hd);
  const int64_t row = nh * hd;
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(&xs[b * T * row], &xl[(b * T_long + pos0) * row], sizeof(float) * T * row);
  k::rope_forward(xl.data(), cs.data(), sn.data(), B, T_long, nh, hd, 0, nullptr);
  k::rope_forward(xs.data(), cs.data(), sn.data(), B, T, nh, hd, pos0, nullptr);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T * row; ++i)
      ASSERT_FLOAT_EQ(xs[b * T * row + i], xl[(b * T_long + pos0) * row + i]) << "b=" << b;
}

// Explicit positions per row (pos, offset by pos0): forward and backward
// against the oracle.
TEST(KernelRope, PositionsMatchRef) {
  std::mt19937 rng(16);
  for (const auto& c : kRopeCases) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " T=" << c.T << " nh=" << c.nh
                                    << " hd=" << c.hd << " pos0=" << c.pos0);
    const int64_t P = c.pos0 + 2 * c.T, n = c.B * c.T * c.nh * c.hd;
    VecF cs(P * c.hd / 2), sn(P * c.hd / 2);
    k::rope_tables(cs.data(), sn.data(), P, c.hd, 10000.0);
    const VecI pos = rand_ids(rng, c.B * c.T, 2 * c.T);
    const VecD csd = to_d(cs), snd = to_d(sn);
    VecF x = randu(rng, n);
    VecD xd = to_d(x);
    k::rope_forward(x.data(), cs.data(), sn.data(), c.B, c.T, c.nh, c.hd, c.pos0, pos.data());
    ref::rope_forward(xd.data(), csd.data(), snd.data(), c.B, c.T, c.nh, c.hd, c.pos0, pos.data());
    EXPECT_TRUE(near_rel(x, xd, 1e-6)) << "forward";
    VecF dy = randu(rng, n);
    VecD dyd = to_d(dy);
    k::rope_backward(dy.data(), cs.data(), sn.data(), c.B, c.T, c.nh, c.hd, c.pos0, pos.data());
    ref::rope_backward(dyd.data(), csd.data(), snd.data(), c.B, c.T, c.nh, c.hd, c.pos0,
                       pos.data());
    EXPECT_TRUE(near_rel(dy, dyd, 1e-6)) << "backward";
  }
}

// Positions that restart at each document (doc_positions) rotate each
// document's rows exactly as the document alone from position 0.
TEST(KernelRope, DocumentPositionsEqualDocumentsAlone) {
  std::mt19937 rng(17);
  const int64_t B = 2, T = 11, nh = 3, hd = 8, row = nh * hd;
  const std::vector<std::vector<int64_t>> lens = {{4, 1, 6}, {11}};
  VecF cs(T * hd / 2), sn(T * hd / 2);
  k::rope_tables(cs.data(), sn.data(), T, hd, 10000.0);
  VecI ds;
  for (const auto& r : lens)
    for (int64_t at = 0, i = 0; i < static_cast<int64_t>(r.size()); at += r[i++])
      for (int64_t j = 0; j < r[i]; ++j) ds.push_back(static_cast<int32_t>(at));
  VecI pos(B * T);
  k::doc_positions(pos.data(), ds.data(), B, T);
  const VecF x0 = randu(rng, B * T * row);
  for (float sign : {1.0f, -1.0f}) {  // forward, backward
    VecF x = x0;
    if (sign > 0) k::rope_forward(x.data(), cs.data(), sn.data(), B, T, nh, hd, 0, pos.data());
    else k::rope_backward(x.data(), cs.data(), sn.data(), B, T, nh, hd, 0, pos.data());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t at = 0, i = 0; i < static_cast<int64_t>(lens[b].size()); at += lens[b][i++]) {
        const int64_t len = lens[b][i], r0 = (b * T + at) * row;
        VecF alone(x0.begin() + r0, x0.begin() + r0 + len * row);
        const int32_t* from0 = nullptr;  // positions 0..len-1
        if (sign > 0) k::rope_forward(alone.data(), cs.data(), sn.data(), 1, len, nh, hd, 0, from0);
        else k::rope_backward(alone.data(), cs.data(), sn.data(), 1, len, nh, hd, 0, from0);
        EXPECT_EQ(0, std::memcmp(alone.data(), x.data() + r0, sizeof(float) * len * row))
            << "sign=" << sign << " b=" << b << " document at " << at;
      }
  }
}

// ---------------------------------------------------------------- cross-entropy

TEST(KernelCrossEntropy, ForwardMatchesRefWithIgnoredRows) {
  std::mt19937 rng(15);
  for (int64_t N : {1, 3, 17})
    for (int64_t V : {3, 50, 257}) {
      SCOPED_TRACE(testing::Message() << "N=" << N << " V=" << V);
      const VecF logits = randu(rng, N * V, 4.0f);
      VecI targets = rand_ids(rng, N, V);
      if (N > 1) targets[1] = -1;
      if (N > 2) targets[N - 1] = -100;
      VecF losses(N, -7.0f);
      VecD lw(N);
      const double sum =
          k::cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V);
      const double sw =
          ref::cross_entropy_forward(lw.data(), to_d(logits).data(), targets.data(), N, V);
      EXPECT_TRUE(near_rel(losses, lw, kFwdTol));
      EXPECT_NEAR(sum, sw, kFwdTol * std::max(1.0, std::abs(sw)));
      for (int64_t n = 0; n < N; ++n) {
        if (targets[n] < 0) {
          EXPECT_EQ(losses[n], 0.0f) << "ignored row " << n;
        }
      }
    }
}

TEST(KernelCrossEntropy, HugeLogitsStayFinite) {
  const int64_t N = 5, V = 50;
  std::mt19937 rng(16);
  VecF logits = randu(rng, N * V);
  logits[0 * V + 4] = 1000.0f;                                   // huge, the target
  for (int64_t i = 0; i < V; ++i) logits[1 * V + i] += 1000.0f;  // all huge
  logits[2 * V + 7] = 1000.0f;                                   // huge, not the target
  logits[3 * V + 0] = 1000.0f;                                   // first of the row
  logits[4 * V + V - 1] = 1000.0f;                               // last of the row
  const VecI targets = {4, 9, 3, 5, 6};
  VecF losses(N);
  VecD lw(N);
  const double sum = k::cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V);
  ref::cross_entropy_forward(lw.data(), to_d(logits).data(), targets.data(), N, V);
  EXPECT_TRUE(std::isfinite(sum));
  for (int64_t n = 0; n < N; ++n) {
    EXPECT_TRUE(std::isfinite(losses[n])) << n;
    EXPECT_NEAR(losses[n], lw[n], 1e-3 * std::max(1.0, std::abs(lw[n]))) << n;
  }
  VecF dl(N * V);
  k::cross_entropy_backward(dl.data(), logits.data(), targets.data(), 1.0f, N, V);
  for (float g : dl) ASSERT_TRUE(std::isfinite(g));
}

TEST(KernelCrossEntropy, BackwardMatchesFiniteDifferencesAndAliases) {
  std::mt19937 rng(17);
  for (const auto& [N, V] : std::vector<std::array<int64_t, 2>>{{1, 3}, {5, 50}, {3, 257}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " V=" << V);
    const float scale = 1.0f / 3.0f;
    const VecF logits = randu(rng, N * V, 3.0f);
    VecI targets = rand_ids(rng, N, V);
    if (N > 1) targets[N - 2] = -1;  // an ignored row
    VecF dl = randu(rng, N * V);     // garbage: overwritten, ignored rows zeroed
    k::cross_entropy_backward(dl.data(), logits.data(), targets.data(), scale, N, V);
    VecD zd = to_d(logits), losses(N);
    auto L = [&] {
      return scale * ref::cross_entropy_forward(losses.data(), zd.data(), targets.data(), N, V);
    };
    EXPECT_TRUE(near_rel(dl, finite_diff(zd, L), kFdTol));
    for (int64_t n = 0; n < N; ++n) {
      if (targets[n] < 0) {
        for (int64_t i = 0; i < V; ++i) ASSERT_EQ(dl[n * V + i], 0.0f) << "ignored row " << n;
      }
    }

    VecF inplace = logits;  // dlogits aliasing logits
    k::cross_entropy_backward(inplace.data(), inplace.data(), targets.data(), scale, N, V);
    EXPECT_TRUE(near_rel(inplace, dl, 1e-6)) << "in place";
  }
}

// ---------------------------------------------------------------- distillation

TEST(KernelDistill, ForwardMatchesRefAndBackwardFiniteDifferences) {
  std::mt19937 rng(41);
  for (const auto& [N, V] : std::vector<std::array<int64_t, 2>>{{1, 3}, {5, 50}, {2, 97}})
    for (const auto& [alpha, tau] : std::vector<std::array<float, 2>>{{0.5f, 2.0f}, {1.0f, 1.0f}, {0.0f, 3.0f}}) {
      SCOPED_TRACE(testing::Message() << "N=" << N << " V=" << V << " alpha=" << alpha << " tau=" << tau);
      const VecF z = randu(rng, N * V, 3.0f), y = randu(rng, N * V, 3.0f);
      VecI targets = rand_ids(rng, N, V);
      if (N > 1) targets[N - 2] = -1;  // an ignored row
      VecF losses(N, -7.0f);
      VecD lw(N), zd = to_d(z), yd = to_d(y);
      const double sum = k::distill_forward(losses.data(), z.data(), y.data(), targets.data(), alpha, tau, N, V);
      const double sw = ref::distill_forward(lw.data(), zd.data(), yd.data(), targets.data(), alpha, tau, N, V);
      EXPECT_TRUE(near_rel(losses, lw, kFwdTol));
      EXPECT_NEAR(sum, sw, kFwdTol * std::max(1.0, std::abs(sw)));

      const float scale = 0.5f;
      VecF dl = randu(rng, N * V);  // garbage: overwritten
      k::distill_backward(dl.data(), z.data(), y.data(), targets.data(), alpha, tau, scale, N, V);
      VecD scratch(N);
      auto L = [&] {
        return scale * ref::distill_forward(scratch.data(), zd.data(), yd.data(), targets.data(), alpha, tau, N, V);
      };
      EXPECT_TRUE(near_rel(dl, finite_diff(zd, L), kFdTol));
      VecD dref(N * V);
      ref::distill_backward(dref.data(), to_d(z).data(), yd.data(), targets.data(), alpha, tau, scale, N, V);
      EXPECT_TRUE(near_rel(dl, dref, kFwdTol));
      VecF inplace = z;  // dlogits aliasing logits
      k::distill_backward(inplace.data(), inplace.data(), y.data(), targets.data(), alpha, tau, scale, N, V);
      EXPECT_TRUE(near_rel(inplace, dl, 1e-6)) << "in place";
    }
}

TEST(KernelDistill, AlphaZeroIsCrossEntropyAndTeacherEqualsStudentHasNoKl) {
  std::mt19937 rng(42);
  const int64_t N = 6, V = 40;
  const VecF z = randu(rng, N * V, 3.0f), y = randu(rng, N * V, 3.0f);
  const VecI targets = rand_ids(rng, N, V);
  VecF a(N), b(N), c(N);
  const double ce = k::cross_entropy_forward(a.data(), z.data(), targets.data(), N, V);
  EXPECT_NEAR(k::distill_forward(b.data(), z.data(), y.data(), targets.data(), 0.0f, 2.0f, N, V), ce, 1e-5 * ce);
  // The student's own logits as teacher: KL is 0, the loss (1 - alpha) CE.
  EXPECT_NEAR(k::distill_forward(c.data(), z.data(), z.data(), targets.data(), 0.25f, 2.0f, N, V), 0.75 * ce,
              1e-5 * ce);
}

// ---------------------------------------------------------------- AdamW

TEST(KernelAdamW, MatchesPyTorchRefOverStepsWithNullGradient) {
  std::mt19937 rng(18);
  const int64_t n = 1037;
  VecF p = randu(rng, n), m(n, 0.0f), v(n, 0.0f);
  VecF pr = p, mr = m, vr = v;
  k::AdamWHyper h;
  h.lr = 1e-2f;
  h.weight_decay = 0.1f;
  for (int64_t step = 1; step <= 5; ++step) {
    SCOPED_TRACE(testing::Message() << "step " << step);
    h.step = step;
    const VecF g = randu(rng, n, 0.1f);
    const float* gp = step == 3 ? nullptr : g.data();  // a step with no gradient
    k::adamw_update(p.data(), m.data(), v.data(), gp, n, h);
    ref::adamw_update(pr.data(), mr.data(), vr.data(), gp, n, h);
    EXPECT_TRUE(near_rel(p, pr, 1e-6)) << "p";
    EXPECT_TRUE(near_rel(m, mr, 1e-5)) << "m";
    EXPECT_TRUE(near_rel(v, vr, 1e-5)) << "v";
  }
}

// Distance in units in the last place between two finite floats.
int64_t ulp_diff(float a, float b) {
  auto key = [](float x) {
    int32_t i;
    std::memcpy(&i, &x, 4);
    return i < 0 ? int64_t(INT32_MIN) - i : int64_t(i);
  };
  return std::abs(key(a) - key(b));
}

TEST(KernelAdamW, RowsEqualsDenseWithZeroGradientRows) {
  std::mt19937 rng(19);
  for (const auto& [R, C, N] :
       std::vector<std::array<int64_t, 3>>{{50, 7, 20}, {3, 40, 1}, {257, 24, 300}}) {
    SCOPED_TRACE(testing::Message() << "R=" << R << " C=" << C << " N=" << N);
    VecF p = randu(rng, R * C), m(R * C, 0.0f), v(R * C, 0.0f);
    VecF pd = p, md = m, vd = v;
    k::AdamWHyper h;
    h.weight_decay = 0.05f;
    for (int64_t step = 1; step <= 3; ++step) {
      h.step = step;
      const VecI ids = rand_ids(rng, N, R);
      const k::RowIndex index = k::build_row_index(ids.data(), N, R);
      const VecF drows = randu(rng, index.n_unique() * C);
      VecF dense(R * C, 0.0f);
      for (int64_t u = 0; u < index.n_unique(); ++u)
        std::memcpy(&dense[index.unique[u] * C], &drows[u * C], sizeof(float) * C);
      k::adamw_update_rows(p.data(), m.data(), v.data(), drows.data(), index, R, C, h);
      k::adamw_update(pd.data(), md.data(), vd.data(), dense.data(), R * C, h);
      for (int64_t i = 0; i < R * C; ++i) {
        ASSERT_LE(ulp_diff(p[i], pd[i]), 1)
            << "p[" << i << "] step " << step << ": " << p[i] << " vs " << pd[i];
        ASSERT_LE(ulp_diff(m[i], md[i]), 1) << "m[" << i << "] step " << step;
        ASSERT_LE(ulp_diff(v[i], vd[i]), 1) << "v[" << i << "] step " << step;
      }
      VecF pr = p, mr = m, vr = v;  // one more step against the oracle from the same state
      VecF pf = p, mf = m, vf = v;
      ref::adamw_update_rows(pr.data(), mr.data(), vr.data(), drows.data(), index, R, C, h);
      k::adamw_update_rows(pf.data(), mf.data(), vf.data(), drows.data(), index, R, C, h);
      EXPECT_TRUE(near_rel(pf, pr, 1e-6)) << "rows vs ref, step " << step;
    }
  }
}

// Lazy rows: the present rows catch up (decays) then step; absent rows are not
// touched at all.
TEST(KernelAdamW, LazyRowsMatchRefAndLeaveAbsentRowsAlone) {
  std::mt19937 rng(22);
  for (const auto& [R, C, N] :
       std::vector<std::array<int64_t, 3>>{{50, 7, 20}, {3, 40, 1}, {3001, 40, 2000}}) {
    SCOPED_TRACE(testing::Message() << "R=" << R << " C=" << C << " N=" << N);
    k::AdamWHyper h;
    h.lr = 1e-2f;
    h.weight_decay = 0.1f;
    h.step = 7;
    const VecI ids = rand_ids(rng, N, R);
    const k::RowIndex index = k::build_row_index(ids.data(), N, R);
    const int64_t U = index.n_unique();
    const VecF drows = randu(rng, U * C, 0.1f);
    VecF pd(U), md(U), vd(U);  // catch-up factors of 0..3 skipped steps
    for (int64_t u = 0; u < U; ++u) {
      const int skipped = int(rng() % 4);
      pd[u] = std::pow(1.0f - h.lr * h.weight_decay, float(skipped));
      md[u] = std::pow(h.beta1, float(skipped));
      vd[u] = std::pow(h.beta2, float(skipped));
    }
    const VecF p0 = randu(rng, R * C), m0 = randu(rng, R * C, 0.01f);
    VecF v0 = randu(rng, R * C, 1e-4f);
    for (auto& x : v0) x = std::abs(x);
    VecF p = p0, m = m0, v = v0, pr = p0, mr = m0, vr = v0;
    k::adamw_update_rows_lazy(p.data(), m.data(), v.data(), drows.data(), index, C, pd.data(),
                              md.data(), vd.data(), h);
    ref::adamw_update_rows_lazy(pr.data(), mr.data(), vr.data(), drows.data(), index, C, pd.data(),
                                md.data(), vd.data(), h);
    EXPECT_TRUE(near_rel(p, pr, 1e-6)) << "p";
    EXPECT_TRUE(near_rel(m, mr, 1e-5)) << "m";
    EXPECT_TRUE(near_rel(v, vr, 1e-5)) << "v";
    std::vector<bool> present(R, false);
    for (int32_t r : index.unique) present[r] = true;
    for (int64_t r = 0; r < R; ++r) {
      if (present[r]) continue;
      for (int64_t c = 0; c < C; ++c) {
        ASSERT_EQ(p[r * C + c], p0[r * C + c]) << "absent row " << r << " moved";
        ASSERT_EQ(m[r * C + c], m0[r * C + c]) << "absent row " << r << " moved";
        ASSERT_EQ(v[r * C + c], v0[r * C + c]) << "absent row " << r << " moved";
      }
    }

    // With no skipped steps a present row steps exactly as adamw_update_rows does.
    const VecF ones(U, 1.0f);
    VecF pl = p0, ml = m0, vl = v0, pe = p0, me = m0, ve = v0;
    k::adamw_update_rows_lazy(pl.data(), ml.data(), vl.data(), drows.data(), index, C, ones.data(),
                              ones.data(), ones.data(), h);
    k::adamw_update_rows(pe.data(), me.data(), ve.data(), drows.data(), index, R, C, h);
    for (int32_t r : index.unique)
      for (int64_t c = 0; c < C; ++c) {
        ASSERT_LE(ulp_diff(pl[r * C + c], pe[r * C + c]), 1) << "row " << r;
        ASSERT_LE(ulp_diff(ml[r * C + c], me[r * C + c]), 1) << "row " << r;
        ASSERT_LE(ulp_diff(vl[r * C + c], ve[r * C + c]), 1) << "row " << r;
      }
  }
}

// ---------------------------------------------------------------- vector ops

TEST(KernelVector, SumSquaresAndScale) {
  std::mt19937 rng(20);
  for (int64_t n : {1, 17, 100003}) {
    SCOPED_TRACE(testing::Message() << "n=" << n);
    VecF x = randu(rng, n, 3.0f);
    const double want = ref::sum_squares(x.data(), n);
    // Squares may be rounded to float; the sum must not be.
    EXPECT_NEAR(k::sum_squares(x.data(), n), want, 1e-7 * want);
    VecF y = x;
    k::scale_inplace(y.data(), n, 0.37f);
    ref::scale_inplace(x.data(), n, 0.37f);
    EXPECT_EQ(y, x);  // one multiply per element: bitwise
  }
}

}  // namespace
