// stem bench train|forward|gemm|decode|prefill: whole-model throughput on random tokens.
//   train:   forward + backward + AdamW over every parameter (tables included,
//            as PyTorch's AdamW does), the median of --steps after --warmup;
//   forward: forward with the loss only;
//   gemm:    the F32 GEMM peak of this machine (MFU's denominator).
// Reports tokens/s, step seconds, a per-phase breakdown and MFU against the
// GEMM peak measured in the same run. decode and prefill (inference speed of a
// checkpoint) live in cmd_bench_infer.cpp.
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include <omp.h>

#include "bench_infer.h"
#include "commands.h"
#include "core/timer.h"
#include "kernels/kernels.h"
#include "model/accounting.h"
#include "model/transformer.h"
#include "stem/model.h"
#include "train/adamw.h"

namespace stem::cli {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct BenchOpts {
  std::string mode, config;
  int64_t batch = 4, seq = 512;
  int steps = 5, warmup = 1;
  uint64_t seed = 0;
  bool json = false, no_peak = false, lazy = false;
};

int run_bench(const BenchOpts& o) {
  if (o.mode == "gemm") {
    const double peak = kernels::gemm_peak_gflops(2048, 5);
    if (o.json) print_json({{"gemm_gflops", peak}, {"threads", omp_get_max_threads()}});
    else std::printf("F32 GEMM 2048^3: %.1f GFLOP/s (%d threads)\n", peak, omp_get_max_threads());
    return 0;
  }
  if (o.config.empty()) return fail("bench", Status::error("--config is required for " + o.mode));
  auto cfg = ModelConfig::load(o.config);
  if (!cfg.ok()) return fail("bench", cfg.status());
  if (o.seq > cfg->max_position_embeddings)
    return fail("bench", Status::error("--seq " + std::to_string(o.seq) + " exceeds max_position_embeddings = " +
                                           std::to_string(cfg->max_position_embeddings) + " of " + o.config));
  if (o.batch < 1 || o.seq < 2 || o.steps < 1 || o.warmup < 0)
    return fail("bench", Status::error("need --batch >= 1, --seq >= 2, --steps >= 1, --warmup >= 0"));
  auto m = Model::init(*cfg, o.seed);
  if (!m.ok()) return fail("bench", m.status());
  model::Transformer& tr = m->impl();
  const int64_t N = o.batch * o.seq;
  std::mt19937 rng(static_cast<uint32_t>(o.seed + 1));
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(cfg->vocab_size - 1));
  std::vector<int32_t> tokens(N);

  const bool train = o.mode == "train";
  model::Gradients grads;
  std::unique_ptr<train::AdamW> opt;
  if (train) {
    grads = tr.make_gradients(N);
    train::AdamWOptions ao;
    ao.decay_all = true;
    ao.lazy_rows = o.lazy;
    opt = std::make_unique<train::AdamW>(tr.weights(), ao);
  }
  std::vector<double> t_step, t_fwd, t_bwd, t_opt;
  Progress bar("bench " + o.mode, o.warmup + o.steps);
  double loss = 0;
  for (int s = 0; s < o.warmup + o.steps; ++s) {
    for (auto& t : tokens) t = tok(rng);
    core::Timer all, ph;
    loss = tr.forward(tokens.data(), o.batch, o.seq);
    const double f = ph.seconds();
    double b = 0, p = 0;
    if (train) {
      ph.reset();
      grads.zero();
      tr.backward(grads);
      b = ph.seconds();
      ph.reset();
      opt->step(tr.weights(), grads, 1e-4f);
      p = ph.seconds();
    }
    const double total = all.seconds();
    if (s >= o.warmup) {
      t_step.push_back(total);
      t_fwd.push_back(f);
      t_bwd.push_back(b);
      t_opt.push_back(p);
    }
    bar.update(s + 1, "loss " + std::to_string(loss).substr(0, 6));
  }
  bar.finish();
  const double step = median(t_step);
  const double tps = static_cast<double>(N) / step;
  const model::Account acc = model::account(*cfg, o.seq, o.seq);
  const double flops_tok = train ? acc.train_flops_per_token : acc.train_flops_per_token / 3.0;
  const double achieved = flops_tok * tps / 1e9;
  const double peak = o.no_peak ? 0.0 : kernels::gemm_peak_gflops(2048, 5);
  const double mfu = peak > 0 ? achieved / peak : 0.0;
  if (o.json) {
    print_json({{"mode", o.mode}, {"config", o.config}, {"batch", o.batch}, {"seq", o.seq},
                {"tokens_per_second", tps}, {"step_seconds", step}, {"forward_seconds", median(t_fwd)},
                {"backward_seconds", median(t_bwd)}, {"optimizer_seconds", median(t_opt)},
                {"step_seconds_all", t_step}, {"flops_per_token", flops_tok}, {"gflops", achieved},
                {"gemm_peak_gflops", peak}, {"mfu", mfu}, {"loss", loss},
                {"threads", omp_get_max_threads()}, {"params", acc.params_total}, {"lazy_tables", o.lazy}});
  } else {
    std::printf("%s  B=%ld T=%ld  %ld params  %d threads\n", o.mode.c_str(), static_cast<long>(o.batch),
                static_cast<long>(o.seq), static_cast<long>(acc.params_total), omp_get_max_threads());
    std::printf("  tokens/s        %.1f\n", tps);
    std::printf("  step            %.3f s (median of %d)", step, o.steps);
    if (train) std::printf("  forward %.3f  backward %.3f  optimizer %.3f", median(t_fwd), median(t_bwd), median(t_opt));
    std::printf("\n  model FLOP/s    %.1f G (%.1f MFLOP/token)\n", achieved, flops_tok / 1e6);
    if (peak > 0) std::printf("  MFU             %.1f%% of %.1f GFLOP/s measured F32 GEMM peak\n", 100 * mfu, peak);
  }
  return 0;
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOpts>();
  auto io = std::make_shared<InferBenchOpts>();
  io->load.dtype = "auto";
  CLI::App* sub = app.add_subcommand("bench", "Measure throughput: train | forward | gemm | decode | prefill");
  sub->add_option("mode", o->mode,
                  "train (fwd+bwd+AdamW), forward, gemm (F32 GEMM peak) on --config; "
                  "decode or prefill (inference) on --model")
      ->required()
      ->check(CLI::IsMember({"train", "forward", "gemm", "decode", "prefill"}));
  sub->add_option("--config", o->config, "train/forward: model config.json (random weights and tokens)");
  sub->add_option("--model", io->model_dir, "decode/prefill: model directory");
  sub->add_option("--batch,-b", o->batch, "train/forward: sequences per step")->capture_default_str();
  sub->add_option("--seq,-t", o->seq, "train/forward: tokens per sequence")->capture_default_str();
  sub->add_option("--steps", o->steps, "train/forward: timed steps (the median is reported)")->capture_default_str();
  sub->add_option("--warmup", o->warmup, "train/forward: untimed steps first")->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of weights and tokens")->capture_default_str();
  sub->add_flag("--no-peak", o->no_peak, "Skip the GEMM peak measurement (no MFU)");
  sub->add_flag("--lazy-tables", o->lazy, "Row-sparse (lazy) AdamW for the STEM tables instead of PyTorch's dense AdamW");
  sub->add_option("--tokens", io->tokens, "decode: tokens decoded from an empty context")->capture_default_str();
  sub->add_option("--prompt", io->prompt, "prefill: prompt tokens")->capture_default_str();
  sub->add_option("--reps", io->reps, "decode/prefill: timed passes (after one warm-up)")->capture_default_str();
  sub->add_flag("--cold", io->cold, "decode/prefill: drop the table file's page cache and the row cache before each pass");
  add_load_flags(sub, &io->load);
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o, io] {
    if (o->mode == "decode" || o->mode == "prefill") {
      io->mode = o->mode;
      io->json = o->json;
      io->seed = o->seed;
      return run_bench_infer(*io);
    }
    return run_bench(*o);
  });
}

}  // namespace stem::cli
