// Q8 weights (8-bit blocks of 32 with an F32 scale, made at load): the row
// quantization against its definition (scale = max|x| / 127, error at most
// half a step, padded blocks zero), the Q8 matvec (x quantized too) on every
// code path and the prefill linear against double products of the dequantized
// operands, a fused call mixing F32, BF16 and Q8 jobs, the decoder on a Q8
// model against the full forward of the same model with its weights
// dequantized (prefill computes exactly that model, decode steps within x's
// rounding), perplexity of a Q8 model through the decoder, and the places Q8
// is refused (saving, the full forward, `stem convert --dtype q8`).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "cli_test_util.h"
#include "core/bf16.h"
#include "infer/decoder.h"
#include "kernel_test_util.h"
#include "kernels/infer_kernels.h"
#include "kernels/ref/ref_kernels.h"
#include "model/engine.h"
#include "model/transformer.h"
#include "stem/model.h"

namespace stem {
namespace {
namespace k = kernels;
using test::VecD;
using test::VecF;

std::vector<uint8_t> quantize(const VecF& w, int64_t rows, int64_t cols) {
  std::vector<uint8_t> q(static_cast<size_t>(rows * k::q8_row_bytes(cols)));
  for (int64_t r = 0; r < rows; ++r) k::quantize_q8_row(q.data() + r * k::q8_row_bytes(cols), w.data() + r * cols, cols);
  return q;
}

double max_abs_diff(const VecF& a, const VecF& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

VecF dequantize(const std::vector<uint8_t>& q, int64_t rows, int64_t cols) {
  VecF w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) k::dequantize_q8_row(w.data() + r * cols, q.data() + r * k::q8_row_bytes(cols), cols);
  return w;
}

TEST(Q8Kernels, QuantizeFollowsItsDefinition) {
  std::mt19937 rng(1);
  for (int64_t n : {1, 5, 31, 32, 33, 100, 1376}) {
    VecF x = test::randu(rng, n, 3.0f);
    if (n >= 64) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // a zero block
    std::vector<uint8_t> q(static_cast<size_t>(k::q8_row_bytes(n)), 0xAB);
    k::quantize_q8_row(q.data(), x.data(), n);
    VecF back(static_cast<size_t>(n));
    k::dequantize_q8_row(back.data(), q.data(), n);
    for (int64_t b0 = 0; b0 < n; b0 += 32) {
      const int64_t m = std::min<int64_t>(32, n - b0);
      float amax = 0.0f, scale;
      for (int64_t i = 0; i < m; ++i) amax = std::max(amax, std::fabs(x[b0 + i]));
      std::memcpy(&scale, q.data() + b0 / 32 * 36, 4);
      ASSERT_EQ(scale, amax / 127.0f) << "n " << n << " block " << b0 / 32;
      const auto* qi = reinterpret_cast<const int8_t*>(q.data() + b0 / 32 * 36 + 4);
      for (int64_t i = 0; i < 32; ++i) {
        if (i >= m) {
          ASSERT_EQ(qi[i], 0) << "padding";
          continue;
        }
        ASSERT_LE(std::abs(qi[i]), 127);
        ASSERT_EQ(back[b0 + i], static_cast<float>(qi[i]) * scale);
        ASSERT_LE(std::fabs(back[b0 + i] - x[b0 + i]), scale * 0.5f * (1 + 1e-6f) + 1e-30f) << "n " << n << " at " << b0 + i;
      }
    }
  }
}

struct EachPath {
  std::vector<k::MatvecPath> paths;
  EachPath() {
    for (int p = 0; p <= static_cast<int>(k::matvec_best_path()); ++p) paths.push_back(static_cast<k::MatvecPath>(p));
  }
  ~EachPath() { k::set_matvec_path(k::matvec_best_path()); }
};

// The decode matvec quantizes x as a Q8 row and multiplies blocks as
// integers: it must equal the double product of the dequantized W and the
// dequantized x (to F32 summation), give the same bits on every code path
// (portable, AVX2, AVX-512 with VNNI where the CPU has it), and be off from
// the product with x itself by at most x's rounding: half a step of each
// block, sum over blocks of (scale_x / 2) * sum |w|.
TEST(Q8Kernels, MatvecOfQuantizedXEqualsItsProductsBitForBitOnEveryPath) {
  std::mt19937 rng(2);
  struct Shape {
    int64_t out, in;
  };
  EachPath each;
  for (const Shape sh : {Shape{1, 1}, Shape{7, 24}, Shape{37, 1029}, Shape{515, 64}, Shape{40, 512}, Shape{1376, 512},
                         Shape{300, 257}, Shape{64, 2752}})
    for (bool acc : {false, true}) {
      SCOPED_TRACE(testing::Message() << sh.out << "x" << sh.in << " acc " << acc);
      const VecF W = test::randu(rng, sh.out * sh.in), x = test::randu(rng, sh.in), y0 = test::randu(rng, sh.out);
      const auto q = quantize(W, sh.out, sh.in);
      const VecF deq = dequantize(q, sh.out, sh.in);
      const auto xq = quantize(x, 1, sh.in);
      const VecF xr = dequantize(xq, 1, sh.in);
      VecD want = test::to_d(y0), exact = test::to_d(y0);
      k::ref::linear_forward(want.data(), test::to_d(xr).data(), test::to_d(deq).data(), 1, sh.in, sh.out, acc);
      k::ref::linear_forward(exact.data(), test::to_d(x).data(), test::to_d(deq).data(), 1, sh.in, sh.out, acc);
      VecF first;
      for (const auto path : each.paths) {
        SCOPED_TRACE(testing::Message() << "path " << static_cast<int>(path));
        k::set_matvec_path(path);
        VecF y = y0;
        k::matvec_q8(y.data(), q.data(), x.data(), sh.out, sh.in, acc);
        EXPECT_TRUE(test::near_rel(y, want, 1e-5));
        if (first.empty()) first = y;
        EXPECT_EQ(y, first);
        for (int64_t r = 0; r < sh.out; ++r) {
          double bound = 0.0;
          for (int64_t b0 = 0; b0 < sh.in; b0 += 32) {
            float sx;
            std::memcpy(&sx, xq.data() + b0 / 32 * 36, 4);
            double wsum = 0.0;
            for (int64_t i = b0; i < std::min(sh.in, b0 + 32); ++i) wsum += std::fabs(deq[r * sh.in + i]);
            bound += 0.5 * sx * wsum;
          }
          ASSERT_LE(std::fabs(y[r] - exact[r]), bound * (1 + 1e-5) + 1e-5 * std::fabs(exact[r]) + 1e-6) << "row " << r;
        }
      }
    }
}

TEST(Q8Kernels, FusedJobsOfEveryDtypeEqualSeparateCalls) {
  std::mt19937 rng(3);
  const int64_t in = 300, o1 = 70, o2 = 900, o3 = 133;
  const VecF W1 = test::randu(rng, o1 * in), W2 = test::randu(rng, o2 * in), W3 = test::randu(rng, o3 * in);
  const VecF x = test::randu(rng, in);
  std::vector<uint16_t> W2b(W2.size());
  for (size_t i = 0; i < W2.size(); ++i) W2b[i] = core::float_to_bf16(W2[i]);
  const auto W3q = quantize(W3, o3, in);
  VecF y1(o1), y2(o2), y3(o3), s1(o1), s2(o2), s3(o3);
  const k::MatvecJob jobs[3] = {{y1.data(), W1.data(), o1, false, false, false},
                                {y2.data(), W2b.data(), o2, true, false, false},
                                {y3.data(), W3q.data(), o3, false, false, true}};
  k::matvec_batch(jobs, 3, x.data(), in);
  k::matvec(s1.data(), W1.data(), x.data(), o1, in);
  k::matvec_bf16(s2.data(), W2b.data(), x.data(), o2, in);
  k::matvec_q8(s3.data(), W3q.data(), x.data(), o3, in);
  EXPECT_EQ(y1, s1);
  EXPECT_EQ(y2, s2);
  EXPECT_EQ(y3, s3);
}

TEST(Q8Kernels, PrefillLinearEqualsDequantizedProducts) {
  std::mt19937 rng(4);
  for (int64_t in : {33, 512, 1029})
    for (bool acc : {false, true}) {
      const int64_t N = 5, out = 77;
      const VecF W = test::randu(rng, out * in), x = test::randu(rng, N * in);
      const auto q = quantize(W, out, in);
      VecF y = test::randu(rng, N * out), scratch(static_cast<size_t>(k::linear_bf16_scratch(in, out)));
      VecD want = test::to_d(y);
      k::linear_forward_q8(y.data(), x.data(), q.data(), N, in, out, acc, scratch.data());
      k::ref::linear_forward(want.data(), test::to_d(x).data(), test::to_d(dequantize(q, out, in)).data(), N, in, out,
                             acc);
      EXPECT_TRUE(test::near_rel(y, want, 1e-5)) << "in " << in << " acc " << acc;
    }
}

class Q8Model : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("stem_q8_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  // A fresh F32 model saved as dir_/name, and the same loaded with --dtype q8.
  static Result<Model> load_q8(const std::string& dir) {
    LoadOptions lo;
    lo.dtype = WeightDType::Q8;
    return Model::load(dir, lo);
  }
  std::string saved(const std::string& name, const ModelConfig& c, uint64_t seed, Result<Model>* f32) {
    const std::string dir = (dir_ / name).string();
    *f32 = Model::init(c, seed);
    EXPECT_TRUE(f32->ok());
    if (f32->ok()) EXPECT_TRUE((*f32)->save(dir).ok());
    return dir;
  }
  std::filesystem::path dir_;
};

ModelConfig q8_config(bool tied) {
  ModelConfig c;
  c.vocab_size = 61;
  c.hidden_size = 64;  // two Q8 blocks a row
  c.intermediate_size = 40;  // a padded block
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 96;
  c.tie_word_embeddings = tied;
  c.ffn_types = {FfnType::Dense, FfnType::Stem, FfnType::HashMoe, FfnType::Stem};
  c.num_hash_experts = 3;
  return c;
}

// The decoder of a model loaded with --dtype q8: its prefill computes exactly
// the model whose matrices are the dequantized ones (to F32 summation order) at
// every position, its steps that model with 8-bit activations in the
// products; and that model is close to, but not, the F32 one.
TEST_F(Q8Model, DecoderComputesTheDequantizedModel) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    Result<Model> f32 = Status::error("unset");
    const std::string dir = saved(tied ? "tied" : "untied", q8_config(tied), 5, &f32);
    ASSERT_TRUE(f32.ok());
    auto q8 = load_q8(dir);
    ASSERT_TRUE(q8.ok()) << q8.status().message();
    auto deq = Model::load(dir);
    ASSERT_TRUE(deq.ok());
    model::TensorList& qw = engine(*q8).weights();
    model::TensorList& dw = engine(*deq).weights();
    int quantized = 0;
    for (size_t i = 0; i < qw.size(); ++i) {
      if (qw[i].empty() || qw[i].dtype() != DType::Q8) continue;
      const int64_t cols = qw[i].shape().back(), rows = qw[i].numel() / cols;
      ASSERT_EQ(qw[i].nbytes(), static_cast<size_t>(rows * k::q8_row_bytes(cols)));
      for (int64_t r = 0; r < rows; ++r)
        k::dequantize_q8_row(dw[i].f32() + r * cols, static_cast<const uint8_t*>(qw[i].raw()) + r * k::q8_row_bytes(cols),
                             cols);
      ++quantized;
    }
    EXPECT_GT(quantized, 10);
    const ModelConfig& c = q8->config();
    std::mt19937 rng(6);
    const int64_t T = c.max_position_embeddings, V = c.vocab_size;
    const std::vector<int32_t> ids = test::rand_ids(rng, T, V);
    engine(*deq).forward(ids.data(), 1, T);
    const VecF want(engine(*deq).logits(), engine(*deq).logits() + T * V);
    engine(*f32).forward(ids.data(), 1, T);
    const VecF orig(engine(*f32).logits(), engine(*f32).logits() + T * V);
    // Prefill (chunks of several rows) computes the dequantized model.
    infer::Decoder chunks(engine(*q8), 0);
    VecF every(static_cast<size_t>(T * V));
    ASSERT_TRUE(chunks.prefill(ids.data(), T, every.data()).ok());
    EXPECT_TRUE(test::near_rel(every, want, 2e-5));
    // Steps (one row: the matvec, x quantized too) are off from it by the
    // activations' rounding, which costs about what the weights' own does:
    // the largest logit difference of any step within twice the dequantized
    // model's from the F32 one.
    const double weights_err = max_abs_diff(want, orig) / test::max_abs(want);
    infer::Decoder step(engine(*q8), 0);
    double steps_err = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      auto got = step.step(ids[t]);
      ASSERT_TRUE(got.ok()) << got.status().message();
      const VecF g(*got, *got + V), w(want.begin() + t * V, want.begin() + (t + 1) * V);
      steps_err = std::max(steps_err, max_abs_diff(g, w) / test::max_abs(w));
    }
    EXPECT_GT(weights_err, 1e-5);  // rounded for real
    EXPECT_LT(weights_err, 5e-2);  // and close
    EXPECT_GT(steps_err, 1e-6);
    EXPECT_LT(steps_err, 2 * weights_err) << "steps " << steps_err << ", weights " << weights_err;
  }
}

TEST_F(Q8Model, RefusedWhereItCannotServe) {
  Result<Model> f32 = Status::error("unset");
  const std::string dir = saved("m", q8_config(false), 1, &f32);
  auto q8 = load_q8(dir);
  ASSERT_TRUE(q8.ok()) << q8.status().message();
  const Status saved = q8->save((dir_ / "copy").string());
  ASSERT_FALSE(saved.ok());
  EXPECT_NE(saved.message().find("is Q8, an in-memory format"), std::string::npos) << saved.message();
  auto scored = q8->score(std::vector<int32_t>{1, 2, 3, 4}, 1, 4);
  ASSERT_FALSE(scored.ok());
  EXPECT_NE(scored.status().message().find("BF16 or Q8"), std::string::npos) << scored.status().message();
  const test::CmdResult conv = test::stem_cmd("convert --model " + dir + " --dtype q8 --out " + (dir_ / "c").string());
  EXPECT_EQ(conv.code, 1) << conv.err;
  EXPECT_NE(conv.err.find("a checkpoint holds F32 or BF16"), std::string::npos) << conv.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "c"));
  const test::CmdResult gen = test::stem_cmd("generate --model " + dir + " --dtype q8 --prompt-ids \"1 2 3\" -n 4 --greedy --json");
  EXPECT_EQ(gen.code, 0) << gen.err;
}

// Perplexity of a Q8 model runs through the decoder (its prefill, or with
// --decode its steps): close to the F32 model's, not equal to it.
TEST_F(Q8Model, PerplexityRunsThroughTheDecoder) {
  Result<Model> f32 = Status::error("unset");
  const std::string dir = saved("m", q8_config(false), 3, &f32);
  std::mt19937 rng(9);
  std::string ids;
  for (int32_t id : test::rand_ids(rng, 200, q8_config(false).vocab_size)) ids += std::to_string(id) + " ";
  const std::string file = (dir_ / "ids.txt").string();
  {
    std::FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(ids.c_str(), f);
    std::fclose(f);
  }
  auto loss = [&](const std::string& flags, const std::string& path) {
    const test::CmdResult r = test::stem_cmd("eval --model " + dir + " --data " + file + " --seq 40 --json " + flags);
    EXPECT_EQ(r.code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (j.is_discarded()) return -1.0;
    EXPECT_EQ(j.value("path", ""), path) << flags;
    EXPECT_EQ(j.value("windows", 0), 5);
    return j.value("loss", -1.0);
  };
  const double base = loss("", "forward"), prefill = loss("--dtype q8", "prefill"),
               steps = loss("--dtype q8 --decode", "decode"), f32_steps = loss("--decode", "decode");
  EXPECT_NEAR(f32_steps, base, 1e-5 * base);
  EXPECT_NE(prefill, base);
  EXPECT_NE(steps, prefill);
  EXPECT_NEAR(prefill, base, 0.02 * base);
  EXPECT_NEAR(steps, base, 0.02 * base);
}

}  // namespace
}  // namespace stem
