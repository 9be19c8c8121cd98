// The corpus sources' table and the metadata readers of the listed sources (tuxpaint, openmoji, mdi,
// tabler, fontawesome, flags): each turns its package's own metadata into ListedItems (key, split
// key, image path, caption, category); corpus.cpp renders and writes them.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "florence/core/error.h"
#include "florence/data/corpus.h"
#include "florence/data/corpus_detail.h"
#include "florence/data/idx.h"

namespace fs = std::filesystem;

namespace florence::data {

std::string npm_package_dir(const std::string& name, const std::string& version) {
  return florence_cache_dir() + "/" + name + "-" + version + "/package";
}

std::vector<CorpusSourceInfo> corpus_sources() {
  // Versions: keep in sync with scripts/setup (NPM_PACKAGES). Licenses: each package's own file.
  // Built per call: the npm folders follow $FLORENCE_CACHE as it is now.
  return {
      {"openclipart", default_openclipart_dir(), "Debian openclipart-svg",
       "CC0 / public domain (/usr/share/doc/openclipart-svg/copyright)", {"title", "description", "keywords"},
       {"title"}, "top folder"},
      {"emoji", default_emoji_dir(), std::string("npm emoji-datasource-google@") + kEmojiVersion,
       "metadata MIT; Noto images Apache-2.0 (package LICENSE, README)", {}, {}, "category"},
      {"fashion-mnist", kFashionMnistDir, "Debian dataset-fashion-mnist",
       "MIT (/usr/share/doc/dataset-fashion-mnist/copyright)", {}, {}, "class"},
      {"twemoji", npm_package_dir("emoji-datasource-twitter", kEmojiVersion),
       std::string("npm emoji-datasource-twitter@") + kEmojiVersion,
       "metadata MIT; Twitter images CC-BY-4.0 (package README)", {}, {}, "category"},
      {"tuxpaint", "/usr/share/tuxpaint/stamps", "Debian tuxpaint-stamps-default",
       "GPL-2 (/usr/share/doc/tuxpaint-stamps-default/copyright)", {"caption"}, {"caption"}, "top folder"},
      {"openmoji", npm_package_dir("openmoji", "17.0.0"), "npm openmoji@17.0.0",
       "CC-BY-SA-4.0 (package LICENSE.txt)", {"annotation", "tags"}, {"annotation", "tags"}, "group"},
      {"mdi", npm_package_dir("mdi-svg", "7.4.47"), "npm @mdi/svg@7.4.47",
       "Pictogrammers Free License; icons Apache-2.0 (package LICENSE)", {"name", "aliases", "tags"},
       {"name", "aliases"}, "first tag"},
      {"tabler", npm_package_dir("tabler-icons", "3.54.0"), "npm @tabler/icons@3.54.0", "MIT (package LICENSE)",
       {"name", "tags"}, {"name", "tags"}, "category"},
      {"fontawesome", npm_package_dir("fortawesome-fontawesome-free", "7.3.1"),
       "npm @fortawesome/fontawesome-free@7.3.1", "icons CC-BY-4.0 (package LICENSE.txt)", {"label", "terms"},
       {"label", "terms"}, "style"},
      {"flags", "/usr/share/iso-flags-svg/country-4x3", "Debian iso-flags-svg + iso-codes",
       "flags public domain (/usr/share/doc/iso-flags-svg/copyright); names iso-codes LGPL-2.1+", {"name", "official"},
       {"name"}, "country | region"},
  };
}

CorpusSourceInfo corpus_source(const std::string& name) {
  std::string known;
  for (const auto& s : corpus_sources()) {
    if (s.name == name) return s;
    known += (known.empty() ? "" : " | ") + s.name;
  }
  throw Error("data build: unknown source '" + name + "' (" + known + ")");
}

namespace detail {

bool safe_file_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name.find("..") == std::string::npos;
}

std::vector<std::string> resolve_fields(const std::string& source, const std::vector<std::string>& fields) {
  const CorpusSourceInfo info = corpus_source(source);
  // A source with a fixed text (emoji, twemoji, fashion-mnist) ignores fields, as it always has: one
  // CorpusOptions may be reused across sources. The CLI refuses --fields for such a source.
  if (fields.empty() || info.fields.empty()) return info.default_fields;
  for (const auto& f : fields) {
    if (std::find(info.fields.begin(), info.fields.end(), f) == info.fields.end()) {
      std::string known;
      for (const auto& k : info.fields) known += (known.empty() ? "" : " | ") + k;
      throw Error("data build " + source + ": unknown text field '" + f + "' (" + known + ")");
    }
  }
  return fields;
}

namespace {

nlohmann::json read_json_file(const std::string& source, const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f)
    throw Error(source + ": '" + p.string() + "' not found (" + corpus_source(source).provided_by +
                ": scripts/setup installs it)");
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": '" + p.string() + "' is not valid JSON: " + e.what());
  }
}

std::string str_of(const nlohmann::json& j, const char* k) {
  return j.is_object() && j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
}

/// Strings of a JSON array (other elements ignored); a string is split at commas (OpenMoji's tags).
std::vector<std::string> strings_of(const nlohmann::json& j) {
  std::vector<std::string> out;
  auto add = [&](const std::string& s) {
    std::string cur;
    for (char c : s + ",") {
      if (c == ',') {
        cur = collapse_ws(cur);
        if (!cur.empty()) out.push_back(cur);
        cur.clear();
      } else {
        cur.push_back(c);
      }
    }
  };
  if (j.is_string()) add(j.get<std::string>());
  if (j.is_array())
    for (const auto& e : j)
      if (e.is_string()) out.push_back(collapse_ws(e.get<std::string>()));
  return out;
}

/// "arrow-left-bold" -> "arrow left bold".
std::string words_of(std::string name) {
  std::replace(name.begin(), name.end(), '-', ' ');
  std::replace(name.begin(), name.end(), '_', ' ');
  return collapse_ws(name);
}

/// Caption from named parts in field order: non-empty parts joined by ". "; a list part's items by
/// ", " with repeats (case-insensitive) of earlier words dropped.
std::string join_fields(const std::vector<std::string>& fields, const std::map<std::string, std::vector<std::string>>& parts) {
  std::string out;
  std::set<std::string> seen;
  auto lower = [](std::string s) {
    for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  for (const auto& f : fields) {
    auto it = parts.find(f);
    if (it == parts.end()) continue;
    std::string part;
    for (const auto& item : it->second) {
      if (item.empty() || !seen.insert(lower(item)).second) continue;
      part += (part.empty() ? "" : ", ") + item;
    }
    if (!part.empty()) out += (out.empty() ? "" : ". ") + part;
  }
  return out;
}

/// A metadata entry that names no usable image: counted as "bad_entry".
ListedItem bad_entry(const std::string& name, const std::string& detail) {
  ListedItem it;
  it.name = name;
  it.fail_reason = "bad_entry";
  it.fail_detail = detail;
  return it;
}

ListedItem item_of(const std::string& source, const std::string& key, const std::string& split_key, const fs::path& path,
                   const std::string& text, const std::string& category) {
  ListedItem it;
  it.key = key;
  it.split_key = split_key;
  it.path = path.string();
  it.text = text;
  it.name = key;
  it.meta = {{"source", source}};
  if (!category.empty()) it.meta["category"] = category;  // none: zero-shot skips it, the summary counts "(none)"
  if (text.empty()) it.fail_reason = "no_text";
  std::error_code ec;
  if (it.fail_reason.empty() && !fs::is_regular_file(path, ec)) {
    it.fail_reason = "missing_image";
    it.fail_detail = path.string();
  }
  return it;
}

// ------------------------------------------------------------------------------------------------

ListedSource list_tuxpaint(const CorpusOptions& o, const std::string& root) {
  ListedSource out;
  std::vector<std::string> rel;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      spdlog::warn("tuxpaint: listing '{}' stopped early: {}", root, ec.message());
      break;
    }
    if (it->path().extension() == ".txt" && it->is_regular_file(ec))
      rel.push_back(it->path().lexically_relative(root).generic_string());
  }
  std::sort(rel.begin(), rel.end());
  if (rel.empty()) throw Error("tuxpaint: no stamp description (.txt) under '" + root + "'");
  for (const auto& r : rel) {
    const fs::path txt = fs::path(root) / r;
    fs::path img = txt;
    img.replace_extension(".svg");
    if (!fs::is_regular_file(img, ec)) img.replace_extension(".png");  // Tux Paint prefers the SVG too
    std::string caption;
    {
      // The first line, read from at most the first 4 KiB (a caption is a sentence).
      std::ifstream f(txt, std::ios::binary);
      caption.resize(4096);
      f.read(caption.data(), std::streamsize(caption.size()));
      caption.resize(size_t(std::max<std::streamsize>(f.gcount(), 0)));
      if (const size_t nl = caption.find_first_of("\r\n"); nl != std::string::npos) {
        caption.resize(nl);
      } else if (caption.size() == 4096) {  // cut: not inside a UTF-8 sequence
        size_t cut = caption.size();
        while (cut > 0 && (static_cast<unsigned char>(caption[cut - 1]) & 0xC0) == 0x80) --cut;
        if (cut > 0 && (static_cast<unsigned char>(caption[cut - 1]) & 0x80)) --cut;  // the lead byte too
        caption.resize(cut);
      }
      if (caption.size() >= 3 && caption.compare(0, 3, "\xEF\xBB\xBF") == 0) caption.erase(0, 3);  // UTF-8 BOM
      caption = collapse_ws(caption);
      // The first line is the English caption; a file starting with "xx.utf8=..." has none.
      if (caption.find(".utf8=") != std::string::npos) caption.clear();
    }
    const size_t slash = r.find('/');
    const std::string key = key_from_relative_path(r);
    ListedItem it = item_of("tuxpaint", key, key, img, caption, slash == std::string::npos ? "(root)" : r.substr(0, slash));
    it.name = r;
    it.meta["folder"] = fs::path(r).parent_path().generic_string();
    it.meta["path"] = img.lexically_relative(root).generic_string();
    it.meta["caption"] = caption;
    out.items.push_back(std::move(it));
  }
  return out;
}

ListedSource list_openmoji(const CorpusOptions& o, const std::string& root) {
  ListedSource out;
  const nlohmann::json list = read_json_file("openmoji", fs::path(root) / "data" / "openmoji.json");
  if (!list.is_array()) throw Error("openmoji: data/openmoji.json is not a JSON array");
  const auto fields = resolve_fields("openmoji", o.fields);
  std::set<std::string> used;
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& e = list[i];
    const std::string hex = str_of(e, "hexcode");
    if (!safe_file_name(hex)) {
      out.items.push_back(bad_entry("openmoji.json[" + std::to_string(i) + "]", "not an object with a usable 'hexcode'"));
      continue;
    }
    std::vector<std::string> tags = strings_of(e.value("tags", nlohmann::json()));
    for (const auto& t : strings_of(e.value("openmoji_tags", nlohmann::json()))) tags.push_back(t);
    const std::string text = join_fields(fields, {{"annotation", {collapse_ws(str_of(e, "annotation"))}}, {"tags", tags}});
    std::string key = key_from_relative_path(hex);
    for (auto& c : key) c = char(std::tolower(static_cast<unsigned char>(c)));
    std::string base = str_of(e, "skintone_base_hexcode");
    for (auto& c : base) c = char(std::tolower(static_cast<unsigned char>(c)));
    ListedItem it = item_of("openmoji", key, base.empty() ? key : key_from_relative_path(base),
                            fs::path(root) / "color" / "svg" / (hex + ".svg"), text, str_of(e, "group"));
    if (!used.insert(key).second) {
      it.fail_reason = "duplicate_key";
      it.fail_detail.clear();
    }
    it.meta["subcategory"] = str_of(e, "subgroups");
    it.meta["hexcode"] = hex;
    it.meta["annotation"] = str_of(e, "annotation");
    it.meta["tags"] = tags;
    if (!base.empty()) it.meta["skin_tone"] = str_of(e, "skintone");
    out.items.push_back(std::move(it));
  }
  return out;
}

ListedSource list_mdi(const CorpusOptions& o, const std::string& root) {
  ListedSource out;
  const nlohmann::json list = read_json_file("mdi", fs::path(root) / "meta.json");
  if (!list.is_array()) throw Error("mdi: meta.json is not a JSON array");
  const auto fields = resolve_fields("mdi", o.fields);
  std::set<std::string> used;
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& e = list[i];
    const std::string name = str_of(e, "name");
    if (!safe_file_name(name)) {
      out.items.push_back(bad_entry("meta.json[" + std::to_string(i) + "]", "no usable 'name'"));
      continue;
    }
    std::vector<std::string> aliases;
    for (const auto& a : strings_of(e.value("aliases", nlohmann::json()))) aliases.push_back(words_of(a));
    const std::vector<std::string> tags = strings_of(e.value("tags", nlohmann::json()));
    const std::string text = join_fields(fields, {{"name", {words_of(name)}}, {"aliases", aliases}, {"tags", tags}});
    ListedItem it = item_of("mdi", key_from_relative_path(name), key_from_relative_path(name),
                            fs::path(root) / "svg" / (name + ".svg"), text, tags.empty() ? "" : tags.front());
    if (!used.insert(it.key).second) it.fail_reason = "duplicate_key";
    it.meta["name"] = name;
    it.meta["tags"] = tags;
    if (e.contains("deprecated") && e["deprecated"].is_boolean() && e["deprecated"].get<bool>()) it.meta["deprecated"] = true;
    out.items.push_back(std::move(it));
  }
  return out;
}

ListedSource list_tabler(const CorpusOptions& o, const std::string& root) {
  ListedSource out;
  const nlohmann::json map = read_json_file("tabler", fs::path(root) / "icons.json");
  if (!map.is_object()) throw Error("tabler: icons.json is not a JSON object");
  const auto fields = resolve_fields("tabler", o.fields);
  for (const auto& [name, e] : map.items()) {  // nlohmann's object: sorted by name
    if (!safe_file_name(name) || !e.is_object()) {
      out.items.push_back(bad_entry("icons.json[" + name + "]", "not a usable icon name and object"));
      continue;
    }
    std::vector<std::string> tags;
    for (const auto& t : strings_of(e.value("tags", nlohmann::json()))) tags.push_back(words_of(t));
    const std::string text = join_fields(fields, {{"name", {words_of(name)}}, {"tags", tags}});
    const nlohmann::json styles = e.contains("styles") ? e["styles"] : nlohmann::json();
    if (!styles.is_object()) {
      out.items.push_back(bad_entry("icons.json[" + name + "]", "'styles' is not an object"));
      continue;
    }
    for (const char* style : {"outline", "filled"}) {
      if (!styles.contains(style)) continue;
      const std::string key = std::string(style) + "/" + key_from_relative_path(name);
      ListedItem it = item_of("tabler", key, key_from_relative_path(name),
                              fs::path(root) / "icons" / style / (name + ".svg"), text, str_of(e, "category"));
      it.meta["name"] = name;
      it.meta["style"] = style;
      it.meta["tags"] = tags;
      out.items.push_back(std::move(it));
    }
  }
  return out;
}

ListedSource list_fontawesome(const CorpusOptions& o, const std::string& root) {
  ListedSource out;
  const nlohmann::json map = read_json_file("fontawesome", fs::path(root) / "metadata" / "icon-families.json");
  if (!map.is_object()) throw Error("fontawesome: metadata/icon-families.json is not a JSON object");
  const auto fields = resolve_fields("fontawesome", o.fields);
  for (const auto& [name, e] : map.items()) {
    if (!safe_file_name(name) || !e.is_object()) {
      out.items.push_back(bad_entry("icon-families.json[" + name + "]", "not a usable icon name and object"));
      continue;
    }
    const nlohmann::json search = e.contains("search") ? e["search"] : nlohmann::json();
    const std::vector<std::string> terms =
        strings_of(search.is_object() && search.contains("terms") ? search["terms"] : nlohmann::json());
    std::string label = collapse_ws(str_of(e, "label"));
    if (label.empty()) label = words_of(name);
    std::string text = join_fields(fields, {{"label", {label}}, {"terms", terms}});
    for (auto& c : text) c = char(std::tolower(static_cast<unsigned char>(c)));
    // The free styles as the package states them; the classic family's SVGs live in svgs/STYLE/.
    std::set<std::string> styles;
    const nlohmann::json lic = e.contains("familyStylesByLicense") ? e["familyStylesByLicense"] : nlohmann::json();
    if (!lic.is_object() || (lic.contains("free") && !lic["free"].is_array())) {
      out.items.push_back(bad_entry("icon-families.json[" + name + "]", "familyStylesByLicense is not an object of lists"));
      continue;
    }
    if (lic.contains("free"))  // icons without a free style are Pro only: not in this package, not counted
      for (const auto& fs_ : lic["free"])
        if (str_of(fs_, "family") == "classic" && !str_of(fs_, "style").empty()) styles.insert(str_of(fs_, "style"));
    for (const auto& style : styles) {
      if (!safe_file_name(style)) {
        out.items.push_back(bad_entry("icon-families.json[" + name + "]", "style '" + style + "' is not a folder name"));
        continue;
      }
      const std::string key = style + "/" + key_from_relative_path(name);
      ListedItem it = item_of("fontawesome", key, key_from_relative_path(name),
                              fs::path(root) / "svgs" / style / (name + ".svg"), text, style);
      it.meta["name"] = name;
      it.meta["label"] = label;
      out.items.push_back(std::move(it));
    }
  }
  return out;
}

ListedSource list_flags(const CorpusOptions& o, const std::string& root, const std::string& iso_codes) {
  ListedSource out;
  const nlohmann::json iso = read_json_file("flags", iso_codes);
  std::map<std::string, nlohmann::json> by_code;
  if (iso.is_object() && iso.contains("3166-1") && iso["3166-1"].is_array())
    for (const auto& c : iso["3166-1"]) {
      std::string a2 = str_of(c, "alpha_2");
      for (auto& ch : a2) ch = char(std::tolower(static_cast<unsigned char>(ch)));
      if (!a2.empty()) by_code[a2] = c;
    }
  if (by_code.empty()) throw Error("flags: '" + iso_codes + "' has no \"3166-1\" list of countries");
  const auto fields = resolve_fields("flags", o.fields);
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.path().extension() == ".svg") files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error("flags: no .svg file in '" + root + "'");
  for (const auto& f : files) {
    const std::string stem = fs::path(f).stem().string();
    std::string name, official, category;
    if (auto it = by_code.find(stem); it != by_code.end()) {
      name = str_of(it->second, "common_name");
      if (name.empty()) name = str_of(it->second, "name");
      official = str_of(it->second, "official_name");
      category = "country";
    } else if (!stem.empty() && stem[0] == '_') {  // _basque.svg, _scotland.svg, ...: named by the file
      name = words_of(stem.substr(1));
      if (!name.empty()) name[0] = char(std::toupper(static_cast<unsigned char>(name[0])));
      category = "region";
    }
    const std::string key = key_from_relative_path(stem);
    ListedItem it = item_of("flags", key, key, fs::path(root) / f, join_fields(fields, {{"name", {name}}, {"official", {official}}}),
                            category);
    if (name.empty()) it.fail_reason = "no_text", it.fail_detail = "no ISO 3166-1 entry for '" + stem + "'";
    it.meta["code"] = stem;
    it.meta["name"] = name;
    out.items.push_back(std::move(it));
  }
  out.head["names_from"] = iso_codes;
  return out;
}

}  // namespace

ListedSource list_source(const CorpusOptions& o, const std::string& root) {
  ListedSource s;  // root: a directory, checked by build_corpus before the output folder is touched
  if (o.source == "tuxpaint") s = list_tuxpaint(o, root);
  else if (o.source == "openmoji") s = list_openmoji(o, root);
  else if (o.source == "mdi") s = list_mdi(o, root);
  else if (o.source == "tabler") s = list_tabler(o, root);
  else if (o.source == "fontawesome") s = list_fontawesome(o, root);
  else if (o.source == "flags") s = list_flags(o, root, "/usr/share/iso-codes/json/iso_3166-1.json");
  else throw Error("data build: '" + o.source + "' is not a listed source");
  if (s.items.empty()) throw Error(o.source + ": no item listed under '" + root + "'");
  return s;
}

}  // namespace detail

}  // namespace florence::data
