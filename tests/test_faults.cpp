// Faults of the file system, made on purpose by tools/fault_inject.c (an
// LD_PRELOAD library): a disk that fills up or fails during a checkpoint, a
// prepared data folder, an overlay; a read error or a file that ends early
// under the disk table tier while decoding and while training. Each command
// must fail with a message naming the file and the error, leave the previous
// files as they were and nothing half-written under a final name, and (for
// training) go on exactly with --resume once the disk is well again.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cli_test_util.h"
#include "stem/model.h"
#include "train_test_util.h"

namespace stem {
namespace {
namespace fs = std::filesystem;
using test::CmdResult;
using test::metrics_losses;
using test::scratch;
using test::stem_cmd_raw;
using test::tiny;

// `stem ARGS` with the fault SPEC (CALL:N[-M]:ERRNO[:PATH]) injected.
CmdResult stem_faulty(const std::string& spec, const std::string& args) {
  return stem_cmd_raw("LD_PRELOAD=" FAULT_INJECT_LIB " STEM_FAULT=" + spec + " " STEM_BINARY " " + args);
}

// How many calls of CALL on files matching PATH `stem ARGS` makes, from the
// library's report at exit of a run in which the fault never fires.
long count_calls(const std::string& call, const std::string& path, const std::string& args) {
  const CmdResult r = stem_faulty(call + ":1000000000:EIO" + (path.empty() ? "" : ":" + path), args);
  EXPECT_EQ(r.code, 0) << r.err;
  std::smatch m;
  const std::regex re("fault_inject: (\\d+) " + call + " calls matched");
  if (!std::regex_search(r.err, m, re)) {
    ADD_FAILURE() << "no call count in: " << r.err;
    return 0;
  }
  return std::stol(m[1]);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// Every file under DIR, by relative path, with its bytes.
std::map<std::string, std::string> tree(const fs::path& dir) {
  std::map<std::string, std::string> m;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) m[fs::relative(e.path(), dir).string()] = slurp(e.path());
  return m;
}

// Names under DIR (recursively) that only a half-done write leaves.
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> bad;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.find(".tmp") != std::string::npos || n.find(".old-") != std::string::npos) bad.push_back(e.path().string());
  }
  return bad;
}

std::string train_args(const fs::path& out, const std::string& extra = "") {
  return "train --config " + tiny().config + " --data " + tiny().data +
         " --steps 6 --batch 2 --seq 32 --save-every 2 --keep 5 --eval-every 0 --lr 3e-3 --out " + out.string() +
         " " + extra;
}

// The uninterrupted run every faulty run must end up equal to.
const fs::path& reference_run() {
  static const fs::path ref = [] {
    const fs::path r = scratch() / "fault_ref";
    const CmdResult c = test::stem_cmd(train_args(r, "--force"));
    EXPECT_EQ(c.code, 0) << c.err;
    return r;
  }();
  return ref;
}

// A failed run: stopped with the error named, `latest` still naming a
// complete checkpoint equal to the reference's, nothing half-written; then
// --resume without the fault gives the reference's losses.
void expect_failed_then_resumes(const fs::path& run, const CmdResult& r, const std::string& why) {
  EXPECT_NE(r.code, 0) << "the fault did not stop the run";
  EXPECT_NE(r.err.find(why), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(run.string()), std::string::npos) << "the message names no file of the run: " << r.err;
  EXPECT_EQ(leftovers(run), std::vector<std::string>{});
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run / "checkpoints", ec)) {
    const std::string name = e.path().filename().string();
    ASSERT_EQ(name.rfind("step-", 0), 0u) << e.path();
    auto m = Model::load(e.path().string());
    EXPECT_TRUE(m.ok()) << e.path() << ": " << m.status().message();
    EXPECT_EQ(tree(e.path()), tree(reference_run() / "checkpoints" / name)) << name << " differs";
  }
  if (fs::exists(run / "latest")) {
    std::string latest = slurp(run / "latest");
    while (!latest.empty() && latest.back() == '\n') latest.pop_back();
    EXPECT_TRUE(fs::is_directory(run / "checkpoints" / latest)) << "latest names '" << latest << "'";
  }
  const CmdResult again = test::stem_cmd(train_args(run, "--resume"));
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(metrics_losses(run), metrics_losses(reference_run()));
}

struct CheckpointFault {
  std::string spec, why;
};
void PrintTo(const CheckpointFault& f, std::ostream* os) { *os << f.spec; }

class FaultsCheckpoint : public ::testing::TestWithParam<CheckpointFault> {};

// Each kind of failure while the checkpoint of step 4 is written. N = LAST
// stands for the last matching call of a clean run.
TEST_P(FaultsCheckpoint, StopsKeepsPreviousAndResumes) {
  ASSERT_FALSE(reference_run().empty());
  const std::string tag = std::to_string(std::hash<std::string>{}(GetParam().spec));
  std::string spec = GetParam().spec;
  if (const size_t at = spec.find(":LAST:"); at != std::string::npos) {
    const fs::path probe = scratch() / ("fault_probe_" + tag);
    fs::remove_all(probe);
    const std::string call = spec.substr(0, at), path = spec.substr(spec.rfind(':') + 1);
    spec.replace(at + 1, 4, std::to_string(count_calls(call, path, train_args(probe))));
  }
  const fs::path run = scratch() / ("fault_ck_" + tag);
  fs::remove_all(run);
  const CmdResult r = stem_faulty(spec, train_args(run));
  ASSERT_NE(r.err.find(" fails"), std::string::npos) << "the fault never fired: " << r.err;
  EXPECT_EQ(slurp(run / "latest"), "step-00000002\n") << r.err;
  expect_failed_then_resumes(run, r, GetParam().why);
}

INSTANTIATE_TEST_SUITE_P(
    Faults, FaultsCheckpoint,
    ::testing::Values(CheckpointFault{"write:1:ENOSPC:step-00000004", "No space left on device"},
                      CheckpointFault{"write:4:ENOSPC:step-00000004", "No space left on device"},
                      CheckpointFault{"fsync:1:EIO:step-00000004", "Input/output error"},
                      // the checkpoint's folder itself, before it is renamed into place
                      CheckpointFault{"fsync:LAST:EIO:step-00000004", "Input/output error"},
                      CheckpointFault{"rename:1:EIO:checkpoints/step-00000004", "Input/output error"},
                      // `latest` was written once, at step 2
                      CheckpointFault{"write:2:ENOSPC:latest", "No space left on device"},
                      CheckpointFault{"rename:2:EIO:latest", "Input/output error"}),
    [](const auto& info) { return "case" + std::to_string(info.index); });

// The disk fills up at write K of the run, for K spread over all its writes:
// whatever was being written, the run stops cleanly and resumes exactly.
TEST(Faults, DiskFullAtAnyWriteThenResumes) {
  const fs::path probe = scratch() / "fault_count";
  fs::remove_all(probe);
  const long writes = count_calls("write", "", train_args(probe));
  ASSERT_GT(writes, 10);
  for (long k : {1L, writes / 7, writes / 3, writes / 2, 2 * writes / 3, writes - 1, writes}) {
    const fs::path run = scratch() / ("fault_full_" + std::to_string(k));
    fs::remove_all(run);
    SCOPED_TRACE("write " + std::to_string(k) + " of " + std::to_string(writes));
    const CmdResult r = stem_faulty("write:" + std::to_string(k) + ":ENOSPC", train_args(run));
    expect_failed_then_resumes(run, r, "No space left on device");
  }
}

// Prepared data written onto a disk that fills up or fails: no folder is
// left half-made, and one being replaced (--force) stays as it was.
TEST(Faults, PrepareLeavesNoPartialFolderAndKeepsTheOld) {
  const fs::path dir = scratch() / "fault_prep";
  fs::remove_all(dir);
  fs::create_directories(dir / "text");
  fs::copy_file(fs::path(tiny().data).parent_path() / "text" / "a.txt", dir / "text" / "a.txt");
  const std::string args = "prepare --input " + (dir / "text").string() + " --vocab-size 400 --out ";
  const fs::path out = dir / "prepared";

  // into a new folder: nothing at all is left
  CmdResult r = stem_faulty("write:3:ENOSPC", args + out.string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(leftovers(dir), std::vector<std::string>{});

  // over an existing folder (--force): the old one stays as it was
  r = test::stem_cmd(args + out.string());
  ASSERT_EQ(r.code, 0) << r.err;
  const auto before = tree(out);
  ASSERT_FALSE(before.empty());
  for (const std::string& spec : {std::string("write:2:ENOSPC"), std::string("fsync:1:EIO")}) {
    r = stem_faulty(spec, args + out.string() + " --force");
    EXPECT_NE(r.code, 0) << spec;
    EXPECT_NE(r.err.find(out.string()), std::string::npos) << r.err;
    EXPECT_EQ(tree(out), before) << spec;
    EXPECT_EQ(leftovers(dir), std::vector<std::string>{}) << spec;
  }
  // the last rename (the new folder into place) fails: the old one comes back
  // (a fresh folder's renames are those of its files and its own; --force
  // adds one, the old folder's moving aside, before the last)
  const long renames = count_calls("rename", "prepared", args + (dir / "prepared_probe").string());
  ASSERT_GT(renames, 0);
  r = stem_faulty("rename:" + std::to_string(renames + 1) + "-" + std::to_string(renames + 1) + ":EIO:prepared",
                  args + out.string() + " --force");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("Input/output error"), std::string::npos) << r.err;
  EXPECT_EQ(tree(out), before);
  EXPECT_EQ(leftovers(dir), std::vector<std::string>{});
}

// A trained checkpoint of the tiny model (one STEM layer), for the edit and
// disk-tier tests.
const fs::path& tiny_model() {
  static const fs::path m = [] {
    EXPECT_FALSE(reference_run().empty());
    return reference_run() / "checkpoints" / "step-00000006";
  }();
  return m;
}

TEST(Faults, OverlayWriteFailureLeavesTheOldFile) {
  const fs::path dir = scratch() / "fault_overlay";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path ov = dir / "edit.safetensors";
  auto swap = [&](const std::string& from, const std::string& to) {
    return "edit swap --model " + tiny_model().string() + " --from " + from + " --to " + to +
           " --shared allow --out " + ov.string();
  };
  const std::string args = swap("the", "and");
  CmdResult r = stem_faulty("write:1:ENOSPC:edit.safetensors", args);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find(ov.string()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(ov));
  EXPECT_EQ(leftovers(dir), std::vector<std::string>{});

  r = test::stem_cmd(args);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string before = slurp(ov);
  for (const std::string& spec : {std::string("write:1:EIO:edit.safetensors"), std::string("fsync:1:EIO:edit"),
                                  std::string("rename:1:EIO:edit.safetensors")}) {
    r = stem_faulty(spec, swap("and", "the"));
    EXPECT_NE(r.code, 0) << spec;
    EXPECT_EQ(slurp(ov), before) << spec;
    EXPECT_EQ(leftovers(dir), std::vector<std::string>{}) << spec;
  }
}

// Reads of the disk tier fail (EIO) or come back short (the file ends early)
// at the first read or in the middle of decoding: generation stops with the
// file named, never prints tokens computed from rows it did not read.
TEST(Faults, TableReadErrorStopsGenerate) {
  const std::string args = "generate --model " + tiny_model().string() +
                           " --tables disk --no-pack --prompt-ids '1 5 9' -n 12 --greedy";
  const CmdResult clean = test::stem_cmd(args);
  ASSERT_EQ(clean.code, 0) << clean.err;
  const long reads = count_calls("read", "model.safetensors", args);
  ASSERT_GT(reads, 1);
  for (const std::string& err : {std::string("EIO"), std::string("eof")}) {
    for (long k : {1L, reads / 2 + 1, reads}) {
      const std::string spec = "read:" + std::to_string(k) + ":" + err + ":model.safetensors";
      const CmdResult r = stem_faulty(spec, args);
      EXPECT_NE(r.code, 0) << spec;
      EXPECT_NE(r.err.find("model.safetensors"), std::string::npos) << spec << ": " << r.err;
      EXPECT_NE(r.err.find(err == "EIO" ? "Input/output error" : "unexpected end of file"), std::string::npos)
          << spec << ": " << r.err;
      // what was printed before the failure is a prefix of the clean output
      EXPECT_EQ(clean.out.compare(0, r.out.size(), r.out), 0) << spec << ": " << r.out << " vs " << clean.out;
      EXPECT_LT(r.out.size(), clean.out.size()) << spec;
    }
  }
}

// The same under training with the tables and their moments in a row file:
// the run stops with a message, the checkpoints written before are whole,
// and --resume goes on exactly.
TEST(Faults, RowFileReadErrorStopsTrainingThenResumes) {
  const std::string disk = "--tables disk --lazy-tables --tables-dir ";
  const fs::path ref = scratch() / "fault_rows_ref";
  fs::remove_all(ref);
  ASSERT_EQ(test::stem_cmd(train_args(ref, disk + ref.string())).code, 0);
  const fs::path probe = scratch() / "fault_rows_probe";
  fs::remove_all(probe);
  const long reads = count_calls("read", ".stem-rows", train_args(probe, disk + probe.string()));
  ASSERT_GT(reads, 2);
  for (const std::string& err : {std::string("EIO"), std::string("eof")}) {
    const fs::path run = scratch() / ("fault_rows_" + err);
    fs::remove_all(run);
    const std::string spec = "read:" + std::to_string(reads / 2) + ":" + err + ":.stem-rows";
    const CmdResult r = stem_faulty(spec, train_args(run, disk + run.string()));
    EXPECT_NE(r.code, 0) << spec;
    EXPECT_NE(r.err.find(".stem-rows"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(err == "EIO" ? "Input/output error" : "unexpected end of file"), std::string::npos)
        << r.err;
    EXPECT_LT(metrics_losses(run).size(), 6u) << "trained on after the failure";
    const CmdResult again = test::stem_cmd(train_args(run, disk + run.string() + " --resume"));
    ASSERT_EQ(again.code, 0) << again.err;
    EXPECT_EQ(metrics_losses(run), metrics_losses(ref)) << spec;
  }
}

}  // namespace
}  // namespace stem
