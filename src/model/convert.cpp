// convert_checkpoint and pack_checkpoint_tables (include/stem/model.h): a
// checkpoint rewritten in another dtype into a new directory, and the
// row-major pack of its STEM tables; write_model_dir, which every converter
// writes its output with. The source checkpoint is never changed,
// except that the pack is added beside it.
#include <filesystem>

#include "io/files.h"
#include "model/tables.h"
#include "model/weights.h"
#include "stem/model.h"

namespace stem {
namespace fs = std::filesystem;

Status write_model_dir(const std::string& out, const ModelConfig& cfg, const model::TensorList& w,
                       const std::string& tokenizer_path) {
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return Status::error(out + ": cannot create directory: " + ec.message());
  STEM_RETURN_IF_ERROR(cfg.save((fs::path(out) / "config.json").string()));
  STEM_RETURN_IF_ERROR(model::save_weights(w, (fs::path(out) / "model.safetensors").string()));
  if (tokenizer_path.empty()) return ok_status();
  STEM_ASSIGN_OR_RETURN(std::string bytes, io::read_text(tokenizer_path));
  return io::write_text_atomic((fs::path(out) / "tokenizer.model").string(), bytes);
}

Result<int64_t> convert_checkpoint(const std::string& dir, const std::string& out, WeightDType dtype, bool tables_only) {
  STEM_ASSIGN_OR_RETURN(std::string src, resolve_model_dir(dir));
  if (dtype == WeightDType::Auto) return Status::error("convert: the target dtype must be f32 or bf16, not auto");
  if (dtype == WeightDType::Q8)
    return Status::error("convert: q8 is an in-memory format, not a checkpoint dtype (a checkpoint holds F32 or "
                         "BF16): load with --dtype q8 instead");
  std::error_code ec;
  if (fs::exists(out, ec) && fs::equivalent(out, src, ec))
    return Status::error("--out " + out + " is the source checkpoint; it is never changed in place");
  STEM_ASSIGN_OR_RETURN(ModelConfig cfg, ModelConfig::load((fs::path(src) / "config.json").string()));
  model::LoadOptions lo;
  lo.tables = dtype;
  lo.matrices = tables_only ? WeightDType::Auto : dtype;
  STEM_ASSIGN_OR_RETURN(model::TensorList w, model::load_weights(cfg, (fs::path(src) / "model.safetensors").string(), lo));
  const fs::path tok = fs::path(src) / "tokenizer.model";
  STEM_RETURN_IF_ERROR(write_model_dir(out, cfg, w, fs::exists(tok, ec) ? tok.string() : ""));
  int64_t bytes = 0;
  for (size_t i = 0; i < w.size(); ++i) bytes += static_cast<int64_t>(w[i].nbytes());
  return bytes;
}

Result<std::string> pack_checkpoint_tables(const std::string& dir, bool q8) {
  STEM_ASSIGN_OR_RETURN(std::string src, resolve_model_dir(dir));
  STEM_ASSIGN_OR_RETURN(ModelConfig cfg, ModelConfig::load((fs::path(src) / "config.json").string()));
  STEM_RETURN_IF_ERROR(model::pack_tables(cfg, src, q8));
  return (fs::path(src) / model::kPackedTablesFile).string();
}

}  // namespace stem
