// Scene compositor: backgrounds, sprite transforms, owner-map compositing; see scene.h.
#include "florence/core/parallel.h"
#include "florence/core/strings.h"
#include "florence/data/scene.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <filesystem>
#include <mutex>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <thread>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/readers.h"
#include "florence/data/sample.h"
#include "florence/data/transforms.h"

namespace fs = std::filesystem;

namespace florence::data {

std::string coco_area_class(double area) {
  if (area < kCocoSmallMaxArea) return "small";
  if (area < kCocoMediumMaxArea) return "medium";
  return "large";
}

uint64_t item_seed(uint64_t seed, const std::string& stream, uint64_t index) {
  auto mix = [](uint64_t z) {  // splitmix64 finaliser (Steele, Lea, Flood 2014)
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  uint64_t h = 14695981039346656037ull;  // FNV-1a of the stream name
  for (unsigned char c : stream) h = (h ^ c) * 1099511628211ull;
  return mix(mix(mix(seed) ^ h) ^ index);
}

void parallel_for_index(size_t n, int threads, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  int nt = core::resolve_threads(threads);
  nt = int(std::min<size_t>(size_t(nt), n));
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  std::exception_ptr error;
  std::mutex mu;
  auto work = [&] {
    while (!stop) {
      const size_t i = next++;
      if (i >= n) break;
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu);
        if (!error) error = std::current_exception();
        stop = true;
      }
    }
  };
  if (nt == 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    for (int t = 0; t < nt; ++t) pool.emplace_back(work);
    for (auto& t : pool) t.join();
  }
  if (error) std::rethrow_exception(error);
}

double uniform_range(std::mt19937_64& rng, double lo, double hi) { return lo + (hi - lo) * uniform01(rng); }

size_t weighted_choice(std::mt19937_64& rng, const std::vector<double>& weights) {
  double total = 0;
  for (double w : weights) total += std::max(0.0, w);
  if (!(total > 0)) throw Error("weighted_choice: weights must have a positive sum");
  double u = uniform01(rng) * total;
  for (size_t i = 0; i < weights.size(); ++i) {
    const double w = std::max(0.0, weights[i]);
    if (u < w) return i;
    u -= w;
  }
  for (size_t i = weights.size(); i-- > 0;)  // rounding at the top end: the last positive weight
    if (weights[i] > 0) return i;
  return 0;
}

// ------------------------------------------------------------------------------------------------
// Backgrounds
// ------------------------------------------------------------------------------------------------

BackgroundBank::BackgroundBank(const BackgroundOptions& o) : opt_(o) {
  for (double p : {o.p_photo, o.p_gradient, o.p_noise, o.p_plain})
    if (p < 0) throw Error("backgrounds: a kind probability is negative");
  if (!(o.p_photo + o.p_gradient + o.p_noise + o.p_plain > 0)) throw Error("backgrounds: all kind probabilities are 0");
  std::vector<fs::path> files;
  std::error_code ec;
  if (!o.photos_dir.empty() && fs::is_directory(o.photos_dir, ec)) {
    for (const auto& e : fs::directory_iterator(o.photos_dir, ec)) {
      const std::string ext = e.path().extension().string();
      if (e.is_regular_file() && ext.size() > 1 && is_image_extension(core::ascii_lower(ext.substr(1))))
        files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    cv::Mat rgb;
    try {
      rgb = decode_rgb(read_file_bytes(f.string()));
    } catch (const Error& e) {
      ++skipped_;
      spdlog::debug("backgrounds: '{}' skipped: {}", f.string(), e.what());
      continue;
    }
    if (std::min(rgb.cols, rgb.rows) < o.min_photo_side) {
      ++skipped_;
      continue;
    }
    const double s = 512.0 / std::max(rgb.cols, rgb.rows);
    if (s < 1.0) cv::resize(rgb, rgb, cv::Size(), s, s, cv::INTER_AREA);
    by_split_[split_of(f.filename().string(), o.train_pct, o.val_pct)].push_back(photos_.size());
    photos_.push_back(rgb);
  }
  if (photos_.empty() && o.p_photo > 0)
    spdlog::warn("backgrounds: no usable photo in '{}': only generated backgrounds", o.photos_dir);
}

namespace {

cv::Vec3d random_colour(std::mt19937_64& rng) {
  return {255.0 * uniform01(rng), 255.0 * uniform01(rng), 255.0 * uniform01(rng)};
}

void add_pixel_noise(cv::Mat& rgb, std::mt19937_64& rng, double amplitude) {
  for (int y = 0; y < rgb.rows; ++y)
    for (int x = 0; x < rgb.cols; ++x) {
      cv::Vec3b& p = rgb.at<cv::Vec3b>(y, x);
      const double n = amplitude * (2.0 * uniform01(rng) - 1.0);  // one offset for all channels (luma)
      for (int c = 0; c < 3; ++c) p[c] = cv::saturate_cast<uint8_t>(p[c] + n);
    }
}

}  // namespace

cv::Mat BackgroundBank::make(int width, int height, const std::string& split, std::mt19937_64& rng,
                             std::string* kind) const {
  if (width < 1 || height < 1) throw Error("backgrounds: size must be >= 1");
  const std::vector<double> w = {photos_.empty() ? 0.0 : opt_.p_photo, opt_.p_gradient, opt_.p_noise, opt_.p_plain};
  const bool only_photo = w[1] + w[2] + w[3] <= 0;
  const size_t k = only_photo ? 0 : weighted_choice(rng, w);
  static const char* names[] = {"photo", "gradient", "noise", "plain"};
  if (kind) *kind = names[k];
  cv::Mat out(height, width, CV_8UC3);
  if (k == 0) {
    if (photos_.empty()) throw Error("backgrounds: only photo backgrounds asked for, but no photo was loaded");
    const auto it = by_split_.find(split);
    const size_t idx = it != by_split_.end() && !it->second.empty()
                           ? it->second[uniform_int(rng, it->second.size())]
                           : uniform_int(rng, photos_.size());
    const cv::Mat& photo = photos_[idx];
    // A crop with the target's aspect, covering 35-100% of the largest such crop.
    const double aspect = double(width) / height;
    const double max_w = std::min<double>(photo.cols, photo.rows * aspect);
    const double cw = max_w * uniform_range(rng, 0.35, 1.0), ch = cw / aspect;
    const int cwi = std::max(1, int(cw)), chi = std::max(1, int(ch));
    const int x0 = int(uniform_int(rng, uint64_t(photo.cols - cwi + 1)));
    const int y0 = int(uniform_int(rng, uint64_t(photo.rows - chi + 1)));
    cv::resize(photo(cv::Rect(x0, y0, cwi, chi)), out, cv::Size(width, height), 0, 0,
               cwi > width ? cv::INTER_AREA : cv::INTER_LINEAR);
    if (uniform01(rng) < 0.5) cv::flip(out, out, 1);
    const double sigma = uniform_range(rng, 0.0, opt_.max_blur_sigma);
    if (sigma > 0.3) cv::GaussianBlur(out, out, cv::Size(0, 0), sigma);
  } else if (k == 1) {
    const cv::Vec3d a = random_colour(rng), b = random_colour(rng);
    const double th = uniform_range(rng, 0.0, 2.0 * M_PI), c = std::cos(th), s = std::sin(th);
    const double half = 0.5 * (std::abs(c) * width + std::abs(s) * height);
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x) {
        const double t = std::clamp(0.5 + ((x - 0.5 * width) * c + (y - 0.5 * height) * s) / (2.0 * half), 0.0, 1.0);
        for (int ch = 0; ch < 3; ++ch) out.at<cv::Vec3b>(y, x)[ch] = cv::saturate_cast<uint8_t>(a[ch] + t * (b[ch] - a[ch]));
      }
    add_pixel_noise(out, rng, 4.0);
  } else if (k == 2) {
    const int g = 3 + int(uniform_int(rng, 6));
    cv::Mat grid(g, g, CV_8UC3);
    for (int y = 0; y < g; ++y)
      for (int x = 0; x < g; ++x) {
        const cv::Vec3d col = random_colour(rng);
        grid.at<cv::Vec3b>(y, x) = cv::Vec3b(uint8_t(col[0]), uint8_t(col[1]), uint8_t(col[2]));
      }
    cv::resize(grid, out, cv::Size(width, height), 0, 0, cv::INTER_CUBIC);
    add_pixel_noise(out, rng, 8.0);
  } else {
    const cv::Vec3d col = random_colour(rng);
    out.setTo(cv::Scalar(col[0], col[1], col[2]));
    add_pixel_noise(out, rng, 6.0);
  }
  return out;
}

nlohmann::json BackgroundBank::summary() const {
  nlohmann::json per = nlohmann::json::object();
  for (const char* s : {"train", "val", "test"}) {
    const auto it = by_split_.find(s);
    per[s] = it == by_split_.end() ? 0 : it->second.size();
  }
  return {{"photos_dir", opt_.photos_dir},
          {"photos", per},
          {"skipped", skipped_},
          {"probabilities", {{"photo", opt_.p_photo}, {"gradient", opt_.p_gradient}, {"noise", opt_.p_noise}, {"plain", opt_.p_plain}}}};
}

// ------------------------------------------------------------------------------------------------
// Sprite transforms
// ------------------------------------------------------------------------------------------------

namespace {

void check_rgba(const cv::Mat& m, const char* what) {
  if (m.type() != CV_8UC4 || m.empty()) throw Error(std::string(what) + ": expected a non-empty 8-bit RGBA image");
}

// 8-bit straight RGBA <-> float premultiplied RGBA (values 0..255).
cv::Mat premultiply(const cv::Mat& rgba) {
  cv::Mat f;
  rgba.convertTo(f, CV_32FC4);
  for (int y = 0; y < f.rows; ++y)
    for (int x = 0; x < f.cols; ++x) {
      cv::Vec4f& p = f.at<cv::Vec4f>(y, x);
      const float a = p[3] / 255.0f;
      p[0] *= a, p[1] *= a, p[2] *= a;
    }
  return f;
}

cv::Mat unpremultiply(const cv::Mat& f) {
  cv::Mat out(f.rows, f.cols, CV_8UC4);
  for (int y = 0; y < f.rows; ++y)
    for (int x = 0; x < f.cols; ++x) {
      const cv::Vec4f p = f.at<cv::Vec4f>(y, x);
      const float a = std::clamp(p[3], 0.0f, 255.0f);
      cv::Vec4b& o = out.at<cv::Vec4b>(y, x);
      if (a < 0.5f) {
        o = cv::Vec4b(0, 0, 0, 0);
        continue;
      }
      for (int c = 0; c < 3; ++c) o[c] = cv::saturate_cast<uint8_t>(p[c] * 255.0f / a);
      o[3] = cv::saturate_cast<uint8_t>(a);
    }
  return out;
}

}  // namespace

cv::Mat resize_sprite(const cv::Mat& rgba, int width, int height) {
  check_rgba(rgba, "resize_sprite");
  if (width < 1 || height < 1) throw Error(fmt::format("resize_sprite: size {}x{} must be >= 1", width, height));
  if (width == rgba.cols && height == rgba.rows) return rgba.clone();
  cv::Mat f;
  const bool shrink = width < rgba.cols && height < rgba.rows;
  cv::resize(premultiply(rgba), f, cv::Size(width, height), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
  return unpremultiply(f);
}

cv::Mat rotate_sprite(const cv::Mat& rgba, double degrees) {
  check_rgba(rgba, "rotate_sprite");
  const double r = degrees * M_PI / 180.0, c = std::abs(std::cos(r)), s = std::abs(std::sin(r));
  // 1e-6: cos(90 deg) is 6e-17 in double, which must not add a pixel.
  const int w = int(std::ceil(rgba.cols * c + rgba.rows * s - 1e-6)), h = int(std::ceil(rgba.cols * s + rgba.rows * c - 1e-6));
  // OpenCV's positive angle is counter-clockwise on screen (y down); clockwise = negative.
  cv::Mat m = cv::getRotationMatrix2D(cv::Point2f(0.5f * (rgba.cols - 1), 0.5f * (rgba.rows - 1)), -degrees, 1.0);
  m.at<double>(0, 2) += 0.5 * (w - rgba.cols);
  m.at<double>(1, 2) += 0.5 * (h - rgba.rows);
  cv::Mat f;
  cv::warpAffine(premultiply(rgba), f, m, cv::Size(w, h), cv::INTER_LINEAR, cv::BORDER_CONSTANT, cv::Scalar::all(0));
  return unpremultiply(f);
}

cv::Mat flip_sprite(const cv::Mat& rgba) {
  check_rgba(rgba, "flip_sprite");
  cv::Mat out;
  cv::flip(rgba, out, 1);
  return out;
}

// ------------------------------------------------------------------------------------------------
// Canvas
// ------------------------------------------------------------------------------------------------

SceneCanvas::SceneCanvas(const cv::Mat& background) {
  if (background.type() != CV_8UC3 || background.empty()) throw Error("SceneCanvas: expected a non-empty 8-bit RGB image");
  image_ = background.clone();
  owner_ = cv::Mat(background.rows, background.cols, CV_32SC1, cv::Scalar(-1));
}

int SceneCanvas::paste(const cv::Mat& rgba, int x, int y, double opacity) {
  check_rgba(rgba, "SceneCanvas::paste");
  const int id = int(pasted_.size());
  const double op = std::clamp(opacity, 0.0, 1.0);
  int64_t covered = 0;
  for (int sy = 0; sy < rgba.rows; ++sy) {
    const int cy = y + sy;
    if (cy < 0 || cy >= image_.rows) continue;
    for (int sx = 0; sx < rgba.cols; ++sx) {
      const int cx = x + sx;
      if (cx < 0 || cx >= image_.cols) continue;
      const cv::Vec4b s = rgba.at<cv::Vec4b>(sy, sx);
      const double a = op * s[3] / 255.0;
      if (a <= 0) continue;
      cv::Vec3b& d = image_.at<cv::Vec3b>(cy, cx);
      for (int c = 0; c < 3; ++c) d[c] = cv::saturate_cast<uint8_t>(a * s[c] + (1.0 - a) * d[c]);
      if (a * 255.0 >= 127.5) {
        int32_t& o = owner_.at<int32_t>(cy, cx);
        if (o >= 0) --visible_[size_t(o)];
        o = id;
        ++covered;
      }
    }
  }
  pasted_.push_back(covered);
  visible_.push_back(covered);
  return id;
}

double SceneCanvas::visible_fraction_after(int id, const cv::Mat& rgba, int x, int y) const {
  check_rgba(rgba, "SceneCanvas::visible_fraction_after");
  const int64_t now = visible_.at(size_t(id)), full = pasted_.at(size_t(id));
  if (full == 0) return 1.0;
  int64_t lost = 0;
  for (int sy = 0; sy < rgba.rows; ++sy) {
    const int cy = y + sy;
    if (cy < 0 || cy >= image_.rows) continue;
    for (int sx = 0; sx < rgba.cols; ++sx) {
      const int cx = x + sx;
      if (cx < 0 || cx >= image_.cols) continue;
      if (owner_.at<int32_t>(cy, cx) == id && rgba.at<cv::Vec4b>(sy, sx)[3] >= 128) ++lost;
    }
  }
  return double(now - lost) / double(full);
}

SceneCanvas::Visible SceneCanvas::visible(int id) const {
  Visible v;
  int x0 = owner_.cols, y0 = owner_.rows, x1 = -1, y1 = -1;
  for (int y = 0; y < owner_.rows; ++y)
    for (int x = 0; x < owner_.cols; ++x)
      if (owner_.at<int32_t>(y, x) == id) {
        ++v.pixels;
        x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
      }
  if (v.pixels > 0) v.box = cv::Rect(x0, y0, x1 - x0 + 1, y1 - y0 + 1);
  return v;
}

cv::Mat scaled_sprite(const cv::Mat& rgba, double longer_side, bool flip) {
  check_rgba(rgba, "scaled_sprite");
  const double s = std::max(1.0, longer_side) / std::max(rgba.cols, rgba.rows);
  const int w = std::max(1, int(std::lround(rgba.cols * s))), h = std::max(1, int(std::lround(rgba.rows * s)));
  cv::Mat out = resize_sprite(rgba, w, h);
  return flip ? flip_sprite(out) : out;
}

int place_sprite(SceneCanvas& canvas, const cv::Mat& rgba, double min_visible, int tries, std::mt19937_64& rng) {
  const int W = canvas.image().cols, H = canvas.image().rows;
  if (rgba.cols > W || rgba.rows > H) return -1;
  for (int t = 0; t < tries; ++t) {
    const int x = int(uniform_int(rng, uint64_t(W - rgba.cols + 1)));
    const int y = int(uniform_int(rng, uint64_t(H - rgba.rows + 1)));
    bool ok = true;
    for (int id = 0; id < canvas.objects() && ok; ++id) ok = canvas.visible_fraction_after(id, rgba, x, y) >= min_visible;
    if (ok) return canvas.paste(rgba, x, y);
  }
  return -1;
}

size_t draw_sprite(const SpriteBank& bank, int category, const std::string& split, std::mt19937_64& rng) {
  const auto& v = bank.of(category, split);
  if (v.empty())
    throw Error(fmt::format("draw_sprite: no sprite of category {} in split '{}'", category, split));
  return v[uniform_int(rng, v.size())];
}

ComposedScene compose_scene(const SpriteBank& bank, const BackgroundBank& backgrounds, const std::string& split,
                            const std::vector<int>& categories, const ComposeOptions& o,
                            const std::function<double(std::mt19937_64&, const Sprite&)>& longer_side,
                            std::mt19937_64& rng) {
  if (categories.empty()) throw Error("compose_scene: no category to draw from");
  if (o.min_objects < 1 || o.max_objects < o.min_objects)
    throw Error(fmt::format("compose_scene: objects range [{}, {}] is invalid", o.min_objects, o.max_objects));
  ComposedScene scene;
  SceneCanvas canvas(backgrounds.make(o.width, o.height, split, rng, &scene.background));
  const int n = o.min_objects + int(uniform_int(rng, uint64_t(o.max_objects - o.min_objects + 1)));
  std::vector<size_t> sprite_of_id;
  std::vector<int> placed_categories;
  for (int k = 0; k < n; ++k) {
    const bool repeat = !placed_categories.empty() && uniform01(rng) < o.p_repeat_category;
    const int cat = repeat ? placed_categories[uniform_int(rng, placed_categories.size())]
                           : categories[uniform_int(rng, categories.size())];
    const size_t si = draw_sprite(bank, cat, split, rng);
    const Sprite& sp = bank.sprites()[si];
    const cv::Mat img = scaled_sprite(sp.rgba, longer_side(rng, sp), uniform01(rng) < o.p_flip);
    const int id = place_sprite(canvas, img, o.min_visible, o.tries, rng);
    if (id < 0) {
      ++scene.placement_failures;
      continue;
    }
    sprite_of_id.push_back(si);
    placed_categories.push_back(cat);
  }
  for (int id = 0; id < canvas.objects(); ++id) {
    const auto v = canvas.visible(id);
    if (v.pixels == 0) continue;
    ComposedScene::Object ob;
    ob.sprite = sprite_of_id[size_t(id)];
    ob.category = bank.sprites()[ob.sprite].category;
    ob.box = v.box;
    ob.area = v.pixels;
    ob.full_area = canvas.pasted_pixels(id);
    scene.objects.push_back(ob);
  }
  scene.image = canvas.image();
  return scene;
}

void write_rgb_png(const std::string& path, const cv::Mat& rgb) {
  if (rgb.type() != CV_8UC3) throw Error("write_rgb_png: '" + path + "': expected an 8-bit RGB image");
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> buf;
  if (!cv::imencode(".png", bgr, buf)) throw Error("write_rgb_png: cannot encode '" + path + "'");
  core::write_text_atomic(path, std::string(buf.begin(), buf.end()));
}

void check_set_dir(const std::string& out_dir, const std::vector<std::string>& owned, bool overwrite,
                   const std::string& what) {
  if (out_dir.empty()) throw Error(what + ": no output folder given (--out)");
  std::error_code ec;
  if (fs::exists(out_dir, ec) && !fs::is_directory(out_dir, ec))
    throw Error(what + ": output '" + out_dir + "' exists and is not a folder");
  if (overwrite) return;
  for (const auto& name : owned) {
    const fs::path p = fs::path(out_dir) / name;
    if (fs::exists(fs::symlink_status(p, ec)))
      throw Error(what + ": '" + p.string() + "' exists (pass --overwrite to replace the set)");
  }
}

void prepare_set_dir(const std::string& out_dir, const std::vector<std::string>& owned, bool overwrite,
                     const std::string& what) {
  check_set_dir(out_dir, owned, overwrite, what);
  std::error_code ec;
  for (const auto& name : owned) {
    const fs::path p = fs::path(out_dir) / name;
    if (!fs::exists(fs::symlink_status(p, ec))) continue;
    fs::remove_all(p, ec);
    if (ec) throw Error(what + ": cannot remove '" + p.string() + "': " + ec.message());
  }
  fs::create_directories(out_dir, ec);
  if (ec) throw Error(what + ": cannot create '" + out_dir + "': " + ec.message());
}

std::string format_scene_set_summary(const nlohmann::json& s) {
  std::string out = fmt::format("{} set in {} ({:.1f} s)\n", s.value("set", "?"), s.value("out_dir", "?"), s.value("seconds", 0.0));
  if (s.contains("splits"))
    for (const auto& [split, v] : s["splits"].items()) {
      std::string line = "  " + split + ":";
      for (const char* k : {"images", "clips", "annotations", "questions"})
        if (v.contains(k)) line += fmt::format(" {} {}", v[k].get<int64_t>(), k);
      out += line + "\n";
    }
  if (s.contains("unseen_categories")) {
    std::string names;
    for (const auto& n : s["unseen_categories"]) names += (names.empty() ? "" : ", ") + n.get<std::string>();
    out += "  unseen categories: " + names + "\n";
  }
  if (s.contains("sprites")) {
    const auto& sp = s["sprites"];
    out += fmt::format("  sprites: {} ({} skipped)\n", sp.value("sprites", 0), [&] {
      int64_t n = 0;
      for (const auto& [k, v] : sp["skips"].items()) n += v.get<int64_t>();
      return n;
    }());
  }
  if (s.contains("failures")) {
    std::string f;
    for (const auto& [k, v] : s["failures"].items())
      if (v.get<int64_t>() > 0) f += fmt::format("{}{} {}", f.empty() ? "" : ", ", k, v.get<int64_t>());
    out += "  failures: " + (f.empty() ? std::string("none") : f) + "\n";
  }
  return out;
}

std::string indefinite_article(const std::string& word) {
  if (word.empty()) return "a";
  const char c = char(std::tolower(static_cast<unsigned char>(word[0])));
  return (c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u') ? "an" : "a";
}

}  // namespace florence::data
