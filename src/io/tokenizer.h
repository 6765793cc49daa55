// The tokenizer inside the engine: the public stem::Tokenizer
// (include/stem/tokenizer.h) under the io layer's names.
#pragma once

#include "stem/tokenizer.h"

namespace stem::io {
using Tokenizer = stem::Tokenizer;
using TokenizerTrainOptions = stem::TokenizerTrainOptions;
}  // namespace stem::io
