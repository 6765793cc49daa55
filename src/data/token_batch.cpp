// read_token_batch (include/stem/data.h): a text file of token ids as one
// sequence, or as equal-length lines. The ids are validated once, by
// io::read_token_ids, whose errors name the file and line. And
// read_corpus_tokens: the ids of a data directory, a shard or a text file.
#include <filesystem>
#include <sstream>

#include "io/files.h"
#include "io/token_shards.h"
#include "stem/data.h"
#include "stem/tokenizer.h"

namespace stem {

Result<TokenBatch> read_token_batch(const std::string& path, int64_t vocab_size, bool lines) {
  TokenBatch b;
  STEM_ASSIGN_OR_RETURN(b.ids, io::read_token_ids(path, vocab_size));
  if (!lines) {
    b.B = 1;
    b.T = static_cast<int64_t>(b.ids.size());
    return b;
  }
  STEM_ASSIGN_OR_RETURN(std::string text, io::read_text(path));
  std::istringstream in(text);
  std::string line;
  int64_t len = -1, lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    std::istringstream ls(line);
    int64_t n = 0;
    std::string tok;
    while (ls >> tok) ++n;
    if (n == 0) continue;
    if (len >= 0 && n != len)
      return Status::error(path + ":" + std::to_string(lineno) + ": sequence of " + std::to_string(n) +
                           " ids, but earlier lines have " + std::to_string(len) + " (--lines needs equal lengths)");
    len = n;
    ++b.B;
  }
  b.T = len;
  return b;
}

Result<std::vector<int32_t>> read_corpus_tokens(const std::string& path, const std::string& model_dir,
                                                int64_t vocab_size) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto from_shard = [&](const io::TokenShard& s) -> Result<std::vector<int32_t>> {
    if (s.vocab_size() != vocab_size)
      return Status::error(s.path() + ": vocab_size " + std::to_string(s.vocab_size()) + " does not match the model's " +
                           std::to_string(vocab_size));
    std::vector<int32_t> ids(static_cast<size_t>(s.size()));
    if (!ids.empty()) s.read(0, s.size(), ids.data());
    return ids;
  };
  if (fs::is_directory(path, ec)) {
    STEM_ASSIGN_OR_RETURN(io::DataDir dd, io::DataDir::open(path));
    return from_shard(dd.val);
  }
  if (fs::path(path).extension() == ".tok") {
    STEM_ASSIGN_OR_RETURN(io::TokenShard s, io::TokenShard::open(path));
    return from_shard(s);
  }
  STEM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::for_model(model_dir, vocab_size, "to tokenize the text file " + path));
  STEM_ASSIGN_OR_RETURN(std::string text, io::read_text(path));
  std::vector<int32_t> ids = tok.encode(text);
  if (ids.empty()) return Status::error(path + ": no tokens (empty file?)");
  return ids;
}

}  // namespace stem
