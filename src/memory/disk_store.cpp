// Disk tier (see disk_store.h). Invariants of the row cache: slot_of_ maps an
// id to the slot holding its M rows; the slots in use form one list from most
// (head_) to least (tail_) recently used; a full cache evicts the tail.
#include "memory/disk_store.h"

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_map>

#include "core/buffer.h"
#include "core/check.h"

namespace stem::memory {
namespace {

struct ReadRequest {
  uint64_t offset = 0;
  size_t len = 0;
  std::byte* dst = nullptr;
};

class DiskStore final : public TableStore {
 public:
  static Result<std::unique_ptr<TableStore>> open(const TableFileLayout& l, const StoreOptions& opt) {
    std::unique_ptr<DiskStore> s(new DiskStore(l));
    s->fd_ = ::open(l.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (s->fd_ < 0) return Status::error("tables: " + l.path + ": " + std::strerror(errno));
    const int64_t M = l.n_tables();
    s->entry_bytes_ = core::align_up(static_cast<size_t>(M) * l.row_bytes());
    s->cap_ = static_cast<int64_t>(static_cast<size_t>(opt.cache_bytes) / s->entry_bytes_);
    s->cache_.resize(static_cast<size_t>(s->cap_) * s->entry_bytes_);
    s->id_of_.assign(s->cap_, -1);
    s->prev_.assign(s->cap_, -1);
    s->next_.assign(s->cap_, -1);
    s->slot_of_.reserve(static_cast<size_t>(s->cap_) * 2);
    s->depth_ = std::max(1, opt.io_depth);
    s->batch_.resize(static_cast<size_t>(s->depth_) * s->entry_bytes_);
    // Enough submission slots for one batch of ids in either packing.
    const unsigned entries = static_cast<unsigned>(std::min<int64_t>(4096, s->depth_ * (l.row_major() ? 1 : M)));
    s->uring_ = io_uring_queue_init(entries, &s->ring_, 0) == 0;
    s->ring_entries_ = entries;
    return std::unique_ptr<TableStore>(std::move(s));
  }

  ~DiskStore() override {
    if (uring_) io_uring_queue_exit(&ring_);
    if (fd_ >= 0) ::close(fd_);
  }

  // The rows the cache holds now (its budget is address space until filled)
  // and the read batch.
  int64_t resident_bytes() const override {
    return used_ * static_cast<int64_t>(entry_bytes_) + static_cast<int64_t>(batch_.size());
  }

  Status drop_caches() override {
    slot_of_.clear();
    std::fill(id_of_.begin(), id_of_.end(), -1);
    used_ = 0;
    head_ = tail_ = -1;
    return TableStore::drop_caches();
  }

 protected:
  Status fetch_rows(const int32_t* ids, int64_t n, float* const* dst) override {
    misses_.clear();
    for (int64_t i = 0; i < n; ++i) {
      auto it = cap_ > 0 ? slot_of_.find(ids[i]) : slot_of_.end();
      if (it == slot_of_.end()) {
        misses_.push_back(i);
        continue;
      }
      ++cache_hits_;
      touch(it->second);
      copy_out(dst, i, entry(it->second));
    }
    for (size_t m0 = 0; m0 < misses_.size(); m0 += depth_) {
      const size_t m1 = std::min(misses_.size(), m0 + static_cast<size_t>(depth_));
      requests_.clear();
      for (size_t k = m0; k < m1; ++k) add_requests(ids[misses_[k]], batch_.data() + (k - m0) * entry_bytes_);
      STEM_RETURN_IF_ERROR(read_all());
      for (size_t k = m0; k < m1; ++k) {
        const std::byte* e = batch_.data() + (k - m0) * entry_bytes_;
        copy_out(dst, misses_[k], e);
        if (cap_ > 0) insert(ids[misses_[k]], e);
      }
    }
    return ok_status();
  }

 private:
  explicit DiskStore(const TableFileLayout& l) : TableStore(l, Tier::Disk) {}

  std::byte* entry(int64_t slot) { return cache_.data() + static_cast<size_t>(slot) * entry_bytes_; }

  void copy_out(float* const* dst, int64_t i, const std::byte* e) const {
    for (int64_t t = 0; t < n_tables(); ++t)
      widen_row(dst[t] + i * layout_.cols, e + t * layout_.row_bytes());
  }

  // The reads that bring all M rows of `id` into e ([M][row_bytes]).
  void add_requests(int32_t id, std::byte* e) {
    const uint64_t rb = layout_.row_bytes();
    if (layout_.row_major()) {
      requests_.push_back({layout_.base[0] + id * layout_.row_stride, rb * n_tables(), e});
      return;
    }
    for (int64_t t = 0; t < n_tables(); ++t)
      requests_.push_back({layout_.base[t] + id * layout_.row_stride, rb, e + t * rb});
  }

  Status read_all() {
    reads_ += static_cast<int64_t>(requests_.size());
    for (const ReadRequest& r : requests_) bytes_read_ += static_cast<int64_t>(r.len);
    if (!uring_) {
      for (const ReadRequest& r : requests_) STEM_RETURN_IF_ERROR(pread_fully(r, 0));
      return ok_status();
    }
    for (size_t r0 = 0; r0 < requests_.size(); r0 += ring_entries_) {
      const size_t r1 = std::min(requests_.size(), r0 + ring_entries_);
      for (size_t k = r0; k < r1; ++k) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        STEM_CHECK(sqe != nullptr);
        io_uring_prep_read(sqe, fd_, requests_[k].dst, static_cast<unsigned>(requests_[k].len),
                           requests_[k].offset);
        io_uring_sqe_set_data64(sqe, k);
      }
      // Submit until every request is in (a call may take fewer, or be
      // interrupted), then reap one completion per request.
      for (size_t submitted = 0; submitted < r1 - r0;) {
        const int rc = io_uring_submit(&ring_);
        if (rc == -EINTR || rc == -EAGAIN) continue;
        if (rc < 0) return Status::error("tables: " + layout_.path + ": io_uring submit: " + std::strerror(-rc));
        submitted += static_cast<size_t>(rc);
      }
      Status st = ok_status();
      for (size_t done = 0; done < r1 - r0; ++done) {
        io_uring_cqe* cqe = nullptr;
        int rc;
        do rc = io_uring_wait_cqe(&ring_, &cqe);
        while (rc == -EINTR);
        if (rc < 0) return Status::error("tables: " + layout_.path + ": io_uring wait: " + std::strerror(-rc));
        const ReadRequest& r = requests_[io_uring_cqe_get_data64(cqe)];
        const int res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        if (!st.ok()) continue;  // drain every completion before returning
        if (res < 0)
          st = Status::error("tables: " + layout_.path + ": read of " + std::to_string(r.len) +
                             " bytes at " + std::to_string(r.offset) + " failed: " + std::strerror(-res));
        else if (static_cast<size_t>(res) < r.len)
          st = pread_fully(r, static_cast<size_t>(res));  // short read: finish synchronously
      }
      STEM_RETURN_IF_ERROR(st);
    }
    return ok_status();
  }

  Status pread_fully(const ReadRequest& r, size_t done) const {
    while (done < r.len) {
      const ssize_t got = ::pread(fd_, r.dst + done, r.len - done, static_cast<off_t>(r.offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0)
        return Status::error("tables: " + layout_.path + ": read of " + std::to_string(r.len) +
                             " bytes at " + std::to_string(r.offset) + " failed: " +
                             (got == 0 ? std::string("unexpected end of file") : std::strerror(errno)));
      done += static_cast<size_t>(got);
    }
    return ok_status();
  }

  void unlink(int64_t s) {
    if (prev_[s] >= 0) next_[prev_[s]] = next_[s]; else head_ = next_[s];
    if (next_[s] >= 0) prev_[next_[s]] = prev_[s]; else tail_ = prev_[s];
    prev_[s] = next_[s] = -1;
  }
  void push_front(int64_t s) {
    prev_[s] = -1;
    next_[s] = head_;
    if (head_ >= 0) prev_[head_] = s;
    head_ = s;
    if (tail_ < 0) tail_ = s;
  }
  void touch(int64_t s) {
    if (head_ == s) return;
    unlink(s);
    push_front(s);
  }
  void insert(int32_t id, const std::byte* e) {
    auto it = slot_of_.find(id);
    int64_t s;
    if (it != slot_of_.end()) {
      s = it->second;
      touch(s);
    } else {
      if (used_ < cap_) {
        s = used_++;
      } else {
        s = tail_;
        unlink(s);
        slot_of_.erase(id_of_[s]);
      }
      id_of_[s] = id;
      slot_of_[id] = static_cast<int32_t>(s);
      push_front(s);
    }
    std::memcpy(entry(s), e, static_cast<size_t>(n_tables()) * layout_.row_bytes());
  }

  int fd_ = -1;
  bool uring_ = false;
  io_uring ring_{};
  size_t ring_entries_ = 0;
  int depth_ = 1;
  size_t entry_bytes_ = 0;           // one id's M rows, padded to 64 bytes
  int64_t cap_ = 0, used_ = 0;       // cache entries: budget and in use
  core::AlignedBuffer cache_;        // [cap_, entry_bytes_]
  core::AlignedBuffer batch_;        // [depth_, entry_bytes_] reads land here first
  std::unordered_map<int32_t, int32_t> slot_of_;  // id -> slot
  std::vector<int32_t> id_of_;       // [cap_] slot -> id
  std::vector<int64_t> prev_, next_; // [cap_] LRU list links
  int64_t head_ = -1, tail_ = -1;
  std::vector<int64_t> misses_;      // positions of this fetch not in the cache
  std::vector<ReadRequest> requests_;
};

}  // namespace

Result<std::unique_ptr<TableStore>> open_disk_store(const TableFileLayout& l, const StoreOptions& opt) {
  return DiskStore::open(l, opt);
}

}  // namespace stem::memory
