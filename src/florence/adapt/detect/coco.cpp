// COCO instances / results JSON; see coco.h.
#include "florence/adapt/detect/coco.h"

#include <fmt/format.h>

#include <cmath>
#include <set>

#include "florence/core/error.h"
#include "florence/core/files.h"

namespace florence::detect {
namespace {

using nlohmann::json;

// Where an entry sits, for messages: "val.json: annotations[12]".
std::string at(const std::string& origin, const char* array, size_t i) {
  return fmt::format("{}: {}[{}]", origin, array, i);
}

const json& field(const json& e, const char* key, const std::string& where) {
  auto it = e.find(key);
  if (it == e.end()) throw Error(fmt::format("{}: missing '{}'", where, key));
  return *it;
}

int64_t get_id(const json& e, const char* key, const std::string& where) {
  const json& v = field(e, key, where);
  if (!v.is_number_integer()) throw Error(fmt::format("{}: '{}' must be an integer, got {}", where, key, v.dump()));
  return v.get<int64_t>();
}

double get_number(const json& v, const char* key, const std::string& where) {
  if (!v.is_number()) throw Error(fmt::format("{}: '{}' must be a number, got {}", where, key, v.dump()));
  const double x = v.get<double>();
  if (!std::isfinite(x)) throw Error(fmt::format("{}: '{}' is not finite", where, key));
  return x;
}

std::string get_string(const json& v, const char* key, const std::string& where) {
  if (!v.is_string()) throw Error(fmt::format("{}: '{}' must be a string, got {}", where, key, v.dump()));
  return v.get<std::string>();
}

CocoBox get_box(const json& e, const std::string& where) {
  const json& v = field(e, "bbox", where);
  if (!v.is_array() || v.size() != 4)
    throw Error(fmt::format("{}: 'bbox' must be [x, y, w, h] (4 numbers), got {}", where, v.dump()));
  CocoBox b;
  for (size_t k = 0; k < 4; ++k) b[k] = get_number(v[k], "bbox", where);
  if (b[2] < 0) throw Error(fmt::format("{}: 'bbox' has a negative width ({})", where, b[2]));
  if (b[3] < 0) throw Error(fmt::format("{}: 'bbox' has a negative height ({})", where, b[3]));
  return b;
}

const json& get_array(const json& j, const char* key, const std::string& origin) {
  auto it = j.find(key);
  if (it == j.end()) throw Error(fmt::format("{}: missing '{}' (a COCO instances file has images, annotations, categories)", origin, key));
  if (!it->is_array()) throw Error(fmt::format("{}: '{}' must be an array", origin, key));
  return *it;
}

void check_object(const json& e, const std::string& where) {
  if (!e.is_object()) throw Error(fmt::format("{}: must be an object, got {}", where, e.dump()));
}

}  // namespace

int64_t CocoDataset::image_index(int64_t id) const {
  auto it = image_index_.find(id);
  return it == image_index_.end() ? -1 : it->second;
}

int64_t CocoDataset::category_index(int64_t id) const {
  auto it = category_index_.find(id);
  return it == category_index_.end() ? -1 : it->second;
}

void CocoDataset::reindex() {
  image_index_.clear();
  category_index_.clear();
  for (size_t i = 0; i < images.size(); ++i) image_index_.emplace(images[i].id, int64_t(i));
  for (size_t i = 0; i < categories.size(); ++i) category_index_.emplace(categories[i].id, int64_t(i));
}

void validate_coco(CocoDataset& d, const std::string& origin) {
  std::set<int64_t> seen;
  for (size_t i = 0; i < d.images.size(); ++i) {
    const auto& im = d.images[i];
    const std::string where = at(origin, "images", i);
    if (!seen.insert(im.id).second) throw Error(fmt::format("{}: duplicate image id {}", where, im.id));
    if (im.width < 1 || im.height < 1)
      throw Error(fmt::format("{}: width/height must be >= 1, got {}x{}", where, im.width, im.height));
  }
  seen.clear();
  for (size_t i = 0; i < d.categories.size(); ++i) {
    if (!seen.insert(d.categories[i].id).second)
      throw Error(fmt::format("{}: duplicate category id {}", at(origin, "categories", i), d.categories[i].id));
  }
  d.reindex();
  seen.clear();
  for (size_t i = 0; i < d.annotations.size(); ++i) {
    const auto& a = d.annotations[i];
    const std::string where = at(origin, "annotations", i);
    if (!seen.insert(a.id).second) throw Error(fmt::format("{}: duplicate annotation id {}", where, a.id));
    if (d.image_index(a.image_id) < 0) throw Error(fmt::format("{}: unknown image_id {}", where, a.image_id));
    if (d.category_index(a.category_id) < 0)
      throw Error(fmt::format("{}: unknown category_id {}", where, a.category_id));
    for (double v : a.bbox)
      if (!std::isfinite(v)) throw Error(fmt::format("{}: 'bbox' is not finite", where));
    if (a.bbox[2] < 0 || a.bbox[3] < 0)
      throw Error(fmt::format("{}: 'bbox' has a negative width/height ({}x{})", where, a.bbox[2], a.bbox[3]));
    if (!std::isfinite(a.area) || a.area < 0) throw Error(fmt::format("{}: 'area' must be >= 0, got {}", where, a.area));
  }
}

namespace {

CocoImage parse_image(const json& e, const std::string& where) {
  CocoImage im;
  im.id = get_id(e, "id", where);
  im.file_name = get_string(field(e, "file_name", where), "file_name", where);
  im.width = get_id(e, "width", where);
  im.height = get_id(e, "height", where);
  return im;
}

CocoCategory parse_category(const json& e, const std::string& where) {
  CocoCategory c;
  c.id = get_id(e, "id", where);
  c.name = get_string(field(e, "name", where), "name", where);
  if (auto it = e.find("supercategory"); it != e.end() && !it->is_null())
    c.supercategory = get_string(*it, "supercategory", where);
  return c;
}

CocoAnnotation parse_annotation(const json& e, const std::string& where) {
  CocoAnnotation a;
  a.id = get_id(e, "id", where);
  a.image_id = get_id(e, "image_id", where);
  a.category_id = get_id(e, "category_id", where);
  a.bbox = get_box(e, where);
  if (auto it = e.find("area"); it != e.end()) {
    a.area = get_number(*it, "area", where);
    if (a.area < 0) throw Error(fmt::format("{}: 'area' must be >= 0, got {}", where, a.area));
  } else {
    a.area = a.bbox[2] * a.bbox[3];
  }
  if (auto it = e.find("iscrowd"); it != e.end()) {
    if (it->is_boolean()) {
      a.iscrowd = it->get<bool>();
    } else if (it->is_number_integer() && (it->get<int64_t>() == 0 || it->get<int64_t>() == 1)) {
      a.iscrowd = it->get<int64_t>() == 1;
    } else {
      throw Error(fmt::format("{}: 'iscrowd' must be 0 or 1, got {}", where, it->dump()));
    }
  }
  return a;
}

// Parses every entry of j[key] (an array of objects) with parse(entry, "origin: key[i]").
template <class T>
std::vector<T> parse_entries(const json& j, const char* key, const std::string& origin,
                             T (*parse)(const json&, const std::string&)) {
  const json& arr = get_array(j, key, origin);
  std::vector<T> out;
  out.reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string where = at(origin, key, i);
    check_object(arr[i], where);
    out.push_back(parse(arr[i], where));
  }
  return out;
}

}  // namespace

CocoDataset coco_from_json(const json& j, const std::string& origin) {
  if (!j.is_object()) throw Error(fmt::format("{}: a COCO instances file must be a JSON object", origin));
  CocoDataset d;
  d.images = parse_entries(j, "images", origin, parse_image);
  d.annotations = parse_entries(j, "annotations", origin, parse_annotation);
  d.categories = parse_entries(j, "categories", origin, parse_category);
  if (auto it = j.find("info"); it != j.end()) d.info = *it;
  if (auto it = j.find("licenses"); it != j.end()) d.licenses = *it;
  validate_coco(d, origin);
  return d;
}

json coco_to_json(const CocoDataset& d) {
  json images = json::array(), anns = json::array(), cats = json::array();
  for (const auto& im : d.images)
    images.push_back({{"id", im.id}, {"file_name", im.file_name}, {"width", im.width}, {"height", im.height}});
  for (const auto& a : d.annotations)
    anns.push_back({{"id", a.id},
                    {"image_id", a.image_id},
                    {"category_id", a.category_id},
                    {"bbox", a.bbox},
                    {"area", a.area},
                    {"iscrowd", a.iscrowd ? 1 : 0}});
  for (const auto& c : d.categories)
    cats.push_back({{"id", c.id}, {"name", c.name}, {"supercategory", c.supercategory}});
  return {{"info", d.info}, {"licenses", d.licenses}, {"images", images}, {"annotations", anns}, {"categories", cats}};
}

CocoDataset read_coco(const std::string& path) { return coco_from_json(core::read_json_file(path), path); }

void write_coco(const std::string& path, const CocoDataset& d) { core::write_text_atomic(path, coco_to_json(d).dump()); }

std::vector<CocoResult> coco_results_from_json(const json& j, const CocoDataset& gt, const std::string& origin) {
  if (!j.is_array()) throw Error(fmt::format("{}: a COCO results file must be a JSON array of detections", origin));
  std::vector<CocoResult> out;
  out.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    const json& e = j[i];
    const std::string where = fmt::format("{}: [{}]", origin, i);
    check_object(e, where);
    CocoResult r;
    r.image_id = get_id(e, "image_id", where);
    r.category_id = get_id(e, "category_id", where);
    r.bbox = get_box(e, where);
    r.score = get_number(field(e, "score", where), "score", where);
    if (gt.image_index(r.image_id) < 0)
      throw Error(fmt::format("{}: image_id {} is not an image of the ground truth", where, r.image_id));
    if (gt.category_index(r.category_id) < 0)
      throw Error(fmt::format("{}: category_id {} is not a category of the ground truth", where, r.category_id));
    out.push_back(r);
  }
  return out;
}

json coco_results_to_json(const std::vector<CocoResult>& results) {
  json out = json::array();
  for (const auto& r : results)
    out.push_back({{"image_id", r.image_id}, {"category_id", r.category_id}, {"bbox", r.bbox}, {"score", r.score}});
  return out;
}

std::vector<CocoResult> read_coco_results(const std::string& path, const CocoDataset& gt) {
  return coco_results_from_json(core::read_json_file(path), gt, path);
}

void write_coco_results(const std::string& path, const std::vector<CocoResult>& results) {
  core::write_text_atomic(path, coco_results_to_json(results).dump());
}

CocoBox xyxy_to_coco(double x1, double y1, double x2, double y2) { return {x1, y1, x2 - x1, y2 - y1}; }

std::array<double, 4> coco_to_xyxy(const CocoBox& b) { return {b[0], b[1], b[0] + b[2], b[1] + b[3]}; }

}  // namespace florence::detect
