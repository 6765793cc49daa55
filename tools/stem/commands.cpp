// Shared plumbing of the subcommands (see commands.h).
#include "commands.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>

#include "stem/edit.h"

namespace stem::cli {
namespace {
std::map<CLI::App*, std::function<int()>>& registry() {
  static std::map<CLI::App*, std::function<int()>> r;
  return r;
}
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void add_command(CLI::App* sub, std::function<int()> run) { registry()[sub] = std::move(run); }

void register_all(CLI::App& app) {
  register_init(app);
  register_score(app);
  register_grad(app);
  register_inspect(app);
  register_bench(app);
  register_train(app);
  register_demo(app);
  register_prepare(app);
  register_generate(app);
  register_eval(app);
  register_convert(app);
  register_edit(app);
  register_analyze(app);
  register_tasks(app);
  register_study(app);
  register_serve(app);
}

TaskSources task_sources(const std::string& book, const std::string& wordnet, const std::string& countries) {
  auto source = [](const std::string& given, const std::string& fallback) -> std::string {
    std::error_code ec;
    if (given == "none") return "";
    return !given.empty() ? given : std::filesystem::exists(fallback, ec) ? fallback : "";
  };
  TaskSources s;
  s.book = source(book, "data/task-sources/emma.txt");
  s.wordnet = source(wordnet, "/usr/share/wordnet");
  s.countries = source(countries, "data/task-sources/countries-list");
  return s;
}

std::vector<std::string> skipped_tasks(const TaskSources& s) {
  std::vector<std::string> out;
  if (s.book.empty()) out.push_back("cloze and needle: no --book (scripts/setup.sh --tasks fetches one)");
  if (s.wordnet.empty()) out.push_back("definitions: no --wordnet (apt package wordnet-base)");
  if (s.countries.empty()) out.push_back("world facts: no --countries (scripts/setup.sh --tasks fetches it)");
  return out;
}

int run_selected(CLI::App& app) {
  for (auto& [sub, run] : registry())
    if (sub->parsed()) return run();
  std::fprintf(stderr, "stem: no subcommand (see stem --help)\n");
  return 2;
}

void add_load_flags(CLI::App* sub, LoadFlags* f) {
  sub->add_option("--tables", f->tables,
                  "Where STEM tables live: ram (resident), mmap (paged in from the file on demand), "
                  "disk (explicit reads into a row cache)")
      ->check(CLI::IsMember({"ram", "mmap", "disk"}))
      ->capture_default_str();
  sub->add_option("--table-cache-mb", f->load.table_cache_mb, "Row cache budget of the disk tier, MiB")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--dtype", f->dtype,
                  "Weight matrices in memory: f32, bf16, auto (as stored), or q8 (8-bit blocks made at load; "
                  "decoding only)")
      ->check(CLI::IsMember({"f32", "bf16", "auto", "q8"}))
      ->capture_default_str();
  sub->add_flag("--no-pack", [f](int64_t) { f->load.packed_tables = false; },
                "mmap/disk: ignore tables.stem (the row-major pack) and read model.safetensors");
  sub->add_flag("--no-prefetch", f->no_prefetch,
                "Fetch table rows when they are needed instead of on a background thread ahead of time "
                "(score and eval read a batch's rows before its forward pass either way)");
}

LoadOptions LoadFlags::options() const {
  LoadOptions o = load;
  o.tables = *parse_tables_in(tables);  // CLI11 checked the choices
  o.dtype = *parse_weight_dtype(dtype);
  return o;
}

nlohmann::json load_flags_json(const LoadFlags& f) {
  return {{"tables", f.tables}, {"table_cache_mb", f.load.table_cache_mb}, {"dtype", f.dtype},
          {"packed_tables", f.load.packed_tables}, {"prefetch", !f.no_prefetch}};
}

void add_edit_option(CLI::App* sub, std::vector<std::string>* files) {
  sub->add_option("--edit", *files, "Edit overlay (from `stem edit swap|inject`) applied after loading; repeatable, in order");
}

Status apply_edits(Model& m, const std::vector<std::string>& files) {
  if (files.empty()) return ok_status();
  return apply_overlays(m, files).status();  // applied for the rest of the command
}

int fail(const std::string& cmd, const Status& st) {
  // A message that already starts with the command's own name ("train: ...",
  // or "swap: ..." for "edit swap") does not repeat it.
  const std::string& m = st.message();
  const std::string last = cmd.substr(cmd.rfind(' ') + 1);
  size_t skip = 0;
  if (m.rfind(cmd + ": ", 0) == 0) skip = cmd.size() + 2;
  else if (m.rfind(last + ": ", 0) == 0) skip = last.size() + 2;
  std::fprintf(stderr, "stem %s: %s\n", cmd.c_str(), m.c_str() + skip);
  return 1;
}

void print_json(const nlohmann::json& j) {
  std::cout << j.dump(isatty(STDOUT_FILENO) ? 2 : -1) << std::endl;
}

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), tty_(isatty(STDERR_FILENO)), t0_(now_seconds()) {}

void Progress::update(int64_t done, const std::string& extra) {
  const double el = now_seconds() - t0_;
  const double frac = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
  const double eta = frac > 0 ? el / frac - el : 0.0;
  done_ = done;
  extra_ = extra;
  if (!tty_) {
    if (el - last_line_ < kLineEverySeconds) return;
    last_line_ = el;
    printed_ = true;
    std::fprintf(stderr, "%s: %ld/%ld %s (%.0fs, eta %.0fs)\n", label_.c_str(), static_cast<long>(done),
                 static_cast<long>(total_), extra.c_str(), el, eta);
    std::fflush(stderr);
    return;
  }
  const int width = 30;
  const int fill = static_cast<int>(frac * width);
  std::fprintf(stderr, "\r%s [%.*s%*s] %ld/%ld %s eta %.0fs   ", label_.c_str(), fill,
               "##############################", width - fill, "", static_cast<long>(done),
               static_cast<long>(total_), extra.c_str(), eta);
  std::fflush(stderr);
}

void Progress::finish() {
  if (!tty_) {
    if (printed_)
      std::fprintf(stderr, "%s: %ld/%ld %s done in %.0fs\n", label_.c_str(), static_cast<long>(done_),
                   static_cast<long>(total_), extra_.c_str(), now_seconds() - t0_);
    return;
  }
  std::fprintf(stderr, "\r%*s\r", 100, "");
  std::fflush(stderr);
}

}  // namespace stem::cli
