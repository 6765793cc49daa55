// Signals (stem/signals.h): no stem process runs a signal handler, because a
// handler that runs while a thread is inside oneDNN's JIT GEMM corrupts the
// heap (oneDNN issue #4845). Checked three ways:
//   - a running `stem train` has no handler for SIGINT/SIGTERM/SIGHUP and
//     every one of its threads blocks them (/proc);
//   - GEMMs on every thread under a storm of signals, received the stem way,
//     never abort;
//   - training runs (tables in RAM, on disk with and without prefetch)
//     interrupted by SIGINT or SIGTERM at random moments (forward, backward,
//     optimizer, validation, checkpoint writes) each exit 130/143 with their
//     message, leave a loadable checkpoint, and resume to the losses of a run
//     never interrupted.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "core/check.h"
#include "stem/signals.h"
#include "stem/model.h"
#include "train/checkpoint.h"
#include "train_test_util.h"

namespace stem {
namespace {
namespace fs = std::filesystem;
using test::metrics_losses;
using test::scratch;
using test::sh;
using test::tiny;

// A child running `cmd` through the shell (exec'd, so the pid is the command's),
// stderr to `err`.
pid_t spawn(const std::string& cmd, const fs::path& err) {
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string line = "exec " + cmd + " > /dev/null 2>" + err.string();
    execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The hex mask of `key` ("SigBlk", "SigCgt") in a /proc status file.
uint64_t proc_mask(const fs::path& status, const std::string& key) {
  std::istringstream in(slurp(status));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::stoull(line.substr(key.size() + 1), nullptr, 16);
  ADD_FAILURE() << status << ": no " << key;
  return 0;
}

uint64_t bit(int sig) { return uint64_t{1} << (sig - 1); }

int wait_exit(pid_t pid, bool* signaled = nullptr) {
  int st = 0;
  ::waitpid(pid, &st, 0);
  if (signaled) *signaled = WIFSIGNALED(st);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::string train_cmd(const fs::path& run, const std::string& extra) {
  return std::string(STEM_BINARY) + " train --config " + tiny().config + " --data " + tiny().data + " --out " +
         run.string() + " --batch 2 --seq 32 --peak-gflops 100 --lr 3e-3 " + extra;
}

TEST(Signals, NoHandlerAndBlockedInEveryThread) {
  const fs::path run = scratch() / "masks";
  const fs::path err = scratch() / "masks.err";
  // Tables on disk with prefetch: OpenMP workers, the prefetcher and io_uring.
  const pid_t pid = spawn(train_cmd(run, "--steps 100000 --save-every 0 --eval-every 0 --lazy-tables --tables disk"),
                          err);
  for (int i = 0; i < 500 && metrics_losses(run).size() < 3; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_GE(metrics_losses(run).size(), 3u) << slurp(err);
  const fs::path proc = fs::path("/proc") / std::to_string(pid);
  const uint64_t handled = bit(SIGINT) | bit(SIGTERM) | bit(SIGHUP);
  EXPECT_EQ(proc_mask(proc / "status", "SigCgt") & (handled | bit(SIGPIPE)), 0u)
      << "stem train has a signal handler installed";
  int threads = 0, receivers = 0;
  for (const auto& t : fs::directory_iterator(proc / "task")) {
    // io_uring's kernel workers (iou-wrk-*, iou-sqp-*) never run user code.
    if (slurp(t.path() / "comm").rfind("iou-", 0) == 0) continue;
    ++threads;
    if ((proc_mask(t.path() / "status", "SigBlk") & handled) == handled) continue;
    // The receiver: inside rt_sigtimedwait (syscall 128), which unblocks the
    // set it waits for while it waits.
    ++receivers;
    EXPECT_EQ(slurp(t.path() / "syscall").rfind("128 ", 0), 0u)
        << "thread " << t.path().filename() << " does not block SIGINT/SIGTERM/SIGHUP";
  }
  EXPECT_GE(threads, 3);  // main, the receiver, at least one more
  EXPECT_EQ(receivers, 1);
  ::kill(pid, SIGTERM);
  EXPECT_EQ(wait_exit(pid), 143) << slurp(err);
  EXPECT_NE(slurp(err).find("stopped by SIGTERM"), std::string::npos) << slurp(err);
}

TEST(Signals, GemmUnderASignalStormNeverAborts) {
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    execl(SIGNAL_STRESS_BINARY, SIGNAL_STRESS_BINARY, "receiver", "300", static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(out[1]);
  char ready;
  ASSERT_EQ(::read(out[0], &ready, 1), 1);
  std::mt19937 rng(11);
  int acked = 0;
  for (int i = 0; i < 300; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 3000));
    if (::kill(pid, i % 2 ? SIGINT : SIGTERM) != 0) break;
    pollfd p{out[0], POLLIN, 0};
    char c;
    if (::poll(&p, 1, 20000) != 1 || ::read(out[0], &c, 1) != 1) break;
    ++acked;
  }
  ::close(out[0]);
  bool signaled = false;
  const int code = wait_exit(pid, &signaled);
  EXPECT_EQ(acked, 300);
  EXPECT_EQ(code, 0) << (signaled ? "killed by signal " + std::to_string(code - 128) : "exit " + std::to_string(code));
}

// One training setup interrupted again and again, then finished.
void interrupt_and_resume(const std::string& name, const std::string& flags, uint32_t seed) {
  const std::string common = "--steps 40 --save-every 3 --keep 2 --eval-every 2 --eval-tokens 128 " + flags;
  const fs::path ref = scratch() / (name + "_ref");
  ASSERT_EQ(sh(train_cmd(ref, common) + " > /dev/null 2>&1"), 0);
  const auto want = metrics_losses(ref);
  ASSERT_EQ(want.size(), 40u);

  const fs::path run = scratch() / name;
  const fs::path err = scratch() / (name + ".err");
  std::mt19937 rng(seed);
  int interrupted = 0;
  std::string history;  // how each attempt ended, for failure messages
  for (int attempt = 0; attempt < 6 && metrics_losses(run).size() < 40; ++attempt) {
    const size_t before = metrics_losses(run).size();
    const pid_t pid = spawn(train_cmd(run, common + (attempt ? " --resume" : "")), err);
    // Wait until the loop runs (a new step logged), then a random moment more.
    for (int i = 0; i < 1000 && metrics_losses(run).size() <= before; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 40000));
    const int sig = attempt % 2 ? SIGINT : SIGTERM;
    ::kill(pid, sig);
    bool signaled = false;
    const int code = wait_exit(pid, &signaled);
    const std::string msg = slurp(err);
    history += msg.substr(msg.rfind('\n', msg.size() - 2) + 1);
    ASSERT_FALSE(signaled) << name << ": attempt " << attempt << " died by signal " << code - 128 << "\n" << msg;
    if (code == 0) {  // the signal came during the last step: a normal finish
      EXPECT_EQ(metrics_losses(run).size(), 40u) << msg;
      EXPECT_EQ(msg.find("--resume"), std::string::npos) << msg;
      break;
    }
    ++interrupted;
    EXPECT_EQ(code, 128 + sig) << msg;
    EXPECT_NE(msg.find("stopped by " + signal_name(sig)), std::string::npos) << msg;
    EXPECT_NE(msg.find("continue with --resume"), std::string::npos) << msg;
    auto latest = train::latest_checkpoint(run.string());
    ASSERT_TRUE(latest.ok() && !latest->empty()) << msg;
    auto m = Model::load(*latest);
    EXPECT_TRUE(m.ok()) << m.status().message();
  }
  EXPECT_GE(interrupted, 2) << name << ": the signals came too late to test anything";
  if (metrics_losses(run).size() < 40) {
    ASSERT_EQ(sh(train_cmd(run, common + " --resume") + " > /dev/null 2>&1"), 0);
  }
  const auto got = metrics_losses(run);
  ASSERT_EQ(got.size(), 40u);
  for (const auto& [step, loss] : want) EXPECT_EQ(got.at(step), loss) << name << " step " << step << "\n" << history;
}

TEST(Signals, InterruptedTrainingResumesExactly_RamTables) { interrupt_and_resume("ram", "", 1); }
TEST(Signals, InterruptedTrainingResumesExactly_DiskTablesPrefetch) {
  interrupt_and_resume("disk", "--lazy-tables --tables disk", 2);
}
TEST(Signals, InterruptedTrainingResumesExactly_DiskTablesNoPrefetch) {
  interrupt_and_resume("disk_np", "--lazy-tables --tables disk --no-prefetch", 3);
}

TEST(Signals, SecondSignalEndsTheProcessAtOnce) {
  const fs::path run = scratch() / "twice";
  const fs::path err = scratch() / "twice.err";
  // Each checkpoint write is long next to the gap between the two signals.
  const pid_t pid = spawn(train_cmd(run, "--steps 100000 --save-every 1 --eval-every 0"), err);
  for (int i = 0; i < 500 && metrics_losses(run).size() < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::kill(pid, SIGINT);
  ::kill(pid, SIGINT);
  bool signaled = false;
  const int code = wait_exit(pid, &signaled);
  // Either the first stop finished before the second arrived (130), or the
  // second ended the process by SIGINT's default action.
  EXPECT_EQ(code, 130) << slurp(err);
  auto latest = train::latest_checkpoint(run.string());
  ASSERT_TRUE(latest.ok() && !latest->empty());
  EXPECT_TRUE(Model::load(*latest).ok());
}

}  // namespace
}  // namespace stem

namespace stem {
namespace {

void marker_hook(const char* message) {
  std::fprintf(stderr, "HOOK<<%s>>", message);
  std::fflush(stderr);
}

TEST(CheckDeathTest, BrokenInvariantGoesToTheHookWithABacktrace) {
  // The default: message and backtrace on stderr, then abort.
  EXPECT_DEATH(STEM_CHECKF(1 + 1 == 3, "value %d", 7), "check failed: 1 \\+ 1 == 3: value 7\nbacktrace:\n");
  // A hook set through the public API sees the same text first.
  EXPECT_DEATH(
      {
        set_internal_error_hook(marker_hook);
        STEM_CHECK(false);
      },
      "HOOK<<stem: internal error at .*test_signals.cpp:[0-9]+: check failed: false\nbacktrace:\n");
}

}  // namespace
}  // namespace stem
