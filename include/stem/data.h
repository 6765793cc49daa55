// Data directories, as `stem prepare` writes them (tokenizer.model, the
// token shards of the training and validation splits, data.json): what one
// holds, for callers that build a model to fit it. Preparing one from text is
// the CLI's `stem prepare` for now.
#pragma once

#include <cstdint>
#include <string>

#include "stem/status.h"

namespace stem {

struct DataInfo {
  std::string dir;
  std::string tokenizer_path;     // DIR/tokenizer.model
  int64_t vocab_size = 0;         // a model trained on it needs this vocab_size
  int64_t train_tokens = 0, val_tokens = 0;
  int32_t bos_id = -1, eos_id = -1;
};

// Opens and checks DIR (every shard's header and size, data.json).
Result<DataInfo> describe_data(const std::string& dir);

}  // namespace stem
