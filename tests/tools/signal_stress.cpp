// signal_stress: oneDNN GEMMs on every OpenMP thread while signals arrive, the
// situation in which a signal handler corrupts the heap (oneDNN issue #4845).
//   signal_stress receiver N   signals received by stem's sigwait thread
//                              (stem/signals.h), the way every stem process runs
//   signal_stress handler N    a plain sigaction handler that sets a flag (what
//                              stem did before; expect "corrupted size vs.
//                              prev_size" aborts within a few hundred signals)
// After each signal it has seen, it writes one byte to stdout and goes on
// computing; the sender (tests/test_signals.cpp) waits for that byte before it
// sends the next, so signals never pile up; it writes one byte first, once it
// is ready. Exits 0 after N signals.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "stem/signals.h"
#include "kernels/kernels.h"

namespace {
std::atomic<bool> g_flag{false};
void on_signal(int) { g_flag.store(true); }
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || (std::strcmp(argv[1], "receiver") != 0 && std::strcmp(argv[1], "handler") != 0)) {
    std::fprintf(stderr, "usage: signal_stress receiver|handler N\n");
    return 2;
  }
  const bool receiver = std::strcmp(argv[1], "receiver") == 0;
  const int n = std::atoi(argv[2]);
  if (receiver) {
    if (stem::Status st = stem::install_signal_receiver(); !st.ok()) {
      std::fprintf(stderr, "signal_stress: %s\n", st.message().c_str());
      return 1;
    }
  } else {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
  }
  stem::StopRequest stop;
  if (::write(STDOUT_FILENO, "r", 1) != 1) return 3;  // ready: signals are handled from here on
  const int64_t m = 384;
  std::vector<float> a(m * m, 0.5f), b(m * m, 0.25f), c(m * m, 0.0f);
  for (int seen = 0; seen < n;) {
    stem::kernels::gemm(false, true, m, m, m, 1.0f, a.data(), m, b.data(), m, 0.0f, c.data(), m);
    const bool got = receiver ? stop.requested() : g_flag.load();
    if (!got) continue;
    if (receiver) stop.clear();
    else g_flag.store(false);
    ++seen;
    if (::write(STDOUT_FILENO, "k", 1) != 1) return 3;
  }
  return c[0] == static_cast<float>(m) * 0.125f ? 0 : 4;
}
