// A self-contained HTML report comparing training runs: a results table,
// loss curves drawn as an inline SVG chart (no scripts, no external files),
// text samples, and further sections (tables, x-y charts, heat maps). It
// formats what it is given; it computes nothing.
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

// Lines through points: each curve's `train` series (its `val` is unused).
struct XYChart {
  std::string x_label, y_label;
  bool log_x = false;
  std::vector<Curve> curves;
};

// A grid of values in [0, 1] (NaN: no data) drawn as shaded cells.
struct HeatMap {
  std::string title, row_label, col_label;
  std::vector<std::string> rows, cols;
  std::vector<std::vector<double>> values;  // [rows][cols]
};

struct ReportSection {
  std::string heading;
  std::vector<std::string> paragraphs;  // plain text
  ReportTable table;                    // skipped when it has no header
  std::vector<XYChart> charts;
  std::vector<HeatMap> heatmaps;
};

struct Report {
  std::string title;
  std::string intro;                 // a paragraph of plain text
  ReportTable table;
  std::vector<Curve> curves;         // loss curves (none: no chart)
  std::vector<std::pair<std::string, std::string>> samples;  // (label, text)
  std::vector<ReportSection> sections;
  std::vector<std::string> notes;    // footnotes, plain text
};

std::string svg_loss_chart(const std::vector<Curve>& curves, int width = 760, int height = 380);
std::string svg_xy_chart(const XYChart& chart, int width = 760, int height = 380);
std::string render_html(const Report& r);
Status write_report(const std::string& path, const Report& r);  // atomic

}  // namespace stem
