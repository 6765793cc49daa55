// TensorList storage, seeded initialisation, and checked load/save of weights.
#include "model/weights.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <set>

#include "core/bf16.h"
#include "core/buffer.h"
#include "core/check.h"
#include "io/safetensors.h"
#include "kernels/infer_kernels.h"

namespace stem::model {

TensorList TensorList::allocate(std::vector<TensorSpec> specs,
                                const std::function<bool(const TensorSpec&)>& keep, backends::Backend& backend) {
  TensorList out;
  out.be_ = &backend;
  out.specs_ = std::move(specs);
  std::vector<size_t> offsets(out.specs_.size(), 0);
  size_t total = 0;
  for (size_t i = 0; i < out.specs_.size(); ++i) {
    const TensorSpec& s = out.specs_[i];
    if (keep && !keep(s)) continue;
    offsets[i] = total;
    total += core::align_up(tensor_bytes(s.dtype, s.shape));
  }
  out.arena_ = backends::must_alloc(backend, std::max<size_t>(total, 1));
  out.tensors_.resize(out.specs_.size());
  for (size_t i = 0; i < out.specs_.size(); ++i) {
    const TensorSpec& s = out.specs_[i];
    if (keep && !keep(s)) continue;
    out.tensors_[i] = Tensor::view(s.dtype, s.shape, static_cast<std::byte*>(out.arena_->data()) + offsets[i],
                                   out.arena_, backend.device());
  }
  return out;
}

int TensorList::find(const std::string& name) const {
  for (size_t i = 0; i < specs_.size(); ++i)
    if (specs_[i].name == name) return static_cast<int>(i);
  return -1;
}

void TensorList::zero() {
  if (arena_) be_->stream().fill_zero(arena_->data(), arena_->size());
}

namespace {

// The seed of tensor i's stream: independent of thread count and order.
uint64_t tensor_seed(uint64_t seed, size_t i) {
  return seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(i + 1) * 0xBF58476D1CE4E5B9ull;
}

// The values of a float tensor's initialisation, in order: drawing them in
// blocks gives the numbers of drawing them at once (the distribution keeps
// its state between calls).
class FloatInit {
 public:
  FloatInit(const TensorSpec& s, uint64_t seed)
      : s_(s), rng_(seed), nd_(0.0, s.init == InitKind::XavierNormal ? s.init_std : 1.0) {}
  void next(float* p, int64_t n) {
    switch (s_.init) {
      case InitKind::Ones: std::fill(p, p + n, 1.0f); break;
      case InitKind::TruncNormal:
        for (int64_t i = 0; i < n; ++i) {
          double z;
          do z = nd_(rng_); while (std::abs(z) > 3.0);
          p[i] = static_cast<float>(z * s_.init_std);
        }
        break;
      case InitKind::XavierNormal:
        for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(nd_(rng_));
        break;
      case InitKind::HashBalanced: STEM_CHECKF(false, "FloatInit: %s is a hash table", s_.name.c_str());
    }
  }
  std::mt19937_64& rng() { return rng_; }

 private:
  const TensorSpec& s_;
  std::mt19937_64 rng_;
  std::normal_distribution<double> nd_;
};

void fill_tensor(Tensor& t, const TensorSpec& s, uint64_t seed) {
  const int64_t n = t.numel();
  FloatInit init(s, seed);
  if (s.init != InitKind::HashBalanced) return init.next(t.f32(), n);
  // A random permutation of the tokens dealt to the experts in turn: expert
  // loads differ by at most one token.
  const int64_t E = s.expert_count;
  std::vector<int32_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), init.rng());
  for (int64_t i = 0; i < n; ++i) t.i32()[perm[i]] = static_cast<int32_t>(i % E);
}

}  // namespace

void init_weights(TensorList& w, uint64_t seed) {
  const int64_t n = static_cast<int64_t>(w.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    if (w[i].empty()) continue;
    fill_tensor(w[i], w.spec(i), tensor_seed(seed, static_cast<size_t>(i)));
  }
}

void init_rows(const TensorList& w, size_t i, uint64_t seed, int64_t block_rows,
               const std::function<void(int64_t r0, int64_t n, const float* rows)>& block) {
  const TensorSpec& s = w.spec(i);
  STEM_CHECKF(s.shape.size() == 2 && s.init != InitKind::HashBalanced, "init_rows: %s is not a float matrix",
              s.name.c_str());
  const int64_t R = s.shape[0], C = s.shape[1];
  FloatInit init(s, tensor_seed(seed, i));
  std::vector<float> buf(static_cast<size_t>(std::min(block_rows, R) * C));
  for (int64_t r0 = 0; r0 < R; r0 += block_rows) {
    const int64_t n = std::min(block_rows, R - r0);
    init.next(buf.data(), n * C);
    block(r0, n, buf.data());
  }
}

namespace {
// Copies n values of `from` at src into dst of `to` (F32/BF16; I32 verbatim;
// Q8 from F32 or BF16 rows of `cols` values).
void convert_values(void* dst, DType to, const std::byte* src, DType from, int64_t n, int64_t cols) {
  if (to == DType::Q8) {
    std::vector<float> row(static_cast<size_t>(cols));
    auto* d = static_cast<uint8_t*>(dst);
    for (int64_t r = 0; r < n / cols; ++r) {
      convert_values(row.data(), DType::F32, src + r * cols * static_cast<int64_t>(dtype_size(from)), from, cols, cols);
      kernels::quantize_q8_row(d + r * kernels::q8_row_bytes(cols), row.data(), cols);
    }
    return;
  }
  if (to == from) {
    std::memcpy(dst, src, static_cast<size_t>(n) * dtype_size(to));
  } else if (to == DType::F32) {  // BF16 -> F32
    float* d = static_cast<float*>(dst);
    for (int64_t k = 0; k < n; ++k) {
      uint16_t b;
      std::memcpy(&b, src + 2 * k, 2);
      d[k] = core::bf16_to_float(b);
    }
  } else {  // F32 -> BF16
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (int64_t k = 0; k < n; ++k) {
      float v;
      std::memcpy(&v, src + 4 * k, 4);
      d[k] = core::float_to_bf16(v);
    }
  }
}
}  // namespace

Result<TensorList> load_weights(const ModelConfig& cfg, const std::string& path, const LoadOptions& opt) {
  STEM_ASSIGN_OR_RETURN(io::SafetensorsFile file, io::SafetensorsFile::open(path));
  std::vector<TensorSpec> specs = tensor_specs(cfg);
  std::set<std::string> expected;
  for (const TensorSpec& s : specs) expected.insert(s.name);
  for (const io::SafetensorsEntry& e : file.entries())
    if (!expected.count(e.name))
      return Status::error(path + ": unexpected tensor '" + e.name + "' " + shape_str(e.shape) +
                           " (not part of this config; check config.json's ffn_types, "
                           "num_hidden_layers and tie_word_embeddings)");
  for (TensorSpec& s : specs) {
    const io::SafetensorsEntry* e = file.find(s.name);
    if (!e) return Status::error(path + ": missing tensor '" + s.name + "' " + shape_str(s.shape));
    if (e->shape != s.shape)
      return Status::error(path + ": tensor '" + s.name + "' has shape " + shape_str(e->shape) +
                           ", config.json implies " + shape_str(s.shape));
    const bool want_int = s.dtype == DType::I32;
    const bool ok_dtype = want_int ? e->dtype == DType::I32
                                   : (e->dtype == DType::F32 || e->dtype == DType::BF16);
    if (!ok_dtype)
      return Status::error(path + ": tensor '" + s.name + "' has dtype " + dtype_name(e->dtype) +
                           ", expected " + (want_int ? "I32" : "F32 or BF16"));
    if (want_int || s.shape.size() != 2) continue;  // hash tables, norms: as specified
    const bool table = s.kind == ParamKind::StemTable;
    const WeightDType want = table ? opt.tables : opt.matrices;
    s.dtype = want == WeightDType::Auto   ? e->dtype
              : want == WeightDType::BF16 ? DType::BF16
              : want == WeightDType::Q8   ? (table ? e->dtype : DType::Q8)  // tables stay as stored
                                          : DType::F32;
  }
  TensorList w = TensorList::allocate(specs, [&](const TensorSpec& s) {
    return !(opt.skip_tables && s.kind == ParamKind::StemTable);
  });
  for (size_t i = 0; i < w.size(); ++i) {
    const TensorSpec& s = w.spec(i);
    if (w[i].empty()) continue;
    const io::SafetensorsEntry* e = file.find(s.name);
    const int64_t n = s.shape.empty() ? 1 : shape_numel(s.shape);
    convert_values(w[i].raw(), s.dtype, file.data(*e), e->dtype, n, s.shape.empty() ? 1 : s.shape.back());
    file.release(*e);
    if (s.dtype == DType::I32) {
      const int32_t* h = w[i].i32();
      for (int64_t k = 0; k < n; ++k)
        if (h[k] < 0 || h[k] >= cfg.num_hash_experts)
          return Status::error(path + ": tensor '" + s.name + "' maps token " + std::to_string(k) +
                               " to expert " + std::to_string(h[k]) + ", outside [0, " +
                               std::to_string(cfg.num_hash_experts) + ")");
    }
  }
  return w;
}

Status save_weights(const TensorList& w, const std::string& path, const TensorStream& stream,
                    const std::function<bool(size_t i)>& streamed) {
  std::vector<io::SafetensorsItem> items;
  for (size_t i = 0; i < w.size(); ++i) {
    if (w.spec(i).dtype == DType::Q8)
      return Status::error(path + ": tensor '" + w.spec(i).name +
                           "' is Q8, an in-memory format; a checkpoint holds F32 or BF16 (load it with --dtype f32 "
                           "or bf16 to save it)");
    if (!w[i].empty() && !(stream && streamed && streamed(i))) {
      items.push_back({w.spec(i).name, w.spec(i).dtype, w.spec(i).shape, w[i].raw()});
    } else if (stream) {
      io::SafetensorsItem it{w.spec(i).name, w.spec(i).dtype, w.spec(i).shape, nullptr};
      it.produce = [&stream, i](const io::ByteSink& sink) { return stream(i, sink); };
      items.push_back(std::move(it));
    }
  }
  return io::write_safetensors(path, items, {{"format", "pt"}});
}

}  // namespace stem::model
