// Where a rank's shards start (see shard_sources.h).
#include "train/shard_sources.h"

#include <cstring>
#include <filesystem>
#include <memory>

#include "io/safetensors.h"

namespace stem::train {
namespace fs = std::filesystem;

ShardedTables::RowSource table_rows_source(const std::string& ckpt, const std::string& init_dir, uint64_t seed,
                                           const model::Transformer& tr, const AdamW& adam) {
  constexpr int64_t kBlockRows = 256;
  return [=, &tr, &adam](size_t i, int kind, const ShardedTables::RowBlock& block) -> Status {
    const model::TensorSpec& s = tr.weights().spec(i);
    if (ckpt.empty() && kind > 0) return ok_status();  // fresh moments: zeros
    if (ckpt.empty() && init_dir.empty()) {
      model::init_rows(tr.weights(), i, seed, kBlockRows, block);
      return ok_status();
    }
    const fs::path dir = ckpt.empty() ? init_dir : ckpt;
    if (!ckpt.empty() && (kind > 0 || adam.lazy(i))) {
      const std::string opt_path = (dir / "optimizer.safetensors").string();
      STEM_ASSIGN_OR_RETURN(io::SafetensorsFile of, io::SafetensorsFile::open(opt_path));
      const std::string name = (kind == 1 ? "m." : kind == 2 ? "v." : "p.") + s.name;
      if (kind > 0 || of.find(name)) return io::read_rows(of, name, s.shape, kBlockRows, block);
    }
    STEM_ASSIGN_OR_RETURN(io::SafetensorsFile mf, io::SafetensorsFile::open((dir / "model.safetensors").string()));
    return io::read_rows(mf, s.name, s.shape, kBlockRows, block);
  };
}

ShardedMoments::MomentSource moment_source(const std::string& ckpt, const model::TensorList& w) {
  auto file = std::make_shared<Result<io::SafetensorsFile>>(Status::error("no checkpoint"));
  if (!ckpt.empty()) *file = io::SafetensorsFile::open((fs::path(ckpt) / "optimizer.safetensors").string());
  return [=, &w](size_t i, int kind, int64_t e0, int64_t n, float* dst) -> Status {
    if (ckpt.empty() || n == 0) return ok_status();
    STEM_RETURN_IF_ERROR(file->status());
    const io::SafetensorsFile& f = **file;
    const std::string name = (kind == 1 ? "m." : "v.") + w.spec(i).name;
    const io::SafetensorsEntry* e = f.find(name);
    if (!e) return Status::error(f.path() + ": missing tensor '" + name + "'");
    if (e->shape != w.spec(i).shape || e->dtype != DType::F32)
      return Status::error(f.path() + ": tensor '" + name + "' is " + dtype_name(e->dtype) + " " + shape_str(e->shape) +
                           ", expected F32 " + shape_str(w.spec(i).shape));
    std::memcpy(dst, f.data(*e) + e0 * static_cast<int64_t>(sizeof(float)), sizeof(float) * n);
    return ok_status();
  };
}


}  // namespace stem::train
