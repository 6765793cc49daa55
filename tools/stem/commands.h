// The subcommands of `stem` and what they share: registration, error printing
// (one line, "stem <cmd>: <message>", exit 1), --json output, progress lines.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "stem/model.h"
#include "stem/status.h"
#include "stem/tasks.h"

namespace stem::cli {

// Adds `sub` with the function that runs it; `run` returns the exit code.
void add_command(CLI::App* sub, std::function<int()> run);
void register_all(CLI::App& app);
int run_selected(CLI::App& app);

// Prints "stem <cmd>: <message>" on stderr and returns 1.
int fail(const std::string& cmd, const Status& st);
// Prints a JSON object on stdout (pretty when stdout is a terminal).
void print_json(const nlohmann::json& j);

// Progress of long work on stderr: a bar redrawn in place on a terminal; in a
// log file, CI or under nohup, a plain line every few seconds (and one at the
// end if any was printed), so a long command never looks hung.
class Progress {
 public:
  Progress(std::string label, int64_t total);
  void update(int64_t done, const std::string& extra = "");
  void finish();

 private:
  static constexpr double kLineEverySeconds = 5.0;
  std::string label_;
  int64_t total_;
  bool tty_;
  double t0_, last_line_ = 0;
  int64_t done_ = 0;
  std::string extra_;
  bool printed_ = false;
};

// How a model is loaded for inference: --tables, --table-cache-mb, --dtype,
// --no-pack and --no-prefetch (every command that takes --tables takes all).
struct LoadFlags {
  std::string tables = "ram", dtype = "f32";  // checked against their choices when parsed
  LoadOptions load;  // the other fields; options() adds tables and dtype
  bool no_prefetch = false;
  LoadOptions options() const;
};
void add_load_flags(CLI::App* sub, LoadFlags* f);
// The flags as a JSON object, for --json reports.
nlohmann::json load_flags_json(const LoadFlags& f);

// --edit FILE (repeatable): edit overlays (src/edit/overlay.h) applied in
// order right after the model loads; apply_edits() applies them, errors name
// the file. The checkpoint on disk is never changed.
void add_edit_option(CLI::App* sub, std::vector<std::string>* files);
Status apply_edits(Model& m, const std::vector<std::string>& files);

// The sources of the built-in tasks: each given path, "none" for no source,
// or (not given) its default when it exists: data/task-sources/emma.txt,
// /usr/share/wordnet, data/task-sources/countries-list.
TaskSources task_sources(const std::string& book, const std::string& wordnet, const std::string& countries);
// Lines saying which tasks those sources leave out, and how to get them.
std::vector<std::string> skipped_tasks(const TaskSources& s);

// The commands, one file each.
void register_init(CLI::App& app);
void register_score(CLI::App& app);
void register_grad(CLI::App& app);
void register_inspect(CLI::App& app);
void register_bench(CLI::App& app);
void register_train(CLI::App& app);
void register_demo(CLI::App& app);
void register_prepare(CLI::App& app);
void register_generate(CLI::App& app);
void register_eval(CLI::App& app);
void register_convert(CLI::App& app);
void register_edit(CLI::App& app);
void register_analyze(CLI::App& app);
void register_tasks(CLI::App& app);
void register_study(CLI::App& app);
void register_serve(CLI::App& app);

}  // namespace stem::cli
