// Tensor bookkeeping: dtype sizes, device names, shape helpers, owning and
// viewing constructors.
#include "tensor/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/buffer.h"

namespace stem {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::Q8: break;
  }
  STEM_CHECKF(false, "dtype_size: %s has no size per element", dtype_name(t));
  return 0;
}

size_t tensor_bytes(DType t, const std::vector<int64_t>& shape) {
  if (t != DType::Q8) return static_cast<size_t>(shape_numel(shape)) * dtype_size(t);
  if (shape.empty()) return 36;
  const int64_t cols = shape.back(), rows = shape_numel(shape) / std::max<int64_t>(cols, 1);
  return static_cast<size_t>(rows * ((cols + 31) / 32) * 36);
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::Q8: return "Q8";
  }
  STEM_CHECK(false);
  return "";
}

const char* device_name(Device d) {
  switch (d) {
    case Device::kCpu: return "cpu";
    case Device::kCuda: return "cuda";
  }
  STEM_CHECK(false);
  return "";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  auto buf = std::make_shared<core::AlignedBuffer>(std::max<size_t>(t.nbytes(), 1));
  t.data_ = buf->data();
  t.holder_ = std::move(buf);
  return t;
}

Tensor Tensor::view(DType dtype, Shape shape, void* data, std::shared_ptr<void> holder, Device device) {
  Tensor t;
  t.dtype_ = dtype;
  t.device_ = device;
  t.shape_ = std::move(shape);
  t.data_ = data;
  t.holder_ = std::move(holder);
  return t;
}

}  // namespace stem
