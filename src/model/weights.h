// TensorList: the tensors of one tensor list (tensor_specs) in one 64-byte
// aligned arena allocated by a backend (the host's unless told otherwise),
// index-aligned with the specs. The same shape serves weights,
// dense gradients and optimizer moments, so every pass over "all parameters"
// is one loop over one list. Also: init, load (with every name, shape and
// dtype checked against the config) and save of weight lists.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "io/safetensors.h"
#include "model/tensor_list.h"
#include "stem/model.h"
#include "stem/status.h"

namespace stem::model {

class TensorList {
 public:
  TensorList() = default;
  // Allocates zeroed storage for every spec for which `keep(spec)` holds (all
  // when null); the others get an empty Tensor at their index.
  static TensorList allocate(std::vector<TensorSpec> specs,
                             const std::function<bool(const TensorSpec&)>& keep = nullptr,
                             backends::Backend& backend = backends::cpu());

  size_t size() const { return specs_.size(); }
  const std::vector<TensorSpec>& specs() const { return specs_; }
  const TensorSpec& spec(size_t i) const { return specs_[i]; }
  Tensor& operator[](size_t i) { return tensors_[i]; }
  const Tensor& operator[](size_t i) const { return tensors_[i]; }
  int find(const std::string& name) const;  // -1 if absent
  void zero();                              // every allocated tensor
  size_t arena_bytes() const { return arena_ ? arena_->size() : 0; }
  backends::Backend& backend() const { return *be_; }  // where the arena lives

 private:
  std::vector<TensorSpec> specs_;
  std::vector<Tensor> tensors_;
  std::shared_ptr<backends::Buffer> arena_;
  backends::Backend* be_ = &backends::cpu();
};

// Fills every tensor as the official implementation does (see TensorSpec::init),
// deterministically from `seed` (each tensor from its own stream).
void init_weights(TensorList& w, uint64_t seed);
// Tensor i of w (a float matrix, empty or not) as init_weights(w, seed) fills
// it, handed to `block` block_rows rows at a time, in order, without the
// whole tensor in memory (a rank keeping some rows of a table).
void init_rows(const TensorList& w, size_t i, uint64_t seed, int64_t block_rows,
               const std::function<void(int64_t r0, int64_t n, const float* rows)>& block);

struct LoadOptions {
  WeightDType matrices = WeightDType::F32;  // 2-D weights other than STEM tables
  WeightDType tables = WeightDType::F32;    // STEM tables
  bool skip_tables = false;  // leave STEM tables out (empty tensors): a TableStore serves them
};

// Reads a weights file, checking names, dtypes (F32 or BF16 for floats, I32 for
// hash tables), shapes, nothing missing, nothing unexpected, hash-table entries
// in [0, E). Floats are converted to the dtype `opt` asks for (BF16 rounded to
// nearest even); norms stay F32. The list's specs carry the dtypes chosen.
Result<TensorList> load_weights(const ModelConfig& cfg, const std::string& safetensors_path,
                                const LoadOptions& opt = {});
// Tensors that are empty in w are skipped, or, when `stream` is given, written
// by stream(i, sink) (tensors kept outside memory, e.g. the trainer's disk
// tier); so are those for which `streamed(i)` holds (values that differ from
// memory on the way out, e.g. lazy AdamW's pending decay).
using TensorStream = std::function<Status(size_t i, const io::ByteSink& sink)>;
Status save_weights(const TensorList& w, const std::string& safetensors_path, const TensorStream& stream = nullptr,
                    const std::function<bool(size_t i)>& streamed = nullptr);

}  // namespace stem::model

namespace stem {
// A model directory: OUT/config.json and OUT/model.safetensors (each written
// atomically; OUT created if needed), and a copy of tokenizer_path as
// OUT/tokenizer.model unless it is "".
Status write_model_dir(const std::string& out, const ModelConfig& cfg, const model::TensorList& w,
                       const std::string& tokenizer_path);
}  // namespace stem
