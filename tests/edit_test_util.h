// Shared by the editing tests (test_edit.cpp, test_edit_cli.cpp): a small
// STEM model trained on the synthetic fact corpus through the CLI (`stem edit
// facts`, `stem prepare`, `stem train`), made once per build of the stem
// binary and cached in the build tree (test-cache/) under a lock, so that
// ctest's parallel test processes share it; and small helpers.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <omp.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "edit/edit_eval.h"
#include "stem/facts.h"
#include "edit/overlay.h"
#include "io/tokenizer.h"
#include "model/transformer.h"
#include "stem/model.h"
#include "train/checkpoint.h"

namespace stem::edit_test {
namespace fs = std::filesystem;

inline int sh(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// ---------------------------------------------------------------- the trained model

inline constexpr int kSubjects = 24;
inline constexpr uint64_t kFactSeed = 7;

struct Trained {
  std::string facts, data, model;  // folders
  edit::FactCorpus corpus;
};

// Five STEM layers, then one dense layer. Facts land in the first FFN that
// sees the subject at its own position: with a dense first layer that FFN
// keys them on the embedding and swaps of STEM rows barely move the answers
// (docs/editing.md), so the dense layer is the last one here.
inline std::string config_json(int64_t V) {
  return R"({"model_type": "stem", "vocab_size": )" + std::to_string(V) + R"(, "hidden_size": 32,
    "intermediate_size": 256, "num_hidden_layers": 6, "num_attention_heads": 4,
    "num_key_value_heads": 4, "max_position_embeddings": 64, "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
    "ffn_types": ["stem", "stem", "stem", "stem", "stem", "dense"], "num_hash_experts": 0})";
}
inline constexpr int64_t kVocab = 768;  // every name of the corpus is one token

// Builds into `dir` (absent): facts, data, a trained model. Returns "" or
// what failed with the end of its output.
inline std::string build_trained(const fs::path& dir) {
  const std::string bin = STEM_BINARY;
  const fs::path tmp = dir.string() + ".tmp", log = tmp / "log.txt";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  auto run = [&](const std::string& cmd) -> std::string {
    if (sh(cmd + " > " + log.string() + " 2>&1") == 0) return "";
    std::ifstream in(log);
    return cmd + " failed: " + std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string facts = (tmp / "facts").string(), data = (tmp / "data").string();
  std::string err = run(bin + " edit facts --out " + facts + " --seed " + std::to_string(kFactSeed) + " --subjects " +
                        std::to_string(kSubjects));
  if (err.empty())
    err = run(bin + " prepare --input " + facts + "/facts.txt --out " + data + " --doc-bytes 32 --val-fraction 0" +
              " --vocab-size " + std::to_string(kVocab));
  std::ofstream(tmp / "config.json") << config_json(kVocab);
  // One thread: the same model on any machine (reduction order), and no
  // spinning OpenMP workers fighting other tests for the cores.
  if (err.empty())
    err = run("env OMP_NUM_THREADS=1 " + bin + " train --config " + (tmp / "config.json").string() + " --data " + data +
              " --out " + (tmp / "run").string() +
              " --steps 300 --batch 16 --seq 32 --lr 5e-3 --warmup 20 --weight-decay 0 --seed 1"
              " --eval-every 0 --save-every 0 --keep 1 --peak-gflops 100");
  if (!err.empty()) return err;
  auto ck = train::latest_checkpoint((tmp / "run").string());
  if (!ck.ok() || ck->empty()) return "no checkpoint in " + (tmp / "run").string();
  fs::rename(*ck, tmp / "model");
  fs::remove_all(tmp / "run");
  fs::rename(tmp, dir);
  return "";
}

inline const Trained& trained() {
  static Trained t = [] {
    Trained r;
    // One cache entry per stem binary (size and mtime), shared by every test process.
    const fs::path bin(STEM_BINARY);
    const auto stamp = fs::last_write_time(bin).time_since_epoch().count();
    const fs::path cache = bin.parent_path() / "test-cache";
    fs::create_directories(cache);
    const fs::path dir = cache / ("edit-" + std::to_string(fs::file_size(bin)) + "-" + std::to_string(stamp));
    const int lock = ::open((cache / "edit.lock").c_str(), O_CREAT | O_RDWR, 0644);
    ::flock(lock, LOCK_EX);
    if (!fs::exists(dir / "model" / "model.safetensors")) {
      for (const auto& e : fs::directory_iterator(cache))  // older builds' models
        if (e.path().filename().string().rfind("edit-", 0) == 0) fs::remove_all(e.path());
      const std::string err = build_trained(dir);
      EXPECT_EQ(err, "") << "building the trained fact model";
    }
    ::flock(lock, LOCK_UN);
    ::close(lock);
    r.facts = (dir / "facts").string();
    r.data = (dir / "data").string();
    r.model = (dir / "model").string();
    edit::FactOptions fo;
    fo.seed = kFactSeed;
    fo.subjects = kSubjects;
    r.corpus = *edit::make_fact_corpus(fo);
    return r;
  }();
  return t;
}

// The trained model is tiny: one thread runs its forwards fastest, and
// spinning OpenMP workers would only fight other tests for the cores.
class OneThread {
 public:
  OneThread() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

struct LoadedModel {
  Model m;
  io::Tokenizer tok;
};
inline LoadedModel load_trained() {
  auto m = Model::load(trained().model);
  EXPECT_TRUE(m.ok()) << m.status().message();
  auto tok = io::Tokenizer::load(trained().model + "/tokenizer.model");
  EXPECT_TRUE(tok.ok()) << tok.status().message();
  return {std::move(*m), std::move(*tok)};
}

// The model's greedy continuation of `prompt` equals `answer` token for token.
inline bool says(model::Transformer& m, const io::Tokenizer& tok, const std::string& prompt, const std::string& answer) {
  auto s = eval::score_continuation(m, tok, prompt, answer);
  EXPECT_TRUE(s.ok()) << s.status().message();
  return s.ok() && s->greedy;
}

inline std::string value(const edit::FactSubject& s, const std::string& attr) {
  return " " + (attr == "capital" ? s.capital : s.language);
}

// ---------------------------------------------------------------- overlays, no model

inline ModelConfig small_config() {
  auto c = ModelConfig::from_json(R"({"model_type": "stem", "vocab_size": 50, "hidden_size": 16,
    "intermediate_size": 24, "num_hidden_layers": 3, "num_attention_heads": 2,
    "num_key_value_heads": 1, "max_position_embeddings": 16, "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
    "ffn_types": ["dense", "stem", "stem"], "num_hash_experts": 0})",
                                  "small");
  EXPECT_TRUE(c.ok()) << c.status().message();
  return *c;
}

inline edit::Overlay random_overlay(const ModelConfig& cfg, int n, uint64_t seed) {
  edit::Overlay ov;
  ov.shape = edit::OverlayShape::of(cfg);
  ov.note = R"({"kind":"test"})";
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> row(cfg.intermediate_size);
  for (int i = 0; i < n; ++i) {
    for (float& x : row) x = nd(rng);
    ov.add(1 + i % 2, 3 + 5 * i, row.data());
  }
  return ov;
}

inline std::vector<int32_t> all_stem_layers(const ModelConfig& cfg) {
  std::vector<int32_t> out;
  for (int l = 0; l < cfg.num_hidden_layers; ++l)
    if (cfg.ffn_types[l] == FfnType::Stem) out.push_back(l);
  return out;
}

}  // namespace stem::edit_test
