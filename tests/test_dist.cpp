// Training on several processes (mpirun -np N stem train): N ranks with a
// global batch of N x accum micro-batches give the losses, validation losses
// and final checkpoint of one process with N x accum micro-batches, bit for
// bit with one micro-batch a rank (one process adds whole micro-batch
// gradients in order, the ranks sum in rank order, and the clipping norms are
// summed in one order by whoever holds the parts: grad_norm.h), within 1e-5
// relative otherwise. For a model with a dense, a STEM and a hash-MoE layer
// (lazy and dense table AdamW) and for a dense model, with the backbone's
// moments whole on each rank or sharded (ZeRO-1); a run resumed with another
// number of ranks goes on as if never stopped, and one started --init-from a
// model as one process starts it; refusals are clean. Skipped, saying so,
// without mpirun.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "cli_test_util.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "stem/train.h"
#include "train_test_util.h"

namespace stem {
namespace {

namespace fs = std::filesystem;

bool have_mpirun() { return test::sh("command -v mpirun > /dev/null 2>&1") == 0; }

// `stem train` on one process (ranks == 0) or under mpirun with `ranks`.
test::CmdResult train(int ranks, const std::string& args) {
  // Root allowed (CI runs as root); no cross-process memory copies, which
  // containers often forbid (ptrace rules): shared memory with two copies.
  std::string env =
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none "
      "OMP_NUM_THREADS=1 ";
  // A session directory of this test process's own: two mpirun started at
  // once by parallel test processes raced to create the shared default one
  // (/tmp/ompi.HOST.UID: "mkdir ... File exists", orte_init failed).
  struct SessionDir {
    fs::path d = fs::temp_directory_path() / ("stem-ompi-" + std::to_string(::getpid()));
    SessionDir() { fs::create_directories(d); }
    ~SessionDir() {
      std::error_code ec;
      fs::remove_all(d, ec);
    }
  };
  static const SessionDir session;
  env += "OMPI_MCA_orte_tmpdir_base=" + session.d.string() + " ";
#ifdef __SANITIZE_ADDRESS__
  // Open MPI is built without frame pointers: only the slow unwinder sees
  // the frames of its own allocations, which tests/sanitizers/lsan.supp
  // names as kept until exit.
  if (ranks > 0) env += "ASAN_OPTIONS=\"${ASAN_OPTIONS}:fast_unwind_on_malloc=0\" ";
#endif
  const std::string launcher = ranks > 0 ? "mpirun -np " + std::to_string(ranks) + " --oversubscribe " : "";
  return test::stem_cmd_raw(env + launcher + STEM_BINARY + " train " + args);
}

std::string common(const std::string& config, const std::string& out, int64_t accum) {
  return "--config " + config + " --data " + test::tiny().data + " --out " + out + " --accum " +
         std::to_string(accum) + " --steps 12 --batch 2 --seq 32 --warmup 3 --eval-every 6 --save-every 6 " +
         "--keep 0 --eval-tokens 512 --seed 5 --peak-gflops 100 --force";
}

// Every step's loss and validation loss, equal (exact) or within 1e-5 relative.
void expect_same_metrics(const fs::path& want, const fs::path& got, bool exact, int64_t from_step = 1) {
  auto a = read_metrics(want.string()), b = read_metrics(got.string());
  ASSERT_TRUE(a.ok() && b.ok());
  std::map<int64_t, StepRecord> by_step;
  for (const StepRecord& r : *b) by_step[r.step] = r;
  int compared = 0;
  for (const StepRecord& r : *a) {
    if (r.step < from_step) continue;
    ASSERT_TRUE(by_step.count(r.step)) << got << " lacks step " << r.step;
    const double tol = exact ? 0.0 : 1e-5;
    EXPECT_NEAR(by_step[r.step].loss, r.loss, tol * std::fabs(r.loss)) << got << " step " << r.step;
    if (!std::isnan(r.val_loss)) {
      EXPECT_NEAR(by_step[r.step].val_loss, r.val_loss, tol * std::fabs(r.val_loss)) << got << " step " << r.step;
    }
    ++compared;
  }
  EXPECT_GT(compared, 0);
}

// Every tensor of model.safetensors and optimizer.safetensors equal bit for
// bit (exact) or within 1e-5 relative (||x - y|| / ||x||: Adam divides by
// sqrt(v), so a single element whose gradient sums to almost nothing may move
// by a step's size on a rounding difference); the lazy rows' last steps equal.
void expect_same_checkpoint(const fs::path& want, const fs::path& got, bool exact) {
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    auto a = io::SafetensorsFile::open((want / file).string());
    auto b = io::SafetensorsFile::open((got / file).string());
    ASSERT_TRUE(a.ok() && b.ok()) << want / file;
    ASSERT_EQ(a->entries().size(), b->entries().size());
    for (const io::SafetensorsEntry& e : a->entries()) {
      const io::SafetensorsEntry* f = b->find(e.name);
      ASSERT_TRUE(f) << e.name;
      ASSERT_EQ(f->nbytes, e.nbytes) << e.name;
      if (e.dtype == DType::I32 || exact) {
        EXPECT_EQ(std::memcmp(a->data(e), b->data(*f), e.nbytes), 0) << e.name;
        continue;
      }
      const auto* x = reinterpret_cast<const float*>(a->data(e));
      const auto* y = reinterpret_cast<const float*>(b->data(*f));
      double norm = 0, diff = 0;
      for (size_t k = 0; k < e.nbytes / 4; ++k) {
        norm += static_cast<double>(x[k]) * x[k];
        diff += (static_cast<double>(x[k]) - y[k]) * (static_cast<double>(x[k]) - y[k]);
      }
      EXPECT_LE(std::sqrt(diff), 1e-5 * std::sqrt(norm)) << file << " " << e.name;
    }
  }
}

fs::path last_checkpoint(const fs::path& run) { return run / "checkpoints" / "step-00000012"; }

class Dist : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_mpirun()) GTEST_SKIP() << "mpirun not found: install openmpi-bin (scripts/setup.sh does)";
  }
};

TEST_F(Dist, RanksTrainAsOneProcessWithTheSameGlobalBatch) {
  const fs::path dir = test::scratch() / "dist";
  const std::string stem_cfg = test::tiny().config, dense_cfg = (dir / "dense.json").string();
  fs::create_directories(dir);
  {
    auto c = ModelConfig::load(stem_cfg);
    ASSERT_TRUE(c.ok());
    c->ffn_types.assign(c->num_hidden_layers, FfnType::Dense);
    c->num_hash_experts = 0;
    ASSERT_TRUE(c->save(dense_cfg).ok());
  }
  struct Case {
    std::string name, config, flags;
    int ranks;
    int accum = 1;  // a rank's micro-batches
  };
  const std::vector<Case> cases = {{"stem-lazy", stem_cfg, "--lazy-tables", 2},
                                   {"stem-dense-adamw", stem_cfg, "", 2},
                                   {"dense", dense_cfg, "", 2},
                                   {"stem-lazy-4", stem_cfg, "--lazy-tables", 4},
                                   {"dense-zero1", dense_cfg, "--zero 1 --json", 2},
                                   {"stem-zero1-4", stem_cfg, "--zero 1 --json", 4},
                                   {"stem-lazy-accum2", stem_cfg, "--lazy-tables", 2, 2}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path one = dir / (c.name + "-one"), many = dir / (c.name + "-ranks");
    auto r1 = train(0, common(c.config, one.string(), c.ranks * c.accum) + " " + c.flags);
    ASSERT_EQ(r1.code, 0) << r1.err;
    auto rn = train(c.ranks, common(c.config, many.string(), c.accum) + " " + c.flags);
    ASSERT_EQ(rn.code, 0) << rn.err;
    // Several micro-batches a rank: ((g0 + g1) + (g2 + g3)) against one
    // process's ((g0 + g1) + g2) + g3.
    expect_same_metrics(one, many, c.accum == 1);
    expect_same_checkpoint(last_checkpoint(one), last_checkpoint(many), c.accum == 1);
    if (c.flags.find("--zero 1") != std::string::npos) {  // rank 0 keeps about 1/N of the backbone's moments
      auto summary = [](std::string out) {  // the last line
        while (!out.empty() && out.back() == '\n') out.pop_back();
        return nlohmann::json::parse(out.substr(out.rfind('\n') + 1));
      };
      const auto sharded = summary(rn.out);
      const auto whole = summary(r1.out);  // one process: all of them
      const double mine = sharded.at("backbone_moment_bytes").get<double>();
      const double all = whole.at("backbone_moment_bytes").get<double>();
      EXPECT_NEAR(mine * c.ranks, all, 0.05 * all) << rn.out;
    }
    if (c.config == stem_cfg) {  // rows moved, and far fewer bytes than a dense all-reduce
      auto m = read_metrics(many.string());
      ASSERT_TRUE(m.ok());
      std::ifstream in(many / "metrics.jsonl");
      std::string line;
      std::getline(in, line);
      const auto j = nlohmann::json::parse(line);
      EXPECT_GT(j.at("table_comm_bytes").get<int64_t>(), 0);
      EXPECT_GT(j.at("comm_bytes").get<int64_t>(), j.at("table_comm_bytes").get<int64_t>());
    }
  }

  // Lazy tables prefetch the next step's untouched rows during each step,
  // and each rank may keep its rows in a row file on disk: the same rows, so
  // the same numbers bit for bit as fetching them late from memory.
  for (const char* variant : {"--no-prefetch", "--tables disk", "--tables disk --no-prefetch"}) {
    SCOPED_TRACE(variant);
    const fs::path other = dir / "stem-lazy-variant";
    auto r = train(2, common(stem_cfg, other.string(), 1) + " --lazy-tables " + variant);
    ASSERT_EQ(r.code, 0) << r.err;
    auto a = read_metrics((dir / "stem-lazy-ranks").string()), b = read_metrics(other.string());
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->size(), b->size());
    for (size_t k = 0; k < a->size(); ++k) {
      EXPECT_EQ((*a)[k].loss, (*b)[k].loss) << "step " << (*a)[k].step;
      if (!std::isnan((*a)[k].val_loss)) {
        EXPECT_EQ((*a)[k].val_loss, (*b)[k].val_loss) << "step " << (*a)[k].step;
      }
    }
    for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
      auto x = io::read_text((last_checkpoint(dir / "stem-lazy-ranks") / file).string());
      auto y = io::read_text((last_checkpoint(other) / file).string());
      ASSERT_TRUE(x.ok() && y.ok());
      EXPECT_TRUE(*x == *y) << file;
    }
  }
  {
    std::ifstream in(dir / "stem-lazy-ranks" / "metrics.jsonl");
    int64_t early = 0;
    for (std::string line; std::getline(in, line);) early += nlohmann::json::parse(line).value("table_prefetch_bytes", 0);
    EXPECT_GT(early, 0);
  }

  // The 2-rank lazy run resumed at step 6 by one process with accum 2 (its
  // checkpoint is the one-process format) ends where both runs ended.
  const fs::path resumed = dir / "stem-lazy-resumed";
  fs::copy(dir / "stem-lazy-ranks", resumed, fs::copy_options::recursive);
  fs::remove_all(resumed / "checkpoints" / "step-00000012");
  std::ofstream(resumed / "latest") << "step-00000006\n";
  std::string args = common(stem_cfg, resumed.string(), 2) + " --lazy-tables";
  args.replace(args.find(" --force"), 8, " --resume");
  auto rr = train(0, args);
  ASSERT_EQ(rr.code, 0) << rr.err;
  expect_same_metrics(dir / "stem-lazy-one", resumed, true, 7);
  expect_same_checkpoint(last_checkpoint(dir / "stem-lazy-one"), last_checkpoint(resumed), true);
  // And the other way: a one-process checkpoint resumed by 2 ranks, which
  // shard the backbone's moments (a checkpoint holds them whole either way).
  const fs::path resumed2 = dir / "stem-lazy-resumed-2";
  fs::copy(dir / "stem-lazy-one", resumed2, fs::copy_options::recursive);
  fs::remove_all(resumed2 / "checkpoints" / "step-00000012");
  std::ofstream(resumed2 / "latest") << "step-00000006\n";
  args = common(stem_cfg, resumed2.string(), 1) + " --lazy-tables --zero 1";
  args.replace(args.find(" --force"), 8, " --resume");
  auto rr2 = train(2, args);
  ASSERT_EQ(rr2.code, 0) << rr2.err;
  expect_same_metrics(dir / "stem-lazy-one", resumed2, true, 7);
  expect_same_checkpoint(last_checkpoint(dir / "stem-lazy-one"), last_checkpoint(resumed2), true);

  // --init-from: each rank reads its own rows of the tables from the model
  // it starts from, as one process reads them whole.
  const std::string from = " --init-from " + (dir / "stem-dense-adamw-one" / "checkpoints" / "step-00000006").string();
  auto i1 = train(0, common(stem_cfg, (dir / "init-one").string(), 2) + from);
  ASSERT_EQ(i1.code, 0) << i1.err;
  auto i2 = train(2, common(stem_cfg, (dir / "init-ranks").string(), 1) + from);
  ASSERT_EQ(i2.code, 0) << i2.err;
  expect_same_metrics(dir / "init-one", dir / "init-ranks", true);
  expect_same_checkpoint(last_checkpoint(dir / "init-one"), last_checkpoint(dir / "init-ranks"), true);
}

TEST_F(Dist, RefusalsEndEveryRank) {
  const fs::path dir = test::scratch() / "dist-refusals";
  // Shards on disk need lazy AdamW, as one process's tables on disk do.
  auto r = train(2, common(test::tiny().config, (dir / "disk").string(), 1) + " --tables disk");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--tables disk needs --lazy-tables"), std::string::npos) << r.err;
  // A config that does not exist: an error naming it, every rank gone.
  r = train(2, common((dir / "nope.json").string(), (dir / "nope").string(), 1));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("nope.json"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace stem
