// RowFile: a read-write file of n_rows records, record r holding row r of M
// tables of `cols` F32 each ([n_rows][M][cols]), so that one id's rows of every
// table are one read and one write. The trainer keeps STEM tables and their
// optimizer moments in one when they live on disk: the rows a step needs are
// fetched (by a Prefetcher, it is a RowSource), updated in memory and stored
// back; the rest of the file is never touched.
//
// The file is unlinked as soon as it is created: it lives as long as the
// RowFile and leaves nothing behind after a crash. Reads and writes are
// pread/pwrite of whole records; the page cache does any caching.
// Threading: fetch() on one thread (a prefetcher) may run while another
// thread stores rows; a row fetched while it is being stored may be torn, so
// the caller re-stages such rows (the trainer does). It knows nothing of
// models. Errors come back as Status naming the file and the row.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "memory/row_source.h"

namespace stem::memory {

class RowFile : public RowSource {
 public:
  // Creates the file in `dir` (a unique name), sized for n_rows records of zeros.
  static Result<std::unique_ptr<RowFile>> create(const std::string& dir, int64_t n_rows,
                                                 int64_t n_tables, int64_t cols);
  ~RowFile() override;
  RowFile(const RowFile&) = delete;
  RowFile& operator=(const RowFile&) = delete;

  int64_t n_tables() const override { return M_; }
  int64_t cols() const override { return cols_; }
  int64_t n_rows() const { return n_rows_; }
  const std::string& path() const { return path_; }  // as created (already unlinked)
  int64_t file_bytes() const { return n_rows_ * record_bytes(); }

  // Rows ids[i] of every table t into dst[t] + i * cols (i < n); a null dst[t]
  // skips table t. ids must be in [0, n_rows) (checked).
  Status fetch(const int32_t* ids, int64_t n, float* const* dst) override;
  // Writes rows ids[i] of every table from src[t] + i * cols (all non-null).
  Status store(const int32_t* ids, int64_t n, const float* const* src);
  // Whole tables, records [r0, r0 + n): tables[t] points at row 0 of an
  // [n_rows, cols] array (null: zeros on write, skipped on read).
  Status write_range(int64_t r0, int64_t n, const float* const* tables);
  Status read_range(int64_t r0, int64_t n, float* const* tables);
  // Rows [r0, r0 + n) of table t alone into dst [n, cols], or from src.
  Status read_table(int64_t t, int64_t r0, int64_t n, float* dst);
  Status write_table(int64_t t, int64_t r0, int64_t n, const float* src);
  // Every record in turn: fn(r, record [M, cols]) may change it; written back.
  Status update_all(const std::function<void(int64_t r, float* record)>& fn);

  int64_t bytes_read() const { return bytes_read_.load(); }
  int64_t bytes_written() const { return bytes_written_.load(); }

 private:
  RowFile(std::string path, int fd, int64_t n_rows, int64_t M, int64_t cols)
      : path_(std::move(path)), fd_(fd), n_rows_(n_rows), M_(M), cols_(cols) {}
  int64_t record_bytes() const { return M_ * cols_ * static_cast<int64_t>(sizeof(float)); }
  Status check_ids(const int32_t* ids, int64_t n) const;
  Status io(bool write, void* buf, int64_t bytes, int64_t offset, int64_t row) const;

  std::string path_;
  int fd_ = -1;
  int64_t n_rows_ = 0, M_ = 0, cols_ = 0;
  std::atomic<int64_t> bytes_read_{0}, bytes_written_{0};
};

}  // namespace stem::memory
