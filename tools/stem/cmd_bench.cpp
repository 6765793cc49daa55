// stem bench train|forward|gemm|decode|prefill: whole-model throughput on random tokens.
//   train:   forward + backward + AdamW over every parameter (tables included,
//            as PyTorch's AdamW does), the median of --steps after --warmup;
//   forward: forward with the loss only;
//   gemm:    the F32 GEMM peak of this machine (MFU's denominator).
// Reports tokens/s, step seconds, a per-phase breakdown and MFU against the
// GEMM peak measured in the same run. decode and prefill (inference speed of a
// checkpoint) live in cmd_bench_infer.cpp.
#include <cstdio>

#include <omp.h>

#include "bench_infer.h"
#include "commands.h"
#include "stem/bench.h"
#include "stem/model.h"

namespace stem::cli {
namespace {

struct BenchOpts {
  std::string mode, config;
  int64_t batch = 4, seq = 512;
  int steps = 5, warmup = 1;
  uint64_t seed = 0;
  bool json = false, no_peak = false, lazy = false;
  std::string precision = "f32";
};

int run_bench(const BenchOpts& o) {
  if (o.mode == "gemm") {
    const double peak = gemm_peak_gflops(), peak16 = gemm_bf16_peak_gflops();
    if (o.json) {
      print_json({{"gemm_gflops", peak}, {"gemm_bf16_gflops", peak16}, {"threads", omp_get_max_threads()}});
      return 0;
    }
    std::printf("F32 GEMM 2048^3: %.1f GFLOP/s (%d threads)\n", peak, omp_get_max_threads());
    if (peak16 > 0) std::printf("BF16 GEMM 2048^3: %.1f GFLOP/s (F32 accumulation; %.2fx F32)\n", peak16, peak16 / peak);
    else std::printf("BF16 GEMM: no native BF16 products on this CPU (AVX512-BF16 or AMX)\n");
    return 0;
  }
  if (o.config.empty()) return fail("bench", Status::error("--config is required for " + o.mode));
  auto cfg = ModelConfig::load(o.config);
  if (!cfg.ok()) return fail("bench", cfg.status());
  TrainBenchOptions bo;
  bo.batch = o.batch;
  bo.seq = o.seq;
  bo.steps = o.steps;
  bo.warmup = o.warmup;
  bo.seed = o.seed;
  bo.backward = o.mode == "train";
  bo.lazy_tables = o.lazy;
  bo.measure_peak = !o.no_peak;
  auto precision = parse_precision(o.precision);
  if (!precision.ok()) return fail("bench", precision.status());
  bo.precision = *precision;
  Progress bar("bench " + o.mode, o.warmup + o.steps);
  auto r = bench_train(*cfg, bo, [&](int64_t done, int64_t, const std::string& note) { bar.update(done, note); });
  bar.finish();
  if (!r.ok()) return fail("bench", r.status().with_context(o.config));
  if (o.json) {
    print_json({{"mode", o.mode}, {"config", o.config}, {"batch", o.batch}, {"seq", o.seq},
                {"tokens_per_second", r->tokens_per_second}, {"step_seconds", r->step_seconds},
                {"forward_seconds", r->forward_seconds}, {"backward_seconds", r->backward_seconds},
                {"optimizer_seconds", r->optimizer_seconds}, {"step_seconds_all", r->step_seconds_all},
                {"flops_per_token", r->flops_per_token}, {"gflops", r->gflops},
                {"gemm_peak_gflops", r->gemm_peak_gflops}, {"mfu", r->mfu}, {"loss", r->loss},
                {"gemm_bf16_peak_gflops", r->gemm_bf16_peak_gflops}, {"precision", o.precision},
                {"threads", r->threads}, {"params", r->params}, {"lazy_tables", o.lazy}});
    return 0;
  }
  std::printf("%s  B=%ld T=%ld  %ld params  %d threads  %s\n", o.mode.c_str(), static_cast<long>(o.batch),
              static_cast<long>(o.seq), static_cast<long>(r->params), r->threads, o.precision.c_str());
  std::printf("  tokens/s        %.1f\n", r->tokens_per_second);
  std::printf("  step            %.3f s (median of %d)", r->step_seconds, o.steps);
  if (bo.backward)
    std::printf("  forward %.3f  backward %.3f  optimizer %.3f", r->forward_seconds, r->backward_seconds,
                r->optimizer_seconds);
  std::printf("\n  model FLOP/s    %.1f G (%.1f MFLOP/token)\n", r->gflops, r->flops_per_token / 1e6);
  const bool b16 = bo.precision == Precision::BF16;
  const double peak = b16 ? r->gemm_bf16_peak_gflops : r->gemm_peak_gflops;
  if (peak > 0)
    std::printf("  MFU             %.1f%% of %.1f GFLOP/s measured %s GEMM peak\n", 100 * r->mfu, peak,
                b16 ? "BF16" : "F32");
  return 0;
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOpts>();
  auto io = std::make_shared<InferBenchOpts>();
  io->load.dtype = "auto";
  CLI::App* sub = app.add_subcommand("bench", "Measure throughput: train | forward | gemm | decode | prefill | batch");
  sub->add_option("mode", o->mode,
                  "train (fwd+bwd+AdamW), forward, gemm (F32 and BF16 GEMM peaks) on --config; "
                  "decode or prefill (inference), batch (continuous batching, --streams) on --model")
      ->required()
      ->check(CLI::IsMember({"train", "forward", "gemm", "decode", "prefill", "batch"}));
  sub->add_option("--config", o->config, "train/forward: model config.json (random weights and tokens)");
  sub->add_option("--model", io->model_dir, "decode/prefill: model directory");
  sub->add_option("--batch,-b", o->batch, "train/forward: sequences per step")->capture_default_str();
  sub->add_option("--seq,-t", o->seq, "train/forward: tokens per sequence")->capture_default_str();
  sub->add_option("--steps", o->steps, "train/forward: timed steps (the median is reported)")->capture_default_str();
  sub->add_option("--warmup", o->warmup, "train/forward: untimed steps first")->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of weights and tokens")->capture_default_str();
  sub->add_flag("--no-peak", o->no_peak, "Skip the GEMM peak measurement (no MFU)");
  sub->add_option("--precision", o->precision,
                  "train/forward: f32, or bf16 (BF16 linear layers with F32 accumulation and master weights; "
                  "needs AVX512-BF16 or AMX)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  sub->add_flag("--lazy-tables", o->lazy, "Row-sparse (lazy) AdamW for the STEM tables instead of PyTorch's dense AdamW");
  sub->add_option("--tokens", io->tokens, "decode: tokens decoded from an empty context; batch: tokens per request")
      ->capture_default_str();
  sub->add_option("--prompt", io->prompt, "prefill: prompt tokens; batch: random prompt ids per request")
      ->capture_default_str();
  sub->add_option("--reps", io->reps, "decode/prefill: timed passes; batch: timed rounds (after one warm-up)")
      ->capture_default_str();
  sub->add_option("--streams", io->streams, "batch: concurrent requests, each count measured in turn (e.g. 1,8)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_flag("--greedy", io->greedy, "batch: greedy decoding (default: temperature 0.8, top-k 40, top-p 0.95)");
  sub->add_flag("--cold", io->cold, "decode/prefill: drop the table file's page cache and the row cache before each pass");
  add_load_flags(sub, &io->load);
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o, io, sub] {
    if (o->mode == "batch" && sub->count("--prompt") == 0) io->prompt = 16;  // a chat turn, not a document
    if (o->mode == "decode" || o->mode == "prefill" || o->mode == "batch") {
      io->mode = o->mode;
      io->json = o->json;
      io->seed = o->seed;
      return o->mode == "batch" ? run_bench_batch(*io) : run_bench_infer(*io);
    }
    return run_bench(*o);
  });
}

}  // namespace stem::cli
