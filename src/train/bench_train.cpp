// bench_train and gemm_peak_gflops (include/stem/bench.h): training steps of
// a freshly initialised model on random tokens, timed phase by phase.
#include <omp.h>

#include <random>

#include "core/stats.h"
#include "core/timer.h"
#include "model/accounting.h"
#include "model/engine.h"
#include "model/transformer.h"
#include "stem/bench.h"
#include "train/adamw.h"

namespace stem {
namespace {
double median(const std::vector<double>& v) { return core::quantile(v, 0.5); }
}  // namespace

double gemm_peak_gflops() { return kernels::gemm_peak_gflops(2048, 5); }
double gemm_bf16_peak_gflops() { return kernels::cpu_has_bf16() ? kernels::gemm_bf16_peak_gflops(2048, 5) : 0.0; }

Result<TrainBenchResult> bench_train(const ModelConfig& cfg, const TrainBenchOptions& o,
                                     const BenchProgress& progress) {
  if (o.seq > cfg.max_position_embeddings)
    return Status::error("--seq " + std::to_string(o.seq) + " exceeds max_position_embeddings = " +
                         std::to_string(cfg.max_position_embeddings));
  if (o.batch < 1 || o.seq < 2 || o.steps < 1 || o.warmup < 0)
    return Status::error("need --batch >= 1, --seq >= 2, --steps >= 1, --warmup >= 0");
  STEM_ASSIGN_OR_RETURN(Model m, Model::init(cfg, o.seed));
  model::Transformer& tr = engine(m);
  if (o.precision == Precision::BF16) {
    if (!tr.backend().supports(kernels::Op::gemm_bf16, DType::BF16))
      return Status::error("--precision bf16: this CPU has no native BF16 products (AVX512-BF16 or AMX), or "
                           "ONEDNN_MAX_CPU_ISA hides them");
    STEM_RETURN_IF_ERROR(tr.set_precision(Precision::BF16));
  }
  const int64_t N = o.batch * o.seq;
  std::mt19937 rng(static_cast<uint32_t>(o.seed + 1));
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(cfg.vocab_size - 1));
  std::vector<int32_t> tokens(N);
  model::Gradients grads;
  std::unique_ptr<train::AdamW> opt;
  if (o.backward) {
    grads = tr.make_gradients(N);
    train::AdamWOptions ao;
    ao.decay_all = true;
    ao.lazy_rows = o.lazy_tables;
    opt = std::make_unique<train::AdamW>(tr.weights(), ao);
  }
  TrainBenchResult r;
  std::vector<double> t_fwd, t_bwd, t_opt;
  for (int s = 0; s < o.warmup + o.steps; ++s) {
    for (auto& t : tokens) t = tok(rng);
    core::Timer all, ph;
    r.loss = tr.forward(tokens.data(), o.batch, o.seq);
    const double f = ph.seconds();
    double b = 0, p = 0;
    if (o.backward) {
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
      r.step_seconds_all.push_back(total);
      t_fwd.push_back(f);
      t_bwd.push_back(b);
      t_opt.push_back(p);
    }
    if (progress) progress(s + 1, o.warmup + o.steps, "loss " + std::to_string(r.loss).substr(0, 6));
  }
  r.step_seconds = median(r.step_seconds_all);
  r.forward_seconds = median(t_fwd);
  r.backward_seconds = median(t_bwd);
  r.optimizer_seconds = median(t_opt);
  r.tokens_per_second = static_cast<double>(N) / r.step_seconds;
  const Account acc = account(cfg, o.seq, o.seq);
  r.flops_per_token = o.backward ? acc.train_flops_per_token : acc.train_flops_per_token / 3.0;
  r.gflops = r.flops_per_token * r.tokens_per_second / 1e9;
  r.gemm_peak_gflops = o.measure_peak ? gemm_peak_gflops() : 0.0;
  r.gemm_bf16_peak_gflops = o.measure_peak ? gemm_bf16_peak_gflops() : 0.0;
  const double peak = o.precision == Precision::BF16 ? r.gemm_bf16_peak_gflops : r.gemm_peak_gflops;
  r.mfu = peak > 0 ? r.gflops / peak : 0.0;
  r.params = acc.params_total;
  r.threads = omp_get_max_threads();
  return r;
}

}  // namespace stem
