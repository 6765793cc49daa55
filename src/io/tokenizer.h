// The tokenizer inside the engine: the public stem::Tokenizer
// (include/stem/tokenizer.h) under the io layer's names.
#pragma once

#include "stem/tokenizer.h"

namespace stem::io {
using Tokenizer = stem::Tokenizer;
using TokenizerTrainOptions = stem::TokenizerTrainOptions;
inline Result<Tokenizer> load_model_tokenizer(const std::string& model_dir, int64_t vocab_size, const std::string& need) {
  return Tokenizer::for_model(model_dir, vocab_size, need);
}
}  // namespace stem::io
