// Task files (include/stem/eval.h): stem's JSON lines layout and the
// published layouts of ARC, PIQA and HellaSwag, turned into contexts and
// choices as lm-evaluation-harness prompts them. It reads and checks; it does
// not tokenize or score (harness.cpp does).
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <regex>

#include "io/files.h"
#include "io/json_lines.h"
#include "io/json_text.h"
#include "stem/eval.h"

namespace stem {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

const std::map<std::string, TaskFormat>& format_names() {
  static const std::map<std::string, TaskFormat> m = {{"auto", TaskFormat::Auto},
                                                      {"stem", TaskFormat::Stem},
                                                      {"arc", TaskFormat::Arc},
                                                      {"piqa", TaskFormat::Piqa},
                                                      {"hellaswag", TaskFormat::HellaSwag}};
  return m;
}

Status field_error(const std::string& where, const std::string& key, const std::string& want, const json& j) {
  return Status::error(where + ": \"" + key + "\" must be " + want +
                       (j.contains(key) ? " (got " + io::shown(j[key]) + ")" : std::string(" (missing)")));
}

// An integer label written as a number or as a string of digits ("3").
Result<int> int_field(const json& j, const std::string& key, const std::string& where) {
  if (j.contains(key)) {
    const json& v = j[key];
    if (v.is_number_integer()) return v.get<int>();
    if (v.is_string()) {
      const std::string& s = v.get_ref<const std::string&>();
      if (!s.empty() && s.size() < 9 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); }))
        return std::stoi(s);
    }
  }
  return field_error(where, key, "an integer", j);
}

Result<std::vector<std::string>> string_list(const json& j, const std::string& key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_array()) return field_error(where, key, "a list of strings", j);
  std::vector<std::string> out;
  for (const json& v : j[key]) {
    if (!v.is_string()) return field_error(where, key, "a list of strings", j);
    out.push_back(v.get<std::string>());
  }
  return out;
}

Status check_choices(const TaskExample& e, const std::string& where, const std::string& key) {
  if (e.choices.size() < 2)
    return Status::error(where + ": \"" + key + "\" needs at least 2 choices, got " + std::to_string(e.choices.size()));
  for (size_t i = 0; i < e.choices.size(); ++i)
    if (e.choices[i].empty()) return Status::error(where + ": \"" + key + "\" choice " + std::to_string(i) + " is empty");
  if (e.gold < 0 || e.gold >= static_cast<int>(e.choices.size()))
    return Status::error(where + ": gold " + std::to_string(e.gold) + " is out of range for " +
                         std::to_string(e.choices.size()) + " choices");
  return ok_status();
}

std::string id_of(const json& j, const std::string& key, int64_t line) {
  if (j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
  if (j.contains(key) && j[key].is_number_integer()) return std::to_string(j[key].get<int64_t>());
  return std::to_string(line);
}

// stem's own layout: {"context", "choices", "gold"} or {"context", "target"}.
Result<TaskExample> read_stem(const io::JsonLine& l, TaskKind* kind) {
  const json& j = l.value;
  TaskExample e;
  STEM_ASSIGN_OR_RETURN(e.context, io::string_field(j, "context", l.where, true));
  if (j.contains("target")) {
    *kind = TaskKind::Cloze;
    STEM_ASSIGN_OR_RETURN(e.target, io::string_field(j, "target", l.where));
    return e;
  }
  *kind = TaskKind::MultipleChoice;
  STEM_ASSIGN_OR_RETURN(e.choices, string_list(j, "choices", l.where));
  STEM_ASSIGN_OR_RETURN(e.gold, int_field(j, "gold", l.where));
  STEM_RETURN_IF_ERROR(check_choices(e, l.where, "choices"));
  return e;
}

// ARC: the AI2 layout {"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}
// or the Hugging Face one {"question": "...", "choices": {"text": [...], "label": [...]}, "answerKey"}.
Result<TaskExample> read_arc(const io::JsonLine& l) {
  const json& j = l.value;
  TaskExample e;
  std::string question;
  std::vector<std::string> labels;
  if (j.contains("question") && j["question"].is_object()) {
    const json& q = j["question"];
    STEM_ASSIGN_OR_RETURN(question, io::string_field(q, "stem", l.where + ": question"));
    if (!q.contains("choices") || !q["choices"].is_array())
      return field_error(l.where + ": question", "choices", "a list of {text, label}", q);
    for (const json& c : q["choices"]) {
      if (!c.is_object()) return field_error(l.where + ": question", "choices", "a list of {text, label}", q);
      STEM_ASSIGN_OR_RETURN(std::string text, io::string_field(c, "text", l.where + ": question.choices"));
      STEM_ASSIGN_OR_RETURN(std::string label, io::string_field(c, "label", l.where + ": question.choices"));
      e.choices.push_back(text);
      labels.push_back(label);
    }
  } else {
    STEM_ASSIGN_OR_RETURN(question, io::string_field(j, "question", l.where));
    if (!j.contains("choices") || !j["choices"].is_object())
      return field_error(l.where, "choices", "an object {text: [...], label: [...]}", j);
    STEM_ASSIGN_OR_RETURN(e.choices, string_list(j["choices"], "text", l.where + ": choices"));
    STEM_ASSIGN_OR_RETURN(labels, string_list(j["choices"], "label", l.where + ": choices"));
    if (labels.size() != e.choices.size())
      return Status::error(l.where + ": choices has " + std::to_string(e.choices.size()) + " texts and " +
                           std::to_string(labels.size()) + " labels");
  }
  STEM_ASSIGN_OR_RETURN(std::string key, io::string_field(j, "answerKey", l.where));
  const auto at = std::find(labels.begin(), labels.end(), key);
  if (at == labels.end()) {
    std::string all;
    for (const std::string& s : labels) all += (all.empty() ? "" : ", ") + s;
    return Status::error(l.where + ": answerKey \"" + key + "\" is not one of the labels " + all);
  }
  e.gold = static_cast<int>(at - labels.begin());
  e.context = "Question: " + question + "\nAnswer:";
  e.id = id_of(j, "id", l.line);
  STEM_RETURN_IF_ERROR(check_choices(e, l.where, "choices"));
  return e;
}

// PIQA: {"goal", "sol1", "sol2", "label"}; the label may come from FILE-labels.lst.
Result<TaskExample> read_piqa(const io::JsonLine& l, const std::vector<int>* labels, size_t index,
                              const std::string& labels_path) {
  const json& j = l.value;
  TaskExample e;
  STEM_ASSIGN_OR_RETURN(std::string goal, io::string_field(j, "goal", l.where));
  STEM_ASSIGN_OR_RETURN(std::string sol1, io::string_field(j, "sol1", l.where));
  STEM_ASSIGN_OR_RETURN(std::string sol2, io::string_field(j, "sol2", l.where));
  e.context = "Question: " + goal + "\nAnswer:";
  e.choices = {sol1, sol2};
  if (j.contains("label")) {
    STEM_ASSIGN_OR_RETURN(e.gold, int_field(j, "label", l.where));
  } else if (labels && index < labels->size()) {
    e.gold = (*labels)[index];
  } else {
    return Status::error(l.where + ": \"label\" must be an integer (missing, and " +
                         (labels ? labels_path + " has no line for it" : "no " + labels_path + " beside the file") + ")");
  }
  e.id = id_of(j, "id", l.line);
  STEM_RETURN_IF_ERROR(check_choices(e, l.where, "label"));
  return e;
}

// Python's str.replace: every non-overlapping `from`, left to right, in one pass.
std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  size_t at = 0;
  for (size_t p; (p = s.find(from, at)) != std::string::npos; at = p + from.size()) out.append(s, at, p - at).append(to);
  return out.append(s, at, std::string::npos);
}

// lm-evaluation-harness's HellaSwag text clean-up.
std::string hellaswag_clean(std::string s) {
  const size_t a = s.find_first_not_of(" \t\n\r\f\v"), b = s.find_last_not_of(" \t\n\r\f\v");
  s = a == std::string::npos ? "" : s.substr(a, b - a + 1);
  s = replace_all(s, " [title]", ". ");
  static const std::regex tags("\\[.*?\\]");
  return replace_all(std::regex_replace(s, tags, ""), "  ", " ");
}

// Python's str.capitalize() on ASCII: the first letter up, the rest down.
std::string capitalize(std::string s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 128) s[i] = static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c));
  }
  return s;
}

Result<TaskExample> read_hellaswag(const io::JsonLine& l) {
  const json& j = l.value;
  TaskExample e;
  STEM_ASSIGN_OR_RETURN(std::string activity, io::string_field(j, "activity_label", l.where, true));
  STEM_ASSIGN_OR_RETURN(std::string ctx_a, io::string_field(j, "ctx_a", l.where, true));
  STEM_ASSIGN_OR_RETURN(std::string ctx_b, io::string_field(j, "ctx_b", l.where, true));
  STEM_ASSIGN_OR_RETURN(std::vector<std::string> endings, string_list(j, "endings", l.where));
  STEM_ASSIGN_OR_RETURN(e.gold, int_field(j, "label", l.where));
  e.context = hellaswag_clean(activity + ": " + ctx_a + " " + capitalize(ctx_b));
  for (const std::string& s : endings) e.choices.push_back(hellaswag_clean(s));
  e.id = id_of(j, "ind", l.line);
  STEM_RETURN_IF_ERROR(check_choices(e, l.where, "endings"));
  return e;
}

Result<TaskFormat> detect(const io::JsonLine& l) {
  const json& j = l.value;
  if (j.contains("context") && (j.contains("choices") || j.contains("target"))) return TaskFormat::Stem;
  if (j.contains("question") && j.contains("answerKey")) return TaskFormat::Arc;
  if (j.contains("goal") && j.contains("sol1")) return TaskFormat::Piqa;
  if (j.contains("endings") && j.contains("ctx_a")) return TaskFormat::HellaSwag;
  std::string keys;
  for (const auto& [k, v] : j.items()) keys += (keys.empty() ? "" : ", ") + k;
  return Status::error(l.where + ": unknown task layout (fields: " + keys +
                       "); expected {context, choices, gold}, {context, target}, ARC, PIQA or HellaSwag");
}

Result<std::vector<int>> read_labels(const std::string& path) {
  STEM_ASSIGN_OR_RETURN(std::string text, io::read_text(path));
  const std::vector<std::string> lines = io::lines_of(text);
  std::vector<int> out;
  for (size_t line = 1; line <= lines.size(); ++line) {
    std::string s = lines[line - 1];
    while (!s.empty() && s.back() == ' ') s.pop_back();
    if (s.empty()) continue;
    if (s.size() > 8 || !std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); }))
      return Status::error(path + ":" + std::to_string(line) + ": not a label: '" + s + "'");
    out.push_back(std::stoi(s));
  }
  return out;
}

}  // namespace

Result<TaskFormat> parse_task_format(const std::string& s) {
  const auto it = format_names().find(s);
  if (it == format_names().end())
    return Status::error("task format '" + s + "' is not one of auto, stem, arc, piqa, hellaswag");
  return it->second;
}

const char* name(TaskFormat f) {
  for (const auto& [n, v] : format_names())
    if (v == f) return n.c_str();
  return "?";
}

Result<Task> read_task(const std::string& path, TaskFormat format) {
  STEM_ASSIGN_OR_RETURN(std::vector<io::JsonLine> lines, io::read_json_lines(path));
  if (lines.empty()) return Status::error(path + ": no examples (one JSON object per line)");
  Task t;
  t.path = path;
  t.name = fs::path(path).stem().string();
  if (format == TaskFormat::Auto) {
    STEM_ASSIGN_OR_RETURN(format, detect(lines[0]));
  }
  t.format = format;
  std::vector<int> labels;
  std::string labels_path = path;
  if (const size_t dot = labels_path.rfind(".jsonl"); dot != std::string::npos) labels_path.resize(dot);
  labels_path += "-labels.lst";
  std::error_code ec;
  const bool have_labels = format == TaskFormat::Piqa && fs::exists(labels_path, ec);
  if (have_labels) {
    STEM_ASSIGN_OR_RETURN(labels, read_labels(labels_path));
  }
  for (size_t i = 0; i < lines.size(); ++i) {
    const io::JsonLine& l = lines[i];
    TaskKind kind = TaskKind::MultipleChoice;
    Result<TaskExample> e = Status::error("unread");
    switch (format) {
      case TaskFormat::Stem: e = read_stem(l, &kind); break;
      case TaskFormat::Arc: e = read_arc(l); break;
      case TaskFormat::Piqa: e = read_piqa(l, have_labels ? &labels : nullptr, i, labels_path); break;
      case TaskFormat::HellaSwag: e = read_hellaswag(l); break;
      case TaskFormat::Auto: break;
    }
    if (!e.ok()) return e.status();
    if (i == 0) t.kind = kind;
    if (kind != t.kind)
      return Status::error(l.where + ": a " + (kind == TaskKind::Cloze ? "cloze" : "multiple-choice") +
                           " example in a task whose first example is " +
                           (t.kind == TaskKind::Cloze ? "cloze" : "multiple choice"));
    e->line = l.line;
    if (e->id.empty()) e->id = id_of(l.value, "id", l.line);
    t.examples.push_back(std::move(*e));
  }
  return t;
}

Result<std::string> find_task(const std::string& name_or_file, const std::string& dir) {
  std::error_code ec;
  if (fs::is_regular_file(name_or_file, ec)) return name_or_file;
  const std::string named = (fs::path(dir) / (name_or_file + ".jsonl")).string();
  if (fs::is_regular_file(named, ec)) return named;
  return Status::error("task '" + name_or_file + "': no such file, and no " + named);
}

Status write_task_samples(const std::string& path, const std::vector<std::pair<const Task*, const TaskResult*>>& runs) {
  std::string out;
  for (const auto& [task, result] : runs) {
    for (const TaskSample& s : result->samples) {
      const TaskExample& e = task->examples[static_cast<size_t>(s.index)];
      json j = {{"task", task->name}, {"index", s.index}, {"id", e.id}, {"line", e.line}, {"context", e.context}};
      if (task->kind == TaskKind::Cloze) {
        j["target"] = e.target;
      } else {
        j["choices"] = e.choices;
        j["gold"] = e.gold;
        j["pred"] = s.pred;
        j["pred_norm"] = s.pred_norm;
        j["acc_norm"] = s.correct_norm;
      }
      j["logprobs"] = s.logprobs;
      j["greedy"] = s.greedy;
      j["tokens"] = s.tokens;
      j["acc"] = s.correct;
      j["truncated"] = s.truncated;
      out += j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    }
  }
  return io::write_text_atomic(path, out);
}

}  // namespace stem
