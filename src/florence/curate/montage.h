#pragma once
// A contact sheet of near-duplicate clusters, so a person can judge the threshold by eye: one row
// per cluster, its kept representative first (green frame), then removed members (red frame), each
// captioned with its Hamming distance to the representative and the start of its key.
#include <opencv2/core.hpp>

#include <string>
#include <vector>

namespace florence::curate {

struct MontageTile {
  cv::Mat rgb;            ///< 8-bit RGB thumbnail (see thumbnail()); empty = grey placeholder
  std::string caption;    ///< first line under the tile
  std::string subcaption; ///< second line (e.g. the key), cut to fit
  bool representative = false;
};

/// The image scaled to fit `size` x `size` (INTER_AREA, aspect kept) and centred on white.
/// Throws florence::Error on an empty image or size < 8.
cv::Mat thumbnail(const cv::Mat& rgb, int size);

/// Canvas (8-bit RGB) with `rows` of tiles of `size` px plus two caption lines each, a title line
/// on top. Rows longer than the widest are not cut; short rows leave white space.
/// Throws florence::Error on size < 8.
cv::Mat compose_montage(const std::vector<std::vector<MontageTile>>& rows, int size, const std::string& title);

/// Writes an 8-bit RGB image as PNG (converted to OpenCV's BGR order). Throws florence::Error when
/// the file cannot be written.
void write_png_rgb(const cv::Mat& rgb, const std::string& path);

}  // namespace florence::curate
