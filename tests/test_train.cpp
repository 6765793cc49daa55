// Training: exact resume (in process, and with `stem train` killed by SIGKILL
// at several moments), NaN stop keeping the last good checkpoint, the learning
// rate schedule, lazy AdamW against hand-computed catch-up and against dense
// AdamW when every row is touched, gradient accumulation across micro-batches,
// and bad input. Uses a tiny corpus prepared once per test binary.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "kernels/kernels.h"
#include "model/engine.h"
#include "model/transformer.h"
#include "stem/model.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace stem {
namespace {
namespace fs = std::filesystem;
using test::metrics_losses;
using test::run_losses;
using test::scratch;
using test::sh;
using test::tiny;

train::TrainOptions base_options(const std::string& out) {
  train::TrainOptions o;
  o.config_path = tiny().config;
  o.data_dir = tiny().data;
  o.out_dir = out;
  o.steps = 8;
  o.batch = 2;
  o.seq = 32;
  o.accum = 2;
  o.lr = 3e-3f;
  o.warmup = 2;
  o.eval_every = 4;
  o.eval_tokens = 256;
  o.save_every = 3;
  o.keep = 0;
  o.peak_gflops = 100;
  o.force = true;
  return o;
}

TEST(TrainSchedule, WarmupThenCosineToFloor) {
  EXPECT_FLOAT_EQ(train::lr_at(1, 100, 10, 1.0f, 0.1f), 0.1f);
  EXPECT_FLOAT_EQ(train::lr_at(10, 100, 10, 1.0f, 0.1f), 1.0f);
  EXPECT_NEAR(train::lr_at(55, 100, 10, 1.0f, 0.1f), 0.55f, 1e-6);  // cosine midpoint
  EXPECT_FLOAT_EQ(train::lr_at(100, 100, 10, 1.0f, 0.1f), 0.1f);
}

TEST(TrainResume, ResumedRunEqualsUninterrupted) {
  for (bool lazy : {false, true}) {
    train::TrainOptions o = base_options((scratch() / (lazy ? "ra_lazy" : "ra")).string());
    o.lazy_tables = lazy;
    const auto full = run_losses(o);
    ASSERT_EQ(full.size(), 8u);
    // interrupted after step 6 (a checkpoint at 6), then resumed
    train::TrainOptions b = o;
    b.out_dir = (scratch() / (lazy ? "rb_lazy" : "rb")).string();
    const auto first = run_losses(b, 6);
    ASSERT_EQ(first.size(), 6u);
    b.resume = true;
    b.force = false;
    const auto rest = run_losses(b);
    ASSERT_EQ(rest.size(), 2u);
    for (const auto& [step, loss] : first) EXPECT_EQ(loss, full.at(step)) << "step " << step;
    for (const auto& [step, loss] : rest) EXPECT_EQ(loss, full.at(step)) << "lazy " << lazy << " step " << step;
  }
}

TEST(TrainResume, KillNineAtAnyMomentThenResume) {
  const std::string common = std::string(STEM_BINARY) + " train --config " + tiny().config + " --data " +
                             tiny().data + " --steps 60 --batch 2 --seq 32 --save-every 2 --keep 2 "
                             "--eval-every 0 --eval-tokens 128 --peak-gflops 100 --lr 3e-3";
  const fs::path ref = scratch() / "kill_ref";
  ASSERT_EQ(sh(common + " --out " + ref.string() + " > /dev/null 2>&1"), 0);
  const auto want = metrics_losses(ref);
  ASSERT_EQ(want.size(), 60u);

  const fs::path run = scratch() / "kill_run";
  std::mt19937 rng(5);
  int killed_mid_run = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const pid_t pid = fork();
    if (pid == 0) {
      const std::string cmd = common + " --out " + run.string() + " --resume > /dev/null 2>&1";
      execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(40 + rng() % 300));
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    // every named checkpoint loads as a model
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(run / "checkpoints", ec))
      if (e.path().filename().string().rfind("step-", 0) == 0) {
        auto m = Model::load(e.path().string());
        EXPECT_TRUE(m.ok()) << e.path() << ": " << m.status().message();
      }
    killed_mid_run += metrics_losses(run).size() < 60;
  }
  EXPECT_GE(killed_mid_run, 2) << "the kills came too late to test anything";
  ASSERT_EQ(sh(common + " --out " + run.string() + " --resume > /dev/null 2>&1"), 0);
  const auto got = metrics_losses(run);
  ASSERT_EQ(got.size(), 60u);
  for (const auto& [step, loss] : want) EXPECT_EQ(got.at(step), loss) << "step " << step;
}

TEST(TrainResume, SigintSavesThenResumeFinishes) {
  const fs::path run = scratch() / "sigint";
  const std::string cmd = std::string(STEM_BINARY) + " train --config " + tiny().config + " --data " + tiny().data +
                          " --out " + run.string() + " --steps 100000 --batch 2 --seq 32 --save-every 0"
                          " --eval-every 0 --peak-gflops 100";
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd + " > /dev/null 2>&1").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // wait until it is training (metrics appear), then interrupt it
  for (int i = 0; i < 300 && !fs::exists(run / "metrics.jsonl"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ::kill(pid, SIGINT);
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 130);
  auto latest = train::latest_checkpoint(run.string());
  ASSERT_TRUE(latest.ok());
  ASSERT_FALSE(latest->empty()) << "no checkpoint saved on SIGINT";
  EXPECT_TRUE(Model::load(*latest).ok());
  const int64_t saved = metrics_losses(run).rbegin()->first;
  EXPECT_NE(latest->find("step-" + std::string(8 - std::to_string(saved).size(), '0') + std::to_string(saved)),
            std::string::npos)
      << *latest << " vs last logged step " << saved;
}

TEST(TrainFailures, NanLossStopsAndKeepsLastCheckpoint) {
  const fs::path run = scratch() / "nan";
  const std::string cmd = std::string(STEM_BINARY) + " train --config " + tiny().config + " --data " +
                          tiny().data + " --out " + run.string() +
                          " --steps 40 --batch 2 --seq 32 --save-every 1 --eval-every 0 --peak-gflops 100"
                          " --lr 1e4 --warmup 0 --clip 0 --clip-stem 0 2>" + (scratch() / "nan.err").string();
  EXPECT_EQ(sh(cmd + " > /dev/null"), 1);
  std::ifstream e(scratch() / "nan.err");
  std::string err((std::istreambuf_iterator<char>(e)), {});
  EXPECT_NE(err.find("loss is"), std::string::npos) << err;
  auto latest = train::latest_checkpoint(run.string());
  ASSERT_TRUE(latest.ok());
  ASSERT_FALSE(latest->empty()) << err;
  auto m = Model::load(*latest);
  EXPECT_TRUE(m.ok()) << m.status().message();
}

TEST(TrainFailures, BadInputsAreClearErrors) {
  train::TrainOptions o = base_options((scratch() / "bad").string());
  o.data_dir = (scratch() / "no_such_data").string();
  auto t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("no_such_data"), std::string::npos) << t.status().message();

  o = base_options((scratch() / "bad").string());
  const std::string cfg = (scratch() / "wrong_vocab.json").string();
  std::ofstream(cfg) << R"({"model_type": "stem", "vocab_size": 500, "hidden_size": 16,
      "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
      "num_key_value_heads": 2, "max_position_embeddings": 64, "rope_theta": 10000.0,
      "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "ffn_types": ["stem"], "num_hash_experts": 0})";
  o.config_path = cfg;
  t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("vocab_size = 500 does not match the data's vocabulary of 400"),
            std::string::npos)
      << t.status().message();

  o = base_options((scratch() / "bad").string());
  o.seq = 65;
  EXPECT_FALSE(train::Trainer::create(o).ok());

  // a run directory with checkpoints is not overwritten silently
  o = base_options((scratch() / "existing").string());
  run_losses(o);
  o.force = false;
  t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("--resume"), std::string::npos);
}

TEST(TrainAccumulation, TwoMicroBatchesEqualOneBatchOfTwo) {
  // Loss-scaled accumulation over micro-batches gives the gradient of the big batch.
  ModelConfig c;
  c.vocab_size = 40; c.hidden_size = 16; c.intermediate_size = 24; c.num_hidden_layers = 2;
  c.num_attention_heads = 2; c.num_key_value_heads = 1; c.max_position_embeddings = 16;
  c.ffn_types = {FfnType::Stem, FfnType::Dense};
  auto m = Model::init(c, 9);
  auto& tr = engine(*m);
  std::vector<int32_t> toks(2 * 8);
  std::mt19937 rng(3);
  for (auto& t : toks) t = static_cast<int32_t>(rng() % 40);
  model::Gradients a = tr.make_gradients(16), b = tr.make_gradients(16);
  a.begin_step(toks.data(), 16, 40);
  tr.forward(toks.data(), 2, 8);
  tr.backward(a);
  b.begin_step(toks.data(), 16, 40);
  for (int mb = 0; mb < 2; ++mb) {
    tr.forward(toks.data() + mb * 8, 1, 8);
    tr.backward(b, 0.5f);
  }
  for (size_t i = 0; i < tr.weights().size(); ++i) {
    if (!tr.weights().spec(i).trainable) continue;
    const auto ga = a.dense_copy(i), gb = b.dense_copy(i);
    for (size_t k = 0; k < ga.size(); ++k) ASSERT_NEAR(ga[k], gb[k], 1e-5f + 1e-4f * std::abs(ga[k])) << tr.weights().spec(i).name;
  }
}

TEST(TrainOverlap, EachBackwardStageIsFinalWhenAnnounced) {
  // The trainer starts summing a stage's gradients over the ranks when
  // backward() announces it: every tensor of that stage must hold its final
  // value then, and the stages come once each, head first, embedding last.
  for (const bool tied : {false, true}) {
    ModelConfig c;
    c.vocab_size = 40; c.hidden_size = 16; c.intermediate_size = 24; c.num_hidden_layers = 3;
    c.num_attention_heads = 2; c.num_key_value_heads = 1; c.max_position_embeddings = 16;
    c.ffn_types = {FfnType::Dense, FfnType::Stem, FfnType::HashMoe};
    c.num_hash_experts = 2;
    c.tie_word_embeddings = tied;
    auto m = Model::init(c, 5);
    ASSERT_TRUE(m.ok());
    auto& tr = engine(*m);
    std::vector<int32_t> toks(2 * 8);
    std::mt19937 rng(4);
    for (auto& t : toks) t = static_cast<int32_t>(rng() % 40);
    model::Gradients g = tr.make_gradients(16);
    g.begin_step(toks.data(), 16, 40);
    tr.forward(toks.data(), 1, 8);
    tr.backward(g, 0.5f);  // an earlier micro-batch: its sums are in g already
    tr.forward(toks.data() + 8, 1, 8);
    std::vector<int> order;
    std::map<size_t, std::vector<float>> at_announce;
    tr.backward(g, 0.5f, [&](int stage) {
      order.push_back(stage);
      for (size_t i = 0; i < tr.weights().size(); ++i)
        if (tr.weights().spec(i).trainable && model::Transformer::grad_stage(tr.weights().spec(i), 3) == stage)
          at_announce[i] = g.dense_copy(i);
    });
    EXPECT_EQ(order, (std::vector<int>{3, 2, 1, 0, -1})) << "tied " << tied;
    size_t seen = 0;
    for (size_t i = 0; i < tr.weights().size(); ++i) {
      if (!tr.weights().spec(i).trainable) continue;
      ASSERT_TRUE(at_announce.count(i)) << tr.weights().spec(i).name << " never announced";
      const auto final_value = g.dense_copy(i);
      ASSERT_EQ(at_announce[i].size(), final_value.size());
      for (size_t k = 0; k < final_value.size(); ++k)
        ASSERT_EQ(at_announce[i][k], final_value[k]) << tr.weights().spec(i).name << " changed after its stage, tied " << tied;
      ++seen;
    }
    EXPECT_GT(seen, 10u);
  }
}

TEST(TrainLazyAdamW, CatchUpMatchesHandComputation) {
  // One table [R=3, C=2]; row 1 touched at steps 1 and 4, skipped at 2 and 3.
  model::TensorSpec s;
  s.name = "t";
  s.shape = {3, 2};
  s.kind = model::ParamKind::StemTable;
  s.row_sparse = true;
  model::TensorList w = model::TensorList::allocate({s});
  for (int i = 0; i < 6; ++i) w[0].f32()[i] = 0.5f + 0.1f * i;
  train::AdamWOptions ao;
  ao.lazy_rows = true;
  ao.weight_decay = 0.1f;
  train::AdamW opt(w, ao);
  model::Gradients g;
  g.dense = model::TensorList::allocate({s}, [](const model::TensorSpec&) { return false; });
  g.rows = {Tensor::zeros(DType::F32, {3, 2})};
  const float lrs[4] = {0.1f, 0.2f, 0.3f, 0.4f};
  // reference: double precision, explicit per-step catch-up
  double p = 0.5 + 0.1 * 2, p2 = 0.5 + 0.1 * 3, m = 0, v = 0, m2 = 0, v2 = 0;
  const double b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  auto adam = [&](double& p_, double& m_, double& v_, double gr, int t, double lr) {
    p_ *= 1 - lr * wd;
    m_ = b1 * m_ + (1 - b1) * gr;
    v_ = b2 * v_ + (1 - b2) * gr * gr;
    p_ -= lr / (1 - std::pow(b1, t)) * m_ / (std::sqrt(v_) / std::sqrt(1 - std::pow(b2, t)) + eps);
  };
  for (int t = 1; t <= 4; ++t) {
    const bool touch = t == 1 || t == 4;
    g.index = kernels::RowIndex{};
    if (touch) {
      const int32_t id = 1;
      g.index = kernels::build_row_index(&id, 1, 3);
      g.rows[0].f32()[0] = 0.3f * t;
      g.rows[0].f32()[1] = -0.2f * t;
      adam(p, m, v, 0.3 * t, t, lrs[t - 1]);
      adam(p2, m2, v2, -0.2 * t, t, lrs[t - 1]);
    } else {  // skipped: decay only
      p *= 1 - lrs[t - 1] * wd; m *= b1; v *= b2;
      p2 *= 1 - lrs[t - 1] * wd; m2 *= b1; v2 *= b2;
    }
    opt.step(w, g, lrs[t - 1]);
  }
  EXPECT_NEAR(w[0].f32()[2], p, 1e-6);
  EXPECT_NEAR(w[0].f32()[3], p2, 1e-6);
  // untouched row 0 still holds its initial value until flushed, then only decays
  EXPECT_EQ(w[0].f32()[0], 0.5f);
  opt.flush(w);
  double decay = 1;
  for (float lr : lrs) decay *= 1 - lr * wd;
  EXPECT_NEAR(w[0].f32()[0], 0.5 * decay, 1e-6);
}

TEST(TrainLazyAdamW, EqualsDenseWhenEveryRowIsTouched) {
  model::TensorSpec s;
  s.name = "t";
  s.shape = {4, 3};
  s.kind = model::ParamKind::StemTable;
  s.row_sparse = true;
  model::TensorList wl = model::TensorList::allocate({s}), wd = model::TensorList::allocate({s});
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int i = 0; i < 12; ++i) wl[0].f32()[i] = wd[0].f32()[i] = u(rng);
  train::AdamWOptions lazy;
  lazy.lazy_rows = true;
  train::AdamW ol(wl, lazy), od(wd, train::AdamWOptions{});
  model::Gradients g;
  g.dense = model::TensorList::allocate({s}, [](const model::TensorSpec&) { return false; });
  g.rows = {Tensor::zeros(DType::F32, {4, 3})};
  const int32_t ids[4] = {3, 0, 2, 1};
  g.index = kernels::build_row_index(ids, 4, 4);
  for (int t = 1; t <= 5; ++t) {
    for (int i = 0; i < 12; ++i) g.rows[0].f32()[i] = u(rng);
    ol.step(wl, g, 0.01f * t);
    od.step(wd, g, 0.01f * t);
  }
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(wl[0].f32()[i], wd[0].f32()[i], 1e-7f);
}


// ---------------------------------------------------------------- tables on disk

// Two STEM layers, so that the row file's per-layer offsets are exercised.
std::string two_stem_config() {
  const std::string path = (scratch() / "two_stem.json").string();
  std::ofstream(path) << R"({"model_type": "stem", "vocab_size": 400, "hidden_size": 32,
      "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
      "num_key_value_heads": 2, "max_position_embeddings": 64, "rope_theta": 10000.0,
      "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
      "ffn_types": ["stem", "dense", "stem"], "num_hash_experts": 0})";
  return path;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct RunTrace {
  std::map<int64_t, double> loss, val;
};

RunTrace run_trace(const train::TrainOptions& o, int64_t stop_after = 0) {
  auto t = train::Trainer::create(o);
  EXPECT_TRUE(t.ok()) << t.status().message();
  RunTrace tr;
  if (!t.ok()) return tr;
  std::atomic<bool> stop{false};
  auto r = (*t)->run(
      [&](const train::StepRecord& rec) {
        tr.loss[rec.step] = rec.loss;
        if (!std::isnan(rec.val_loss)) tr.val[rec.step] = rec.val_loss;
        if (stop_after && rec.step == stop_after) stop = true;
      },
      &stop);
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (o.tables_on_disk) {
    const auto tt = (*t)->table_stats();
    EXPECT_TRUE((*t)->tables_on_disk());
    EXPECT_GT(tt.bytes_read, 0);
    EXPECT_GT(tt.bytes_written, 0);
  }
  return tr;
}

TEST(TrainTablesOnDisk, SameLossesAndCheckpointsAsInMemory) {
  // Lazy AdamW with the tables in memory is the reference; the disk tier, with
  // prefetch on (rows staged a step ahead, then re-staged) or off, must compute
  // the same numbers bit for bit, and write the same checkpoint files.
  train::TrainOptions ram = base_options((scratch() / "disk_ref").string());
  ram.config_path = two_stem_config();
  ram.lazy_tables = true;
  const RunTrace ref = run_trace(ram);
  ASSERT_EQ(ref.loss.size(), 8u);
  ASSERT_FALSE(ref.val.empty());
  const fs::path ref_ckpt = fs::path(ram.out_dir) / "checkpoints" / "step-00000008";
  for (bool prefetch : {true, false}) {
    train::TrainOptions disk = ram;
    disk.out_dir = (scratch() / (prefetch ? "disk_pf" : "disk_sync")).string();
    disk.tables_on_disk = true;
    disk.prefetch = prefetch;
    const RunTrace got = run_trace(disk);
    EXPECT_EQ(got.loss, ref.loss) << "prefetch " << prefetch;
    EXPECT_EQ(got.val, ref.val) << "prefetch " << prefetch;
    const fs::path ckpt = fs::path(disk.out_dir) / "checkpoints" / "step-00000008";
    for (const char* f : {"model.safetensors", "optimizer.safetensors"})
      EXPECT_TRUE(read_bytes(ckpt / f) == read_bytes(ref_ckpt / f)) << f << " prefetch " << prefetch;
    // the row file is unlinked at once: nothing is left in the run directory
    for (const auto& e : fs::directory_iterator(disk.out_dir))
      EXPECT_EQ(e.path().filename().string().rfind(".stem-rows", 0), std::string::npos) << e.path();
  }
  // interrupted after step 6, resumed on disk: the same losses again
  train::TrainOptions b = ram;
  b.out_dir = (scratch() / "disk_resume").string();
  b.tables_on_disk = true;
  const RunTrace first = run_trace(b, 6);
  ASSERT_EQ(first.loss.size(), 6u);
  b.resume = true;
  b.force = false;
  const RunTrace rest = run_trace(b);
  ASSERT_EQ(rest.loss.size(), 2u);
  for (const auto& [step, loss] : first.loss) EXPECT_EQ(loss, ref.loss.at(step)) << "step " << step;
  for (const auto& [step, loss] : rest.loss) EXPECT_EQ(loss, ref.loss.at(step)) << "step " << step;
}

TEST(TrainTablesOnDisk, ResumeFromAStopAtEveryStep) {
  // A signal may stop a run after any step (not only at --save-every), with a
  // validation or not just before; the resumed run must go on exactly.
  train::TrainOptions ram = base_options((scratch() / "every_ref").string());
  ram.config_path = two_stem_config();
  ram.lazy_tables = true;
  ram.eval_every = 2;
  const RunTrace ref = run_trace(ram);
  ASSERT_EQ(ref.loss.size(), 8u);
  for (int mode = 0; mode < 3; ++mode)  // tables in RAM; on disk with prefetch; without
    for (int64_t stop = 1; stop < 8; ++stop) {
      const bool prefetch = mode == 1;
      train::TrainOptions b = ram;
      b.out_dir = (scratch() / ("every_" + std::to_string(mode) + "_" + std::to_string(stop))).string();
      b.tables_on_disk = mode > 0;
      b.prefetch = prefetch;
      const RunTrace first = run_trace(b, stop);
      ASSERT_EQ(first.loss.size(), static_cast<size_t>(stop));
      b.resume = true;
      b.force = false;
      const RunTrace rest = run_trace(b);
      for (const auto& [step, loss] : rest.loss)
        EXPECT_EQ(loss, ref.loss.at(step)) << "mode " << mode << ", stopped at " << stop << ", step " << step;
    }
}

TEST(TrainTablesOnDisk, ClearErrors) {
  train::TrainOptions o = base_options((scratch() / "disk_bad").string());
  o.config_path = two_stem_config();
  o.tables_on_disk = true;  // without lazy tables
  auto t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("--lazy-tables"), std::string::npos) << t.status().message();

  o.lazy_tables = true;
  o.tables_dir = (scratch() / "no_such_dir").string();
  t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("no_such_dir"), std::string::npos) << t.status().message();

  o = base_options((scratch() / "disk_bad").string());
  const std::string dense = (scratch() / "dense_only.json").string();
  std::ofstream(dense) << R"({"model_type": "stem", "vocab_size": 400, "hidden_size": 16,
      "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
      "num_key_value_heads": 2, "max_position_embeddings": 64, "rope_theta": 10000.0,
      "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "ffn_types": ["dense"], "num_hash_experts": 0})";
  o.config_path = dense;
  o.tables_on_disk = true;
  o.lazy_tables = true;
  t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("no STEM layers"), std::string::npos) << t.status().message();
}

TEST(TrainTablesOnDisk, CliJsonReportsTraffic) {
  const fs::path run = scratch() / "disk_cli";
  const std::string base = std::string(STEM_BINARY) + " train --config " + two_stem_config() + " --data " +
                           tiny().data + " --out " + run.string() + " --steps 3 --batch 2 --seq 32 --force" +
                           " --eval-every 0 --eval-tokens 128 --peak-gflops 100 --tables disk";
  EXPECT_EQ(sh(base + " > /dev/null 2>&1"), 1);  // needs --lazy-tables
  const fs::path out = scratch() / "disk_cli.json";
  ASSERT_EQ(sh(base + " --lazy-tables --json > " + out.string() + " 2>/dev/null"), 0);
  std::ifstream in(out);
  std::string line, last;
  int steps = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("step")) {
      ++steps;
      EXPECT_TRUE(j.contains("table_wait_seconds")) << line;
    }
    last = line;
  }
  EXPECT_EQ(steps, 3);
  auto j = nlohmann::json::parse(last);
  ASSERT_TRUE(j.contains("tables")) << last;
  EXPECT_EQ(j["tables"]["tier"], "disk");
  EXPECT_EQ(j["tables"]["file_bytes"].get<int64_t>(), int64_t{400} * 2 * 3 * 48 * 4);  // V x (M=2 x p,m,v) x f
  EXPECT_GT(j["tables"]["bytes_read"].get<int64_t>(), 0);
  EXPECT_EQ(sh(std::string(STEM_BINARY) + " train --config " + two_stem_config() + " --data " + tiny().data +
               " --out " + run.string() + " --tables mmap > /dev/null 2>&1"),
            2);  // not a training tier: a usage error
}

}  // namespace
}  // namespace stem
