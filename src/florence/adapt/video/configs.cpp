// Named Video CoSwin configs and their counts; see configs.h.
#include "florence/adapt/video/configs.h"

#include "florence/core/error.h"
#include "florence/model/registry.h"
#include "florence/vision/video_swin_layers.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

namespace florence::video {

namespace {

vision::SwinConfig tower(const std::string& name) {
  model::ModelSpec s = model::resolve_model(name);
  if (!s.vision) throw Error(fmt::format("'{}' has no image tower", name));
  vision::SwinConfig c = *s.vision;
  c.num_classes = 0;
  return c;
}

const std::map<std::string, std::function<vision::VideoSwinConfig()>>& registry() {
  static const std::map<std::string, std::function<vision::VideoSwinConfig()>> r = {
      {"video-nano",
       [] {
         vision::VideoSwinConfig c;
         c.image = tower("florence-nano");
         c.tube = 2;
         c.merge = {3, 1, 1};
         c.windows = {{2, 4, 4}, {2, 4, 4}, {4, 4, 4}};
         c.num_frames = 8;
         return c;
       }},
      {"video-coswin-h",
       [] {
         vision::VideoSwinConfig c;
         c.image = tower("coswin-h");
         c.image.image_size = 224;
         c.tube = 2;
         c.merge = {3, 1, 1};
         c.windows = {{2, 7, 7}, {4, 7, 7}, {8, 7, 7}, {8, 7, 7}};
         c.num_frames = 32;
         return c;
       }},
  };
  return r;
}

int64_t conv_out(int64_t in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

}  // namespace

std::vector<std::string> video_config_names() {
  std::vector<std::string> names;
  for (const auto& kv : registry()) names.push_back(kv.first);
  return names;
}

vision::VideoSwinConfig resolve_video_config(const std::string& name_or_path) {
  if (auto it = registry().find(name_or_path); it != registry().end()) return it->second();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(name_or_path, ec)) {
    std::string known;
    for (const auto& n : video_config_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error(fmt::format("unknown video config '{}': not a registered name ({}) nor a JSON file", name_or_path, known));
  }
  std::ifstream in(name_or_path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("video config '{}' is not valid JSON: {}", name_or_path, e.what()));
  }
  try {
    if (j.is_object() && j.contains("image") && j["image"].is_string()) {
      const std::string name = j["image"].get<std::string>();
      j["image"] = tower(name).to_json();
    }
    vision::VideoSwinConfig c = vision::VideoSwinConfig::from_json(j);
    c.validate();
    return c;
  } catch (const Error& e) {
    throw Error(fmt::format("video config '{}': {}", name_or_path, e.what()));
  }
}

vision::VideoSwinConfig with_image_tower(const vision::VideoSwinConfig& video, const vision::SwinConfig& image) {
  vision::VideoSwinConfig c = video;
  c.image = image;
  c.image.num_classes = 0;
  if (!c.windows.empty() && static_cast<int>(c.windows.size()) != image.num_stages()) c.windows.clear();
  for (auto& w : c.windows) w[1] = w[2] = image.window_size;  // the tower's spatial window: exact inflation
  c.validate();
  return c;
}

model::Counts count_video(const vision::VideoSwinConfig& c, int frames, int height, int width) {
  c.validate();
  const vision::SwinConfig& im = c.image;
  model::Counts n;
  const int64_t C = im.embed_dim;
  const auto& pe = im.patch_embed;
  int64_t t = vision::time_output_length(frames, c.tube, c.tube, 0);
  int64_t h = conv_out(height, pe.kernel, pe.stride, pe.padding);
  int64_t w = conv_out(width, pe.kernel, pe.stride, pe.padding);
  n.params += int64_t(im.in_chans) * C * c.tube * pe.kernel * pe.kernel + C + (im.patch_norm ? 2 * C : 0);
  n.macs += double(t * h * w) * C * im.in_chans * c.tube * pe.kernel * pe.kernel;
  for (int i = 0; i < im.num_stages(); ++i) {
    const int64_t d = im.stage_dim(i);
    const int64_t hid = static_cast<int64_t>(d * im.mlp_ratio);
    const int64_t heads = im.num_heads[i];
    const auto win = c.window(i);
    const vision::WindowLayout3d l = vision::window_layout_3d({t, h, w}, {win[0], win[1], win[2]}, {0, 0, 0});
    const int64_t tokens = t * h * w;
    const int64_t padded = l.padded[0] * l.padded[1] * l.padded[2];
    int64_t block = 2 * d + 3 * d * d + (im.qkv_bias ? 3 * d : 0) + d * d + d +
                    int64_t(2 * win[0] - 1) * (2 * win[1] - 1) * (2 * win[2] - 1) * heads + 2 * d + d * hid + hid +
                    hid * d + d;
    if (im.layer_scale_init > 0) block += 2 * d;
    n.params += block * im.depths[i];
    const double block_macs = double(padded) * 3 * d * d + 2.0 * double(padded) * double(l.volume()) * d +
                              double(padded) * d * d + 2.0 * double(tokens) * d * hid;
    n.macs += block_macs * im.depths[i];
    if (i + 1 < im.num_stages()) {
      const auto& ds = im.downsample;
      const int64_t t2 = vision::time_output_length(t, c.merge.kernel, c.merge.stride, c.merge.padding);
      const int64_t h2 = conv_out(h, ds.kernel, ds.stride, ds.padding);
      const int64_t w2 = conv_out(w, ds.kernel, ds.stride, ds.padding);
      n.params += d * 2 * d * c.merge.kernel * ds.kernel * ds.kernel + 2 * d + 2 * 2 * d;
      n.macs += double(t2 * h2 * w2) * 2 * d * d * c.merge.kernel * ds.kernel * ds.kernel;
      t = t2;
      h = h2;
      w = w2;
    }
  }
  const int64_t f = im.num_features();
  n.params += 2 * f;
  if (c.num_classes > 0) {
    n.params += f * c.num_classes + c.num_classes;
    n.macs += double(f) * c.num_classes;
  }
  return n;
}

}  // namespace florence::video
