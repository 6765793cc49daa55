// A self-contained HTML report comparing training runs: a results table,
// loss curves drawn as an inline SVG chart (no scripts, no external files),
// and text samples. It formats what it is given; it computes nothing.
#pragma once

#include <string>
#include <vector>

#include "stem/status.h"

namespace stem {

struct Curve {
  std::string label;
  std::string color;                           // CSS color
  std::vector<std::pair<double, double>> train;  // (step, loss)
  std::vector<std::pair<double, double>> val;    // (step, val loss)
};

struct ReportTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
};

struct Report {
  std::string title;
  std::string intro;                 // a paragraph of plain text
  ReportTable table;
  std::vector<Curve> curves;
  std::vector<std::pair<std::string, std::string>> samples;  // (label, text)
  std::vector<std::string> notes;    // footnotes, plain text
};

std::string svg_loss_chart(const std::vector<Curve>& curves, int width = 760, int height = 380);
std::string render_html(const Report& r);
Status write_report(const std::string& path, const Report& r);  // atomic

}  // namespace stem
