// generate_text MODEL_DIR PROMPT [N]: continues PROMPT with a checkpoint (or a
// training run directory: its latest checkpoint), streaming the text as it is
// sampled, greedy, then prints why it stopped.
#include <cstdio>
#include <cstdlib>

#include <stem/generate.h>
#include <stem/model.h>
#include <stem/tokenizer.h>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: generate_text MODEL_DIR PROMPT [N]\n");
    return 2;
  }
  auto model = stem::Model::load(argv[1]);
  if (!model.ok()) {
    std::fprintf(stderr, "generate_text: %s\n", model.status().message().c_str());
    return 1;
  }
  auto tok = stem::Tokenizer::for_model(model->dir(), model->config().vocab_size, "to tokenize the prompt");
  if (!tok.ok()) {
    std::fprintf(stderr, "generate_text: %s\n", tok.status().message().c_str());
    return 1;
  }
  stem::GenerateOptions opt;
  opt.sampler.greedy = true;
  opt.max_new_tokens = argc > 3 ? std::atoi(argv[3]) : 40;
  auto r = stem::generate(*model, *tok, argv[2], opt, [](const stem::GeneratedToken& t) {
    std::fwrite(t.text.data(), 1, t.text.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  if (!r.ok()) {
    std::fprintf(stderr, "\ngenerate_text: %s\n", r.status().message().c_str());
    return 1;
  }
  std::printf("\n[%zu tokens, stop: %s]\n", r->ids.size(), stem::stop_reason_name(r->stop));
  return 0;
}
