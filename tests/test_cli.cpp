// The stem binary as a user runs it: each subcommand with valid and invalid
// input, exit codes and one-line errors asserted, outputs checked against the
// library (score's logits .npy, grad's safetensors) and the PyTorch fixtures.
#include <gtest/gtest.h>

#include "cli_test_util.h"
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace {
namespace fs = std::filesystem;

using stem::test::CmdResult;

CmdResult stem(const std::string& args) { return stem::test::stem_cmd(args); }

class Cli : public stem::test::TempDirTest {
 protected:
  std::string fixture(const std::string& name) const { return std::string(STEM_FIXTURES_DIR) + "/" + name; }
};

const char* kConfig = R"({"model_type": "stem", "vocab_size": 64, "hidden_size": 32,
  "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
  "num_key_value_heads": 2, "max_position_embeddings": 16, "rope_theta": 10000.0,
  "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
  "ffn_types": ["dense", "stem", "hash_moe"], "num_hash_experts": 2})";

TEST_F(Cli, HelpForEverySubcommand) {
  for (const char* sub : {"init", "score", "grad", "inspect", "bench"}) {
    CmdResult r = stem(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub;
    EXPECT_NE(r.out.find("--json"), std::string::npos) << sub;
  }
  EXPECT_EQ(stem("--help").code, 0);
  EXPECT_NE(stem("").code, 0);
  EXPECT_NE(stem("frobnicate").code, 0);
}

TEST_F(Cli, InitInspectScoreGrad) {
  write("config.json", kConfig);
  CmdResult r = stem("init --config " + p("config.json") + " --out " + p("m") + " --seed 3 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(p("m/config.json")) && fs::exists(p("m/model.safetensors")));
  // refusing to overwrite without --force
  r = stem("init --config " + p("config.json") + " --out " + p("m"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("already holds a model"), std::string::npos) << r.err;

  r = stem("inspect --model " + p("m") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  // V*d embed + head, per layer: attn 32*32*2 + 2*16*32*... computed by hand below
  const int64_t attn = 32 * 32 + 16 * 32 + 16 * 32 + 32 * 32;
  const int64_t total = 2 * 64 * 32 + 3 * (attn + 2 * 32) + 32 + 3 * 48 * 32 /*dense*/ +
                        (2 * 48 * 32 + 64 * 48) /*stem*/ + (64 + 2 * 3 * 48 * 32) /*moe*/;
  EXPECT_EQ(j["params_total"].get<int64_t>(), total);
  EXPECT_EQ(j["layers"].size(), 3u);

  write("t.txt", "1 2 3 4 5 6 7 8\n9 10");
  r = stem("score --model " + p("m") + " --tokens-file " + p("t.txt") + " --logits-out " + p("l.npy") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_NEAR(j["loss"].get<double>(), std::log(64.0), 1.0);
  EXPECT_EQ(fs::file_size(p("l.npy")) % 64, (10u * 64u * 4u) % 64u);
  EXPECT_GT(fs::file_size(p("l.npy")), 10u * 64u * 4u);

  r = stem("grad --model " + p("m") + " --tokens-file " + p("t.txt") + " --out " + p("g.safetensors") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto g = stem::io::SafetensorsFile::open(p("g.safetensors"));
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_NE(g->find("model.layers.1.mlp.stem_embedding.weight"), nullptr);
  EXPECT_EQ(g->find("model.layers.2.mlp.hash_table"), nullptr);  // not trainable
}

TEST_F(Cli, ScoreMatchesPyTorchFixture) {
  CmdResult r = stem("score --model " + fixture("mixed_gqa") + " --tokens-file " + fixture("mixed_gqa/tokens.txt") +
               " --lines --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto exp = stem::io::SafetensorsFile::open(fixture("mixed_gqa/expected.safetensors"));
  ASSERT_TRUE(exp.ok());
  const double want = std::stod(exp->metadata().at("loss"));
  EXPECT_NEAR(nlohmann::json::parse(r.out)["loss"].get<double>(), want, 1e-5);
}

TEST_F(Cli, BadInputsGiveOneLineErrorsAndExitOne) {
  write("config.json", kConfig);
  ASSERT_EQ(stem("init --config " + p("config.json") + " --out " + p("m")).code, 0);
  struct Case {
    std::string args, needle;
  };
  write("bad_tokens.txt", "1 2 x3");
  write("oob_tokens.txt", "1 2 64");
  write("bad_cfg.json", R"({"model_type": "stem"})");
  write("garbage.safetensors", "not a safetensors file at all");
  fs::create_directories(p("broken"));
  fs::copy(p("m/config.json"), p("broken/config.json"));
  fs::copy(p("garbage.safetensors"), p("broken/model.safetensors"));
  const std::vector<Case> cases = {
      {"score --model " + p("nope") + " --tokens-file x", "nope"},
      {"score --model " + p("m") + " --tokens-file " + p("missing.txt"), "missing.txt"},
      {"score --model " + p("m") + " --tokens-file " + p("bad_tokens.txt"), "is not a decimal token id"},
      {"score --model " + p("m") + " --tokens-file " + p("oob_tokens.txt"), "outside [0, 64)"},
      {"score --model " + p("broken") + " --tokens-file " + p("oob_tokens.txt"), "model.safetensors"},
      {"init --config " + p("bad_cfg.json") + " --out " + p("x"), "missing field"},
      {"init --config " + p("nothere.json") + " --out " + p("x"), "nothere.json"},
      {"bench train --config " + p("bad_cfg.json"), "bad_cfg.json"},
      {"inspect", "--model"},
  };
  for (const Case& c : cases) {
    CmdResult r = stem(c.args);
    EXPECT_EQ(r.code, 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.args << "\n" << r.err;
  }
  // usage errors (CLI11) exit non-zero too
  EXPECT_NE(stem("score --model " + p("m")).code, 0);
  EXPECT_NE(stem("bench sideways --config " + p("config.json")).code, 0);
  EXPECT_FALSE(fs::exists(p("x")));
}

TEST_F(Cli, BenchPrintsJson) {
  write("config.json", kConfig);
  for (const char* mode : {"train", "forward"}) {
    CmdResult r = stem(std::string("bench ") + mode + " --config " + p("config.json") +
                 " --batch 2 --seq 16 --steps 2 --warmup 1 --no-peak --json");
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_GT(j["tokens_per_second"].get<double>(), 0.0);
    EXPECT_GT(j["step_seconds"].get<double>(), 0.0);
  }
}

}  // namespace

namespace {

// What a new user trips on: each message names the file, the flag and the fix.
TEST_F(Cli, MessagesNameTheFlagAndTheFix) {
  write("config.json", kConfig);
  ASSERT_EQ(stem("init --config " + p("config.json") + " --out " + p("m") + " --seed 3").code, 0);
  write("ids.txt", "1 2 3 4 5 6 7 8");
  // score needs F32 matrices: the model and the flag are named
  CmdResult r = stem("score --model " + p("m") + " --dtype bf16 --tokens-file " + p("ids.txt"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(p("m") + ": score runs the full forward pass"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--dtype f32"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("ids.txt"), std::string::npos) << r.err;
  // --no-prefetch is accepted wherever --tables is
  for (const char* cmd : {"score", "eval"}) {
    r = stem(std::string(cmd) + " --model " + p("m") + " --tables disk --no-prefetch " +
             (std::string(cmd) == "score" ? "--tokens-file " : "--seq 4 --data ") + p("ids.txt"));
    EXPECT_EQ(r.code, 0) << cmd << ": " << r.err;
  }
  // a training run directory given as a model: its latest checkpoint, or a
  // message saying what to give when there is none
  fs::create_directories(p("run/checkpoints"));
  r = stem("score --model " + p("run") + " --tokens-file " + p("ids.txt"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("a training run directory without a complete checkpoint"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--model " + p("run/checkpoints/step-NNNNNNNN")), std::string::npos) << r.err;
  fs::copy(p("m"), p("run/checkpoints/step-00000010"));
  write("run/latest", "step-00000010\n");
  const CmdResult direct = stem("score --model " + p("m") + " --tokens-file " + p("ids.txt") + " --json");
  r = stem("score --model " + p("run") + " --tokens-file " + p("ids.txt") + " --json");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, direct.out);
  // no tokenizer: what to copy where
  r = stem("generate --model " + p("m") + " --prompt hello -n 2");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no tokenizer.model, needed to tokenize --prompt"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("copy the tokenizer.model of the data directory"), std::string::npos) << r.err;
  // an error that already names the command does not name it twice
  r = stem("train --config " + p("config.json") + " --data " + p("nodata") + " --out " + p("r") + " --tables disk");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.find("train: train:"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.rfind("stem train: ", 0), 0u) << r.err;
}

TEST_F(Cli, ProgressLinesWhenNotATerminal) {
  // eval's stderr is a file here: no bar, but a line every few seconds of a
  // long run; a short one prints none.
  write("config.json", kConfig);
  ASSERT_EQ(stem("init --config " + p("config.json") + " --out " + p("m") + " --seed 3").code, 0);
  write("ids.txt", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16");
  CmdResult r = stem("eval --model " + p("m") + " --seq 4 --data " + p("ids.txt"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err.find('\r'), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("eval:"), std::string::npos) << r.err;
}

}  // namespace
