// Tensor: a dtype, a row-major shape, the device its bytes live on and a view
// of those bytes it may or may not own. No math lives here (see kernels/). A
// Tensor either owns its storage (Tensor::zeros, host memory) or views memory
// kept alive by someone else (an arena a backend allocated, a memory-mapped
// file): `holder_` keeps shared owners alive. Contiguous only. The pointer
// accessors hand out the address whatever the device: only host code that
// knows the tensor is on the host (device() == Device::kCpu) may dereference it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/check.h"

namespace stem {

// Q8: an in-memory format of weight matrices for inference, never in a
// checkpoint. Each row of the last dimension is blocks of 32 values, each an
// F32 scale then 32 int8 (value = q * scale; 36 bytes), the last block padded
// with zeros (kernels/infer_kernels.h quantize_q8_row).
enum class DType { F32, BF16, I32, Q8 };

// Where a tensor's bytes live: host memory, or the memory of a device a
// backend computes on (backends/backend.h).
enum class Device { kCpu, kCuda };
const char* device_name(Device d);  // "cpu", "cuda"

// Bytes of one element; Q8 has none (its blocks hold 32 elements), and
// asking is a bug: use tensor_bytes.
size_t dtype_size(DType t);
const char* dtype_name(DType t);  // safetensors spelling: "F32", "BF16", "I32"; "Q8"
// Bytes of a tensor of this dtype and shape (Q8: rows of whole blocks).
size_t tensor_bytes(DType t, const std::vector<int64_t>& shape);

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[4096, 256]"

class Tensor {
 public:
  Tensor() = default;
  // Owns a fresh zero-filled 64-byte aligned allocation.
  static Tensor zeros(DType dtype, Shape shape);
  // Views `data` (not owned); `holder` (may be null) keeps its owner alive.
  static Tensor view(DType dtype, Shape shape, void* data, std::shared_ptr<void> holder = nullptr,
                     Device device = Device::kCpu);

  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  size_t rank() const { return shape_.size(); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return tensor_bytes(dtype_, shape_); }
  bool empty() const { return data_ == nullptr; }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  float* f32() { STEM_CHECK(dtype_ == DType::F32); return static_cast<float*>(data_); }
  const float* f32() const { STEM_CHECK(dtype_ == DType::F32); return static_cast<const float*>(data_); }
  int32_t* i32() { STEM_CHECK(dtype_ == DType::I32); return static_cast<int32_t*>(data_); }
  const int32_t* i32() const { STEM_CHECK(dtype_ == DType::I32); return static_cast<const int32_t*>(data_); }

 private:
  DType dtype_ = DType::F32;
  Device device_ = Device::kCpu;
  Shape shape_;
  void* data_ = nullptr;
  std::shared_ptr<void> holder_;
};

}  // namespace stem
