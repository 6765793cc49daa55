// Model-level tests that need no PyTorch fixture: checkpoint validation against
// the config (missing, unexpected, misshapen, mistyped tensors; hash tables out
// of range), token validation, save/load round trips (F32 bitwise, BF16
// widened), init determinism and statistics, and the row-sparse gradient
// (only rows of the batch's tokens are nonzero).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <set>
#include <unistd.h>
#include <cstring>
#include <functional>

#include "core/bf16.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "model/engine.h"
#include "model/tensor_list.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "stem/model.h"

namespace stem {
namespace {
namespace fs = std::filesystem;

ModelConfig small_config() {
  ModelConfig c;
  c.vocab_size = 53;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  c.ffn_types = {FfnType::Dense, FfnType::Stem, FfnType::HashMoe};
  c.num_hash_experts = 3;
  return c;
}

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("stem_model_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Saves a fresh model, then rewrites its weights file through `edit`.
  std::string model_with(const std::function<void(std::vector<io::SafetensorsItem>&,
                                                  std::vector<std::vector<std::byte>>&)>& edit) {
    auto m = Model::init(small_config(), 7);
    EXPECT_TRUE(m.ok());
    const std::string d = (dir_ / "m").string();
    EXPECT_TRUE(m->save(d).ok());
    auto f = io::SafetensorsFile::open(d + "/model.safetensors");
    EXPECT_TRUE(f.ok()) << f.status().message();
    std::vector<std::vector<std::byte>> store;
    std::vector<io::SafetensorsItem> items;
    for (const auto& e : f->entries()) {
      store.emplace_back(f->data(e), f->data(e) + e.nbytes);
      items.push_back({e.name, e.dtype, e.shape, nullptr});
    }
    edit(items, store);
    for (size_t i = 0; i < items.size(); ++i)
      if (!items[i].data) items[i].data = store[i].data();
    EXPECT_TRUE(io::write_safetensors(d + "/model.safetensors", items).ok());
    return d;
  }

  fs::path dir_;
};

std::vector<int32_t> random_tokens(int64_t n, int64_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> t(n);
  for (auto& x : t) x = dist(rng);
  return t;
}

TEST_F(ModelTest, SaveLoadRoundTripIsBitwise) {
  auto m = Model::init(small_config(), 3);
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(m->save((dir_ / "a").string()).ok());
  auto l = Model::load((dir_ / "a").string());
  ASSERT_TRUE(l.ok()) << l.status().message();
  const auto toks = random_tokens(2 * 9, 53, 1);
  std::vector<float> la, lb;
  ASSERT_TRUE(m->score(toks, 2, 9, &la).ok());
  ASSERT_TRUE(l->score(toks, 2, 9, &lb).ok());
  EXPECT_EQ(la, lb);
}

// init_rows: every float matrix drawn a block of rows at a time (blocks that
// do not divide the rows) equals init_weights' whole tensor, bit for bit; and
// read_rows hands back a saved tensor's rows, widening BF16, or names what is
// wrong.
TEST_F(ModelTest, RowBlocksEqualWholeTensors) {
  model::TensorList w = model::TensorList::allocate(model::tensor_specs(small_config()));
  model::init_weights(w, 11);
  int matrices = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const model::TensorSpec& s = w.spec(i);
    if (s.shape.size() != 2 || s.dtype != DType::F32) continue;
    std::vector<float> got(static_cast<size_t>(w[i].numel()), -1.0f);
    int64_t next = 0;
    model::init_rows(w, i, 11, 7, [&](int64_t r0, int64_t n, const float* rows) {
      EXPECT_EQ(r0, next);
      next = r0 + n;
      std::memcpy(got.data() + r0 * s.shape[1], rows, sizeof(float) * n * s.shape[1]);
    });
    EXPECT_EQ(next, s.shape[0]) << s.name;
    EXPECT_EQ(std::memcmp(got.data(), w[i].f32(), got.size() * sizeof(float)), 0) << s.name;
    ++matrices;
  }
  EXPECT_GT(matrices, 5);

  const int t = w.find("model.layers.1.mlp.stem_embedding.weight");
  ASSERT_GE(t, 0);
  const Shape shape = w.spec(t).shape;
  std::vector<uint16_t> half(static_cast<size_t>(w[t].numel()));
  for (size_t k = 0; k < half.size(); ++k) half[k] = core::float_to_bf16(w[t].f32()[k]);
  const std::string path = (dir_ / "rows.safetensors").string();
  const std::vector<io::SafetensorsItem> items = {{"f", DType::F32, shape, w[t].raw()},
                                                  {"b", DType::BF16, shape, half.data()}};
  ASSERT_TRUE(io::write_safetensors(path, items).ok());
  auto f = io::SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok());
  for (const char* name : {"f", "b"}) {
    std::vector<float> got;
    ASSERT_TRUE(io::read_rows(*f, name, shape, 10, [&](int64_t r0, int64_t n, const float* rows) {
                  EXPECT_EQ(static_cast<int64_t>(got.size()), r0 * shape[1]);
                  got.insert(got.end(), rows, rows + n * shape[1]);
                }).ok());
    ASSERT_EQ(got.size(), half.size());
    for (size_t k = 0; k < got.size(); ++k)
      ASSERT_EQ(got[k], std::string(name) == "f" ? w[t].f32()[k] : core::bf16_to_float(half[k])) << name << k;
  }
  auto none = [](int64_t, int64_t, const float*) {};
  Status missing = io::read_rows(*f, "nope", shape, 10, none);
  EXPECT_NE(missing.message().find("rows.safetensors: missing tensor 'nope'"), std::string::npos) << missing.message();
  Status wrong = io::read_rows(*f, "f", {shape[0] + 1, shape[1]}, 10, none);
  EXPECT_NE(wrong.message().find("tensor 'f' is F32 [53, 24], expected F32 or BF16 [54, 24]"), std::string::npos)
      << wrong.message();
}

// convert_checkpoint: BF16 weights that load back as their widening (scores
// equal to those of a model holding the rounded values), the tables only when
// asked; the source is never the output; pack_checkpoint_tables writes the pack.
TEST_F(ModelTest, ConvertAndPackThroughThePublicApi) {
  auto m = Model::init(small_config(), 3);
  ASSERT_TRUE(m.ok());
  const std::string src = (dir_ / "src").string(), bf = (dir_ / "bf16").string(), tb = (dir_ / "tables").string();
  ASSERT_TRUE(m->save(src).ok());
  auto bytes = convert_checkpoint(src, bf, WeightDType::BF16);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  EXPECT_LT(*bytes, m->n_parameters() * 4);  // norms stay F32, the rest halves
  EXPECT_GT(*bytes, m->n_parameters() * 2);
  auto tables_only = convert_checkpoint(src, tb, WeightDType::BF16, /*tables_only=*/true);
  ASSERT_TRUE(tables_only.ok());
  EXPECT_GT(*tables_only, *bytes);
  EXPECT_FALSE(convert_checkpoint(src, src, WeightDType::BF16).ok());
  EXPECT_FALSE(convert_checkpoint(src, (dir_ / "x").string(), WeightDType::Auto).ok());
  auto pack = pack_checkpoint_tables(bf);
  ASSERT_TRUE(pack.ok()) << pack.status().message();
  EXPECT_TRUE(fs::exists(*pack));
  LoadOptions lo;
  lo.tables = TablesIn::Disk;
  auto packed = Model::load(bf, lo);  // BF16 tables from the pack, widened as read
  auto widened = Model::load(bf);
  ASSERT_TRUE(packed.ok() && widened.ok());
  const auto toks = random_tokens(9, 53, 2);
  auto a = packed->score(toks, 1, 9), b = widened->score(toks, 1, 9);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

TEST_F(ModelTest, InitIsDeterministicAndSeedDependent) {
  auto a = Model::init(small_config(), 11), b = Model::init(small_config(), 11), c = Model::init(small_config(), 12);
  const auto& wa = engine(*a).weights();
  const auto& wb = engine(*b).weights();
  const auto& wc = engine(*c).weights();
  bool any_diff = false;
  for (size_t i = 0; i < wa.size(); ++i) {
    ASSERT_EQ(0, std::memcmp(wa[i].raw(), wb[i].raw(), wa[i].nbytes())) << wa.spec(i).name;
    any_diff |= std::memcmp(wa[i].raw(), wc[i].raw(), wa[i].nbytes()) != 0;
  }
  EXPECT_TRUE(any_diff);
}

TEST_F(ModelTest, InitStatisticsFollowTheSpecs) {
  ModelConfig c = small_config();
  c.vocab_size = 2000;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  auto m = Model::init(c, 5);
  const auto& w = engine(*m).weights();
  for (size_t i = 0; i < w.size(); ++i) {
    const auto& s = w.spec(i);
    const int64_t n = w[i].numel();
    if (s.dtype == DType::I32) {  // balanced: expert loads differ by at most one
      std::vector<int64_t> load(c.num_hash_experts, 0);
      for (int64_t k = 0; k < n; ++k) load.at(w[i].i32()[k])++;
      EXPECT_LE(*std::max_element(load.begin(), load.end()) - *std::min_element(load.begin(), load.end()), 1);
      continue;
    }
    const float* p = w[i].f32();
    if (s.init == model::InitKind::Ones) {
      for (int64_t k = 0; k < n; ++k) ASSERT_EQ(p[k], 1.0f);
      continue;
    }
    double sum = 0, sq = 0, mx = 0;
    for (int64_t k = 0; k < n; ++k) {
      sum += p[k];
      sq += double(p[k]) * p[k];
      mx = std::max(mx, std::abs(double(p[k])));
    }
    const double sd = std::sqrt(sq / n - (sum / n) * (sum / n));
    // truncation at 3 sigma shrinks the std by about 1.4%
    const double want = s.init == model::InitKind::TruncNormal ? s.init_std * 0.9866 : s.init_std;
    EXPECT_NEAR(sd / want, 1.0, 0.05) << s.name;
    if (s.init == model::InitKind::TruncNormal) {
      EXPECT_LE(mx, 3.0 * s.init_std * (1 + 1e-6)) << s.name;
    }
  }
  // STEM table sigma = sqrt(2 / (V + f)), down_proj sigma = f^-0.5
  EXPECT_DOUBLE_EQ(w.spec(w.find("model.layers.1.mlp.stem_embedding.weight")).init_std, std::sqrt(2.0 / (2000 + 96)));
  EXPECT_DOUBLE_EQ(w.spec(w.find("model.layers.1.mlp.down_proj.weight")).init_std, 1.0 / std::sqrt(96.0));
}

TEST_F(ModelTest, Bf16CheckpointLoadsWidened) {
  std::vector<std::vector<uint16_t>> bf;
  const std::string d = model_with([&](auto& items, auto& store) {
    bf.resize(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      if (items[i].dtype != DType::F32) continue;
      const float* src = reinterpret_cast<const float*>(store[i].data());
      const size_t n = store[i].size() / 4;
      bf[i].resize(n);
      for (size_t k = 0; k < n; ++k) bf[i][k] = core::float_to_bf16(src[k]);
      items[i].dtype = DType::BF16;
      items[i].data = bf[i].data();
    }
  });
  auto m = Model::load(d);
  ASSERT_TRUE(m.ok()) << m.status().message();
  const auto& w = engine(*m).weights();
  const int e = w.find("model.embed_tokens.weight");
  EXPECT_EQ(w[e].f32()[3], core::bf16_to_float(bf[0][3]));
}

TEST_F(ModelTest, MissingTensorIsNamed) {
  const std::string d = model_with([](auto& items, auto& store) {
    items.erase(items.begin() + 2);
    store.erase(store.begin() + 2);
  });
  auto m = Model::load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("missing tensor"), std::string::npos) << m.status().message();
  EXPECT_NE(m.status().message().find("model.safetensors"), std::string::npos);
}

TEST_F(ModelTest, UnexpectedTensorIsNamed) {
  std::vector<float> extra(4, 0.0f);
  const std::string d = model_with([&](auto& items, auto& store) {
    items.push_back({"model.layers.9.mlp.up_proj.weight", DType::F32, {2, 2}, extra.data()});
    store.emplace_back();
  });
  auto m = Model::load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("unexpected tensor 'model.layers.9.mlp.up_proj.weight'"), std::string::npos)
      << m.status().message();
}

TEST_F(ModelTest, WrongShapeIsNamedWithBothShapes) {
  const std::string d = model_with([](auto& items, auto&) {
    for (auto& it : items)
      if (it.name == "model.norm.weight") it.shape = {4, 4};
  });
  auto m = Model::load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("'model.norm.weight' has shape [4, 4], config.json implies [16]"),
            std::string::npos)
      << m.status().message();
}

TEST_F(ModelTest, WrongDtypeIsNamed) {
  const std::string d = model_with([](auto& items, auto&) {
    for (auto& it : items)
      if (it.name == "model.layers.2.mlp.hash_table") it.dtype = DType::F32;
  });
  auto m = Model::load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("hash_table' has dtype F32, expected I32"), std::string::npos)
      << m.status().message();
}

TEST_F(ModelTest, HashTableOutOfRangeIsNamed) {
  const std::string d = model_with([](auto& items, auto& store) {
    for (size_t i = 0; i < items.size(); ++i)
      if (items[i].name == "model.layers.2.mlp.hash_table") {
        int32_t bad = 7;
        std::memcpy(store[i].data() + 4 * 5, &bad, 4);
      }
  });
  auto m = Model::load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("maps token 5 to expert 7, outside [0, 3)"), std::string::npos)
      << m.status().message();
}

TEST_F(ModelTest, ConfigMismatchMissingDir) {
  auto m = Model::load((dir_ / "nope").string());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("nope"), std::string::npos);
}

TEST_F(ModelTest, TokenValidation) {
  auto m = Model::init(small_config(), 1);
  std::vector<int32_t> t = {1, 2, 53};
  auto r = m->score(t, 1, 3);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("id 53 at position 2 is outside [0, vocab_size = 53)"), std::string::npos)
      << r.status().message();
  t = {1, -1, 3};
  EXPECT_FALSE(m->score(t, 1, 3).ok());
  std::vector<int32_t> longer(33, 1);
  r = m->score(longer, 1, 33);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("exceeds max_position_embeddings = 32"), std::string::npos);
  std::vector<int32_t> one = {4};
  EXPECT_FALSE(m->score(one, 1, 1).ok());
  std::vector<int32_t> exact(32, 1);
  EXPECT_TRUE(m->score(exact, 1, 32).ok());
}

TEST_F(ModelTest, TableGradientIsRowSparse) {
  auto m = Model::init(small_config(), 2);
  std::vector<int32_t> t = {5, 9, 2, 11, 9, 5, 40, 5};  // every id also before the last position
  std::map<std::string, HostTensor> g;
  ASSERT_TRUE(m->grad(t, 1, 8, &g).ok());
  const HostTensor& table = g.at("model.layers.1.mlp.stem_embedding.weight");
  const int64_t f = 24;
  std::set<int> present(t.begin(), t.end());
  for (int r = 0; r < 53; ++r) {
    double s = 0;
    for (int64_t c = 0; c < f; ++c) s += std::abs(table.data[r * f + c]);
    if (present.count(r)) {
      EXPECT_GT(s, 0.0) << "row " << r;
    } else {
      EXPECT_EQ(s, 0.0) << "row " << r;
    }
  }
  // internally the gradient is held as rows of the distinct tokens only
  model::Gradients gr = engine(*m).make_gradients(8);
  engine(*m).forward(t.data(), 1, 8);
  engine(*m).backward(gr);
  EXPECT_EQ(gr.index.unique, (std::vector<int32_t>{2, 5, 9, 11, 40}));
  const int ti = engine(*m).weights().find("model.layers.1.mlp.stem_embedding.weight");
  EXPECT_TRUE(gr.dense[ti].empty());
  EXPECT_FALSE(gr.rows[ti].empty());
}

TEST_F(ModelTest, BatchRowsAreIndependent) {
  // Each sequence of a batch gives the logits it gives alone.
  auto m = Model::init(small_config(), 4);
  const auto a = random_tokens(7, 53, 10), b = random_tokens(7, 53, 11);
  std::vector<int32_t> ab(a);
  ab.insert(ab.end(), b.begin(), b.end());
  std::vector<float> la, lb, lab;
  ASSERT_TRUE(m->score(a, 1, 7, &la).ok());
  ASSERT_TRUE(m->score(b, 1, 7, &lb).ok());
  ASSERT_TRUE(m->score(ab, 2, 7, &lab).ok());
  la.insert(la.end(), lb.begin(), lb.end());
  ASSERT_EQ(la.size(), lab.size());
  for (size_t i = 0; i < la.size(); ++i) ASSERT_NEAR(la[i], lab[i], 1e-5f) << i;
}

}  // namespace
}  // namespace stem
