// stem train: a training run from a model config and a prepared data directory.
// SIGINT/SIGTERM/SIGHUP ask the loop to save a checkpoint and stop (exit 128 +
// the signal: 130, 143, 129); a second signal ends the process at once (the
// last checkpoint stays whole). Signals arrive through stem/signals.h, never
// through a handler. Started by mpirun, each rank runs this; rank 0 alone
// reports, and an error on any rank ends them all.
#include <cstdio>
#include <unistd.h>

#include "commands.h"
#include "stem/signals.h"
#include "stem/bench.h"
#include "stem/train.h"

namespace stem::cli {
namespace {

std::string fmt_eta(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  return buf;
}

}  // namespace

void register_train(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  auto json = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand(
      "train",
      "Train a model on a prepared data directory. Under `mpirun -np N`, N processes train data parallel: "
      "a global batch of N x accum micro-batches, the STEM tables sharded by token id (docs/scale-out.md)");
  sub->add_option("--config", o->config_path, "Model config.json (default with --init-from: that checkpoint's)");
  sub->add_option("--data", o->data_dir, "Data directory from `stem prepare`")->required();
  sub->add_option("--out", o->out_dir, "Run directory (checkpoints, metrics.jsonl)")->required();
  sub->add_option("--steps", o->steps, "Optimizer steps")->capture_default_str();
  sub->add_option("--batch", o->batch, "Sequences per micro-batch")->capture_default_str();
  sub->add_option("--seq", o->seq, "Tokens per sequence")->capture_default_str();
  sub->add_option("--accum", o->accum, "Micro-batches per step (gradient accumulation)")->capture_default_str();
  sub->add_option("--lr", o->lr, "Peak learning rate")->capture_default_str();
  sub->add_option("--min-lr-ratio", o->min_lr_ratio, "Cosine decay floor, as a fraction of --lr")->capture_default_str();
  sub->add_option("--warmup", o->warmup, "Linear warm-up steps")->capture_default_str();
  sub->add_option("--beta1", o->beta1, "AdamW beta1")->capture_default_str();
  sub->add_option("--beta2", o->beta2, "AdamW beta2")->capture_default_str();
  sub->add_option("--eps", o->eps, "AdamW epsilon")->capture_default_str();
  sub->add_option("--weight-decay", o->weight_decay, "AdamW weight decay (not on norms)")->capture_default_str();
  sub->add_option("--clip", o->clip, "Clip the global grad norm of all but the STEM tables (0: off)")->capture_default_str();
  sub->add_option("--clip-stem", o->clip_stem, "Clip the global grad norm of the STEM tables (0: off)")->capture_default_str();
  sub->add_option("--lr-tables", o->lr_tables, "Peak learning rate of the STEM tables (default: --lr)");
  sub->add_option("--warmup-tables", o->warmup_tables, "Warm-up steps of the STEM tables (default: --warmup)");
  sub->add_option("--wd-tables", o->weight_decay_tables, "Weight decay of the STEM tables (default: --weight-decay)");
  sub->add_option("--freeze-backbone-steps", o->freeze_backbone_steps,
                  "Train only the STEM tables for the first K steps (the backbone's schedule starts after)")
      ->capture_default_str();
  sub->add_option("--init-from", o->init_from,
                  "Start from this checkpoint's weights (model or run directory), fresh optimizer and schedule");
  sub->add_option("--rope-theta", o->rope_theta,
                  "RoPE base for this run, recorded in config.json; lets --seq exceed max_position_embeddings");
  sub->add_option("--teacher", o->teacher, "Distil from this model (same vocabulary), run forward only");
  sub->add_option("--distill-alpha", o->distill_alpha, "Weight of the distillation term: (1-A) CE + A T^2 KL")
      ->capture_default_str();
  sub->add_option("--distill-temperature", o->distill_temperature, "Softmax temperature T of the distillation term")
      ->capture_default_str();
  sub->add_option("--teacher-tables", o->teacher_tables, "Where the teacher's STEM tables live: ram, mmap or disk")
      ->check(CLI::IsMember({"ram", "mmap", "disk"}))
      ->capture_default_str();
  sub->add_flag("--doc-mask", o->doc_mask,
                "Attention stays inside each document of a window (boundaries at the data's BOS/EOS); "
                "positions restart at each document");
  sub->add_flag("--lazy-tables", o->lazy_tables, "Row-sparse (lazy) AdamW for the STEM tables");
  auto tables = std::make_shared<std::string>("ram");
  sub->add_option("--tables", *tables,
                  "Where the STEM tables and their moments live while training: ram, or disk (a row file; "
                  "needs --lazy-tables; each step's rows are fetched in the background)")
      ->check(CLI::IsMember({"ram", "disk"}))
      ->capture_default_str();
  sub->add_option("--tables-dir", o->tables_dir, "Directory of the disk tier's row file (default: --out)");
  sub->add_flag("--no-prefetch", [o](int64_t) { o->prefetch = false; },
                "Fetch each step's table rows when the step starts, not during the previous one (disk tier; "
                "several ranks with --lazy-tables)");
  sub->add_option("--zero", o->zero_stage,
                  "Several ranks: 1 shards the backbone's AdamW moments over them (ZeRO stage 1), 0 keeps "
                  "them whole on each")
      ->capture_default_str();
  auto precision = std::make_shared<std::string>("f32");
  sub->add_option("--precision", *precision,
                  "f32, or bf16: the linear layers and attention multiply in BF16 with F32 accumulation, beside F32 master "
                  "weights, moments, loss, norms and softmax (needs AVX512-BF16 or AMX; docs/precision.md)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  sub->add_option("--eval-every", o->eval_every, "Validation loss every N steps (0: only at the end)")->capture_default_str();
  sub->add_option("--eval-tokens", o->eval_tokens, "Held-out tokens per validation")->capture_default_str();
  sub->add_option("--save-every", o->save_every, "Checkpoint every N steps (and at the end)")->capture_default_str();
  sub->add_option("--keep", o->keep, "Checkpoints kept (0: all)")->capture_default_str();
  sub->add_option("--log-every", o->log_every, "metrics.jsonl line every N steps")->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of the initial weights and the data order")->capture_default_str();
  sub->add_flag("--resume", o->resume, "Continue from the run directory's latest checkpoint");
  sub->add_flag("--force", o->force, "Start over in a run directory that holds checkpoints");
  sub->add_option("--peak-gflops", o->peak_gflops, "GEMM peak for MFU (default: measured)");
  sub->add_flag("--json", *json, "One JSON line per step on stdout, and a final summary");
  add_command(sub, [o, json, tables, precision] {
    o->tables_on_disk = *tables == "disk";
    o->precision = *parse_precision(*precision);  // checked by IsMember
    if (o->config_path.empty() && o->init_from.empty())
      return fail("train", Status::error("give --config (a model config.json), or --init-from a checkpoint"));
    auto t = Trainer::create(*o);
    if (!t.ok()) {  // under mpirun: every rank ends, none waits for this one
      const int rc = fail("train", t.status());
      abort_all_ranks(rc);
      return rc;
    }
    StopRequest stop;
    // Several ranks (mpirun): rank 0 reports; the others stay quiet.
    const bool lead = (*t)->rank() == 0, many = (*t)->ranks() > 1;
    const bool tty = lead && isatty(STDERR_FILENO);
    if (lead && many)
      std::fprintf(stderr,
                   "%d ranks: global batch %ld sequences; each rank keeps %.1f MB of the STEM tables and %.1f MB "
                   "of the backbone's moments\n",
                   (*t)->ranks(), static_cast<long>(o->batch * o->accum * (*t)->ranks()),
                   (*t)->table_shard_bytes() / 1e6, (*t)->backbone_moment_bytes() / 1e6);
    if (lead && !many && o->zero_stage == 1)
      std::fprintf(stderr, "note: --zero 1 shards the moments over ranks (mpirun); one process keeps them all\n");
    if (lead && (*t)->start_step() > 0)
      std::fprintf(stderr, "resuming %s at step %ld\n", o->out_dir.c_str(), static_cast<long>((*t)->start_step()));
    double last_val = NAN, last_loss = 0;
    auto res = (*t)->run(
        [&](const StepRecord& r) {
          last_loss = r.loss;
          if (!std::isnan(r.val_loss)) last_val = r.val_loss;
          if (!lead) return;
          if (*json) {
            nlohmann::json j = {{"step", r.step}, {"loss", r.loss}, {"lr", r.lr}, {"lr_tables", r.lr_tables},
                                {"tokens_per_second", r.tokens_per_second}, {"mfu", r.mfu}};
            if (!o->teacher.empty()) j["ce"] = r.ce;
            if (!std::isnan(r.val_loss)) j["val_loss"] = r.val_loss;
            j["rss_bytes"] = process_memory().rss_bytes;
            if (o->tables_on_disk) j["table_wait_seconds"] = r.table_wait;
            if (many) {
              j["comm_bytes"] = r.comm_bytes;
              j["table_comm_bytes"] = r.table_comm_bytes;
            }
            std::printf("%s\n", j.dump().c_str());
            std::fflush(stdout);
          }
          const double eta = (r.steps - r.step) * (r.elapsed / std::max<int64_t>(1, r.step - (*t)->start_step()));
          char line[256];
          std::snprintf(line, sizeof line, "step %ld/%ld  loss %.4f%s  lr %.2e  %.0f tok/s  mfu %.0f%%  eta %s",
                        static_cast<long>(r.step), static_cast<long>(r.steps), r.loss,
                        std::isnan(last_val) ? "" : ("  val " + std::to_string(last_val).substr(0, 6)).c_str(),
                        r.lr, r.tokens_per_second, 100 * r.mfu, fmt_eta(eta).c_str());
          if (tty) std::fprintf(stderr, "\r%s   ", line);
          else if (!*json && (r.step % 10 == 0 || r.step == r.steps || !std::isnan(r.val_loss)))
            std::fprintf(stderr, "%s\n", line);
          if (tty && (!std::isnan(r.val_loss) || r.saved)) std::fprintf(stderr, "\n");
        },
        &stop.flag());
    if (tty) std::fprintf(stderr, "\n");
    if (!res.ok()) {
      const int rc = fail("train", res.status());
      abort_all_ranks(rc);
      return rc;
    }
    if (!lead) return *res == TrainEnd::Interrupted ? 128 + stop.signal() : 0;
    const std::string ck = (*t)->last_checkpoint();
    if (*json) {
      nlohmann::json j = {{"done", *res == TrainEnd::Finished}, {"checkpoint", ck}, {"loss", last_loss},
                          {"peak_rss_bytes", process_memory().peak_rss_bytes},
                          {"backbone_moment_bytes", (*t)->backbone_moment_bytes()}};
      if (!std::isnan(last_val)) j["val_loss"] = last_val;
      const TableTierStats tt = (*t)->table_stats();
      if ((*t)->tables_on_disk())
        j["tables"] = {{"tier", "disk"}, {"prefetch", o->prefetch}, {"file_bytes", tt.file_bytes},
                       {"bytes_read", tt.bytes_read}, {"bytes_written", tt.bytes_written},
                       {"wait_seconds", tt.wait_seconds}, {"fetch_seconds", tt.fetch_seconds}};
      if (many)
        j["ranks"] = {{"n", (*t)->ranks()},
                      {"table_shard_bytes", (*t)->table_shard_bytes()},
                      {"dense_table_allreduce_bytes_per_step", (*t)->dense_table_allreduce_bytes()}};
      std::printf("%s\n", j.dump().c_str());
    }
    if (*res == TrainEnd::Interrupted) {
      std::fprintf(stderr, "stopped by %s at step %ld; saved %s (continue with --resume)\n",
                   signal_name(stop.signal()).c_str(), static_cast<long>((*t)->last_step()), ck.c_str());
      return 128 + stop.signal();
    }
    std::fprintf(stderr, "done: %s\n", ck.c_str());
    return 0;
  });
}

}  // namespace stem::cli
