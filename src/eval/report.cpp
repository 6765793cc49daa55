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

}  // namespace

std::string svg_loss_chart(const std::vector<Curve>& curves, int W, int H) {
  const double ml = 56, mr = 16, mt = 16, mb = 44;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const Curve& c : curves)
    for (const auto* s : {&c.train, &c.val})
      for (auto [x, y] : *s) {
        if (!std::isfinite(y)) continue;
        x0 = std::min(x0, x);
        x1 = std::max(x1, x);
        y0 = std::min(y0, y);
        y1 = std::max(y1, y);
      }
  if (x0 > x1) return "<p>(no data)</p>";
  if (x1 == x0) x1 = x0 + 1;
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
  const double ylo = y0 - pad, yhi = ytop + pad;
  auto X = [&](double x) { return ml + (x - x0) / (x1 - x0) * (W - ml - mr); };
  auto Y = [&](double y) { return mt + (yhi - std::min(y, yhi)) / (yhi - ylo) * (H - mt - mb); };
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" viewBox=\"0 0 " << W << " " << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<rect x=\"0\" y=\"0\" width=\"" << W << "\" height=\"" << H << "\" fill=\"white\"/>\n";
  const double ys = tick_step(yhi - ylo, 6);
  for (double y = std::ceil(ylo / ys) * ys; y <= yhi; y += ys)
    s << "<line x1=\"" << ml << "\" x2=\"" << W - mr << "\" y1=\"" << Y(y) << "\" y2=\"" << Y(y)
      << "\" stroke=\"#e5e5e5\"/><text x=\"" << ml - 6 << "\" y=\"" << Y(y) + 4
      << "\" text-anchor=\"end\" fill=\"#555\">" << num(y, ys < 0.1 ? 2 : 1) << "</text>\n";
  const double xs = tick_step(x1 - x0, 8);
  for (double x = std::ceil(x0 / xs) * xs; x <= x1; x += xs)
    s << "<line x1=\"" << X(x) << "\" x2=\"" << X(x) << "\" y1=\"" << mt << "\" y2=\"" << H - mb
      << "\" stroke=\"#f0f0f0\"/><text x=\"" << X(x) << "\" y=\"" << H - mb + 16
      << "\" text-anchor=\"middle\" fill=\"#555\">" << static_cast<long>(x) << "</text>\n";
  s << "<text x=\"" << (ml + W - mr) / 2 << "\" y=\"" << H - 8 << "\" text-anchor=\"middle\">step</text>\n";
  s << "<text transform=\"translate(14," << (mt + H - mb) / 2
    << ") rotate(-90)\" text-anchor=\"middle\">loss (nats/token)</text>\n";
  s << "<rect x=\"" << ml << "\" y=\"" << mt << "\" width=\"" << W - ml - mr << "\" height=\"" << H - mt - mb
    << "\" fill=\"none\" stroke=\"#999\"/>\n";
  int legend = 0;
  for (const Curve& c : curves) {
    std::ostringstream path;
    for (auto [x, y] : smooth(c.train, 5)) path << (path.tellp() ? " L" : "M") << num(X(x), 1) << "," << num(Y(y), 1);
    s << "<path d=\"" << path.str() << "\" fill=\"none\" stroke=\"" << c.color
      << "\" stroke-width=\"1.5\" opacity=\"0.55\"/>\n";
    std::ostringstream vpath;
    for (auto [x, y] : c.val) vpath << (vpath.tellp() ? " L" : "M") << num(X(x), 1) << "," << num(Y(y), 1);
    if (!c.val.empty())
      s << "<path d=\"" << vpath.str() << "\" fill=\"none\" stroke=\"" << c.color << "\" stroke-width=\"2.5\"/>\n";
    for (auto [x, y] : c.val)
      s << "<circle cx=\"" << num(X(x), 1) << "\" cy=\"" << num(Y(y), 1) << "\" r=\"3\" fill=\"" << c.color << "\"/>\n";
    const double ly = mt + 14 + 18 * legend++;
    s << "<line x1=\"" << W - mr - 290 << "\" x2=\"" << W - mr - 270 << "\" y1=\"" << ly - 4 << "\" y2=\"" << ly - 4
      << "\" stroke=\"" << c.color << "\" stroke-width=\"2.5\"/><text x=\"" << W - mr - 264 << "\" y=\"" << ly
      << "\">" << esc(c.label) << " (thin: train, dots: validation)</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

std::string render_html(const Report& r) {
  std::ostringstream h;
  h << "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" << esc(r.title)
    << "</title>\n<style>body{font-family:sans-serif;max-width:860px;margin:2em auto;color:#222;line-height:1.45}"
       "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}"
       "th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}"
       "pre{white-space:pre-wrap;background:#f8f8f8;padding:10px;border:1px solid #e5e5e5}"
       ".note{color:#666;font-size:90%}</style></head><body>\n";
  h << "<h1>" << esc(r.title) << "</h1>\n<p>" << esc(r.intro) << "</p>\n<table>\n<tr>";
  for (const auto& c : r.table.header) h << "<th>" << esc(c) << "</th>";
  h << "</tr>\n";
  for (const auto& row : r.table.rows) {
    h << "<tr>";
    for (const auto& c : row) h << "<td>" << esc(c) << "</td>";
    h << "</tr>\n";
  }
  h << "</table>\n<h2>Loss curves</h2>\n" << svg_loss_chart(r.curves) << "<h2>Samples</h2>\n";
  for (const auto& [label, text] : r.samples) h << "<h3>" << esc(label) << "</h3>\n<pre>" << esc(text) << "</pre>\n";
  for (const auto& n : r.notes) h << "<p class=\"note\">" << esc(n) << "</p>\n";
  h << "</body></html>\n";
  return h.str();
}

Status write_report(const std::string& path, const Report& r) {
  return io::write_text_atomic(path, render_html(r));
}

}  // namespace stem
