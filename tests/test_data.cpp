// The data side: token shards (round trips, streaming, every header check),
// the SentencePiece tokenizer (train, encode/decode round trip, errors), and
// `stem prepare` run as a user runs it (success, then bad inputs: exit codes,
// one-line errors, and no output or temporary folder left behind). Small
// texts and vocabularies of ~300 keep the whole suite to a few seconds.
#include <gtest/gtest.h>

#include "cli_test_util.h"
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "io/token_shards.h"
#include "io/tokenizer.h"

namespace {
namespace fs = std::filesystem;
using stem::io::DataDir;
using stem::io::Tokenizer;
using stem::io::TokenShard;
using stem::io::TokenShardWriter;

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("stem_data_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string p(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& bytes) const {
    std::ofstream(p(name), std::ios::binary) << bytes;
  }
  std::string read(const std::string& name) const {
    std::ifstream in(p(name), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // Names in the test folder (to see that nothing temporary is left).
  std::vector<std::string> listing() const {
    std::vector<std::string> v;
    for (const auto& e : fs::directory_iterator(dir_)) v.push_back(e.path().filename().string());
    std::sort(v.begin(), v.end());
    return v;
  }
  fs::path dir_;
};
// One fixture per suite, so --gtest_filter='TokenShard*:Tokenizer*:Prepare*' selects them.
class TokenShardTest : public DataTest {};
class TokenizerTest : public DataTest {};
class PrepareTest : public DataTest {};

// Deterministic lowercase prose: few distinct characters, so a vocabulary of
// 300 (259 reserved + ~30 characters + merges) is enough.
std::string prose(int n_paragraphs, int sentences_per_paragraph, uint64_t seed) {
  static const char* kWords[] = {"the",   "house", "was",   "a",    "letter", "from",  "her",   "sister",
                                 "and",   "he",    "could", "not",  "walk",   "to",    "bath",  "in",
                                 "rain",  "with",  "anne",  "said", "captain", "very", "happy", "of",
                                 "an",    "old",   "friend", "but", "no",     "one",   "knew",  "why"};
  std::mt19937_64 rng(seed);
  std::string out;
  for (int p = 0; p < n_paragraphs; ++p) {
    if (p) out += "\n\n";
    for (int s = 0; s < sentences_per_paragraph; ++s) {
      if (s) out += ' ';
      const int n = 4 + static_cast<int>(rng() % 8);
      for (int w = 0; w < n; ++w) {
        if (w) out += ' ';
        out += kWords[rng() % (sizeof kWords / sizeof kWords[0])];
      }
      out += rng() % 3 ? "." : ",";
    }
  }
  return out + "\n";
}

// ---------------------------------------------------------------- shards

std::vector<int32_t> read_all(const TokenShard& s) {
  std::vector<int32_t> v(static_cast<size_t>(s.size()));
  s.read(0, s.size(), v.data());
  return v;
}

TEST_F(TokenShardTest, RoundTripU16) {
  std::vector<int32_t> ids = {1, 5, 4095, 0, 17, 2, 1, 9, 2};
  ASSERT_TRUE(stem::io::write_token_shard(p("a.tok"), ids, 4096, 2).ok());
  EXPECT_EQ(fs::file_size(p("a.tok")), 64u + 2 * ids.size());
  auto s = TokenShard::open(p("a.tok"));
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->size(), 9);
  EXPECT_EQ(s->vocab_size(), 4096);
  EXPECT_EQ(s->n_docs(), 2);
  EXPECT_EQ(s->bytes_per_token(), 2);
  EXPECT_EQ(read_all(*s), ids);
  int32_t mid[3];
  s->read(2, 3, mid);
  EXPECT_EQ(mid[0], 4095);
  EXPECT_EQ(mid[2], 17);
  EXPECT_EQ(s->at(8), 2);
  EXPECT_EQ(listing(), std::vector<std::string>{"a.tok"});  // no temporary file left
}

TEST_F(TokenShardTest, RoundTripU32AndEdges) {
  // 65536 still fits u16; 65537 needs u32.
  EXPECT_EQ(stem::io::token_bytes_for_vocab(65536), 2);
  EXPECT_EQ(stem::io::token_bytes_for_vocab(65537), 4);
  std::vector<int32_t> ids = {0, 65535, 65536, 99999, 7};
  ASSERT_TRUE(stem::io::write_token_shard(p("b.tok"), ids, 100000, 1).ok());
  auto s = TokenShard::open(p("b.tok"));
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->bytes_per_token(), 4);
  EXPECT_EQ(read_all(*s), ids);
  // An empty shard is valid.
  ASSERT_TRUE(stem::io::write_token_shard(p("e.tok"), {}, 300, 0).ok());
  auto e = TokenShard::open(p("e.tok"));
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_EQ(e->size(), 0);
  // A shard copy shares the mapping and outlives the original.
  TokenShard copy;
  {
    auto t = TokenShard::open(p("b.tok"));
    ASSERT_TRUE(t.ok());
    copy = *t;
  }
  EXPECT_EQ(read_all(copy), ids);
}

TEST_F(TokenShardTest, WriteRejectsBadInput) {
  auto st = stem::io::write_token_shard(p("c.tok"), {1, 2, 300}, 300, 1);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("token id 300 at index 2 is outside [0, 300)"), std::string::npos) << st.message();
  st = stem::io::write_token_shard(p("c.tok"), {1, 2}, 300, 3);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("n_docs 3"), std::string::npos) << st.message();
  st = stem::io::write_token_shard(p("c.tok"), {1}, 0, 0);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("vocab_size 0"), std::string::npos) << st.message();
  EXPECT_TRUE(listing().empty());
}

TEST_F(TokenShardTest, StreamingWriter) {
  auto w = TokenShardWriter::create(p("s.tok"), 70000);  // u32 ids
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_FALSE(fs::exists(p("s.tok")));  // nothing at the destination until finish()
  std::vector<int32_t> all;
  std::mt19937 rng(1);
  for (int d = 0; d < 5; ++d) {  // documents larger than the writer's 1 MiB buffer
    std::vector<int32_t> doc(200000 + d);
    for (auto& x : doc) x = static_cast<int32_t>(rng() % 70000);
    ASSERT_TRUE(w->append_document(doc).ok());
    all.insert(all.end(), doc.begin(), doc.end());
  }
  std::vector<int32_t> bad = {3, 70000};
  auto st = w->append(bad);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("token id 70000 at index " + std::to_string(all.size() + 1)), std::string::npos)
      << st.message();
  ASSERT_TRUE(w->finish().ok());
  EXPECT_FALSE(w->finish().ok());
  auto s = TokenShard::open(p("s.tok"));
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->n_docs(), 5);
  EXPECT_EQ(read_all(*s), all);
  EXPECT_EQ(listing(), std::vector<std::string>{"s.tok"});
}

TEST_F(TokenShardTest, UnfinishedWriterLeavesNothing) {
  ASSERT_TRUE(stem::io::write_token_shard(p("keep.tok"), {1, 2, 3}, 300, 1).ok());
  {
    auto w = TokenShardWriter::create(p("keep.tok"), 300);
    ASSERT_TRUE(w.ok());
    std::vector<int32_t> ids(1000, 7);
    ASSERT_TRUE(w->append(ids).ok());
  }  // destroyed without finish(): the old file stays, the temporary goes
  EXPECT_EQ(listing(), std::vector<std::string>{"keep.tok"});
  auto s = TokenShard::open(p("keep.tok"));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->size(), 3);
}

// A valid header for `n` u16 tokens of a 4096 vocabulary, then the ids.
std::string shard_bytes(uint64_t n_tokens_field, int n_ids, uint64_t vocab = 4096, uint32_t bpt = 2,
                        uint64_t n_docs = 1, uint32_t version = 1) {
  std::string h(64, '\0');
  std::memcpy(h.data(), "STEMTOK\0", 8);
  std::memcpy(h.data() + 8, &version, 4);
  std::memcpy(h.data() + 12, &bpt, 4);
  std::memcpy(h.data() + 16, &vocab, 8);
  std::memcpy(h.data() + 24, &n_tokens_field, 8);
  std::memcpy(h.data() + 32, &n_docs, 8);
  for (int i = 0; i < n_ids; ++i) {
    const uint32_t id = static_cast<uint32_t>(i % 7);
    h.append(reinterpret_cast<const char*>(&id), bpt);
  }
  return h;
}

TEST_F(TokenShardTest, HeaderValidation) {
  write("ok.tok", shard_bytes(10, 10));
  ASSERT_TRUE(TokenShard::open(p("ok.tok")).ok());

  struct Case {
    const char* name;
    std::string bytes;
    std::string expect;  // in the message, after the path
  };
  std::string bad_magic = shard_bytes(10, 10);
  bad_magic[0] = 'X';
  std::string reserved = shard_bytes(10, 10);
  reserved[50] = 1;
  std::string bad_id = shard_bytes(3, 0);
  for (uint16_t id : {uint16_t{5}, uint16_t{4096}, uint16_t{6}}) bad_id.append(reinterpret_cast<const char*>(&id), 2);
  const std::vector<Case> cases = {
      {"empty.tok", "", "truncated: 0 bytes, shorter than the 64-byte"},
      {"short.tok", std::string(40, 'S'), "truncated: 40 bytes"},
      {"magic.tok", bad_magic, "bad magic (bytes 58 54 45 4d 54 4f 4b 00"},
      {"version.tok", shard_bytes(10, 10, 4096, 2, 1, 2), "version 2 is not supported"},
      {"bpt.tok", shard_bytes(10, 10, 4096, 3), "bytes_per_token 3 is invalid"},
      {"bptvocab.tok", shard_bytes(10, 10, 4096, 4), "bytes_per_token 4 does not match vocab_size 4096 (expected 2)"},
      {"vocab0.tok", shard_bytes(10, 10, 0), "vocab_size 0 is out of range"},
      {"vocabbig.tok", shard_bytes(10, 10, uint64_t{1} << 40, 4), "vocab_size 1099511627776 is out of range"},
      {"reserved.tok", reserved, "reserved header byte 50 is 1"},
      {"truncated.tok", shard_bytes(10, 6), "truncated: n_tokens 10 needs 20 bytes of ids, but the file has 12"},
      {"huge.tok", shard_bytes(uint64_t{1} << 62, 4), "truncated: n_tokens 4611686018427387904"},
      {"trailing.tok", shard_bytes(4, 6), "4 bytes longer than the header's n_tokens 4"},
      {"docs.tok", shard_bytes(4, 4, 4096, 2, 5), "n_docs 5 exceeds n_tokens 4"},
      {"id.tok", bad_id, "token id 4096 at index 1 is outside [0, vocab_size 4096)"},
  };
  for (const Case& c : cases) {
    write(c.name, c.bytes);
    auto s = TokenShard::open(p(c.name));
    ASSERT_FALSE(s.ok()) << c.name;
    const std::string m = s.status().message();
    EXPECT_EQ(m.rfind(p(c.name) + ": ", 0), 0u) << m;  // names the file first
    EXPECT_NE(m.find(c.expect), std::string::npos) << c.name << ": " << m;
  }
  auto missing = TokenShard::open(p("nope.tok"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope.tok: no such file"), std::string::npos);
  auto dir = TokenShard::open(dir_.string());
  ASSERT_FALSE(dir.ok());
  EXPECT_NE(dir.status().message().find("not a regular file"), std::string::npos);
}

TEST_F(TokenShardTest, DataDirErrors) {
  auto r = DataDir::open(p("absent"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no such data directory"), std::string::npos) << r.status().message();
  fs::create_directories(p("d"));
  r = DataDir::open(p("d"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("d/data.json: missing"), std::string::npos) << r.status().message();
  // All four files, but the shards disagree with data.json on the vocabulary.
  write("d/data.json", R"({"format": "stem-data", "version": 1, "vocab_size": 300, "bos_id": 1, "eos_id": 2})");
  write("d/tokenizer.model", "x");
  ASSERT_TRUE(stem::io::write_token_shard(p("d/train.tok"), {1, 2}, 300, 1).ok());
  ASSERT_TRUE(stem::io::write_token_shard(p("d/val.tok"), {1, 2}, 301, 1).ok());
  r = DataDir::open(p("d"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("val.tok: vocab_size 301 differs"), std::string::npos) << r.status().message();
  ASSERT_TRUE(stem::io::write_token_shard(p("d/val.tok"), {1, 2}, 300, 1).ok());
  ASSERT_TRUE(DataDir::open(p("d")).ok());
  write("d/data.json", R"({"format": "stem-data", "version": 2, "vocab_size": 300, "bos_id": 1, "eos_id": 2})");
  r = DataDir::open(p("d"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("version 2 is not supported"), std::string::npos) << r.status().message();
  write("d/data.json", R"({"format": "stem-data", "version": 1, "vocab_size": 300, "bos_id": 300, "eos_id": 2})");
  r = DataDir::open(p("d"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bos_id 300 is outside [0, vocab_size 300)"), std::string::npos)
      << r.status().message();
}

// ---------------------------------------------------------------- tokenizer

TEST_F(TokenizerTest, TrainEncodeDecode) {
  write("a.txt", prose(60, 3, 1));
  write("b.txt", prose(40, 2, 2));
  ASSERT_TRUE(Tokenizer::train({p("a.txt"), p("b.txt")}, p("tok.model"), 300).ok());
  EXPECT_EQ(listing(), (std::vector<std::string>{"a.txt", "b.txt", "tok.model"}));
  auto t = Tokenizer::load(p("tok.model"));
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_EQ(t->vocab_size(), 300);
  EXPECT_EQ(t->unk_id(), 0);
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_EQ(t->piece(1), "<s>");
  EXPECT_EQ(t->piece(2), "</s>");
  EXPECT_EQ(t->piece(3 + 'a'), "<0x61>");  // byte pieces follow the specials
  // Lossless, including text the model never saw: newlines, tabs, double
  // spaces, capitals and non-ASCII go through byte fallback.
  for (const std::string& s : {std::string("the house was a letter from her sister."),
                              prose(3, 2, 9), std::string("  indented, then trailing  \n"),
                              std::string("Line one\n\nLine\ttwo  with  spaces, caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac!\n")}) {
    const std::vector<int32_t> ids = t->encode(s);
    for (int32_t id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, 300);
      EXPECT_NE(id, t->unk_id()) << s;
    }
    EXPECT_EQ(t->decode(ids), s);
  }
  // Merges make training text shorter than one id per byte.
  const std::string seen = "the house was a letter from her sister";
  EXPECT_LT(t->encode(seen).size(), seen.size());
  // BOS/EOS decode to nothing.
  std::vector<int32_t> with = t->encode("anne said");
  with.insert(with.begin(), 1);
  with.push_back(2);
  EXPECT_EQ(t->decode(with), "anne said");
  // Training is deterministic.
  ASSERT_TRUE(Tokenizer::train({p("a.txt"), p("b.txt")}, p("tok2.model"), 300).ok());
  EXPECT_EQ(read("tok.model"), read("tok2.model"));
}

TEST_F(TokenizerTest, Errors) {
  write("a.txt", prose(20, 2, 1));
  auto st = Tokenizer::train({p("a.txt")}, p("big.model"), 20000);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("vocab size 20000 is too large for this corpus"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("try <= "), std::string::npos) << st.message();
  st = Tokenizer::train({p("a.txt")}, p("small.model"), 270);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("vocab size 270 is too small"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("try >= "), std::string::npos) << st.message();
  st = Tokenizer::train({p("a.txt")}, p("tiny.model"), 100);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("must exceed 259"), std::string::npos) << st.message();
  st = Tokenizer::train({p("a.txt"), p("missing.txt")}, p("m.model"), 300);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("missing.txt: no such file"), std::string::npos) << st.message();
  write("blank.txt", "\n\n  \n");
  st = Tokenizer::train({p("blank.txt")}, p("m.model"), 300);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("no text to train on"), std::string::npos) << st.message();
  EXPECT_EQ(listing(), (std::vector<std::string>{"a.txt", "blank.txt"}));  // no model, no temporary file

  auto t = Tokenizer::load(p("absent.model"));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("absent.model: no such file"), std::string::npos);
  write("junk.model", "this is not a protobuf");
  t = Tokenizer::load(p("junk.model"));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("junk.model: not a SentencePiece model"), std::string::npos)
      << t.status().message();
  // a model that SentencePiece throws on (an empty piece; found by fuzzing)
  t = Tokenizer::load(std::string(STEM_SOURCE_DIR) + "/tests/fuzz/tokenizer/empty_piece.model");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("empty_piece.model: not a valid SentencePiece model"), std::string::npos)
      << t.status().message();
}

// ---------------------------------------------------------------- stem prepare

using stem::test::CmdResult;
using stem::test::stem_cmd;

// The text of every document in a shard (BOS ... EOS each), decoded.
std::vector<std::string> documents(const TokenShard& s, const Tokenizer& t) {
  std::vector<std::string> docs;
  const std::vector<int32_t> ids = read_all(s);
  std::vector<int32_t> cur;
  bool open = false;
  for (int32_t id : ids) {
    if (id == t.bos_id()) {
      EXPECT_FALSE(open);
      open = true;
      cur.clear();
    } else if (id == t.eos_id()) {
      EXPECT_TRUE(open);
      open = false;
      docs.push_back(t.decode(cur));
    } else {
      cur.push_back(id);
    }
  }
  EXPECT_FALSE(open);
  return docs;
}

TEST_F(PrepareTest, SmallCorpus) {
  fs::create_directories(p("in/sub"));
  const std::string a = prose(40, 2, 1), b = prose(30, 2, 2);
  write("in/a.txt", a);
  write("in/sub/b.txt", b);
  write("in/notes.md", "not text for the corpus \x01");  // not *.txt: ignored
  CmdResult r = stem_cmd("prepare --input " + p("in") + " --out " + p("data") +
                         " --vocab-size 300 --val-fraction 0.2 --doc-bytes 300 --seed 3 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["vocab_size"], 300);
  EXPECT_EQ(j["sources"].size(), 2u);
  EXPECT_EQ(listing(), (std::vector<std::string>{"data", "in"}));  // no temporary folder left

  auto d = DataDir::open(p("data"));
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->vocab_size, 300);
  EXPECT_EQ(d->bos_id, 1);
  EXPECT_EQ(d->eos_id, 2);
  EXPECT_GT(d->val.n_docs(), 0);
  EXPECT_GT(d->train.n_docs(), d->val.n_docs());
  EXPECT_EQ(d->train.n_docs() + d->val.n_docs(), j["documents"]["count"].get<int64_t>());
  EXPECT_EQ(d->train.size(), j["train"]["tokens"].get<int64_t>());
  auto t = Tokenizer::load(d->tokenizer_path);
  ASSERT_TRUE(t.ok()) << t.status().message();

  // Lossless and complete: every paragraph of the input is in exactly one
  // decoded document, and documents are whole paragraphs of about 300 bytes.
  std::vector<std::string> docs = documents(d->train, *t);
  for (const auto& v : documents(d->val, *t)) docs.push_back(v);
  ASSERT_EQ(static_cast<int64_t>(docs.size()), j["documents"]["count"].get<int64_t>());
  std::string joined;
  for (const auto& doc : docs) {
    EXPECT_LE(doc.size(), 2 * 300 + 200u);
    joined += doc + "\n\n";
  }
  for (const std::string& text : {a, b}) {
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find("\n\n", start);
      if (end == std::string::npos) end = text.size() - 1;  // the final "\n"
      const std::string para = text.substr(start, end - start);
      EXPECT_NE(joined.find(para), std::string::npos) << para;
      start = end + 2;
    }
  }
  // Deterministic: the same inputs and seed give the same bytes.
  r = stem_cmd("prepare --input " + p("in") + " --out " + p("data2") +
               " --vocab-size 300 --val-fraction 0.2 --doc-bytes 300 --seed 3");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("train"), std::string::npos);
  for (const char* f : {"train.tok", "val.tok", "tokenizer.model"})
    EXPECT_EQ(read(std::string("data/") + f), read(std::string("data2/") + f)) << f;

  // An existing output is kept unless --force.
  r = stem_cmd("prepare --input " + p("in/a.txt") + " --out " + p("data") + " --vocab-size 300");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("already exists (use --force"), std::string::npos) << r.err;
  EXPECT_EQ(read("data/train.tok"), read("data2/train.tok"));
  r = stem_cmd("prepare --input " + p("in/a.txt") + " --out " + p("data") + " --vocab-size 300 --doc-bytes 300 --force");
  ASSERT_EQ(r.code, 0) << r.err;
  auto d2 = DataDir::open(p("data"));
  ASSERT_TRUE(d2.ok()) << d2.status().message();
  EXPECT_LT(d2->train.size() + d2->val.size(), d->train.size() + d->val.size());
  EXPECT_EQ(listing(), (std::vector<std::string>{"data", "data2", "in"}));
  // --force never replaces a folder that is not an earlier output.
  r = stem_cmd("prepare --input " + p("in/a.txt") + " --out " + p("in") + " --vocab-size 300 --doc-bytes 300 --force");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("is not a stem data folder"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(p("in/a.txt")));
}

TEST_F(PrepareTest, Help) {
  CmdResult r = stem_cmd("prepare --help");
  EXPECT_EQ(r.code, 0);
  for (const char* opt : {"--input", "--out", "--vocab-size", "--val-fraction", "--seed", "--json", "--force"})
    EXPECT_NE(r.out.find(opt), std::string::npos) << opt;
  EXPECT_NE(stem_cmd("prepare --out " + p("x")).code, 0);  // --input is required
}

TEST_F(PrepareTest, BadInputs) {
  write("ok.txt", prose(20, 2, 1));
  write("empty.txt", "");
  write("blank.txt", "\n  \n\n");
  std::string bin = "hello";
  bin += '\0';
  bin += "world";
  write("input.bin", bin);
  write("latin1.txt", "caf\xe9 au lait\n");
  fs::create_directories(p("nodocs"));
  write("nodocs/readme.md", "x");
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases = {
      {"--input " + p("missing.txt"), p("missing.txt") + ": no such file or folder"},
      {"--input " + p("empty.txt"), p("empty.txt") + ": empty (no text to prepare)"},
      {"--input " + p("empty.txt") + " " + p("blank.txt"), "no text in the 2 input files"},
      {"--input " + p("ok.txt") + " " + p("input.bin"), p("input.bin") + ": looks binary (NUL byte at offset 5)"},
      {"--input " + p("latin1.txt"), p("latin1.txt") + ": not UTF-8 text (invalid byte 0xE9 at offset 3)"},
      {"--input " + p("nodocs"), p("nodocs") + ": folder holds no *.txt files"},
      {"--input " + p("ok.txt") + " --doc-bytes 300 --vocab-size 20000", "vocab size 20000 is too large for this corpus"},
      {"--input " + p("ok.txt") + " --vocab-size 100", "--vocab-size 100 is out of range"},
      {"--input " + p("ok.txt") + " --val-fraction 1", "--val-fraction 1.000000 is outside [0, 1)"},
      {"--input " + p("ok.txt") + " --doc-bytes 100000", "too few to hold out a validation split"},
  };
  const auto before = listing();
  for (const Case& c : cases) {
    CmdResult r = stem_cmd("prepare " + c.args + " --out " + p("out"));
    EXPECT_EQ(r.code, 1) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("stem prepare: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;  // one line
    EXPECT_EQ(listing(), before) << c.args;  // no out/, no out.tmp-*
  }
  // The vocabulary error says which sizes would work.
  CmdResult r = stem_cmd("prepare --input " + p("ok.txt") + " --doc-bytes 300 --vocab-size 20000 --out " + p("out"));
  EXPECT_NE(r.err.find("try <= "), std::string::npos) << r.err;
}

}  // namespace
