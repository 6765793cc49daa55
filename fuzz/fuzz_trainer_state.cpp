// Fuzz target: a training checkpoint's own files, trainer_state.json (an
// input starting with '{') or optimizer.safetensors (any other input), put
// into an otherwise valid checkpoint of fuzz/model.json and resumed from.
#include "fuzz_util.h"
#include "model/weights.h"
#include "train/adamw.h"
#include "train/checkpoint.h"

namespace {
using namespace stem;
namespace fs = std::filesystem;

struct Checkpoint {
  model::TensorList weights;
  std::unique_ptr<train::AdamW> opt;
  fs::path dir;
  std::string state, optimizer;  // the valid files' bytes
};

Checkpoint& checkpoint() {
  static Checkpoint c = [] {
    Checkpoint k;
    const ModelConfig& cfg = fuzz::fuzz_config();
    k.weights = model::TensorList::allocate(model::tensor_specs(cfg));
    model::init_weights(k.weights, 1);
    train::AdamWOptions o;
    o.lazy_rows = true;
    k.opt = std::make_unique<train::AdamW>(k.weights, o);
    train::TrainerState st;
    st.step = 3;
    st.data_rng = "1 2 3";
    const fs::path run = fuzz::work_dir() / "run";
    if (!train::save_checkpoint(run.string(), cfg, k.weights, "", *k.opt, st, 0).ok()) std::abort();
    k.dir = run / "checkpoints" / "step-00000003";
    auto slurp = [](const fs::path& p) {
      std::ifstream in(p, std::ios::binary);
      return std::string(std::istreambuf_iterator<char>(in), {});
    };
    k.state = slurp(k.dir / "trainer_state.json");
    k.optimizer = slurp(k.dir / "optimizer.safetensors");
    return k;
  }();
  return c;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Checkpoint& c = checkpoint();
  const bool state = size > 0 && data[0] == '{';
  fuzz::write_file(c.dir / "trainer_state.json", state ? static_cast<const void*>(data) : c.state.data(),
                   state ? size : c.state.size());
  fuzz::write_file(c.dir / "optimizer.safetensors", state ? static_cast<const void*>(c.optimizer.data()) : data,
                   state ? c.optimizer.size() : size);
  train::TrainerState st;
  (void)train::load_checkpoint(c.dir.string(), fuzz::fuzz_config(), c.weights, *c.opt, st);
  return 0;
}
