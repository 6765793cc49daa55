// Throughput of the engine on this machine, as `stem bench` measures it:
// training steps (forward, backward, AdamW) on random tokens, and inference
// (decode one token at a time, or prefill a prompt) of a loaded model,
// llama-bench's way. Medians over timed steps or passes after untimed warm-up
// ones; nothing here is compared against a threshold (see
// docs/performance.md for how numbers are compared). Also this process's
// memory, for reports.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "stem/config.h"
#include "stem/model.h"
#include "stem/sampler.h"
#include "stem/status.h"
#include "stem/tokenizer.h"

namespace stem {

// Called after each step or pass: (done, total, a short note such as the loss).
using BenchProgress = std::function<void(int64_t done, int64_t total, const std::string& note)>;

struct TrainBenchOptions {
  int64_t batch = 4, seq = 512;  // B sequences of T random tokens a step
  int steps = 5, warmup = 1;     // timed steps (median reported), untimed steps first
  uint64_t seed = 0;             // of the weights and the tokens
  bool backward = true;          // false: forward passes only
  bool lazy_tables = false;      // row-sparse (lazy) AdamW for the STEM tables
  bool measure_peak = true;      // also measure the GEMM peaks, for MFU
  Precision precision = Precision::F32;  // of the linear layers (TrainOptions::precision)
};

struct TrainBenchResult {
  double tokens_per_second = 0;  // B*T / median step
  double step_seconds = 0, forward_seconds = 0, backward_seconds = 0, optimizer_seconds = 0;  // medians
  std::vector<double> step_seconds_all;
  double flops_per_token = 0;    // a training step's (x3 forward), or forward's
  double gflops = 0;             // model FLOP/s achieved, in G
  double gemm_peak_gflops = 0;   // F32; 0 when not measured
  double gemm_bf16_peak_gflops = 0;  // BF16 (0 when not measured, or not native here)
  double mfu = 0;                // gflops / the peak of the run's precision
  double loss = 0;               // of the last step
  int64_t params = 0;
  int threads = 0;
};

// Errors: an invalid config, T > max_position_embeddings, batch < 1, T < 2,
// steps < 1, warmup < 0; BF16 on a CPU without native BF16 products.
Result<TrainBenchResult> bench_train(const ModelConfig& cfg, const TrainBenchOptions& opt,
                                     const BenchProgress& progress = nullptr);
// Median F32 GFLOP/s of 2048^3 GEMMs: this machine's peak, MFU's denominator.
double gemm_peak_gflops();
// The same in BF16 (F32 accumulation); 0 where the CPU has no native BF16
// products (AVX512-BF16 or AMX).
double gemm_bf16_peak_gflops();

struct InferBenchOptions {
  bool decode = true;    // true: `tokens` decoded one at a time from an empty context; false: one prefill of them
  int64_t tokens = 128;
  int reps = 5;          // timed passes after one warm-up pass
  bool cold = false;     // drop the table file's page cache and the row cache before each pass
  bool prefetch = true;  // stage table rows on a background thread
  uint64_t seed = 0;     // of the random token ids
};

struct InferBenchResult {
  int64_t tokens = 0;
  double tokens_per_second = 0;              // median pass
  std::vector<double> tokens_per_second_all;
  double p50_ms = 0, p99_ms = 0;             // per token, over all timed passes
  int64_t peak_rss_bytes = 0;                // the process's high-water mark, load included
  int64_t rss_after_load_bytes = 0;
  int64_t resident_weight_bytes = 0;         // weights in memory (tables excluded when a store serves them)
  int64_t decoder_bytes = 0;                 // KV cache, work buffers, staging
  std::string tables;                        // where a table store keeps them (ram | mmap | disk); "" : weight list
  int64_t table_store_resident_bytes = 0;    // at the end
  int64_t table_bytes_read = 0, table_reads = 0, rows_requested = 0;
  double cache_hit_rate = 0;
  double prefetch_wait_ms = 0, fetch_ms = 0;
  double decode_weight_bytes_per_token = 0;  // in the dtype the matrices were loaded in (F32, BF16, Q8)
  int threads = 0;
};

// Errors: tokens < 1, reps < 1, tokens > max_position_embeddings, a table read.
Result<InferBenchResult> bench_infer(Model& model, const InferBenchOptions& opt,
                                     const BenchProgress& progress = nullptr);

// Continuous batching (stem::BatchGenerator, no HTTP): each round submits S
// requests of `prompt` random ids at once, each generating `tokens` tokens,
// for every S of `streams` in turn; one generator with max(streams) slots.
struct BatchBenchOptions {
  std::vector<int64_t> streams = {1, 8};
  int64_t tokens = 64, prompt = 16;
  int reps = 3;                 // timed rounds after one warm-up round
  int64_t step_tokens = 256;    // tokens one pass takes at most
  SamplerConfig sampler;        // seeded per request with seed + its index
  bool prefetch = true;
  uint64_t seed = 0;            // of the prompts and the samplers
};

struct BatchBenchPoint {
  int64_t streams = 0;
  double tokens_per_second = 0;        // generated tokens of all streams / round, median round
  std::vector<double> tokens_per_second_all;
  double speedup = 0;                  // tokens_per_second / the first point's
  double ttft_p50_ms = 0, ttft_p99_ms = 0;  // submit to first token
  double itl_p50_ms = 0, itl_p99_ms = 0;    // between a stream's tokens
  double pass_ms = 0;                  // wall time per scheduler pass, timed rounds
  double seconds = 0;                  // timed rounds in all
};

struct BatchBenchResult {
  std::vector<BatchBenchPoint> points;  // as `streams` lists them
  int64_t slots = 0;
  int threads = 0;
};

// Errors: an empty or non-positive stream count, tokens/prompt/reps < 1,
// prompt + tokens > max_position_embeddings, a tokenizer of another
// vocabulary, a table read.
Result<BatchBenchResult> bench_batch(Model& model, const Tokenizer& tok, const BatchBenchOptions& opt,
                                     const BenchProgress& progress = nullptr);

// This process's resident set now and its peak (Linux /proc/self/status).
struct ProcessMemory {
  int64_t rss_bytes = 0, peak_rss_bytes = 0;
};
ProcessMemory process_memory();

}  // namespace stem
