// The task half of `stem eval` (cmd_eval_tasks.cpp): its flags, and running
// the tasks they name on a loaded model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "commands.h"
#include "stem/eval.h"

namespace stem::cli {

struct TaskFlags {
  std::vector<std::string> tasks;
  std::string dir = "tasks", format = "auto", samples, capacity;
  int64_t limit = 0;
  bool no_share = false;
};
void add_task_flags(CLI::App* sub, TaskFlags* f);
// Prints the results (or JSON); returns the exit code.
int run_tasks(Model& model, const TaskFlags& f, bool json);
// --capacity: the knowledge the model holds of a bios.json table.
int run_capacity(Model& model, const TaskFlags& f, bool json);

}  // namespace stem::cli
