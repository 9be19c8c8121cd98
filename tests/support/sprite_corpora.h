#pragma once
// Small REAL corpora for the scene-set tests (sprites, detection, VQA, actions), built once per
// build folder with the product's own builder (data/corpus.h) and reused by every test executable:
//   openclipart: the SVGs of four OpenClipArt folders (animals/birds, animals/bugs, food/fruit,
//                transportation/boating: ~220 files) rendered at 64 px;
//   emoji:       the emoji.json entries of the matching subcategories (animal-bird, animal-bug,
//                food-fruit, transport-water, ~60 entries) with the package's images.
// A subset folder holds symlinks to the real sources (same relative paths, so categories are those
// of the full corpus). Built into a temporary folder and renamed, so concurrent test executables
// never see half a corpus. Needs Debian openclipart-svg + librsvg2-bin and the npm package
// emoji-datasource-google unpacked by scripts/setup; available() says whether they are there.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "florence/data/corpus.h"
#include "florence/data/sprites.h"
#include "support/paths.h"

namespace florence::test {

struct SpriteCorpora {
  std::string openclipart, emoji;  ///< corpus folders (shards)
  std::string emoji_package;       ///< the subset package folder (emoji.json + img -> real images)
};

/// Whether the real sources are installed (tests GTEST_SKIP otherwise, naming them).
inline bool sprite_sources_available() {
  namespace fs = std::filesystem;
  return fs::is_directory(data::default_openclipart_dir()) && fs::exists(data::default_emoji_dir() + "/emoji.json") &&
         fs::exists("/usr/bin/rsvg-convert");
}

inline const SpriteCorpora& sprite_corpora() {
  namespace fs = std::filesystem;
  static const SpriteCorpora c = [] {
    const fs::path root = fs::path(FLORENCE_TEST_TMP) / "sprite_corpora";
    SpriteCorpora out{(root / "openclipart").string(), (root / "emoji").string(), (root / "emoji_pkg").string()};
    if (fs::exists(root / "done")) return out;
    if (fs::exists(root)) fs::remove_all(root);  // an interrupted earlier build
    const fs::path tmp = fs::path(FLORENCE_TEST_TMP) / ("sprite_corpora.tmp." + std::to_string(getpid()));
    fs::remove_all(tmp);
    // OpenClipArt subset: folder symlinks under the same relative paths.
    const fs::path oc_src = tmp / "oc_src";
    for (const char* rel : {"animals/birds", "animals/bugs", "food/fruit", "transportation/boating"}) {
      fs::create_directories((oc_src / rel).parent_path());
      fs::create_directory_symlink(fs::path(data::default_openclipart_dir()) / rel, oc_src / rel);
    }
    // Emoji subset package: emoji.json filtered by subcategory, img -> the real images.
    const fs::path pkg = tmp / "emoji_pkg";
    fs::create_directories(pkg);
    std::ifstream jf(data::default_emoji_dir() + "/emoji.json");
    const nlohmann::json all = nlohmann::json::parse(jf);
    nlohmann::json subset = nlohmann::json::array();
    for (const auto& e : all) {
      const std::string sub = e.value("subcategory", "");
      if (sub == "animal-bird" || sub == "animal-bug" || sub == "food-fruit" || sub == "transport-water") subset.push_back(e);
    }
    std::ofstream(pkg / "emoji.json") << subset.dump();
    fs::create_directory_symlink(fs::path(data::default_emoji_dir()) / "img", pkg / "img");
    data::CorpusOptions o;
    o.source = "openclipart";
    o.out_dir = (tmp / "openclipart").string();
    o.input = oc_src.string();
    o.size = 64;
    o.fields = {"title", "keywords"};
    o.progress = false;
    data::build_corpus(o);
    o.source = "emoji";
    o.out_dir = (tmp / "emoji").string();
    o.input = pkg.string();
    data::build_corpus(o);
    std::ofstream(tmp / "done") << "ok\n";
    std::error_code ec;
    fs::rename(tmp, root, ec);  // another executable may have won the race: use its copy
    if (ec) fs::remove_all(tmp);
    return out;
  }();
  return c;
}

/// Sprite bank options over the test corpora (all four categories present in both sources).
inline data::SpriteBankOptions test_sprite_options() {
  data::SpriteBankOptions o;
  o.corpora = {sprite_corpora().openclipart, sprite_corpora().emoji};
  o.emoji_dir = sprite_corpora().emoji_package;
  o.progress = false;
  return o;
}

}  // namespace florence::test
