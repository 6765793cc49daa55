// Tokenizer: a SentencePiece BPE model (tokenizer.model) behind a small API,
// and the training that makes one. It does not decide what a document is or
// add BOS/EOS to text (the data pipeline and generate() do that).
//
// The models stem trains are lossless on any input: BPE with byte fallback
// (every byte has a piece <0xNN>), identity normalization and no whitespace
// folding, so decode(encode(s)) == s for valid UTF-8 s, newlines, tabs and
// leading or repeated spaces included. Decoding drops one leading space
// marker (SentencePiece's dummy prefix), so decode a whole sequence, not ids
// one at a time (TextStream in stem/generate.h does that incrementally). Ids
// are laid out as <unk>=0, <s>=1 (BOS), </s>=2 (EOS), then the 256 byte
// pieces, then merges.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "stem/status.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace stem {

struct TokenizerTrainOptions {
  // Train on about this many bytes of text at most, sampled uniformly from the
  // inputs by `seed` (0: everything). SentencePiece holds all of it in memory.
  int64_t max_input_bytes = 0;
  uint64_t seed = 0;
  int num_threads = 0;  // 0: all hardware threads
  // Characters rarer than this fraction fall back to byte pieces.
  double character_coverage = 0.9995;
};

// Thread-safety: a loaded Tokenizer is immutable; copies share the model and
// every const method may be called from any number of threads at once.
class Tokenizer {
 public:
  // Errors: "PATH: no such file" / "PATH: not a SentencePiece model: ...".
  static Result<Tokenizer> load(const std::string& path);
  // The tokenizer of a model directory (DIR/tokenizer.model), checked against
  // the model's vocab_size; `need` says what it is needed for ("to tokenize
  // --prompt"). The one place that says what to do when it does not fit: no
  // tokenizer.model (copy the one of the data directory the model was trained
  // on), or one with another number of pieces (it belongs to other data).
  static Result<Tokenizer> for_model(const std::string& model_dir, int64_t vocab_size, const std::string& need);

  // Trains a BPE model of exactly `vocab_size` pieces on the lines of `files`
  // (empty lines skipped) and writes it to `out_model_path` atomically (the
  // old file, if any, survives a failure). Errors name the input file, or say
  // what is wrong with the vocabulary size and which sizes would work.
  static Status train(const std::vector<std::string>& files, const std::string& out_model_path,
                      int64_t vocab_size, const TokenizerTrainOptions& opts = {});
  // The same on sentences already in memory (each one line of text; longer
  // than 4096 bytes is split). `max_input_bytes` and `seed` are ignored.
  static Status train_on_sentences(const std::vector<std::string>& sentences,
                                   const std::string& out_model_path, int64_t vocab_size,
                                   const TokenizerTrainOptions& opts = {});

  std::vector<int32_t> encode(std::string_view text) const;
  // Ids must lie in [0, vocab_size()) (checked: an id outside is a bug of the
  // caller, who validates untrusted ids first). BOS/EOS/unk decode to nothing.
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string piece(int32_t id) const;
  int64_t vocab_size() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t unk_id() const;
  const std::string& path() const { return path_; }

 private:
  Tokenizer() = default;
  std::shared_ptr<const sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};


}  // namespace stem
