// Token shards: writing (whole, or streamed through a temporary file whose
// header is patched at the end) and reading (mmap, fully validated), and the
// DataDir reader. The layout is documented in token_shards.h. Writers never
// leave a partial file at the destination; readers never trust a field they
// have not checked against the file size.
#include "io/token_shards.h"

#include "stem/data.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "io/files.h"

namespace stem::io {

namespace {

static_assert(std::endian::native == std::endian::little, "shards are written by copying memory");

constexpr int64_t kMaxVocab = int64_t{1} << 31;  // ids are int32
constexpr size_t kBufferBytes = size_t{1} << 20;

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t bytes_per_token;
  uint64_t vocab_size;
  uint64_t n_tokens;
  uint64_t n_docs;
  uint8_t reserved[24];
};
static_assert(sizeof(Header) == kTokenShardHeaderBytes);

Header make_header(int64_t vocab_size, int64_t n_tokens, int64_t n_docs) {
  Header h;
  std::memset(&h, 0, sizeof h);
  std::memcpy(h.magic, kTokenShardMagic, sizeof h.magic);
  h.version = kTokenShardVersion;
  h.bytes_per_token = static_cast<uint32_t>(token_bytes_for_vocab(vocab_size));
  h.vocab_size = static_cast<uint64_t>(vocab_size);
  h.n_tokens = static_cast<uint64_t>(n_tokens);
  h.n_docs = static_cast<uint64_t>(n_docs);
  return h;
}

Status check_vocab(const std::string& path, int64_t vocab_size) {
  if (vocab_size < 1 || vocab_size > kMaxVocab)
    return Status::error(path + ": vocab_size " + std::to_string(vocab_size) + " is out of range [1, " +
                         std::to_string(kMaxVocab) + "]");
  return ok_status();
}

// Packs ids as u16 or u32 into `out`, checking each against the vocabulary.
Status pack_ids(const std::string& path, std::span<const int32_t> ids, int64_t vocab_size, int bpt,
                int64_t first_index, std::vector<uint8_t>* out) {
  const size_t at = out->size();
  out->resize(at + ids.size() * static_cast<size_t>(bpt));
  uint8_t* p = out->data() + at;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size) {
      out->resize(at);
      return Status::error(path + ": token id " + std::to_string(id) + " at index " +
                           std::to_string(first_index + static_cast<int64_t>(i)) + " is outside [0, " +
                           std::to_string(vocab_size) + ")");
    }
    if (bpt == 2) {
      const uint16_t v = static_cast<uint16_t>(id);
      std::memcpy(p + 2 * i, &v, 2);
    } else {
      std::memcpy(p + 4 * i, &id, 4);
    }
  }
  return ok_status();
}

std::string hex_bytes(const void* data, size_t n) {
  std::string s;
  char b[8];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof b, "%s%02x", i ? " " : "", static_cast<const uint8_t*>(data)[i]);
    s += b;
  }
  return s;
}

}  // namespace

int token_bytes_for_vocab(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

Status write_token_shard(const std::string& path, const std::vector<int32_t>& ids, int64_t vocab_size,
                         int64_t n_docs) {
  STEM_RETURN_IF_ERROR(check_vocab(path, vocab_size));
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n_docs < 0 || n_docs > n)
    return Status::error(path + ": n_docs " + std::to_string(n_docs) + " is outside [0, n_tokens " +
                         std::to_string(n) + "]");
  const Header h = make_header(vocab_size, n, n_docs);
  std::vector<uint8_t> body;
  body.reserve(ids.size() * h.bytes_per_token);
  STEM_RETURN_IF_ERROR(pack_ids(path, ids, vocab_size, static_cast<int>(h.bytes_per_token), 0, &body));
  return write_file_atomic(path, [&](int fd) {
    STEM_RETURN_IF_ERROR(write_all(fd, &h, sizeof h, path));
    return write_all(fd, body.data(), body.size(), path);
  });
}

// ---------------------------------------------------------------- writer

Result<TokenShardWriter> TokenShardWriter::create(const std::string& path, int64_t vocab_size) {
  STEM_RETURN_IF_ERROR(check_vocab(path, vocab_size));
  namespace fs = std::filesystem;
  const fs::path p(path);
  if (p.filename().empty()) return Status::error("token shard: '" + path + "' is not a file path");
  TokenShardWriter w;
  w.path_ = path;
  std::string tmp_name(".");  // built piecewise: GCC 12 warns (-Wrestrict) on "." + string
  tmp_name += p.filename().string();
  tmp_name += ".tmp.";
  tmp_name += std::to_string(::getpid());
  w.tmp_ = (p.parent_path() / tmp_name).string();
  w.vocab_size_ = vocab_size;
  w.bytes_per_token_ = token_bytes_for_vocab(vocab_size);
  w.fd_ = ::open(w.tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (w.fd_ < 0)
    return Status::error(path + ": cannot create temporary file '" + w.tmp_ + "': " + std::strerror(errno));
  // A placeholder header (n_tokens 0) until finish() knows the counts.
  const Header h = make_header(vocab_size, 0, 0);
  if (Status st = write_all(w.fd_, &h, sizeof h, path); !st.ok()) return st;  // ~w removes tmp
  w.buf_.reserve(kBufferBytes + 4096);
  return w;
}

TokenShardWriter::TokenShardWriter(TokenShardWriter&& o) noexcept
    : path_(std::move(o.path_)),
      tmp_(std::move(o.tmp_)),
      fd_(o.fd_),
      vocab_size_(o.vocab_size_),
      n_tokens_(o.n_tokens_),
      n_docs_(o.n_docs_),
      bytes_per_token_(o.bytes_per_token_),
      buf_(std::move(o.buf_)),
      finished_(o.finished_) {
  o.fd_ = -1;
  o.tmp_.clear();
  o.finished_ = true;
}

TokenShardWriter::~TokenShardWriter() { abandon(); }

void TokenShardWriter::abandon() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!finished_ && !tmp_.empty()) ::unlink(tmp_.c_str());
  finished_ = true;
}

Status TokenShardWriter::flush() {
  if (buf_.empty()) return ok_status();
  Status st = write_all(fd_, buf_.data(), buf_.size(), path_);
  buf_.clear();
  return st;
}

Status TokenShardWriter::append(std::span<const int32_t> ids) {
  if (finished_ || fd_ < 0) return Status::error(path_ + ": append after finish (or after a failed write)");
  // Pack in pieces so the buffer stays about kBufferBytes.
  const size_t per = kBufferBytes / static_cast<size_t>(bytes_per_token_);
  while (!ids.empty()) {
    const size_t take = std::min(ids.size(), per);
    Status st = pack_ids(path_, ids.first(take), vocab_size_, bytes_per_token_, n_tokens_, &buf_);
    if (!st.ok()) return st;
    n_tokens_ += static_cast<int64_t>(take);
    ids = ids.subspan(take);
    if (buf_.size() >= kBufferBytes) {
      if (Status f = flush(); !f.ok()) {
        abandon();
        return f;
      }
    }
  }
  return ok_status();
}

Status TokenShardWriter::finish() {
  if (finished_ || fd_ < 0) return Status::error(path_ + ": finish called twice (or after a failed write)");
  auto fail = [&](Status s) {
    abandon();
    return s;
  };
  if (Status st = flush(); !st.ok()) return fail(st);
  const Header h = make_header(vocab_size_, n_tokens_, n_docs_);
  if (::pwrite(fd_, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h))
    return fail(Status::error(path_ + ": cannot patch the header: " + std::strerror(errno)));
  if (::fsync(fd_) != 0) return fail(Status::error(path_ + ": fsync failed: " + std::strerror(errno)));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return fail(Status::error(path_ + ": close failed: " + std::strerror(errno)));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    return fail(Status::error(path_ + ": cannot rename '" + tmp_ + "' into place: " + std::strerror(errno)));
  finished_ = true;
  const std::string dir = std::filesystem::path(path_).parent_path().string();
  if (Status s = fsync_dir(dir.empty() ? "." : dir); !s.ok()) return Status::error(path_ + ": written, but " + s.message());
  return ok_status();
}

// ---------------------------------------------------------------- reader

struct TokenShard::Mapping {
  void* addr = nullptr;
  size_t len = 0;
  ~Mapping() {
    if (addr != nullptr) ::munmap(addr, len);
  }
};

Result<TokenShard> TokenShard::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return Status::error(path + ": " + (errno == ENOENT ? std::string("no such file") : std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::error(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::error(path + ": not a regular file");
  }
  const int64_t file_size = st.st_size;
  if (file_size < kTokenShardHeaderBytes) {
    ::close(fd);
    return Status::error(path + ": truncated: " + std::to_string(file_size) + " bytes, shorter than the " +
                         std::to_string(kTokenShardHeaderBytes) + "-byte token shard header");
  }
  auto map = std::make_shared<Mapping>();
  map->len = static_cast<size_t>(file_size);
  map->addr = ::mmap(nullptr, map->len, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (map->addr == MAP_FAILED) {
    map->addr = nullptr;
    return Status::error(path + ": mmap of " + std::to_string(file_size) + " bytes failed: " + std::strerror(map_err));
  }
  Header h;
  std::memcpy(&h, map->addr, sizeof h);
  auto bad = [&](const std::string& what) { return Status::error(path + ": " + what); };
  if (std::memcmp(h.magic, kTokenShardMagic, sizeof h.magic) != 0)
    return bad("bad magic (bytes " + hex_bytes(h.magic, 8) + ", expected \"STEMTOK\\0\"): not a stem token shard");
  if (h.version != kTokenShardVersion)
    return bad("version " + std::to_string(h.version) + " is not supported (this build reads version " +
               std::to_string(kTokenShardVersion) + ")");
  if (h.bytes_per_token != 2 && h.bytes_per_token != 4)
    return bad("bytes_per_token " + std::to_string(h.bytes_per_token) + " is invalid (expected 2 or 4)");
  if (h.vocab_size < 1 || h.vocab_size > static_cast<uint64_t>(kMaxVocab))
    return bad("vocab_size " + std::to_string(h.vocab_size) + " is out of range [1, " + std::to_string(kMaxVocab) + "]");
  const int64_t vocab = static_cast<int64_t>(h.vocab_size);
  const int bpt = static_cast<int>(h.bytes_per_token);
  if (bpt != token_bytes_for_vocab(vocab))
    return bad("bytes_per_token " + std::to_string(bpt) + " does not match vocab_size " + std::to_string(vocab) +
               " (expected " + std::to_string(token_bytes_for_vocab(vocab)) + ")");
  for (size_t i = 0; i < sizeof h.reserved; ++i)
    if (h.reserved[i] != 0)
      return bad("reserved header byte " + std::to_string(40 + i) + " is " + std::to_string(h.reserved[i]) +
                 " (must be 0)");
  const uint64_t body = static_cast<uint64_t>(file_size - kTokenShardHeaderBytes);
  if (h.n_tokens > std::numeric_limits<uint64_t>::max() / 4 || h.n_tokens * h.bytes_per_token > body)
    return bad("truncated: n_tokens " + std::to_string(h.n_tokens) + " needs " +
               (h.n_tokens > std::numeric_limits<uint64_t>::max() / 4
                    ? std::string("more than 2^64")
                    : std::to_string(h.n_tokens * h.bytes_per_token)) +
               " bytes of ids, but the file has " + std::to_string(body) + " after the header");
  if (h.n_tokens * h.bytes_per_token != body)
    return bad("file size " + std::to_string(file_size) + " is " +
               std::to_string(body - h.n_tokens * h.bytes_per_token) + " bytes longer than the header's n_tokens " +
               std::to_string(h.n_tokens) + " implies");
  if (h.n_docs > h.n_tokens)
    return bad("n_docs " + std::to_string(h.n_docs) + " exceeds n_tokens " + std::to_string(h.n_tokens));

  TokenShard s;
  s.path_ = path;
  s.n_tokens_ = static_cast<int64_t>(h.n_tokens);
  s.vocab_size_ = vocab;
  s.n_docs_ = static_cast<int64_t>(h.n_docs);
  s.bytes_per_token_ = bpt;
  s.ids_ = static_cast<const uint8_t*>(map->addr) + kTokenShardHeaderBytes;
  // Every id below vocab_size: a corrupt id would index past an embedding.
  // One pass over the file (about 30 ms per 100 MB); u16 ids need no check
  // when the vocabulary covers all of u16.
  if (bpt == 4 || vocab < 65536) {
    for (int64_t i = 0; i < s.n_tokens_; ++i) {
      uint32_t v;
      if (bpt == 2) {
        uint16_t u;
        std::memcpy(&u, s.ids_ + 2 * i, 2);
        v = u;
      } else {
        std::memcpy(&v, s.ids_ + 4 * i, 4);
      }
      if (v >= static_cast<uint64_t>(vocab))
        return bad("token id " + std::to_string(v) + " at index " + std::to_string(i) + " is outside [0, vocab_size " +
                   std::to_string(vocab) + ")");
    }
  }
  s.map_ = std::move(map);
  return s;
}

void TokenShard::read(int64_t offset, int64_t n, int32_t* out) const {
  STEM_CHECKF(offset >= 0 && n >= 0 && offset + n <= n_tokens_, "%s: read [%ld, %ld) outside [0, %ld)",
              path_.c_str(), static_cast<long>(offset), static_cast<long>(offset + n), static_cast<long>(n_tokens_));
  if (bytes_per_token_ == 4) {
    std::memcpy(out, ids_ + 4 * offset, static_cast<size_t>(n) * 4);
    return;
  }
  const uint8_t* p = ids_ + 2 * offset;
  for (int64_t i = 0; i < n; ++i) {
    uint16_t u;
    std::memcpy(&u, p + 2 * i, 2);
    out[i] = u;
  }
}

// ---------------------------------------------------------------- data dir

Result<DataDir> DataDir::open(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return Status::error(dir + ": no such data directory (make one with stem prepare)");
  if (!fs::is_directory(dir, ec)) return Status::error(dir + ": not a directory (expected a stem prepare output)");
  DataDir d;
  d.dir = dir;
  const fs::path root(dir);
  for (const char* name : {"data.json", "tokenizer.model", "train.tok", "val.tok"})
    if (!fs::exists(root / name, ec))
      return Status::error((root / name).string() + ": missing (is " + dir + " a stem prepare output?)");

  const std::string meta_path = (root / "data.json").string();
  STEM_ASSIGN_OR_RETURN(std::string text, read_text(meta_path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::error(meta_path + ": not a JSON object");
  auto field = [&](const char* key) -> Result<int64_t> {
    if (!j.contains(key) || !j[key].is_number_integer())
      return Status::error(meta_path + ": field \"" + key + "\" is missing or not an integer");
    return j[key].get<int64_t>();
  };
  if (!j.contains("format") || !j["format"].is_string() || j["format"].get<std::string>() != kDataFormat)
    return Status::error(meta_path + ": field \"format\" is " + (j.contains("format") ? j["format"].dump() : "missing") +
                         ", expected \"" + kDataFormat + "\"");
  STEM_ASSIGN_OR_RETURN(int64_t version, field("version"));
  if (version != kDataVersion)
    return Status::error(meta_path + ": version " + std::to_string(version) + " is not supported (this build reads " +
                         std::to_string(kDataVersion) + ")");
  STEM_ASSIGN_OR_RETURN(d.vocab_size, field("vocab_size"));
  STEM_ASSIGN_OR_RETURN(int64_t bos, field("bos_id"));
  STEM_ASSIGN_OR_RETURN(int64_t eos, field("eos_id"));
  if (d.vocab_size < 1 || d.vocab_size > kMaxVocab)
    return Status::error(meta_path + ": vocab_size " + std::to_string(d.vocab_size) + " is out of range");
  for (auto [name, v] : {std::pair{"bos_id", bos}, std::pair{"eos_id", eos}})
    if (v < 0 || v >= d.vocab_size)
      return Status::error(meta_path + ": " + name + " " + std::to_string(v) + " is outside [0, vocab_size " +
                           std::to_string(d.vocab_size) + ")");
  d.bos_id = static_cast<int32_t>(bos);
  d.eos_id = static_cast<int32_t>(eos);
  d.tokenizer_path = (root / "tokenizer.model").string();
  STEM_ASSIGN_OR_RETURN(d.train, TokenShard::open((root / "train.tok").string()));
  STEM_ASSIGN_OR_RETURN(d.val, TokenShard::open((root / "val.tok").string()));
  for (const TokenShard* s : {&d.train, &d.val})
    if (s->vocab_size() != d.vocab_size)
      return Status::error(s->path() + ": vocab_size " + std::to_string(s->vocab_size()) + " differs from " +
                           meta_path + "'s " + std::to_string(d.vocab_size));
  return d;
}

}  // namespace stem::io

namespace stem {

Result<DataInfo> describe_data(const std::string& dir) {
  STEM_ASSIGN_OR_RETURN(io::DataDir d, io::DataDir::open(dir));
  DataInfo i;
  i.dir = d.dir;
  i.tokenizer_path = d.tokenizer_path;
  i.vocab_size = d.vocab_size;
  i.train_tokens = d.train.size();
  i.val_tokens = d.val.size();
  i.bos_id = d.bos_id;
  i.eos_id = d.eos_id;
  return i;
}

}  // namespace stem
