// stem: the command-line front end. One subcommand per file (cmd_*.cpp), each
// registering itself with CLI11; this file only dispatches and maps errors to
// exit codes (0 ok, 1 failure, 2 usage).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "commands.h"

int main(int argc, char** argv) {
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
