// train_tiny DATA_DIR OUT_DIR [STEPS]: trains a small STEM model (STEM in
// every layer but the first) for a few steps on a data directory made by
// `stem prepare`, printing the loss of each step. The run directory it writes
// is the same as `stem train`'s: checkpoints that `stem generate`,
// generate_text and the PyTorch reference load.
#include <cstdio>
#include <cstdlib>

#include <stem/data.h>
#include <stem/train.h>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: train_tiny DATA_DIR OUT_DIR [STEPS]\n");
    return 2;
  }
  auto data = stem::describe_data(argv[1]);
  if (!data.ok()) {
    std::fprintf(stderr, "train_tiny: %s\n", data.status().message().c_str());
    return 1;
  }
  stem::TrainOptions o;
  o.config.vocab_size = data->vocab_size;
  o.config.hidden_size = 64;
  o.config.intermediate_size = 172;
  o.config.num_hidden_layers = 3;
  o.config.num_attention_heads = 4;
  o.config.num_key_value_heads = 4;
  o.config.max_position_embeddings = 128;
  o.config.ffn_types = {stem::FfnType::Dense, stem::FfnType::Stem, stem::FfnType::Stem};
  o.data_dir = argv[1];
  o.out_dir = argv[2];
  o.steps = argc > 3 ? std::atoi(argv[3]) : 20;
  o.batch = 4;
  o.seq = 128;
  o.warmup = 5;
  o.eval_every = 0;
  o.save_every = o.steps;
  o.force = true;
  auto trainer = stem::Trainer::create(o);
  if (!trainer.ok()) {
    std::fprintf(stderr, "train_tiny: %s\n", trainer.status().message().c_str());
    return 1;
  }
  auto end = (*trainer)->run([](const stem::StepRecord& r) {
    std::printf("step %ld/%ld  loss %.4f  %.0f tok/s\n", static_cast<long>(r.step), static_cast<long>(r.steps),
                r.loss, r.tokens_per_second);
  });
  if (!end.ok()) {
    std::fprintf(stderr, "train_tiny: %s\n", end.status().message().c_str());
    return 1;
  }
  std::printf("saved %s\n", (*trainer)->last_checkpoint().c_str());
  return 0;
}
