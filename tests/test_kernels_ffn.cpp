// Tests of the FFN kernels (kernels.h): SwiGLU, the dense SwiGLU FFN, the STEM
// FFN (token-indexed up-projection rows, from the whole table or a staging
// buffer) and the hash-MoE FFN. Forward against the scalar oracle, every
// gradient against finite differences in double, and the accumulate
// conventions (dx +=, parameter gradients +=). Does not test speed.
#include <array>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref_kernels.h"

namespace {

using namespace stem::test;
namespace k = stem::kernels;
namespace ref = stem::kernels::ref;

constexpr double kFwdTol = 1e-5;
constexpr double kFdTol = 1e-3;

// Rows `unique` of a full-table gradient, in index order: what drows holds.
VecD rows_of(const VecD& full, const k::RowIndex& index, int64_t C) {
  VecD r(index.n_unique() * C);
  for (int64_t u = 0; u < index.n_unique(); ++u)
    for (int64_t c = 0; c < C; ++c) r[u * C + c] = full[index.unique[u] * C + c];
  return r;
}

// ---------------------------------------------------------------- SwiGLU

TEST(KernelSwiGLU, ForwardMatchesRefDirectAndIndexed) {
  std::mt19937 rng(41);
  for (int64_t N : {1, 3, 17})
    for (int64_t f : {7, 40}) {
      SCOPED_TRACE(testing::Message() << "N=" << N << " f=" << f);
      const int64_t R = 5;
      const VecF g = randu(rng, N * f, 4.0f), u = randu(rng, N * f), rows = randu(rng, R * f);
      const VecI row_of = rand_ids(rng, N, R);
      VecF h(N * f);
      VecD hw(N * f);
      k::swiglu_forward(h.data(), g.data(), u.data(), nullptr, N, f);
      ref::swiglu_forward(hw.data(), to_d(g).data(), to_d(u).data(), nullptr, N, f);
      EXPECT_TRUE(near_rel(h, hw, kFwdTol)) << "direct";
      k::swiglu_forward(h.data(), g.data(), rows.data(), row_of.data(), N, f);
      ref::swiglu_forward(hw.data(), to_d(g).data(), to_d(rows).data(), row_of.data(), N, f);
      EXPECT_TRUE(near_rel(h, hw, kFwdTol)) << "indexed";
    }
}

TEST(KernelSwiGLU, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(42);
  for (const auto& [N, f] : std::vector<std::array<int64_t, 2>>{{1, 7}, {3, 40}, {17, 7}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " f=" << f);
    const int64_t R = 4;
    const VecF g = randu(rng, N * f, 4.0f), rows = randu(rng, R * f), dh = randu(rng, N * f);
    const VecI row_of = rand_ids(rng, N, R);
    VecF u(N * f);  // the per-position rows the indexed call reads
    ref::gather_rows(u.data(), rows.data(), row_of.data(), N, f);
    VecD gd = to_d(g), ud = to_d(u), hd(N * f);
    const VecD dhd = to_d(dh);
    auto L = [&] {
      ref::swiglu_forward(hd.data(), gd.data(), ud.data(), nullptr, N, f);
      return dot(dhd, hd);
    };
    const VecD fd_g = finite_diff(gd, L), fd_u = finite_diff(ud, L);
    for (bool indexed : {false, true}) {
      SCOPED_TRACE(indexed ? "indexed" : "direct");
      VecF dg = randu(rng, N * f), du = randu(rng, N * f);  // overwritten
      k::swiglu_backward(dg.data(), du.data(), dh.data(), g.data(),
                         indexed ? rows.data() : u.data(), indexed ? row_of.data() : nullptr, N, f);
      EXPECT_TRUE(near_rel(dg, fd_g, kFdTol)) << "dg";
      EXPECT_TRUE(near_rel(du, fd_u, kFdTol)) << "du";
    }
  }
}

// ---------------------------------------------------------------- dense FFN

struct FfnCase {
  int64_t N, d, f;
};
testing::Message describe(const FfnCase& c) {
  return testing::Message() << "N=" << c.N << " d=" << c.d << " f=" << c.f;
}

TEST(KernelDenseFfn, ForwardMatchesRef) {
  std::mt19937 rng(43);
  for (const FfnCase c : std::vector<FfnCase>{{1, 5, 7}, {3, 24, 40}, {17, 40, 7}, {5, 96, 40}}) {
    SCOPED_TRACE(describe(c));
    const VecF x = randu(rng, c.N * c.d), Wg = randu(rng, c.f * c.d), Wu = randu(rng, c.f * c.d),
               Wd = randu(rng, c.d * c.f);
    VecF y(c.N * c.d), g(c.N * c.f), u(c.N * c.f), h(c.N * c.f);
    VecD yw(y.size()), gw(g.size()), uw(u.size()), hw(h.size());
    k::dense_ffn_forward(y.data(), g.data(), u.data(), h.data(), x.data(), Wg.data(), Wu.data(),
                         Wd.data(), c.N, c.d, c.f);
    ref::dense_ffn_forward(yw.data(), gw.data(), uw.data(), hw.data(), to_d(x).data(),
                           to_d(Wg).data(), to_d(Wu).data(), to_d(Wd).data(), c.N, c.d, c.f);
    EXPECT_TRUE(near_rel(y, yw, kFwdTol)) << "y";
    EXPECT_TRUE(near_rel(g, gw, kFwdTol)) << "g";
    EXPECT_TRUE(near_rel(u, uw, kFwdTol)) << "u";
    EXPECT_TRUE(near_rel(h, hw, kFwdTol)) << "hact";
  }
}

TEST(KernelDenseFfn, BackwardMatchesFiniteDifferencesAndAccumulates) {
  std::mt19937 rng(44);
  for (const FfnCase c : std::vector<FfnCase>{{1, 5, 7}, {3, 8, 6}, {5, 5, 40}}) {
    SCOPED_TRACE(describe(c));
    const int64_t nx = c.N * c.d, nw = c.f * c.d, na = c.N * c.f;
    const VecF x = randu(rng, nx), Wg = randu(rng, nw), Wu = randu(rng, nw), Wd = randu(rng, nw),
               dy = randu(rng, nx);
    VecF y(nx), g(na), u(na), h(na), sa(na), sb(na);
    k::dense_ffn_forward(y.data(), g.data(), u.data(), h.data(), x.data(), Wg.data(), Wu.data(),
                         Wd.data(), c.N, c.d, c.f);
    VecF dx(nx, 0.0f), dWg(nw, 0.0f), dWu(nw, 0.0f), dWd(nw, 0.0f);
    k::dense_ffn_backward(dx.data(), dWg.data(), dWu.data(), dWd.data(), dy.data(), x.data(),
                          g.data(), u.data(), h.data(), Wg.data(), Wu.data(), Wd.data(), sa.data(),
                          sb.data(), c.N, c.d, c.f);

    VecD xd = to_d(x), Wgd = to_d(Wg), Wud = to_d(Wu), Wdd = to_d(Wd), yd(nx), gd(na), ud(na),
         hd(na);
    const VecD dyd = to_d(dy);
    auto L = [&] {
      ref::dense_ffn_forward(yd.data(), gd.data(), ud.data(), hd.data(), xd.data(), Wgd.data(),
                             Wud.data(), Wdd.data(), c.N, c.d, c.f);
      return dot(dyd, yd);
    };
    EXPECT_TRUE(near_rel(dx, finite_diff(xd, L), kFdTol)) << "dx";
    EXPECT_TRUE(near_rel(dWg, finite_diff(Wgd, L), kFdTol)) << "dWg";
    EXPECT_TRUE(near_rel(dWu, finite_diff(Wud, L), kFdTol)) << "dWu";
    EXPECT_TRUE(near_rel(dWd, finite_diff(Wdd, L), kFdTol)) << "dWd";

    // Again onto a preset dx and the gradients of the first call.
    const VecF preset = randu(rng, nx);
    VecF dx2 = preset, dWg2 = dWg, dWu2 = dWu, dWd2 = dWd;
    k::dense_ffn_backward(dx2.data(), dWg2.data(), dWu2.data(), dWd2.data(), dy.data(), x.data(),
                          g.data(), u.data(), h.data(), Wg.data(), Wu.data(), Wd.data(), sa.data(),
                          sb.data(), c.N, c.d, c.f);
    EXPECT_TRUE(near_rel(dx2, plus(preset, dx), 1e-6)) << "dx +=";
    EXPECT_TRUE(near_rel(dWg2, plus(dWg, dWg), 1e-6)) << "dWg twice";
    EXPECT_TRUE(near_rel(dWu2, plus(dWu, dWu), 1e-6)) << "dWu twice";
    EXPECT_TRUE(near_rel(dWd2, plus(dWd, dWd), 1e-6)) << "dWd twice";
  }
}

TEST(KernelDenseFfn, BackwardMatchesRefOnLargerShapes) {
  std::mt19937 rng(45);
  for (const FfnCase c : std::vector<FfnCase>{{17, 40, 24}, {33, 96, 40}}) {
    SCOPED_TRACE(describe(c));
    const int64_t nx = c.N * c.d, nw = c.f * c.d, na = c.N * c.f;
    const VecF x = randu(rng, nx), Wg = randu(rng, nw), Wu = randu(rng, nw), Wd = randu(rng, nw),
               dy = randu(rng, nx);
    VecF y(nx), g(na), u(na), h(na), sa(na), sb(na);
    k::dense_ffn_forward(y.data(), g.data(), u.data(), h.data(), x.data(), Wg.data(), Wu.data(),
                         Wd.data(), c.N, c.d, c.f);
    VecF dx(nx, 0.0f), dWg(nw, 0.0f), dWu(nw, 0.0f), dWd(nw, 0.0f);
    k::dense_ffn_backward(dx.data(), dWg.data(), dWu.data(), dWd.data(), dy.data(), x.data(),
                          g.data(), u.data(), h.data(), Wg.data(), Wu.data(), Wd.data(), sa.data(),
                          sb.data(), c.N, c.d, c.f);
    VecD dxw(nx), dWgw(nw), dWuw(nw), dWdw(nw);
    ref::dense_ffn_backward<double>(dxw.data(), dWgw.data(), dWuw.data(), dWdw.data(),
                                    to_d(dy).data(), to_d(x).data(), to_d(g).data(), to_d(u).data(),
                                    to_d(h).data(), to_d(Wg).data(), to_d(Wu).data(),
                                    to_d(Wd).data(), nullptr, nullptr, c.N, c.d, c.f);
    EXPECT_TRUE(near_rel(dx, dxw, 1e-5)) << "dx";
    EXPECT_TRUE(near_rel(dWg, dWgw, 1e-5)) << "dWg";
    EXPECT_TRUE(near_rel(dWu, dWuw, 1e-5)) << "dWu";
    EXPECT_TRUE(near_rel(dWd, dWdw, 1e-5)) << "dWd";
  }
}

// The oracle's own backward (used above on shapes too big for finite
// differences) against finite differences, double throughout.
TEST(KernelDenseFfn, RefBackwardMatchesFiniteDifferences) {
  std::mt19937 rng(51);
  const FfnCase c{4, 6, 5};
  const int64_t nx = c.N * c.d, nw = c.f * c.d, na = c.N * c.f;
  VecD x = to_d(randu(rng, nx)), Wg = to_d(randu(rng, nw)), Wu = to_d(randu(rng, nw)),
       Wd = to_d(randu(rng, nw));
  const VecD dy = to_d(randu(rng, nx));
  VecD y(nx), g(na), u(na), h(na);
  ref::dense_ffn_forward(y.data(), g.data(), u.data(), h.data(), x.data(), Wg.data(), Wu.data(),
                         Wd.data(), c.N, c.d, c.f);
  VecD dx(nx, 0.0), dWg(nw, 0.0), dWu(nw, 0.0), dWd(nw, 0.0);
  ref::dense_ffn_backward<double>(dx.data(), dWg.data(), dWu.data(), dWd.data(), dy.data(),
                                  x.data(), g.data(), u.data(), h.data(), Wg.data(), Wu.data(),
                                  Wd.data(), nullptr, nullptr, c.N, c.d, c.f);
  auto L = [&] {
    ref::dense_ffn_forward(y.data(), g.data(), u.data(), h.data(), x.data(), Wg.data(), Wu.data(),
                           Wd.data(), c.N, c.d, c.f);
    return dot(dy, y);
  };
  EXPECT_TRUE(near_rel(dx, finite_diff(x, L), 1e-7)) << "dx";
  EXPECT_TRUE(near_rel(dWg, finite_diff(Wg, L), 1e-7)) << "dWg";
  EXPECT_TRUE(near_rel(dWu, finite_diff(Wu, L), 1e-7)) << "dWu";
  EXPECT_TRUE(near_rel(dWd, finite_diff(Wd, L), 1e-7)) << "dWd";
}

// ---------------------------------------------------------------- STEM FFN

struct StemCase {
  int64_t N, d, f, V;
};

TEST(KernelStemFfn, ForwardMatchesRefFromTableAndStaging) {
  std::mt19937 rng(46);
  for (const StemCase c :
       std::vector<StemCase>{{1, 5, 7, 3}, {17, 24, 40, 3}, {33, 40, 7, 50}, {5, 96, 40, 257}}) {
    SCOPED_TRACE(testing::Message() << "N=" << c.N << " d=" << c.d << " f=" << c.f << " V=" << c.V);
    const VecF x = randu(rng, c.N * c.d), Wg = randu(rng, c.f * c.d), Wd = randu(rng, c.d * c.f),
               table = randu(rng, c.V * c.f);
    const VecI ids = rand_ids(rng, c.N, c.V);
    VecF y(c.N * c.d), g(c.N * c.f), h(c.N * c.f);
    VecD yw(y.size()), gw(g.size()), hw(h.size());
    k::stem_ffn_forward(y.data(), g.data(), h.data(), x.data(), Wg.data(), Wd.data(), table.data(),
                        ids.data(), c.N, c.d, c.f);
    ref::stem_ffn_forward(yw.data(), gw.data(), hw.data(), to_d(x).data(), to_d(Wg).data(),
                          to_d(Wd).data(), to_d(table).data(), ids.data(), c.N, c.d, c.f);
    EXPECT_TRUE(near_rel(y, yw, kFwdTol)) << "y";
    EXPECT_TRUE(near_rel(g, gw, kFwdTol)) << "g";
    EXPECT_TRUE(near_rel(h, hw, kFwdTol)) << "hact";

    // The same from a staging buffer of the distinct rows, addressed by slot.
    const k::RowIndex index = k::build_row_index(ids.data(), c.N, c.V);
    VecF staged(index.n_unique() * c.f), y2(y.size()), g2(g.size()), h2(h.size());
    k::gather_rows(staged.data(), table.data(), index.unique.data(), index.n_unique(), c.f);
    k::stem_ffn_forward(y2.data(), g2.data(), h2.data(), x.data(), Wg.data(), Wd.data(),
                        staged.data(), index.slot.data(), c.N, c.d, c.f);
    EXPECT_TRUE(near_rel(y2, y, 1e-6)) << "staging";
    EXPECT_TRUE(near_rel(h2, h, 1e-6)) << "staging";
  }
}

TEST(KernelStemFfn, BackwardMatchesFiniteDifferencesAndAccumulates) {
  std::mt19937 rng(47);
  for (const StemCase c : std::vector<StemCase>{{1, 5, 7, 3}, {6, 5, 7, 3}, {9, 8, 6, 50}}) {
    SCOPED_TRACE(testing::Message() << "N=" << c.N << " d=" << c.d << " f=" << c.f << " V=" << c.V);
    const int64_t nx = c.N * c.d, nw = c.f * c.d, na = c.N * c.f;
    const VecF x = randu(rng, nx), Wg = randu(rng, nw), Wd = randu(rng, nw),
               table = randu(rng, c.V * c.f), dy = randu(rng, nx);
    VecI ids = rand_ids(rng, c.N, c.V);
    if (c.N > 2) ids[c.N - 1] = ids[0];  // a repeated token
    const k::RowIndex index = k::build_row_index(ids.data(), c.N, c.V);
    const int64_t U = index.n_unique();
    VecF y(nx), g(na), h(na), sa(na), sb(na);
    k::stem_ffn_forward(y.data(), g.data(), h.data(), x.data(), Wg.data(), Wd.data(), table.data(),
                        ids.data(), c.N, c.d, c.f);
    VecF dx(nx, 0.0f), dWg(nw, 0.0f), dWd(nw, 0.0f), drows(U * c.f, 0.0f);
    k::stem_ffn_backward(dx.data(), dWg.data(), dWd.data(), drows.data(), dy.data(), x.data(),
                         g.data(), h.data(), Wg.data(), Wd.data(), table.data(), ids.data(), index,
                         sa.data(), sb.data(), c.N, c.d, c.f);

    VecD xd = to_d(x), Wgd = to_d(Wg), Wdd = to_d(Wd), tabd = to_d(table), yd(nx), gd(na), hd(na);
    const VecD dyd = to_d(dy);
    auto L = [&] {
      ref::stem_ffn_forward(yd.data(), gd.data(), hd.data(), xd.data(), Wgd.data(), Wdd.data(),
                            tabd.data(), ids.data(), c.N, c.d, c.f);
      return dot(dyd, yd);
    };
    EXPECT_TRUE(near_rel(dx, finite_diff(xd, L), kFdTol)) << "dx";
    EXPECT_TRUE(near_rel(dWg, finite_diff(Wgd, L), kFdTol)) << "dWg";
    EXPECT_TRUE(near_rel(dWd, finite_diff(Wdd, L), kFdTol)) << "dWd";
    EXPECT_TRUE(near_rel(drows, rows_of(finite_diff(tabd, L), index, c.f), kFdTol)) << "drows";

    // Staging buffer + slots gives the same gradients.
    VecF staged(U * c.f), dx_s(nx, 0.0f), dWg_s(nw, 0.0f), dWd_s(nw, 0.0f), drows_s(U * c.f, 0.0f);
    k::gather_rows(staged.data(), table.data(), index.unique.data(), U, c.f);
    k::stem_ffn_backward(dx_s.data(), dWg_s.data(), dWd_s.data(), drows_s.data(), dy.data(),
                         x.data(), g.data(), h.data(), Wg.data(), Wd.data(), staged.data(),
                         index.slot.data(), index, sa.data(), sb.data(), c.N, c.d, c.f);
    EXPECT_TRUE(near_rel(drows_s, drows, 1e-6)) << "staging drows";
    EXPECT_TRUE(near_rel(dx_s, dx, 1e-6)) << "staging dx";

    // Accumulation: dx onto a preset, parameter and row gradients twice.
    const VecF preset = randu(rng, nx);
    VecF dx2 = preset, dWg2 = dWg, dWd2 = dWd, drows2 = drows;
    k::stem_ffn_backward(dx2.data(), dWg2.data(), dWd2.data(), drows2.data(), dy.data(), x.data(),
                         g.data(), h.data(), Wg.data(), Wd.data(), table.data(), ids.data(), index,
                         sa.data(), sb.data(), c.N, c.d, c.f);
    EXPECT_TRUE(near_rel(dx2, plus(preset, dx), 1e-6)) << "dx +=";
    EXPECT_TRUE(near_rel(dWg2, plus(dWg, dWg), 1e-6)) << "dWg twice";
    EXPECT_TRUE(near_rel(dWd2, plus(dWd, dWd), 1e-6)) << "dWd twice";
    EXPECT_TRUE(near_rel(drows2, plus(drows, drows), 1e-6)) << "drows twice";
  }
}

// With index.dest set, the table gradient of slot u lands in row dest[u] of a
// larger block; the other rows are not touched.
TEST(KernelStemFfn, BackwardIntoDestRows) {
  std::mt19937 rng(52);
  const int64_t N = 17, d = 24, f = 40, V = 50, nx = N * d, na = N * f, nw = f * d;
  const VecF x = randu(rng, nx), Wg = randu(rng, nw), Wd = randu(rng, nw),
             table = randu(rng, V * f), dy = randu(rng, nx);
  const VecI ids = rand_ids(rng, N, V);
  k::RowIndex index = k::build_row_index(ids.data(), N, V);
  const int64_t U = index.n_unique(), rows = U + 3;
  VecF y(nx), g(na), h(na), sa(na), sb(na);
  k::stem_ffn_forward(y.data(), g.data(), h.data(), x.data(), Wg.data(), Wd.data(), table.data(),
                      ids.data(), N, d, f);
  auto backward = [&](float* drows) {
    VecF dx(nx, 0.0f), dWg(nw, 0.0f), dWd(nw, 0.0f);
    k::stem_ffn_backward(dx.data(), dWg.data(), dWd.data(), drows, dy.data(), x.data(), g.data(),
                         h.data(), Wg.data(), Wd.data(), table.data(), ids.data(), index, sa.data(),
                         sb.data(), N, d, f);
  };
  VecF plain(U * f, 0.0f);
  backward(plain.data());
  for (int64_t u = 0; u < U; ++u) index.dest.push_back(int32_t(rows - 1 - u));  // reversed
  const VecF before = randu(rng, rows * f);
  VecF block = before;
  backward(block.data());
  for (int64_t u = 0; u < U; ++u)
    for (int64_t c = 0; c < f; ++c)
      ASSERT_NEAR(block[(rows - 1 - u) * f + c], before[(rows - 1 - u) * f + c] + plain[u * f + c],
                  1e-5)
          << "slot " << u;
  for (int64_t r = 0; r < rows - U; ++r)
    for (int64_t c = 0; c < f; ++c) ASSERT_EQ(block[r * f + c], before[r * f + c]) << "row " << r;
}

// ---------------------------------------------------------------- hash-MoE FFN

// E experts' weights as float (fast) and double (oracle) pointer arrays.
struct Experts {
  int64_t E, d, f;
  std::vector<VecF> Wg, Wu, Wd;
  std::vector<VecD> Wgd, Wud, Wdd;
  std::vector<const float*> pg, pu, pd;
  std::vector<const double*> qg, qu, qd;
  Experts(std::mt19937& rng, int64_t E_, int64_t d_, int64_t f_) : E(E_), d(d_), f(f_) {
    for (int64_t e = 0; e < E; ++e) {
      Wg.push_back(randu(rng, f * d));
      Wu.push_back(randu(rng, f * d));
      Wd.push_back(randu(rng, d * f));
      Wgd.push_back(to_d(Wg[e]));
      Wud.push_back(to_d(Wu[e]));
      Wdd.push_back(to_d(Wd[e]));
    }
    for (int64_t e = 0; e < E; ++e) {
      pg.push_back(Wg[e].data()), pu.push_back(Wu[e].data()), pd.push_back(Wd[e].data());
      qg.push_back(Wgd[e].data()), qu.push_back(Wud[e].data()), qd.push_back(Wdd[e].data());
    }
  }
  k::MoeWeights fast() const { return {pg.data(), pu.data(), pd.data()}; }
  ref::MoeWeights<double> oracle() const { return {qg.data(), qu.data(), qd.data()}; }
};

struct MoeCase {
  int64_t N, d, f, E;
  int32_t empty_expert;  // -1: none forced empty
};

// Routing keys in [0, E) that never use `empty` (when >= 0), every other expert used.
VecI route_keys(std::mt19937& rng, int64_t N, int64_t E, int32_t empty) {
  VecI keys = rand_ids(rng, N, E);
  for (auto& key : keys)
    if (key == empty) key = (key + 1) % int32_t(E);
  for (int32_t e = 0, n = 0; e < E && n < N; ++e)
    if (e != empty) keys[n++] = e;
  return keys;
}

TEST(KernelHashMoe, ForwardMatchesRefIncludingSavedActivations) {
  std::mt19937 rng(48);
  for (const MoeCase c : std::vector<MoeCase>{
           {1, 5, 7, 1, -1}, {17, 24, 40, 3, 1}, {33, 40, 7, 4, 0}, {5, 8, 6, 2, -1}}) {
    SCOPED_TRACE(testing::Message() << "N=" << c.N << " d=" << c.d << " f=" << c.f << " E=" << c.E
                                    << " empty=" << c.empty_expert);
    const Experts ex(rng, c.E, c.d, c.f);
    const VecI keys = route_keys(rng, c.N, c.E, c.empty_expert);
    const k::RowIndex route = k::build_row_index(keys.data(), c.N, c.E);
    const VecF x = randu(rng, c.N * c.d);
    const int64_t nx = c.N * c.d, na = c.N * c.f;
    VecF y(nx), xe(nx), g(na), u(na), h(na), ye(nx);
    VecD yw(nx), xew(nx), gw(na), uw(na), hw(na), yew(nx);
    k::hash_moe_forward(y.data(), xe.data(), g.data(), u.data(), h.data(), ye.data(), x.data(),
                        ex.fast(), route, c.N, c.d, c.f);
    ref::hash_moe_forward(yw.data(), xew.data(), gw.data(), uw.data(), hw.data(), yew.data(),
                          to_d(x).data(), ex.oracle(), route, c.N, c.d, c.f);
    EXPECT_TRUE(near_rel(y, yw, kFwdTol)) << "y";
    EXPECT_TRUE(near_rel(xe, xew, 0.0)) << "xe (x in route.order)";
    EXPECT_TRUE(near_rel(g, gw, kFwdTol)) << "g";
    EXPECT_TRUE(near_rel(u, uw, kFwdTol)) << "u";
    EXPECT_TRUE(near_rel(h, hw, kFwdTol)) << "hact";
  }
}

TEST(KernelHashMoe, BackwardMatchesFiniteDifferencesWithEmptyExpert) {
  std::mt19937 rng(49);
  for (const MoeCase c : std::vector<MoeCase>{{7, 5, 6, 3, 1}, {4, 6, 5, 2, 0}, {3, 5, 7, 1, -1}}) {
    SCOPED_TRACE(testing::Message() << "N=" << c.N << " d=" << c.d << " f=" << c.f << " E=" << c.E
                                    << " empty=" << c.empty_expert);
    Experts ex(rng, c.E, c.d, c.f);
    const VecI keys = route_keys(rng, c.N, c.E, c.empty_expert);
    const k::RowIndex route = k::build_row_index(keys.data(), c.N, c.E);
    const int64_t nx = c.N * c.d, na = c.N * c.f, nw = c.f * c.d;
    const VecF x = randu(rng, nx), dy = randu(rng, nx);
    VecF y(nx), xe(nx), g(na), u(na), h(na), ye(nx), dye(nx), dxe(nx), sa(na), sb(na);
    k::hash_moe_forward(y.data(), xe.data(), g.data(), u.data(), h.data(), ye.data(), x.data(),
                        ex.fast(), route, c.N, c.d, c.f);

    // Gradients start from a preset (+= everywhere): the empty expert must keep it.
    const VecF preset_x = randu(rng, nx);
    std::vector<VecF> dWg, dWu, dWd;
    for (int64_t e = 0; e < c.E; ++e)
      dWg.push_back(randu(rng, nw)), dWu.push_back(randu(rng, nw)), dWd.push_back(randu(rng, nw));
    const auto dWg0 = dWg, dWu0 = dWu, dWd0 = dWd;
    std::vector<float*> pg, pu, pd;
    for (int64_t e = 0; e < c.E; ++e)
      pg.push_back(dWg[e].data()), pu.push_back(dWu[e].data()), pd.push_back(dWd[e].data());
    VecF dx = preset_x;
    const k::MoeGrads grads{pg.data(), pu.data(), pd.data()};
    k::hash_moe_backward(dx.data(), grads, dy.data(), xe.data(), g.data(), u.data(), h.data(),
                         ex.fast(), route, dye.data(), dxe.data(), sa.data(), sb.data(), c.N, c.d,
                         c.f);

    VecD xd = to_d(x), yd(nx), xed(nx), gd(na), ud(na), hd(na), yed(nx);
    const VecD dyd = to_d(dy);
    const ref::MoeWeights<double> w = ex.oracle();  // points into ex.W*d, perturbed in place
    auto L = [&] {
      ref::hash_moe_forward(yd.data(), xed.data(), gd.data(), ud.data(), hd.data(), yed.data(),
                            xd.data(), w, route, c.N, c.d, c.f);
      return dot(dyd, yd);
    };
    auto delta = [](const VecF& after, const VecF& before) {
      VecF r(after.size());
      for (size_t i = 0; i < r.size(); ++i) r[i] = after[i] - before[i];
      return r;
    };
    EXPECT_TRUE(near_rel(delta(dx, preset_x), finite_diff(xd, L), kFdTol)) << "dx +=";
    for (int64_t e = 0; e < c.E; ++e) {
      SCOPED_TRACE(testing::Message() << "expert " << e);
      if (e == c.empty_expert) {
        EXPECT_EQ(dWg[e], dWg0[e]) << "empty expert dWg touched";
        EXPECT_EQ(dWu[e], dWu0[e]) << "empty expert dWu touched";
        EXPECT_EQ(dWd[e], dWd0[e]) << "empty expert dWd touched";
        continue;
      }
      // Differences of accumulated floats: tolerance a little above kFdTol's need.
      EXPECT_TRUE(near_rel(delta(dWg[e], dWg0[e]), finite_diff(ex.Wgd[e], L), kFdTol)) << "dWg";
      EXPECT_TRUE(near_rel(delta(dWu[e], dWu0[e]), finite_diff(ex.Wud[e], L), kFdTol)) << "dWu";
      EXPECT_TRUE(near_rel(delta(dWd[e], dWd0[e]), finite_diff(ex.Wdd[e], L), kFdTol)) << "dWd";
    }
  }
}

TEST(KernelHashMoe, BackwardTwiceDoublesExpertGradients) {
  std::mt19937 rng(50);
  const int64_t N = 17, d = 24, f = 40, E = 3;
  const Experts ex(rng, E, d, f);
  const VecI keys = route_keys(rng, N, E, -1);
  const k::RowIndex route = k::build_row_index(keys.data(), N, E);
  const int64_t nx = N * d, na = N * f, nw = f * d;
  const VecF x = randu(rng, nx), dy = randu(rng, nx);
  VecF y(nx), xe(nx), g(na), u(na), h(na), ye(nx), dye(nx), dxe(nx), sa(na), sb(na);
  k::hash_moe_forward(y.data(), xe.data(), g.data(), u.data(), h.data(), ye.data(), x.data(),
                      ex.fast(), route, N, d, f);
  std::vector<VecF> dW(3 * E, VecF(nw, 0.0f));
  std::vector<float*> pg, pu, pd;
  for (int64_t e = 0; e < E; ++e)
    pg.push_back(dW[e].data()), pu.push_back(dW[E + e].data()), pd.push_back(dW[2 * E + e].data());
  const k::MoeGrads grads{pg.data(), pu.data(), pd.data()};
  VecF dx(nx, 0.0f);
  auto backward = [&] {
    k::hash_moe_backward(dx.data(), grads, dy.data(), xe.data(), g.data(), u.data(), h.data(),
                         ex.fast(), route, dye.data(), dxe.data(), sa.data(), sb.data(), N, d, f);
  };
  backward();
  const auto once = dW;
  const VecF dx_once = dx;
  backward();
  for (size_t i = 0; i < dW.size(); ++i)
    EXPECT_TRUE(near_rel(dW[i], plus(once[i], once[i]), 1e-6)) << "gradient array " << i;
  EXPECT_TRUE(near_rel(dx, plus(dx_once, dx_once), 1e-6)) << "dx";
}

}  // namespace
