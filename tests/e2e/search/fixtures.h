#pragma once
// Shared fixtures of the search tests: a scratch folder, a random-init florence-nano checkpoint
// (its sidecar names the CLIP vocabulary, so no --vocab is needed), synthetic images that differ
// in colour and shape, and WebDataset shards of them with captions.
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sys/wait.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "florence/data/webdataset.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"
#include "support/paths.h"
#include "support/vocab.h"

namespace florence::test::search {

namespace fs = std::filesystem;

inline std::string vocab() { return ::test::clip_vocab(); }

/// A fresh folder FLORENCE_TEST_TMP/<name>.
inline fs::path scratch(const std::string& name) {
  const fs::path p = fs::path(FLORENCE_TEST_TMP) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

/// florence-nano with seeded random weights at DIR/model.safetensors (+ sidecar with "vocab").
inline std::string tiny_checkpoint(const fs::path& dir) {
  torch::manual_seed(7);
  model::ModelSpec spec = model::resolve_model("florence-nano");
  model::FlorenceModel m(*spec.florence);
  const std::string p = (dir / "model.safetensors").string();
  model::save_checkpoint(*m, spec, p, torch::kFloat, {{"vocab", vocab()}});
  return p;
}

/// A 48x40 BGR picture: background hue, a disc or a square, position from `seed`.
inline cv::Mat picture(int seed) {
  cv::Mat img(40, 48, CV_8UC3, cv::Scalar((seed * 53) % 255, (seed * 97) % 255, (seed * 29) % 255));
  const cv::Point c(8 + (seed * 7) % 32, 8 + (seed * 11) % 24);
  if (seed % 2) cv::circle(img, c, 6 + seed % 5, cv::Scalar(255 - (seed * 53) % 255, 20, 240), -1);
  else cv::rectangle(img, cv::Rect(c.x - 5, c.y - 5, 11 + seed % 4, 9), cv::Scalar(10, 250 - (seed * 31) % 200, 30), -1);
  return img;
}

inline std::vector<uint8_t> png(const cv::Mat& bgr) {
  std::vector<uint8_t> out;
  cv::imencode(".png", bgr, out);
  return out;
}

/// Shards DIR/000000.tar ... with n samples ("img0000", ...; caption "picture number i, a disc/square",
/// meta {"category": "disc"|"square"}), `per_shard` samples each.
inline void write_shards(const fs::path& dir, int n, int per_shard, int first_seed = 0) {
  data::ShardWriterOptions o;
  o.max_samples_per_shard = per_shard;
  data::ShardWriter w(dir.string(), o);
  for (int i = 0; i < n; ++i) {
    const int seed = first_seed + i;
    data::Sample s;
    char key[32];
    std::snprintf(key, sizeof key, "img%04d", seed);
    s.key = key;
    s.image = png(picture(seed));
    s.image_ext = "png";
    s.text = "picture number " + std::to_string(seed) + ", a " + (seed % 2 ? "disc" : "square");
    s.meta = {{"category", seed % 2 ? "disc" : "square"}};
    w.write(s);
  }
  w.close();
}

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Runs a shell command; returns its exit status (-1 when it could not run).
inline int sh(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

}  // namespace florence::test::search
