// Micro-benchmarks of the CPU kernels (kernels.h) at the shapes of config M:
// V=8192 d=512 H=8 Hkv=8 hd=64 f=1376, B=4 T=512 (N=2048 rows), and AdamW
// over 30M floats. Each reports the real (wall) time, since the kernels run
// OpenMP threads inside, plus a counter that makes sizes comparable: FLOPS
// (useful multiply-adds x 2; causal attention counts only the lower half),
// items_per_second (rows, or elements for element-wise ops) and
// bytes_per_second where memory bandwidth is the limit.
// Deliberately not here: correctness (tests/test_kernels*.cpp) and
// whole-model step times (`stem bench`). Inputs are random, made once per
// benchmark outside the timed loop.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/kernels.h"

namespace {

namespace k = stem::kernels;

// Config M.
constexpr int64_t kV = 8192, kD = 512, kH = 8, kHkv = 8, kHd = 64, kF = 1376;
constexpr int64_t kB = 4, kT = 512, kN = kB * kT;

std::vector<float> rand_vec(int64_t n, float scale = 1.0f, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<int32_t> rand_ids(int64_t n, int64_t K, uint32_t seed = 2) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(K - 1));
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

void set_flops(benchmark::State& state, double flops_per_iter) {
  state.counters["FLOPS"] = benchmark::Counter(
      flops_per_iter, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// ---------------------------------------------------------------- linear
// Args: in, out (N = 2048 rows): the FFN projections, attention's and the LM head.
void linear_args(benchmark::internal::Benchmark* b) {
  b->Args({kD, kF})->Args({kF, kD})->Args({kD, kD})->Args({kD, kV});
}

void BM_linear_forward(benchmark::State& state) {
  const int64_t in = state.range(0), out = state.range(1);
  const auto x = rand_vec(kN * in), W = rand_vec(out * in);
  std::vector<float> y(kN * out);
  for (auto _ : state) {
    k::linear_forward(y.data(), x.data(), W.data(), kN, in, out);
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(state, 2.0 * kN * in * out);
  state.SetItemsProcessed(state.iterations() * kN);
}
BENCHMARK(BM_linear_forward)->Apply(linear_args)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_linear_backward(benchmark::State& state) {
  const int64_t in = state.range(0), out = state.range(1);
  const auto x = rand_vec(kN * in), W = rand_vec(out * in), dy = rand_vec(kN * out);
  std::vector<float> dx(kN * in), dW(out * in);
  for (auto _ : state) {
    k::linear_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), kN, in, out, false);
    benchmark::DoNotOptimize(dW.data());
  }
  set_flops(state, 4.0 * kN * in * out);
  state.SetItemsProcessed(state.iterations() * kN);
}
BENCHMARK(BM_linear_backward)->Apply(linear_args)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- attention
// Causal: QK^T and PV over the lower triangle, 2 * B*H*T^2*hd FLOPs forward;
// backward recomputes QK^T and adds dO V^T, dQ, dK, dV: 5 * B*H*T^2*hd.
void BM_attention_forward(benchmark::State& state) {
  const int64_t T = state.range(0);
  const auto q = rand_vec(kB * T * kH * kHd), kk = rand_vec(kB * T * kHkv * kHd),
             v = rand_vec(kB * T * kHkv * kHd);
  std::vector<float> out(q.size()), lse(kB * kH * T);
  for (auto _ : state) {
    k::attention_forward(out.data(), lse.data(), q.data(), kk.data(), v.data(), kB, T, kH, kHkv,
                         kHd);
    benchmark::DoNotOptimize(out.data());
  }
  set_flops(state, 2.0 * kB * kH * T * T * kHd);
  state.SetItemsProcessed(state.iterations() * kB * T);
}
BENCHMARK(BM_attention_forward)->Arg(kT)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_attention_backward(benchmark::State& state) {
  const int64_t T = state.range(0);
  const auto q = rand_vec(kB * T * kH * kHd), kk = rand_vec(kB * T * kHkv * kHd),
             v = rand_vec(kB * T * kHkv * kHd), dout = rand_vec(q.size());
  std::vector<float> out(q.size()), lse(kB * kH * T), dq(q.size()), dk(kk.size()), dv(v.size());
  k::attention_forward(out.data(), lse.data(), q.data(), kk.data(), v.data(), kB, T, kH, kHkv, kHd);
  for (auto _ : state) {
    k::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                          q.data(), kk.data(), v.data(), kB, T, kH, kHkv, kHd);
    benchmark::DoNotOptimize(dq.data());
  }
  set_flops(state, 5.0 * kB * kH * T * T * kHd);
  state.SetItemsProcessed(state.iterations() * kB * T);
}
BENCHMARK(BM_attention_backward)->Arg(kT)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- RMSNorm, RoPE
void BM_rmsnorm_forward(benchmark::State& state) {
  const auto x = rand_vec(kN * kD), w = rand_vec(kD);
  std::vector<float> y(kN * kD), rstd(kN);
  for (auto _ : state) {
    k::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), kN, kD, 1e-5f);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * kN);
  state.SetBytesProcessed(state.iterations() * 2 * kN * kD * int64_t(sizeof(float)));
}
BENCHMARK(BM_rmsnorm_forward)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_rmsnorm_backward(benchmark::State& state) {
  const auto x = rand_vec(kN * kD), w = rand_vec(kD), dy = rand_vec(kN * kD);
  std::vector<float> y(kN * kD), rstd(kN), dx(kN * kD), dw(kD);
  k::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), kN, kD, 1e-5f);
  for (auto _ : state) {
    k::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), kN, kD);
    benchmark::DoNotOptimize(dx.data());
  }
  state.SetItemsProcessed(state.iterations() * kN);
  state.SetBytesProcessed(state.iterations() * 4 * kN * kD * int64_t(sizeof(float)));
}
BENCHMARK(BM_rmsnorm_backward)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_rope_forward(benchmark::State& state) {
  std::vector<float> cs(kT * kHd / 2), sn(kT * kHd / 2);
  k::rope_tables(cs.data(), sn.data(), kT, kHd, 10000.0);
  auto x = rand_vec(kN * kH * kHd);
  for (auto _ : state) {
    k::rope_forward(x.data(), cs.data(), sn.data(), kB, kT, kH, kHd, 0);
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * kN);
  state.SetBytesProcessed(state.iterations() * 2 * kN * kH * kHd * int64_t(sizeof(float)));
}
BENCHMARK(BM_rope_forward)->UseRealTime()->Unit(benchmark::kMicrosecond);

// ---------------------------------------------------------------- FFNs
// Dense: 3 GEMMs of N*d*f forward (6 N d f FLOPs), 6 backward (12 N d f).
// STEM: 2 forward (4 N d f), 4 backward (8 N d f), plus the row traffic.
struct FfnData {
  std::vector<float> x = rand_vec(kN * kD), Wg = rand_vec(kF * kD, 0.05f),
                     Wu = rand_vec(kF * kD, 0.05f), Wd = rand_vec(kD * kF, 0.05f),
                     table = rand_vec(kV * kF), dy = rand_vec(kN * kD);
  std::vector<int32_t> ids = rand_ids(kN, kV);
  std::vector<float> y = std::vector<float>(kN * kD), g = std::vector<float>(kN * kF),
                     u = std::vector<float>(kN * kF), h = std::vector<float>(kN * kF),
                     sa = std::vector<float>(kN * kF), sb = std::vector<float>(kN * kF),
                     dx = std::vector<float>(kN * kD), dWg = std::vector<float>(kF * kD),
                     dWu = std::vector<float>(kF * kD), dWd = std::vector<float>(kD * kF);
};

void BM_dense_ffn_forward(benchmark::State& state) {
  FfnData a;
  for (auto _ : state) {
    k::dense_ffn_forward(a.y.data(), a.g.data(), a.u.data(), a.h.data(), a.x.data(), a.Wg.data(),
                         a.Wu.data(), a.Wd.data(), kN, kD, kF);
    benchmark::DoNotOptimize(a.y.data());
  }
  set_flops(state, 6.0 * kN * kD * kF);
  state.SetItemsProcessed(state.iterations() * kN);
}
BENCHMARK(BM_dense_ffn_forward)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_dense_ffn_backward(benchmark::State& state) {
  FfnData a;
  k::dense_ffn_forward(a.y.data(), a.g.data(), a.u.data(), a.h.data(), a.x.data(), a.Wg.data(),
                       a.Wu.data(), a.Wd.data(), kN, kD, kF);
  for (auto _ : state) {
    k::dense_ffn_backward(a.dx.data(), a.dWg.data(), a.dWu.data(), a.dWd.data(), a.dy.data(),
                          a.x.data(), a.g.data(), a.u.data(), a.h.data(), a.Wg.data(), a.Wu.data(),
                          a.Wd.data(), a.sa.data(), a.sb.data(), kN, kD, kF);
    benchmark::DoNotOptimize(a.dx.data());
  }
  set_flops(state, 12.0 * kN * kD * kF);
  state.SetItemsProcessed(state.iterations() * kN);
}
BENCHMARK(BM_dense_ffn_backward)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_stem_ffn_forward(benchmark::State& state) {
  FfnData a;
  for (auto _ : state) {
    k::stem_ffn_forward(a.y.data(), a.g.data(), a.h.data(), a.x.data(), a.Wg.data(), a.Wd.data(),
                        a.table.data(), a.ids.data(), kN, kD, kF);
    benchmark::DoNotOptimize(a.y.data());
  }
  set_flops(state, 4.0 * kN * kD * kF);
  state.SetItemsProcessed(state.iterations() * kN);
}
BENCHMARK(BM_stem_ffn_forward)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_stem_ffn_backward(benchmark::State& state) {
  FfnData a;
  const k::RowIndex index = k::build_row_index(a.ids.data(), kN, kV);
  std::vector<float> drows(index.n_unique() * kF);
  k::stem_ffn_forward(a.y.data(), a.g.data(), a.h.data(), a.x.data(), a.Wg.data(), a.Wd.data(),
                      a.table.data(), a.ids.data(), kN, kD, kF);
  for (auto _ : state) {
    k::stem_ffn_backward(a.dx.data(), a.dWg.data(), a.dWd.data(), drows.data(), a.dy.data(),
                         a.x.data(), a.g.data(), a.h.data(), a.Wg.data(), a.Wd.data(),
                         a.table.data(), a.ids.data(), index, a.sa.data(), a.sb.data(), kN, kD, kF);
    benchmark::DoNotOptimize(drows.data());
  }
  set_flops(state, 8.0 * kN * kD * kF);
  state.SetItemsProcessed(state.iterations() * kN);
}
BENCHMARK(BM_stem_ffn_backward)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- loss
void BM_cross_entropy_forward(benchmark::State& state) {
  const auto logits = rand_vec(kN * kV, 4.0f);
  const auto targets = rand_ids(kN, kV);
  std::vector<float> losses(kN);
  for (auto _ : state)
    benchmark::DoNotOptimize(
        k::cross_entropy_forward(losses.data(), logits.data(), targets.data(), kN, kV));
  state.SetItemsProcessed(state.iterations() * kN * kV);
  state.SetBytesProcessed(state.iterations() * kN * kV * int64_t(sizeof(float)));
}
BENCHMARK(BM_cross_entropy_forward)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_cross_entropy_backward(benchmark::State& state) {
  const auto logits = rand_vec(kN * kV, 4.0f);
  const auto targets = rand_ids(kN, kV);
  std::vector<float> dlogits(kN * kV);
  for (auto _ : state) {
    k::cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), 1.0f / kN, kN, kV);
    benchmark::DoNotOptimize(dlogits.data());
  }
  state.SetItemsProcessed(state.iterations() * kN * kV);
  state.SetBytesProcessed(state.iterations() * 2 * kN * kV * int64_t(sizeof(float)));
}
BENCHMARK(BM_cross_entropy_backward)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- optimizer
// Reads p, m, v, g and writes p, m, v: 28 bytes an element.
void BM_adamw_update(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto p = rand_vec(n), m = std::vector<float>(n), v = std::vector<float>(n);
  const auto g = rand_vec(n, 0.01f, 3);
  k::AdamWHyper h;
  h.weight_decay = 0.1f;
  for (auto _ : state) {
    k::adamw_update(p.data(), m.data(), v.data(), g.data(), n, h);
    benchmark::DoNotOptimize(p.data());
    ++h.step;
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * 28 * n);
}
BENCHMARK(BM_adamw_update)->Arg(30'000'000)->UseRealTime()->Unit(benchmark::kMillisecond);

// A STEM table [V, f] whose gradient covers the distinct tokens of one batch.
void BM_adamw_update_rows(benchmark::State& state) {
  const int64_t n = kV * kF;
  auto p = rand_vec(n), m = std::vector<float>(n), v = std::vector<float>(n);
  const auto ids = rand_ids(kN, kV);
  const k::RowIndex index = k::build_row_index(ids.data(), kN, kV);
  const auto drows = rand_vec(index.n_unique() * kF, 0.01f, 3);
  k::AdamWHyper h;
  for (auto _ : state) {
    k::adamw_update_rows(p.data(), m.data(), v.data(), drows.data(), index, kV, kF, h);
    benchmark::DoNotOptimize(p.data());
    ++h.step;
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * 24 * n);
}
BENCHMARK(BM_adamw_update_rows)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
