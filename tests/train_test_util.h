// Shared by the training tests: a scratch directory per test process, a
// shell runner, a tiny prepared corpus (vocab 400) with a model config that
// mixes dense, STEM and hash-MoE layers, and the losses of a run's
// metrics.jsonl, and the losses a run reports.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include <gtest/gtest.h>

#include <atomic>

#include "stem/config.h"
#include "stem/train.h"

namespace stem::test {
namespace fs = std::filesystem;

// A two-layer model of vocabulary V small enough for API tests (d 32, f 48,
// 4 heads over 2 KV heads, 64 positions); the test sets ffn_types.
inline ModelConfig two_layer_config(int64_t V) {
  ModelConfig c;
  c.vocab_size = V;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  return c;
}

// The test process's scratch directory, removed at exit when every test
// passed (kept for a look otherwise; never by a forked child).
inline fs::path scratch() {
  static fs::path p = [] {
    fs::path d = fs::temp_directory_path() / ("stem_train_test_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    static const pid_t owner = ::getpid();
    std::atexit([] {
      if (::getpid() != owner || !::testing::UnitTest::GetInstance()->Passed()) return;
      std::error_code ec;
      fs::remove_all(fs::temp_directory_path() / ("stem_train_test_" + std::to_string(owner)), ec);
    });
    return d;
  }();
  return p;
}

inline int sh(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// A tiny data dir (vocab 400) and a model config matching it, made once.
struct TinySetup {
  std::string data, config;
};
inline const TinySetup& tiny() {
  static TinySetup s = [] {
    TinySetup t;
    const fs::path text = scratch() / "text";
    fs::create_directories(text);
    std::ifstream in(std::string(STEM_SOURCE_DIR) + "/corpus/builtin/persuasion.txt");
    std::string buf(60000, '\0');
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    buf.resize(static_cast<size_t>(in.gcount()));
    std::ofstream(text / "a.txt") << buf;
    t.data = (scratch() / "data").string();
    EXPECT_EQ(sh(std::string(STEM_BINARY) + " prepare --input " + text.string() + " --out " + t.data +
                 " --vocab-size 400 --val-fraction 0.1 > /dev/null 2>&1"),
              0);
    t.config = (scratch() / "model.json").string();
    std::ofstream(t.config) << R"({"model_type": "stem", "vocab_size": 400, "hidden_size": 32,
      "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
      "num_key_value_heads": 2, "max_position_embeddings": 64, "rope_theta": 10000.0,
      "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
      "ffn_types": ["dense", "stem", "hash_moe"], "num_hash_experts": 2})";
    return t;
  }();
  return s;
}

// The loss of every step logged in RUN/metrics.jsonl (a line cut short by a
// kill is skipped).
inline std::map<int64_t, double> metrics_losses(const fs::path& run) {
  std::map<int64_t, double> m;
  std::ifstream in(run / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) m[j["step"].get<int64_t>()] = j["loss"].get<double>();
  }
  return m;
}

// The loss of every step a run of `o` reports, stopping it after step
// `stop_after` when that is not 0; the run's metrics.jsonl must end with the
// last of them.
inline std::map<int64_t, double> run_losses(const TrainOptions& o, int64_t stop_after = 0) {
  auto t = Trainer::create(o);
  EXPECT_TRUE(t.ok()) << t.status().message();
  if (!t.ok()) return {};
  std::map<int64_t, double> losses;
  std::atomic<bool> stop{false};
  auto r = (*t)->run(
      [&](const StepRecord& rec) {
        losses[rec.step] = rec.loss;
        if (stop_after && rec.step == stop_after) stop = true;
      },
      &stop);
  EXPECT_TRUE(r.ok()) << r.status().message();
  auto records = read_metrics(o.out_dir);
  EXPECT_TRUE(records.ok()) << records.status().message();
  if (records.ok() && !losses.empty()) {
    EXPECT_EQ(records->back().step, losses.rbegin()->first);
    EXPECT_EQ(records->back().loss, losses.rbegin()->second);
  }
  return losses;
}

}  // namespace stem::test
