// The op table on every backend this build has (backends::available()), as
// llama.cpp's test-backend-ops does it: each op's float inputs go into the
// backend's own buffers through its stream, the op runs from the table, the
// outputs come back and are compared with the double-precision reference
// kernels (kernels/ref/). A backend added to the registry is tested here the
// day it is added; the CPU-only kernel tests (test_kernels*.cpp) go further
// (finite-difference gradients, every SIMD path, odd shapes).
//
// Also: the buffer/stream/event contract, the op table being complete where
// supports() says so, the message of a backend that was not built, and a
// whole Transformer forward and backward on each backend against the host's.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "core/bf16.h"
#include "backend_test_util.h"
#include "kernels/ref/ref_kernels.h"
#include "model/transformer.h"
#include "model/weights.h"

namespace {

using namespace stem::test;
using stem::DType;
using stem::backends::Backend;
namespace kern = stem::kernels;
namespace ref = stem::kernels::ref;

std::string backend_name(const ::testing::TestParamInfo<Backend*>& info) { return info.param->name(); }

INSTANTIATE_TEST_SUITE_P(Each, BackendOps, ::testing::ValuesIn(stem::backends::available()), backend_name);

TEST_P(BackendOps, OpTableHoldsEveryOpItSupports) {
  int supported = 0;
#define STEM_CHECK_OP(name)                                                              \
  if (be().supports(kern::Op::name, DType::F32)) {                                       \
    ++supported;                                                                        \
    EXPECT_NE(k().name, nullptr) << #name << " is supported but missing from the table"; \
  }                                                                                      \
  EXPECT_STREQ(kern::op_name(kern::Op::name), #name);
  STEM_KERNEL_OPS(STEM_CHECK_OP)
#undef STEM_CHECK_OP
  if (be().device() == stem::Device::kCpu) {
    EXPECT_EQ(supported, kern::kOpCount);
  }
}

TEST_P(BackendOps, BuffersStreamsAndEvents) {
  auto buf = be().alloc(4096);
  ASSERT_TRUE(buf.ok()) << buf.status().message();
  EXPECT_EQ((*buf)->device(), be().device());
  EXPECT_GE((*buf)->size(), 4096u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*buf)->data()) % 64, 0u);
  std::vector<uint8_t> host(4096, 0xAB), back(4096, 0x11);
  auto side = be().new_stream();
  side->copy(back.data(), (*buf)->data(), 4096);  // fresh buffers are zero
  ASSERT_TRUE(side->synchronize().ok());
  EXPECT_EQ(back, std::vector<uint8_t>(4096, 0));
  side->copy((*buf)->data(), host.data(), 4096);
  auto written = side->record();
  be().stream().wait(*written);  // the default stream sees the side stream's copy
  be().stream().fill_zero(static_cast<uint8_t*>((*buf)->data()) + 1024, 1024);
  be().stream().copy(back.data(), (*buf)->data(), 4096);
  ASSERT_TRUE(be().stream().record()->wait().ok());
  for (int i = 0; i < 4096; ++i) ASSERT_EQ(back[i], i >= 1024 && i < 2048 ? 0 : 0xAB) << "byte " << i;
}

TEST(Backends, CpuIsAlwaysThereAndAnUnbuiltOneSaysHowToGetIt) {
  auto cpu = stem::backends::get(stem::Device::kCpu);
  ASSERT_TRUE(cpu.ok());
  EXPECT_STREQ((*cpu)->name(), "cpu");
  EXPECT_EQ(stem::backends::available().front(), *cpu);
  auto cuda = stem::backends::get(stem::Device::kCuda);
  if (!cuda.ok()) {
    EXPECT_NE(cuda.status().message().find("STEM_CUDA=ON"), std::string::npos) << cuda.status().message();
    EXPECT_EQ(stem::backends::available().size(), 1u);
  }
}

TEST_P(BackendOps, LinearForwardAndBackward) {
  for (auto [N, in, out] : {std::array<int64_t, 3>{1, 5, 7}, {17, 24, 40}, {64, 96, 33}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " in=" << in << " out=" << out);
    const VecF x = randu(rng, N * in), W = randu(rng, out * in), y0 = randu(rng, N * out);
    float* y = dev.put(y0);
    k().linear_forward(y, dev.put(x), dev.put(W), N, in, out, true);
    VecD yd = to_d(y0);
    ref::linear_forward(yd.data(), to_d(x).data(), to_d(W).data(), N, in, out, true);
    EXPECT_TRUE(near_rel(dev.get(y, N * out), yd, kTol));

    const VecF dy = randu(rng, N * out);
    float* dx = dev.zeros(N * in);
    float* dW = dev.zeros(out * in);
    k().linear_backward(dx, dW, dev.put(dy), dev.put(x), dev.put(W), N, in, out, false);
    VecD dxd(N * in), dWd(out * in, 0.0);
    ref::linear_backward(dxd.data(), dWd.data(), to_d(dy).data(), to_d(x).data(), to_d(W).data(), N, in, out,
                         false);
    EXPECT_TRUE(near_rel(dev.get(dx, N * in), dxd, kTol));
    EXPECT_TRUE(near_rel(dev.get(dW, out * in), dWd, kTol));
  }
}

TEST_P(BackendOps, RmsNormForward) {
  const int64_t N = 13, d = 40;
  const VecF x = randu(rng, N * d), w = randu(rng, d);
  float* y = dev.zeros(N * d);
  float* rstd = dev.zeros(N);
  k().rmsnorm_forward(y, rstd, dev.put(x), dev.put(w), N, d, 1e-5f);
  VecD yd(N * d), rd(N);
  ref::rmsnorm_forward(yd.data(), rd.data(), to_d(x).data(), to_d(w).data(), N, d, 1e-5);
  EXPECT_TRUE(near_rel(dev.get(y, N * d), yd, kTol));
  EXPECT_TRUE(near_rel(dev.get(rstd, N), rd, kTol));
}

TEST_P(BackendOps, AttentionForward) {
  const int64_t B = 2, T = 9, H = 4, Hkv = 2, hd = 8;
  const VecF q = randu(rng, B * T * H * hd), kk = randu(rng, B * T * Hkv * hd), v = randu(rng, B * T * Hkv * hd);
  float* out = dev.zeros(B * T * H * hd);
  float* lse = dev.zeros(B * H * T);
  k().attention_forward(out, lse, dev.put(q), dev.put(kk), dev.put(v), B, T, H, Hkv, hd, nullptr);
  VecD od(B * T * H * hd), ld(B * H * T);
  ref::attention_forward(od.data(), ld.data(), to_d(q).data(), to_d(kk).data(), to_d(v).data(), B, T, H, Hkv, hd, nullptr);
  EXPECT_TRUE(near_rel(dev.get(out, B * T * H * hd), od, kTol));
  EXPECT_TRUE(near_rel(dev.get(lse, B * H * T), ld, kTol));
}

TEST_P(BackendOps, StemFfnForwardReadsEachPositionsRow) {
  const int64_t N = 11, d = 16, f = 24, R = 5;
  const VecF x = randu(rng, N * d), Wg = randu(rng, f * d), Wd = randu(rng, d * f), rows = randu(rng, R * f);
  const VecI row_of = rand_ids(rng, N, R);  // host memory, as the op table says
  float* y = dev.zeros(N * d);
  float* g = dev.zeros(N * f);
  float* hact = dev.zeros(N * f);
  k().stem_ffn_forward(y, g, hact, dev.put(x), dev.put(Wg), dev.put(Wd), dev.put(rows), row_of.data(), N, d, f);
  VecD yd(N * d), gd(N * f), hd(N * f);
  ref::stem_ffn_forward(yd.data(), gd.data(), hd.data(), to_d(x).data(), to_d(Wg).data(), to_d(Wd).data(),
                        to_d(rows).data(), row_of.data(), N, d, f);
  EXPECT_TRUE(near_rel(dev.get(y, N * d), yd, kTol));
  EXPECT_TRUE(near_rel(dev.get(hact, N * f), hd, kTol));
}

TEST_P(BackendOps, CrossEntropyForward) {
  const int64_t N = 7, V = 50;
  const VecF logits = randu(rng, N * V, 4.0f);
  VecI targets = rand_ids(rng, N, V);
  targets[3] = -1;  // ignored
  float* losses = dev.zeros(N);
  const double sum = k().cross_entropy_forward(losses, dev.put(logits), targets.data(), N, V);
  VecD ld(N);
  const double want = ref::cross_entropy_forward(ld.data(), to_d(logits).data(), targets.data(), N, V);
  EXPECT_NEAR(sum, want, 1e-5 * std::abs(want));
  EXPECT_TRUE(near_rel(dev.get(losses, N), ld, kTol));
}

TEST_P(BackendOps, ElementwiseOps) {
  const int64_t n = 70000;  // above the CPU's threading threshold
  const VecF a = randu(rng, n), b = randu(rng, n);
  float* out = dev.zeros(n);
  k().add(out, dev.put(a), dev.put(b), n);
  VecD want(n);
  ref::add(want.data(), to_d(a).data(), to_d(b).data(), n);
  EXPECT_TRUE(near_rel(dev.get(out, n), want, 1e-7));
  float* acc = dev.put(a);
  k().add_inplace(acc, dev.put(b), n);
  EXPECT_TRUE(near_rel(dev.get(acc, n), want, 1e-7));

  const int64_t R = 300, C = 257;
  const VecF x = randu(rng, R * C);
  VecF s = randu(rng, R);
  s[0] = 1.0f;
  float* xs = dev.put(x);
  k().scale_rows(xs, s.data(), R, C);
  VecD xd = to_d(x);
  ref::scale_rows(xd.data(), s.data(), R, C);
  EXPECT_TRUE(near_rel(dev.get(xs, R * C), xd, 1e-7));
}

TEST_P(BackendOps, TiedEmbeddingGradientAddsIntoTheTableRows) {
  const int64_t N = 200, V = 37, d = 20;
  const VecI ids = rand_ids(rng, N, V);
  const kern::RowIndex index = kern::build_row_index(ids.data(), N, V);
  const VecF dh = randu(rng, N * d), table0 = randu(rng, V * d);
  float* dtable = dev.put(table0);
  k().embedding_backward_dense(dtable, dev.put(dh), index, d);
  VecD want = to_d(table0);
  ref::embedding_backward_dense(want.data(), to_d(dh).data(), index, d);
  EXPECT_TRUE(near_rel(dev.get(dtable, V * d), want, kTol));
}

TEST_P(BackendOps, AdamWUpdate) {
  const int64_t n = 1000;
  const VecF p = randu(rng, n), m = randu(rng, n, 0.1f), g = randu(rng, n);
  VecF v = randu(rng, n, 0.1f);
  for (float& x : v) x = std::abs(x);
  kern::AdamWHyper h;
  h.lr = 1e-2f;
  h.weight_decay = 0.1f;
  h.step = 3;
  float *pp = dev.put(p), *mm = dev.put(m), *vv = dev.put(v);
  k().adamw_update(pp, mm, vv, dev.put(g), n, h);
  VecD pd = to_d(p), md = to_d(m), vd = to_d(v);
  ref::adamw_update(pd.data(), md.data(), vd.data(), to_d(g).data(), n, h);
  EXPECT_TRUE(near_rel(dev.get(pp, n), pd, kTol));
  EXPECT_TRUE(near_rel(dev.get(vv, n), vd, kTol));
}

TEST_P(BackendOps, MatvecF32AndBf16) {  // and matvec_rows
  const int64_t out = 70, in = 130;
  const VecF W = randu(rng, out * in), x = randu(rng, in);
  float* y = dev.zeros(out);
  k().matvec(y, dev.put(W), dev.put(x), out, in, false);
  VecD yd(out);
  ref::linear_forward(yd.data(), to_d(x).data(), to_d(W).data(), 1, in, out, false);
  EXPECT_TRUE(near_rel(dev.get(y, out), yd, kTol));
  // A few rows at once (a batched decode step).
  const int64_t n = 5;
  const VecF xs = randu(rng, n * in);
  float* ys = dev.zeros(n * out);
  k().matvec_rows(ys, dev.put(W), dev.put(xs), n, out, in, false);
  VecD ysd(n * out);
  ref::linear_forward(ysd.data(), to_d(xs).data(), to_d(W).data(), n, in, out, false);
  EXPECT_TRUE(near_rel(dev.get(ys, n * out), ysd, kTol));
  if (!be().supports(kern::Op::matvec_bf16, DType::BF16)) return;
  // BF16 weights: the widened values are the reference's W.
  std::vector<uint16_t> Wb(out * in);
  VecF Ww(out * in);
  for (int64_t i = 0; i < out * in; ++i) Ww[i] = stem::core::bf16_to_float(Wb[i] = stem::core::float_to_bf16(W[i]));
  auto wb_buf = stem::backends::must_alloc(be(), Wb.size() * 2);
  be().stream().copy(wb_buf->data(), Wb.data(), Wb.size() * 2);
  k().matvec_bf16(y, static_cast<const uint16_t*>(wb_buf->data()), dev.put(x), out, in, false);
  ref::linear_forward(yd.data(), to_d(x).data(), to_d(Ww).data(), 1, in, out, false);
  EXPECT_TRUE(near_rel(dev.get(y, out), yd, kTol));
  k().matvec_rows_bf16(ys, static_cast<const uint16_t*>(wb_buf->data()), dev.put(xs), n, out, in, false);
  ref::linear_forward(ysd.data(), to_d(xs).data(), to_d(Ww).data(), n, in, out, false);
  EXPECT_TRUE(near_rel(dev.get(ys, n * out), ysd, kTol));
}

// A whole model on the backend (weights copied into its buffers) against the
// same model on the host: the loss, the logits and every gradient.
TEST_P(BackendOps, TransformerForwardAndBackwardMatchTheHost) {
  stem::ModelConfig cfg;
  cfg.vocab_size = 64;
  cfg.hidden_size = 32;
  cfg.intermediate_size = 48;
  cfg.num_hidden_layers = 3;
  cfg.num_attention_heads = 4;
  cfg.num_key_value_heads = 2;
  cfg.max_position_embeddings = 32;
  cfg.ffn_types = {stem::FfnType::Dense, stem::FfnType::Stem, stem::FfnType::Stem};
  const auto specs = stem::model::tensor_specs(cfg);
  auto host_w = stem::model::TensorList::allocate(specs);
  stem::model::init_weights(host_w, 5);
  auto dev_w = stem::model::TensorList::allocate(specs, nullptr, be());
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ(dev_w[i].device(), be().device());
    be().stream().copy(dev_w[i].raw(), host_w[i].raw(), host_w[i].nbytes());
  }
  stem::model::Transformer host(cfg, std::move(host_w)), on(cfg, std::move(dev_w));
  EXPECT_EQ(&on.backend(), &be());
  const VecI tokens = rand_ids(rng, 2 * 12, cfg.vocab_size);
  const double want = host.forward(tokens.data(), 2, 12);
  const double got = on.forward(tokens.data(), 2, 12);
  EXPECT_NEAR(got, want, 1e-5 * std::abs(want));
  const int64_t NV = 2 * 12 * cfg.vocab_size;
  VecF host_logits(host.logits(), host.logits() + NV);
  EXPECT_TRUE(near_rel(dev.get(on.logits(), NV), host_logits, kTol));
  auto gh = host.make_gradients(24), gd = on.make_gradients(24);
  host.backward(gh);
  on.backward(gd);
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i].name);
    EXPECT_TRUE(near_rel(gd.dense_copy(i), gh.dense_copy(i), 1e-4));
  }
}

}  // namespace
