// Tokenizer: loading, training and using SentencePiece BPE models (see
// tokenizer.h for the id layout and the losslessness promise). Training feeds
// SentencePiece from memory through its SentenceIterator and asks for the
// serialized model back, so the only file written is tokenizer.model, through
// write_file_atomic. SentencePiece's own logging is silenced; its errors are
// turned into stem messages (vocabulary too small or too large, with the
// bound it reported).
#include "io/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <random>
#include <thread>
#include <unordered_map>

#include "core/check.h"
#include "io/files.h"

namespace stem {

namespace {

constexpr int64_t kReservedIds = 3 + 256;  // <unk> <s> </s> and the byte pieces
constexpr size_t kMaxSentenceBytes = 4096;  // SentencePiece skips longer ones (4192)

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};

// Appends `line` to `out` in pieces of at most kMaxSentenceBytes, cut at the
// last space of a window when there is one, else before a UTF-8 lead byte.
void add_sentence(std::string_view line, std::vector<std::string>* out) {
  while (line.size() > kMaxSentenceBytes) {
    size_t cut = line.rfind(' ', kMaxSentenceBytes);
    if (cut == std::string_view::npos || cut == 0) {
      cut = kMaxSentenceBytes;
      while (cut > 1 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
    }
    out->emplace_back(line.substr(0, cut));
    line.remove_prefix(cut);
  }
  if (!line.empty()) out->emplace_back(line);
}

// Reads the integer that follows `key` in `msg` (-1 when absent).
int64_t number_after(const std::string& msg, const std::string& key) {
  size_t at = msg.find(key);
  if (at == std::string::npos) return -1;
  long long v = -1;
  if (std::sscanf(msg.c_str() + at + key.size(), "%lld", &v) != 1) return -1;
  return v;
}

Status training_error(const sentencepiece::util::Status& st, int64_t vocab_size, size_t n_sentences) {
  const std::string msg = st.ToString();
  const std::string n = std::to_string(vocab_size);
  if (msg.find("Vocabulary size is smaller than required_chars") != std::string::npos) {
    // "... required_chars. 300 vs 329. ..."
    const int64_t need = number_after(msg, " vs ");
    return Status::error("tokenizer: vocab size " + n + " is too small for this corpus: its characters and the " +
                         std::to_string(kReservedIds) + " byte and special pieces need more" +
                         (need > 0 ? " (try >= " + std::to_string(need) + ")" : ""));
  }
  if (msg.find("Vocabulary size too high") != std::string::npos) {
    const int64_t most = number_after(msg, "value <= ");
    return Status::error("tokenizer: vocab size " + n + " is too large for this corpus (" +
                         std::to_string(n_sentences) + " lines of text" +
                         (most > 0 ? "; try <= " + std::to_string(most) : "") + ")");
  }
  return Status::error("tokenizer: SentencePiece training failed: " + msg);
}

}  // namespace

Result<Tokenizer> Tokenizer::load(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::error(path + ": no such file (expected a tokenizer.model)");
  if (S_ISDIR(st.st_mode)) return Status::error(path + ": is a directory, expected a tokenizer.model file");
  auto sp = std::make_shared<sentencepiece::SentencePieceProcessor>();
  sentencepiece::util::Status s;
  try {  // SentencePiece throws on some malformed models (an empty piece in its trie)
    s = sp->Load(path);
  } catch (const std::exception& e) {
    return Status::error(path + ": not a valid SentencePiece model: " + e.what());
  }
  if (!s.ok()) return Status::error(path + ": not a SentencePiece model: " + s.ToString());
  if (sp->GetPieceSize() <= 0) return Status::error(path + ": SentencePiece model has no pieces");
  Tokenizer t;
  t.sp_ = std::move(sp);
  t.path_ = path;
  return t;
}

Status Tokenizer::train(const std::vector<std::string>& files, const std::string& out_model_path,
                        int64_t vocab_size, const TokenizerTrainOptions& opts) {
  if (files.empty()) return Status::error("tokenizer: no input files to train on");
  int64_t total = 0;
  for (const auto& f : files) {
    struct stat st;
    if (::stat(f.c_str(), &st) != 0) return Status::error(f + ": no such file");
    if (!S_ISREG(st.st_mode)) return Status::error(f + ": not a regular file");
    total += st.st_size;
  }
  // Keep each line with probability max_input_bytes / total: a uniform sample
  // of bounded size without reading the inputs twice.
  const double keep = opts.max_input_bytes > 0 && total > opts.max_input_bytes
                          ? static_cast<double>(opts.max_input_bytes) / static_cast<double>(total)
                          : 1.0;
  std::mt19937_64 rng(opts.seed);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::vector<std::string> sentences;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) return Status::error(f + ": cannot open");
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t\f\v") == std::string::npos) continue;  // blank
      if (keep < 1.0 && uni(rng) >= keep) continue;
      add_sentence(line, &sentences);
    }
    if (in.bad()) return Status::error(f + ": read failed");
  }
  return train_on_sentences(sentences, out_model_path, vocab_size, opts);
}

Status Tokenizer::train_on_sentences(const std::vector<std::string>& input, const std::string& out_model_path,
                                     int64_t vocab_size, const TokenizerTrainOptions& opts) {
  if (vocab_size <= kReservedIds || vocab_size > (int64_t{1} << 31))
    return Status::error("tokenizer: vocab size " + std::to_string(vocab_size) + " is out of range: it must exceed " +
                         std::to_string(kReservedIds) + " (the byte pieces and <unk> <s> </s>) and fit in int32");
  // One line per sentence, none over kMaxSentenceBytes: SentencePiece would
  // silently drop longer ones. This copies the input (a bounded sample).
  std::vector<std::string> sentences;
  sentences.reserve(input.size());
  for (const auto& t : input) {
    std::string_view rest(t);
    for (size_t nl; (nl = rest.find('\n')) != std::string_view::npos; rest.remove_prefix(nl + 1))
      add_sentence(rest.substr(0, nl), &sentences);
    add_sentence(rest, &sentences);
  }
  if (sentences.empty()) return Status::error("tokenizer: no text to train on (every input line is empty)");

  const int threads = opts.num_threads > 0 ? opts.num_threads
                                           : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  char coverage[32];
  std::snprintf(coverage, sizeof coverage, "%.6f", opts.character_coverage);
  const std::unordered_map<std::string, std::string> kwargs = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", coverage},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_digits", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"input_sentence_size", "0"},
      {"num_threads", std::to_string(threads)},
      {"minloglevel", "2"},
  };
  VectorIterator it(sentences);
  std::string proto;
  const auto st = sentencepiece::SentencePieceTrainer::Train(kwargs, &it, &proto);
  if (!st.ok()) return training_error(st, vocab_size, sentences.size());
  if (proto.empty()) return Status::error("tokenizer: SentencePiece training returned an empty model");
  return io::write_file_atomic(out_model_path,
                           [&](int fd) { return io::write_all(fd, proto.data(), proto.size(), out_model_path); });
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto st = sp_->Encode(text, &ids);
  STEM_CHECKF(st.ok(), "%s: encode failed: %s", path_.c_str(), st.ToString().c_str());
  static_assert(sizeof(int) == sizeof(int32_t));
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const int64_t V = vocab_size();
  for (int32_t id : ids) STEM_CHECKF(id >= 0 && id < V, "token id %d outside [0, %" PRId64 ")", id, V);
  std::string out;
  const auto st = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &out);
  STEM_CHECKF(st.ok(), "%s: decode failed: %s", path_.c_str(), st.ToString().c_str());
  return out;
}

std::string Tokenizer::piece(int32_t id) const {
  STEM_CHECKF(id >= 0 && id < vocab_size(), "token id %d outside [0, %" PRId64 ")", id, vocab_size());
  return sp_->IdToPiece(id);
}

int64_t Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int32_t Tokenizer::bos_id() const { return sp_->bos_id(); }
int32_t Tokenizer::eos_id() const { return sp_->eos_id(); }
int32_t Tokenizer::unk_id() const { return sp_->unk_id(); }

Result<Tokenizer> Tokenizer::for_model(const std::string& model_dir, int64_t vocab_size, const std::string& need) {
  const std::string path = (std::filesystem::path(model_dir) / "tokenizer.model").string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return Status::error(model_dir + ": no tokenizer.model, needed " + need +
                         " (copy the tokenizer.model of the data directory the model was trained on into " +
                         model_dir + ")");
  STEM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::load(path));
  if (tok.vocab_size() != vocab_size)
    return Status::error(path + ": the tokenizer has " + std::to_string(tok.vocab_size()) +
                         " pieces but the model's vocab_size is " + std::to_string(vocab_size) +
                         ": it is not the tokenizer the model was trained with (copy the tokenizer.model of the "
                         "model's training data directory into " + model_dir + ")");
  return tok;
}

}  // namespace stem
