// The public Model handle: validation of user input in front of Transformer,
// and the checkpoint directory (config.json, model.safetensors, tokenizer.model).
#include "stem/model.h"

#include <filesystem>
#include <fstream>

#include "io/files.h"
#include "io/safetensors.h"
#include "model/tables.h"
#include "model/engine.h"
#include "model/transformer.h"

namespace stem {

namespace fs = std::filesystem;

Model::Model() = default;
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

namespace {
std::string tokenizer_of(const std::string& dir) {
  const fs::path p = fs::path(dir) / "tokenizer.model";
  std::error_code ec;
  return fs::is_regular_file(p, ec) ? p.string() : std::string();
}
}  // namespace

Result<std::string> resolve_model_dir(const std::string& dir) {
  std::error_code ec;
  if (fs::exists(fs::path(dir) / "config.json", ec) || !fs::is_directory(fs::path(dir) / "checkpoints", ec))
    return dir;
  // A training run directory: its latest checkpoint is the model.
  std::string latest;
  std::ifstream in(fs::path(dir) / "latest");
  std::getline(in, latest);
  const fs::path ck = fs::path(dir) / "checkpoints" / latest;
  if (!latest.empty() && fs::exists(ck / "config.json", ec)) return ck.string();
  return Status::error(dir + ": a training run directory without a complete checkpoint named by " +
                       (fs::path(dir) / "latest").string() + "; give a checkpoint: --model " +
                       (fs::path(dir) / "checkpoints" / "step-NNNNNNNN").string());
}

Result<Model> Model::init(const ModelConfig& cfg, uint64_t seed) {
  STEM_RETURN_IF_ERROR(cfg.validate().with_context("init"));
  model::TensorList w = model::TensorList::allocate(model::tensor_specs(cfg));
  model::init_weights(w, seed);
  Model m;
  m.impl_ = std::make_unique<model::Transformer>(cfg, std::move(w));
  return m;
}

Result<TablesIn> parse_tables_in(const std::string& s) {
  if (s == "ram") return TablesIn::Ram;
  if (s == "mmap") return TablesIn::Mmap;
  if (s == "disk") return TablesIn::Disk;
  return Status::error("tables: unknown tier '" + s + "' (expected ram, mmap or disk)");
}

Result<WeightDType> parse_weight_dtype(const std::string& s) {
  if (s == "f32") return WeightDType::F32;
  if (s == "bf16") return WeightDType::BF16;
  if (s == "auto") return WeightDType::Auto;
  if (s == "q8") return WeightDType::Q8;
  return Status::error("dtype: unknown weight dtype '" + s + "' (expected f32, bf16, auto or q8)");
}

const char* name(TablesIn t) {
  switch (t) {
    case TablesIn::Ram: return "ram";
    case TablesIn::Mmap: return "mmap";
    case TablesIn::Disk: return "disk";
  }
  return "?";
}

const char* name(WeightDType t) {
  switch (t) {
    case WeightDType::F32: return "f32";
    case WeightDType::BF16: return "bf16";
    case WeightDType::Auto: return "auto";
    case WeightDType::Q8: return "q8";
  }
  return "?";
}

Result<Model> Model::load(const std::string& dir) { return load(dir, LoadOptions{}); }

Result<Model> Model::load(const std::string& dir, const LoadOptions& opt) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return Status::error(dir + ": not a model directory (expected config.json and model.safetensors)");
  STEM_ASSIGN_OR_RETURN(std::string resolved, resolve_model_dir(dir));
  if (resolved != dir) return load(resolved, opt);  // a run directory: its latest checkpoint
  STEM_ASSIGN_OR_RETURN(ModelConfig cfg, ModelConfig::load((fs::path(dir) / "config.json").string()));
  const memory::Tier tier = opt.tables == TablesIn::Ram    ? memory::Tier::Ram
                            : opt.tables == TablesIn::Mmap ? memory::Tier::Mmap
                                                           : memory::Tier::Disk;
  const WeightDType dtype = opt.dtype;
  if (opt.table_cache_mb < 0)
    return Status::error("tables: --table-cache-mb must be >= 0, got " + std::to_string(opt.table_cache_mb));
  const bool stem = cfg.has(FfnType::Stem);
  const std::string weights = (fs::path(dir) / "model.safetensors").string();
  model::LoadOptions lo;
  lo.matrices = dtype;
  std::shared_ptr<memory::TableStore> store;
  if (stem) {
    const bool packed = tier != memory::Tier::Ram && opt.packed_tables && model::has_packed_tables(dir);
    STEM_ASSIGN_OR_RETURN(memory::TableFileLayout layout, model::checkpoint_tables(cfg, dir, packed));
    // Tables in RAM stay in the weight list (read in place; BF16 widened
    // unless BF16 storage was asked for, so that the default load is all F32
    // as training needs); BF16 tables kept BF16, and the mmap and disk tiers,
    // are served by a table store.
    const bool keep_bf16 = layout.dtype == DType::BF16 && dtype != WeightDType::F32 && dtype != WeightDType::Q8;
    if (tier != memory::Tier::Ram || keep_bf16) {
      memory::StoreOptions so;
      so.tier = tier;
      so.cache_bytes = opt.table_cache_mb << 20;
      STEM_ASSIGN_OR_RETURN(std::unique_ptr<memory::TableStore> s, memory::TableStore::open(layout, so));
      store = std::move(s);
      lo.skip_tables = true;
    }
  }
  STEM_ASSIGN_OR_RETURN(model::TensorList w, model::load_weights(cfg, weights, lo));
  Model m;
  m.impl_ = std::make_unique<model::Transformer>(cfg, std::move(w));
  m.impl_->set_table_store(std::move(store));
  m.impl_->set_tokenizer_path(tokenizer_of(dir));
  m.dir_ = dir;
  return m;
}

Status Model::save(const std::string& dir) const {
  if (impl_->table_store())
    return Status::error(dir + ": cannot save a model whose STEM tables are served by a table store "
                         "(load it with tables in RAM as F32)");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::error(dir + ": cannot create directory: " + ec.message());
  STEM_RETURN_IF_ERROR(config().save((fs::path(dir) / "config.json").string()));
  STEM_RETURN_IF_ERROR(model::save_weights(impl_->weights(), (fs::path(dir) / "model.safetensors").string()));
  const std::string& tok = impl_->tokenizer_path();
  const fs::path dst = fs::path(dir) / "tokenizer.model";
  if (!tok.empty() && !fs::equivalent(tok, dst, ec)) {
    STEM_ASSIGN_OR_RETURN(std::string bytes, io::read_text(tok));
    STEM_RETURN_IF_ERROR(io::write_text_atomic(dst.string(), bytes));
  }
  return ok_status();
}

const ModelConfig& Model::config() const { return impl_->config(); }
const std::string& Model::tokenizer_path() const { return impl_->tokenizer_path(); }
model::Transformer& engine(Model& m) { return *m.impl_; }
const model::Transformer& engine(const Model& m) { return *m.impl_; }

namespace {
// The public entry points' input checks (Transformer only asserts them).
Status check_tokens(const ModelConfig& cfg, const std::vector<int32_t>& tokens, int64_t B, int64_t T) {
  if (B < 1 || T < 1 || static_cast<int64_t>(tokens.size()) != B * T)
    return Status::error("tokens: expected " + std::to_string(B) + " x " + std::to_string(T) +
                         " ids, got " + std::to_string(tokens.size()));
  if (T > cfg.max_position_embeddings)
    return Status::error("tokens: sequence length " + std::to_string(T) +
                         " exceeds max_position_embeddings = " +
                         std::to_string(cfg.max_position_embeddings));
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg.vocab_size)
      return Status::error("tokens: id " + std::to_string(tokens[i]) + " at position " +
                           std::to_string(i) + " is outside [0, vocab_size = " +
                           std::to_string(cfg.vocab_size) + ")");
  return ok_status();
}

Status check_f32(const model::Transformer& t, const std::string& dir, const char* what) {
  if (t.f32_weights()) return ok_status();
  return Status::error((dir.empty() ? std::string("model") : dir) + ": " + what +
                       " runs the full forward pass, which needs F32 weight matrices, but they were loaded as "
                       "BF16 or Q8: load them as F32 (--dtype f32, LoadOptions::dtype = WeightDType::F32)");
}
}  // namespace

Result<double> Model::score(const std::vector<int32_t>& tokens, int64_t B, int64_t T,
                            std::vector<float>* logits) {
  STEM_RETURN_IF_ERROR(check_tokens(config(), tokens, B, T));
  if (T < 2) return Status::error("tokens: need at least 2 tokens per sequence to score next-token loss");
  STEM_RETURN_IF_ERROR(check_f32(*impl_, dir_, "score"));
  STEM_RETURN_IF_ERROR(impl_->prepare_rows(tokens.data(), B * T));
  const double loss = impl_->forward(tokens.data(), B, T);
  if (logits) logits->assign(impl_->logits(), impl_->logits() + B * T * config().vocab_size);
  return loss;
}

Result<double> Model::grad(const std::vector<int32_t>& tokens, int64_t B, int64_t T,
                           std::map<std::string, HostTensor>* grads) {
  STEM_RETURN_IF_ERROR(check_tokens(config(), tokens, B, T));
  if (T < 2) return Status::error("tokens: need at least 2 tokens per sequence for a loss gradient");
  STEM_RETURN_IF_ERROR(check_f32(*impl_, dir_, "grad"));
  STEM_RETURN_IF_ERROR(impl_->prepare_rows(tokens.data(), B * T));
  const double loss = impl_->forward(tokens.data(), B, T);
  model::Gradients g = impl_->make_gradients(B * T);
  impl_->backward(g);
  if (grads) {
    grads->clear();
    const model::TensorList& w = impl_->weights();
    for (size_t i = 0; i < w.size(); ++i) {
      if (!w.spec(i).trainable) continue;
      (*grads)[w.spec(i).name] = HostTensor{w.spec(i).shape, g.dense_copy(i)};
    }
  }
  return loss;
}

std::vector<std::string> Model::tensor_names() const {
  std::vector<std::string> out;
  for (const model::TensorSpec& s : impl_->weights().specs()) out.push_back(s.name);
  return out;
}

int64_t Model::n_parameters() const {
  int64_t n = 0;
  for (const model::TensorSpec& s : impl_->weights().specs()) n += shape_numel(s.shape);
  return n;
}

Status write_npy(const std::string& path, const HostTensor& t) {
  if (shape_numel(t.shape) != static_cast<int64_t>(t.data.size()))
    return Status::error(path + ": tensor of shape " + shape_str(t.shape) + " holds " + std::to_string(t.data.size()) +
                         " values");
  return io::write_npy_f32(path, t.data.data(), t.shape);
}

Status write_safetensors(const std::string& path,
                         const std::vector<std::pair<std::string, const HostTensor*>>& tensors) {
  std::vector<io::SafetensorsItem> items;
  for (const auto& [name, t] : tensors) {
    if (shape_numel(t->shape) != static_cast<int64_t>(t->data.size()))
      return Status::error(path + ": tensor " + name + " of shape " + shape_str(t->shape) + " holds " +
                           std::to_string(t->data.size()) + " values");
    items.push_back({name, DType::F32, t->shape, t->data.data()});
  }
  return io::write_safetensors(path, items);
}

}  // namespace stem
