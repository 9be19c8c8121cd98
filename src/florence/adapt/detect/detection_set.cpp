// Detection set from real art in COCO format; see detection_set.h.
#include "florence/adapt/detect/detection_set.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "florence/adapt/detect/coco.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/transforms.h"

namespace fs = std::filesystem;

namespace florence::detect {

namespace {

const char* const kSplits[] = {"train", "val", "test"};
constexpr double kMinBoxSide = 10.0;     // smallest target box side, pixels
constexpr double kMaxLargeFrac = 0.9;    // largest target box side / image size

}  // namespace

double draw_box_area(std::mt19937_64& rng, int size, double p_small, double p_medium, double p_large) {
  const double top = std::pow(kMaxLargeFrac * size, 2.0);
  const bool large_ok = top > data::kCocoMediumMaxArea;
  const double medium_top = std::min(data::kCocoMediumMaxArea, top);
  const std::vector<double> w = {p_small, medium_top > data::kCocoSmallMaxArea ? p_medium : 0.0, large_ok ? p_large : 0.0};
  const size_t k = data::weighted_choice(rng, w);
  const double lo[3] = {kMinBoxSide * kMinBoxSide, data::kCocoSmallMaxArea, data::kCocoMediumMaxArea};
  const double hi[3] = {data::kCocoSmallMaxArea, medium_top, top};
  return std::exp(data::uniform_range(rng, std::log(lo[k]), std::log(hi[k])));
}

double longer_side_for_area(double area, int w, int h) {
  return std::max(w, h) * std::sqrt(area / (double(w) * double(h)));
}

nlohmann::json build_detection_set(const DetectionSetOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.image_size < 32) throw Error("detection set: --size must be >= 32, got " + std::to_string(o.image_size));
  if (o.train_images < 1 || o.val_images < 0 || o.test_images < 0) throw Error("detection set: image counts must be >= 0 (train >= 1)");
  if (o.min_objects < 1 || o.max_objects < o.min_objects) throw Error("detection set: objects range is invalid");
  if (o.p_small < 0 || o.p_medium < 0 || o.p_large < 0 || !(o.p_small + o.p_medium + o.p_large > 0))
    throw Error("detection set: area class probabilities must be >= 0 with a positive sum");
  if (!(o.min_visible > 0 && o.min_visible <= 1)) throw Error("detection set: min_visible must be in (0, 1]");
  const std::vector<std::string> owned = {"images", "annotations", "summary.json"};
  data::check_set_dir(o.out_dir, owned, o.overwrite, "detection set");

  data::SpriteBankOptions so = o.sprites;
  if (so.threads == 0) so.threads = o.threads;
  const data::SpriteBank bank = data::SpriteBank::load(so);
  const data::BackgroundBank backgrounds(o.backgrounds);
  const auto& cats = bank.categories();
  std::vector<bool> unseen(cats.size(), false);
  if (o.unseen.empty()) {
    for (size_t c = 0; c < cats.size(); ++c) unseen[c] = cats[c].unseen;
  } else {
    for (const auto& name : o.unseen) {
      const auto it = std::find_if(cats.begin(), cats.end(), [&](const data::SpriteCategory& c) { return c.name == name; });
      if (it == cats.end()) throw Error("detection set: unseen category '" + name + "' is not in the category table");
      unseen[size_t(it - cats.begin())] = true;
    }
  }
  const std::vector<int> usable = bank.usable_categories({"train", "val", "test"}, 1);
  std::vector<int> seen_cats, all_cats = usable;
  for (int c : usable)
    if (!unseen[size_t(c)]) seen_cats.push_back(c);
  if (seen_cats.size() < 2)
    throw Error(fmt::format("detection set: only {} seen categories have sprites in train, val and test (need 2)", seen_cats.size()));
  data::prepare_set_dir(o.out_dir, owned, o.overwrite, "detection set");

  data::ComposeOptions co;
  co.width = co.height = o.image_size;
  co.min_objects = o.min_objects;
  co.max_objects = o.max_objects;
  co.p_repeat_category = o.p_repeat_category;
  co.min_visible = o.min_visible;
  auto side = [&](std::mt19937_64& rng, const data::Sprite& sp) {
    const double area = draw_box_area(rng, o.image_size, o.p_small, o.p_medium, o.p_large);
    return std::clamp(longer_side_for_area(area, sp.rgba.cols, sp.rgba.rows), 4.0, 0.95 * o.image_size);
  };

  // COCO records (coco.h) plus our extra fields, merged into the written JSON by position.
  std::vector<CocoCategory> categories;
  for (int c : usable) categories.push_back({c + 1, cats[size_t(c)].name, "object"});
  struct Box {
    CocoAnnotation ann;
    nlohmann::json extra;
    bool unseen = false;
  };
  struct Image {
    CocoImage image;
    std::string background;
    bool seen_only = false;
    std::vector<Box> boxes;
  };
  const fs::path ann_dir = fs::path(o.out_dir) / "annotations";
  fs::create_directories(ann_dir);
  // Writes the images passing `keep_image` with their boxes passing `keep_box`, and the categories
  // passing `keep_cat`; validated by coco.h before it is written.
  auto write = [&](const std::string& name, const std::string& split, const std::vector<Image>& images,
                   const std::function<bool(const Image&)>& keep_image, const std::function<bool(const Box&)>& keep_box,
                   const std::function<bool(const CocoCategory&)>& keep_cat) {
    CocoDataset d;
    d.info = {{"description", "florence detection set from real art (sprites)"}, {"split", split}, {"seed", o.seed}};
    std::vector<const nlohmann::json*> extras;
    std::vector<std::string> backgrounds_of;
    for (const auto& c : categories)
      if (keep_cat(c)) d.categories.push_back(c);
    for (const auto& im : images) {
      if (!keep_image(im)) continue;
      d.images.push_back(im.image);
      backgrounds_of.push_back(im.background);
      for (const auto& b : im.boxes)
        if (keep_box(b)) d.annotations.push_back(b.ann), extras.push_back(&b.extra);
    }
    validate_coco(d, name);
    nlohmann::json j = coco_to_json(d);
    for (size_t i = 0; i < extras.size(); ++i) j["annotations"][i].update(*extras[i]);
    for (size_t i = 0; i < backgrounds_of.size(); ++i) j["images"][i]["background"] = backgrounds_of[i];
    for (auto& c : j["categories"]) c["unseen"] = bool(unseen[size_t(c["id"].get<int64_t>() - 1)]);
    core::write_text_atomic(ann_dir / name, j.dump());
  };
  auto all_images = [](const Image&) { return true; };
  auto all_boxes = [](const Box&) { return true; };
  auto seen_cat = [&](const CocoCategory& c) { return !unseen[size_t(c.id - 1)]; };

  struct Result {
    bool seen_only = false;
    data::ComposedScene scene;
    bool written = false;
  };
  const int64_t counts[3] = {o.train_images, o.val_images, o.test_images};
  std::map<std::string, int64_t> failures;
  nlohmann::json per_split = nlohmann::json::object();
  int64_t next_image_id = 1, next_ann_id = 1;
  for (int si = 0; si < 3; ++si) {
    const std::string split = kSplits[si];
    const fs::path img_dir = fs::path(o.out_dir) / "images" / split;
    fs::create_directories(img_dir);
    std::vector<Result> results(static_cast<size_t>(counts[si]));  // not size_t(...): a vexing parse for clang
    const int64_t first_id = next_image_id;
    data::parallel_for_index(results.size(), o.threads, [&](size_t i) {
      std::mt19937_64 rng(data::item_seed(o.seed, "detection/" + split, i));
      Result& r = results[i];
      r.seen_only = split != "test" && data::uniform01(rng) < o.p_seen_only;
      r.scene = data::compose_scene(bank, backgrounds, split, r.seen_only ? seen_cats : all_cats, co, side, rng);
      if (r.scene.objects.empty()) return;
      data::write_rgb_png((img_dir / fmt::format("{:08d}.png", first_id + int64_t(i))).string(), r.scene.image);
      r.written = true;
      r.scene.image.release();
    });
    std::vector<Image> images;
    std::map<std::string, int64_t> per_cat, area_classes, backgrounds_used;
    int64_t n_seen_only = 0, n_boxes = 0;
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      failures["placement_failed"] += r.scene.placement_failures;
      if (!r.written) {
        ++failures["empty_image"];
        continue;
      }
      Image im;
      im.image = {first_id + int64_t(i), fmt::format("{:08d}.png", first_id + int64_t(i)), o.image_size, o.image_size};
      im.background = r.scene.background;
      im.seen_only = r.seen_only;
      n_seen_only += r.seen_only;
      ++backgrounds_used[r.scene.background];
      for (const auto& ob : r.scene.objects) {
        Box b;
        const double box_area = double(ob.box.width) * double(ob.box.height);
        b.ann.id = next_ann_id++;
        b.ann.image_id = im.image.id;
        b.ann.category_id = ob.category + 1;
        b.ann.bbox = {double(ob.box.x), double(ob.box.y), double(ob.box.width), double(ob.box.height)};
        b.ann.area = box_area;
        b.extra = {{"visible_pixels", ob.area},
                   {"occluded", ob.full_area > 0 ? 1.0 - double(ob.area) / double(ob.full_area) : 0.0},
                   {"sprite", bank.sprites()[ob.sprite].key}};
        b.unseen = unseen[size_t(ob.category)];
        im.boxes.push_back(std::move(b));
        ++per_cat[cats[size_t(ob.category)].name];
        ++area_classes[data::coco_area_class(box_area)];
        ++n_boxes;
      }
      images.push_back(std::move(im));
    }
    next_image_id += counts[si];
    write("instances_" + split + ".json", split, images, all_images, all_boxes, [](const CocoCategory&) { return true; });
    if (split == "test") {
      write("instances_test_seen.json", split, images, all_images, [](const Box& b) { return !b.unseen; }, seen_cat);
      write("instances_test_unseen.json", split, images, all_images, [](const Box& b) { return b.unseen; },
            [&](const CocoCategory& c) { return !seen_cat(c); });
    } else {
      write("instances_" + split + "_seen.json", split, images, [](const Image& im) { return im.seen_only; }, all_boxes, seen_cat);
    }
    per_split[split] = {{"images", images.size()},
                        {"seen_only_images", n_seen_only},
                        {"annotations", n_boxes},
                        {"categories", per_cat},
                        {"area_classes", area_classes},
                        {"backgrounds", backgrounds_used}};
    if (o.progress) spdlog::info("detection set: {}: {} images, {} boxes", split, images.size(), n_boxes);
  }
  nlohmann::json unseen_names = nlohmann::json::array();
  for (int c : usable)
    if (unseen[size_t(c)]) unseen_names.push_back(cats[size_t(c)].name);
  nlohmann::json summary = {
      {"set", "detection"},
      {"out_dir", o.out_dir},
      {"options",
       {{"image_size", o.image_size}, {"images", {o.train_images, o.val_images, o.test_images}},
        {"objects", {o.min_objects, o.max_objects}}, {"area_class_probabilities", {o.p_small, o.p_medium, o.p_large}},
        {"min_visible", o.min_visible}, {"p_seen_only", o.p_seen_only}, {"seed", o.seed}}},
      {"categories", [&] {
         nlohmann::json a = nlohmann::json::array();
         for (const auto& c : categories) a.push_back({{"id", c.id}, {"name", c.name}, {"unseen", bool(unseen[size_t(c.id - 1)])}});
         return a;
       }()},
      {"unseen_categories", unseen_names},
      {"splits", per_split},
      {"sprites", bank.summary()},
      {"backgrounds", backgrounds.summary()},
      {"failures", failures},
      {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
  core::write_text_atomic(fs::path(o.out_dir) / "summary.json", summary.dump(2));
  return summary;
}

}  // namespace florence::detect
