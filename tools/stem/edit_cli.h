// What the `stem edit` subcommands share (cmd_edit*.cpp):
// loading a model with its tokenizer, list parsing, JSON views of tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "commands.h"
#include "stem/edit.h"
#include "stem/tokenizer.h"

namespace stem::cli {

struct Loaded {
  Model model;
  Tokenizer tok;
};
// The model (tables in RAM, F32) and its tokenizer.model, which edits need.
Result<Loaded> load_model_and_tokenizer(const std::string& dir);
std::string join_ints(const std::vector<int32_t>& v);
// "0,2,5": a list of integers; errors name `what`.
Result<std::vector<int32_t>> parse_int_list(const std::string& s, const std::string& what);
nlohmann::json tokens_json(const Tokenizer& tok, const std::vector<int32_t>& ids);
nlohmann::json forms_json(const Tokenizer& tok, const std::vector<edit::TokenForm>& forms);
int64_t file_bytes(const std::string& p);
// "warning: pieces other words share were <what>: ▁K (372) ..." on stderr; nothing when none.
void warn_shared(const Tokenizer& tok, const std::vector<int32_t>& shared, const std::string& what);

// `stem edit swap --prompts`: the swap by training (cmd_edit_measure.cpp).
struct TrainedSwapArgs {
  std::string model_dir, from, to, layers, shared, prompts, out, keep;
  bool exchange = false, json = false;
  edit::SwapTrainOptions train;
};
int trained_swap(const TrainedSwapArgs& a);

// The subcommands of cmd_edit_measure.cpp and cmd_edit_files.cpp.
void register_inject(CLI::App* edit);
void register_eval_edit(CLI::App* edit);
void register_apply(CLI::App* edit);
void register_show(CLI::App* edit);

}  // namespace stem::cli
