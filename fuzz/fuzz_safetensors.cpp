// Fuzz target: a safetensors file (header JSON, dtypes, shapes, offsets),
// opened, every tensor's bytes touched, then loaded as fuzz/model.json's
// weights (names, dtypes, shapes, hash-table entries checked).
#include "fuzz_util.h"
#include "io/safetensors.h"
#include "model/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stem;
  const std::string path = fuzz::input_file(data, size, "model.safetensors");
  auto f = io::SafetensorsFile::open(path);
  if (f.ok()) {
    volatile uint8_t sum = 0;
    for (const auto& e : f->entries())
      for (size_t i = 0; i < e.nbytes; i += 61) sum = sum + static_cast<uint8_t>(f->data(e)[i]);
  }
  (void)model::load_weights(fuzz::fuzz_config(), path);
  return 0;
}
