// Fuzz target: a token shard (train.tok / val.tok: header, ids), opened and
// read end to end.
#include <vector>

#include "fuzz_util.h"
#include "io/token_shards.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stem;
  auto s = io::TokenShard::open(fuzz::input_file(data, size, "train.tok"));
  if (s.ok() && s->size() > 0) {
    std::vector<int32_t> ids(static_cast<size_t>(std::min<int64_t>(s->size(), 4096)));
    s->read(0, static_cast<int64_t>(ids.size()), ids.data());
    (void)s->at(s->size() - 1);
  }
  return 0;
}
