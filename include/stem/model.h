// Model: a STEM / dense / hash-MoE decoder in memory, with the contract's math
// (docs/model-format.md) forward and backward on the CPU.
// Ownership: a Model owns its weights and its work buffers; it is movable, not
// copyable, and not thread-safe (one caller at a time; kernels use all cores
// inside). Fallible calls return Status/Result naming the file, field and value.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "stem/config.h"
#include "stem/status.h"

namespace stem {
namespace model { class Transformer; }

// Where a model's STEM tables live: resident in RAM, paged in from the
// checkpoint file on demand (mmap), or read explicitly into a row cache
// (disk).
enum class TablesIn { Ram, Mmap, Disk };
// How weight matrices are stored in memory: F32, BF16, as in the file, or Q8
// (inference only: 8-bit blocks of 32 with an F32 scale, made at load from
// the F32 or BF16 file; STEM tables stay as stored, docs/precision.md).
enum class WeightDType { F32, BF16, Auto, Q8 };
// The spellings of the CLI and config files: "ram" | "mmap" | "disk" and
// "f32" | "bf16" | "auto" | "q8"; an error names the value and the choices.
Result<TablesIn> parse_tables_in(const std::string& s);
Result<WeightDType> parse_weight_dtype(const std::string& s);
const char* name(TablesIn t);
const char* name(WeightDType t);

// How a checkpoint is brought into memory (inference: generate, score, eval,
// bench). The defaults load everything into RAM as F32, as training needs.
struct LoadOptions {
  TablesIn tables = TablesIn::Ram;
  int64_t table_cache_mb = 256;  // disk: row cache budget
  bool packed_tables = true;     // mmap/disk: use DIR/tables.stem when present
  WeightDType dtype = WeightDType::F32;  // weight matrices in memory
};

// A gradient or activation handed to the caller: F32, row-major.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// F32 tensors to files, atomically: one to a NumPy .npy, several (in the
// given order) to a .safetensors file.
Status write_npy(const std::string& path, const HostTensor& t);
Status write_safetensors(const std::string& path,
                         const std::vector<std::pair<std::string, const HostTensor*>>& tensors);

// A checkpoint (DIR, or a run directory's latest) rewritten into OUT with its
// weight matrices stored as `dtype` (F32 or BF16; norms stay F32), or only
// its STEM tables when `tables_only`; config.json and tokenizer.model are
// copied. The source is never changed; OUT may not be the source. Returns
// the bytes of weights written.
Result<int64_t> convert_checkpoint(const std::string& dir, const std::string& out, WeightDType dtype,
                                   bool tables_only = false);
// Writes DIR/tables.stem, the STEM tables row-major ([V][stem layers][f]):
// one read per token for the disk and mmap tiers. Returns its path. In the
// checkpoint's table dtype, or with `q8` in 8 bits (blocks of 32 values with
// one F32 scale: a row is read in 28% of its F32 bytes, and dequantized to
// F32 as it is fetched; model.safetensors keeps the full-precision rows, which
// --tables ram reads).
Result<std::string> pack_checkpoint_tables(const std::string& dir, bool q8 = false);

// Changing FFN layers between dense and STEM (convert_to_stem, convert_to_dense).
// How a new STEM table starts: U[t] = W_up E[t] from the raw embedding
// ("embed"), W_up applied to the mean FFN input of token t over a data
// sample ("mean", the best constant per token in the least-squares sense;
// "embed" for tokens the sample lacks), or zeros ("zero").
enum class TableInit { Embed, Mean, Zero };
Result<TableInit> parse_table_init(const std::string& s);
struct ArchConvertOptions {
  // Layers: "1,3,5", "every2" (odd), "every3" (2, 5, ...), "all-but-first",
  // "full"; "" is all-but-first to STEM and every STEM layer to dense.
  std::string layers;
  TableInit init = TableInit::Embed;
  std::string data_dir;          // from `stem prepare`: the sample of FFN inputs (mean; to dense)
  int64_t sample_tokens = 1 << 18;  // tokens of that sample, windows spread over the training split
  int64_t seq = 256;             // window length (at most the model's positions)
  double ridge = 1e-4;           // to dense: ridge as a fraction of the mean eigenvalue of X^T X
  std::function<void(int64_t done, int64_t total)> progress;  // windows of the sample
};
struct ArchConvertReport {
  std::vector<int> layers;       // the layers changed
  int64_t sample_tokens = 0;     // tokens run through the model (0 without a sample)
  int64_t tokens_seen = 0;       // distinct ids among them
  double fit_rel_error = 0;      // to dense: |X W_up^T - U[t]| / |U[t]| over the sample
  int64_t weight_bytes = 0;
};
// A dense checkpoint (DIR, or a run directory's latest) written into OUT with
// the chosen dense layers made STEM: up_proj dropped, the table initialised
// as `init` says, config.json's ffn_types updated; everything else copied.
Result<ArchConvertReport> convert_to_stem(const std::string& dir, const std::string& out, const ArchConvertOptions& o);
// The reverse where it is defined: a table is not a linear map of the FFN
// input, so each chosen STEM layer gets the up-projection that fits its table
// best over the data sample's FFN inputs (ridge least squares), reported as
// fit_rel_error. Needs data_dir.
Result<ArchConvertReport> convert_to_dense(const std::string& dir, const std::string& out, const ArchConvertOptions& o);

// A model directory as given by a user: itself, or, for a training run
// directory (checkpoints/ and latest), its latest checkpoint.
Result<std::string> resolve_model_dir(const std::string& dir);

class Model {
 public:
  Model();
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  // Fresh weights initialised as the official implementation does, seeded.
  static Result<Model> init(const ModelConfig& cfg, uint64_t seed);
  // Reads DIR/config.json and DIR/model.safetensors (F32, or BF16 widened),
  // checking every tensor's name, dtype and shape against the config. DIR may
  // also be a training run directory: its latest checkpoint is loaded (dir()
  // says which).
  static Result<Model> load(const std::string& dir);
  // The same with tables placed and weights stored as `opt` says. With mmap or
  // disk, STEM tables never enter the weight list and keep the file's dtype
  // (BF16 widened as rows are read); in RAM they are F32 unless dtype is bf16
  // or auto. score() and grad() need F32 matrices.
  static Result<Model> load(const std::string& dir, const LoadOptions& opt);
  // Writes DIR/config.json and DIR/model.safetensors (F32), each atomically;
  // creates DIR if needed; copies tokenizer.model when the model has one.
  Status save(const std::string& dir) const;

  const ModelConfig& config() const;
  // Path of the tokenizer.model the model was loaded with ("" if none).
  const std::string& tokenizer_path() const;
  // The directory it was loaded from ("" for a model made by init()).
  const std::string& dir() const { return dir_; }

  // Mean next-token loss of B sequences of T tokens ([B, T] row-major): the
  // mean over all B*(T-1) predicted positions. Fills logits [B*T, V] if given.
  // Errors: T < 2 (no target), T > max_position_embeddings, ids outside [0, V).
  Result<double> score(const std::vector<int32_t>& tokens, int64_t B, int64_t T,
                       std::vector<float>* logits = nullptr);
  // The same loss and the gradient of every trainable parameter, by tensor
  // name, dense F32 (row-sparse gradients are expanded).
  Result<double> grad(const std::vector<int32_t>& tokens, int64_t B, int64_t T,
                      std::map<std::string, HostTensor>* grads);

  // The model's tensors by name, in the checkpoint's order, and how many
  // values they hold together.
  std::vector<std::string> tensor_names() const;
  int64_t n_parameters() const;

  // The engine behind the handle is private to the library (src/model/engine.h).
 private:
  friend model::Transformer& engine(Model&);
  friend const model::Transformer& engine(const Model&);
  std::unique_ptr<model::Transformer> impl_;
  std::string dir_;
};

}  // namespace stem
