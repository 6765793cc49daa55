// Running the stem binary from tests as a user would: `stem ARGS` through the
// shell, stdout captured, stderr captured to a file of its own (ctest runs
// tests in parallel), exit code decoded (128 + signal when killed).
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <gtest/gtest.h>

namespace stem::test {

struct CmdResult {
  int code = -1;
  std::string out, err;
};

// Any shell command line, as stem_cmd runs the binary.
inline CmdResult stem_cmd_raw(const std::string& command) {
  static std::atomic<int> calls{0};
  const std::filesystem::path err =
      std::filesystem::temp_directory_path() /
      ("stem_cmd_err_" + std::to_string(::getpid()) + "_" + std::to_string(calls++));
  const std::string cmd = command + " 2>" + err.string();
  CmdResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = ::pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  std::ifstream e(err);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  std::filesystem::remove(err);
  return r;
}

inline CmdResult stem_cmd(const std::string& args) { return stem_cmd_raw(std::string(STEM_BINARY) + " " + args); }

// A fresh directory per test (named by pid and test), removed afterwards. A
// death test's child process (which runs SetUp, then dies before TearDown)
// gets its own folder named after its parent's, which the parent removes.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name.begin(), name.end(), '/', '_');  // parameterised: "Name/0"
    const bool death_child = !GTEST_FLAG_GET(internal_run_death_test).empty();
    dir_ = std::filesystem::temp_directory_path() /
           ("stem_test_" + std::to_string(death_child ? ::getppid() : ::getpid()) + "_" + name +
            (death_child ? "_death" : ""));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::filesystem::remove_all(dir_);
    std::filesystem::remove_all(dir_.string() + "_death");
  }
  std::string p(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(p(name)) << text; }
  std::filesystem::path dir_;
};

}  // namespace stem::test
