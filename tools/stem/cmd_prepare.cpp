// stem prepare: text files -> a data folder the trainer reads; the work is
// stem::prepare_data (src/data/prepare.cpp, which says what a document is and
// how the split is made). This file parses flags and prints.
#include <cstdio>
#include <memory>

#include "commands.h"
#include "stem/format.h"
#include "stem/data.h"

namespace stem::cli {

void register_prepare(CLI::App& app) {
  auto o = std::make_shared<PrepareOptions>();
  auto json = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand(
      "prepare", "Tokenize text files into a data folder for training (tokenizer.model, train.tok, val.tok, data.json)");
  sub->add_option("--input", o->inputs, "Text files, or folders searched recursively for *.txt")
      ->required()
      ->expected(1, -1);
  sub->add_option("--out", o->out, "Output data folder (must not exist unless --force)")->required();
  auto* vocab = sub->add_option("--vocab-size", o->vocab_size, "BPE vocabulary size (at least 260)")->capture_default_str();
  sub->add_option("--tokenizer", o->tokenizer,
                  "Encode with this tokenizer.model (a model's, or another data folder's) instead of training one")
      ->excludes(vocab);
  sub->add_option("--val-fraction", o->val_fraction, "Fraction of documents held out for validation, in [0, 1)")
      ->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of the train/val split and the tokenizer sample")->capture_default_str();
  sub->add_option("--doc-bytes", o->doc_bytes, "Target document size in bytes (paragraph groups)")
      ->capture_default_str();
  sub->add_option("--sample-bytes", o->sample_bytes, "Train the tokenizer on about this much text at most")
      ->capture_default_str();
  sub->add_option("--threads", o->threads, "Threads for tokenizer training and encoding (0: all)")
      ->capture_default_str();
  sub->add_flag("--force", o->force, "Replace an existing --out folder");
  sub->add_flag("--json", *json, "Machine-readable output (data.json plus out and seconds)");
  add_command(sub, [o, json] {
    std::unique_ptr<Progress> bar;
    std::string stage;
    auto r = prepare_data(*o, [&](const std::string& s, int64_t done, int64_t total) {
      if (s != stage) {
        if (bar) bar->finish();
        bar = std::make_unique<Progress>(s, total);
        stage = s;
      }
      bar->update(done);
    });
    if (bar) bar->finish();
    if (!r.ok()) return fail("prepare", r.status());
    const nlohmann::json m = nlohmann::json::parse(*r);
    if (*json) {
      print_json(m);
      return 0;
    }
    std::printf("wrote %s: %zu file(s), %s of text, %ld documents, vocab %ld\n", m["out"].get<std::string>().c_str(),
                m["sources"].size(), human_bytes(m["text_bytes"].get<double>()).c_str(),
                static_cast<long>(m["documents"]["count"].get<int64_t>()),
                static_cast<long>(m["vocab_size"].get<int64_t>()));
    for (const char* split : {"train", "val"})
      std::printf("  %-5s %8ld docs %12ld tokens  %s\n", split, static_cast<long>(m[split]["docs"].get<int64_t>()),
                  static_cast<long>(m[split]["tokens"].get<int64_t>()),
                  human_bytes(m[split]["text_bytes"].get<double>()).c_str());
    std::printf("  %.2f bytes/token, %.1f s\n", m["bytes_per_token"].get<double>(), m["seconds"].get<double>());
    return 0;
  });
}

}  // namespace stem::cli
