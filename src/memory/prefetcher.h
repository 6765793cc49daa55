// Prefetcher: stages the deduplicated rows of a set of ids, for every table of
// a RowSource (a TableStore, a RowFile), on a background thread, so that a step's rows are fetched
// while the previous step (or the layers before the first table) computes.
//
// Two staging buffers (double buffering): a caller submits the ids of step
// i+1 while it still reads step i's rows. A buffer is refilled only after its
// reader released it; submitting a third set while two are outstanding is a
// bug (checked), so the protocol can never deadlock:
//     t0 = submit(ids0)                      // e.g. the prompt's first chunk
//     loop: t1 = submit(next ids) ... rows = wait(t0) ... compute ... release(t0)
// With async = false (prefetch off) the same calls fetch synchronously inside
// wait(), on the caller's thread: identical rows, nothing overlapped.
//
// Errors of the background fetch (an I/O error) are returned by wait() to the
// thread that waits; the worker never exits the process.
// Thread-safety: one caller thread drives submit/wait/release; the worker is
// internal. It knows nothing of models: ids in, rows out.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "core/buffer.h"
#include "memory/row_source.h"

namespace stem::memory {

// The rows of one submitted set of n ids.
struct StagedRows {
  std::vector<int32_t> unique;   // [U] distinct ids, ascending
  std::vector<int32_t> slot_of;  // [n] position i -> its id's index in unique
  std::vector<float*> rows;      // [M] table t's rows [U, cols], row k for unique[k]
};

class Prefetcher {
 public:
  using Ticket = int64_t;

  // Staging for up to max_ids ids a submit (two buffers of max_ids x M x cols
  // floats). The source must outlive the prefetcher.
  Prefetcher(RowSource& source, int64_t max_ids, bool async);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Starts staging ids[0..n) (1 <= n <= max_ids; copied, so the caller's array
  // may change at once). At most two tickets may be outstanding.
  Ticket submit(const int32_t* ids, int64_t n);
  // Blocks until ticket t's rows are staged; the fetch's error if it failed.
  // The rows stay valid until release(t).
  Result<const StagedRows*> wait(Ticket t);
  void release(Ticket t);

  bool async() const { return async_; }
  int64_t max_ids() const { return max_ids_; }
  RowSource& source() { return src_; }
  // Seconds wait() spent blocked on the worker (0 when not async: the fetch
  // time is then fetch_seconds()).
  double wait_seconds() const;
  double fetch_seconds() const;  // time inside source fetches, either thread
  void reset_timers();
  int64_t staging_bytes() const { return static_cast<int64_t>(buf_[0].size() + buf_[1].size()); }

 private:
  enum class State { Free, Pending, Ready };
  struct Slot {
    State state = State::Free;
    Ticket ticket = -1;
    std::vector<int32_t> ids;  // as submitted
    StagedRows staged;
    Status status;
  };
  void run();                  // worker loop
  Status stage(Slot& s, core::AlignedBuffer& buf);  // dedup + fetch
  int find(Ticket t) const;    // slot index; checked

  RowSource& src_;
  const int64_t max_ids_;
  const bool async_;
  core::AlignedBuffer buf_[2];  // [max_ids, M, cols] floats each
  Slot slot_[2];
  Ticket next_ticket_ = 0;
  double wait_s_ = 0, fetch_s_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace stem::memory
