// The corpus sources added for issue 17 (tuxpaint, openmoji, mdi, tabler, fontawesome, flags,
// twemoji) on small real subsets of their packages, a broken file in each kind of input, and
// `data build all` skipping and resuming. Needs what scripts/setup installs: the Debian packages
// tuxpaint-stamps-default, iso-flags-svg, iso-codes, librsvg2-bin and the pinned npm packages.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <set>
#include <sys/file.h>
#include <fcntl.h>
#include <unistd.h>

#include "florence/core/error.h"
#include "florence/data/corpus.h"
#include "florence/data/sample.h"
#include "florence/data/webdataset.h"
#include "support/paths.h"

namespace test_corpus_icons {

namespace fs = std::filesystem;
using namespace florence::data;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::path(FLORENCE_TEST_TMP) / "corpus_icons" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::map<std::string, Sample> read_corpus(const fs::path& out) {
  std::map<std::string, Sample> by_key;
  for (const char* split : {"train", "val", "test"}) {
    if (!fs::is_directory(out / split)) continue;
    for (const auto& p : list_shards((out / split).string())) {
      ShardReader r(p);
      Sample s;
      while (r.next(s)) {
        EXPECT_EQ(s.meta.value("split", ""), split) << s.key;
        by_key[s.key] = s;
      }
    }
  }
  return by_key;
}

CorpusOptions options(const std::string& source, const fs::path& out, int64_t limit = 0) {
  CorpusOptions o;
  o.source = source;
  o.out_dir = out.string();
  o.limit = limit;
  o.threads = 2;
  o.size = 48;
  o.progress = false;
  return o;
}

/// Every sample: a 3-channel size x size PNG that is not blank and a non-empty text.
void check_images(const std::map<std::string, Sample>& corpus, int size) {
  for (const auto& [k, s] : corpus) {
    const cv::Mat m = cv::imdecode(cv::Mat(1, int(s.image.size()), CV_8UC1, const_cast<uint8_t*>(s.image.data())),
                                   cv::IMREAD_UNCHANGED);
    ASSERT_FALSE(m.empty()) << k;
    EXPECT_EQ(m.rows, size) << k;
    EXPECT_EQ(m.cols, size) << k;
    EXPECT_EQ(m.channels(), 3) << k;
    double lo = 0, hi = 0;
    cv::minMaxLoc(m.reshape(1), &lo, &hi);
    EXPECT_LT(lo, 200) << k << ": nothing drawn on the white canvas";
    EXPECT_FALSE(s.text.empty()) << k;
  }
}

const std::string kGarbage = "<svg this is not <<< xml";

}  // namespace

TEST(CorpusSources, TuxPaintStampsWithTheirEnglishCaptions) {
  const std::string root = corpus_source("tuxpaint").default_input;
  ASSERT_TRUE(fs::is_directory(root)) << "run scripts/setup (Debian tuxpaint-stamps-default)";
  // A real subset: the bird stamps (PNG), one SVG stamp, one stamp whose image is missing, one whose
  // .txt has no English first line, and one broken SVG.
  const fs::path src = fresh_dir("tux_src");
  fs::create_directories(src / "animals" / "birds");
  fs::create_directories(src / "food");
  int birds = 0;
  for (const auto& e : fs::directory_iterator(fs::path(root) / "animals" / "birds")) {
    if (e.path().extension() != ".txt" || birds == 4) continue;
    fs::path img = e.path();
    img.replace_extension(".png");
    if (!fs::exists(img)) continue;
    fs::copy_file(e.path(), src / "animals" / "birds" / e.path().filename());
    fs::copy_file(img, src / "animals" / "birds" / img.filename());
    ++birds;
  }
  ASSERT_EQ(birds, 4);
  std::string svg_stamp;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.path().extension() == ".svg" && fs::exists(fs::path(e.path()).replace_extension(".txt"))) {
      svg_stamp = e.path().string();
      break;
    }
  ASSERT_FALSE(svg_stamp.empty());
  fs::copy_file(svg_stamp, src / "food" / "real.svg");
  fs::copy_file(fs::path(svg_stamp).replace_extension(".txt"), src / "food" / "real.txt");
  std::ofstream(src / "food" / "gone.txt") << "A stamp whose picture is missing.\n";
  std::ofstream(src / "food" / "foreign.txt") << "fr.utf8=Une pomme.\n";
  std::ofstream(src / "food" / "broken.txt") << "A broken drawing.\n";
  std::ofstream(src / "food" / "broken.svg") << kGarbage;

  const fs::path out = fresh_dir("tux_out");
  CorpusOptions o = options("tuxpaint", out);
  o.input = src.string();
  const auto summary = build_corpus(o);
  EXPECT_EQ(summary.at("considered"), 8);
  EXPECT_EQ(summary.at("samples"), 5);
  EXPECT_EQ(summary.at("failures").at("missing_image"), 1);
  EXPECT_EQ(summary.at("failures").at("no_text"), 1);
  EXPECT_EQ(summary.at("failures").at("render_failed"), 1);
  EXPECT_EQ(summary.at("categories").at("animals"), 4);
  EXPECT_EQ(summary.at("categories").at("food"), 1);
  EXPECT_EQ(summary.at("license"), "GPL-2 (/usr/share/doc/tuxpaint-stamps-default/copyright)");
  const auto corpus = read_corpus(out);
  ASSERT_EQ(corpus.size(), 5u);
  check_images(corpus, 48);
  for (const auto& [k, s] : corpus) {
    // The caption is the .txt's first line, as Tux Paint shows it.
    fs::path txt = src / (k + ".txt");
    std::ifstream f(txt);
    std::string first;
    std::getline(f, first);
    EXPECT_EQ(s.text, first) << k;
    EXPECT_EQ(s.meta.at("split"), split_of(k)) << k;
  }
  EXPECT_EQ(corpus.at("food/real").meta.at("path"), "food/real.svg");
}

TEST(CorpusSources, OpenMojiTextsGroupsAndSkinTones) {
  const std::string pkg = corpus_source("openmoji").default_input;
  ASSERT_TRUE(fs::exists(pkg + "/data/openmoji.json")) << "run scripts/setup (npm pack openmoji)";
  nlohmann::json all;
  std::ifstream(pkg + "/data/openmoji.json") >> all;
  // Real entries: GRINNING FACE and WAVING HAND with its skin tones; plus a bad entry, one whose SVG
  // is missing and one whose SVG is broken.
  nlohmann::json subset = nlohmann::json::array();
  for (const auto& e : all)
    if (e["hexcode"] == "1F600" || e["hexcode"] == "1F44B" || e.value("skintone_base_hexcode", "") == "1F44B")
      subset.push_back(e);
  ASSERT_EQ(subset.size(), 7u);
  nlohmann::json gone = subset[0], broken = subset[0];
  gone["hexcode"] = "F0001";
  broken["hexcode"] = "F0002";
  subset.push_back(gone);
  subset.push_back(broken);
  subset.push_back(42);
  const fs::path src = fresh_dir("om_src");
  fs::create_directories(src / "data");
  fs::create_directories(src / "color" / "svg");
  std::ofstream(src / "data" / "openmoji.json") << subset.dump();
  for (const auto& e : subset)
    if (e.is_object() && fs::exists(pkg + "/color/svg/" + e["hexcode"].get<std::string>() + ".svg"))
      fs::copy_file(pkg + "/color/svg/" + e["hexcode"].get<std::string>() + ".svg",
                    src / "color" / "svg" / (e["hexcode"].get<std::string>() + ".svg"));
  std::ofstream(src / "color" / "svg" / "F0002.svg") << kGarbage;

  const fs::path out = fresh_dir("om_out");
  CorpusOptions o = options("openmoji", out);
  o.input = src.string();
  const auto summary = build_corpus(o);
  EXPECT_EQ(summary.at("considered"), 10);
  EXPECT_EQ(summary.at("samples"), 7);
  EXPECT_EQ(summary.at("failures").at("missing_image"), 1);
  EXPECT_EQ(summary.at("failures").at("render_failed"), 1);
  EXPECT_EQ(summary.at("failures").at("bad_entry"), 1);
  EXPECT_EQ(summary.at("options").at("fields"), nlohmann::json({"annotation", "tags"}));
  const auto corpus = read_corpus(out);
  ASSERT_EQ(corpus.size(), 7u);
  check_images(corpus, 48);
  const Sample& grin = corpus.at("1f600");
  // annotation, then tags and openmoji_tags without the repeats ("smile" is in both lists).
  EXPECT_EQ(grin.text, "grinning face. cheerful, cheery, face, grin, grinning, happy, laugh, nice, smile, smiling, teeth");
  EXPECT_EQ(grin.meta.at("category"), "smileys-emotion");
  const Sample& wave = corpus.at("1f44b");
  int tones = 0;
  for (const auto& [k, s] : corpus)
    if (k.rfind("1f44b-", 0) == 0) {
      ++tones;
      EXPECT_EQ(s.meta.at("split"), wave.meta.at("split")) << k;  // a variant follows its base
      EXPECT_EQ(s.meta.at("category"), "people-body");
    }
  EXPECT_EQ(tones, 5);
  // annotation only
  const fs::path out2 = fresh_dir("om_out2");
  CorpusOptions o2 = options("openmoji", out2);
  o2.input = src.string();
  o2.fields = {"annotation"};
  build_corpus(o2);
  EXPECT_EQ(read_corpus(out2).at("1f600").text, "grinning face");
}

TEST(CorpusSources, LineArtIconSetsAreBlackOnWhite) {
  // mdi / tabler / fontawesome: the first icons of each real package, drawn black on white.
  for (const std::string source : {"mdi", "tabler", "fontawesome"}) {
    const fs::path out = fresh_dir(source);
    const auto summary = build_corpus(options(source, out, 12));
    EXPECT_EQ(summary.at("considered"), 12) << source;
    EXPECT_EQ(summary.at("samples"), 12) << source;
    const auto corpus = read_corpus(out);
    ASSERT_EQ(corpus.size(), 12u) << source;
    check_images(corpus, 48);
    for (const auto& [k, s] : corpus) {
      const cv::Mat m = cv::imdecode(cv::Mat(1, int(s.image.size()), CV_8UC1, const_cast<uint8_t*>(s.image.data())),
                                     cv::IMREAD_COLOR);
      // Grey only (every pixel's channels equal within antialiasing rounding): no colour in line art.
      std::vector<cv::Mat> ch;
      cv::split(m, ch);
      EXPECT_LE(cv::norm(ch[0], ch[1], cv::NORM_INF), 1.0) << source << " " << k;
      EXPECT_LE(cv::norm(ch[1], ch[2], cv::NORM_INF), 1.0) << source << " " << k;
    }
  }
  // Texts from the packages' own metadata (mdi's first icon is "ab-testing", tagged "Developer / Languages").
  const auto mdi = read_corpus(fs::path(FLORENCE_TEST_TMP) / "corpus_icons" / "mdi");
  EXPECT_EQ(mdi.at("ab-testing").text, "ab testing");
  EXPECT_EQ(mdi.at("ab-testing").meta.at("category"), "Developer / Languages");
}

TEST(CorpusSources, StylesOfOneIconShareItsSplitAndText) {
  // Tabler: outline and filled of one name; Font Awesome: solid and regular of one name.
  const fs::path out = fresh_dir("tabler_styles");
  CorpusOptions o = options("tabler", out);
  const std::string pkg = corpus_source("tabler").default_input;
  nlohmann::json icons;
  std::ifstream(pkg + "/icons.json") >> icons;
  nlohmann::json subset = nlohmann::json::object();
  for (const auto& [name, e] : icons.items())
    if (e["styles"].contains("filled") && subset.size() < 3) subset[name] = e;
  ASSERT_EQ(subset.size(), 3u);
  subset["../escape"] = subset.begin().value();
  const fs::path src = fresh_dir("tabler_src");
  for (const char* style : {"outline", "filled"}) fs::create_directories(src / "icons" / style);
  std::ofstream(src / "icons.json") << subset.dump();
  for (const auto& [name, e] : subset.items())
    for (const char* style : {"outline", "filled"})
      if (fs::exists(pkg + "/icons/" + style + "/" + name + ".svg"))
        fs::copy_file(pkg + "/icons/" + style + "/" + name + ".svg", src / "icons" / style / (name + ".svg"));
  o.input = src.string();
  const auto summary = build_corpus(o);
  EXPECT_EQ(summary.at("samples"), 6);
  EXPECT_EQ(summary.at("failures").at("bad_entry"), 1);
  const auto corpus = read_corpus(out);
  for (const auto& [name, e] : subset.items()) {
    if (name == "../escape") continue;
    const Sample& a = corpus.at("outline/" + name);
    const Sample& b = corpus.at("filled/" + name);
    EXPECT_EQ(a.text, b.text);
    EXPECT_EQ(a.meta.at("split"), b.meta.at("split"));
    EXPECT_EQ(a.meta.at("split"), split_of(name));
    EXPECT_NE(a.image, b.image);
    EXPECT_EQ(a.meta.value("category", ""), e.value("category", ""));  // none when the icon has none
  }
}

TEST(CorpusSources, FlagsNamedByIsoCodes) {
  const fs::path src = fresh_dir("flags_src");
  const std::string root = corpus_source("flags").default_input;
  for (const char* f : {"fr.svg", "jp.svg", "_scotland.svg"}) fs::copy_file(root + "/" + f, src / f);
  std::ofstream(src / "zz.svg") << "<svg xmlns='http://www.w3.org/2000/svg' width='4' height='3'/>";  // no ISO entry
  std::ofstream(src / "de.svg") << kGarbage;
  const fs::path out = fresh_dir("flags_out");
  CorpusOptions o = options("flags", out);
  o.input = src.string();
  const auto summary = build_corpus(o);
  EXPECT_EQ(summary.at("samples"), 3);
  EXPECT_EQ(summary.at("failures").at("no_text"), 1);
  EXPECT_EQ(summary.at("failures").at("render_failed"), 1);
  const auto corpus = read_corpus(out);
  EXPECT_EQ(corpus.at("fr").text, "France");
  EXPECT_EQ(corpus.at("jp").text, "Japan");
  EXPECT_EQ(corpus.at("_scotland").text, "Scotland");
  EXPECT_EQ(corpus.at("fr").meta.at("category"), "country");
  EXPECT_EQ(corpus.at("_scotland").meta.at("category"), "region");
  o.fields = {"name", "official"};
  o.overwrite = true;
  build_corpus(o);
  EXPECT_EQ(read_corpus(out).at("fr").text, "France. French Republic");
  check_images(read_corpus(out), 48);
}

TEST(CorpusSources, TwemojiIsTheSameEmojiListInTwittersArt) {
  const fs::path tw = fresh_dir("twemoji"), go = fresh_dir("google");
  build_corpus(options("twemoji", tw, 30));
  build_corpus(options("emoji", go, 30));
  const auto a = read_corpus(tw), b = read_corpus(go);
  ASSERT_FALSE(a.empty());
  ASSERT_EQ(a.size(), b.size());
  int differ = 0;
  for (const auto& [k, s] : a) {
    ASSERT_TRUE(b.count(k)) << k;
    EXPECT_EQ(s.text, b.at(k).text) << k;
    EXPECT_EQ(s.meta.at("split"), b.at(k).meta.at("split")) << k;  // one emoji's two arts: one split
    EXPECT_EQ(s.meta.at("source"), "twemoji");
    differ += s.image != b.at(k).image;
  }
  EXPECT_EQ(differ, int(a.size()));
}

TEST(CorpusSources, FieldsAreCheckedPerSource) {
  const fs::path out = fresh_dir("fields");
  CorpusOptions o = options("mdi", out, 2);
  o.fields = {"title"};
  EXPECT_THROW(build_corpus(o), florence::Error);
  o.source = "emoji";  // a source without text fields ignores them (the CLI refuses --fields for it)
  o.fields = {"name"};
  EXPECT_EQ(build_corpus(o).at("samples"), 2);
  o.source = "tuxpaint";
  o.out_dir = fresh_dir("fields_tux").string();
  o.fields = {};
  o.input = "/nonexistent/stamps";
  EXPECT_THROW(build_corpus(o), florence::Error);
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "summary.json"));
  EXPECT_THROW(corpus_source("imagenet"), florence::Error);
}

TEST(CorpusSources, BuildAllSkipsWhatIsBuiltAndResumesWhatIsNot) {
  const fs::path out = fresh_dir("all");
  BuildAllOptions a;
  a.out_dir = out.string();
  a.sources = {"mdi", "flags", "fashion-mnist"};
  a.base.limit = 5;
  a.base.size = 32;
  a.base.threads = 2;
  a.base.progress = false;
  auto statuses = [](const nlohmann::json& r) {
    std::map<std::string, std::string> m;
    for (const auto& row : r["sources"]) m[row["name"]] = row["status"];
    return m;
  };
  nlohmann::json r = build_all_corpora(a);
  EXPECT_EQ(r["failed"], 0);
  EXPECT_EQ(statuses(r), (std::map<std::string, std::string>{{"mdi", "built"}, {"flags", "built"}, {"fashion-mnist", "built"}}));
  EXPECT_EQ(r["sources"][0]["summary"]["samples"], 5);
  EXPECT_EQ(r["sources"][2]["summary"]["samples"], 10);  // 5 per original split
  r = build_all_corpora(a);
  EXPECT_EQ(statuses(r), (std::map<std::string, std::string>{{"mdi", "up to date"}, {"flags", "up to date"},
                                                             {"fashion-mnist", "up to date"}}));
  // An interrupted build: shards without summary.json are rebuilt; the others stay.
  fs::remove(out / "flags" / "summary.json");
  r = build_all_corpora(a);
  EXPECT_EQ(statuses(r)["flags"], "built");
  EXPECT_EQ(statuses(r)["mdi"], "up to date");
  // Other options: reported, the corpus kept, the rest still done; --overwrite rebuilds.
  a.base.limit = 6;
  a.sources = {"mdi"};
  r = build_all_corpora(a);
  EXPECT_EQ(statuses(r)["mdi"], "failed");
  EXPECT_NE(r["sources"][0]["error"].get<std::string>().find("--overwrite"), std::string::npos);
  nlohmann::json kept;
  std::ifstream(out / "mdi" / "summary.json") >> kept;
  EXPECT_EQ(kept["samples"], 5);
  a.base.overwrite = true;
  r = build_all_corpora(a);
  EXPECT_EQ(statuses(r)["mdi"], "built");
  EXPECT_EQ(r["sources"][0]["summary"]["samples"], 6);
  EXPECT_NE(format_build_all_summary(r).find("mdi"), std::string::npos);
  // A missing package fails its source only.
  a.sources = {"mdi", "flags"};
  a.base.overwrite = false;
  a.base.limit = 5;
  const char* old = std::getenv("FLORENCE_CACHE");
  const std::string saved = old ? old : "";
  setenv("FLORENCE_CACHE", fresh_dir("empty_cache").c_str(), 1);
  fs::remove_all(out / "mdi");
  r = build_all_corpora(a);
  if (old) setenv("FLORENCE_CACHE", saved.c_str(), 1); else unsetenv("FLORENCE_CACHE");
  EXPECT_EQ(r["failed"], 1);
  EXPECT_EQ(statuses(r)["mdi"], "failed");
  EXPECT_EQ(statuses(r)["flags"], "up to date");
  EXPECT_THROW(build_all_corpora(BuildAllOptions{out.string(), {"imagenet"}, {}, 1}), florence::Error);
}

// Found by a hostile review: entries of the wrong shape, text that is not UTF-8 and metadata paths
// that leave the package are counted skips; the rest of the source is still built.
TEST(CorpusSources, HostileMetadataIsCountedNotFatal) {
  const std::string mdi_pkg = corpus_source("mdi").default_input;
  const fs::path mdi = fresh_dir("hostile_mdi");
  fs::create_directories(mdi / "svg");
  fs::copy_file(mdi_pkg + "/svg/ab-testing.svg", mdi / "svg" / "ab-testing.svg");
  fs::copy_file(mdi_pkg + "/svg/abacus.svg", mdi / "svg" / "abacus.svg");
  std::ofstream(mdi / "meta.json")
      << R"([{"name":"ab-testing","deprecated":"yes","aliases":5,"tags":null},{"name":"abacus","deprecated":null},)"
      << R"({"name":"../svg/abacus"},{"name":7},null])";
  CorpusOptions o = options("mdi", fresh_dir("hostile_mdi_out"));
  o.input = mdi.string();
  auto summary = build_corpus(o);
  EXPECT_EQ(summary.at("samples"), 2);
  EXPECT_EQ(summary.at("failures").at("bad_entry"), 3);

  const std::string fa_pkg = corpus_source("fontawesome").default_input;
  const fs::path fa = fresh_dir("hostile_fa");
  fs::create_directories(fa / "metadata");
  fs::create_directories(fa / "svgs" / "solid");
  fs::copy_file(fa_pkg + "/svgs/solid/0.svg", fa / "svgs" / "solid" / "0.svg");
  fs::copy_file(fa_pkg + "/svgs/solid/1.svg", fa / "svgs" / "solid" / "1.svg");
  const std::string free_solid = R"("familyStylesByLicense":{"free":[{"family":"classic","style":"solid"}]})";
  std::ofstream(fa / "metadata" / "icon-families.json")
      << R"({"0":{"label":"Zero","search":"zero",)" << free_solid << R"(},"1":{"label":"One","search":null,)" << free_solid
      << R"(},"2":{"label":"Two","familyStylesByLicense":"free"},"3":{"label":"x","familyStylesByLicense":{"free":[{"family":"classic","style":"../../tmp"}]}}})";
  o = options("fontawesome", fresh_dir("hostile_fa_out"));
  o.input = fa.string();
  summary = build_corpus(o);
  EXPECT_EQ(summary.at("samples"), 2);
  EXPECT_EQ(summary.at("failures").at("bad_entry"), 2);

  const fs::path tux = fresh_dir("hostile_tux");
  fs::create_directories(tux / "food");
  const std::string png = corpus_source("tuxpaint").default_input + "/food/bread.svg";
  for (const char* n : {"latin1", "long", "fine"}) fs::copy_file(png, tux / "food" / (std::string(n) + ".svg"));
  std::ofstream(tux / "food" / "latin1.txt") << "\xff\xfe caf\xe9 stamp\n";
  std::string long_caption = "a";
  for (int i = 0; i < 3000; ++i) long_caption += "\xc3\xa9";  // 'é' x 3000: cut at 4 KiB between characters
  std::ofstream(tux / "food" / "long.txt") << long_caption;
  std::ofstream(tux / "food" / "fine.txt") << "Bread.\n";
  o = options("tuxpaint", fresh_dir("hostile_tux_out"));
  o.input = tux.string();
  summary = build_corpus(o);
  EXPECT_EQ(summary.at("samples"), 2);
  EXPECT_EQ(summary.at("failures").at("invalid_utf8_text"), 1);
  const auto tux_corpus = read_corpus(o.out_dir);
  EXPECT_LE(tux_corpus.at("food/long").text.size(), 4096u);
  EXPECT_EQ(tux_corpus.at("food/long").text.size() % 2, 1u);  // 'a' + whole 2-byte characters

  // An emoji.json image path outside the package's image folder.
  const fs::path tw = fresh_dir("hostile_tw");
  fs::create_directories(tw / "img" / "twitter" / "64");
  fs::copy_file(corpus_source("twemoji").default_input + "/img/twitter/64/1f600.png", tw / "img" / "twitter" / "64" / "1f600.png");
  std::ofstream(tw / "emoji.json") << R"([{"name":"GRINNING FACE","unified":"1F600","image":"1f600.png"},)"
                                   << R"({"name":"SECRET","unified":"BBBB","image":"../../../../../etc/hostname"},)"
                                   << R"({"name":"ABS","unified":"CCCC","image":"/etc/hostname","skin_variations":"oops"}])";
  o = options("twemoji", fresh_dir("hostile_tw_out"));
  o.input = tw.string();
  summary = build_corpus(o);
  EXPECT_EQ(summary.at("considered"), 3);
  EXPECT_EQ(summary.at("samples"), 1);
  EXPECT_EQ(summary.at("failures").at("bad_entry"), 2);
}

TEST(CorpusSources, OneBuildPerOutputFolder) {
  const fs::path out = fresh_dir("locked");
  const int fd = ::open((out / ".build.lock").c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);  // as another build would hold it
  try {
    build_corpus(options("flags", out, 3));
    ADD_FAILURE() << "built while another build held the folder";
  } catch (const florence::Error& e) {
    EXPECT_NE(std::string(e.what()).find("another build is writing"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(out / "summary.json"));
  ::close(fd);
  EXPECT_EQ(build_corpus(options("flags", out, 3)).at("samples"), 3);
  // build all: a source named twice, one of another source, and missing shards are not "up to date".
  BuildAllOptions a;
  a.out_dir = fresh_dir("all_checks").string();
  a.base = options("flags", out, 3);
  a.sources = {"flags", "flags"};
  EXPECT_THROW(build_all_corpora(a), florence::Error);
  CorpusOptions emoji = options("emoji", fs::path(a.out_dir) / "twemoji", 3);
  emoji.short_names = true;
  build_corpus(emoji);  // Google art where twemoji belongs: same options JSON, another source
  a.sources = {"twemoji"};
  nlohmann::json r = build_all_corpora(a);
  EXPECT_EQ(r["sources"][0]["status"], "failed");
  EXPECT_NE(r["sources"][0]["error"].get<std::string>().find("source 'emoji'"), std::string::npos);
  a.base.overwrite = true;
  EXPECT_EQ(build_all_corpora(a)["sources"][0]["status"], "built");
  a.base.overwrite = false;
  EXPECT_EQ(build_all_corpora(a)["sources"][0]["status"], "up to date");
  for (const auto& e : fs::directory_iterator(fs::path(a.out_dir) / "twemoji" / "train")) fs::remove(e.path());
  EXPECT_EQ(build_all_corpora(a)["sources"][0]["status"], "failed");
}

}  // namespace test_corpus_icons
