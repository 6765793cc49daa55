// Fuzz target: a prepared data folder's data.json, opened with valid shards
// beside it (vocabulary 400, made once per process), so that what is checked
// is data.json itself and its agreement with the shards.
#include "fuzz_util.h"
#include "io/token_shards.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stem;
  namespace fs = std::filesystem;
  static const fs::path dir = [] {
    const fs::path d = fuzz::work_dir() / "data";
    fs::create_directories(d);
    // Shards of vocabulary 400 with ids 0..399 and a placeholder tokenizer:
    // DataDir::open checks data.json against them, it does not load the tokenizer.
    std::vector<int32_t> ids(1000);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i % 400);
    if (!io::write_token_shard((d / "train.tok").string(), ids, 400, 10).ok() ||
        !io::write_token_shard((d / "val.tok").string(), ids, 400, 10).ok())
      std::abort();
    fuzz::write_file(d / "tokenizer.model", "x", 1);
    return d;
  }();
  fuzz::write_file(dir / "data.json", data, size);
  (void)io::DataDir::open(dir.string());
  return 0;
}
