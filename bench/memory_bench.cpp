// The memory read bandwidth of this machine, the ceiling of one-row decode
// (every weight is read once per token): BM_read_bandwidth/T reads 1 GiB, one
// contiguous share and one sequential stream per thread, on T threads, and
// reports bytes_per_second. The buffer is written once before timing, so
// pages are mapped. Not a kernel of the engine: the decode kernels are in
// kernels_bench.cpp, and their GB/s are to be read against this one.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdint>
#include <vector>

namespace {

// XOR of every 64-bit word of p[0, n): 8 independent lanes, so the loop is
// bound by loads, not by a dependency chain.
uint64_t xor_words(const uint64_t* p, int64_t n) {
  uint64_t acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] ^= p[i + l];
  for (; i < n; ++i) acc[0] ^= p[i];
  uint64_t x = 0;
  for (uint64_t a : acc) x ^= a;
  return x;
}

void BM_read_bandwidth(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  constexpr int64_t kBytes = int64_t{1} << 30;
  const int64_t words = kBytes / 8;
  std::vector<uint64_t> buf(static_cast<size_t>(words));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < words; ++i) buf[i] = static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull;
  for (auto _ : state) {
    uint64_t x = 0;
#pragma omp parallel num_threads(threads) reduction(^ : x)
    {
      const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
      const int64_t w0 = words * t / n, w1 = words * (t + 1) / n;
      x ^= xor_words(buf.data() + w0, w1 - w0);
    }
    benchmark::DoNotOptimize(x);
  }
  state.SetBytesProcessed(state.iterations() * kBytes);
}
BENCHMARK(BM_read_bandwidth)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
