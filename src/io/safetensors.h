// Our own safetensors reader and writer (https://huggingface.co/docs/safetensors).
// Reading maps the file read-only and validates every rule before any tensor is
// touched: header length against the file size, well-formed JSON, known dtypes,
// shapes of non-negative ints, byte size = product(shape) x dtype size, offsets
// inside the data section, no two tensors overlapping. It never reads past the
// end of the file. It knows nothing of models: checking names and shapes against
// a config is model/weights' job.
// Writing pads the header with spaces so the data section starts 64-byte
// aligned, lays tensors out contiguously in the given order (the format allows
// no holes), and goes through a temporary file renamed into place.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "stem/status.h"
#include "tensor/tensor.h"

namespace stem::io {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  size_t offset = 0;  // absolute byte offset of the data in the file
  size_t nbytes = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Errors name the file and the problem:
  // "safetensors: m.safetensors: tensor 'x': data_offsets [0, 12] end past the data section (8 bytes)".
  static Result<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }  // in file-offset order
  const SafetensorsEntry* find(const std::string& name) const;               // null if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Pointer into the read-only mapping; valid while this object or mapping() lives.
  const std::byte* data(const SafetensorsEntry& e) const { return base_ + e.offset; }
  // Drops the pages of e's data from this process's memory (they stay in the
  // page cache): after copying a tensor out, so that loading a large file
  // does not hold it twice in the resident set. The data stays readable.
  void release(const SafetensorsEntry& e) const;
  // Keeps the mapping alive (for zero-copy tensor views).
  std::shared_ptr<void> mapping() const { return mapping_; }
  size_t file_size() const { return file_size_; }

 private:
  std::string path_;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;  // name -> position in entries_
  std::map<std::string, std::string> metadata_;
  std::shared_ptr<void> mapping_;
  const std::byte* base_ = nullptr;
  size_t file_size_ = 0;
};

// The rows of float matrix `name` of f ([R, C] as `shape` says; F32, or BF16
// widened to F32) handed to `block` block_rows rows at a time, in order, the
// pages read dropped as it goes: for a reader that keeps some rows. A
// missing tensor or another shape is an error naming the file and tensor.
Status read_rows(const SafetensorsFile& f, const std::string& name, const Shape& shape, int64_t block_rows,
                 const std::function<void(int64_t r0, int64_t n, const float* rows)>& block);

// Receives a tensor's bytes in order, in pieces of any size.
using ByteSink = std::function<Status(const void* bytes, size_t n)>;

struct SafetensorsItem {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  const void* data = nullptr;  // numel(shape) * dtype_size(dtype) bytes
  // Instead of data: writes exactly that many bytes into the sink (a tensor
  // streamed from elsewhere, never whole in memory).
  std::function<Status(const ByteSink&)> produce = nullptr;
};

// Writes `items` in the given order; atomic (temporary file + fsync + rename).
Status write_safetensors(const std::string& path, const std::vector<SafetensorsItem>& items,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace stem::io
