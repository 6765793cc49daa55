// Data directories, as `stem prepare` writes them (tokenizer.model, the
// token shards of the training and validation splits, data.json): making one
// from text files, and what one holds, for callers that build a model to fit
// it. src/data/prepare.cpp says what a document is and how the split is made.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "stem/status.h"

namespace stem {

struct DataInfo {
  std::string dir;
  std::string tokenizer_path;     // DIR/tokenizer.model
  int64_t vocab_size = 0;         // a model trained on it needs this vocab_size
  int64_t train_tokens = 0, val_tokens = 0;
  int32_t bos_id = -1, eos_id = -1;
};

struct PrepareOptions {
  std::vector<std::string> inputs;  // text files, or folders searched recursively for *.txt
  std::string out;                  // the data folder (must not exist unless force)
  int64_t vocab_size = 4096;        // BPE vocabulary, > 259 (ignored with `tokenizer`)
  // An existing tokenizer.model to encode with (copied into the folder)
  // instead of training one: a model's own, or one shared by several corpora.
  std::string tokenizer;
  double val_fraction = 0.05;       // documents held out, in [0, 1)
  uint64_t seed = 0;                // of the split and the tokenizer's sample
  int64_t doc_bytes = 4096;         // target document size (paragraph groups)
  int64_t sample_bytes = 10'000'000;  // tokenizer trained on about this much text at most
  int threads = 0;                  // 0: all
  bool force = false;               // replace an earlier data folder at `out`
};
// (stage, done, total): "scanning" and "tokenizing" in bytes of text,
// "training tokenizer" once.
using PrepareProgress = std::function<void(const std::string& stage, int64_t done, int64_t total)>;
// Writes the folder (atomically: OUT is never half written) and returns its
// data.json as JSON text, with "out" and "seconds" added. Errors name the
// input file and what is wrong with it (NUL bytes, invalid UTF-8, ...).
Result<std::string> prepare_data(const PrepareOptions& opt, const PrepareProgress& progress = nullptr);

// Opens and checks DIR (every shard's header and size, data.json).
Result<DataInfo> describe_data(const std::string& dir);

// Token ids from a text file of whitespace-separated ids, as B sequences of T:
// the whole file one sequence, or with `lines` every non-empty line one (all
// of the same length). Ids are checked against the vocabulary; errors name
// the file and line.
struct TokenBatch {
  std::vector<int32_t> ids;  // [B, T] row-major
  int64_t B = 0, T = 0;
};
Result<TokenBatch> read_token_batch(const std::string& path, int64_t vocab_size, bool lines = false);

// The token ids of text a model reads: a data directory (its validation
// shard), a .tok shard, or a text file, encoded by the tokenizer of
// `model_dir` (checked against `vocab_size`). Errors: a shard of another
// vocabulary size, no tokenizer for a text file, an empty file.
Result<std::vector<int32_t>> read_corpus_tokens(const std::string& path, const std::string& model_dir,
                                                int64_t vocab_size);

}  // namespace stem
