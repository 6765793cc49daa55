// The signal receiver (see signals.h): one thread in sigwaitinfo, no handlers.
#include "stem/signals.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>

namespace stem {
namespace {

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};

std::mutex g_mu;                  // guards g_armed against a StopRequest going away
StopRequest* g_armed = nullptr;   // the request the next signal sets
std::atomic<bool> g_installed{false};

sigset_t handled_set() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kSignals) sigaddset(&set, s);
  return set;
}

int64_t thread_count() {
  std::error_code ec;
  int64_t n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/task", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return ec ? 1 : n;
}

// Ends the process as the signal's default action would (the exit status a
// shell sees is "killed by SIG"), from the receiving thread.
[[noreturn]] void die_by(int sig) {
  ::signal(sig, SIG_DFL);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  ::pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
  ::raise(sig);
  ::_exit(128 + sig);  // not reached unless the default action is to ignore
}

void receive_loop() {
  const sigset_t set = handled_set();
  for (;;) {
    siginfo_t info;
    const int sig = ::sigwaitinfo(&set, &info);
    if (sig < 0) continue;  // EINTR (a stop/continue): wait again
    deliver_stop_signal(sig);
  }
}

}  // namespace

void deliver_stop_signal(int sig) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_armed && !g_armed->requested()) {
      g_armed->signal_.store(sig, std::memory_order_release);
      g_armed->flag_.store(true, std::memory_order_release);
      return;
    }
  }
  die_by(sig);
}

Status install_signal_receiver() {
  if (g_installed.load()) return ok_status();
  const int64_t threads = thread_count();
  if (threads > 1)
    return Status::error("signals: " + std::to_string(threads - 1) +
                         " other threads already run; the receiver must be installed before any thread starts "
                         "(their signal masks cannot be changed from here)");
  const sigset_t set = handled_set();
  if (int e = ::pthread_sigmask(SIG_BLOCK, &set, nullptr); e != 0)
    return Status::error(std::string("signals: pthread_sigmask: ") + std::strerror(e));
  ::signal(SIGPIPE, SIG_IGN);
  std::thread(receive_loop).detach();
  g_installed.store(true);
  return ok_status();
}

bool signal_receiver_installed() { return g_installed.load(); }

SignalsDeferred::SignalsDeferred() {
  static_assert(sizeof(old_) >= sizeof(sigset_t));
  const sigset_t set = handled_set();
  ::pthread_sigmask(SIG_BLOCK, &set, reinterpret_cast<sigset_t*>(old_));
}

SignalsDeferred::~SignalsDeferred() { ::pthread_sigmask(SIG_SETMASK, reinterpret_cast<sigset_t*>(old_), nullptr); }

int SignalsDeferred::pending() {
  sigset_t p;
  sigemptyset(&p);
  if (::sigpending(&p) != 0) return 0;
  for (int s : kSignals)
    if (sigismember(&p, s)) return s;
  return 0;
}

std::string signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return "signal " + std::to_string(sig);
  }
}

StopRequest::StopRequest() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_armed = this;
}

StopRequest::~StopRequest() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_armed == this) g_armed = nullptr;
}

void StopRequest::clear() {
  std::lock_guard<std::mutex> lock(g_mu);
  signal_.store(0, std::memory_order_release);
  flag_.store(false, std::memory_order_release);
}

}  // namespace stem
