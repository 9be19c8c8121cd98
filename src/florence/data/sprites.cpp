// Sprite bank: category table, matte recovery, colour names, sprite names, corpus loading.
#include "florence/data/sprites.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/corpus.h"
#include "florence/data/sample.h"
#include "florence/data/scene.h"
#include "florence/data/transforms.h"
#include "florence/data/webdataset.h"

namespace fs = std::filesystem;

namespace florence::data {

// ------------------------------------------------------------------------------------------------
// Category table
// ------------------------------------------------------------------------------------------------

const std::vector<SpriteCategory>& default_sprite_categories() {
  // Groups: OpenClipArt folders (Debian openclipart-svg) and emoji category/subcategory names
  // (emoji-datasource emoji.json). Unseen: the zero-shot detection categories.
  static const std::vector<SpriteCategory> table = {
      {"mammal", "mammals", {"animal"}, {"openclipart:animals/mammals", "emoji:Animals & Nature/animal-mammal"}, false},
      {"bird", "birds", {"animal"}, {"openclipart:animals/birds", "emoji:Animals & Nature/animal-bird"}, true},
      {"bug", "bugs", {"insect"}, {"openclipart:animals/bugs", "emoji:Animals & Nature/animal-bug"}, false},
      {"fish", "fish", {"sea animal"}, {"openclipart:animals/fish", "emoji:Animals & Nature/animal-marine"}, false},
      {"flower", "flowers", {"plant"}, {"openclipart:plants/flowers", "emoji:Animals & Nature/plant-flower"}, false},
      {"plant", "plants", {"tree"},
       {"openclipart:=plants", "openclipart:plants/trees", "emoji:Animals & Nature/plant-other"}, false},
      {"fruit", "fruits", {"food"}, {"openclipart:food/fruit", "emoji:Food & Drink/food-fruit"}, true},
      {"food", "foods", {"meal"},
       {"openclipart:=food", "openclipart:food/breads_and_carbs", "openclipart:food/meats_and_eggs",
        "openclipart:food/vegetables", "openclipart:food/dairy", "emoji:Food & Drink/food-prepared",
        "emoji:Food & Drink/food-asian", "emoji:Food & Drink/food-vegetable"},
       false},
      {"dessert", "desserts", {"sweet", "cake"}, {"openclipart:food/desserts", "emoji:Food & Drink/food-sweet"}, false},
      {"drink", "drinks", {"beverage"}, {"openclipart:food/beverages", "emoji:Food & Drink/drink"}, false},
      {"vehicle", "vehicles", {"car"},
       {"openclipart:transportation/vehicles", "emoji:Travel & Places/transport-ground",
        "emoji:Travel & Places/transport-air"},
       false},
      {"boat", "boats", {"ship"}, {"openclipart:transportation/boating", "emoji:Travel & Places/transport-water"}, true},
      {"sign", "signs", {"road sign"},
       {"openclipart:transportation/roadsigns", "emoji:Symbols/transport-sign", "emoji:Symbols/warning"}, false},
      {"building", "buildings", {"house"},
       {"openclipart:=buildings", "openclipart:buildings/homes", "emoji:Travel & Places/place-building",
        "emoji:Travel & Places/place-religious"},
       true},
      {"clothing", "clothes", {"clothes"}, {"openclipart:people/clothing", "emoji:Objects/clothing"}, false},
      {"face", "faces", {"smiley"},
       {"openclipart:people/smilies", "emoji:Smileys & Emotion/face-*", "emoji:Smileys & Emotion/cat-face",
        "emoji:Smileys & Emotion/monkey-face"},
       false},
      {"person", "people", {"man", "woman"},
       {"openclipart:=people", "openclipart:people/stickmen", "emoji:People & Body/person*",
        "emoji:People & Body/family"},
       false},
      {"ball", "balls", {"sport"}, {"openclipart:recreation/sports", "emoji:Activities/sport"}, false},
      {"game", "games", {"toy"}, {"openclipart:recreation/games", "emoji:Activities/game"}, false},
      {"instrument", "instruments", {"music"},
       {"openclipart:recreation/music", "emoji:Objects/musical-instrument", "emoji:Objects/music"}, false},
      {"flag", "flags", {"banner"}, {"openclipart:signs_and_symbols/flags", "emoji:Flags/*"}, false},
      {"weather", "weather symbols", {"sky"},
       {"openclipart:signs_and_symbols/weather", "emoji:Travel & Places/sky & weather"}, false},
      {"clock", "clocks", {"watch"}, {"openclipart:signs_and_symbols/clocks", "emoji:Travel & Places/time"}, true},
      {"tool", "tools", {"weapon"}, {"openclipart:tools", "emoji:Objects/tool"}, false},
      {"arrow", "arrows", {"sign"}, {"openclipart:shapes/arrows", "emoji:Symbols/arrow"}, false},
      {"star", "stars", {"shape"}, {"openclipart:shapes/stars"}, false},
  };
  return table;
}

std::vector<SpriteCategory> sprite_categories_from_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object() || !j.contains("categories") || !j["categories"].is_array())
    throw Error("sprite categories '" + origin + "': expected an object with a \"categories\" array");
  std::vector<SpriteCategory> out;
  std::set<std::string> names;
  auto strings = [&](const nlohmann::json& e, const char* field, size_t i) {
    std::vector<std::string> v;
    if (!e.contains(field)) return v;
    if (!e[field].is_array()) throw Error(fmt::format("sprite categories '{}': entry {}: \"{}\" is not an array", origin, i, field));
    for (const auto& s : e[field]) {
      if (!s.is_string() || s.get<std::string>().empty())
        throw Error(fmt::format("sprite categories '{}': entry {}: \"{}\" holds a non-string or empty value", origin, i, field));
      v.push_back(s.get<std::string>());
    }
    return v;
  };
  for (size_t i = 0; i < j["categories"].size(); ++i) {
    const auto& e = j["categories"][i];
    if (!e.is_object() || !e.contains("name") || !e["name"].is_string() || e["name"].get<std::string>().empty())
      throw Error(fmt::format("sprite categories '{}': entry {} has no \"name\"", origin, i));
    SpriteCategory c;
    c.name = e["name"].get<std::string>();
    if (!names.insert(c.name).second) throw Error(fmt::format("sprite categories '{}': name '{}' repeated", origin, c.name));
    c.plural = e.contains("plural") && e["plural"].is_string() ? e["plural"].get<std::string>() : c.name + "s";
    c.synonyms = strings(e, "synonyms", i);
    c.groups = strings(e, "groups", i);
    if (c.groups.empty()) throw Error(fmt::format("sprite categories '{}': '{}' has no \"groups\"", origin, c.name));
    for (const auto& g : c.groups)
      if (g.find(':') == std::string::npos || g.find(':') == 0)
        throw Error(fmt::format("sprite categories '{}': '{}': group '{}' is not SOURCE:PATTERN", origin, c.name, g));
    c.unseen = e.contains("unseen") && e["unseen"].is_boolean() && e["unseen"].get<bool>();
    out.push_back(std::move(c));
  }
  if (out.empty()) throw Error("sprite categories '" + origin + "': no category");
  return out;
}

std::vector<SpriteCategory> load_sprite_categories(const std::string& path) {
  if (path.empty()) return default_sprite_categories();
  return sprite_categories_from_json(core::read_json_file(path), path);
}

nlohmann::json sprite_categories_to_json(const std::vector<SpriteCategory>& categories) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& c : categories)
    arr.push_back({{"name", c.name}, {"plural", c.plural}, {"synonyms", c.synonyms}, {"groups", c.groups}, {"unseen", c.unseen}});
  return {{"categories", arr}};
}

std::string sprite_group(const nlohmann::json& meta) {
  auto str = [&](const char* k) {
    return meta.is_object() && meta.contains(k) && meta[k].is_string() ? meta[k].get<std::string>() : std::string();
  };
  if (str("source") == "openclipart") return str("folder");
  const std::string cat = str("category"), sub = str("subcategory"), folder = str("folder");
  if (!cat.empty() && !sub.empty()) return cat + "/" + sub;
  if (!folder.empty()) return folder;
  return cat;
}

bool group_matches(const std::string& pattern, const std::string& source, const std::string& group) {
  const size_t colon = pattern.find(':');
  if (colon == std::string::npos || pattern.compare(0, colon, source) != 0 || colon != source.size()) return false;
  const std::string p = pattern.substr(colon + 1);
  if (!p.empty() && p[0] == '=') return group == p.substr(1);
  if (!p.empty() && p.back() == '*') return group.compare(0, p.size() - 1, p, 0, p.size() - 1) == 0;
  return group == p || (group.size() > p.size() && group.compare(0, p.size(), p) == 0 && group[p.size()] == '/');
}

int find_sprite_category(const std::vector<SpriteCategory>& categories, const std::string& source,
                         const std::string& group) {
  for (size_t c = 0; c < categories.size(); ++c)
    for (const auto& g : categories[c].groups)
      if (group_matches(g, source, group)) return int(c);
  return -1;
}

// ------------------------------------------------------------------------------------------------
// Matte and colour
// ------------------------------------------------------------------------------------------------

cv::Mat key_white_background(const cv::Mat& rgb, int tolerance) {
  if (rgb.type() != CV_8UC3) throw Error("key_white_background: expected an 8-bit 3-channel image");
  const int h = rgb.rows, w = rgb.cols;
  auto whiteish = [&](int y, int x) {
    const cv::Vec3b p = rgb.at<cv::Vec3b>(y, x);
    return 255 - std::min({p[0], p[1], p[2]}) <= tolerance;
  };
  cv::Mat bg(h, w, CV_8UC1, cv::Scalar(0));
  std::deque<std::pair<int, int>> queue;
  auto seed = [&](int y, int x) {
    if (!bg.at<uint8_t>(y, x) && whiteish(y, x)) {
      bg.at<uint8_t>(y, x) = 1;
      queue.emplace_back(y, x);
    }
  };
  for (int x = 0; x < w; ++x) seed(0, x), seed(h - 1, x);
  for (int y = 0; y < h; ++y) seed(y, 0), seed(y, w - 1);
  const int dy[4] = {-1, 1, 0, 0}, dx[4] = {0, 0, -1, 1};
  while (!queue.empty()) {
    const auto [y, x] = queue.front();
    queue.pop_front();
    for (int k = 0; k < 4; ++k) {
      const int ny = y + dy[k], nx = x + dx[k];
      if (ny >= 0 && ny < h && nx >= 0 && nx < w) seed(ny, nx);
    }
  }
  cv::Mat out(h, w, CV_8UC4);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const cv::Vec3b p = rgb.at<cv::Vec3b>(y, x);
      cv::Vec4b& o = out.at<cv::Vec4b>(y, x);
      if (bg.at<uint8_t>(y, x)) {
        o = cv::Vec4b(0, 0, 0, 0);
        continue;
      }
      bool fringe = false;
      for (int k = 0; k < 4 && !fringe; ++k) {
        const int ny = y + dy[k], nx = x + dx[k];
        fringe = ny >= 0 && ny < h && nx >= 0 && nx < w && bg.at<uint8_t>(ny, nx);
      }
      if (!fringe) {
        o = cv::Vec4b(p[0], p[1], p[2], 255);
        continue;
      }
      const double a = double(255 - std::min({p[0], p[1], p[2]})) / 255.0;
      for (int c = 0; c < 3; ++c)
        o[c] = cv::saturate_cast<uint8_t>(std::lround((double(p[c]) - 255.0 * (1.0 - a)) / a));
      o[3] = cv::saturate_cast<uint8_t>(std::lround(a * 255.0));
    }
  }
  return out;
}

cv::Mat crop_to_alpha(const cv::Mat& rgba) {
  if (rgba.type() != CV_8UC4) throw Error("crop_to_alpha: expected an 8-bit 4-channel image");
  cv::Mat alpha;
  cv::extractChannel(rgba, alpha, 3);
  std::vector<cv::Point> nz;
  cv::findNonZero(alpha, nz);
  if (nz.empty()) return {};
  return rgba(cv::boundingRect(nz)).clone();
}

const std::vector<std::string>& colour_palette() {
  static const std::vector<std::string> p = {"red",    "orange", "yellow", "green", "blue", "purple",
                                             "pink",   "brown",  "black",  "white", "gray"};
  return p;
}

std::string colour_name(uint8_t r, uint8_t g, uint8_t b) {
  // HSV with H in degrees, S and V in [0, 1]. Thresholds are ours, picked so that the named
  // colours of the CSS/X11 table (red, orange, gold, green, navy, purple, pink, brown, ...) get
  // their own name (tested in test_sprites.cpp).
  const double R = r / 255.0, G = g / 255.0, B = b / 255.0;
  const double mx = std::max({R, G, B}), mn = std::min({R, G, B}), d = mx - mn;
  const double v = mx, s = mx > 0 ? d / mx : 0;
  if (v < 0.2) return "black";
  if (s < 0.18 || d < 0.08) return v > 0.85 ? "white" : (v < 0.3 ? "black" : "gray");
  double hue;
  if (mx == R)
    hue = 60.0 * std::fmod((G - B) / d + 6.0, 6.0);
  else if (mx == G)
    hue = 60.0 * ((B - R) / d + 2.0);
  else
    hue = 60.0 * ((R - G) / d + 4.0);
  if (hue < 15 || hue >= 340) {
    if (s < 0.5 && v > 0.7) return "pink";
    return v < 0.45 ? "brown" : "red";
  }
  if (hue < 45) return v < 0.65 ? "brown" : "orange";
  if (hue < 70) return v < 0.5 ? "brown" : "yellow";
  if (hue < 165) return "green";
  if (hue < 255) return "blue";
  if (hue < 315) return "purple";
  return "pink";
}

const std::vector<std::string>& similar_colours(const std::string& name) {
  static const std::map<std::string, std::vector<std::string>> table = {
      {"red", {"orange", "pink"}},    {"orange", {"red", "yellow", "brown"}}, {"yellow", {"orange", "green"}},
      {"green", {"yellow", "blue"}},  {"blue", {"purple", "green"}},        {"purple", {"blue", "pink"}},
      {"pink", {"red", "purple"}},    {"brown", {"orange", "black"}},        {"black", {"gray", "brown"}},
      {"white", {"gray"}},            {"gray", {"white", "black"}}};
  static const std::vector<std::string> none;
  const auto it = table.find(name);
  return it == table.end() ? none : it->second;
}

DominantColour dominant_colour(const cv::Mat& rgba) {
  if (rgba.type() != CV_8UC4) throw Error("dominant_colour: expected an 8-bit 4-channel image");
  std::map<std::string, int64_t> counts;
  int64_t total = 0;
  for (int y = 0; y < rgba.rows; ++y)
    for (int x = 0; x < rgba.cols; ++x) {
      const cv::Vec4b p = rgba.at<cv::Vec4b>(y, x);
      if (p[3] < 128) continue;
      ++counts[colour_name(p[0], p[1], p[2])];
      ++total;
    }
  DominantColour d;
  int64_t best = 0;
  for (const auto& name : colour_palette()) {  // palette order breaks ties
    const auto it = counts.find(name);
    if (it != counts.end() && it->second > best) best = it->second, d.name = name;
  }
  d.share = total > 0 ? double(best) / double(total) : 0.0;
  return d;
}

std::string sprite_name(const std::string& source, const nlohmann::json& meta, const std::string& text) {
  auto str = [&](const char* k) {
    return meta.is_object() && meta.contains(k) && meta[k].is_string() ? meta[k].get<std::string>() : std::string();
  };
  std::string raw = source == "emoji" ? str("name") : str("title");
  if (raw.empty()) raw = text.substr(0, text.find(". "));
  std::string s;
  for (char c : raw) s.push_back(char(std::tolower(static_cast<unsigned char>(c))));
  for (const char* cut : {" by ", " - ", " with ", "(", ":", ","}) {
    const size_t p = s.find(cut);
    if (p != std::string::npos && p > 0) s.resize(p);
  }
  std::replace(s.begin(), s.end(), '_', ' ');
  std::replace(s.begin(), s.end(), '-', ' ');
  static const std::set<std::string> filler = {"clipart", "clip", "art",     "icon",    "vector",  "svg",
                                               "png",     "image", "picture", "drawing", "cartoon", "simple"};
  std::vector<std::string> words;
  std::string word;
  auto flush = [&] {
    const bool letter = std::any_of(word.begin(), word.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)); });
    const bool ascii = std::all_of(word.begin(), word.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '\'' || c == '&';
    });
    if (!word.empty() && letter && ascii && !filler.count(word) && words.size() < 4) words.push_back(word);
    word.clear();
  };
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == '.' || c == '/')
      flush();
    else
      word.push_back(c);
  }
  flush();
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

// ------------------------------------------------------------------------------------------------
// The bank
// ------------------------------------------------------------------------------------------------

namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

struct Candidate {
  std::string source, corpus_key, group, text;
  int category = -1;
  nlohmann::json meta;
  std::vector<uint8_t> image;
};

std::vector<std::string> corpus_shards(const std::string& dir) {
  std::vector<std::string> out;
  if (!fs::is_directory(dir)) throw Error("sprite bank: corpus folder '" + dir + "' does not exist");
  for (const char* split : {"train", "val", "test"}) {
    const fs::path sub = fs::path(dir) / split;
    if (!fs::is_directory(sub)) continue;
    bool any = false;
    for (const auto& e : fs::directory_iterator(sub)) any = any || e.path().extension() == ".tar";
    if (any)
      for (auto& s : list_shards(sub.string())) out.push_back(std::move(s));
  }
  if (out.empty()) out = list_shards(dir);  // throws naming the folder when it has no .tar either
  return out;
}

}  // namespace

SpriteBank SpriteBank::load(const SpriteBankOptions& o) {
  if (o.corpora.empty()) throw Error("sprite bank: no corpus folder given");
  std::vector<SpriteCategory> categories = load_sprite_categories(o.categories_file);
  std::map<std::string, int64_t> skips;
  std::vector<Candidate> cands;
  std::set<std::string> seen;
  for (const auto& dir : o.corpora) {
    for (const auto& shard : corpus_shards(dir)) {
      ShardReader reader(shard);
      Sample s;
      while (reader.next(s)) {
        const std::string source =
            s.meta.contains("source") && s.meta["source"].is_string() ? s.meta["source"].get<std::string>() : "unknown";
        if (s.meta.contains("duplicate_of")) {
          ++skips["duplicate"];
          continue;
        }
        if (s.meta.contains("skin_tone")) {
          ++skips["skin_tone_variant"];
          continue;
        }
        Candidate c;
        c.source = source;
        c.group = sprite_group(s.meta);
        c.category = find_sprite_category(categories, source, c.group);
        if (c.category < 0) {
          ++skips["no_category"];
          continue;
        }
        if (!seen.insert(source + "/" + s.key).second) {
          ++skips["duplicate_key"];
          continue;
        }
        c.corpus_key = s.key;
        c.text = s.text;
        c.meta = std::move(s.meta);
        c.image = std::move(s.image);
        cands.push_back(std::move(c));
      }
      const ShardStats& st = reader.stats();
      if (st.corrupt) skips["shard_corrupt"] += st.corrupt;
      if (st.missing_image) skips["shard_missing_image"] += st.missing_image;
      if (st.bad_text) skips["shard_bad_text"] += st.bad_text;
      if (st.bad_meta) skips["shard_bad_meta"] += st.bad_meta;
      if (st.unsafe_key) skips["shard_unsafe_key"] += st.unsafe_key;
      if (st.unsupported_format) skips["unsupported_format"] += st.unsupported_format;
    }
  }
  // Cap per category: the smallest hashes of the sprite key (a split-neutral choice).
  if (o.max_per_category > 0) {
    std::vector<std::vector<std::pair<uint64_t, size_t>>> per(categories.size());
    for (size_t i = 0; i < cands.size(); ++i)
      per[size_t(cands[i].category)].emplace_back(fnv1a(cands[i].source + "/" + cands[i].corpus_key), i);
    std::vector<bool> keep(cands.size(), false);
    for (auto& v : per) {
      std::sort(v.begin(), v.end());
      for (size_t k = 0; k < v.size() && int64_t(k) < o.max_per_category; ++k) keep[v[k].second] = true;
    }
    std::vector<Candidate> kept;
    for (size_t i = 0; i < cands.size(); ++i) {
      if (keep[i])
        kept.push_back(std::move(cands[i]));
      else
        ++skips["over_cap"];
    }
    cands = std::move(kept);
  }
  const std::string emoji_img = (fs::path(o.emoji_dir.empty() ? default_emoji_dir() : o.emoji_dir) / "img" / "google" / "64").string();
  const bool have_emoji = fs::is_directory(emoji_img);
  if (!have_emoji && std::any_of(cands.begin(), cands.end(), [](const Candidate& c) { return c.source == "emoji"; }))
    spdlog::warn("sprite bank: emoji package images not found at '{}': emoji alpha is keyed from the shards", emoji_img);

  std::vector<Sprite> out(cands.size());
  std::vector<std::string> failure(cands.size());
  parallel_for_index(cands.size(), o.threads, [&](size_t i) {
    const Candidate& c = cands[i];
    Sprite sp;
    sp.source = c.source;
    sp.corpus_key = c.corpus_key;
    sp.key = c.source + "/" + c.corpus_key;
    sp.group = c.group;
    sp.category = c.category;
    sp.text = c.text;
    sp.split = split_of(c.corpus_key, o.train_pct, o.val_pct);
    sp.name = sprite_name(c.source, c.meta, c.text);
    if (sp.name.empty()) sp.name = categories[size_t(c.category)].name;
    cv::Mat rgba;
    if (c.source == "emoji" && have_emoji) {
      const cv::Mat raw = cv::imread((fs::path(emoji_img) / (c.corpus_key + ".png")).string(), cv::IMREAD_UNCHANGED);
      if (!raw.empty() && raw.type() == CV_8UC4) {
        cv::cvtColor(raw, rgba, cv::COLOR_BGRA2RGBA);
        sp.alpha = "source";
      }
    }
    if (rgba.empty()) {
      cv::Mat rgb;
      try {
        rgb = decode_rgb(c.image);
      } catch (const Error& e) {
        failure[i] = "undecodable";
        return;
      }
      rgba = key_white_background(rgb);
      sp.alpha = "keyed";
    }
    rgba = crop_to_alpha(rgba);
    if (rgba.empty()) {
      failure[i] = "empty_alpha";
      return;
    }
    if (std::min(rgba.cols, rgba.rows) < o.min_side) {
      failure[i] = "too_small";
      return;
    }
    sp.colour = dominant_colour(rgba);
    sp.rgba = rgba;
    out[i] = std::move(sp);
  });
  std::vector<Sprite> sprites;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!failure[i].empty()) {
      ++skips[failure[i]];
      spdlog::debug("sprite bank: {}/{}: {}", cands[i].source, cands[i].corpus_key, failure[i]);
      continue;
    }
    sprites.push_back(std::move(out[i]));
  }
  if (sprites.empty()) throw Error("sprite bank: no usable sprite in the given corpora (skips: " + nlohmann::json(skips).dump() + ")");
  SpriteBank bank(std::move(categories), std::move(sprites));
  bank.skips_ = std::move(skips);
  if (o.progress)
    spdlog::info("sprite bank: {} sprites in {} categories ({} skipped)", bank.sprites_.size(), bank.categories_.size(),
                 [&] {
                   int64_t n = 0;
                   for (const auto& [k, v] : bank.skips_) n += v;
                   return n;
                 }());
  return bank;
}

SpriteBank::SpriteBank(std::vector<SpriteCategory> categories, std::vector<Sprite> sprites)
    : categories_(std::move(categories)), sprites_(std::move(sprites)) {
  for (const auto& s : sprites_) {
    if (s.category < 0 || size_t(s.category) >= categories_.size())
      throw Error("sprite bank: sprite '" + s.key + "' has category index " + std::to_string(s.category) + " out of range");
    if (s.split != "train" && s.split != "val" && s.split != "test")
      throw Error("sprite bank: sprite '" + s.key + "' has split '" + s.split + "'");
  }
  std::sort(sprites_.begin(), sprites_.end(), [](const Sprite& a, const Sprite& b) { return a.key < b.key; });
  index();
}

void SpriteBank::index() {
  by_category_.assign(categories_.size(), {});
  for (size_t i = 0; i < sprites_.size(); ++i) by_category_[size_t(sprites_[i].category)][sprites_[i].split].push_back(i);
}

const std::vector<size_t>& SpriteBank::of(int category, const std::string& split) const {
  static const std::vector<size_t> none;
  if (category < 0 || size_t(category) >= by_category_.size()) return none;
  const auto it = by_category_[size_t(category)].find(split);
  return it == by_category_[size_t(category)].end() ? none : it->second;
}

std::vector<int> SpriteBank::usable_categories(const std::vector<std::string>& splits, size_t min_sprites) const {
  std::vector<int> out;
  for (int c = 0; c < int(categories_.size()); ++c) {
    bool ok = true;
    for (const auto& s : splits) ok = ok && of(c, s).size() >= min_sprites;
    if (ok) out.push_back(c);
  }
  return out;
}

nlohmann::json SpriteBank::summary() const {
  nlohmann::json cats = nlohmann::json::object(), sources = nlohmann::json::object(), alpha = nlohmann::json::object();
  for (int c = 0; c < int(categories_.size()); ++c) {
    nlohmann::json e = {{"unseen", categories_[size_t(c)].unseen}};
    for (const char* s : {"train", "val", "test"}) e[s] = of(c, s).size();
    cats[categories_[size_t(c)].name] = e;
  }
  std::map<std::string, int64_t> src, al;
  for (const auto& s : sprites_) ++src[s.source], ++al[s.alpha];
  for (const auto& [k, v] : src) sources[k] = v;
  for (const auto& [k, v] : al) alpha[k] = v;
  return {{"sprites", sprites_.size()}, {"categories", cats}, {"sources", sources}, {"alpha", alpha}, {"skips", skips_}};
}

}  // namespace florence::data
