// stem: the command-line front end. One subcommand per file (cmd_*.cpp), each
// registering itself with CLI11; this file only dispatches and maps errors to
// exit codes (0 ok, 1 failure, 2 usage). Signals are received by one thread
// started here, before any other exists (stem/signals.h): no handler ever runs
// on a thread that may be inside oneDNN.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "commands.h"
#include "stem/signals.h"

int main(int argc, char** argv) {
  if (stem::Status st = stem::install_signal_receiver(); !st.ok()) {
    std::fprintf(stderr, "stem: %s\n", st.message().c_str());
    return 1;
  }
  CLI::App app{"stem: train, run, evaluate and edit STEM language models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "stem 0.1.0");
  stem::cli::register_all(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, version or the usage error
    return code == 0 ? 0 : 2;
  }
  return stem::cli::run_selected(app);
}
