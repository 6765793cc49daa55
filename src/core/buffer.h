// AlignedBuffer: an owned, 64-byte aligned, zero-initialised byte allocation.
// Used for weight arenas, gradients, activations, staging and row caches; never
// shrinks implicitly. Large buffers come from anonymous mmap: their pages are
// zero and enter the resident set only when first written, so a budget that is
// never filled (a row cache, staging for a prompt never that long) costs
// address space, not memory.
#pragma once

#include <sys/mman.h>

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
    const size_t n = align_up(bytes);
    if (n >= kMapThreshold) {
      void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      STEM_CHECKF(p != MAP_FAILED, "out of memory mapping %zu bytes", bytes);
      ptr_ = std::unique_ptr<std::byte, Free>(static_cast<std::byte*>(p), Free{n});
      return;
    }
    void* p = std::aligned_alloc(kAlign, n);
    STEM_CHECKF(p != nullptr, "out of memory allocating %zu bytes", bytes);
    std::memset(p, 0, n);
    ptr_ = std::unique_ptr<std::byte, Free>(static_cast<std::byte*>(p), Free{0});
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
  static constexpr size_t kMapThreshold = size_t{1} << 20;
  struct Free {
    Free() : mapped(0) {}
    explicit Free(size_t m) : mapped(m) {}
    size_t mapped;  // bytes of an mmap allocation, 0 for aligned_alloc
    void operator()(std::byte* p) const {
      if (mapped) ::munmap(p, mapped);
      else std::free(p);
    }
  };
  std::unique_ptr<std::byte, Free> ptr_;
  size_t size_ = 0;
};

}  // namespace stem::core
