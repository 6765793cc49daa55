// The shared half of TableStore (see table_store.h): layout checks, overrides,
// counters, widening, and the ram and mmap tiers. The disk tier, with its row
// cache and reader, lives in disk_store.cpp.
#include "memory/table_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/bf16.h"
#include "core/buffer.h"
#include "core/check.h"
#include "kernels/infer_kernels.h"
#include "memory/disk_store.h"

namespace stem::memory {

const char* tier_name(Tier t) {
  switch (t) {
    case Tier::Ram: return "ram";
    case Tier::Mmap: return "mmap";
    case Tier::Disk: return "disk";
  }
  return "?";
}

bool TableFileLayout::row_major() const {
  const uint64_t rb = row_bytes();
  for (int64_t t = 0; t < n_tables(); ++t)
    if (base[t] != base[0] + static_cast<uint64_t>(t) * rb) return false;
  return row_stride == static_cast<uint64_t>(n_tables()) * rb;
}

TableStore::~TableStore() = default;

void TableStore::widen_row(float* dst, const std::byte* src) const {
  if (layout_.dtype == DType::F32) {
    std::memcpy(dst, src, layout_.row_bytes());
    return;
  }
  if (layout_.dtype == DType::Q8) {
    kernels::dequantize_q8_row(dst, reinterpret_cast<const uint8_t*>(src), layout_.cols);
    return;
  }
  const auto* b = reinterpret_cast<const uint16_t*>(src);
  for (int64_t c = 0; c < layout_.cols; ++c) dst[c] = core::bf16_to_float(b[c]);
}

Status TableStore::fetch(const int32_t* ids, int64_t n, float* const* dst) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= layout_.n_rows)
      return Status::error("tables: " + layout_.path + ": row " + std::to_string(ids[i]) +
                           " outside [0, " + std::to_string(layout_.n_rows) + ")");
  std::lock_guard<std::mutex> lock(fetch_mu_);
  rows_requested_ += n;
  STEM_RETURN_IF_ERROR(fetch_rows(ids, n, dst));
  if (!overrides_.empty()) {
    const size_t bytes = sizeof(float) * layout_.cols;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t t = 0; t < n_tables(); ++t) {
        if (!overridden_tables_[t]) continue;
        auto it = overrides_.find({t, ids[i]});
        if (it != overrides_.end()) std::memcpy(dst[t] + i * layout_.cols, it->second.data(), bytes);
      }
  }
  return ok_status();
}

const float* TableStore::direct(int64_t t) const {
  STEM_CHECK(t >= 0 && t < n_tables());
  if (layout_.dtype != DType::F32 || !layout_.table_major()) return nullptr;
  if (!overridden_tables_.empty() && overridden_tables_[t]) return nullptr;
  return reinterpret_cast<const float*>(in_memory(t));
}

Status TableStore::set_override(int64_t t, int64_t row, const float* values) {
  if (t < 0 || t >= n_tables() || row < 0 || row >= layout_.n_rows)
    return Status::error("tables: override of table " + std::to_string(t) + " row " +
                         std::to_string(row) + " outside " + std::to_string(n_tables()) +
                         " tables x " + std::to_string(layout_.n_rows) + " rows");
  if (overridden_tables_.empty()) overridden_tables_.assign(n_tables(), 0);
  auto [it, inserted] = overrides_.try_emplace({t, row});
  it->second.assign(values, values + layout_.cols);
  if (inserted) ++overridden_tables_[t];
  return ok_status();
}

void TableStore::clear_overrides() {
  overrides_.clear();
  overridden_tables_.clear();
}

StoreStats TableStore::stats() const {
  StoreStats s;
  s.rows_requested = rows_requested_.load();
  s.cache_hits = cache_hits_.load();
  s.bytes_read = bytes_read_.load();
  s.reads = reads_.load();
  return s;
}

void TableStore::reset_stats() {
  rows_requested_ = 0;
  cache_hits_ = 0;
  bytes_read_ = 0;
  reads_ = 0;
}

Status TableStore::drop_caches() {
  int fd = ::open(layout_.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::error("tables: " + layout_.path + ": " + std::strerror(errno));
  const int rc = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  if (rc != 0) return Status::error("tables: " + layout_.path + ": posix_fadvise: " + std::strerror(rc));
  return ok_status();
}

namespace {

// Shared by ram and mmap: rows are in memory, table t at mem(t).
class InMemoryStore : public TableStore {
 public:
  using TableStore::TableStore;

 protected:
  Status fetch_rows(const int32_t* ids, int64_t n, float* const* dst) override {
    const int64_t cols = layout_.cols;
    before_copy(ids, n);
    for (int64_t t = 0; t < n_tables(); ++t) {
      const std::byte* base = in_memory(t);
      for (int64_t i = 0; i < n; ++i)
        widen_row(dst[t] + i * cols, base + static_cast<uint64_t>(ids[i]) * layout_.row_stride);
    }
    bytes_read_ += n * n_tables() * static_cast<int64_t>(layout_.row_bytes());
    return ok_status();
  }
  virtual void before_copy(const int32_t* ids, int64_t n) {}
};

// Every table read into one aligned buffer, table-major, in the file's dtype.
class RamStore final : public InMemoryStore {
 public:
  static Result<std::unique_ptr<TableStore>> open(const TableFileLayout& l) {
    std::unique_ptr<RamStore> s(new RamStore(l));
    const size_t table_bytes = static_cast<size_t>(l.n_rows) * l.row_bytes();
    s->buf_.resize(table_bytes * l.n_tables());
    int fd = ::open(l.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::error("tables: " + l.path + ": " + std::strerror(errno));
    Status st = ok_status();
    for (int64_t t = 0; t < l.n_tables() && st.ok(); ++t)
      for (int64_t r = 0; r < l.n_rows && st.ok(); ++r) {
        std::byte* dst = s->buf_.data() + t * table_bytes + r * l.row_bytes();
        if (l.table_major() && r > 0) break;  // the whole table in one read below
        const size_t len = l.table_major() ? table_bytes : l.row_bytes();
        const uint64_t off = l.base[t] + static_cast<uint64_t>(r) * l.row_stride;
        size_t done = 0;
        while (done < len) {
          const ssize_t got = ::pread(fd, dst + done, len - done, static_cast<off_t>(off + done));
          if (got < 0 && errno == EINTR) continue;
          if (got <= 0) {
            st = Status::error("tables: " + l.path + ": read of table " + std::to_string(t) +
                               " at byte " + std::to_string(off + done) + " failed: " +
                               (got == 0 ? std::string("unexpected end of file") : std::strerror(errno)));
            break;
          }
          done += static_cast<size_t>(got);
        }
      }
    ::close(fd);
    STEM_RETURN_IF_ERROR(st);
    s->layout_.base.clear();
    for (int64_t t = 0; t < l.n_tables(); ++t) s->layout_.base.push_back(t * table_bytes);
    s->layout_.row_stride = l.row_bytes();  // now table-major in memory
    return std::unique_ptr<TableStore>(std::move(s));
  }
  int64_t resident_bytes() const override { return static_cast<int64_t>(buf_.size()); }

 protected:
  const std::byte* in_memory(int64_t t) const override { return buf_.data() + layout_.base[t]; }

 private:
  explicit RamStore(const TableFileLayout& l) : InMemoryStore(l, Tier::Ram) {}
  core::AlignedBuffer buf_;
};

// The file mapped read-only; rows fault in on first touch.
class MmapStore final : public InMemoryStore {
 public:
  static Result<std::unique_ptr<TableStore>> open(const TableFileLayout& l, size_t file_size) {
    std::unique_ptr<MmapStore> s(new MmapStore(l));
    int fd = ::open(l.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::error("tables: " + l.path + ": " + std::strerror(errno));
    void* p = ::mmap(nullptr, file_size, PROT_READ, MAP_SHARED, fd, 0);
    const int err = errno;
    ::close(fd);
    if (p == MAP_FAILED) return Status::error("tables: " + l.path + ": mmap: " + std::strerror(err));
    s->map_ = static_cast<std::byte*>(p);
    s->map_size_ = file_size;
    // Table-major rows are scattered: read-ahead around a faulting page mostly
    // fetches rows nobody asked for. A row-major id is one range, which the
    // kernel's read-ahead (and fetch's WILLNEED) brings in whole.
    if (!l.row_major()) ::madvise(p, file_size, MADV_RANDOM);
    return std::unique_ptr<TableStore>(std::move(s));
  }
  ~MmapStore() override {
    if (map_) ::munmap(map_, map_size_);
  }
  int64_t resident_bytes() const override { return 0; }

  // Asks the kernel to read every page the copy will touch, all at once
  // (asynchronous read-ahead of exactly those ranges), so that the copy's page
  // faults overlap instead of each waiting for its own read.
  void before_copy(const int32_t* ids, int64_t n) override {
    const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const bool one_range = layout_.row_major();
    const uint64_t len = one_range ? layout_.row_bytes() * n_tables() : layout_.row_bytes();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t t = 0; t < (one_range ? 1 : n_tables()); ++t) {
        const uintptr_t b = reinterpret_cast<uintptr_t>(in_memory(t) + static_cast<uint64_t>(ids[i]) * layout_.row_stride);
        const uintptr_t b0 = b / page * page, e = (b + len + page - 1) / page * page;
        ::madvise(reinterpret_cast<void*>(b0), e - b0, MADV_WILLNEED);
      }
  }

  Status drop_caches() override {
    // Unmap our pages first: the page cache cannot drop pages still mapped.
    ::madvise(map_, map_size_, MADV_DONTNEED);
    return TableStore::drop_caches();
  }

 protected:
  const std::byte* in_memory(int64_t t) const override { return map_ + layout_.base[t]; }

 private:
  explicit MmapStore(const TableFileLayout& l) : InMemoryStore(l, Tier::Mmap) {}
  std::byte* map_ = nullptr;
  size_t map_size_ = 0;
};

}  // namespace

Result<std::unique_ptr<TableStore>> TableStore::open(const TableFileLayout& l,
                                                     const StoreOptions& opt) {
  const std::string where = "tables: " + l.path + ": ";
  if (l.dtype != DType::F32 && l.dtype != DType::BF16 && l.dtype != DType::Q8)
    return Status::error(where + "dtype " + dtype_name(l.dtype) + " (expected F32, BF16 or Q8)");
  if (l.n_tables() < 1 || l.n_rows < 1 || l.cols < 1)
    return Status::error(where + "empty table set (" + std::to_string(l.n_tables()) + " tables of [" +
                         std::to_string(l.n_rows) + ", " + std::to_string(l.cols) + "])");
  if (l.row_stride < l.row_bytes())
    return Status::error(where + "row stride " + std::to_string(l.row_stride) +
                         " bytes is shorter than a row (" + std::to_string(l.row_bytes()) + ")");
  struct stat sb {};
  if (::stat(l.path.c_str(), &sb) != 0) return Status::error(where + std::strerror(errno));
  const uint64_t size = static_cast<uint64_t>(sb.st_size);
  for (int64_t t = 0; t < l.n_tables(); ++t) {
    const uint64_t end = l.base[t] + static_cast<uint64_t>(l.n_rows - 1) * l.row_stride + l.row_bytes();
    if (end > size)
      return Status::error(where + "table " + std::to_string(t) + " ends at byte " +
                           std::to_string(end) + ", past the end of the file (" +
                           std::to_string(size) + " bytes)");
  }
  if (opt.cache_bytes < 0) return Status::error("tables: row cache budget must be >= 0 bytes");
  switch (opt.tier) {
    case Tier::Ram: return RamStore::open(l);
    case Tier::Mmap: return MmapStore::open(l, size);
    case Tier::Disk: return open_disk_store(l, opt);
  }
  return Status::error(where + "unknown tier");
}

}  // namespace stem::memory
