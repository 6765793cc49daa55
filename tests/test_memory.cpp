// Table tiers, the prefetcher and the row providers: every tier (ram, mmap, disk with and without a
// row cache), both packings (table-major, row-major) and both dtypes hand out
// exactly the rows written to the file; overrides; LRU hits; layout, id and I/O
// errors, including an error on the prefetch thread reaching the waiter. Then
// the model level: the same logits, bitwise, whatever the tier, packing or
// prefetch setting, through the decoder and through score().
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli_test_util.h"
#include "core/bf16.h"
#include "edit/overlay.h"
#include "edit/store_rows.h"
#include "infer/decoder.h"
#include "kernel_test_util.h"
#include "kernels/infer_kernels.h"
#include "memory/prefetcher.h"
#include "memory/row_file.h"
#include "memory/table_store.h"
#include "model/engine.h"
#include "model/row_provider.h"
#include "model/tables.h"
#include "model/transformer.h"
#include "stem/model.h"

namespace stem {
namespace {
namespace fs = std::filesystem;
using memory::Tier;

constexpr int64_t kM = 3, kV = 50, kC = 37;

// Value of table t, row r, column c: distinct for every element.
float value(int64_t t, int64_t r, int64_t c) { return static_cast<float>(t * 10000 + r * 100 + c) * 0.25f - 3.0f; }

// Writes the tables to `path` after a header of `pad` bytes, in the given
// packing and dtype; returns the layout.
memory::TableFileLayout write_tables(const std::string& path, bool row_major, DType dt, uint64_t pad = 100) {
  memory::TableFileLayout l;
  l.path = path;
  l.dtype = dt;
  l.n_rows = kV;
  l.cols = kC;
  const uint64_t rb = l.row_bytes();
  std::vector<char> bytes(pad + kM * kV * rb, 'x');
  for (int64_t t = 0; t < kM; ++t) l.base.push_back(row_major ? pad + t * rb : pad + t * kV * rb);
  l.row_stride = row_major ? kM * rb : rb;
  for (int64_t t = 0; t < kM; ++t)
    for (int64_t r = 0; r < kV; ++r)
      for (int64_t c = 0; c < kC; ++c) {
        char* at = bytes.data() + l.base[t] + r * l.row_stride + c * dtype_size(dt);
        const float v = value(t, r, c);
        if (dt == DType::F32) {
          std::memcpy(at, &v, 4);
        } else {
          const uint16_t b = core::float_to_bf16(v);
          std::memcpy(at, &b, 2);
        }
      }
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return l;
}

float expected(DType dt, int64_t t, int64_t r, int64_t c) {
  const float v = value(t, r, c);
  return dt == DType::F32 ? v : core::bf16_to_float(core::float_to_bf16(v));
}

struct Rows {
  std::vector<float> buf;
  std::vector<float*> ptr;
  explicit Rows(int64_t n) : buf(kM * n * kC, -1.0f) {
    for (int64_t t = 0; t < kM; ++t) ptr.push_back(buf.data() + t * n * kC);
  }
};

void expect_rows(const Rows& got, const std::vector<int32_t>& ids, DType dt) {
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t t = 0; t < kM; ++t)
      for (int64_t c = 0; c < kC; ++c)
        ASSERT_EQ(got.ptr[t][i * kC + c], expected(dt, t, ids[i], c)) << "table " << t << " id " << ids[i];
}

struct Case {
  Tier tier;
  bool row_major;
  DType dtype;
  int64_t cache_bytes;
};

class TierRows : public test::TempDirTest, public ::testing::WithParamInterface<Case> {};

TEST_P(TierRows, FetchReturnsTheFileRowsWithOverridesAndStats) {
  const Case k = GetParam();
  const memory::TableFileLayout l = write_tables(p("t.bin"), k.row_major, k.dtype);
  EXPECT_EQ(l.row_major(), k.row_major);
  auto s = memory::TableStore::open(l, {k.tier, k.cache_bytes, 8});
  ASSERT_TRUE(s.ok()) << s.status().message();
  memory::TableStore& store = **s;
  std::mt19937 rng(3);
  // Several rounds so that a small disk cache evicts and re-reads.
  for (int round = 0; round < 4; ++round) {
    std::vector<int32_t> ids(20);
    for (auto& id : ids) id = static_cast<int32_t>(rng() % kV);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    Rows got(static_cast<int64_t>(ids.size()));
    ASSERT_TRUE(store.fetch(ids.data(), static_cast<int64_t>(ids.size()), got.ptr.data()).ok());
    expect_rows(got, ids, k.dtype);
  }
  // Direct pointers exactly where the rows are F32 and contiguous in memory.
  const bool want_direct = k.tier != Tier::Disk && k.dtype == DType::F32 && (!k.row_major || k.tier == Tier::Ram);
  EXPECT_EQ(store.direct(1) != nullptr, want_direct);
  if (want_direct) {
    EXPECT_EQ(store.direct(1)[7 * kC + 5], value(1, 7, 5));
  }
  // An override replaces one row of one table, and disables in-place reads of it.
  std::vector<float> row(kC, 42.0f);
  ASSERT_TRUE(store.set_override(2, 9, row.data()).ok());
  EXPECT_EQ(store.direct(2), nullptr);
  std::vector<int32_t> ids{9, 10};
  Rows got(2);
  ASSERT_TRUE(store.fetch(ids.data(), 2, got.ptr.data()).ok());
  EXPECT_EQ(got.ptr[2][3], 42.0f);
  EXPECT_EQ(got.ptr[1][3], expected(k.dtype, 1, 9, 3));
  EXPECT_EQ(got.ptr[2][kC + 3], expected(k.dtype, 2, 10, 3));
  store.clear_overrides();
  ASSERT_TRUE(store.fetch(ids.data(), 2, got.ptr.data()).ok());
  EXPECT_EQ(got.ptr[2][3], expected(k.dtype, 2, 9, 3));
  // Counters: every id counted; the disk tier reads only misses.
  const memory::StoreStats st = store.stats();
  EXPECT_GT(st.rows_requested, 0);
  if (k.tier == Tier::Disk && k.cache_bytes >= kM * kV * 256) {
    EXPECT_GT(st.cache_hits, 0);
    store.reset_stats();
    ASSERT_TRUE(store.fetch(ids.data(), 2, got.ptr.data()).ok());
    EXPECT_EQ(store.stats().cache_hits, 2);
    EXPECT_EQ(store.stats().bytes_read, 0);
  }
  if (k.tier == Tier::Disk && k.cache_bytes == 0) {
    EXPECT_EQ(st.cache_hits, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllTiers, TierRows,
    ::testing::Values(Case{Tier::Ram, false, DType::F32, 0}, Case{Tier::Ram, true, DType::BF16, 0},
                      Case{Tier::Mmap, false, DType::F32, 0}, Case{Tier::Mmap, true, DType::F32, 0},
                      Case{Tier::Mmap, false, DType::BF16, 0},
                      Case{Tier::Disk, false, DType::F32, 0}, Case{Tier::Disk, true, DType::F32, 1 << 20},
                      Case{Tier::Disk, false, DType::BF16, 1 << 20},
                      // a cache of 5 entries: constant eviction
                      Case{Tier::Disk, true, DType::F32, 5 * 512}, Case{Tier::Disk, false, DType::F32, 5 * 512}));

class TierErrors : public test::TempDirTest {};

TEST_F(TierErrors, LayoutPastTheFileIdsOutOfRangeAndUnknownTier) {
  memory::TableFileLayout l = write_tables(p("t.bin"), false, DType::F32);
  memory::TableFileLayout longer = l;
  longer.n_rows = kV + 1;
  for (Tier t : {Tier::Ram, Tier::Mmap, Tier::Disk}) {
    auto s = memory::TableStore::open(longer, {t, 0, 8});
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.status().message().find("past the end of the file"), std::string::npos) << s.status().message();
  }
  auto s = memory::TableStore::open(l, {Tier::Disk, 0, 8});
  ASSERT_TRUE(s.ok());
  std::vector<int32_t> bad{3, kV};
  Rows got(2);
  const Status st = (*s)->fetch(bad.data(), 2, got.ptr.data());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("row 50 outside [0, 50)"), std::string::npos) << st.message();
  EXPECT_FALSE(parse_tables_in("ssd").ok());
  memory::TableFileLayout missing = l;
  missing.path = p("nope.bin");
  EXPECT_FALSE(memory::TableStore::open(missing, {Tier::Disk, 0, 8}).ok());
}

TEST_F(TierErrors, ReadErrorOnThePrefetchThreadReachesTheWaiter) {
  const memory::TableFileLayout l = write_tables(p("t.bin"), false, DType::F32);
  auto s = memory::TableStore::open(l, {Tier::Disk, 0, 8});
  ASSERT_TRUE(s.ok());
  memory::Prefetcher pf(**s, 16, /*async=*/true);
  std::vector<int32_t> ids{1, 2, 49};
  auto t0 = pf.submit(ids.data(), 3);
  ASSERT_TRUE(pf.wait(t0).ok());
  pf.release(t0);
  // The file shrinks under the store: the next read comes up short.
  fs::resize_file(p("t.bin"), 200);
  auto t1 = pf.submit(ids.data(), 3);
  auto r = pf.wait(t1);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unexpected end of file"), std::string::npos) << r.status().message();
  pf.release(t1);
}

TEST_F(TierErrors, PrefetcherDeduplicatesAndDoubleBuffers) {
  const memory::TableFileLayout l = write_tables(p("t.bin"), true, DType::BF16);
  for (bool async : {false, true}) {
    auto s = memory::TableStore::open(l, {Tier::Disk, 4096, 8});
    ASSERT_TRUE(s.ok());
    memory::Prefetcher pf(**s, 8, async);
    std::vector<int32_t> a{5, 3, 5, 5, 9, 3}, b{7, 7, 1};
    auto ta = pf.submit(a.data(), 6);
    auto tb = pf.submit(b.data(), 3);  // two outstanding: both buffers in use
    auto ra = pf.wait(ta);
    ASSERT_TRUE(ra.ok());
    EXPECT_EQ((*ra)->unique, (std::vector<int32_t>{3, 5, 9}));
    EXPECT_EQ((*ra)->slot_of, (std::vector<int32_t>{1, 0, 1, 1, 2, 0}));
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_EQ((*ra)->rows[2][(*ra)->slot_of[i] * kC + 4], expected(DType::BF16, 2, a[i], 4));
    pf.release(ta);
    auto rb = pf.wait(tb);
    ASSERT_TRUE(rb.ok());
    EXPECT_EQ((*rb)->unique, (std::vector<int32_t>{1, 7}));
    EXPECT_EQ((*rb)->rows[0][kC + 1], expected(DType::BF16, 0, 7, 1));
    pf.release(tb);
    // 4 distinct ids were read once each (3, 5, 9 then 1, 7): no dedup misses.
    EXPECT_EQ((*s)->stats().rows_requested, 5);
  }
}

// Every row provider hands the FFN the same row for each position: in place
// (row_of = the ids), staged (row_of = slots), given by the caller.
TEST_F(TierErrors, RowProvidersAgreeOnEveryPositionsRow) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const memory::TableFileLayout l = write_tables(p("t.bin"), false, DType::F32);
  auto s = memory::TableStore::open(l, {Tier::Ram, 0, 8});
  ASSERT_TRUE(s.ok());
  std::vector<const float*> tables;
  for (int64_t t = 0; t < kM; ++t) tables.push_back((*s)->direct(t));
  const std::vector<int32_t> ids{5, 3, 5, 49, 0, 3};
  auto check = [&](model::RowProvider& p) {
    const auto t = p.submit(ids.data(), static_cast<int64_t>(ids.size()));
    auto r = p.wait(t);
    ASSERT_TRUE(r.ok());
    for (size_t i = 0; i < ids.size(); ++i)
      for (int64_t tb = 0; tb < kM; ++tb)
        EXPECT_EQ(r->rows[tb][static_cast<int64_t>(r->row_of[i]) * kC + 6], value(tb, ids[i], 6)) << i;
    p.release(t);
  };
  auto in_place = model::rows_in_place(tables);
  check(*in_place);
  EXPECT_EQ(in_place->prefetcher(), nullptr);
  for (bool async : {false, true}) {
    auto staged = model::rows_staged(**s, 8, async);
    check(*staged);
    ASSERT_NE(staged->prefetcher(), nullptr);
    EXPECT_EQ(staged->prefetcher()->async(), async);
  }
  std::vector<int32_t> slot_of(ids.begin(), ids.end());
  model::GivenRows given(kM);
  given.set(ids.data(), static_cast<int64_t>(ids.size()), slot_of.data(), tables.data());
  check(given);
  const std::vector<int32_t> other{1, 2};
  EXPECT_DEATH(given.submit(other.data(), 2), "other ids");
  // Two sets outstanding at most, as with the prefetcher.
  auto t0 = in_place->submit(ids.data(), 2);
  auto t1 = in_place->submit(ids.data(), 3);
  EXPECT_DEATH(in_place->submit(ids.data(), 1), "third set");
  in_place->release(t0);
  in_place->release(t1);
}

// ------------------------------------------------------------ model level

ModelConfig stem_config() {
  ModelConfig c;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 80;
  c.ffn_types = {FfnType::Dense, FfnType::Stem, FfnType::HashMoe, FfnType::Stem};
  c.num_hash_experts = 3;
  return c;
}

class TierLogits : public test::TempDirTest {};

// The trainer's read-write row file: whole tables in and out, single rows
// stored and fetched (skipping tables with a null destination), ids checked,
// the file unlinked from the start, and a prefetcher reading from it.
TEST(RowFile, RangesRowsErrorsAndPrefetch) {
  const fs::path dir = fs::temp_directory_path() / ("stem_rowfile_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto rf = memory::RowFile::create(dir.string(), kV, kM, kC);
  ASSERT_TRUE(rf.ok()) << rf.status().message();
  memory::RowFile& f = **rf;
  EXPECT_TRUE(fs::is_empty(dir));  // unlinked at once
  EXPECT_EQ(f.file_bytes(), kV * kM * kC * 4);
  std::vector<std::vector<float>> tables(kM, std::vector<float>(kV * kC));
  for (int64_t t = 0; t < kM; ++t)
    for (int64_t r = 0; r < kV; ++r)
      for (int64_t c = 0; c < kC; ++c) tables[t][r * kC + c] = value(t, r, c);
  std::vector<const float*> src = {tables[0].data(), nullptr, tables[2].data()};  // table 1 written as zeros
  ASSERT_TRUE(f.write_range(0, kV, src.data()).ok());
  const int32_t ids[3] = {7, 0, 49};
  std::vector<float> got(kM * 3 * kC, -1.0f);
  std::vector<float*> dst = {got.data(), got.data() + 3 * kC, nullptr};  // table 2 skipped
  ASSERT_TRUE(f.fetch(ids, 3, dst.data()).ok());
  for (int i = 0; i < 3; ++i)
    for (int64_t c = 0; c < kC; ++c) {
      EXPECT_EQ(got[i * kC + c], value(0, ids[i], c));
      EXPECT_EQ(got[3 * kC + i * kC + c], 0.0f);
      EXPECT_EQ(got[6 * kC + i * kC + c], -1.0f);
    }
  // store two rows of every table, read them back through a prefetcher
  std::vector<float> rows(kM * 2 * kC);
  for (size_t k = 0; k < rows.size(); ++k) rows[k] = 0.5f * static_cast<float>(k) + 1.0f;
  const int32_t wids[2] = {3, 40};
  std::vector<const float*> wsrc = {rows.data(), rows.data() + 2 * kC, rows.data() + 4 * kC};
  ASSERT_TRUE(f.store(wids, 2, wsrc.data()).ok());
  memory::Prefetcher pf(f, 8, /*async=*/true);
  const int32_t want[4] = {40, 3, 40, 5};
  auto tk = pf.submit(want, 4);
  auto st = pf.wait(tk);
  ASSERT_TRUE(st.ok()) << st.status().message();
  const memory::StagedRows& s = **st;
  ASSERT_EQ(s.unique, (std::vector<int32_t>{3, 5, 40}));
  for (int64_t t = 0; t < kM; ++t)
    for (int64_t c = 0; c < kC; ++c) {
      EXPECT_EQ(s.rows[t][0 * kC + c], rows[t * 2 * kC + c]);       // id 3: stored
      EXPECT_EQ(s.rows[t][2 * kC + c], rows[t * 2 * kC + kC + c]);  // id 40: stored
      EXPECT_EQ(s.rows[t][1 * kC + c], t == 1 ? 0.0f : value(t, 5, c));  // id 5: as written
    }
  pf.release(tk);
  // whole tables back
  std::vector<std::vector<float>> back(kM, std::vector<float>(kV * kC));
  std::vector<float*> bdst = {back[0].data(), back[1].data(), back[2].data()};
  ASSERT_TRUE(f.read_range(0, kV, bdst.data()).ok());
  EXPECT_EQ(back[0][3 * kC], rows[0]);
  EXPECT_EQ(back[2][49 * kC + 5], value(2, 49, 5));
  // one table alone; every record rewritten in place
  std::vector<float> col(4 * kC);
  ASSERT_TRUE(f.read_table(2, 46, 4, col.data()).ok());
  EXPECT_EQ(col[3 * kC + 1], value(2, 49, 1));
  ASSERT_TRUE(f.update_all([](int64_t r, float* rec) { rec[0] = static_cast<float>(r); }).ok());
  ASSERT_TRUE(f.read_table(0, 0, kV, back[0].data()).ok());
  EXPECT_EQ(back[0][49 * kC], 49.0f);
  EXPECT_EQ(back[0][49 * kC + 1], value(0, 49, 1));
  EXPECT_FALSE(f.read_table(kM, 0, 1, col.data()).ok());
  // errors name the file and the row
  const int32_t bad[1] = {kV};
  Status e = f.fetch(bad, 1, dst.data());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.message().find("row 50 outside [0, 50)"), std::string::npos) << e.message();
  EXPECT_NE(e.message().find(".stem-rows"), std::string::npos) << e.message();
  EXPECT_FALSE(f.store(bad, 1, wsrc.data()).ok());
  EXPECT_FALSE(f.write_range(kV - 1, 2, src.data()).ok());
  auto none = memory::RowFile::create((dir / "missing").string(), kV, kM, kC);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("missing"), std::string::npos);
  fs::remove_all(dir);
}

TEST_F(TierLogits, BitwiseEqualWhateverTheTierPackingOrPrefetch) {
  const ModelConfig cfg = stem_config();
  auto m0 = Model::init(cfg, 7);
  ASSERT_TRUE(m0.ok());
  const std::string dir = p("m");
  ASSERT_TRUE(m0->save(dir).ok());
  std::mt19937 rng(9);
  const std::vector<int32_t> ids = test::rand_ids(rng, 70, cfg.vocab_size);
  // Reference: everything in RAM, through the decoder and through score.
  auto base = Model::load(dir);
  ASSERT_TRUE(base.ok());
  auto decode_all = [&](Model& m, bool prefetch) {
    infer::DecoderOptions o;
    o.prefill_chunk = 16;  // several chunks: the prefetcher double-buffers
    o.prefetch = prefetch;
    infer::Decoder dec(engine(m), o);
    std::vector<float> out;
    auto pre = dec.prefill(ids.data(), 40);
    EXPECT_TRUE(pre.ok()) << pre.status().message();
    out.insert(out.end(), *pre, *pre + cfg.vocab_size);
    for (size_t t = 40; t < ids.size(); ++t) {
      auto r = dec.step(ids[t]);
      EXPECT_TRUE(r.ok());
      out.insert(out.end(), *r, *r + cfg.vocab_size);
    }
    return out;
  };
  std::vector<float> want_logits;
  ASSERT_TRUE(base->score(ids, 1, 70, &want_logits).ok());
  const std::vector<float> want_decode = decode_all(*base, true);
  ASSERT_TRUE(model::pack_tables(cfg, dir).ok());
  for (const char* tier : {"ram", "mmap", "disk"})
    for (bool packed : {false, true})
      for (int64_t cache_mb : {0, 1}) {
        LoadOptions o;
        o.tables = *parse_tables_in(tier);
        o.packed_tables = packed;
        o.table_cache_mb = cache_mb;
        auto m = Model::load(dir, o);
        ASSERT_TRUE(m.ok()) << m.status().message();
        const std::string what = std::string(tier) + (packed ? " packed" : "") + " cache " + std::to_string(cache_mb);
        for (bool prefetch : {false, true}) {
          const std::vector<float> got = decode_all(*m, prefetch);
          ASSERT_EQ(0, std::memcmp(got.data(), want_decode.data(), got.size() * 4)) << what << " prefetch " << prefetch;
        }
        std::vector<float> logits;
        ASSERT_TRUE(m->score(ids, 1, 70, &logits).ok());
        ASSERT_EQ(0, std::memcmp(logits.data(), want_logits.data(), logits.size() * 4)) << what;
      }
}

// An edit overlay applies the same on every tier (as row overrides of the
// store), and reverting it gives back the base logits bit for bit.
TEST_F(TierLogits, OverlaysApplyAndRevertOnEveryTier) {
  const ModelConfig cfg = stem_config();
  auto m0 = Model::init(cfg, 8);
  ASSERT_TRUE(m0.ok());
  const std::string dir = p("m");
  ASSERT_TRUE(m0->save(dir).ok());
  ASSERT_TRUE(model::pack_tables(cfg, dir).ok());
  edit::Overlay ov;
  ov.shape = edit::OverlayShape::of(cfg);
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> row(cfg.intermediate_size);
  for (int32_t layer : {1, 3})
    for (int32_t token : {5, 17, 60}) {
      for (float& x : row) x = nd(rng);
      ov.add(layer, token, row.data());
    }
  ASSERT_TRUE(edit::write_overlay(ov, p("e.ovl")).ok());
  std::vector<int32_t> ids = test::rand_ids(rng, 50, cfg.vocab_size);
  ids[3] = 5;
  ids[20] = 60;
  auto logits_of = [&](Model& m) {
    std::vector<float> l;
    EXPECT_TRUE(m.score(ids, 1, 50, &l).ok());
    return l;
  };
  auto base = Model::load(dir);
  ASSERT_TRUE(base.ok());
  const std::vector<float> want_base = logits_of(*base);
  ASSERT_TRUE(edit::apply_overlay_files({p("e.ovl")}, cfg, engine(*base).weights()).ok());
  const std::vector<float> want_edit = logits_of(*base);
  ASSERT_NE(0, std::memcmp(want_base.data(), want_edit.data(), want_base.size() * 4));
  for (const char* tier : {"mmap", "disk"}) {
    LoadOptions o;
    o.tables = *parse_tables_in(tier);
    auto m = Model::load(dir, o);
    ASSERT_TRUE(m.ok());
    std::unique_ptr<edit::RowTable> rows = edit::model_rows(engine(*m));
    std::vector<edit::Overlay> undo;
    ASSERT_TRUE(edit::apply_overlay_files({p("e.ovl")}, cfg, *rows, &undo).ok());
    std::vector<float> got = logits_of(*m);
    ASSERT_EQ(0, std::memcmp(got.data(), want_edit.data(), got.size() * 4)) << tier;
    ASSERT_TRUE(edit::revert_overlays(undo, *rows).ok());
    got = logits_of(*m);
    ASSERT_EQ(0, std::memcmp(got.data(), want_base.data(), got.size() * 4)) << tier;
    // Not a STEM layer: a clear error, nothing applied.
    EXPECT_FALSE(rows->write_row(0, 5, row.data()).ok());
  }
}

// A pack in 8 bits (`stem convert --dtype q8 --pack-tables`): the mmap and
// disk tiers give, bit for bit, the logits of the model whose tables hold the
// dequantized rows in RAM (each row quantized by blocks of 32 as Q8 weights
// are); --tables ram keeps reading model.safetensors' full rows. The pack's
// rows take ceil(f / 32) * 36 bytes each.
TEST_F(TierLogits, Q8PackDecodesAsItsDequantizedRows) {
  const ModelConfig cfg = stem_config();
  auto m0 = Model::init(cfg, 11);
  ASSERT_TRUE(m0.ok());
  const std::string dir = p("m");
  ASSERT_TRUE(m0->save(dir).ok());
  ASSERT_TRUE(model::pack_tables(cfg, dir, /*q8=*/true).ok());
  const int64_t f = cfg.intermediate_size, V = cfg.vocab_size;
  int64_t n_stem = 0;
  for (FfnType t : cfg.ffn_types) n_stem += t == FfnType::Stem;
  EXPECT_EQ(fs::file_size(dir + "/tables.stem"), 4096 + static_cast<uintmax_t>(V * n_stem * ((f + 31) / 32) * 36));
  std::mt19937 rng(12);
  const std::vector<int32_t> ids = test::rand_ids(rng, 60, V);
  auto logits_of = [&](Model& m) {
    std::vector<float> l;
    EXPECT_TRUE(m.score(ids, 1, 60, &l).ok());
    return l;
  };
  auto base = Model::load(dir);
  ASSERT_TRUE(base.ok());
  const std::vector<float> full = logits_of(*base);
  // The reference: every table row replaced by its Q8 round trip, in RAM.
  std::unique_ptr<edit::RowTable> rows = edit::model_rows(engine(*base));
  edit::Overlay ov;
  ov.shape = edit::OverlayShape::of(cfg);
  std::vector<float> row(f), back(f);
  std::vector<uint8_t> q(kernels::q8_row_bytes(f));
  for (int32_t l = 0; l < cfg.num_hidden_layers; ++l) {
    if (cfg.ffn_types[l] != FfnType::Stem) continue;
    for (int32_t t = 0; t < V; ++t) {
      ASSERT_TRUE(rows->read_row(l, t, row.data()).ok());
      kernels::quantize_q8_row(q.data(), row.data(), f);
      kernels::dequantize_q8_row(back.data(), q.data(), f);
      ov.add(l, t, back.data());
    }
  }
  ASSERT_TRUE(edit::apply_overlay(ov, *rows).status().ok());
  const std::vector<float> want = logits_of(*base);
  ASSERT_NE(0, std::memcmp(want.data(), full.data(), want.size() * 4));
  for (const char* tier : {"ram", "mmap", "disk"}) {
    LoadOptions o;
    o.tables = *parse_tables_in(tier);
    auto m = Model::load(dir, o);
    ASSERT_TRUE(m.ok()) << m.status().message();
    const std::vector<float> got = logits_of(*m);
    const std::vector<float>& expect = std::string(tier) == "ram" ? full : want;
    ASSERT_EQ(0, std::memcmp(got.data(), expect.data(), got.size() * 4)) << tier;
  }
}

TEST_F(TierLogits, StalePackAndBadOptionsAreClearErrors) {
  const ModelConfig cfg = stem_config();
  auto m0 = Model::init(cfg, 7);
  ASSERT_TRUE(m0.ok());
  const std::string dir = p("m");
  ASSERT_TRUE(m0->save(dir).ok());
  ASSERT_TRUE(model::pack_tables(cfg, dir).ok());
  // Rewriting the weights makes the pack stale.
  ::usleep(20000);
  ASSERT_TRUE(m0->save(dir).ok());
  LoadOptions o;
  o.tables = TablesIn::Disk;
  auto m = Model::load(dir, o);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("stale"), std::string::npos) << m.status().message();
  o.packed_tables = false;
  EXPECT_TRUE(Model::load(dir, o).ok());
  EXPECT_FALSE(parse_tables_in("gpu").ok());
  o.tables = TablesIn::Mmap;
  EXPECT_FALSE(parse_weight_dtype("f16").ok());
  // A garbage pack: bad magic.
  std::ofstream(dir + "/tables.stem", std::ios::binary) << std::string(5000, 'z');
  o.dtype = WeightDType::F32;
  o.packed_tables = true;
  m = Model::load(dir, o);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("bad magic"), std::string::npos) << m.status().message();
}

}  // namespace
}  // namespace stem

// ------------------------------------------------------------ BF16 and the CLI
namespace stem {
namespace {

class TierCli : public test::TempDirTest {
 protected:
  void make_model() {
    std::ofstream(p("c.json")) << R"({"model_type": "stem", "vocab_size": 97, "hidden_size": 32,
      "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
      "max_position_embeddings": 64, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
      "tie_word_embeddings": false, "ffn_types": ["dense", "stem", "stem"], "num_hash_experts": 0})";
    ASSERT_EQ(test::stem_cmd("init --config " + p("c.json") + " --out " + p("m") + " --seed 3").code, 0);
  }
};

TEST_F(TierCli, Bf16WeightsDecodeLikeTheirF32Widening) {
  make_model();
  auto r = test::stem_cmd("convert --model " + p("m") + " --dtype bf16 --out " + p("b") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  LoadOptions keep;
  keep.dtype = WeightDType::Auto;
  auto b16 = Model::load(p("b"), keep);  // BF16 matrices, BF16 tables (a ram store)
  auto f32 = Model::load(p("b"));        // the same values widened to F32
  ASSERT_TRUE(b16.ok() && f32.ok());
  EXPECT_FALSE(engine(*b16).f32_weights());
  EXPECT_NE(engine(*b16).table_store(), nullptr);
  EXPECT_EQ(engine(*f32).table_store(), nullptr);  // the default load is all F32 in RAM, as training needs
  std::mt19937 rng(1);
  const std::vector<int32_t> ids = test::rand_ids(rng, 40, 97);
  for (int64_t chunk : {1, 16}) {
    infer::DecoderOptions o;
    o.prefill_chunk = chunk;
    infer::Decoder d1(engine(*b16), o), d2(engine(*f32), o);
    auto a = d1.prefill(ids.data(), 40);
    auto c = d2.prefill(ids.data(), 40);
    ASSERT_TRUE(a.ok() && c.ok());
    EXPECT_TRUE(test::near_rel(std::vector<float>(*a, *a + 97), std::vector<float>(*c, *c + 97), 1e-5));
  }
  // score and grad need F32 matrices.
  std::vector<float> logits;
  EXPECT_FALSE(b16->score(ids, 1, 40, &logits).ok());
  EXPECT_TRUE(f32->score(ids, 1, 40, &logits).ok());
}

TEST_F(TierCli, ConvertPackBenchAndGenerateAcrossTiers) {
  make_model();
  ASSERT_EQ(test::stem_cmd("convert --model " + p("m") + " --pack-tables").code, 0);
  EXPECT_TRUE(fs::exists(p("m/tables.stem")));
  std::string ids_out;
  for (const char* tier : {"ram", "mmap", "disk"}) {
    for (const char* extra : {"", " --no-prefetch", " --no-pack"}) {
      auto r = test::stem_cmd("generate --model " + p("m") + " --prompt-ids '1 2 3' -n 6 --greedy --json --tables " +
                              tier + extra);
      ASSERT_EQ(r.code, 0) << r.err;
      const auto j = nlohmann::json::parse(r.out);
      const std::string ids = j["ids"].dump();
      if (ids_out.empty()) ids_out = ids;
      EXPECT_EQ(ids, ids_out) << tier << extra;
    }
  }
  auto r = test::stem_cmd("bench decode --model " + p("m") + " --tables disk --table-cache-mb 1 --tokens 16 --reps 2 --cold --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"tokens_per_second", "p50_ms", "p99_ms", "peak_rss_bytes", "table_bytes_read", "cache_hit_rate",
                          "prefetch_wait_ms"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_GT(j["table_bytes_read"].get<int64_t>(), 0);
  EXPECT_GT(j["tokens_per_second"].get<double>(), 0.0);
  r = test::stem_cmd("bench prefill --model " + p("m") + " --prompt 40 --reps 1 --tables mmap --json");
  ASSERT_EQ(r.code, 0) << r.err;
  write("t.txt", "1 5 9 20 3 3 7 96 0 14");
  std::string loss;
  for (const char* tier : {"ram", "mmap", "disk"}) {
    r = test::stem_cmd("score --model " + p("m") + " --tokens-file " + p("t.txt") + " --json --tables " + tier);
    ASSERT_EQ(r.code, 0) << r.err;
    const std::string l = nlohmann::json::parse(r.out)["loss"].dump();
    if (loss.empty()) loss = l;
    EXPECT_EQ(l, loss) << tier;
  }
}

TEST_F(TierCli, ConvertAndTierFlagErrors) {
  make_model();
  auto r = test::stem_cmd("convert --model " + p("m"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("nothing to do"), std::string::npos) << r.err;
  r = test::stem_cmd("convert --model " + p("m") + " --dtype bf16 --out " + p("m"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("never changed in place"), std::string::npos) << r.err;
  r = test::stem_cmd("convert --model " + p("m") + " --dtype f16 --out " + p("x"));
  EXPECT_EQ(r.code, 2);
  r = test::stem_cmd("generate --model " + p("m") + " --prompt-ids 1 --tables ssd");
  EXPECT_EQ(r.code, 2);
  r = test::stem_cmd("bench decode");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--model is required"), std::string::npos) << r.err;
  // A truncated pack is caught before any row is served.
  ASSERT_EQ(test::stem_cmd("convert --model " + p("m") + " --pack-tables").code, 0);
  fs::resize_file(p("m/tables.stem"), 5000);
  r = test::stem_cmd("generate --model " + p("m") + " --prompt-ids 1 -n 2 --tables disk");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("past the end of the file"), std::string::npos) << r.err;
  // q8 is a pack dtype only, written beside the model; an unknown dtype code is named.
  r = test::stem_cmd("convert --model " + p("m") + " --dtype q8");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("with --pack-tables"), std::string::npos) << r.err;
  r = test::stem_cmd("convert --model " + p("m") + " --dtype q8 --pack-tables --out " + p("x"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("drop --out"), std::string::npos) << r.err;
  r = test::stem_cmd("convert --model " + p("m") + " --dtype q8 --pack-tables --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("\"packed_dtype\":\"q8\""), std::string::npos) << r.out;
  ASSERT_EQ(test::stem_cmd("generate --model " + p("m") + " --prompt-ids 1 -n 2 --tables disk").code, 0);
  {
    std::fstream pack(p("m/tables.stem"), std::ios::in | std::ios::out | std::ios::binary);
    const uint32_t code = 7;
    pack.seekp(12);
    pack.write(reinterpret_cast<const char*>(&code), 4);
  }
  r = test::stem_cmd("generate --model " + p("m") + " --prompt-ids 1 -n 2 --tables disk");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("dtype code 7"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace stem
