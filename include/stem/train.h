// Trainer: training a model on a data directory made by `stem prepare`
// (stem::prepare_corpus). The loop over token shards: Seeded random windows, gradient
// accumulation, warm-up + cosine learning rate, clipping with separate global
// norms for the STEM tables and for everything else, AdamW (dense or lazy for
// the tables; with lazy AdamW the tables may live on disk, see table_tier.h),
// validation loss, metrics.jsonl, atomic checkpoints with optimizer,
// data-RNG and schedule state, and exact resume: a resumed run computes the
// same losses as one never interrupted. Started by mpirun, N processes train
// data parallel: each runs its slice of a global batch N times as large, the
// gradients are summed, and each keeps 1/N of the STEM tables (rows by token
// id), exchanging only the rows a step touches (docs/scale-out.md). It does
// not install signal handlers:
// the caller sets `stop` (e.g. from SIGINT) and the loop saves and returns.
#pragma once

#include <atomic>
#include <cmath>
#include <functional>
#include <memory>
#include <string>

#include "stem/config.h"
#include "stem/status.h"

namespace stem {

struct TrainOptions {
  std::string config_path;  // model config.json; empty: `config` below
  ModelConfig config;       // the model's hyper-parameters when config_path is empty
  std::string data_dir;     // from `stem prepare`
  std::string out_dir;      // run directory
  int64_t steps = 1000;
  int64_t batch = 8;        // sequences per micro-batch
  int64_t seq = 256;        // tokens per sequence
  int64_t accum = 1;        // micro-batches per optimizer step
  float lr = 2e-3f;
  float min_lr_ratio = 0.1f;
  int64_t warmup = 50;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
  float clip = 1.0f;        // global norm of all but the STEM tables (0: off)
  float clip_stem = 1.0f;   // global norm of the STEM tables (0: off)
  // The STEM tables' parameter group: their own peak learning rate, warm-up
  // and weight decay (NaN / -1: the backbone's), the same cosine decay.
  float lr_tables = NAN;
  int64_t warmup_tables = -1;
  float weight_decay_tables = NAN;
  // The backbone (everything but the STEM tables) has learning rate 0 for the
  // first K steps, bit-identical; its warm-up and cosine run over the steps after.
  int64_t freeze_backbone_steps = 0;
  std::string init_from;    // a checkpoint (or run directory) whose weights start this run; fresh optimizer
  // RoPE base for this run (> 0; recorded in config.json). With it, --seq may
  // exceed the config's max_position_embeddings, which becomes --seq.
  float rope_theta = 0;
  // Distillation: loss = (1-alpha) CE + alpha tau^2 KL(teacher || model) on
  // the same tokens, the teacher (a model directory, same vocabulary) run
  // forward only, its STEM tables where teacher_tables says.
  std::string teacher;
  float distill_alpha = 0.5f, distill_temperature = 1.0f;
  std::string teacher_tables = "ram";  // ram | mmap | disk
  bool doc_mask = false;    // attention stays inside documents (BOS/EOS of the data); positions restart
  bool lazy_tables = false; // row-sparse (lazy) AdamW for the STEM tables
  bool tables_on_disk = false;  // STEM tables + moments in a row file (needs lazy_tables)
  std::string tables_dir;   // where that file goes ("" : out_dir); unlinked at once
  bool prefetch = true;     // stage the next step's rows in the background (disk tier; ranks with lazy tables)
  // Several ranks: 1 shards the backbone's AdamW moments over the ranks
  // (ZeRO stage 1: reduce-scatter, update the owned part, all-gather); 0 keeps
  // them whole on every rank. The numbers are the same; a run may resume
  // with either.
  int zero_stage = 0;
  // BF16: the linear layers and attention's products multiply BF16 operands
  // with F32 accumulation; master weights, moments, loss, norms and softmax
  // stay F32 (docs/precision.md). Needs a CPU with AVX512-BF16 or AMX.
  Precision precision = Precision::F32;
  int64_t eval_every = 100;
  int64_t eval_tokens = 32768;
  int64_t save_every = 200;
  int keep = 2;             // checkpoints kept (0: all)
  int64_t log_every = 1;    // metrics.jsonl lines
  uint64_t seed = 0;
  bool resume = false;
  bool force = false;       // start over in a run directory that has checkpoints
  double peak_gflops = 0;   // for MFU (of the run's precision); 0: measure
};

// Traffic of the tables on disk (TrainOptions::tables_on_disk).
struct TableTierStats {
  int64_t bytes_read = 0, bytes_written = 0;  // row file traffic
  double wait_seconds = 0;   // the training thread waiting for rows (with no prefetch: all the reading)
  double fetch_seconds = 0;  // inside row-file reads, either thread
  int64_t file_bytes = 0;
};

struct StepRecord {
  int64_t step = 0, steps = 0, tokens = 0;
  double loss = 0, val_loss = NAN, lr = 0, lr_tables = 0;
  double ce = 0;            // the training cross-entropy (the loss unless distilling)
  double grad_norm = 0, grad_norm_stem = 0;
  double tokens_per_second = 0, mfu = 0, elapsed = 0;
  double table_wait = 0;    // tables on disk: seconds this step waited for its rows
  int64_t comm_bytes = 0;   // several ranks: bytes this rank sent to the others this step (all of it)
  int64_t table_comm_bytes = 0;  // of which STEM table rows and their gradients
  int64_t table_prefetch_bytes = 0;  // of those, rows of the next step sent during this one
  bool saved = false;
};

enum class TrainEnd { Finished, Interrupted };

class Trainer {
 public:
  ~Trainer();
  static Result<std::unique_ptr<Trainer>> create(const TrainOptions& opt);
  // Runs until `steps` or until *stop becomes true (then saves a checkpoint;
  // a stop asked during the last step is a normal finish, already saved).
  // A NaN or Inf loss returns an error; the last good checkpoint stays.
  Result<TrainEnd> run(const std::function<void(const StepRecord&)>& on_step,
                         const std::atomic<bool>* stop = nullptr);
  int64_t start_step() const;
  int64_t last_step() const;  // optimizer steps completed so far
  const ModelConfig& config() const;
  std::string last_checkpoint() const;
  double validation_loss();  // on the held-out windows, now
  // Tables on disk: the row file's size and traffic so far, prefetch wait and
  // fetch time (all zero when the tables are in memory).
  bool tables_on_disk() const;
  TableTierStats table_stats() const;
  // Training on several processes (started by mpirun): this one's rank and
  // how many there are (0 of 1 alone); bytes of this rank's share of the
  // STEM tables with their moments; bytes a dense all-reduce of the table
  // gradients would send from each rank a step (what the row exchange replaces).
  int rank() const;
  int ranks() const;
  int64_t table_shard_bytes() const;
  int64_t dense_table_allreduce_bytes() const;
  // Bytes of the AdamW moments of the backbone (all but the STEM tables)
  // this rank keeps: all of them, or about 1/N with zero_stage 1.
  int64_t backbone_moment_bytes() const;

 private:
  Trainer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The per-step records of a run directory's metrics.jsonl, in step order
// (complete across resumes: a resumed run rewrites the steps after its
// checkpoint). Filled: step, tokens, loss, val_loss (NaN where not
// evaluated), lr, grad norms, tokens_per_second, mfu, elapsed. A line cut
// short by a crash is skipped; no file is an error naming the path.
Result<std::vector<StepRecord>> read_metrics(const std::string& run_dir);

// Ends every rank of a run on several processes at once (after an error on
// one, so that the others do not wait for it); does nothing alone.
void abort_all_ranks(int code);

// Learning rate at 1-based step t: linear warm-up, then cosine to lr * min_ratio.
float lr_at(int64_t t, int64_t steps, int64_t warmup, float lr, float min_ratio);

}  // namespace stem
