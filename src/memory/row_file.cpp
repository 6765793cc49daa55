// RowFile (see row_file.h): pread/pwrite of whole records, a record per id.
#include "memory/row_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace stem::memory {
namespace {
constexpr int64_t kChunkRecords = 256;  // records per read/write in whole-table transfers
}

Result<std::unique_ptr<RowFile>> RowFile::create(const std::string& dir, int64_t n_rows,
                                                 int64_t n_tables, int64_t cols) {
  if (n_rows < 1 || n_tables < 1 || cols < 1)
    return Status::error("row file: need n_rows, n_tables, cols >= 1");
  std::string tmpl = dir + "/.stem-rows-XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  const int fd = mkstemp(name.data());
  if (fd < 0) return Status::error("row file: cannot create a file in " + dir + ": " + std::strerror(errno));
  std::string path(name.data());
  unlink(path.c_str());  // lives while open, gone after a crash
  const int64_t bytes = n_rows * n_tables * cols * static_cast<int64_t>(sizeof(float));
  if (ftruncate(fd, bytes) != 0) {
    const std::string why = std::strerror(errno);
    close(fd);
    return Status::error("row file: " + path + ": cannot size to " + std::to_string(bytes) + " bytes: " + why);
  }
  return std::unique_ptr<RowFile>(new RowFile(std::move(path), fd, n_rows, n_tables, cols));
}

RowFile::~RowFile() {
  if (fd_ >= 0) close(fd_);
}

Status RowFile::check_ids(const int32_t* ids, int64_t n) const {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= n_rows_)
      return Status::error("row file: " + path_ + ": row " + std::to_string(ids[i]) + " outside [0, " +
                           std::to_string(n_rows_) + ")");
  return ok_status();
}

Status RowFile::io(bool write, void* buf, int64_t bytes, int64_t offset, int64_t row) const {
  auto* p = static_cast<char*>(buf);
  int64_t done = 0;
  while (done < bytes) {
    const ssize_t r = write ? pwrite(fd_, p + done, static_cast<size_t>(bytes - done), offset + done)
                            : pread(fd_, p + done, static_cast<size_t>(bytes - done), offset + done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0)
      return Status::error("row file: " + path_ + ": " + (write ? "write" : "read") + " of row " +
                           std::to_string(row) + " failed: " +
                           (r == 0 ? std::string("unexpected end of file") : std::strerror(errno)));
    done += r;
  }
  return ok_status();
}

Status RowFile::fetch(const int32_t* ids, int64_t n, float* const* dst) {
  STEM_RETURN_IF_ERROR(check_ids(ids, n));
  const int64_t rb = record_bytes();
  std::vector<float> rec(static_cast<size_t>(M_ * cols_));
  for (int64_t i = 0; i < n; ++i) {
    STEM_RETURN_IF_ERROR(io(false, rec.data(), rb, ids[i] * rb, ids[i]));
    for (int64_t t = 0; t < M_; ++t)
      if (dst[t]) std::memcpy(dst[t] + i * cols_, rec.data() + t * cols_, sizeof(float) * cols_);
  }
  bytes_read_ += n * rb;
  return ok_status();
}

Status RowFile::store(const int32_t* ids, int64_t n, const float* const* src) {
  STEM_RETURN_IF_ERROR(check_ids(ids, n));
  const int64_t rb = record_bytes();
  std::vector<float> rec(static_cast<size_t>(M_ * cols_));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t t = 0; t < M_; ++t) std::memcpy(rec.data() + t * cols_, src[t] + i * cols_, sizeof(float) * cols_);
    STEM_RETURN_IF_ERROR(io(true, rec.data(), rb, ids[i] * rb, ids[i]));
  }
  bytes_written_ += n * rb;
  return ok_status();
}

Status RowFile::write_range(int64_t r0, int64_t n, const float* const* tables) {
  if (r0 < 0 || n < 0 || r0 + n > n_rows_) return Status::error("row file: " + path_ + ": range outside the file");
  std::vector<float> chunk(static_cast<size_t>(kChunkRecords * M_ * cols_));
  for (int64_t c0 = r0; c0 < r0 + n; c0 += kChunkRecords) {
    const int64_t k = std::min(kChunkRecords, r0 + n - c0);
    for (int64_t r = 0; r < k; ++r)
      for (int64_t t = 0; t < M_; ++t) {
        float* d = chunk.data() + (r * M_ + t) * cols_;
        if (tables[t]) std::memcpy(d, tables[t] + (c0 + r) * cols_, sizeof(float) * cols_);
        else std::memset(d, 0, sizeof(float) * cols_);
      }
    STEM_RETURN_IF_ERROR(io(true, chunk.data(), k * record_bytes(), c0 * record_bytes(), c0));
  }
  bytes_written_ += n * record_bytes();
  return ok_status();
}

Status RowFile::read_range(int64_t r0, int64_t n, float* const* tables) {
  if (r0 < 0 || n < 0 || r0 + n > n_rows_) return Status::error("row file: " + path_ + ": range outside the file");
  std::vector<float> chunk(static_cast<size_t>(kChunkRecords * M_ * cols_));
  for (int64_t c0 = r0; c0 < r0 + n; c0 += kChunkRecords) {
    const int64_t k = std::min(kChunkRecords, r0 + n - c0);
    STEM_RETURN_IF_ERROR(io(false, chunk.data(), k * record_bytes(), c0 * record_bytes(), c0));
    for (int64_t r = 0; r < k; ++r)
      for (int64_t t = 0; t < M_; ++t)
        if (tables[t]) std::memcpy(tables[t] + (c0 + r) * cols_, chunk.data() + (r * M_ + t) * cols_, sizeof(float) * cols_);
  }
  bytes_read_ += n * record_bytes();
  return ok_status();
}

Status RowFile::read_table(int64_t t, int64_t r0, int64_t n, float* dst) {
  if (t < 0 || t >= M_ || r0 < 0 || n < 0 || r0 + n > n_rows_)
    return Status::error("row file: " + path_ + ": table or range outside the file");
  const int64_t rb = record_bytes(), cb = cols_ * static_cast<int64_t>(sizeof(float));
  for (int64_t r = r0; r < r0 + n; ++r)
    STEM_RETURN_IF_ERROR(io(false, dst + (r - r0) * cols_, cb, r * rb + t * cb, r));
  bytes_read_ += n * cb;
  return ok_status();
}

Status RowFile::write_table(int64_t t, int64_t r0, int64_t n, const float* src) {
  if (t < 0 || t >= M_ || r0 < 0 || n < 0 || r0 + n > n_rows_)
    return Status::error("row file: " + path_ + ": table or range outside the file");
  const int64_t rb = record_bytes(), cb = cols_ * static_cast<int64_t>(sizeof(float));
  for (int64_t r = r0; r < r0 + n; ++r)
    STEM_RETURN_IF_ERROR(io(true, const_cast<float*>(src) + (r - r0) * cols_, cb, r * rb + t * cb, r));
  bytes_written_ += n * cb;
  return ok_status();
}

Status RowFile::update_all(const std::function<void(int64_t r, float* record)>& fn) {
  std::vector<float> chunk(static_cast<size_t>(kChunkRecords * M_ * cols_));
  for (int64_t c0 = 0; c0 < n_rows_; c0 += kChunkRecords) {
    const int64_t k = std::min(kChunkRecords, n_rows_ - c0);
    STEM_RETURN_IF_ERROR(io(false, chunk.data(), k * record_bytes(), c0 * record_bytes(), c0));
    for (int64_t r = 0; r < k; ++r) fn(c0 + r, chunk.data() + r * M_ * cols_);
    STEM_RETURN_IF_ERROR(io(true, chunk.data(), k * record_bytes(), c0 * record_bytes(), c0));
  }
  bytes_read_ += n_rows_ * record_bytes();
  bytes_written_ += n_rows_ * record_bytes();
  return ok_status();
}

}  // namespace stem::memory
