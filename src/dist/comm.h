// Comm: the collectives that training across processes needs, behind one
// interface: sums over all ranks (all-reduce, reduce-scatter), rows sent to
// the ranks that own them (all-to-all-v), a broadcast, a gather to one rank
// and to all. MPI (Open
// MPI) implements it today, in comm_mpi.cpp; a process on its own gets the
// solo communicator, whose collectives are copies. NCCL belongs behind the
// same interface with the CUDA backend (device buffers, a stream).
//
// Sums are in rank order: data = ((x_0 + x_1) + x_2) + ..., whatever the
// transport's algorithm, so that N ranks' sums equal one process adding the
// same parts in turn, bit for bit (MPI: each rank's part of the buffer comes
// from every rank by all-to-all, is added in order, and goes back by
// all-gather: the bytes of a ring all-reduce).
//
// Every call is collective: all ranks make the same calls in the same order.
// A failure (a rank that died, a transport error) is returned as a Status
// naming the operation; MPI is set to return errors, not abort, so the caller
// can report it. Counts are in elements of the call's type, per rank.
// Thread-safety: one thread per process makes the calls (MPI_THREAD_FUNNELED).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "stem/status.h"

namespace stem::dist {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "solo", "mpi"

  // In place: data[i] = the sum over ranks of data[i].
  virtual Status all_reduce_sum(float* data, int64_t n) = 0;
  virtual Status all_reduce_sum(double* data, int64_t n) = 0;
  // In place: data[i] = the maximum over ranks.
  virtual Status all_reduce_max(int32_t* data, int64_t n) = 0;
  // Bytes: send_counts[p] bytes from send (consecutive by rank) go to rank p;
  // recv_counts[p] bytes from rank p land in recv, consecutive by rank. Both
  // sides know the counts (the caller computes them).
  virtual Status all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                              const std::vector<int64_t>& recv_counts) = 0;
  virtual Status broadcast(void* data, int64_t bytes, int root) = 0;
  // Bytes: each rank's `bytes` from send land at root in rank order
  // (recv_counts[p] bytes from rank p; recv and recv_counts used at root only).
  virtual Status gather_v(const void* send, int64_t bytes, void* recv, const std::vector<int64_t>& recv_counts,
                          int root) = 0;
  // Bytes: each rank's `bytes` land in every rank's recv, in rank order
  // (counts[p] bytes from rank p). send == nullptr: in place, this rank's
  // part already at its offset in recv.
  virtual Status all_gather_v(const void* send, int64_t bytes, void* recv, const std::vector<int64_t>& counts) = 0;
  virtual Status barrier() = 0;

  // Non-blocking sums, for communication that overlaps computation: starts
  // data[i] = the sum over ranks of data[i] and returns at once; data must
  // not be touched until wait_all() has returned. Started sums count as
  // collectives in the order they are started. progress() lets started sums
  // advance (MPI moves them only inside its calls); wait_all() finishes every
  // started one.
  virtual Status start_all_reduce_sum(float* data, int64_t n) = 0;
  // Non-blocking, like the sum above: send holds sum(counts) elements; recv
  // gets this rank's part of their sum over ranks, counts[rank] elements at
  // send offset counts[0] + ... + counts[rank - 1]. Neither buffer may be
  // touched until wait_all() has returned.
  virtual Status start_reduce_scatter_sum(const float* send, float* recv, const std::vector<int64_t>& counts) = 0;
  // Non-blocking all_to_all_v: the same bytes, and neither buffer may be
  // touched until wait_all() has returned.
  virtual Status start_all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                                    const std::vector<int64_t>& recv_counts) = 0;
  virtual void progress() {}
  virtual Status wait_all() = 0;

  // Bytes this rank has sent to other ranks so far; a collective's share is
  // counted as its algorithm-independent volume (all-reduce: 2 (N-1)/N of
  // the buffer; reduce-scatter and all-gather: (N-1)/N of the whole buffer).
  int64_t bytes_sent() const { return bytes_sent_; }

 protected:
  int64_t bytes_sent_ = 0;
};

// A process on its own: rank 0 of 1.
std::unique_ptr<Comm> solo_comm();

// The world of this process: MPI's when it was started by an MPI launcher
// (mpirun sets OMPI_COMM_WORLD_SIZE or PMI/PMIX variables) and stem was built
// with MPI, else solo. Launched under mpirun without MPI support is an error
// that says so. MPI is initialised on the first call and finalised at exit.
Result<Comm*> world();

// True when the environment says an MPI launcher started this process.
bool launched_by_mpi();

// Ends every rank at once (MPI_Abort) when this process is one of several,
// so that ranks waiting in a collective for this one do not hang; returns
// (does nothing) otherwise.
void abort_world(int code);

}  // namespace stem::dist
