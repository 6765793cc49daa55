// Comm over MPI (see comm.h): MPI_COMM_WORLD, initialised once with
// MPI_THREAD_FUNNELED (only the training thread communicates), errors
// returned rather than aborting so that each failure is reported with the
// operation it hit; finalised at exit. Sums are added here in rank order
// (all-to-all, ordered add, all-gather), never by MPI_SUM, whose order
// depends on the algorithm. Compiled only when CMake finds MPI.
#define OMPI_SKIP_MPICXX 1  // the C API only (no deprecated C++ bindings)
#include <mpi.h>

#include <algorithm>
#include <array>
#include <climits>
#include <list>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "dist/comm.h"

namespace stem::dist {
namespace {

Status check(int rc, const char* op) {
  if (rc == MPI_SUCCESS) return ok_status();
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return Status::error("comm mpi: " + std::string(op) + " failed on rank " + std::to_string(rank) + ": " +
                       std::string(msg, static_cast<size_t>(len)) + " (did another rank die?)");
}

// MPI counts are int: every count and displacement must fit.
Status int_counts(const std::vector<int64_t>& c, std::vector<int>* counts, std::vector<int>* displs,
                  const char* op) {
  counts->resize(c.size());
  displs->resize(c.size());
  int64_t at = 0;
  for (size_t p = 0; p < c.size(); ++p) {
    if (c[p] < 0 || c[p] > INT_MAX || at > INT_MAX)
      return Status::error(std::string("comm mpi: ") + op + ": a message of " + std::to_string(c[p]) +
                           " bytes at offset " + std::to_string(at) + " exceeds MPI's int counts");
    (*counts)[p] = static_cast<int>(c[p]);
    (*displs)[p] = static_cast<int>(at);
    at += c[p];
  }
  return ok_status();
}

class MpiComm final : public Comm {
 public:
  MpiComm() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm_dup(MPI_COMM_WORLD, &gather_comm_);  // inherits MPI_ERRORS_RETURN
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  Status all_reduce_sum(float* data, int64_t n) override { return ordered_all_reduce(data, n, MPI_FLOAT); }
  Status all_reduce_sum(double* data, int64_t n) override { return ordered_all_reduce(data, n, MPI_DOUBLE); }
  Status all_reduce_max(int32_t* data, int64_t n) override { return all_reduce(data, n, MPI_INT32_T, MPI_MAX, 4); }

  Status all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                      const std::vector<int64_t>& recv_counts) override {
    return alltoallv(send, send_counts, recv, recv_counts, false);
  }
  Status start_all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                            const std::vector<int64_t>& recv_counts) override {
    return alltoallv(send, send_counts, recv, recv_counts, true);
  }

  Status broadcast(void* data, int64_t bytes, int root) override {
    if (bytes > INT_MAX) return Status::error("comm mpi: broadcast of " + std::to_string(bytes) + " bytes");
    if (rank_ == root) bytes_sent_ += bytes * (size_ - 1);
    return check(MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
  }

  Status gather_v(const void* send, int64_t bytes, void* recv, const std::vector<int64_t>& recv_counts,
                  int root) override {
    if (bytes > INT_MAX) return Status::error("comm mpi: gather of " + std::to_string(bytes) + " bytes");
    std::vector<int> rc, rd;
    if (rank_ == root) {
      if (static_cast<int>(recv_counts.size()) != size_) return Status::error("comm mpi: gather_v needs a count per rank");
      STEM_RETURN_IF_ERROR(int_counts(recv_counts, &rc, &rd, "gather_v"));
    } else {
      bytes_sent_ += bytes;
    }
    return check(MPI_Gatherv(send, static_cast<int>(bytes), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE, root,
                             MPI_COMM_WORLD),
                 "gather_v");
  }

  Status all_gather_v(const void* send, int64_t bytes, void* recv, const std::vector<int64_t>& counts) override {
    if (static_cast<int>(counts.size()) != size_) return Status::error("comm mpi: all_gather_v needs a count per rank");
    if (bytes > INT_MAX || bytes != counts[rank_])
      return Status::error("comm mpi: all_gather_v of " + std::to_string(bytes) + " bytes");
    std::vector<int> rc, rd;
    STEM_RETURN_IF_ERROR(int_counts(counts, &rc, &rd, "all_gather_v"));
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    bytes_sent_ += total * (size_ - 1) / size_;
    return check(MPI_Allgatherv(send ? send : MPI_IN_PLACE, static_cast<int>(bytes), MPI_BYTE, recv, rc.data(),
                                rd.data(), MPI_BYTE, MPI_COMM_WORLD),
                 "all_gather_v");
  }

  Status barrier() override { return check(MPI_Barrier(MPI_COMM_WORLD), "barrier"); }

  Status start_all_reduce_sum(float* data, int64_t n) override {
    STEM_RETURN_IF_ERROR(start_sum(data, data, even_counts(n), data, true, "start_all_reduce"));
    bytes_sent_ += 2 * n * 4 * (size_ - 1) / size_;
    return ok_status();
  }

  Status start_reduce_scatter_sum(const float* send, float* recv, const std::vector<int64_t>& counts) override {
    if (static_cast<int>(counts.size()) != size_)
      return Status::error("comm mpi: reduce_scatter needs a count per rank");
    STEM_RETURN_IF_ERROR(start_sum(send, recv, counts, nullptr, false, "start_reduce_scatter"));
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    bytes_sent_ += total * 4 * (size_ - 1) / size_;
    return ok_status();
  }

  void progress() override {
    if (!pending_.empty()) {
      int done = 0;
      MPI_Testall(static_cast<int>(pending_.size()), pending_.data(), &done, MPI_STATUSES_IGNORE);
    }
    // The sums whose chunks have all arrived, in the order they started (so
    // that every rank starts their all-gathers in one order).
    for (Sum& x : sums_) {
      if (x.phase != 0) continue;
      int arrived = 0;
      if (const int rc = MPI_Test(&x.req, &arrived, MPI_STATUS_IGNORE); rc != MPI_SUCCESS) {
        if (deferred_.ok()) deferred_ = check(rc, "progress");
        return;
      }
      if (!arrived) return;
      if (const Status s = finish_chunks(x); !s.ok() && deferred_.ok()) deferred_ = s;
    }
  }

  Status wait_all() override {
    Status s = pending_.empty() ? ok_status()
                                : check(MPI_Waitall(static_cast<int>(pending_.size()), pending_.data(),
                                                    MPI_STATUSES_IGNORE),
                                        "wait_all");
    for (Sum& x : sums_) {
      if (s.ok() && x.phase == 0) s = check(MPI_Wait(&x.req, MPI_STATUS_IGNORE), "wait_all");
      if (s.ok() && x.phase == 0) s = finish_chunks(x);
    }
    for (Sum& x : sums_)
      if (s.ok() && x.phase == 1) s = check(MPI_Wait(&x.req, MPI_STATUS_IGNORE), "wait_all");
    if (s.ok()) s = deferred_;
    pending_.clear();
    counts_.clear();
    sums_.clear();
    deferred_ = ok_status();
    return s;
  }

 private:
  // A sum in flight, in rank order: every rank's chunk of this rank's part
  // arrives by all-to-all (phase 0), is added here as x_0 + x_1 + ... and,
  // for an all-reduce, goes back to every rank by an all-gather (phase 1).
  struct Sum {
    float* out;                        // this rank's part of the sum
    float* gather;                     // all-reduce: the whole buffer; else null
    int64_t part;                      // this rank's part: elements
    std::vector<int> sc, sd, rc, rd;   // the all-to-all's counts and displacements, elements
    std::vector<int> gc, gd;           // the all-gather's
    std::vector<float> staged;         // [size * part] the ranks' chunks, in rank order
    MPI_Request req = MPI_REQUEST_NULL;
    int phase = 0;
  };

  // n split in size_ parts, the first n % size_ one longer.
  std::vector<int64_t> even_counts(int64_t n) const {
    std::vector<int64_t> c(size_);
    for (int p = 0; p < size_; ++p) c[p] = n / size_ + (p < n % size_ ? 1 : 0);
    return c;
  }

  Status start_sum(const float* send, float* out_base, const std::vector<int64_t>& counts, float* gather,
                   bool all_reduce, const char* op) {
    Sum& x = sums_.emplace_back();
    STEM_RETURN_IF_ERROR(int_counts(counts, &x.sc, &x.sd, op));
    x.part = counts[rank_];
    x.out = all_reduce ? out_base + x.sd[rank_] : out_base;
    x.gather = gather;
    if (all_reduce) x.gc = x.sc, x.gd = x.sd;
    x.rc.assign(size_, static_cast<int>(x.part));
    x.rd.resize(size_);
    for (int p = 0; p < size_; ++p) x.rd[p] = static_cast<int>(p * x.part);
    x.staged.resize(static_cast<size_t>(size_ * x.part));
    return check(MPI_Ialltoallv(send, x.sc.data(), x.sd.data(), MPI_FLOAT, x.staged.data(), x.rc.data(),
                                x.rd.data(), MPI_FLOAT, MPI_COMM_WORLD, &x.req),
                 op);
  }

  // Phase 0 done: the ranks' chunks added in rank order; an all-reduce's
  // all-gather started (on its own communicator, in start order).
  Status finish_chunks(Sum& x) {
    ordered_sum(x.out, x.staged.data(), x.part, size_);
    if (!x.gather) {
      x.phase = 2;
      return ok_status();
    }
    x.phase = 1;
    return check(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, x.gather, x.gc.data(), x.gd.data(), MPI_FLOAT,
                                 gather_comm_, &x.req),
                 "all-gather of a sum");
  }

  // out = x_0 + x_1 + ... + x_{size-1}, each added in turn, x_r = staged[r * n, (r + 1) * n).
  template <class T>
  static void ordered_sum(T* out, const T* staged, int64_t n, int size) {
    std::copy(staged, staged + n, out);
    for (int r = 1; r < size; ++r)
      for (int64_t i = 0; i < n; ++i) out[i] += staged[r * n + i];
  }

  // The blocking sum, in rank order as above.
  template <class T>
  Status ordered_all_reduce(T* data, int64_t n, MPI_Datatype type) {
    const std::vector<int64_t> counts = even_counts(n);
    std::vector<int> c, d, rc(size_, static_cast<int>(counts[rank_])), rd(size_);
    STEM_RETURN_IF_ERROR(int_counts(counts, &c, &d, "all_reduce"));
    for (int p = 0; p < size_; ++p) rd[p] = p * rc[p];
    std::vector<T> staged(static_cast<size_t>(size_ * counts[rank_]));
    STEM_RETURN_IF_ERROR(check(MPI_Alltoallv(data, c.data(), d.data(), type, staged.data(), rc.data(), rd.data(),
                                             type, MPI_COMM_WORLD),
                               "all_reduce"));
    ordered_sum(data + d[rank_], staged.data(), counts[rank_], size_);
    STEM_RETURN_IF_ERROR(check(
        MPI_Allgatherv(MPI_IN_PLACE, 0, type, data, c.data(), d.data(), type, MPI_COMM_WORLD), "all_reduce"));
    bytes_sent_ += 2 * n * static_cast<int64_t>(sizeof(T)) * (size_ - 1) / size_;
    return ok_status();
  }

  Status alltoallv(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                   const std::vector<int64_t>& recv_counts, bool start) {
    if (static_cast<int>(send_counts.size()) != size_ || static_cast<int>(recv_counts.size()) != size_)
      return Status::error("comm mpi: all_to_all_v needs a count per rank");
    std::vector<int> sc, sd, rc, rd;
    STEM_RETURN_IF_ERROR(int_counts(send_counts, &sc, &sd, "all_to_all_v"));
    STEM_RETURN_IF_ERROR(int_counts(recv_counts, &rc, &rd, "all_to_all_v"));
    for (int p = 0; p < size_; ++p)
      if (p != rank_) bytes_sent_ += send_counts[p];
    if (!start)
      return check(MPI_Alltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE,
                                 MPI_COMM_WORLD),
                   "all_to_all_v");
    // The count arrays must live until the operation ends.
    auto& keep = counts_.emplace_back();
    keep = {std::move(sc), std::move(sd), std::move(rc), std::move(rd)};
    MPI_Request req;
    STEM_RETURN_IF_ERROR(check(MPI_Ialltoallv(send, keep[0].data(), keep[1].data(), MPI_BYTE, recv, keep[2].data(),
                                              keep[3].data(), MPI_BYTE, MPI_COMM_WORLD, &req),
                               "start_all_to_all_v"));
    pending_.push_back(req);
    return ok_status();
  }

  Status all_reduce(void* data, int64_t n, MPI_Datatype type, MPI_Op op, int64_t elem, const char* what = "all_reduce") {
    // In pieces of at most INT_MAX elements.
    auto* p = static_cast<char*>(data);
    for (int64_t at = 0; at < n;) {
      const int64_t k = std::min<int64_t>(n - at, INT_MAX);
      STEM_RETURN_IF_ERROR(
          check(MPI_Allreduce(MPI_IN_PLACE, p + at * elem, static_cast<int>(k), type, op, MPI_COMM_WORLD), what));
      at += k;
    }
    bytes_sent_ += 2 * n * elem * (size_ - 1) / size_;
    return ok_status();
  }
  int rank_ = 0, size_ = 1;
  std::vector<MPI_Request> pending_;  // started non-blocking operations
  std::list<std::array<std::vector<int>, 4>> counts_;  // the count arrays of started operations
  std::list<Sum> sums_;                                 // started sums, in start order
  Status deferred_;                                     // a failure in progress(), for wait_all()
  MPI_Comm gather_comm_ = MPI_COMM_NULL;                // the sums' all-gathers (their own call order)
};

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

Result<Comm*> world() {
  static std::once_flag once;
  static std::unique_ptr<Comm> comm;
  static Status init;
  std::call_once(once, [] {
    if (!launched_by_mpi()) {
      comm = solo_comm();
      return;
    }
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      init = Status::error("comm mpi: MPI_Init_thread failed");
      return;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    std::atexit(finalize_at_exit);
    comm = std::make_unique<MpiComm>();
  });
  STEM_RETURN_IF_ERROR(init);
  return comm.get();
}

void abort_world(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
}

}  // namespace stem::dist
