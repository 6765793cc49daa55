// Fuzz target: tables.stem (the row-major pack of the STEM tables) beside a
// valid model of fuzz/model.json, opened on the disk tier and read at its
// first and last rows. The input's source-file fields (bytes 32..47: the
// size and mtime of model.safetensors) are set to the real ones, so that the
// fuzzer explores the rest of the header and the data rather than the
// staleness check (which refuses every other value).
#include <sys/stat.h>

#include <cstring>
#include <vector>

#include "fuzz_util.h"
#include "memory/table_store.h"
#include "model/tables.h"
#include "model/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stem;
  namespace fs = std::filesystem;
  const ModelConfig& cfg = fuzz::fuzz_config();
  static const fs::path dir = [&] {
    const fs::path d = fuzz::work_dir() / "model";
    fs::create_directories(d);
    model::TensorList w = model::TensorList::allocate(model::tensor_specs(cfg));
    model::init_weights(w, 1);
    if (!cfg.save((d / "config.json").string()).ok() ||
        !model::save_weights(w, (d / "model.safetensors").string()).ok())
      std::abort();
    return d;
  }();
  std::vector<uint8_t> bytes(data, data + size);
  struct stat sb {};
  if (bytes.size() >= 48 && ::stat((dir / "model.safetensors").c_str(), &sb) == 0) {
    const uint64_t file_size = static_cast<uint64_t>(sb.st_size);
    const int64_t mtime = static_cast<int64_t>(sb.st_mtim.tv_sec) * 1000000000 + sb.st_mtim.tv_nsec;
    std::memcpy(bytes.data() + 32, &file_size, 8);
    std::memcpy(bytes.data() + 40, &mtime, 8);
  }
  fuzz::write_file(dir / model::kPackedTablesFile, bytes.data(), bytes.size());
  auto layout = model::checkpoint_tables(cfg, dir.string(), /*packed=*/true);
  if (!layout.ok()) return 0;
  memory::StoreOptions o;
  o.tier = memory::Tier::Disk;
  o.cache_bytes = 0;
  auto store = memory::TableStore::open(*layout, o);
  if (!store.ok()) return 0;
  std::vector<float> rows(static_cast<size_t>((*store)->n_tables() * (*store)->cols() * 2));
  std::vector<float*> dst;
  for (int64_t t = 0; t < (*store)->n_tables(); ++t) dst.push_back(rows.data() + t * (*store)->cols() * 2);
  const int32_t ids[2] = {0, static_cast<int32_t>((*store)->n_rows() - 1)};
  (void)(*store)->fetch(ids, 2, dst.data());
  return 0;
}
