// read_token_batch (include/stem/data.h): a text file of token ids as one
// sequence, or as equal-length lines. The ids are validated once, by
// io::read_token_ids, whose errors name the file and line.
#include <sstream>

#include "io/files.h"
#include "stem/data.h"

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

}  // namespace stem
