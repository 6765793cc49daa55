// Micro-benchmarks of the CPU kernels (kernels.h) at the shapes of config M:
// V=8192 d=512 H=8 Hkv=8 hd=64 f=1376, B=4 T=512 (N=2048 rows), and AdamW
// over 30M floats. Each reports the real (wall) time, since the kernels run
// OpenMP threads inside, plus a counter that makes sizes comparable: FLOPS
// (useful multiply-adds x 2; causal attention counts only the lower half),
// items_per_second (rows, or elements for element-wise ops) and
// bytes_per_second where memory bandwidth is the limit.
// The decode kernels (infer_kernels.h) run at the matrix shapes of the decode
// configs S (d=512 f=1376 V=8192) and L (d=1024 f=2752 V=32000), with F32 and
// BF16 weights, reporting bytes_per_second = bytes of W read per second:
// "cold" (third arg 1) cycles through copies of W totalling >= 256 MiB, so W
// comes from DRAM as in a decode step, where every weight is read once per
// token; "hot" (0) reads the same W, from cache where it fits.
// BM_decode_pass_products runs every product of one M-shape decode pass for
// 1 and for 8 sequences (the ceiling of continuous batching on this CPU).
// Deliberately not here: correctness (tests/test_kernels*.cpp) and
// whole-model step times (`stem bench`). Inputs are random, made once per
// benchmark outside the timed loop.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "core/bf16.h"
#include "kernels/infer_kernels.h"
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

// ---------------------------------------------------------------- decode: matvec
// Copies of one random W (F32 or BF16) laid end to end: enough of them to
// total >= 256 MiB when cold, else one. The benchmarks read every copy once
// before timing: in a VM, the first read of freshly written memory can be
// several times slower than later ones, and a decode step reads weights that
// were loaded long before.
template <class T>
struct MatvecData {
  int64_t out, in, copies;
  std::vector<T> W;
  std::vector<float> x, y;
  MatvecData(int64_t out_, int64_t in_, bool cold) : out(out_), in(in_) {
    const int64_t bytes = out * in * int64_t(sizeof(T));
    copies = cold ? std::max<int64_t>(1, ((int64_t{256} << 20) + bytes - 1) / bytes) : 1;
    const auto w = rand_vec(out * in, 0.05f);
    W.resize(copies * out * in);
    for (int64_t i = 0; i < out * in; ++i) {
      if constexpr (sizeof(T) == 2)
        W[i] = stem::core::float_to_bf16(w[i]);
      else
        W[i] = w[i];
    }
    for (int64_t c = 1; c < copies; ++c)
      std::memcpy(W.data() + c * out * in, W.data(), sizeof(T) * out * in);
    x = rand_vec(in, 1.0f, 5);
    y.assign(out, 0.0f);
  }
  const T* w(int64_t i) const { return W.data() + (i % copies) * out * in; }
};

// Args: out, in, cold. The shapes of the S and M configs, and 4096 x 14336
// (a larger model's down projection, the shape ggml's test-backend-ops times).
void matvec_args(benchmark::internal::Benchmark* b) {
  for (int cold : {1, 0})
    for (auto [out, in] : {std::pair<int64_t, int64_t>{1376, 512}, {512, 1376}, {8192, 512},
                           {2752, 1024}, {1024, 2752}, {32000, 1024}, {4096, 14336}})
      b->Args({out, in, cold});
}

void BM_matvec_f32(benchmark::State& state) {
  MatvecData<float> a(state.range(0), state.range(1), state.range(2) != 0);
  for (int64_t c = 0; c < a.copies; ++c) k::matvec(a.y.data(), a.w(c), a.x.data(), a.out, a.in);
  int64_t i = 0;
  for (auto _ : state) {
    k::matvec(a.y.data(), a.w(i++), a.x.data(), a.out, a.in);
    benchmark::DoNotOptimize(a.y.data());
  }
  state.SetBytesProcessed(state.iterations() * a.out * a.in * 4);
}
BENCHMARK(BM_matvec_f32)->Apply(matvec_args)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_matvec_bf16(benchmark::State& state) {
  MatvecData<uint16_t> a(state.range(0), state.range(1), state.range(2) != 0);
  for (int64_t c = 0; c < a.copies; ++c) k::matvec_bf16(a.y.data(), a.w(c), a.x.data(), a.out, a.in);
  int64_t i = 0;
  for (auto _ : state) {
    k::matvec_bf16(a.y.data(), a.w(i++), a.x.data(), a.out, a.in);
    benchmark::DoNotOptimize(a.y.data());
  }
  state.SetBytesProcessed(state.iterations() * a.out * a.in * 2);
}
BENCHMARK(BM_matvec_bf16)->Apply(matvec_args)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Q8 weights (blocks of 32 with a scale, x quantized the same way by the
// call): copies of one quantized W as above. Args: out, in, cold; GB/s counts
// the Q8 bytes (1.125 a weight).
void BM_matvec_q8(benchmark::State& state) {
  const int64_t out = state.range(0), in = state.range(1), row = k::q8_row_bytes(in), bytes = out * row;
  const int64_t copies = state.range(2) ? std::max<int64_t>(1, ((int64_t{256} << 20) + bytes - 1) / bytes) : 1;
  const auto w = rand_vec(out * in, 0.05f);
  std::vector<uint8_t> W(static_cast<size_t>(copies * bytes));
  for (int64_t r = 0; r < out; ++r) k::quantize_q8_row(W.data() + r * row, w.data() + r * in, in);
  for (int64_t c = 1; c < copies; ++c) std::memcpy(W.data() + c * bytes, W.data(), static_cast<size_t>(bytes));
  const auto x = rand_vec(in, 1.0f, 5);
  std::vector<float> y(out);
  for (int64_t c = 0; c < copies; ++c) k::matvec_q8(y.data(), W.data() + c * bytes, x.data(), out, in);
  int64_t i = 0;
  for (auto _ : state) {
    k::matvec_q8(y.data(), W.data() + (i++ % copies) * bytes, x.data(), out, in);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * bytes);
}
BENCHMARK(BM_matvec_q8)->Apply(matvec_args)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Gate and up of config S (2 x [1376, 512], BF16, cold) as two matvec_bf16
// calls (arg 0) or one matvec_batch (arg 1): what one fork/join saves.
void BM_matvec_gate_up_bf16(benchmark::State& state) {
  MatvecData<uint16_t> g(kF, kD, true), u(kF, kD, true);
  std::vector<float> yg(kF), yu(kF);
  for (int64_t c = 0; c < g.copies; ++c) {
    k::matvec_bf16(yg.data(), g.w(c), g.x.data(), kF, kD);
    k::matvec_bf16(yu.data(), u.w(c), g.x.data(), kF, kD);
  }
  int64_t i = 0;
  for (auto _ : state) {
    if (state.range(0)) {
      const k::MatvecJob jobs[2] = {{yg.data(), g.w(i), kF, true, false},
                                    {yu.data(), u.w(i), kF, true, false}};
      k::matvec_batch(jobs, 2, g.x.data(), kD);
    } else {
      k::matvec_bf16(yg.data(), g.w(i), g.x.data(), kF, kD);
      k::matvec_bf16(yu.data(), u.w(i), g.x.data(), kF, kD);
    }
    ++i;
    benchmark::DoNotOptimize(yu.data());
  }
  state.SetBytesProcessed(state.iterations() * 2 * kF * kD * 2);
}
BENCHMARK(BM_matvec_gate_up_bf16)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);

// ---------------------------------------------------------------- decode: prefill linear
// A prefill chunk of N rows through [out, in] weights, F32 (linear_forward)
// against BF16 (linear_forward_bf16). Args: N, in, out.
void prefill_args(benchmark::internal::Benchmark* b) {
  for (int64_t N : {64, 512})
    for (auto [in, out] : {std::pair<int64_t, int64_t>{512, 1376}, {1376, 512}, {1024, 2752},
                           {2752, 1024}})
      b->Args({N, in, out});
}

void BM_prefill_linear_f32(benchmark::State& state) {
  const int64_t N = state.range(0), in = state.range(1), out = state.range(2);
  const auto x = rand_vec(N * in), W = rand_vec(out * in, 0.05f);
  std::vector<float> y(N * out);
  for (auto _ : state) {
    k::linear_forward(y.data(), x.data(), W.data(), N, in, out);
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(state, 2.0 * N * in * out);
  state.SetItemsProcessed(state.iterations() * N);
}
BENCHMARK(BM_prefill_linear_f32)->Apply(prefill_args)->UseRealTime()->Unit(benchmark::kMicrosecond);

// All the matrix products of one decode pass of the M-shape STEM model
// (configs/M-stem.json: 8 layers of q, k, v, o [512, 512], gate [1376, 512]
// and down [512, 1376], the dense layer's up, the head [8192, 512]; 98 MB of
// F32 weights, so they come from DRAM) for N sequences at once: matvec for
// one, linear_forward (oneDNN) for several. What continuous batching can
// gain: N x the time of N = 1 over the time of N is its ceiling. Arg: N.
void BM_decode_pass_products(benchmark::State& state) {
  const int64_t N = state.range(0);
  struct Mat {
    int64_t in, out;
    std::vector<float> W;
  };
  std::vector<Mat> mats;
  for (int l = 0; l < 8; ++l) {
    for (int a = 0; a < 4; ++a) mats.push_back({512, 512, {}});
    mats.push_back({512, 1376, {}});
    if (l == 0) mats.push_back({512, 1376, {}});
    mats.push_back({1376, 512, {}});
  }
  mats.push_back({512, 8192, {}});
  double flops = 0;
  for (Mat& m : mats) {
    m.W = rand_vec(m.in * m.out, 0.05f);
    flops += 2.0 * N * m.in * m.out;
  }
  const auto x = rand_vec(N * 1376);
  std::vector<float> y(N * 8192);
  for (auto _ : state) {
    for (const Mat& m : mats) {
      if (N == 1)
        k::matvec(y.data(), m.W.data(), x.data(), m.out, m.in);
      else if (state.range(1) == 0)
        k::matvec_rows(y.data(), m.W.data(), x.data(), N, m.out, m.in);
      else
        k::linear_forward(y.data(), x.data(), m.W.data(), N, m.in, m.out);
    }
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(state, flops);
  state.SetItemsProcessed(state.iterations() * N);
}
BENCHMARK(BM_decode_pass_products)->Args({1, 0})->Args({8, 0})->Args({8, 1})->Args({16, 0})->Args({16, 1})->UseRealTime()->Unit(benchmark::kMillisecond);

// One product of the M shape for N rows: N = 1 through matvec, 2..8 through
// matvec_rows; a set of distinct matrices (64 MB in all) so W comes from DRAM.
void BM_matvec_rows(benchmark::State& state) {
  const int64_t N = state.range(0), in = state.range(1), out = state.range(2);
  const int64_t copies = std::max<int64_t>(1, (int64_t{64} << 20) / (in * out * 4));
  std::vector<std::vector<float>> Ws;
  for (int64_t c = 0; c < copies; ++c) Ws.push_back(rand_vec(in * out, 0.05f, static_cast<uint32_t>(c)));
  const auto x = rand_vec(N * in);
  std::vector<float> y(N * out);
  int64_t c = 0;
  for (auto _ : state) {
    const float* W = Ws[static_cast<size_t>(c++ % copies)].data();
    if (N == 1)
      k::matvec(y.data(), W, x.data(), out, in);
    else
      k::matvec_rows(y.data(), W, x.data(), N, out, in);
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(state, 2.0 * N * in * out);
  state.counters["GB/s"] = benchmark::Counter(4.0 * in * out, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_matvec_rows)
    ->ArgsProduct({{1, 8, 16}, {kD}, {kD, kF, kV}})
    ->Args({1, kF, kD})
    ->Args({8, kF, kD})
    ->Args({16, kF, kD})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

void BM_prefill_linear_bf16(benchmark::State& state) {
  const int64_t N = state.range(0), in = state.range(1), out = state.range(2);
  const auto x = rand_vec(N * in), w = rand_vec(out * in, 0.05f);
  std::vector<uint16_t> W(out * in);
  k::f32_to_bf16_row(W.data(), w.data(), out * in);
  std::vector<float> y(N * out), scratch(k::linear_bf16_scratch(in, out));
  for (auto _ : state) {
    k::linear_forward_bf16(y.data(), x.data(), W.data(), N, in, out, false, scratch.data());
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(state, 2.0 * N * in * out);
  state.SetItemsProcessed(state.iterations() * N);
}
BENCHMARK(BM_prefill_linear_bf16)->Apply(prefill_args)->UseRealTime()->Unit(benchmark::kMicrosecond);

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
                         kHd, nullptr);
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
  k::attention_forward(out.data(), lse.data(), q.data(), kk.data(), v.data(), kB, T, kH, kHkv, kHd,
                       nullptr);
  for (auto _ : state) {
    k::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                          q.data(), kk.data(), v.data(), kB, T, kH, kHkv, kHd, nullptr);
    benchmark::DoNotOptimize(dq.data());
  }
  set_flops(state, 5.0 * kB * kH * T * T * kHd);
  state.SetItemsProcessed(state.iterations() * kB * T);
}
BENCHMARK(BM_attention_backward)->Arg(kT)->UseRealTime()->Unit(benchmark::kMillisecond);

// The same in BF16 (mixed-precision training): q, k, v rounded once.
std::vector<uint16_t> rand_bf16(int64_t n) {
  const auto x = rand_vec(n);
  std::vector<uint16_t> r(n);
  k::round_to_bf16(r.data(), x.data(), n);
  return r;
}
void BM_attention_forward_bf16(benchmark::State& state) {
  const int64_t T = state.range(0);
  const auto q = rand_bf16(kB * T * kH * kHd), kk = rand_bf16(kB * T * kHkv * kHd), v = rand_bf16(kB * T * kHkv * kHd);
  std::vector<float> out(q.size()), lse(kB * kH * T);
  for (auto _ : state) {
    k::attention_forward_bf16(out.data(), lse.data(), q.data(), kk.data(), v.data(), kB, T, kH, kHkv, kHd, nullptr);
    benchmark::DoNotOptimize(out.data());
  }
  set_flops(state, 2.0 * kB * kH * T * T * kHd);
  state.SetItemsProcessed(state.iterations() * kB * T);
}
BENCHMARK(BM_attention_forward_bf16)->Arg(kT)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_attention_backward_bf16(benchmark::State& state) {
  const int64_t T = state.range(0);
  const auto q = rand_bf16(kB * T * kH * kHd), kk = rand_bf16(kB * T * kHkv * kHd), v = rand_bf16(kB * T * kHkv * kHd);
  const auto dout = rand_vec(q.size());
  std::vector<float> out(q.size()), lse(kB * kH * T), dq(q.size()), dk(kk.size()), dv(v.size());
  k::attention_forward_bf16(out.data(), lse.data(), q.data(), kk.data(), v.data(), kB, T, kH, kHkv, kHd, nullptr);
  for (auto _ : state) {
    k::attention_backward_bf16(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(),
                               kk.data(), v.data(), kB, T, kH, kHkv, kHd, nullptr);
    benchmark::DoNotOptimize(dq.data());
  }
  set_flops(state, 5.0 * kB * kH * T * T * kHd);
  state.SetItemsProcessed(state.iterations() * kB * T);
}
BENCHMARK(BM_attention_backward_bf16)->Arg(kT)->UseRealTime()->Unit(benchmark::kMillisecond);

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
    k::rope_forward(x.data(), cs.data(), sn.data(), kB, kT, kH, kHd, 0, nullptr);
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
