// Near-duplicate cluster montage; see montage.h.
#include "florence/curate/montage.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>

#include "florence/core/error.h"

namespace florence::curate {

namespace {
constexpr int kPad = 6;          // px between tiles
constexpr int kCaptionH = 14;    // px per caption line
constexpr int kTitleH = 22;
constexpr double kFontScale = 0.33;
const cv::Scalar kWhite(255, 255, 255), kBlack(0, 0, 0), kGrey(200, 200, 200);
const cv::Scalar kKeptFrame(30, 160, 60), kRemovedFrame(200, 40, 40);  // RGB

std::string fit(const std::string& s, int width_px) {
  int base = 0;
  std::string out = s;
  while (!out.empty() && cv::getTextSize(out, cv::FONT_HERSHEY_SIMPLEX, kFontScale, 1, &base).width > width_px)
    out.erase(0, 1);  // keep the end of a key: its file name part is the informative one
  return out;
}
}  // namespace

cv::Mat thumbnail(const cv::Mat& rgb, int size) {
  if (rgb.empty()) throw Error("montage: empty image");
  if (size < 8) throw Error("montage: tile size must be >= 8");
  const double scale = std::min(double(size) / rgb.cols, double(size) / rgb.rows);
  const int w = std::max(1, int(rgb.cols * scale + 0.5)), h = std::max(1, int(rgb.rows * scale + 0.5));
  cv::Mat small;
  cv::resize(rgb, small, cv::Size(w, h), 0, 0, scale < 1 ? cv::INTER_AREA : cv::INTER_NEAREST);
  cv::Mat canvas(size, size, CV_8UC3, kWhite);
  small.copyTo(canvas(cv::Rect((size - w) / 2, (size - h) / 2, w, h)));
  return canvas;
}

cv::Mat compose_montage(const std::vector<std::vector<MontageTile>>& rows, int size, const std::string& title) {
  if (size < 8) throw Error("montage: tile size must be >= 8");
  size_t cols = 1;
  for (const auto& r : rows) cols = std::max(cols, r.size());
  const int cell_w = size + kPad, cell_h = size + 2 * kCaptionH + kPad;
  const int width = kPad + int(cols) * cell_w, height = kTitleH + kPad + int(std::max<size_t>(1, rows.size())) * cell_h;
  cv::Mat canvas(height, width, CV_8UC3, kWhite);
  cv::putText(canvas, title, cv::Point(kPad, 15), cv::FONT_HERSHEY_SIMPLEX, 0.45, kBlack, 1, cv::LINE_AA);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t c = 0; c < rows[r].size(); ++c) {
      const MontageTile& t = rows[r][c];
      const int x = kPad + int(c) * cell_w, y = kTitleH + kPad + int(r) * cell_h;
      cv::Mat tile = t.rgb.empty() ? cv::Mat(size, size, CV_8UC3, kGrey) : thumbnail(t.rgb, size);
      tile.copyTo(canvas(cv::Rect(x, y, size, size)));
      cv::rectangle(canvas, cv::Rect(x - 2, y - 2, size + 4, size + 4), t.representative ? kKeptFrame : kRemovedFrame, 2);
      cv::putText(canvas, fit(t.caption, size), cv::Point(x, y + size + kCaptionH - 3), cv::FONT_HERSHEY_SIMPLEX,
                  kFontScale, kBlack, 1, cv::LINE_AA);
      cv::putText(canvas, fit(t.subcaption, size), cv::Point(x, y + size + 2 * kCaptionH - 3), cv::FONT_HERSHEY_SIMPLEX,
                  kFontScale, kBlack, 1, cv::LINE_AA);
    }
  }
  return canvas;
}

void write_png_rgb(const cv::Mat& rgb, const std::string& path) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  bool ok = false;
  try {
    ok = cv::imwrite(path, bgr);
  } catch (const cv::Exception& e) {
    throw Error("cannot write '" + path + "': " + e.what());
  }
  if (!ok) throw Error("cannot write '" + path + "'");
}

}  // namespace florence::curate
