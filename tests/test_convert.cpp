// From dense to STEM and on: conversion (the `mean` table reproduces a dense
// model whose FFN inputs are constant per token, `embed` is E W_up^T, the
// reverse fit recovers a linear table), the tables' parameter group (a
// frozen backbone stays bit-identical), distillation with alpha 0 equal to
// plain training, exact resume with every new option, RoPE base changes,
// and the clear errors. Uses the tiny corpus of train_test_util.h.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/token_shards.h"
#include "model/engine.h"
#include "model/transformer.h"
#include "stem/model.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace stem {
namespace {
namespace fs = std::filesystem;
using test::scratch;
using test::sh;
using test::run_losses;
using test::tiny;

// A dense model of the tiny corpus's vocabulary, saved to DIR. With
// `token_only_ffn_inputs` every o_proj is zero: attention adds nothing, so
// every layer's FFN input is a function of the token alone.
std::string dense_model(const std::string& name, bool token_only_ffn_inputs) {
  ModelConfig c = test::two_layer_config(400);
  c.num_hidden_layers = 3;
  c.ffn_types = {FfnType::Dense, FfnType::Dense, FfnType::Dense};
  auto m = Model::init(c, 7);
  EXPECT_TRUE(m.ok());
  if (token_only_ffn_inputs) {
    model::TensorList& w = engine(*m).weights();
    for (size_t i = 0; i < w.size(); ++i)
      if (w.spec(i).name.find("o_proj") != std::string::npos) std::fill_n(w[i].f32(), w[i].numel(), 0.0f);
  }
  const std::string dir = (scratch() / name).string();
  EXPECT_TRUE(m->save(dir).ok());
  return dir;
}

// Tokens of the tiny training split: [2, 32] from its start.
std::vector<int32_t> some_tokens() {
  auto data = io::DataDir::open(tiny().data);
  EXPECT_TRUE(data.ok());
  std::vector<int32_t> t(64);
  data->train.read(100, 64, t.data());
  return t;
}

std::vector<float> logits_of(const std::string& dir, const std::vector<int32_t>& tokens) {
  auto m = Model::load(dir);
  EXPECT_TRUE(m.ok()) << m.status().message();
  std::vector<float> out;
  EXPECT_TRUE(m->score(tokens, 2, 32, &out).ok());
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  return m;
}

ArchConvertOptions whole_split(TableInit init, const std::string& layers) {
  ArchConvertOptions o;
  o.init = init;
  o.layers = layers;
  o.data_dir = tiny().data;
  o.seq = 32;
  o.sample_tokens = 1 << 20;  // more than the split: windows cover all of it
  return o;
}

TEST(ConvertToStem, MeanReproducesDenseWhenFfnInputsAreConstantPerToken) {
  const std::string dense = dense_model("dense_const", true);
  const std::string mean = (scratch() / "stem_mean").string(), embed = (scratch() / "stem_embed").string();
  auto rep = convert_to_stem(dense, mean, whole_split(TableInit::Mean, "full"));
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  EXPECT_EQ(rep->layers, (std::vector<int>{0, 1, 2}));
  EXPECT_GT(rep->tokens_seen, 100);
  ASSERT_TRUE(convert_to_stem(dense, embed, whole_split(TableInit::Embed, "full")).ok());
  const std::vector<int32_t> tokens = some_tokens();
  const std::vector<float> want = logits_of(dense, tokens);
  const double d_mean = max_abs_diff(logits_of(mean, tokens), want);
  const double d_embed = max_abs_diff(logits_of(embed, tokens), want);
  EXPECT_LE(d_mean, 1e-5) << "mean-initialised STEM against dense";
  EXPECT_GT(d_embed, 1e-2) << "embed differs (the raw embedding is not the FFN input)";
  auto cfg = ModelConfig::load(mean + "/config.json");
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->n_stem_layers(), 3);
}

TEST(ConvertToStem, EmbedIsTheEmbeddingThroughUpProjAndOnlyChosenLayersChange) {
  const std::string dense = dense_model("dense_embed", false);
  const std::string out = (scratch() / "stem_l1").string();
  ArchConvertOptions o;
  o.layers = "1";
  ASSERT_TRUE(convert_to_stem(dense, out, o).ok());
  auto src = Model::load(dense);
  auto dst = Model::load(out);
  ASSERT_TRUE(src.ok() && dst.ok());
  EXPECT_EQ(dst->config().ffn_types, (std::vector<FfnType>{FfnType::Dense, FfnType::Stem, FfnType::Dense}));
  const model::TensorList& a = engine(*src).weights();
  const model::TensorList& b = engine(*dst).weights();
  EXPECT_LT(b.find("model.layers.1.mlp.up_proj.weight"), 0);
  for (size_t i = 0; i < b.size(); ++i) {  // everything but the table copied bit for bit
    const int j = a.find(b.spec(i).name);
    if (j < 0) continue;
    EXPECT_EQ(std::memcmp(a[j].raw(), b[i].raw(), b[i].nbytes()), 0) << b.spec(i).name;
  }
  const float* E = a[a.find("model.embed_tokens.weight")].f32();
  const float* up = a[a.find("model.layers.1.mlp.up_proj.weight")].f32();
  const float* U = b[b.find("model.layers.1.mlp.stem_embedding.weight")].f32();
  const int64_t V = 400, d = 32, f = 48;
  double worst = 0;
  for (int64_t t = 0; t < V; ++t)
    for (int64_t c = 0; c < f; ++c) {
      double s = 0;
      for (int64_t i = 0; i < d; ++i) s += double(E[t * d + i]) * up[c * d + i];
      worst = std::max(worst, std::abs(s - U[t * f + c]));
    }
  EXPECT_LE(worst, 1e-5);
}

TEST(ConvertToDense, FitRecoversALinearTable) {
  // The mean-initialised model of a token-only dense model has tables that
  // are exactly W_up x[t]: the least-squares fit finds W_up back.
  const std::string dense = dense_model("dense_const2", true);
  const std::string stem = (scratch() / "stem_mean2").string(), back = (scratch() / "dense_back").string();
  ASSERT_TRUE(convert_to_stem(dense, stem, whole_split(TableInit::Mean, "all-but-first")).ok());
  ArchConvertOptions o = whole_split(TableInit::Embed, "");
  o.ridge = 1e-7;
  auto rep = convert_to_dense(stem, back, o);
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  EXPECT_EQ(rep->layers, (std::vector<int>{1, 2}));
  EXPECT_LT(rep->fit_rel_error, 1e-3);
  const std::vector<int32_t> tokens = some_tokens();
  EXPECT_LE(max_abs_diff(logits_of(back, tokens), logits_of(dense, tokens)), 1e-3);
}

TEST(ConvertErrors, NameTheLayerTheValueAndTheMissingInput) {
  const std::string dense = dense_model("dense_err", false);
  const std::string stem = (scratch() / "stem_err").string();
  ArchConvertOptions o;
  o.layers = "1,7";
  auto r = convert_to_stem(dense, stem, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'7'"), std::string::npos) << r.status().message();
  o.layers = "1";
  o.init = TableInit::Mean;
  r = convert_to_stem(dense, stem, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--data"), std::string::npos) << r.status().message();
  EXPECT_FALSE(convert_to_stem(dense, dense, ArchConvertOptions{}).ok());  // never in place
  ASSERT_TRUE(convert_to_stem(dense, stem, ArchConvertOptions{}).ok());
  o = ArchConvertOptions{};
  o.layers = "1";
  r = convert_to_stem(stem, (scratch() / "twice").string(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("layer 1 is stem"), std::string::npos) << r.status().message();
  r = convert_to_dense(dense, (scratch() / "nodense").string(), o);
  ASSERT_FALSE(r.ok());
  // The CLI: exit code 1 with the message, and --json on success.
  const std::string bin = STEM_BINARY;
  EXPECT_EQ(sh(bin + " convert --model " + dense + " --out " + stem + "_cli --to-stem --layers 9 2>/dev/null"), 1);
  EXPECT_EQ(sh(bin + " convert --model " + dense + " --out " + stem + "_cli --to-stem --to-dense 2>/dev/null"), 1);
  EXPECT_EQ(sh(bin + " convert --model " + dense + " --out " + stem + "_cli --to-stem --layers every2 --json > " +
               (scratch() / "convert.json").string()),
            0);
  std::ifstream in(scratch() / "convert.json");
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["layers"], nlohmann::json::array({1}));
  EXPECT_EQ(j["to"], "stem");
}

// ---------------------------------------------------------------- training a converted model

train::TrainOptions continued(const std::string& init, const std::string& out) {
  train::TrainOptions o;
  o.init_from = init;
  o.data_dir = tiny().data;
  o.out_dir = out;
  o.steps = 6;
  o.batch = 2;
  o.seq = 32;
  o.lr = 1e-3f;
  o.warmup = 1;
  o.eval_every = 3;
  o.eval_tokens = 256;
  o.save_every = 1;
  o.keep = 0;
  o.peak_gflops = 100;
  o.force = true;
  return o;
}

std::string checkpoint(const std::string& run, int step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08d", step);
  return (fs::path(run) / "checkpoints" / name).string();
}

// The STEM model every training test below starts from.
const std::string& converted() {
  static const std::string dir = [] {
    const std::string d = (scratch() / "converted").string();
    EXPECT_TRUE(convert_to_stem(dense_model("dense_train", false), d, whole_split(TableInit::Mean, "all-but-first")).ok());
    return d;
  }();
  return dir;
}

TEST(TrainGroups, FrozenBackboneStaysBitIdenticalThenMoves) {
  train::TrainOptions o = continued(converted(), (scratch() / "frozen").string());
  o.freeze_backbone_steps = 3;
  o.lr_tables = 1e-2f;
  ASSERT_EQ(run_losses(o).size(), 6u);
  auto init = Model::load(converted());
  ASSERT_TRUE(init.ok());
  const model::TensorList& w0 = engine(*init).weights();
  for (int step : {3, 4}) {
    auto m = Model::load(checkpoint(o.out_dir, step));
    ASSERT_TRUE(m.ok()) << m.status().message();
    const model::TensorList& w = engine(*m).weights();
    int backbone_same = 0, backbone = 0, tables_moved = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      const bool same = std::memcmp(w[i].raw(), w0[i].raw(), w[i].nbytes()) == 0;
      if (w.spec(i).kind == model::ParamKind::StemTable) {
        tables_moved += !same;
      } else {
        ++backbone;
        backbone_same += same;
      }
    }
    EXPECT_EQ(tables_moved, 2) << "step " << step;
    if (step == 3) EXPECT_EQ(backbone_same, backbone) << "every backbone tensor bit-identical through step 3";
    else EXPECT_EQ(backbone_same, 0) << "step 4 moves every backbone tensor";
  }
  // metrics.jsonl: the backbone's rate 0 for 3 steps, the tables' not.
  auto rec = read_metrics(o.out_dir);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ((*rec)[2].lr, 0.0);
  EXPECT_GT((*rec)[3].lr, 0.0);
}

TEST(TrainGroups, DistillationWithAlphaZeroIsPlainTraining) {
  train::TrainOptions plain = continued(converted(), (scratch() / "plain").string());
  train::TrainOptions zero = plain;
  zero.out_dir = (scratch() / "alpha0").string();
  zero.teacher = dense_model("teacher", false);
  zero.distill_alpha = 0.0f;
  train::TrainOptions half = zero;
  half.out_dir = (scratch() / "alpha_half").string();
  half.distill_alpha = 0.5f;
  half.distill_temperature = 2.0f;
  const auto a = run_losses(plain), b = run_losses(zero), c = run_losses(half);
  ASSERT_EQ(a.size(), 6u);
  for (const auto& [step, loss] : a) {
    EXPECT_EQ(b.at(step), loss) << "step " << step;
    EXPECT_NE(c.at(step), loss) << "step " << step;
  }
}

TEST(TrainGroups, ResumeIsExactWithEveryNewOption) {
  train::TrainOptions o = continued(converted(), (scratch() / "groups_full").string());
  o.lr_tables = 8e-3f;
  o.warmup_tables = 2;
  o.weight_decay_tables = 0.01f;
  o.freeze_backbone_steps = 2;
  o.teacher = dense_model("teacher2", false);
  o.distill_alpha = 0.3f;
  o.distill_temperature = 1.5f;
  o.rope_theta = 20000.0f;
  o.seq = 48;
  o.doc_mask = true;
  for (bool lazy : {false, true}) {
    o.lazy_tables = lazy;
    o.out_dir = (scratch() / (lazy ? "groups_full_lazy" : "groups_full")).string();
    const auto full = run_losses(o);
    ASSERT_EQ(full.size(), 6u);
    train::TrainOptions b = o;
    b.out_dir += "_split";
    const auto first = run_losses(b, 4);
    b.resume = true;
    b.force = false;
    const auto rest = run_losses(b);
    ASSERT_EQ(rest.size(), 2u);
    for (const auto& [step, loss] : first) EXPECT_EQ(loss, full.at(step)) << "step " << step;
    for (const auto& [step, loss] : rest) EXPECT_EQ(loss, full.at(step)) << "lazy " << lazy << " step " << step;
    // A resume with another table rate is refused, naming the field.
    b.lr_tables = 1e-2f;
    auto t = train::Trainer::create(b);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("lr_tables"), std::string::npos) << t.status().message();
  }
  // The longer context is recorded in the checkpoint's config.
  auto cfg = ModelConfig::load(checkpoint(o.out_dir, 6) + "/config.json");
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->rope_theta, 20000.0);
  EXPECT_EQ(cfg->max_position_embeddings, 64);  // 48 fits the 64 it had
}

TEST(TrainGroups, DocumentMaskingChangesTrainingAndIsSaved) {
  // The tiny corpus again, each sentence a paragraph and a document: every
  // window crosses some.
  const std::string data = (scratch() / "short_docs").string();
  tiny();  // writes scratch()/text/a.txt
  std::ifstream in(scratch() / "text" / "a.txt");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (size_t at = text.find(". "); at != std::string::npos; at = text.find(". ", at)) text.replace(at, 2, ".\n\n");
  fs::create_directories(scratch() / "sentences");
  std::ofstream(scratch() / "sentences" / "a.txt") << text;
  ASSERT_EQ(sh(std::string(STEM_BINARY) + " prepare --input " + (scratch() / "sentences").string() + " --out " + data +
               " --vocab-size 400 --val-fraction 0.1 --doc-bytes 100 > /dev/null 2>&1"),
            0);
  train::TrainOptions o = continued(converted(), (scratch() / "nomask").string());
  o.data_dir = data;
  o.seq = 64;
  o.steps = 3;
  train::TrainOptions m = o;
  m.out_dir = (scratch() / "mask").string();
  m.doc_mask = true;
  const auto a = run_losses(o), b = run_losses(m);
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_NE(a, b) << "every window crosses documents";
  std::ifstream state(checkpoint(m.out_dir, 3) + "/trainer_state.json");
  EXPECT_EQ(nlohmann::json::parse(state)["options"]["doc_mask"], true);
}

TEST(TrainGroups, LongerSequencesNeedARopeBaseAndBadOptionsAreErrors) {
  train::TrainOptions o = continued(converted(), (scratch() / "long").string());
  o.seq = 96;  // the model has 64 positions
  auto t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("--rope-theta"), std::string::npos) << t.status().message();
  o.rope_theta = 40000.0f;
  o.steps = 2;
  ASSERT_EQ(run_losses(o).size(), 2u);
  auto cfg = ModelConfig::load(checkpoint(o.out_dir, 2) + "/config.json");
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->max_position_embeddings, 96);
  EXPECT_EQ(cfg->rope_theta, 40000.0);

  o = continued(converted(), (scratch() / "bad").string());
  o.teacher = scratch().string();  // not a model
  EXPECT_FALSE(train::Trainer::create(o).ok());
  o.teacher = converted();
  o.seq = 96;
  o.rope_theta = 40000.0f;  // the teacher has 64 positions
  t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("max_position_embeddings"), std::string::npos) << t.status().message();
  o = continued(converted(), (scratch() / "bad2").string());
  o.freeze_backbone_steps = 6;
  t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), "train: --freeze-backbone-steps = 6 (need in [0, --steps))");
  o.freeze_backbone_steps = 0;
  o.lr_tables = -1;
  t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), "train: --lr-tables = -1 (need > 0)");
  o.lr_tables = NAN;  // unset: the backbone's
  o.lr = NAN;
  t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), "train: --lr = nan (need > 0)");
  o.lr = 1e-3f;
  o.zero_stage = 2;  // stage 1 is what there is
  t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), "train: --zero = 2 (need 0 or 1)");
  o.zero_stage = 0;
  o.init_from = dense_model("dense_mismatch", false);
  o.config_path = (converted() + "/config.json");
  t = train::Trainer::create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("convert"), std::string::npos) << t.status().message();
}

}  // namespace
}  // namespace stem
