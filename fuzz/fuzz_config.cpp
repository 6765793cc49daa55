// Fuzz target: config.json text, parsed and checked; an accepted config's
// tensor list is built (shapes, counts) as loading a model would.
#include "fuzz_util.h"
#include "model/tensor_list.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stem;
  auto cfg = ModelConfig::from_json(std::string(reinterpret_cast<const char*>(data), size), "config.json");
  if (cfg.ok() && cfg->vocab_size * cfg->hidden_size < (int64_t{1} << 26)) {
    (void)model::tensor_specs(*cfg);
    (void)cfg->to_json();
  }
  return 0;
}
