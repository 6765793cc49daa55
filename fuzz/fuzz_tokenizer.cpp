// Fuzz target: tokenizer.model (a SentencePiece model protobuf), loaded
// through SentencePiece; an accepted one encodes and decodes a text with
// several scripts and bytes it may not cover.
#include "fuzz_util.h"
#include "stem/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stem;
  auto tok = Tokenizer::load(fuzz::input_file(data, size, "tokenizer.model"));
  if (tok.ok()) {
    const std::vector<int32_t> ids = tok->encode("The capital of Spain is Madrid. \xc3\xa9\xe6\x97\xa5 \x01\n");
    (void)tok->decode(ids);
  }
  return 0;
}
