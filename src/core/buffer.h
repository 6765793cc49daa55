// AlignedBuffer: an owned, 64-byte aligned, zero-initialised byte allocation.
// Used for weight arenas, gradients and activations; never shrinks implicitly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/check.h"

namespace stem::core {

inline constexpr size_t kAlign = 64;

inline size_t align_up(size_t n, size_t a = kAlign) { return (n + a - 1) / a * a; }

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes) { resize(bytes); }

  // Reallocates (contents lost, zero-filled) when `bytes` differs from the size.
  void resize(size_t bytes) {
    if (bytes == size_) return;
    ptr_.reset();
    size_ = bytes;
    if (bytes == 0) return;
    void* p = std::aligned_alloc(kAlign, align_up(bytes));
    STEM_CHECKF(p != nullptr, "out of memory allocating %zu bytes", bytes);
    std::memset(p, 0, align_up(bytes));
    ptr_.reset(static_cast<std::byte*>(p));
  }
  void zero() {
    if (size_) std::memset(ptr_.get(), 0, size_);
  }
  std::byte* data() { return ptr_.get(); }
  const std::byte* data() const { return ptr_.get(); }
  template <typename T> T* as() { return reinterpret_cast<T*>(ptr_.get()); }
  template <typename T> const T* as() const { return reinterpret_cast<const T*>(ptr_.get()); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> ptr_;
  size_t size_ = 0;
};

}  // namespace stem::core
