// Signals without handlers. No signal handler may ever run on a thread that
// can be inside oneDNN: its JIT F32 GEMM kernels point the stack pointer into a
// heap workspace, so a signal frame pushed while one runs is written onto the
// heap ("corrupted size vs. prev_size", oneDNN issue #4845; Debian 12's oneDNN
// has the defect). stem therefore installs no handler at all: the signals it
// acts on are blocked in every thread and received by one dedicated thread
// with sigwaitinfo(2), which never runs a kernel.
//
//   install_signal_receiver()  first thing in main(), before any thread exists
//                              (every later thread inherits the blocked mask);
//   StopRequest                armed by work that can stop cleanly (training,
//                              a server): the first SIGINT/SIGTERM/SIGHUP sets
//                              it; a second one, or any while nothing is armed,
//                              ends the process by that signal's default
//                              action, as if stem had no policy at all.
// SIGPIPE is ignored (SIG_IGN runs no code in the process): a write to a closed
// pipe or socket returns EPIPE to whoever wrote.
//
// It does not make system calls restartable: every read/write loop in stem
// retries EINTR and short counts itself (see io/files.h).
#pragma once

#include <atomic>
#include <string>

#include "stem/status.h"

namespace stem {

// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread, ignores SIGPIPE and
// starts the receiving thread. Call it before any other thread exists: an
// error names how many already run (their masks cannot be changed from here).
// Idempotent: a second call does nothing.
Status install_signal_receiver();
bool signal_receiver_installed();
// "SIGINT", "SIGTERM", "SIGHUP", else "signal N".
std::string signal_name(int sig);

// A request to stop, set by the receiving thread. At most one is armed at a
// time (the newest wins); it is disarmed when destroyed. Without
// install_signal_receiver() nothing ever sets it (signals keep their default
// actions).
class StopRequest;
// What the receiving thread does with a signal: sets the armed request, or
// ends the process by the signal (nothing armed, or a request already set).
void deliver_stop_signal(int sig);

class StopRequest {
 public:
  StopRequest();
  ~StopRequest();
  StopRequest(const StopRequest&) = delete;
  StopRequest& operator=(const StopRequest&) = delete;

  bool requested() const { return flag_.load(std::memory_order_acquire); }
  int signal() const { return signal_.load(std::memory_order_acquire); }  // 0 if none yet
  // The flag itself, for loops that poll an atomic (train::Trainer::run).
  const std::atomic<bool>& flag() const { return flag_; }
  // Forget a request that was handled: the next signal sets it again instead
  // of ending the process.
  void clear();

 private:
  friend void deliver_stop_signal(int sig);
  std::atomic<bool> flag_{false};
  std::atomic<int> signal_{0};
};

// For front ends that do not own the process (the Python module): while one
// lives, SIGINT/SIGTERM/SIGHUP are blocked in the calling thread, so the host's
// handlers (Python's) cannot run on it while it computes, and threads it
// starts meanwhile (OpenMP workers, prefetchers) inherit the block for good.
// A signal that arrives stays pending, and is delivered to the host when the
// guard is gone; pending() lets a long loop notice it and stop cleanly.
class SignalsDeferred {
 public:
  SignalsDeferred();
  ~SignalsDeferred();
  SignalsDeferred(const SignalsDeferred&) = delete;
  SignalsDeferred& operator=(const SignalsDeferred&) = delete;
  // SIGINT, SIGTERM or SIGHUP is pending (0 if none).
  static int pending();

 private:
  unsigned long long old_[16];  // the thread's previous mask (a sigset_t)
};

}  // namespace stem
