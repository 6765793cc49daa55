// Token shards (*.tok): a corpus already tokenized, as one flat array of ids,
// and DataDir, the folder `stem prepare` writes (tokenizer.model, train.tok,
// val.tok, data.json). Nothing here tokenizes text or knows what a document
// means beyond counting them; batching and sampling belong to the trainer.
//
// File layout, version 1 (all integers little-endian):
//   bytes  0..7   magic "STEMTOK\0"
//          8..11  u32 version (1)
//         12..15  u32 bytes per token: 2 when vocab_size <= 65536, else 4
//         16..23  u64 vocab_size
//         24..31  u64 n_tokens
//         32..39  u64 n_docs (documents, each written as BOS ids... EOS)
//         40..63  zero
//         64..    n_tokens ids, u16 or u32 each
// Invariants a reader checks: every header field, reserved bytes zero, file
// size == 64 + n_tokens * bytes_per_token, every id < vocab_size.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "stem/status.h"

namespace stem::io {

inline constexpr char kTokenShardMagic[8] = {'S', 'T', 'E', 'M', 'T', 'O', 'K', '\0'};
inline constexpr uint32_t kTokenShardVersion = 1;
inline constexpr int64_t kTokenShardHeaderBytes = 64;
// data.json's "format" and "version" (see DataDir).
inline constexpr const char* kDataFormat = "stem-data";
inline constexpr int kDataVersion = 1;

// 2 when every id of a `vocab_size` vocabulary fits in u16, else 4.
int token_bytes_for_vocab(int64_t vocab_size);

// Writes `ids` as a shard at `path` atomically. Errors name the path and the
// bad value (an id outside [0, vocab_size), n_docs < 0 or > ids.size()).
Status write_token_shard(const std::string& path, const std::vector<int32_t>& ids, int64_t vocab_size,
                         int64_t n_docs);

// Streams a shard too large to hold: ids go to `.<name>.tmp.<pid>` beside
// `path` through a buffer; finish() patches the header, fsyncs and renames.
// Destroying an unfinished writer (or a failed finish) removes the temporary
// file, so `path` is never half written. Not thread-safe; movable.
class TokenShardWriter {
 public:
  static Result<TokenShardWriter> create(const std::string& path, int64_t vocab_size);
  TokenShardWriter(TokenShardWriter&& o) noexcept;
  TokenShardWriter& operator=(TokenShardWriter&&) = delete;
  TokenShardWriter(const TokenShardWriter&) = delete;
  ~TokenShardWriter();

  // Ids must lie in [0, vocab_size); an id outside is an error naming it.
  Status append(std::span<const int32_t> ids);
  // BOS + ids + EOS is the caller's business; this counts one document.
  Status append_document(std::span<const int32_t> ids) {
    STEM_RETURN_IF_ERROR(append(ids));
    ++n_docs_;
    return ok_status();
  }
  Status finish();
  int64_t n_tokens() const { return n_tokens_; }
  int64_t n_docs() const { return n_docs_; }
  const std::string& path() const { return path_; }

 private:
  TokenShardWriter() = default;
  Status flush();
  void abandon();
  std::string path_, tmp_;
  int fd_ = -1;
  int64_t vocab_size_ = 0, n_tokens_ = 0, n_docs_ = 0;
  int bytes_per_token_ = 2;
  std::vector<uint8_t> buf_;
  bool finished_ = false;
};

// A read-only, memory-mapped shard. Copies share the mapping; every method is
// const and safe from any number of threads. open() validates the header, the
// file size and every id, and names the file, field and value on failure.
class TokenShard {
 public:
  static Result<TokenShard> open(const std::string& path);
  TokenShard() = default;  // an empty shard (size 0), for default-constructed holders

  int64_t size() const { return n_tokens_; }
  int64_t vocab_size() const { return vocab_size_; }
  int64_t n_docs() const { return n_docs_; }
  int bytes_per_token() const { return bytes_per_token_; }
  const std::string& path() const { return path_; }
  // Copies ids [offset, offset + n) to out. The range must lie inside the
  // shard (checked: asking outside is a bug of the caller).
  void read(int64_t offset, int64_t n, int32_t* out) const;
  int32_t at(int64_t i) const {
    int32_t v;
    read(i, 1, &v);
    return v;
  }

 private:
  struct Mapping;
  std::shared_ptr<const Mapping> map_;
  const uint8_t* ids_ = nullptr;
  std::string path_;
  int64_t n_tokens_ = 0, vocab_size_ = 0, n_docs_ = 0;
  int bytes_per_token_ = 2;
};

// A prepared data folder: DIR/tokenizer.model, DIR/train.tok, DIR/val.tok and
// DIR/data.json (format "stem-data", version 1, vocab_size, bos_id, eos_id,
// plus provenance: sources, sizes, split). open() checks that all four exist
// and agree (both shards have the data.json vocab size; BOS/EOS inside it);
// it does not load the tokenizer (Tokenizer::load(tokenizer_path) does).
struct DataDir {
  std::string dir, tokenizer_path;
  TokenShard train, val;
  int64_t vocab_size = 0;
  int32_t bos_id = -1, eos_id = -1;

  static Result<DataDir> open(const std::string& dir);
};

}  // namespace stem::io
