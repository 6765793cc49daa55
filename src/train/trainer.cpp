// The training loop (see trainer.h).
#include "train/trainer.h"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <sstream>
#include <tuple>

#include "core/timer.h"
#include "dist/comm.h"
#include "io/files.h"
#include "io/token_shards.h"
#include "kernels/kernels.h"
#include "model/accounting.h"
#include "model/engine.h"
#include "model/transformer.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/grad_norm.h"
#include "train/root_gather.h"
#include "train/run_options.h"
#include "train/sharded_moments.h"
#include "train/shard_sources.h"
#include "train/sharded_tables.h"
#include "train/table_tier.h"

namespace stem {
using namespace train;
namespace fs = std::filesystem;

float lr_at(int64_t t, int64_t steps, int64_t warmup, float lr, float min_ratio) {
  if (warmup > 0 && t <= warmup) return lr * static_cast<float>(t) / static_cast<float>(warmup);
  const int64_t span = std::max<int64_t>(1, steps - warmup);
  const double progress = std::min(1.0, static_cast<double>(t - warmup) / static_cast<double>(span));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return static_cast<float>(lr * (min_ratio + (1.0 - min_ratio) * cosine));
}

struct Trainer::Impl {
  TrainOptions opt;
  ModelConfig cfg;
  io::DataDir data;
  std::unique_ptr<model::Transformer> tr;
  std::unique_ptr<AdamW> adam;
  std::unique_ptr<TableTier> tier;  // tables on disk; null when in memory
  Model teacher;                    // distillation: the teacher, forward only (empty without)
  bool distill = false;
  dist::Comm* comm = nullptr;       // the ranks training together (solo: one)
  int N = 1, rank = 0;
  std::unique_ptr<ShardedTables> shards;  // N > 1 and STEM layers: this rank's rows of the tables
  std::unique_ptr<ShardedMoments> zero;   // N > 1 and --zero 1: this rank's part of the backbone's moments
  Status eval_status;               // a disk tier's error in the last validation
  model::Gradients grads;
  // --accum > 1: one micro-batch's gradients, from zero, added into grads in
  // micro-batch order (add_micro), so that the step's gradient is
  // ((g_0 + g_1) + g_2) + ... of whole micro-batch gradients: what N ranks of
  // one micro-batch each sum in rank order (Comm's sums), bit for bit.
  model::Gradients micro;
  TrainerState st;
  std::mt19937_64 rng;          // data RNG, one step ahead (the next step is sampled early)
  std::mt19937_64 rng_at_step;  // as it was after sampling the current step: checkpoints save it
  int64_t start_step = 0;
  std::string last_ckpt;
  double peak = 0, flops_per_token = 0;
  std::vector<int32_t> batch_tokens;

  std::string metrics_path() const { return (fs::path(opt.out_dir) / "metrics.jsonl").string(); }

  void sample_windows(int32_t* out, int64_t n_windows) {
    const int64_t T = opt.seq, span = data.train.size() - T;
    std::uniform_int_distribution<int64_t> pick(0, span);
    for (int64_t w = 0; w < n_windows; ++w) data.train.read(pick(rng), T, out + w * T);
  }

  // Keeps the metrics of steps up to `step` (a resumed run rewrites the rest).
  Status trim_metrics(int64_t step) {
    std::ifstream in(metrics_path());
    if (!in) return ok_status();
    std::string line, kept;
    while (std::getline(in, line)) {
      try {
        if (nlohmann::json::parse(line).at("step").get<int64_t>() <= step) kept += line + "\n";
      } catch (...) {  // a line cut short by a crash
      }
    }
    return io::write_text_atomic(metrics_path(), kept);
  }

  Status append_metrics(const StepRecord& r) {
    nlohmann::json j = {{"step", r.step}, {"tokens", r.tokens}, {"loss", r.loss}, {"lr", r.lr}, {"lr_tables", r.lr_tables},
                        {"grad_norm", r.grad_norm}, {"grad_norm_stem", r.grad_norm_stem},
                        {"tokens_per_second", r.tokens_per_second}, {"mfu", r.mfu}, {"elapsed", r.elapsed}};
    if (!std::isnan(r.val_loss)) j["val_loss"] = r.val_loss;
    if (distill) j["ce"] = r.ce;
    if (N > 1) {
      j["comm_bytes"] = r.comm_bytes;
      j["table_comm_bytes"] = r.table_comm_bytes;
      if (shards) j["table_prefetch_bytes"] = r.table_prefetch_bytes;
    }
    std::ofstream out(metrics_path(), std::ios::app);
    out << j.dump() << "\n";
    if (!out) return Status::error(metrics_path() + ": write failed: " + std::strerror(errno));
    return ok_status();
  }

  // Global gradient norms: (everything but the STEM tables, the STEM tables),
  // each summed in grad_norm.h's order: the buckets' blocks, then the
  // row-sparse gradients' rows. Sharded tables give `sharded_ss`, sharded
  // moments `backbone_ss`, both already summed over ranks in that order.
  std::pair<double, double> grad_norms(double sharded_ss = 0, double backbone_ss = 0) const {
    const int64_t U = grads.index.n_unique();
    const kernels::Ops& k = tr->backend().ops();
    std::vector<double> terms, stem_terms;
    if (!zero)
      for (const Bucket& b : buckets) {
        terms.resize(terms.size() + norm_blocks(b.n));
        block_squares(k, b.data, b.n, terms.data() + terms.size() - norm_blocks(b.n));
      }
    for (size_t i = 0; i < grads.rows.size(); ++i) {
      if (grads.rows[i].empty()) continue;  // the dense ones are in the buckets
      const auto& s = grads.dense.spec(i);
      const bool table = s.kind == model::ParamKind::StemTable;
      if (table ? shards != nullptr : zero != nullptr) continue;
      std::vector<double>& t = table ? stem_terms : terms;
      t.resize(t.size() + U);
      row_squares(k, grads.rows[i].f32(), U, s.shape[1], t.data() + t.size() - U);
    }
    const double other = zero ? backbone_ss : ordered_total(terms);
    const double stem = shards ? sharded_ss : ordered_total(stem_terms);
    return {std::sqrt(other), std::sqrt(stem)};
  }

  // The dense gradients lie in one arena in list order (embedding, layer 0,
  // ..., layer L-1, norm and head), so consecutive ones of one backward stage
  // (Transformer::grad_stage) go in buckets of up to kBucketBytes, alignment
  // padding included (zeros). The gradient norm is summed bucket by bucket
  // (grad_norm.h), alone or not; several ranks sum the buckets. The last micro-batch's
  // backward starts a stage's buckets summing as soon as the stage is done
  // (start_buckets), so that the sums overlap the layers below it.
  struct Bucket {
    float* data;  // [n] a range of the gradient arena
    int64_t n;
    int stage;
  };
  std::vector<Bucket> buckets;
  Status overlap_status;  // the first failure to start a sum in a backward

  void plan_buckets() {
    constexpr int64_t kBucketBytes = 8 << 20;
    for (size_t i = 0; i < grads.dense.size(); ++i) {
      if (grads.dense[i].empty()) continue;
      float* g = grads.dense[i].f32();
      const int64_t n = grads.dense[i].numel();
      STEM_CHECK(grads.dense.spec(i).kind != model::ParamKind::StemTable);  // tables' gradients are rows
      const int stage = model::Transformer::grad_stage(grads.dense.spec(i), tr->n_layers());
      Bucket* b = buckets.empty() ? nullptr : &buckets.back();
      if (b && b->stage == stage && g >= b->data + b->n && (g + n - b->data) * 4 <= kBucketBytes) {
        b->n = g + n - b->data;
      } else {
        buckets.push_back({g, n, stage});
      }
    }
  }

  // Adds the micro-batch's gradients of `stage` into the step's (INT_MIN:
  // those of every stage not added yet).
  std::vector<char> micro_added;  // [tensors]
  void add_micro(int stage) {
    const kernels::Ops& k = tr->backend().ops();
    const int64_t U = grads.index.n_unique();
    micro_added.resize(grads.dense.size(), 0);
    for (size_t i = 0; i < grads.dense.size(); ++i) {
      const auto& s = grads.dense.spec(i);
      if (micro_added[i] || (stage != INT_MIN && model::Transformer::grad_stage(s, tr->n_layers()) != stage)) continue;
      micro_added[i] = 1;
      if (!grads.dense[i].empty()) k.add_inplace(grads.dense[i].f32(), micro.dense[i].f32(), grads.dense[i].numel());
      else if (!grads.rows[i].empty()) k.add_inplace(grads.rows[i].f32(), micro.rows[i].f32(), U * s.shape[1]);
    }
  }

  // The hook of the last micro-batch's backward: adds the stage's gradients
  // of that micro-batch into the step's (from_micro), starts the sums of its
  // buckets and lets those already started advance.
  void start_buckets(int stage, bool from_micro) {
    if (!overlap_status.ok()) return;
    overlap_status = tr->backend().stream().synchronize();  // the gradients are written
    if (from_micro) add_micro(stage);
    for (const Bucket& b : buckets) {
      if (b.stage != stage || !overlap_status.ok()) continue;
      const Status started =
          zero ? zero->start(static_cast<size_t>(&b - buckets.data())) : comm->start_all_reduce_sum(b.data, b.n);
      overlap_status = started.with_context("train: summing gradients");
    }
    // A STEM layer's row gradients go to their owners as soon as it is done.
    if (shards && overlap_status.ok() && stage >= 0 && stage < tr->n_layers() && tr->stem_slot(stage) >= 0)
      overlap_status = shards->start_reduce(tr->stem_slot(stage), grads);
    comm->progress();
  }

  // After the last backward: waits for the buckets' sums, sums the row-sparse
  // gradients (they share the global step's row layout) one by one, and the
  // sharded tables' rows at their owners. Returns the squared norms of the
  // sharded tables and of the sharded moments' backbone (0 without them),
  // the same on every rank.
  Result<std::pair<double, double>> reduce_grads() {
    const int64_t U = grads.index.n_unique();
    STEM_RETURN_IF_ERROR(overlap_status);
    STEM_RETURN_IF_ERROR(comm->wait_all().with_context("train: summing gradients"));
    for (size_t i = 0; i < grads.rows.size(); ++i) {
      const auto& s = grads.dense.spec(i);
      if (grads.rows[i].empty() || (shards && s.kind == model::ParamKind::StemTable)) continue;
      STEM_RETURN_IF_ERROR(
          comm->all_reduce_sum(grads.rows[i].f32(), U * s.shape[1]).with_context("train: summing gradients"));
    }
    double ss[2] = {0, 0};  // both global
    if (shards) STEM_RETURN_IF_ERROR(shards->reduce(grads, &ss[0]));
    if (zero) {
      STEM_ASSIGN_OR_RETURN(ss[1], zero->sum_squares());
    }
    return std::make_pair(ss[0], ss[1]);
  }

  // Validation: the batches of windows dealt round-robin to the ranks (all
  // of them to a process alone), each round's table rows fetched together
  // when the tables are sharded (every rank reads the round's windows then),
  // the sums added over ranks.
  double validation_loss(int64_t windows) {
    const int64_t T = opt.seq, B = opt.batch, batches = (windows + B - 1) / B;
    std::vector<std::vector<int32_t>> tok(N);
    double acc[2] = {0, 0};  // loss sum, positions
    for (int64_t round = 0; round * N < batches; ++round) {
      std::vector<std::span<const int32_t>> of(N);
      for (int s = 0; s < N; ++s) {
        const int64_t b = round * N + s, w0 = b * B, nb = b < batches ? std::min(B, windows - w0) : 0;
        tok[s].resize(static_cast<size_t>(nb * T));
        if (s == rank || shards)
          for (int64_t w = 0; w < nb; ++w) data.val.read((w0 + w) * T, T, tok[s].data() + w * T);
        of[s] = tok[s];
      }
      if (shards) eval_status = shards->fetch(of);
      const int64_t nb = static_cast<int64_t>(tok[rank].size()) / T;
      if (tier && nb > 0) eval_status = tier->use_for_eval(tok[rank].data(), nb * T);
      if (!eval_status.ok()) return NAN;
      if (nb == 0) continue;
      if (shards) shards->use(tok[rank].data(), 0, nb * T);
      acc[0] += tr->forward(tok[rank].data(), nb, T) * static_cast<double>(nb * (T - 1));
      acc[1] += static_cast<double>(nb * (T - 1));
    }
    if (shards) shards->release();
    eval_status = comm->all_reduce_sum(acc, 2).with_context("train: validation");
    return eval_status.ok() ? acc[0] / acc[1] : NAN;
  }

  void scale_grads(bool stem_group, float factor) {
    if (stem_group && shards) return shards->scale(factor);
    if (!stem_group && zero) return zero->scale(factor);
    const int64_t U = grads.index.n_unique();
    const kernels::Ops& k = tr->backend().ops();
    for (size_t i = 0; i < grads.dense.size(); ++i) {
      const auto& s = grads.dense.spec(i);
      if ((s.kind == model::ParamKind::StemTable) != stem_group) continue;
      if (!grads.dense[i].empty()) k.scale_inplace(grads.dense[i].f32(), grads.dense[i].numel(), factor);
      else if (!grads.rows[i].empty()) k.scale_inplace(grads.rows[i].f32(), U * s.shape[1], factor);
    }
  }

  // The teacher of distillation, its tables where the options say; its
  // vocabulary must be this model's and its positions cover --seq.
  Status load_teacher() {
    LoadOptions lo;
    STEM_ASSIGN_OR_RETURN(lo.tables, parse_tables_in(opt.teacher_tables));
    STEM_ASSIGN_OR_RETURN(teacher, Model::load(opt.teacher, lo));
    const ModelConfig& tc = teacher.config();
    const std::string where = "--teacher " + teacher.dir() + ": ";
    if (tc.vocab_size != cfg.vocab_size)
      return Status::error(where + "vocab_size = " + std::to_string(tc.vocab_size) + ", the student's is " +
                           std::to_string(cfg.vocab_size) + " (distillation compares distributions over one vocabulary)");
    if (tc.max_position_embeddings < opt.seq)
      return Status::error(where + "max_position_embeddings = " + std::to_string(tc.max_position_embeddings) +
                           " is shorter than --seq " + std::to_string(opt.seq));
    if (opt.doc_mask) engine(teacher).set_doc_mask(data.bos_id, data.eos_id);  // it sees what the student sees
    distill = true;
    return ok_status();
  }

  // Runs the teacher on one micro-batch and hands its logits to the student's next forward.
  Status teacher_forward(const int32_t* tokens) {
    model::Transformer& t = engine(teacher);
    STEM_RETURN_IF_ERROR(t.prepare_rows(tokens, opt.batch * opt.seq).with_context("--teacher"));
    t.forward(tokens, opt.batch, opt.seq);
    tr->set_teacher(t.logits(), opt.distill_alpha, opt.distill_temperature);
    return ok_status();
  }

  Status save() {
    // The state is saved as it is (no lazy flush in place): a save never
    // changes the numbers of the run, wherever it happens. Several ranks:
    // rank 0 writes, gathering the tables' rows from their owners.
    StateStream from_disk;
    if (tier) from_disk = [this](size_t i, int kind, const io::ByteSink& sink) { return tier->stream(i, kind, sink); };
    const bool spread = shards || zero;
    if (shards) STEM_RETURN_IF_ERROR(shards->merge_last_steps());
    const GatherPart part = [this](size_t i, int kind, const io::ByteSink* sink) {
      return shards && shards->holds(i) ? shards->gather(i, kind, sink) : zero->gather(i, kind, sink);
    };
    if (rank != 0) return spread ? serve_gathers(*comm, part) : ok_status();
    if (spread) from_disk = root_stream(*comm, part);
    std::ostringstream r;
    r << rng_at_step;
    st.data_rng = r.str();
    Status s = save_checkpoint(opt.out_dir, cfg, tr->weights(), data.tokenizer_path, *adam, st, opt.keep, from_disk);
    if (spread) s = end_gathers(*comm, s);
    if (!s.ok()) return s;
    auto latest = latest_checkpoint(opt.out_dir);
    if (latest.ok()) last_ckpt = *latest;
    return ok_status();
  }
};

Trainer::Trainer() : impl_(std::make_unique<Impl>()) {}
Trainer::~Trainer() = default;
int64_t Trainer::start_step() const { return impl_->start_step; }
int64_t Trainer::last_step() const { return impl_->st.step; }
const ModelConfig& Trainer::config() const { return impl_->cfg; }
std::string Trainer::last_checkpoint() const { return impl_->last_ckpt; }

Result<std::unique_ptr<Trainer>> Trainer::create(const TrainOptions& o) {
  std::unique_ptr<Trainer> t(new Trainer());
  Impl& I = *t->impl_;
  I.opt = resolve_groups(o);
  STEM_RETURN_IF_ERROR(check_option_ranges(I.opt));
  std::string init_dir;
  if (!o.init_from.empty()) {
    STEM_ASSIGN_OR_RETURN(init_dir, resolve_model_dir(o.init_from));
  }
  std::string cfg_name = o.config_path.empty() ? std::string("train: config") : o.config_path;
  if (o.config_path.empty() && !init_dir.empty()) {
    cfg_name = (fs::path(init_dir) / "config.json").string();
    STEM_ASSIGN_OR_RETURN(I.cfg, ModelConfig::load(cfg_name));
  } else if (o.config_path.empty()) {
    STEM_RETURN_IF_ERROR(o.config.validate().with_context("train: config"));
    I.cfg = o.config;
  } else {
    STEM_ASSIGN_OR_RETURN(I.cfg, ModelConfig::load(o.config_path));
  }
  STEM_ASSIGN_OR_RETURN(I.data, io::DataDir::open(o.data_dir));
  if (I.cfg.vocab_size != I.data.vocab_size)
    return Status::error(cfg_name + ": vocab_size = " + std::to_string(I.cfg.vocab_size) +
                         " does not match the data's vocabulary of " + std::to_string(I.data.vocab_size) +
                         " (" + o.data_dir + ")");
  if (o.rope_theta > 0) {
    I.cfg.rope_theta = o.rope_theta;
    I.cfg.max_position_embeddings = std::max(I.cfg.max_position_embeddings, o.seq);
  }
  if (o.seq > I.cfg.max_position_embeddings)
    return Status::error("train: --seq " + std::to_string(o.seq) + " exceeds max_position_embeddings = " +
                         std::to_string(I.cfg.max_position_embeddings) + " of " + cfg_name +
                         " (to train longer, give a RoPE base for the new length with --rope-theta)");
  if (I.data.train.size() < o.seq)
    return Status::error(o.data_dir + ": the training split has " + std::to_string(I.data.train.size()) +
                         " tokens, fewer than --seq " + std::to_string(o.seq));

  STEM_ASSIGN_OR_RETURN(I.comm, dist::world());
  I.N = I.comm->size();
  I.rank = I.comm->rank();

  // The run directory is rank 0's to change (latest_checkpoint also clears
  // stray temporaries); the others read it after.
  std::error_code ec;
  std::string ckpt;
  if (I.rank == 0) {
    STEM_ASSIGN_OR_RETURN(ckpt, latest_checkpoint(o.out_dir));
  }
  STEM_RETURN_IF_ERROR(I.comm->barrier().with_context("train"));
  if (I.rank != 0) {
    STEM_ASSIGN_OR_RETURN(ckpt, latest_checkpoint(o.out_dir));
  }
  if (!ckpt.empty() && !o.resume && !o.force)
    return Status::error(o.out_dir + ": already holds checkpoints (use --resume to continue, --force to start over)");
  if (!ckpt.empty() && o.force && !o.resume) {
    if (I.rank == 0) {
      fs::remove_all(fs::path(o.out_dir) / "checkpoints", ec);
      fs::remove(fs::path(o.out_dir) / "latest", ec);
      fs::remove(fs::path(o.out_dir) / "metrics.jsonl", ec);
    }
    ckpt.clear();
  }
  if (I.rank == 0) fs::create_directories(o.out_dir, ec);
  if (ec) return Status::error(o.out_dir + ": cannot create: " + ec.message());
  STEM_RETURN_IF_ERROR(I.comm->barrier().with_context("train"));

  if (o.tables_on_disk && !o.lazy_tables)
    return Status::error("train: --tables disk needs --lazy-tables (only the rows of a step come off disk, "
                         "so only they can move)");
  if (o.tables_on_disk && !I.cfg.has(FfnType::Stem))
    return Status::error(cfg_name + ": no STEM layers, nothing for --tables disk to keep on disk");
  // STEM tables get storage of their own, outside the arena, so that the disk
  // tier can free them. Several ranks never hold them whole: each reads or
  // draws its own rows of them (ShardedTables).
  const bool shard_tables = I.N > 1 && I.cfg.has(FfnType::Stem);
  auto not_table = [](const model::TensorSpec& s) { return s.kind != model::ParamKind::StemTable; };
  model::TensorList w = model::TensorList::allocate(model::tensor_specs(I.cfg), not_table);
  for (size_t i = 0; i < w.size(); ++i)
    if (!not_table(w.spec(i)) && !shard_tables) w[i] = Tensor::zeros(DType::F32, w.spec(i).shape);
  model::init_weights(w, o.seed);
  if (!init_dir.empty() && ckpt.empty()) STEM_RETURN_IF_ERROR(load_initial_weights(init_dir, w));
  I.tr = std::make_unique<model::Transformer>(I.cfg, std::move(w));
  I.tr->set_tokenizer_path(I.data.tokenizer_path);
  if (o.precision == Precision::BF16) {
    if (!I.tr->backend().supports(kernels::Op::gemm_bf16, DType::BF16))
      return Status::error(
          "train: --precision bf16 needs a CPU that multiplies BF16 natively (AVX512-BF16 or AMX: AMD Zen 4 and "
          "later, Intel Xeon from Cooper Lake); this one has neither, or ONEDNN_MAX_CPU_ISA hides them, and "
          "would run BF16 products several times slower than F32: use --precision f32");
    STEM_RETURN_IF_ERROR(I.tr->set_precision(Precision::BF16).with_context("train"));
  }
  if (o.doc_mask) {
    if (I.data.bos_id < 0 && I.data.eos_id < 0)
      return Status::error(o.data_dir + "/data.json: no bos_id or eos_id, so --doc-mask finds no document boundaries");
    I.tr->set_doc_mask(I.data.bos_id, I.data.eos_id);
  }
  if (!o.teacher.empty()) STEM_RETURN_IF_ERROR(I.load_teacher());
  AdamWOptions ao;
  ao.beta1 = o.beta1;
  ao.beta2 = o.beta2;
  ao.eps = o.eps;
  ao.weight_decay = o.weight_decay;
  ao.weight_decay_tables = I.opt.weight_decay_tables;
  ao.lazy_rows = o.lazy_tables;
  // --zero 1: the backbone's moments are never whole here; each rank reads
  // or zeroes its parts of them (ShardedMoments).
  const bool zero = I.N > 1 && o.zero_stage == 1;
  ao.backbone_moments = !zero;
  I.adam = std::make_unique<AdamW>(I.tr->weights(), ao);
  const int64_t step_tokens = o.batch * o.seq * o.accum * I.N;  // the global step's
  I.grads = I.tr->make_gradients(std::min(step_tokens, I.cfg.vocab_size));
  if (o.accum > 1) I.micro = I.tr->make_gradients(std::min(step_tokens, I.cfg.vocab_size));
  I.plan_buckets();  // the norm's order, and several ranks' sums
  I.rng.seed(o.seed ^ 0x5DEECE66Dull);
  if (!ckpt.empty()) {
    STEM_RETURN_IF_ERROR(load_checkpoint(ckpt, I.cfg, I.tr->weights(), *I.adam, I.st).with_context("resume"));
    STEM_RETURN_IF_ERROR(check_resume_options(I.st.options, run_options_json(I.opt), ckpt));
    std::istringstream r(I.st.data_rng);
    r >> I.rng;
    if (r.fail()) return Status::error(ckpt + "/trainer_state.json: unreadable data_rng state");
    I.start_step = I.st.step;
    I.last_ckpt = ckpt;
  }
  const std::string disk_dir = !o.tables_on_disk ? "" : o.tables_dir.empty() ? o.out_dir : o.tables_dir;
  if (o.tables_on_disk && !shard_tables) {
    const std::string& dir = disk_dir;
    STEM_ASSIGN_OR_RETURN(I.tier, TableTier::create(*I.tr, *I.adam, dir, std::min(step_tokens, I.cfg.vocab_size),
                                                   o.prefetch));
  }
  if (shard_tables) {
    const ShardedTables::RowSource source = table_rows_source(ckpt, init_dir, o.seed, *I.tr, *I.adam);
    STEM_ASSIGN_OR_RETURN(I.shards, ShardedTables::create(*I.tr, *I.adam, *I.comm, source, disk_dir));
  }
  if (zero) {
    std::vector<ShardedMoments::Range> ranges;
    for (const Impl::Bucket& b : I.buckets) ranges.push_back({b.data, b.n});
    STEM_ASSIGN_OR_RETURN(I.zero, ShardedMoments::create(I.tr->weights(), I.grads, *I.adam, *I.comm, ranges,
                                                         moment_source(ckpt, I.tr->weights())));
  }
  I.st.options = run_options_json(I.opt);
  I.rng_at_step = I.rng;
  if (I.rank == 0) STEM_RETURN_IF_ERROR(I.trim_metrics(I.start_step));
  I.peak = o.peak_gflops > 0                        ? o.peak_gflops
           : o.precision == Precision::BF16 ? kernels::gemm_bf16_peak_gflops(2048, 3)
                                             : kernels::gemm_peak_gflops(2048, 3);
  I.flops_per_token = model::account(I.cfg, o.seq, o.seq).train_flops_per_token;
  return t;
}

bool Trainer::tables_on_disk() const { return impl_->tier || (impl_->shards && impl_->shards->file()); }
int Trainer::rank() const { return impl_->rank; }
int Trainer::ranks() const { return impl_->N; }
int64_t Trainer::table_shard_bytes() const { return impl_->shards ? impl_->shards->shard_bytes() : 0; }
int64_t Trainer::backbone_moment_bytes() const {
  if (impl_->zero) return impl_->zero->moment_bytes();
  int64_t n = 0;
  const model::TensorList& w = impl_->tr->weights();
  for (size_t i = 0; i < w.size(); ++i)
    if (w.spec(i).trainable && w.spec(i).kind != model::ParamKind::StemTable) n += 2 * shape_numel(w.spec(i).shape);
  return n * static_cast<int64_t>(sizeof(float));
}
int64_t Trainer::dense_table_allreduce_bytes() const {
  return impl_->shards ? impl_->shards->dense_allreduce_bytes() : 0;
}
void abort_all_ranks(int code) { dist::abort_world(code); }
TableTierStats Trainer::table_stats() const {
  if (impl_->tier) return impl_->tier->stats();
  TableTierStats s;  // a rank's shard in a row file: its traffic (no background reads)
  if (const memory::RowFile* f = impl_->shards ? impl_->shards->file() : nullptr) {
    s.bytes_read = f->bytes_read();
    s.bytes_written = f->bytes_written();
    s.file_bytes = f->file_bytes();
  }
  return s;
}

double Trainer::validation_loss() {
  Impl& I = *impl_;
  const int64_t T = I.opt.seq;
  const int64_t windows = std::min(I.data.val.size() / T, std::max<int64_t>(1, I.opt.eval_tokens / T));
  if (windows < 1) return NAN;
  return I.validation_loss(windows);
}

Result<TrainEnd> Trainer::run(const std::function<void(const StepRecord&)>& on_step,
                                const std::atomic<bool>* stop) {
  Impl& I = *impl_;
  const TrainOptions& o = I.opt;  // groups resolved
  // Each rank runs `accum` micro-batches of the global step's N * accum, in
  // rank order, so N ranks see what one process with N * accum does.
  const int64_t mb_tokens = o.batch * o.seq, rank_tokens = mb_tokens * o.accum, step_tokens = rank_tokens * I.N;
  const int64_t micro = o.accum * I.N;
  I.batch_tokens.resize(step_tokens);
  std::vector<int32_t> next_tokens(step_tokens);
  // The next step's windows are drawn before this step computes, so that a
  // disk tier can fetch their rows meanwhile; checkpoints keep the RNG as it
  // was after drawing the current step (rng_at_step), so resume is exact.
  auto sample_next = [&] {
    I.sample_windows(next_tokens.data(), o.batch * micro);
    if (I.tier) I.tier->submit(next_tokens.data(), step_tokens);
  };
  if (I.start_step < o.steps) sample_next();
  core::Timer since_start;
  for (int64_t step = I.start_step + 1; step <= o.steps; ++step) {
    core::Timer timer;
    std::swap(I.batch_tokens, next_tokens);
    I.rng_at_step = I.rng;
    const double wait0 = I.tier ? I.tier->stats().wait_seconds : 0.0;
    if (I.tier) STEM_RETURN_IF_ERROR(I.tier->begin_step());
    if (step < o.steps) sample_next();
    I.grads.begin_step(I.batch_tokens.data(), step_tokens, I.cfg.vocab_size);
    const int32_t* mine = I.batch_tokens.data() + I.rank * rank_tokens;
    const int64_t comm0 = I.comm->bytes_sent();
    const ShardTraffic traffic0 = I.shards ? I.shards->traffic() : ShardTraffic{};
    if (I.shards) {
      std::vector<std::span<const int32_t>> of(I.N);
      for (int s = 0; s < I.N; ++s) of[s] = {I.batch_tokens.data() + s * rank_tokens, static_cast<size_t>(rank_tokens)};
      STEM_RETURN_IF_ERROR(I.shards->fetch(of));
      // Lazy tables: the next step's rows that this one does not touch travel now.
      if (o.lazy_tables && o.prefetch && step < o.steps) {
        for (int s = 0; s < I.N; ++s)
          of[s] = {next_tokens.data() + s * rank_tokens, static_cast<size_t>(rank_tokens)};
        STEM_RETURN_IF_ERROR(I.shards->prefetch(of));
      }
    }
    auto not_finite = [&](double l) {
      return Status::error("train: loss is " + std::string(std::isnan(l) ? "NaN" : "Inf") + " at step " +
                           std::to_string(step) + "; stopping (last good checkpoint: " +
                           (I.last_ckpt.empty() ? std::string("none") : I.last_ckpt) +
                           "). Try a lower --lr or a longer --warmup.");
    };
    double loss = 0, ce = 0;
    for (int64_t a = 0; a < o.accum; ++a) {
      if (I.tier) I.tier->use(mine + a * mb_tokens, a * mb_tokens, mb_tokens);
      if (I.shards) I.shards->use(mine + a * mb_tokens, a * mb_tokens, mb_tokens);
      if (I.distill) STEM_RETURN_IF_ERROR(I.teacher_forward(mine + a * mb_tokens));
      const double l = I.tr->forward(mine + a * mb_tokens, o.batch, o.seq);
      if (I.N == 1 && !std::isfinite(l)) return not_finite(l);
      ce += I.tr->last_ce() / static_cast<double>(micro);
      const bool last = a + 1 == o.accum, into_micro = a > 0;
      model::Gradients& g = into_micro ? I.micro : I.grads;
      if (into_micro) {
        I.micro.index = I.grads.index;
        I.micro.step_open = true;
        I.micro.zero();
        I.micro_added.assign(I.grads.dense.size(), 0);
      }
      model::Transformer::GradsReady ready;
      if (I.N > 1 && last) ready = [&I, into_micro](int s) { I.start_buckets(s, into_micro); };
      I.tr->backward(g, 1.0f / static_cast<float>(micro), ready);
      if (into_micro) {  // without the hook, or stages it did not see
        STEM_RETURN_IF_ERROR(I.tr->backend().stream().synchronize());
        I.add_micro(INT_MIN);
      }
      loss += l / static_cast<double>(micro);
    }
    double norm = 0, norm_stem = 0;
    if (I.N > 1) {
      double sums[2] = {loss, ce};
      STEM_RETURN_IF_ERROR(I.comm->all_reduce_sum(sums, 2).with_context("train: the step's loss"));
      loss = sums[0], ce = sums[1];
      if (!std::isfinite(loss)) return not_finite(loss);
      STEM_ASSIGN_OR_RETURN(const auto sharded_ss, I.reduce_grads());
      std::tie(norm, norm_stem) = I.grad_norms(sharded_ss.first, sharded_ss.second);
    } else {
      std::tie(norm, norm_stem) = I.grad_norms();
    }
    if (o.clip > 0 && norm > o.clip) I.scale_grads(false, static_cast<float>(o.clip / norm));
    if (o.clip_stem > 0 && norm_stem > o.clip_stem) I.scale_grads(true, static_cast<float>(o.clip_stem / norm_stem));
    const GroupRates lr = group_rates(o, step);
    I.adam->step(I.tr->weights(), I.grads, lr.backbone, lr.tables);
    if (I.zero) STEM_RETURN_IF_ERROR(I.zero->step(lr.backbone));
    if (I.tier) STEM_RETURN_IF_ERROR(I.tier->end_step(I.grads, lr.tables));
    if (I.shards) {
      STEM_RETURN_IF_ERROR(I.shards->step(lr.tables));
      I.shards->release();
    }
    I.st.step = step;
    I.st.tokens += step_tokens;
    const double secs = timer.seconds();

    StepRecord r;
    r.step = step;
    r.steps = o.steps;
    r.tokens = I.st.tokens;
    r.loss = loss;
    r.ce = ce;
    r.lr = lr.backbone;
    r.lr_tables = lr.tables;
    r.grad_norm = norm;
    r.grad_norm_stem = norm_stem;
    r.tokens_per_second = static_cast<double>(step_tokens) / secs;
    r.mfu = I.flops_per_token * r.tokens_per_second / (I.peak * 1e9);
    if (I.tier) r.table_wait = I.tier->stats().wait_seconds - wait0;
    r.comm_bytes = I.comm->bytes_sent() - comm0;
    if (I.shards) {
      const ShardTraffic t = I.shards->traffic();
      r.table_comm_bytes = t.fetch_bytes - traffic0.fetch_bytes + t.grad_bytes - traffic0.grad_bytes;
      r.table_prefetch_bytes = t.prefetch_bytes - traffic0.prefetch_bytes;
    }
    if ((o.eval_every > 0 && step % o.eval_every == 0) || step == o.steps) {
      r.val_loss = validation_loss();
      STEM_RETURN_IF_ERROR(I.eval_status);
      if (!std::isnan(r.val_loss)) I.st.last_val_loss = r.val_loss;
    }
    r.elapsed = since_start.seconds();
    if (I.rank == 0 && o.log_every > 0 && (step % o.log_every == 0 || step == o.steps || !std::isnan(r.val_loss)))
      STEM_RETURN_IF_ERROR(I.append_metrics(r));
    if ((o.save_every > 0 && step % o.save_every == 0) || step == o.steps) {
      STEM_RETURN_IF_ERROR(I.save());
      r.saved = true;
    }
    if (on_step) on_step(r);
    int32_t stopping = stop && stop->load() ? 1 : 0;  // every rank stops at the same step
    if (I.N > 1) STEM_RETURN_IF_ERROR(I.comm->all_reduce_max(&stopping, 1).with_context("train"));
    if (stopping && step < o.steps) {  // a signal during this step: save it and stop
      if (!r.saved) STEM_RETURN_IF_ERROR(I.save());
      return TrainEnd::Interrupted;
    }
  }
  return TrainEnd::Finished;
}

Result<std::vector<StepRecord>> read_metrics(const std::string& run_dir) {
  const std::string path = (fs::path(run_dir) / "metrics.jsonl").string();
  std::ifstream in(path);
  if (!in) return Status::error(path + ": cannot open (not a training run directory?)");
  std::vector<StepRecord> out;
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("step") || !j.contains("loss")) continue;  // cut short by a crash
    StepRecord r;
    try {  // a field of another type (get() and value() throw): not a line of ours
      r.step = j["step"].get<int64_t>();
      r.tokens = j.value("tokens", int64_t{0});
      r.loss = j["loss"].get<double>();
      r.val_loss = j.value("val_loss", static_cast<double>(NAN));
      r.lr = j.value("lr", 0.0);
      r.grad_norm = j.value("grad_norm", 0.0);
      r.grad_norm_stem = j.value("grad_norm_stem", 0.0);
      r.tokens_per_second = j.value("tokens_per_second", 0.0);
      r.mfu = j.value("mfu", 0.0);
      r.elapsed = j.value("elapsed", 0.0);
    } catch (const nlohmann::json::exception&) {
      continue;
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace stem
