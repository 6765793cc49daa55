// Mixed precision: the BF16 GEMM against double references (on the rounded
// operands: F32 accumulation error only; on the unrounded ones: within the
// bound that BF16 rounding of both operands gives), the parallel rounding
// against the scalar one, a BF16 forward and backward against the F32 ones on
// the same weights within a bound derived from BF16 rounding, the refusals
// (hash-MoE layers; a CPU without native BF16, simulated through oneDNN's
// ONEDNN_MAX_CPU_ISA), exact resume of a BF16 run, and `stem train
// --precision bf16` end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <random>

#include "cli_test_util.h"
#include "core/bf16.h"
#include "kernel_test_util.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref_kernels.h"
#include "model/engine.h"
#include "model/transformer.h"
#include "stem/model.h"
#include "stem/train.h"
#include "train_test_util.h"

namespace stem {
namespace {
using test::VecF;

constexpr double kUnit = 1.0 / 256;        // 2^-8: BF16's spacing relative to a value (8-bit significand)
constexpr double kF32 = 1.0 / 16777216.0;  // 2^-24

std::vector<uint16_t> rounded(const VecF& x) {
  std::vector<uint16_t> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = core::float_to_bf16(x[i]);
  return r;
}

// Element (i, j) of op(X) for a row-major X with leading dimension ld.
template <class T>
double at(const T* X, bool trans, int64_t i, int64_t j, int64_t ld) {
  const auto v = trans ? X[j * ld + i] : X[i * ld + j];
  if constexpr (std::is_same_v<T, uint16_t>) return core::bf16_to_float(v);
  else return v;
}

TEST(Bf16Gemm, MatchesDoubleOnRoundedAndUnroundedOperands) {
  std::mt19937 rng(3);
  const int64_t M = 37, N = 45, K = 131;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (float beta : {0.0f, 1.0f, 0.5f}) {
        const float alpha = ta ? 0.75f : 1.0f;
        const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
        const VecF Af = test::randu(rng, (ta ? K : M) * lda), Bf = test::randu(rng, (tb ? N : K) * ldb);
        const VecF C0 = test::randu(rng, M * ldc);
        const auto A = rounded(Af), B = rounded(Bf);
        VecF C = C0;
        kernels::gemm_bf16(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            double exact16 = 0, exact = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
              exact16 += at(A.data(), ta, i, k, lda) * at(B.data(), tb, k, j, ldb);
              exact += at(Af.data(), ta, i, k, lda) * at(Bf.data(), tb, k, j, ldb);
              mag += std::abs(at(Af.data(), ta, i, k, lda) * at(Bf.data(), tb, k, j, ldb));
            }
            const double c0 = C0[i * ldc + j], got = C[i * ldc + j];
            const double bound_mag = std::abs(alpha) * mag * 1.01 + std::abs(beta * c0);
            // F32 sums of exact products: K + 2 roundings at most.
            ASSERT_NEAR(got, alpha * exact16 + beta * c0, (K + 2) * kF32 * bound_mag)
                << "ta " << ta << " tb " << tb << " beta " << beta << " at " << i << "," << j;
            // Each operand within 2^-9 relative of its F32 value: each product
            // within 2^-8 (plus 2^-18), then the same accumulation.
            ASSERT_NEAR(got, alpha * exact + beta * c0, (kUnit * 1.01 + (K + 2) * kF32) * bound_mag)
                << "ta " << ta << " tb " << tb << " beta " << beta << " at " << i << "," << j;
          }
        // A C not written outside the M x N block (leading dimension padding).
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = N; j < ldc; ++j) ASSERT_EQ(C[i * ldc + j], C0[i * ldc + j]);
      }
}

TEST(Bf16Gemm, EmptyReductionScalesC) {
  VecF C{1, 2, 3, 4};
  kernels::gemm_bf16(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, C.data(), 2);
  EXPECT_EQ(C, (VecF{0.5f, 1, 1.5f, 2}));
  kernels::gemm_bf16(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.0f, C.data(), 2);
  EXPECT_EQ(C, (VecF{0, 0, 0, 0}));
}

TEST(Bf16Round, ParallelEqualsScalarIncludingTiesAndSpecials) {
  std::mt19937 rng(5);
  VecF x = test::randu(rng, 100003, 1e3f);
  const float inf = std::numeric_limits<float>::infinity();
  const float specials[] = {0.0f, -0.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN(),
                            1.00390625f /* tie: 1 + 2^-8 -> 1 */, 1.01171875f /* tie -> up */,
                            3.3895314e38f /* rounds to inf */, 1e-40f /* subnormal */};
  for (size_t i = 0; i < std::size(specials); ++i) x[i * 9973] = specials[i];
  std::vector<uint16_t> got(x.size());
  kernels::round_to_bf16(got.data(), x.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], core::float_to_bf16(x[i])) << "at " << i << ": " << x[i];
}

VecF widened(const std::vector<uint16_t>& x) {
  VecF r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = core::bf16_to_float(x[i]);
  return r;
}

// BF16 attention against the double oracle on the same (rounded) q, k, v, so
// that what remains is the kernel's own rounding: lse from exact products
// summed in F32 (tight); out = P V with each probability rounded (2^-9
// relative, and they sum to 1: within 2^-9 max|v|, 2^-8 allowed); the
// gradients through rounded dO, then dS and P (three roundings of 2^-9 on
// their paths, plus the cancellation in dS = P (dP - D): 4 x 2^-8 of the
// largest gradient). With and without a document mask, over several query
// blocks and grouped heads.
TEST(Bf16Attention, ForwardAndBackwardMatchDoubleOnRoundedInputs) {
  std::mt19937 rng(21);
  struct Case {
    int64_t B, T, H, Hkv, hd;
    bool mask;
  };
  for (const Case& c : {Case{2, 130, 4, 2, 16, false}, Case{1, 257, 2, 1, 32, false}, Case{2, 140, 4, 4, 8, true}}) {
    SCOPED_TRACE("T=" + std::to_string(c.T) + (c.mask ? " masked" : ""));
    const int64_t nq = c.B * c.T * c.H * c.hd, nkv = c.B * c.T * c.Hkv * c.hd;
    const auto q = rounded(test::randu(rng, nq, 2.0f)), k = rounded(test::randu(rng, nkv, 2.0f)),
               v = rounded(test::randu(rng, nkv));
    const VecF dout = test::randu(rng, nq);
    std::vector<int32_t> starts;
    if (c.mask) {
      std::vector<int32_t> tokens = test::rand_ids(rng, c.B * c.T, 20);  // id 0 starts a document
      starts.resize(tokens.size());
      kernels::doc_starts(starts.data(), tokens.data(), c.B, c.T, 0, -1);
    }
    const int32_t* ds = c.mask ? starts.data() : nullptr;
    VecF out(nq), lse(c.B * c.H * c.T), dq(nq), dk(nkv), dv(nkv);
    kernels::attention_forward_bf16(out.data(), lse.data(), q.data(), k.data(), v.data(), c.B, c.T, c.H, c.Hkv,
                                    c.hd, ds);
    kernels::attention_backward_bf16(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(),
                                     k.data(), v.data(), c.B, c.T, c.H, c.Hkv, c.hd, ds);
    const test::VecD qd = test::to_d(widened(q)), kd = test::to_d(widened(k)), vd = test::to_d(widened(v));
    test::VecD outw(nq), lsew(lse.size()), dqw(nq), dkw(nkv), dvw(nkv);
    kernels::ref::attention_forward(outw.data(), lsew.data(), qd.data(), kd.data(), vd.data(), c.B, c.T, c.H,
                                    c.Hkv, c.hd, ds);
    kernels::ref::attention_backward<double>(dqw.data(), dkw.data(), dvw.data(), test::to_d(dout).data(), nullptr,
                                             nullptr, qd.data(), kd.data(), vd.data(), c.B, c.T, c.H, c.Hkv, c.hd,
                                             ds);
    EXPECT_TRUE(test::near_rel(lse, lsew, 1e-5)) << "lse";
    for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], outw[i], kUnit * test::max_abs(vd)) << "out " << i;
    EXPECT_TRUE(test::near_rel(dq, dqw, 4 * kUnit)) << "dq";
    EXPECT_TRUE(test::near_rel(dk, dkw, 4 * kUnit)) << "dk";
    EXPECT_TRUE(test::near_rel(dv, dvw, 4 * kUnit)) << "dv";
    // Rounded for real: not the F32 kernel's numbers.
    VecF out32(nq), lse32(lse.size());
    const VecF qf = widened(q), kf = widened(k), vf = widened(v);
    kernels::attention_forward(out32.data(), lse32.data(), qf.data(), kf.data(), vf.data(), c.B, c.T, c.H, c.Hkv,
                               c.hd, ds);
    EXPECT_NE(out, out32);
  }
}

ModelConfig mixed_config(bool tied) {
  ModelConfig c;
  c.vocab_size = 97;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = tied;
  c.ffn_types = {FfnType::Dense, FfnType::Stem, FfnType::Stem};
  return c;
}

struct Pass {
  double loss = 0;
  VecF logits;
  std::vector<std::vector<float>> grads;  // dense copies, per tensor
};

Pass run_pass(model::Transformer& tr, const std::vector<int32_t>& tokens, int64_t B, int64_t T) {
  Pass p;
  p.loss = tr.forward(tokens.data(), B, T);
  p.logits.assign(tr.logits(), tr.logits() + B * T * tr.config().vocab_size);
  model::Gradients g = tr.make_gradients(B * T);
  g.zero();
  tr.backward(g);
  for (size_t i = 0; i < tr.weights().size(); ++i) p.grads.push_back(g.dense_copy(i));
  return p;
}

// The BF16 step against the F32 step on the same weights and tokens. Every
// BF16 product has relative error up to 2^-8 of the sum of its terms'
// magnitudes; a gradient reached through n of them carries up to about n
// such errors. Longest path here: forward to the logits and back through the
// head and every layer (attention: q/k/v, scores, P V, o; FFN: gate/up,
// down): n = 2 (1 + 6 L) = 38 for L = 3, so 38 * 2^-8 = 0.15 relative to the
// tensor's largest gradient. A lost or transposed product is off by O(1).
TEST(Bf16Model, ForwardAndGradientsMatchF32WithinTheRoundingBound) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    auto m = Model::init(mixed_config(tied), 11);
    ASSERT_TRUE(m.ok()) << m.status().message();
    model::Transformer& tr = engine(*m);
    const int64_t B = 2, T = 48;
    std::mt19937 rng(9);
    const std::vector<int32_t> tokens = test::rand_ids(rng, B * T, tr.config().vocab_size);
    const Pass f32 = run_pass(tr, tokens, B, T);
    ASSERT_TRUE(tr.set_precision(Precision::BF16).ok());
    const Pass b16 = run_pass(tr, tokens, B, T);
    const double n = 2 * (1 + 6 * tr.config().num_hidden_layers), tol = n * kUnit;
    EXPECT_NEAR(b16.loss, f32.loss, tol * f32.loss);
    EXPECT_TRUE(test::near_rel(b16.logits, f32.logits, tol));
    double worst = 0;
    for (size_t i = 0; i < f32.grads.size(); ++i) {
      if (f32.grads[i].empty() || test::max_abs(f32.grads[i]) == 0) continue;
      EXPECT_TRUE(test::near_rel(b16.grads[i], f32.grads[i], tol)) << tr.weights().spec(i).name;
      double err = 0;
      for (size_t j = 0; j < f32.grads[i].size(); ++j)
        err = std::max(err, std::abs(double(b16.grads[i][j]) - f32.grads[i][j]));
      worst = std::max(worst, err / test::max_abs(f32.grads[i]));
    }
    // BF16 is not F32 in disguise: the rounding shows.
    EXPECT_GT(worst, 1e-4);
    // Back to F32: the same numbers as before, bit for bit.
    ASSERT_TRUE(tr.set_precision(Precision::F32).ok());
    const Pass again = run_pass(tr, tokens, B, T);
    EXPECT_EQ(again.loss, f32.loss);
    EXPECT_EQ(again.grads, f32.grads);
  }
}

TEST(Bf16Model, HashMoeLayerIsRefusedByName) {
  ModelConfig c = mixed_config(false);
  c.ffn_types[2] = FfnType::HashMoe;
  c.num_hash_experts = 2;
  auto m = Model::init(c, 1);
  ASSERT_TRUE(m.ok());
  const Status s = engine(*m).set_precision(Precision::BF16);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("layer 2 is hash_moe"), std::string::npos) << s.message();
}

// The tiny data's vocabulary, all-dense-or-STEM (hash-MoE trains in F32 only).
std::string bf16_config() {
  const std::string config = (test::scratch() / "bf16_model.json").string();
  std::ofstream(config) << R"({"model_type": "stem", "vocab_size": 400, "hidden_size": 32,
    "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
    "max_position_embeddings": 64, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
    "ffn_types": ["dense", "stem", "stem"], "num_hash_experts": 0})";
  return config;
}

// BF16 steps are as deterministic as F32 ones: a run stopped and resumed
// gives the losses of one never stopped, bit for bit.
TEST(Bf16Train, ResumedRunEqualsUninterrupted) {
  if (!kernels::cpu_has_bf16()) GTEST_SKIP() << "this CPU has no native BF16 products";
  TrainOptions o;
  o.config_path = bf16_config();
  o.data_dir = test::tiny().data;
  o.steps = 6;
  o.batch = 2;
  o.seq = 32;
  o.accum = 2;
  o.lr = 3e-3f;
  o.warmup = 2;
  o.eval_every = 3;
  o.eval_tokens = 256;
  o.save_every = 2;
  o.peak_gflops = 100;
  o.force = true;
  o.precision = Precision::BF16;
  o.out_dir = (test::scratch() / "bf16_full").string();
  const auto full = test::run_losses(o);
  ASSERT_EQ(full.size(), 6u);
  TrainOptions b = o;
  b.out_dir = (test::scratch() / "bf16_resumed").string();
  const auto first = test::run_losses(b, 4);
  b.resume = true;
  b.force = false;
  const auto rest = test::run_losses(b);
  ASSERT_EQ(first.size() + rest.size(), 6u);
  for (const auto& [step, loss] : first) EXPECT_EQ(loss, full.at(step)) << "step " << step;
  for (const auto& [step, loss] : rest) EXPECT_EQ(loss, full.at(step)) << "step " << step;
  // And not the F32 run's losses.
  TrainOptions f = o;
  f.precision = Precision::F32;
  f.out_dir = (test::scratch() / "bf16_as_f32").string();
  const auto f32 = test::run_losses(f);
  EXPECT_NE(f32.at(6), full.at(6));
  EXPECT_NEAR(f32.at(6), full.at(6), 0.05);
}

TEST(Bf16Cli, TrainsWhereNativeAndRefusesWhereNot) {
  const std::string out = (test::scratch() / "bf16_run").string();
  const std::string config = bf16_config();
  const std::string args = "train --config " + config + " --data " + test::tiny().data + " --out " +
                           out + " --steps 3 --batch 2 --seq 32 --eval-every 3 --eval-tokens 256 --peak-gflops 100 "
                           "--force --precision bf16 --json";
  // A CPU without AVX512-BF16, as oneDNN sees it under ONEDNN_MAX_CPU_ISA.
  const test::CmdResult no = test::stem_cmd_raw("ONEDNN_MAX_CPU_ISA=AVX512_CORE " + std::string(STEM_BINARY) + " " + args);
  EXPECT_EQ(no.code, 1) << no.err;
  EXPECT_NE(no.err.find("--precision bf16 needs a CPU that multiplies BF16 natively"), std::string::npos) << no.err;
  const test::CmdResult bench =
      test::stem_cmd_raw("ONEDNN_MAX_CPU_ISA=AVX512_CORE " + std::string(STEM_BINARY) + " bench train --config " + config + " --batch 1 --seq 16 --steps 1 --no-peak --precision bf16");
  EXPECT_EQ(bench.code, 1) << bench.err;
  EXPECT_NE(bench.err.find("no native BF16 products"), std::string::npos) << bench.err;
  EXPECT_NE(test::stem_cmd("train --precision f16 --data x --out y").code, 0);
  if (!kernels::cpu_has_bf16()) GTEST_SKIP() << "this CPU has no native BF16 products";
  const test::CmdResult yes = test::stem_cmd(args);
  ASSERT_EQ(yes.code, 0) << yes.err;
  EXPECT_NE(yes.out.find("\"val_loss\""), std::string::npos) << yes.out;
  // The run remembers its precision: resuming in F32 is refused by name.
  const test::CmdResult resume = test::stem_cmd("train --config " + config + " --data " +
                                                test::tiny().data + " --out " + out + " --steps 4 --batch 2 "
                                                "--seq 32 --peak-gflops 100 --resume");
  EXPECT_NE(resume.code, 0);
  EXPECT_NE(resume.err.find("precision"), std::string::npos) << resume.err;
}

}  // namespace
}  // namespace stem
