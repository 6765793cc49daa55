// Fuzz target: an evaluation task file (JSON lines in stem's, ARC's, PIQA's
// or HellaSwag's layout), read with the layout detected from its first line.
#include "fuzz_util.h"
#include "stem/eval.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace stem;
  (void)read_task(fuzz::input_file(data, size, "task.jsonl"));
  return 0;
}
