// TableStore: where a set of row tables lives, and the one way to read rows of
// them. A "table set" is M tables of the same shape [n_rows, cols] and dtype
// (F32, BF16, or Q8: rows of 32-value blocks, each an F32 scale and 32 int8,
// as tensor.h's Q8) inside one file, row r of table t at byte offset
// base[t] + r * row_stride. Two packings fit that description:
//   table-major  each table contiguous ([M][n_rows][cols], safetensors style);
//   row-major    the M rows of one id contiguous ([n_rows][M][cols]), so all
//                tables' rows of one id are a single read.
// Tiers:
//   ram   every table read into memory at open (resident).
//   mmap  the file mapped read-only; rows paged in by the kernel on first touch,
//         zero copy for F32 table-major files.
//   disk  explicit reads (io_uring when the kernel allows it, else pread) into
//         a row cache with a byte budget and LRU eviction.
// Every tier hands out F32 (BF16 widened, Q8 dequantized), bit-identical across tiers.
// Overrides (edit overlays) replace single rows on top of any tier.
//
// It knows nothing of models: which tensors are tables and which ids a step
// needs is decided by the caller (model/, infer/).
// Threading: fetch() may be called from several threads at once (decoders
// sharing a model, each with its prefetcher): fetches are serialised by a
// lock, since the disk tier's row cache is shared state. direct() pointers
// and stats() may be read meanwhile. Overrides must not change while a fetch
// runs. Failures (I/O errors, short reads) come back as Status naming the
// file, table and row.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "memory/row_source.h"
#include "stem/status.h"
#include "tensor/tensor.h"

namespace stem::memory {

enum class Tier { Ram, Mmap, Disk };
const char* tier_name(Tier t);

// Where the M tables sit in a file.
struct TableFileLayout {
  std::string path;
  DType dtype = DType::F32;     // F32, BF16 or Q8
  int64_t n_rows = 0, cols = 0;
  std::vector<uint64_t> base;   // [M] byte offset of row 0 of each table
  uint64_t row_stride = 0;      // bytes from row r to row r+1 of one table
  int64_t n_tables() const { return static_cast<int64_t>(base.size()); }
  size_t row_bytes() const { return tensor_bytes(dtype, {1, cols}); }
  // The M rows of one id are one contiguous range (row-major packing).
  bool row_major() const;
  // Each table is one contiguous [n_rows, cols] array (table-major packing).
  bool table_major() const { return row_stride == row_bytes(); }
};

struct StoreOptions {
  Tier tier = Tier::Ram;
  int64_t cache_bytes = int64_t{256} << 20;  // disk: row cache budget (0: no cache)
  int io_depth = 64;                          // disk: reads in flight at once
};

// Counters since open or the last reset_stats(); safe to read while a fetch runs.
struct StoreStats {
  int64_t rows_requested = 0;  // ids asked for (each id covers all M tables)
  int64_t cache_hits = 0;      // disk: ids served from the row cache
  int64_t bytes_read = 0;      // bytes read from the file (disk), or touched (mmap, ram)
  int64_t reads = 0;           // disk: read requests issued
  double hit_rate() const {
    return rows_requested ? static_cast<double>(cache_hits) / rows_requested : 0.0;
  }
};

class TableStore : public RowSource {
 public:
  // Checks the layout against the file (every row inside it) and opens the tier.
  static Result<std::unique_ptr<TableStore>> open(const TableFileLayout& layout,
                                                  const StoreOptions& opt);
  ~TableStore() override;

  const TableFileLayout& layout() const { return layout_; }
  Tier tier() const { return tier_; }
  int64_t n_tables() const override { return layout_.n_tables(); }
  int64_t n_rows() const { return layout_.n_rows; }
  int64_t cols() const override { return layout_.cols; }

  // Copies row ids[i] of every table t into dst[t] + i * cols() as F32, for
  // i < n; ids must be in [0, n_rows()) (checked) and should be distinct.
  Status fetch(const int32_t* ids, int64_t n, float* const* dst) override;

  // Table t as an F32 [n_rows, cols] array readable in place (ram and mmap
  // tiers, F32 table-major files, no overrides); null when rows must be
  // fetched. Valid while the store lives.
  const float* direct(int64_t t) const;

  // Replaces row `row` of table t by `values` [cols] in every later fetch and
  // disables direct() for that table. Clearing restores the file's rows.
  Status set_override(int64_t t, int64_t row, const float* values);
  void clear_overrides();
  size_t n_overrides() const { return overrides_.size(); }

  StoreStats stats() const;
  void reset_stats();
  // Bytes this store holds in memory: the tables (ram), the row cache (disk),
  // 0 for mmap (pages belong to the page cache).
  virtual int64_t resident_bytes() const = 0;
  // Asks the kernel to drop the file's pages from the page cache (for cold
  // start measurements); also empties the disk tier's row cache.
  virtual Status drop_caches();

 protected:
  TableStore(TableFileLayout layout, Tier tier) : layout_(std::move(layout)), tier_(tier) {}
  // Fills dst as fetch() does, without overrides; ids already checked.
  virtual Status fetch_rows(const int32_t* ids, int64_t n, float* const* dst) = 0;
  // Base of table t in memory in the file's dtype when resident or mapped.
  virtual const std::byte* in_memory(int64_t t) const { return nullptr; }

  // Widens (BF16) or dequantizes (Q8) one stored row into F32.
  void widen_row(float* dst, const std::byte* src) const;

  TableFileLayout layout_;
  Tier tier_;
  std::atomic<int64_t> rows_requested_{0}, cache_hits_{0}, bytes_read_{0}, reads_{0};

 private:
  std::mutex fetch_mu_;  // one fetch at a time (see Threading)
  std::map<std::pair<int64_t, int64_t>, std::vector<float>> overrides_;  // (table, row) -> [cols]
  std::vector<int> overridden_tables_;  // [M] count of overrides per table
};

}  // namespace stem::memory
