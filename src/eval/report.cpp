// HTML + inline SVG rendering of a run comparison (see report.h).
#include "stem/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "io/files.h"

namespace stem {
namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string num(double x, int prec = 2) {
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", prec, x);
  return b;
}

// Mean over a centred window: train losses are noisy step to step.
std::vector<std::pair<double, double>> smooth(const std::vector<std::pair<double, double>>& p, int w) {
  std::vector<std::pair<double, double>> o;
  for (size_t i = 0; i < p.size(); ++i) {
    const size_t a = i >= static_cast<size_t>(w) ? i - w : 0, b = std::min(p.size(), i + w + 1);
    double s = 0;
    for (size_t j = a; j < b; ++j) s += p[j].second;
    o.emplace_back(p[i].first, s / static_cast<double>(b - a));
  }
  return o;
}

// "Nice" tick step for a range.
double tick_step(double range, int target) {
  const double raw = range / target, mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (raw <= m * mag) return m * mag;
  return 10 * mag;
}


// The frame of a chart: background, grid, ticks, axis labels and box; maps
// data to pixels (x on a log10 scale when log_x).
struct Frame {
  int W, H;
  double x0, x1, ylo, yhi;
  bool log_x;
  static constexpr double ml = 56, mr = 16, mt = 16, mb = 44;
  double fx(double x) const { return log_x ? std::log10(x) : x; }
  double X(double x) const { return ml + (fx(x) - fx(x0)) / (fx(x1) - fx(x0)) * (W - ml - mr); }
  double Y(double y) const { return mt + (yhi - std::min(y, yhi)) / (yhi - ylo) * (H - mt - mb); }

  void open(std::ostringstream& s, const std::string& x_label, const std::string& y_label) const {
    s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
      << "\" viewBox=\"0 0 " << W << " " << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
    s << "<rect x=\"0\" y=\"0\" width=\"" << W << "\" height=\"" << H << "\" fill=\"white\"/>\n";
    const double ys = tick_step(yhi - ylo, 6);
    for (double y = std::ceil(ylo / ys) * ys; y <= yhi; y += ys)
      s << "<line x1=\"" << ml << "\" x2=\"" << W - mr << "\" y1=\"" << Y(y) << "\" y2=\"" << Y(y)
        << "\" stroke=\"#e5e5e5\"/><text x=\"" << ml - 6 << "\" y=\"" << Y(y) + 4
        << "\" text-anchor=\"end\" fill=\"#555\">" << num(y, ys < 0.1 ? 2 : 1) << "</text>\n";
    std::vector<double> xt;
    if (log_x) {
      for (double d = std::pow(10.0, std::floor(std::log10(x0))); d <= x1; d *= 10)
        for (double m : {1.0, 2.0, 5.0})
          if (m * d >= x0 && m * d <= x1) xt.push_back(m * d);
    } else {
      const double xs = tick_step(x1 - x0, 8);
      for (double x = std::ceil(x0 / xs) * xs; x <= x1; x += xs) xt.push_back(x);
    }
    for (double x : xt)
      s << "<line x1=\"" << X(x) << "\" x2=\"" << X(x) << "\" y1=\"" << mt << "\" y2=\"" << H - mb
        << "\" stroke=\"#f0f0f0\"/><text x=\"" << X(x) << "\" y=\"" << H - mb + 16
        << "\" text-anchor=\"middle\" fill=\"#555\">" << static_cast<long>(x) << "</text>\n";
    s << "<text x=\"" << (ml + W - mr) / 2 << "\" y=\"" << H - 8 << "\" text-anchor=\"middle\">" << esc(x_label)
      << "</text>\n";
    s << "<text transform=\"translate(14," << (mt + H - mb) / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
      << esc(y_label) << "</text>\n";
    s << "<rect x=\"" << ml << "\" y=\"" << mt << "\" width=\"" << W - ml - mr << "\" height=\"" << H - mt - mb
      << "\" fill=\"none\" stroke=\"#999\"/>\n";
  }
  std::string path(const std::vector<std::pair<double, double>>& p) const {
    std::ostringstream o;
    for (auto [x, y] : p) o << (o.tellp() ? " L" : "M") << num(X(x), 1) << "," << num(Y(y), 1);
    return o.str();
  }
  void legend(std::ostringstream& s, int i, const std::string& color, const std::string& text) const {
    const double ly = mt + 14 + 18 * i;
    s << "<line x1=\"" << W - mr - 290 << "\" x2=\"" << W - mr - 270 << "\" y1=\"" << ly - 4 << "\" y2=\"" << ly - 4
      << "\" stroke=\"" << color << "\" stroke-width=\"2.5\"/><text x=\"" << W - mr - 264 << "\" y=\"" << ly << "\">"
      << esc(text) << "</text>\n";
  }
};

// x and y ranges of the finite points of the given series.
bool extent(const std::vector<const std::vector<std::pair<double, double>>*>& series, double& x0, double& x1,
            double& y0, double& y1) {
  x0 = y0 = 1e300;
  x1 = y1 = -1e300;
  for (const auto* s : series)
    for (auto [x, y] : *s) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  if (x0 > x1) return false;
  if (x1 == x0) x1 = x0 + 1;
  return true;
}

}  // namespace

std::string svg_loss_chart(const std::vector<Curve>& curves, int W, int H) {
  std::vector<const std::vector<std::pair<double, double>>*> series;
  for (const Curve& c : curves) series.insert(series.end(), {&c.train, &c.val});
  double x0, x1, y0, y1;
  if (!extent(series, x0, x1, y0, y1)) return "<p>(no data)</p>";
  // Start the y axis below the curves' early spike: the interesting part is the tail.
  double ytop = y1;
  for (const Curve& c : curves) {
    const auto s = smooth(c.train, 5);
    if (s.size() > 4) ytop = std::min(ytop, std::max(s[s.size() / 10].second, y0 + 0.5));
  }
  ytop = std::max(ytop, y0 + 0.1);
  for (const Curve& c : curves)
    for (auto [x, y] : c.val) ytop = std::max(ytop, y);
  const double pad = 0.05 * (ytop - y0);
  const Frame f{W, H, x0, x1, y0 - pad, ytop + pad, false};
  std::ostringstream s;
  f.open(s, "step", "loss (nats/token)");
  int legend = 0;
  for (const Curve& c : curves) {
    if (!c.train.empty())
      s << "<path d=\"" << f.path(smooth(c.train, 5)) << "\" fill=\"none\" stroke=\"" << c.color
        << "\" stroke-width=\"1.5\" opacity=\"0.55\"/>\n";
    if (!c.val.empty())
      s << "<path d=\"" << f.path(c.val) << "\" fill=\"none\" stroke=\"" << c.color << "\" stroke-width=\"2.5\"/>\n";
    for (auto [x, y] : c.val)
      s << "<circle cx=\"" << num(f.X(x), 1) << "\" cy=\"" << num(f.Y(y), 1) << "\" r=\"3\" fill=\"" << c.color << "\"/>\n";
    f.legend(s, legend++, c.color, c.label + (c.train.empty() ? "" : " (thin: train, dots: validation)"));
  }
  s << "</svg>\n";
  return s.str();
}

std::string svg_xy_chart(const XYChart& chart, int W, int H) {
  std::vector<const std::vector<std::pair<double, double>>*> series;
  for (const Curve& c : chart.curves) series.push_back(&c.train);
  double x0, x1, y0, y1;
  if (!extent(series, x0, x1, y0, y1) || (chart.log_x && x0 <= 0)) return "<p>(no data)</p>";
  const double pad = 0.05 * std::max(y1 - y0, 1e-9);
  const Frame f{W, H, x0, x1, y0 - pad, y1 + pad, chart.log_x};
  std::ostringstream s;
  f.open(s, chart.x_label, chart.y_label);
  int legend = 0;
  for (const Curve& c : chart.curves) {
    s << "<path d=\"" << f.path(c.train) << "\" fill=\"none\" stroke=\"" << c.color << "\" stroke-width=\"2\"/>\n";
    for (auto [x, y] : c.train)
      s << "<circle cx=\"" << num(f.X(x), 1) << "\" cy=\"" << num(f.Y(y), 1) << "\" r=\"3\" fill=\"" << c.color << "\"/>\n";
    f.legend(s, legend++, c.color, c.label);
  }
  s << "</svg>\n";
  return s.str();
}

namespace {

void table_html(std::ostringstream& h, const ReportTable& t) {
  if (t.header.empty()) return;
  h << "<table>\n<tr>";
  for (const auto& c : t.header) h << "<th>" << esc(c) << "</th>";
  h << "</tr>\n";
  for (const auto& row : t.rows) {
    h << "<tr>";
    for (const auto& c : row) h << "<td>" << esc(c) << "</td>";
    h << "</tr>\n";
  }
  h << "</table>\n";
}

// White (0) to dark green (1); the value printed in the cell.
void heatmap_html(std::ostringstream& h, const HeatMap& m) {
  h << "<h3>" << esc(m.title) << "</h3>\n<table>\n<tr><th>" << esc(m.row_label) << " \\ " << esc(m.col_label) << "</th>";
  for (const auto& c : m.cols) h << "<th>" << esc(c) << "</th>";
  h << "</tr>\n";
  for (size_t r = 0; r < m.rows.size(); ++r) {
    h << "<tr><th>" << esc(m.rows[r]) << "</th>";
    for (size_t c = 0; c < m.cols.size(); ++c) {
      const double v = r < m.values.size() && c < m.values[r].size() ? m.values[r][c] : NAN;
      if (!std::isfinite(v)) {
        h << "<td></td>";
        continue;
      }
      const double a = std::clamp(v, 0.0, 1.0);
      const int g = static_cast<int>(255 - a * 155), rb = static_cast<int>(255 - a * 215);
      h << "<td style=\"background:rgb(" << rb << "," << g << "," << rb << ");color:" << (a > 0.6 ? "white" : "#222")
        << "\">" << num(v, 2) << "</td>";
    }
    h << "</tr>\n";
  }
  h << "</table>\n";
}

}  // namespace

std::string render_html(const Report& r) {
  std::ostringstream h;
  h << "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" << esc(r.title)
    << "</title>\n<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222;line-height:1.45}"
       "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}"
       "th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}"
       "pre{white-space:pre-wrap;background:#f8f8f8;padding:10px;border:1px solid #e5e5e5}"
       ".note{color:#666;font-size:90%}</style></head><body>\n";
  h << "<h1>" << esc(r.title) << "</h1>\n<p>" << esc(r.intro) << "</p>\n";
  table_html(h, r.table);
  if (!r.curves.empty()) h << "<h2>Loss curves</h2>\n" << svg_loss_chart(r.curves);
  if (!r.samples.empty()) h << "<h2>Samples</h2>\n";
  for (const auto& [label, text] : r.samples) h << "<h3>" << esc(label) << "</h3>\n<pre>" << esc(text) << "</pre>\n";
  for (const ReportSection& sec : r.sections) {
    h << "<h2>" << esc(sec.heading) << "</h2>\n";
    for (const auto& p : sec.paragraphs) h << "<p>" << esc(p) << "</p>\n";
    table_html(h, sec.table);
    for (const XYChart& c : sec.charts) h << svg_xy_chart(c);
    for (const HeatMap& m : sec.heatmaps) heatmap_html(h, m);
  }
  for (const auto& n : r.notes) h << "<p class=\"note\">" << esc(n) << "</p>\n";
  h << "</body></html>\n";
  return h.str();
}

Status write_report(const std::string& path, const Report& r) {
  return io::write_text_atomic(path, render_html(r));
}

}  // namespace stem
