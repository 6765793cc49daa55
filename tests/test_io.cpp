// Tests of src/io/files and src/io/safetensors: atomic writes, .npy bytes,
// token-id files, and one test per safetensors validation rule on hand-crafted
// byte strings (each asserting the error names the file and the problem), plus
// write/read round trips. Each test works in its own temporary directory.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/bf16.h"
#include "io/files.h"
#include "io/safetensors.h"

namespace stem::io {
namespace {

namespace fs = std::filesystem;

// EXPECT_TRUE(Has(message, part)): prints both on failure.
::testing::AssertionResult Has(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\n  text: " << text << "\n  lacks: " << part;
}

// A fresh directory per test, removed afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "stem_io_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  void write_bytes(const std::string& p, const std::string& bytes) const {
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  std::string read_bytes(const std::string& p) const {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  std::string dir_;
};

// ---------------------------------------------------------------- atomic writes

using IoAtomicWrite = TempDirTest;

TEST_F(IoAtomicWrite, WritesAndLeavesNoTemporaryFile) {
  ASSERT_TRUE(write_text_atomic(path("a.txt"), "hello\n").ok());
  EXPECT_EQ(read_bytes(path("a.txt")), "hello\n");
  ASSERT_TRUE(write_text_atomic(path("a.txt"), "replaced").ok());
  EXPECT_EQ(read_bytes(path("a.txt")), "replaced");
  EXPECT_EQ(listing(), std::vector<std::string>{"a.txt"});
}

TEST_F(IoAtomicWrite, TemporaryNameIsHiddenInTheSameDirectory) {
  std::string seen;
  Status s = write_file_atomic(path("b.bin"), [&](int fd) {
    for (const auto& n : listing()) seen += n + ";";
    return write_all(fd, "x", 1, "b.bin");
  });
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(seen, ".b.bin.tmp." + std::to_string(::getpid()) + ";");
  EXPECT_EQ(listing(), std::vector<std::string>{"b.bin"});
}

TEST_F(IoAtomicWrite, FailingWriterLeavesDestinationUntouched) {
  write_bytes(path("keep.txt"), "original");
  Status s = write_file_atomic(path("keep.txt"), [](int fd) {
    Status w = write_all(fd, "partial", 7, "keep.txt");
    if (!w.ok()) return w;
    return Status::error("writer gave up");
  });
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Has(s.message(), "writer gave up"));
  EXPECT_EQ(read_bytes(path("keep.txt")), "original");
  EXPECT_EQ(listing(), std::vector<std::string>{"keep.txt"});
}

TEST_F(IoAtomicWrite, NonexistentDirectoryFailsNamingThePath) {
  const std::string p = path("missing/dir/out.json");
  Status s = write_text_atomic(p, "{}");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Has(s.message(), p));
  EXPECT_TRUE(Has(s.message(), "No such file or directory"));
  EXPECT_FALSE(fs::exists(p));
  EXPECT_TRUE(listing().empty());
}

TEST_F(IoAtomicWrite, FileAsDirectoryComponentFails) {
  write_bytes(path("plain"), "x");
  Status s = write_text_atomic(path("plain/out.txt"), "y");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Has(s.message(), path("plain/out.txt")));
  EXPECT_EQ(read_bytes(path("plain")), "x");
}

TEST_F(IoAtomicWrite, ReadOnlyDirectoryFails) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  ASSERT_EQ(::mkdir(path("ro").c_str(), 0555), 0);
  Status s = write_text_atomic(path("ro/out.txt"), "y");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Has(s.message(), path("ro/out.txt")));
  EXPECT_FALSE(fs::exists(path("ro/out.txt")));
}

TEST_F(IoAtomicWrite, DestinationIsADirectoryRemovesTemporary) {
  ASSERT_EQ(::mkdir(path("d").c_str(), 0755), 0);
  Status s = write_text_atomic(path("d"), "y");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Has(s.message(), path("d")));
  EXPECT_TRUE(fs::is_directory(path("d")));
  EXPECT_EQ(listing(), std::vector<std::string>{"d"});
}

// ---------------------------------------------------------------- read_text

using IoReadText = TempDirTest;

TEST_F(IoReadText, ReadsWholeFile) {
  std::string big(200000, 'q');
  big[12345] = '\0';
  write_bytes(path("t"), big);
  auto r = read_text(path("t"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, big);
}

TEST_F(IoReadText, MissingFileAndDirectoryNameThePath) {
  auto r = read_text(path("nope"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Has(r.status().message(), path("nope")));
  auto d = read_text(dir_);
  ASSERT_FALSE(d.ok());
  EXPECT_TRUE(Has(d.status().message(), dir_));
  EXPECT_TRUE(Has(d.status().message(), "directory"));
}

// ---------------------------------------------------------------- npy

using IoNpy = TempDirTest;

// Returns the header text and checks the fixed bytes around it.
std::string npy_header(const std::string& bytes) {
  EXPECT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 6), "\x93NUMPY");
  EXPECT_EQ(bytes[6], '\x01');
  EXPECT_EQ(bytes[7], '\x00');
  const size_t hlen = static_cast<uint8_t>(bytes[8]) | static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8;
  EXPECT_EQ((10 + hlen) % 64, 0u);
  EXPECT_LE(10 + hlen, bytes.size());
  std::string h = bytes.substr(10, hlen);
  EXPECT_EQ(h.back(), '\n');
  return h;
}

TEST_F(IoNpy, TwoDimensionalHeaderAndData) {
  std::vector<float> v = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, 7.0f};
  ASSERT_TRUE(write_npy_f32(path("a.npy"), v.data(), {2, 3}).ok());
  std::string bytes = read_bytes(path("a.npy"));
  std::string h = npy_header(bytes);
  EXPECT_EQ(h.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0), 0u) << h;
  EXPECT_EQ(h.find_first_not_of(' ', h.find('}') + 1), h.size() - 1);
  const size_t data_at = 10 + h.size();
  ASSERT_EQ(bytes.size(), data_at + v.size() * 4);
  EXPECT_EQ(std::memcmp(bytes.data() + data_at, v.data(), v.size() * 4), 0);
}

TEST_F(IoNpy, OneDimensionalShapeHasTrailingComma) {
  std::vector<float> v = {1, 2, 3, 4, 5};
  ASSERT_TRUE(write_npy_f32(path("b.npy"), v.data(), {5}).ok());
  std::string bytes = read_bytes(path("b.npy"));
  std::string h = npy_header(bytes);
  EXPECT_TRUE(Has(h, "'shape': (5,), }"));
  EXPECT_EQ(std::memcmp(bytes.data() + 10 + h.size(), v.data(), 20), 0);
}

TEST_F(IoNpy, ScalarAndEmpty) {
  float x = 42.0f;
  ASSERT_TRUE(write_npy_f32(path("s.npy"), &x, {}).ok());
  std::string bytes = read_bytes(path("s.npy"));
  std::string h = npy_header(bytes);
  EXPECT_TRUE(Has(h, "'shape': (), }"));
  EXPECT_EQ(bytes.size(), 10 + h.size() + 4);
  ASSERT_TRUE(write_npy_f32(path("e.npy"), nullptr, {0, 4}).ok());
  EXPECT_TRUE(Has(npy_header(read_bytes(path("e.npy"))), "'shape': (0, 4), }"));
}

TEST_F(IoNpy, NegativeShapeRejected) {
  float x = 0;
  Status s = write_npy_f32(path("n.npy"), &x, {2, -1});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Has(s.message(), path("n.npy")));
  EXPECT_FALSE(fs::exists(path("n.npy")));
}

// ---------------------------------------------------------------- token ids

using IoTokenIds = TempDirTest;

TEST_F(IoTokenIds, ParsesWhitespaceSeparatedIds) {
  write_bytes(path("t.txt"), "1 2\t3\r\n\n  4095\n0");
  auto r = read_token_ids(path("t.txt"), 4096);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, (std::vector<int32_t>{1, 2, 3, 4095, 0}));
}

TEST_F(IoTokenIds, BadTextNamesFileLineAndText) {
  write_bytes(path("t.txt"), "1 2\n3 abc 4\n");
  auto r = read_token_ids(path("t.txt"), 4096);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Has(r.status().message(), path("t.txt")));
  EXPECT_TRUE(Has(r.status().message(), "line 2"));
  EXPECT_TRUE(Has(r.status().message(), "'abc'"));
}

TEST_F(IoTokenIds, DigitsFollowedByJunkRejected) {
  for (const char* bad : {"12x", "+5", "1.5", "0x10"}) {
    write_bytes(path("t.txt"), std::string("7\n8\n") + bad);
    auto r = read_token_ids(path("t.txt"), 4096);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(Has(r.status().message(), "line 3"));
    EXPECT_TRUE(Has(r.status().message(), std::string("'") + bad + "'"));
  }
}

TEST_F(IoTokenIds, OutOfRangeIdsNameIdAndVocab) {
  write_bytes(path("t.txt"), "5 4096");
  auto r = read_token_ids(path("t.txt"), 4096);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Has(r.status().message(), path("t.txt")));
  EXPECT_TRUE(Has(r.status().message(), "line 1"));
  EXPECT_TRUE(Has(r.status().message(), "4096"));
  EXPECT_TRUE(Has(r.status().message(), "outside [0, 4096)"));

  write_bytes(path("n.txt"), "\n-1");
  auto n = read_token_ids(path("n.txt"), 4096);
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(Has(n.status().message(), "line 2: token id -1 is outside"));

  write_bytes(path("h.txt"), "99999999999999999999999");
  auto h = read_token_ids(path("h.txt"), 4096);
  ASSERT_FALSE(h.ok());
  EXPECT_TRUE(Has(h.status().message(), "99999999999999999999999 is outside"));
}

TEST_F(IoTokenIds, EmptyOrBlankFileIsAnError) {
  for (const char* text : {"", " \n\t\n"}) {
    write_bytes(path("e.txt"), text);
    auto r = read_token_ids(path("e.txt"), 10);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(Has(r.status().message(), path("e.txt")));
    EXPECT_TRUE(Has(r.status().message(), "empty"));
  }
}

TEST_F(IoTokenIds, MissingFileNamesPath) {
  auto r = read_token_ids(path("none.txt"), 10);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Has(r.status().message(), path("none.txt")));
}

// ---------------------------------------------------------------- safetensors

// An 8-byte little-endian header length, the header, then `data`.
std::string st_bytes(const std::string& header, const std::string& data = "", int64_t len = -1) {
  uint64_t n = len < 0 ? header.size() : static_cast<uint64_t>(len);
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

class SafetensorsTest : public TempDirTest {
 protected:
  // Writes `bytes` as bad.safetensors and returns the open() error message.
  std::string open_error(const std::string& bytes) {
    const std::string p = path("bad.safetensors");
    write_bytes(p, bytes);
    auto r = SafetensorsFile::open(p);
    EXPECT_FALSE(r.ok()) << "opened a malformed file";
    if (r.ok()) return "";
    const std::string m = r.status().message();
    EXPECT_TRUE(Has(m, "safetensors: " + p + ": "));
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    return m;
  }
};

using SafetensorsValidation = SafetensorsTest;

TEST_F(SafetensorsValidation, EmptyFile) {
  EXPECT_TRUE(Has(open_error(""), "file is empty"));
}

TEST_F(SafetensorsValidation, ShorterThanHeaderLength) {
  EXPECT_TRUE(Has(open_error("abc"), "3 bytes, too short"));
}

TEST_F(SafetensorsValidation, MissingFile) {
  auto r = SafetensorsFile::open(path("none.safetensors"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Has(r.status().message(), path("none.safetensors")));
  EXPECT_TRUE(Has(r.status().message(), "No such file"));
}

TEST_F(SafetensorsValidation, Directory) {
  auto r = SafetensorsFile::open(dir_);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Has(r.status().message(), "safetensors: " + dir_ + ": is a directory"));
}

TEST_F(SafetensorsValidation, HeaderLengthLargerThanFile) {
  EXPECT_TRUE(Has(open_error(st_bytes("{}", "", 1000)), "header length 1000 runs past the end of the file (10 bytes)"));
}

TEST_F(SafetensorsValidation, HeaderLengthHuge) {
  EXPECT_TRUE(Has(open_error(st_bytes("{}", "", int64_t{1} << 62)), "runs past the end of the file"));
}

TEST_F(SafetensorsValidation, HeaderLengthOverLimit) {
  // A sparse file just large enough that only the 100 MB cap refuses it.
  const std::string p = path("big.safetensors");
  write_bytes(p, st_bytes("{}", "", 100'000'001));
  ASSERT_EQ(::truncate(p.c_str(), 8 + 100'000'001), 0);
  auto r = SafetensorsFile::open(p);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Has(r.status().message(), p));
  EXPECT_TRUE(Has(r.status().message(), "header length 100000001 exceeds the limit"));
}

TEST_F(SafetensorsValidation, HeaderLengthZero) {
  EXPECT_TRUE(Has(open_error(st_bytes("", "abcd")), "header length is 0"));
}

TEST_F(SafetensorsValidation, HeaderNotJson) {
  std::string m = open_error(st_bytes("{\"a\": nope}"));
  EXPECT_TRUE(Has(m, "header is not valid JSON"));
  EXPECT_TRUE(Has(m, "column"));
}

TEST_F(SafetensorsValidation, HeaderInvalidUtf8) {
  EXPECT_TRUE(Has(open_error(st_bytes("{\"\xff\": {}}")), "header is not valid JSON"));
}

TEST_F(SafetensorsValidation, HeaderNotObject) {
  EXPECT_TRUE(Has(open_error(st_bytes("[1, 2]")), "header is not a JSON object (got array)"));
}

TEST_F(SafetensorsValidation, HeaderNestedTooDeep) {
  EXPECT_TRUE(Has(open_error(st_bytes(std::string(5000, '[') + std::string(5000, ']'))),
              "nested more than"));
}

TEST_F(SafetensorsValidation, DuplicateTensorName) {
  std::string h = R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                  R"( "x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})";
  EXPECT_TRUE(Has(open_error(st_bytes(h, std::string(8, '\0'))), "names 'x' twice"));
}

TEST_F(SafetensorsValidation, EntryNotObject) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"w": [1, 2]})")), "tensor 'w': entry is not a JSON object"));
}

TEST_F(SafetensorsValidation, MissingDtype) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", "abcd")),
              "tensor 'w': missing 'dtype'"));
}

TEST_F(SafetensorsValidation, DtypeNotString) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"w": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}})", "abcd")),
              "tensor 'w': 'dtype' is not a string"));
}

TEST_F(SafetensorsValidation, UnknownDtype) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"w": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}})", "abcd")),
              "tensor 'w': unsupported dtype \"F16\""));
}

TEST_F(SafetensorsValidation, MissingShape) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", "abcd")),
              "tensor 'w': missing 'shape'"));
}

TEST_F(SafetensorsValidation, ShapeNotArray) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"w": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}})", "abcd")),
              "tensor 'w': 'shape' is not an array"));
}

TEST_F(SafetensorsValidation, NegativeShape) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 4]}})", "abcd")),
              "tensor 'w': shape [2,-1] has a negative dimension -1"));
}

TEST_F(SafetensorsValidation, FractionalShape) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", "abcd")),
              "tensor 'w': shape [1.5] has an element that is not a non-negative integer"));
}

TEST_F(SafetensorsValidation, ShapeOverflow) {
  std::string h = R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})";
  EXPECT_TRUE(Has(open_error(st_bytes(h, "abcd")), "tensor 'w': shape [4294967296, 4294967296] has too many elements"));
}

TEST_F(SafetensorsValidation, MissingOffsets) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"w": {"dtype": "F32", "shape": [1]}})", "abcd")),
              "tensor 'w': missing 'data_offsets'"));
}

TEST_F(SafetensorsValidation, OffsetsMalformed) {
  for (const char* off : {"[0]", "[0, 4, 8]", "[-4, 0]", "\"0,4\"", "[0, 4.0]"}) {
    std::string h = std::string(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": )") + off + "}}";
    EXPECT_TRUE(Has(open_error(st_bytes(h, "abcd")), "tensor 'w': 'data_offsets' must be [begin, end]")) << off;
  }
}

TEST_F(SafetensorsValidation, OffsetsOutOfRange) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}})", "12345678")),
              "tensor 'x': data_offsets [0, 12] end past the data section (8 bytes)"));
}

TEST_F(SafetensorsValidation, OffsetsEndBeforeBegin) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"x": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", "12345678")),
              "tensor 'x': data_offsets [8, 4] end before begin"));
}

TEST_F(SafetensorsValidation, SizeMismatch) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}})", "12345678")),
              "tensor 'x': data_offsets [0, 8] span 8 bytes but BF16 [3] needs 6"));
}

TEST_F(SafetensorsValidation, OverlappingTensors) {
  std::string h = R"({"b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},)"
                  R"( "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})";
  EXPECT_TRUE(Has(open_error(st_bytes(h, std::string(12, '\0'))),
              "tensors 'a' [0, 8] and 'b' [4, 12] overlap"));
}

TEST_F(SafetensorsValidation, OverlapInsideAnEarlierLargerTensor) {
  std::string h = R"({"big": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                  R"( "mid": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},)"
                  R"( "end": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}})";
  EXPECT_TRUE(Has(open_error(st_bytes(h, std::string(16, '\0'))), "'big' [0, 16] and 'mid' [4, 8] overlap"));
}

TEST_F(SafetensorsValidation, TruncatedData) {
  const std::string p = path("t.safetensors");
  std::vector<float> v(16, 1.0f);
  ASSERT_TRUE(write_safetensors(p, {{"w", DType::F32, {16}, v.data()}}).ok());
  std::string bytes = read_bytes(p);
  std::string m = open_error(bytes.substr(0, bytes.size() - 5));
  EXPECT_TRUE(Has(m, "tensor 'w': data_offsets [0, 64] end past the data section (59 bytes)"));
  // Cut inside the header too.
  EXPECT_TRUE(Has(open_error(bytes.substr(0, 20)), "runs past the end of the file (20 bytes)"));
}

TEST_F(SafetensorsValidation, MetadataNotStrings) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"__metadata__": {"format": "pt", "step": 5}})")),
              "__metadata__ 'step' is not a string (got 5)"));
}

TEST_F(SafetensorsValidation, MetadataNotObject) {
  EXPECT_TRUE(Has(open_error(st_bytes(R"({"__metadata__": ["pt"]})")), "__metadata__ is not a JSON object"));
}

TEST_F(SafetensorsValidation, EmptyTensorsHolesAndPaddingAccepted) {
  // Zero-size tensors overlap nothing; a hole and trailing bytes are never read.
  std::string h = R"({"e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [4, 4]},)"
                  R"( "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                  R"( "b": {"dtype": "I32", "shape": [1], "data_offsets": [12, 16]}}   )";
  const std::string p = path("ok.safetensors");
  write_bytes(p, st_bytes(h, std::string(20, '\1')));
  auto r = SafetensorsFile::open(p);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->entries().size(), 3u);
  EXPECT_EQ(r->entries()[0].name, "a");
  EXPECT_EQ(r->entries()[1].name, "e");
  EXPECT_EQ(r->entries()[2].name, "b");
  EXPECT_EQ(r->find("b")->offset, 8 + h.size() + 12);
  EXPECT_EQ(r->find("e")->nbytes, 0u);
  EXPECT_EQ(r->find("zzz"), nullptr);
}

// ---------------------------------------------------------------- write + read

using SafetensorsRoundTrip = SafetensorsTest;

TEST_F(SafetensorsRoundTrip, StreamedTensorsAndWrongStreamSizes) {
  // A tensor produced in pieces reads back like one written from memory; a
  // producer that writes too few or too many bytes is an error, no file left.
  std::vector<float> a = {1, 2, 3, 4, 5, 6, 7};
  SafetensorsItem streamed{"s", DType::F32, {7}, nullptr};
  streamed.produce = [&](const ByteSink& sink) -> Status {
    STEM_RETURN_IF_ERROR(sink(a.data(), 3 * sizeof(float)));
    return sink(a.data() + 3, 4 * sizeof(float));
  };
  const std::string p = path("s.safetensors");
  ASSERT_TRUE(write_safetensors(p, {{"x", DType::F32, {1}, a.data()}, streamed}).ok());
  auto r = SafetensorsFile::open(p);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const SafetensorsEntry* e = r->find("s");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(std::memcmp(r->data(*e), a.data(), 7 * sizeof(float)), 0);
  for (int n : {6, 8}) {
    SafetensorsItem bad{"s", DType::F32, {7}, nullptr};
    std::vector<float> buf(8, 1.0f);
    bad.produce = [&buf, n](const ByteSink& sink) { return sink(buf.data(), n * sizeof(float)); };
    Status st = write_safetensors(path("bad.safetensors"), {bad});
    ASSERT_FALSE(st.ok()) << n;
    EXPECT_NE(st.message().find("tensor 's'"), std::string::npos) << st.message();
  }
  EXPECT_EQ(listing(), std::vector<std::string>{"s.safetensors"});
}

TEST_F(SafetensorsRoundTrip, F32Bf16I32AndMetadata) {
  std::vector<float> w = {1.0f, -2.5f, 3.0f, 4.75f, 0.0f, -0.0f};
  std::vector<uint16_t> b = {core::float_to_bf16(1.0f), core::float_to_bf16(-3.5f), core::float_to_bf16(0.125f)};
  std::vector<int32_t> ids = {0, -7, 2147483647, 42, 5};
  float scalar = 9.0f;
  const std::string p = path("m.safetensors");
  Status s = write_safetensors(p,
                               {{"model.w", DType::F32, {2, 3}, w.data()},
                                {"model.b", DType::BF16, {3}, b.data()},
                                {"model.ids", DType::I32, {5}, ids.data()},
                                {"empty", DType::F32, {0, 8}, nullptr},
                                {"scalar", DType::F32, {}, &scalar}},
                               {{"format", "pt"}, {"note", "stem test"}});
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(listing(), std::vector<std::string>{"m.safetensors"});

  auto r = SafetensorsFile::open(p);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const auto& f = *r;
  ASSERT_EQ(f.entries().size(), 5u);
  // Offset order is the order written.
  const char* order[] = {"model.w", "model.b", "model.ids", "empty", "scalar"};
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(f.entries()[i].name, order[i]);

  const SafetensorsEntry* ew = f.find("model.w");
  ASSERT_NE(ew, nullptr);
  EXPECT_EQ(ew->dtype, DType::F32);
  EXPECT_EQ(ew->shape, (Shape{2, 3}));
  EXPECT_EQ(ew->nbytes, 24u);
  EXPECT_EQ(std::memcmp(f.data(*ew), w.data(), 24), 0);

  const SafetensorsEntry* eb = f.find("model.b");
  ASSERT_NE(eb, nullptr);
  EXPECT_EQ(eb->dtype, DType::BF16);
  EXPECT_EQ(eb->shape, (Shape{3}));
  EXPECT_EQ(std::memcmp(f.data(*eb), b.data(), 6), 0);
  uint16_t b1;
  std::memcpy(&b1, f.data(*eb) + 2, 2);
  EXPECT_EQ(core::bf16_to_float(b1), -3.5f);

  const SafetensorsEntry* ei = f.find("model.ids");
  ASSERT_NE(ei, nullptr);
  EXPECT_EQ(ei->dtype, DType::I32);
  EXPECT_EQ(std::memcmp(f.data(*ei), ids.data(), 20), 0);

  EXPECT_EQ(f.find("empty")->nbytes, 0u);
  EXPECT_EQ(f.find("empty")->shape, (Shape{0, 8}));
  EXPECT_EQ(f.find("scalar")->shape, Shape{});
  EXPECT_EQ(std::memcmp(f.data(*f.find("scalar")), &scalar, 4), 0);

  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "stem test");
  EXPECT_EQ(f.file_size(), fs::file_size(p));
  EXPECT_EQ(f.find("scalar")->offset + 4, f.file_size());  // contiguous, no tail
}

TEST_F(SafetensorsRoundTrip, DataSectionIs64ByteAlignedAndHeaderIsStandard) {
  std::vector<float> w(7, 2.0f);
  for (int n_items = 1; n_items <= 4; ++n_items) {
    std::vector<SafetensorsItem> items;
    std::string name = "t";
    for (int i = 0; i < n_items; ++i) {
      name += "xyz";  // names of varying length move the header's end around
      items.push_back({name, DType::F32, {7}, w.data()});
    }
    const std::string p = path("a.safetensors");
    ASSERT_TRUE(write_safetensors(p, items).ok());
    std::string bytes = read_bytes(p);
    uint64_t len = 0;
    for (int i = 7; i >= 0; --i) len = len << 8 | static_cast<uint8_t>(bytes[i]);
    EXPECT_EQ((8 + len) % 64, 0u);
    // Tensors are contiguous from the start of the data section.
    auto header = nlohmann::json::parse(bytes.substr(8, len));
    uint64_t expect = 0;
    for (const auto& item : items) {
      EXPECT_EQ(header[item.name]["dtype"], "F32");
      EXPECT_EQ(header[item.name]["data_offsets"][0], expect);
      expect += 28;
      EXPECT_EQ(header[item.name]["data_offsets"][1], expect);
    }
    EXPECT_EQ(bytes.size(), 8 + len + expect);
    auto r = SafetensorsFile::open(p);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r->data(r->entries()[0])) % 64, 0u);
  }
}

TEST_F(SafetensorsRoundTrip, EmptyTensorList) {
  ASSERT_TRUE(write_safetensors(path("e.safetensors"), {}).ok());
  auto r = SafetensorsFile::open(path("e.safetensors"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->entries().empty());
  EXPECT_EQ(r->file_size() % 64, 0u);
}

TEST_F(SafetensorsRoundTrip, MappingOutlivesTheFileObject) {
  std::vector<float> w = {1, 2, 3};
  ASSERT_TRUE(write_safetensors(path("m.safetensors"), {{"w", DType::F32, {3}, w.data()}}).ok());
  std::shared_ptr<void> keep;
  const float* data = nullptr;
  {
    auto r = SafetensorsFile::open(path("m.safetensors"));
    ASSERT_TRUE(r.ok());
    keep = r->mapping();
    data = reinterpret_cast<const float*>(r->data(r->entries()[0]));
  }
  fs::remove(path("m.safetensors"));
  EXPECT_EQ(data[2], 3.0f);
}

using SafetensorsWrite = SafetensorsTest;

TEST_F(SafetensorsWrite, DuplicateNameRejectedAndNothingWritten) {
  float x = 1;
  Status s = write_safetensors(path("d.safetensors"),
                               {{"w", DType::F32, {1}, &x}, {"w", DType::F32, {1}, &x}});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Has(s.message(), "safetensors: " + path("d.safetensors") + ": tensor 'w': duplicate"));
  EXPECT_TRUE(listing().empty());
}

TEST_F(SafetensorsWrite, BadItemsRejected) {
  float x = 1;
  Status neg = write_safetensors(path("n.safetensors"), {{"w", DType::F32, {-1}, &x}});
  ASSERT_FALSE(neg.ok());
  EXPECT_TRUE(Has(neg.message(), "tensor 'w': shape [-1] has a negative dimension"));
  Status null = write_safetensors(path("n.safetensors"), {{"w", DType::F32, {2}, nullptr}});
  ASSERT_FALSE(null.ok());
  EXPECT_TRUE(Has(null.message(), "tensor 'w': data is null"));
  Status reserved = write_safetensors(path("n.safetensors"), {{"__metadata__", DType::F32, {1}, &x}});
  ASSERT_FALSE(reserved.ok());
  EXPECT_TRUE(Has(reserved.message(), "reserved"));
  EXPECT_TRUE(listing().empty());
}

TEST_F(SafetensorsWrite, IntoMissingDirectoryFails) {
  float x = 1;
  const std::string p = path("no/such/m.safetensors");
  Status s = write_safetensors(p, {{"w", DType::F32, {1}, &x}});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Has(s.message(), p));
}

}  // namespace
}  // namespace stem::io
