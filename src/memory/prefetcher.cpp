// Prefetcher (see prefetcher.h). The worker takes Pending slots in ticket
// order; slot state changes happen under mu_, fetches run outside it, so the
// caller can submit while a fetch is in flight.
#include "memory/prefetcher.h"

#include <algorithm>

#include "core/check.h"
#include "core/timer.h"

namespace stem::memory {

Prefetcher::Prefetcher(RowSource& source, int64_t max_ids, bool async)
    : src_(source), max_ids_(max_ids), async_(async) {
  STEM_CHECK(max_ids >= 1);
  const size_t bytes = static_cast<size_t>(max_ids) * source.n_tables() * source.cols() * sizeof(float);
  for (auto& b : buf_) b.resize(bytes);
  for (int i = 0; i < 2; ++i) {
    slot_[i].ids.reserve(max_ids);
    slot_[i].staged.unique.reserve(max_ids);
    slot_[i].staged.slot_of.reserve(max_ids);
  }
  if (async_) worker_ = std::thread([this] { run(); });
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

int Prefetcher::find(Ticket t) const {
  for (int i = 0; i < 2; ++i)
    if (slot_[i].state != State::Free && slot_[i].ticket == t) return i;
  STEM_CHECKF(false, "prefetcher: ticket %lld is not outstanding", static_cast<long long>(t));
  return -1;
}

Prefetcher::Ticket Prefetcher::submit(const int32_t* ids, int64_t n) {
  STEM_CHECKF(n >= 1 && n <= max_ids_, "prefetcher: %lld ids, staging holds %lld",
              static_cast<long long>(n), static_cast<long long>(max_ids_));
  Ticket t;
  {
    std::lock_guard<std::mutex> lock(mu_);
    int free = slot_[0].state == State::Free ? 0 : slot_[1].state == State::Free ? 1 : -1;
    STEM_CHECKF(free >= 0, "prefetcher: a third set submitted while two are outstanding");
    Slot& s = slot_[free];
    s.ids.assign(ids, ids + n);
    s.ticket = t = next_ticket_++;
    s.state = State::Pending;
  }
  cv_.notify_all();
  return t;
}

Status Prefetcher::stage(Slot& s, core::AlignedBuffer& buf) {
  StagedRows& r = s.staged;
  r.unique.assign(s.ids.begin(), s.ids.end());
  std::sort(r.unique.begin(), r.unique.end());
  r.unique.erase(std::unique(r.unique.begin(), r.unique.end()), r.unique.end());
  r.slot_of.resize(s.ids.size());
  for (size_t i = 0; i < s.ids.size(); ++i)
    r.slot_of[i] = static_cast<int32_t>(std::lower_bound(r.unique.begin(), r.unique.end(), s.ids[i]) -
                                        r.unique.begin());
  const int64_t U = static_cast<int64_t>(r.unique.size()), cols = src_.cols();
  r.rows.resize(src_.n_tables());
  for (int64_t t = 0; t < src_.n_tables(); ++t) r.rows[t] = buf.as<float>() + t * max_ids_ * cols;
  core::Timer timer;
  Status st = src_.fetch(r.unique.data(), U, r.rows.data());
  const double sec = timer.seconds();
  std::lock_guard<std::mutex> lock(mu_);
  fetch_s_ += sec;
  return st;
}

void Prefetcher::run() {
  for (;;) {
    int i = -1;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stop_ || slot_[0].state == State::Pending || slot_[1].state == State::Pending;
      });
      if (stop_) return;
      // The older pending ticket first.
      if (slot_[0].state == State::Pending) i = 0;
      if (slot_[1].state == State::Pending && (i < 0 || slot_[1].ticket < slot_[0].ticket)) i = 1;
    }
    Status st = stage(slot_[i], buf_[i]);
    {
      std::lock_guard<std::mutex> lock(mu_);
      slot_[i].status = std::move(st);
      slot_[i].state = State::Ready;
    }
    cv_.notify_all();
  }
}

Result<const StagedRows*> Prefetcher::wait(Ticket t) {
  int i;
  {
    std::lock_guard<std::mutex> lock(mu_);
    i = find(t);
  }
  Slot& s = slot_[i];
  if (!async_) {
    if (s.state == State::Pending) {
      s.status = stage(s, buf_[i]);
      s.state = State::Ready;
    }
  } else {
    core::Timer timer;
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return s.state == State::Ready; });
    wait_s_ += timer.seconds();
  }
  if (!s.status.ok()) return s.status;
  return static_cast<const StagedRows*>(&s.staged);
}

void Prefetcher::release(Ticket t) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    const int i = find(t);
    // A fetch in flight still writes this buffer: let it finish first.
    if (async_) cv_.wait(lock, [&] { return slot_[i].state == State::Ready; });
    slot_[i].state = State::Free;
  }
  cv_.notify_all();
}

double Prefetcher::wait_seconds() const {
  std::lock_guard<std::mutex> lock(mu_);
  return wait_s_;
}

double Prefetcher::fetch_seconds() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fetch_s_;
}

void Prefetcher::reset_timers() {
  std::lock_guard<std::mutex> lock(mu_);
  wait_s_ = fetch_s_ = 0;
}

}  // namespace stem::memory
