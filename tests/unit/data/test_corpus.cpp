// IDX reader, SVG metadata, compositing and the three corpus builders on small real subsets.
// Needs the Debian packages openclipart-svg, librsvg2-bin, dataset-fashion-mnist and the npm
// package emoji-datasource-google unpacked by scripts/setup.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <set>

#include "florence/core/error.h"
#include "florence/data/corpus.h"
#include "florence/data/idx.h"
#include "florence/data/transforms.h"
#include "florence/data/sample.h"
#include "florence/data/webdataset.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_corpus {

namespace fs = std::filesystem;
using namespace florence::data;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::path(FLORENCE_TEST_TMP) / "corpus" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_bytes(const fs::path& p, const std::vector<uint8_t>& b, bool gz) {
  if (gz) {
    gzFile f = gzopen(p.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    gzwrite(f, b.data(), unsigned(b.size()));
    gzclose(f);
  } else {
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  }
}

std::vector<Sample> read_all(const std::string& spec, ShardStats* stats = nullptr) {
  std::vector<Sample> out;
  for (const auto& p : list_shards(spec)) {
    ShardReader r(p);
    Sample s;
    while (r.next(s)) out.push_back(s);
    EXPECT_EQ(r.stats().corrupt, 0);
    if (stats) stats->samples += r.stats().samples;
  }
  return out;
}

cv::Mat decode(const Sample& s) {
  return cv::imdecode(cv::Mat(1, int(s.image.size()), CV_8UC1, const_cast<uint8_t*>(s.image.data())),
                      cv::IMREAD_UNCHANGED);
}

const std::string kOpenClipArt = "/usr/share/openclipart/svg";
const std::string kFrog = kOpenClipArt + "/animals/amphibian/2_dead_frogs_lumen_desig_01.svg";

}  // namespace

// ------------------------------------------------------------------------------------------------
// IDX
// ------------------------------------------------------------------------------------------------

TEST(Idx, HandMadeFile) {
  const fs::path d = fresh_dir("idx");
  // magic 00 00 08 03, dims 2 x 2 x 3 (big-endian), 12 data bytes.
  std::vector<uint8_t> b = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3};
  for (int i = 0; i < 12; ++i) b.push_back(uint8_t(10 * i));
  for (bool gz : {false, true}) {
    const fs::path p = d / (gz ? "a.idx.gz" : "a.idx");
    write_bytes(p, b, gz);
    IdxArray a = read_idx(p.string());
    EXPECT_EQ(a.dims, (std::vector<uint32_t>{2, 2, 3}));
    EXPECT_EQ(a.count(), 2u);
    EXPECT_EQ(a.item_size(), 6u);
    ASSERT_EQ(a.data.size(), 12u);
    EXPECT_EQ(a.data[7], 70);
  }
  // Big-endian dimension > 255: 0x00000101 = 257 labels.
  std::vector<uint8_t> l = {0, 0, 8, 1, 0, 0, 1, 1};
  l.resize(8 + 257, 4);
  EXPECT_EQ(parse_idx(l, "labels").dims, std::vector<uint32_t>{257});
}

TEST(Idx, MalformedFilesThrow) {
  const std::vector<uint8_t> good = {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3};
  EXPECT_NO_THROW(parse_idx(good, "good"));
  auto bad = [&](std::vector<uint8_t> b, const char* what) {
    EXPECT_THROW(parse_idx(b, what), florence::Error) << what;
  };
  auto v = good;
  v[0] = 1;
  bad(v, "magic byte 0");
  v = good;
  v[2] = 0x0d;  // float32 type code
  bad(v, "type");
  v = good;
  v[3] = 0;
  bad(v, "ndim 0");
  v = good;
  v.pop_back();
  bad(v, "truncated data");
  v = good;
  v.push_back(9);
  bad(v, "trailing byte");
  bad({0, 0, 8}, "short header");
  bad({0, 0, 8, 2, 0, 0, 0, 1}, "truncated dims");
  bad({0, 0, 8, 1, 0, 0, 0, 0}, "zero dim");
  // A truncated gzip stream is an error too, not a silently short array.
  const fs::path d = fresh_dir("idx_bad");
  std::vector<uint8_t> big = {0, 0, 8, 1, 0, 0, 0x10, 0};
  for (int i = 0; i < 4096; ++i) big.push_back(uint8_t(i * 7919 % 251));
  write_bytes(d / "x.gz", big, true);
  const auto sz = fs::file_size(d / "x.gz");
  fs::resize_file(d / "x.gz", sz / 2);
  EXPECT_THROW(read_idx((d / "x.gz").string()), florence::Error);
  EXPECT_THROW(read_idx((d / "missing.gz").string()), florence::Error);
}

TEST(Idx, FashionMnistTestSplit) {
  const FashionMnist fm = load_fashion_mnist(kFashionMnistDir, "test");
  ASSERT_EQ(fm.size(), 10000u);
  ASSERT_EQ(fm.images.size(), 10000u * 28 * 28);
  std::vector<int> per_class(10, 0);
  for (auto l : fm.labels) ++per_class[l];
  for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], 1000) << c;  // the test set is balanced
  EXPECT_EQ(fashion_mnist_classes().at(0), "T-shirt/top");
  EXPECT_EQ(fashion_mnist_classes().at(9), "Ankle boot");
  EXPECT_THROW(load_fashion_mnist(kFashionMnistDir, "val"), florence::Error);
}

// ------------------------------------------------------------------------------------------------
// Building blocks
// ------------------------------------------------------------------------------------------------

TEST(Corpus, SvgMetadataOfARealFile) {
  SvgMetadata m;
  std::string err;
  ASSERT_TRUE(read_svg_metadata(kFrog, m, err)) << err;
  EXPECT_EQ(m.title, "2 dead frogs");  // not the creator agent's dc:title "Lumen Design Studio"
  EXPECT_EQ(m.description, "2 dead frogs... nothing more...");
  ASSERT_EQ(m.keywords.size(), 21u);
  EXPECT_EQ(m.keywords.front(), "froggies");
  EXPECT_EQ(m.keywords.back(), "skewl");
  EXPECT_EQ(svg_text(m, {"title"}), "2 dead frogs");
  EXPECT_EQ(svg_text(m, {"title", "description"}), "2 dead frogs. 2 dead frogs... nothing more...");
  EXPECT_EQ(svg_text(m, {"keywords"}).substr(0, 22), "froggies, green, fenla");
  EXPECT_THROW(svg_text(m, {"author"}), florence::Error);

  const fs::path d = fresh_dir("svgmeta");
  std::ofstream(d / "bad.svg") << "<svg><metadata></svg>";
  EXPECT_FALSE(read_svg_metadata((d / "bad.svg").string(), m, err));
  EXPECT_FALSE(err.empty());
  std::ofstream(d / "plain.svg") << "<svg xmlns='http://www.w3.org/2000/svg'><title>x</title></svg>";
  ASSERT_TRUE(read_svg_metadata((d / "plain.svg").string(), m, err));
  EXPECT_EQ(svg_text(m, {"title", "description", "keywords"}), "");

  // "Billion laughs": nested entities in the internal DTD are not expanded into the title (10
  // levels of 10x would be 10^10 bytes); the literal text around them is kept.
  {
    std::ofstream f(d / "laughs.svg");
    f << "<?xml version='1.0'?>\n<!DOCTYPE svg [\n<!ENTITY l0 'ha'>\n";
    for (int i = 1; i <= 10; ++i) {
      f << "<!ENTITY l" << i << " '";
      for (int k = 0; k < 10; ++k) f << "&l" << i - 1 << ";";
      f << "'>\n";
    }
    f << "]>\n<svg xmlns='http://www.w3.org/2000/svg' xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#' "
         "xmlns:dc='http://purl.org/dc/elements/1.1/' xmlns:cc='http://creativecommons.org/ns#'><metadata><rdf:RDF>"
         "<cc:Work><dc:title>big &l10; frog</dc:title></cc:Work></rdf:RDF></metadata></svg>\n";
  }
  ASSERT_TRUE(read_svg_metadata((d / "laughs.svg").string(), m, err)) << err;
  EXPECT_EQ(m.title, "big frog");
}

TEST(Corpus, KeysFromPaths) {
  EXPECT_EQ(key_from_relative_path("computer/icons/flat-theme/action/viewmag+.svg"),
            "computer/icons/flat-theme/action/viewmag_");
  EXPECT_EQ(key_from_relative_path("containers/recycling_box_a.j._ashto_01.svg"), "containers/recycling_box_a_j__ashto_01");
  EXPECT_EQ(key_from_relative_path("a b/c\xc3\xa9.svg"), "a_b/c__");
}

TEST(Corpus, CompositeOnWhite) {
  // 2x1 BGRA: opaque pure red, fully transparent blue; canvas 4x4.
  cv::Mat img(1, 2, CV_8UC4);
  img.at<cv::Vec4b>(0, 0) = {0, 0, 255, 255};
  img.at<cv::Vec4b>(0, 1) = {255, 0, 0, 0};
  std::vector<uint8_t> enc;
  ASSERT_TRUE(cv::imencode(".png", img, enc));
  auto png = composite_on_white_png(enc, 4);
  ASSERT_FALSE(png.empty());
  cv::Mat out = cv::imdecode(png, cv::IMREAD_UNCHANGED);
  ASSERT_EQ(out.type(), CV_8UC3);
  ASSERT_EQ(out.rows, 4);
  ASSERT_EQ(out.cols, 4);
  // Centred at x offset (4-2)/2 = 1, y offset (4-1)/2 = 1.
  EXPECT_EQ(out.at<cv::Vec3b>(1, 1), cv::Vec3b(0, 0, 255));
  EXPECT_EQ(out.at<cv::Vec3b>(1, 2), cv::Vec3b(255, 255, 255));
  EXPECT_EQ(out.at<cv::Vec3b>(0, 0), cv::Vec3b(255, 255, 255));
  // Half alpha (128/255) black over white -> 255 * (1 - 128/255) = 127.
  cv::Mat half(1, 1, CV_8UC4, cv::Scalar(0, 0, 0, 128));
  ASSERT_TRUE(cv::imencode(".png", half, enc));
  out = cv::imdecode(composite_on_white_png(enc, 0), cv::IMREAD_UNCHANGED);
  ASSERT_EQ(out.rows, 1);
  EXPECT_EQ(out.at<cv::Vec3b>(0, 0), cv::Vec3b(127, 127, 127));
  EXPECT_TRUE(composite_on_white_png({1, 2, 3}, 4).empty());
  // A PNG whose header declares 100000 x 100000 pixels is refused before any decoding: take a real
  // PNG and rewrite the IHDR width/height (bytes 16..23; the CRC is not checked by the probe).
  ASSERT_TRUE(cv::imencode(".png", half, enc));
  for (int i : {16, 20}) {
    enc[size_t(i)] = 0x00;
    enc[size_t(i) + 1] = 0x01;
    enc[size_t(i) + 2] = 0x86;
    enc[size_t(i) + 3] = 0xA0;  // 100000
  }
  EXPECT_THROW(composite_on_white_png(enc, 0), ImageTooLarge);
}

// ------------------------------------------------------------------------------------------------
// Builders
// ------------------------------------------------------------------------------------------------

TEST(Corpus, OpenClipArtRealPrefix) {
  const fs::path out = fresh_dir("oca_real");
  CorpusOptions o;
  o.source = "openclipart";
  o.out_dir = out.string();
  o.limit = 8;
  o.size = 48;
  o.threads = 2;
  o.shard_size = 3;
  o.progress = false;
  const auto summary = build_corpus(o);
  EXPECT_EQ(summary.at("considered"), 8);
  EXPECT_EQ(summary.at("samples").get<int64_t>() + summary.at("failed_total").get<int64_t>(), 8);
  EXPECT_GE(summary.at("samples").get<int64_t>(), 7);  // these first files are known to render
  EXPECT_EQ(summary.at("categories").at("animals"), summary.at("samples"));
  ASSERT_TRUE(fs::exists(out / "summary.json"));

  std::vector<Sample> all;
  for (const char* split : {"train", "val", "test"}) {
    if (!fs::is_directory(out / split)) continue;
    for (auto& s : read_all((out / split).string())) {
      EXPECT_EQ(s.meta.at("split"), split);
      EXPECT_EQ(split_of(s.key), split);  // no symlinks among these files
      all.push_back(s);
    }
  }
  ASSERT_EQ(int64_t(all.size()), summary.at("samples").get<int64_t>());
  std::set<std::string> keys;
  for (const auto& s : all) {
    keys.insert(s.key);
    EXPECT_FALSE(s.text.empty()) << s.key;
    EXPECT_EQ(s.meta.at("category"), "animals");
    const cv::Mat m = decode(s);
    EXPECT_EQ(m.rows, 48) << s.key;
    EXPECT_EQ(m.cols, 48) << s.key;
    EXPECT_EQ(m.channels(), 3) << s.key;
  }
  EXPECT_EQ(keys.size(), all.size());
  EXPECT_TRUE(keys.count("animals/amphibian/2_dead_frogs_lumen_desig_01"));
  // Rebuilding into a non-empty dir needs --overwrite.
  EXPECT_THROW(build_corpus(o), florence::Error);
}

TEST(Corpus, OpenClipArtFailuresAndDuplicates) {
  const fs::path src = fresh_dir("oca_src");
  fs::create_directories(src / "animals" / "amphibian");
  fs::create_directories(src / "dup");
  fs::create_directories(src / "broken");
  fs::copy_file(kFrog, src / "animals" / "amphibian" / "frog.svg");
  fs::copy_file(kOpenClipArt + "/animals/bat_orlando_karam_.svg", src / "animals" / "bat.svg");
  fs::create_symlink("../animals/amphibian/frog.svg", src / "dup" / "frog_copy.svg");
  std::ofstream(src / "broken" / "bad.svg") << "<svg><metadata></svg>";
  std::ofstream(src / "broken" / "notitle.svg")
      << "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><rect width='5' height='5'/></svg>";
  std::ofstream(src / "broken" / "zero.svg")
      << "<svg xmlns='http://www.w3.org/2000/svg' width='0' height='0'><metadata><rdf:RDF "
         "xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#' xmlns:dc='http://purl.org/dc/elements/1.1/'>"
         "<rdf:Description><dc:title>zero size</dc:title></rdf:Description></rdf:RDF></metadata></svg>";
  const fs::path out = fresh_dir("oca_out");
  CorpusOptions o;
  o.source = "openclipart";
  o.input = src.string();
  o.out_dir = out.string();
  o.size = 32;
  o.threads = 2;
  o.fields = {"title", "keywords"};
  o.progress = false;
  const auto summary = build_corpus(o);
  EXPECT_EQ(summary.at("considered"), 6);
  EXPECT_EQ(summary.at("samples"), 3);
  EXPECT_EQ(summary.at("failures").at("xml_unreadable"), 1);
  EXPECT_EQ(summary.at("failures").at("no_text"), 1);
  EXPECT_EQ(summary.at("failures").at("render_failed"), 1);
  EXPECT_EQ(summary.at("failed_items").size(), 3u);
  std::map<std::string, Sample> by_key;
  for (const char* split : {"train", "val", "test"})
    if (fs::is_directory(out / split))
      for (auto& s : read_all((out / split).string())) by_key[s.key] = s;
  ASSERT_EQ(by_key.size(), 3u);
  const Sample& frog = by_key.at("animals/amphibian/frog");
  const Sample& copy = by_key.at("dup/frog_copy");
  EXPECT_EQ(frog.text.substr(0, 24), "2 dead frogs. froggies, ");
  EXPECT_EQ(copy.text, frog.text);
  EXPECT_EQ(copy.image, frog.image);  // same file, same rendering
  EXPECT_EQ(copy.meta.at("duplicate_of"), "animals/amphibian/frog");
  EXPECT_EQ(copy.meta.at("split"), frog.meta.at("split"));  // duplicates follow their original
  EXPECT_EQ(copy.meta.at("category"), "dup");
  EXPECT_EQ(frog.meta.at("folder"), "animals/amphibian");
  EXPECT_EQ(by_key.at("animals/bat").text.substr(0, 3), "bat");
}

TEST(Corpus, EmojiSubsetWithSkinTones) {
  const std::string pkg = default_emoji_dir();
  ASSERT_TRUE(fs::exists(pkg + "/emoji.json")) << "run scripts/setup (npm pack emoji-datasource-google)";
  nlohmann::json all;
  std::ifstream(pkg + "/emoji.json") >> all;
  // A real subset: GRINNING FACE, FATHER CHRISTMAS (5 skin tones), plus one entry whose image is
  // missing from the package copy.
  nlohmann::json subset = nlohmann::json::array();
  for (const auto& e : all)
    if (e["unified"] == "1F600" || e["unified"] == "1F385") subset.push_back(e);
  ASSERT_EQ(subset.size(), 2u);
  nlohmann::json missing = subset[0]["unified"] == "1F600" ? subset[0] : subset[1];
  missing["unified"] = "1F601";
  missing["name"] = "BEAMING TEST";
  missing["image"] = "not-there.png";
  subset.push_back(missing);
  const fs::path src = fresh_dir("emoji_src");
  fs::create_directories(src / "img" / "google" / "64");
  std::ofstream(src / "emoji.json") << subset.dump();
  for (const char* f : {"1f600.png", "1f385.png", "1f385-1f3fb.png", "1f385-1f3fc.png", "1f385-1f3fd.png",
                        "1f385-1f3fe.png", "1f385-1f3ff.png"})
    fs::copy_file(pkg + "/img/google/64/" + f, src / "img" / "google" / "64" / f);

  const fs::path out = fresh_dir("emoji_out");
  CorpusOptions o;
  o.source = "emoji";
  o.input = src.string();
  o.out_dir = out.string();
  o.threads = 2;
  o.short_names = true;
  o.progress = false;
  const auto summary = build_corpus(o);
  EXPECT_EQ(summary.at("considered"), 8);
  EXPECT_EQ(summary.at("samples"), 7);
  EXPECT_EQ(summary.at("failures").at("missing_image"), 1);
  EXPECT_EQ(summary.at("categories").at("People & Body"), 6);
  EXPECT_EQ(summary.at("categories").at("Smileys & Emotion"), 1);
  std::map<std::string, Sample> by_key;
  for (const char* split : {"train", "val", "test"})
    if (fs::is_directory(out / split))
      for (auto& s : read_all((out / split).string())) by_key[s.key] = s;
  ASSERT_EQ(by_key.size(), 7u);
  EXPECT_EQ(by_key.at("1f600").text, "grinning face, grinning");
  const Sample& santa = by_key.at("1f385");
  EXPECT_EQ(santa.text, "father christmas, santa");
  EXPECT_EQ(santa.meta.at("subcategory"), "person-fantasy");
  int variants = 0;
  for (const auto& [k, s] : by_key) {
    const cv::Mat m = decode(s);
    EXPECT_EQ(m.rows, 64);
    EXPECT_EQ(m.cols, 64);
    EXPECT_EQ(m.channels(), 3);
    if (k.rfind("1f385-", 0) == 0) {
      ++variants;
      EXPECT_EQ(s.text, santa.text);  // skin-tone variants share their base's text
      EXPECT_EQ(s.meta.at("base"), "1F385");
      EXPECT_EQ(s.meta.at("split"), santa.meta.at("split"));
      EXPECT_NE(s.image, santa.image);
    }
  }
  EXPECT_EQ(variants, 5);
  EXPECT_EQ(by_key.at("1f385-1f3fb").meta.at("skin_tone"), "1F3FB");
}

TEST(Corpus, FashionMnistLabelsMatchIdx) {
  const fs::path out = fresh_dir("fmnist");
  CorpusOptions o;
  o.source = "fashion-mnist";
  o.out_dir = out.string();
  o.limit = 20;
  o.threads = 2;
  o.progress = false;
  const auto summary = build_corpus(o);
  EXPECT_EQ(summary.at("considered"), 40);
  EXPECT_EQ(summary.at("samples"), 40);
  EXPECT_EQ(summary.at("splits").at("test"), 20);
  EXPECT_EQ(summary.at("splits").at("train").get<int>() + summary.at("splits").at("val").get<int>(), 20);
  const FashionMnist train = load_fashion_mnist(kFashionMnistDir, "train");
  const FashionMnist test = load_fashion_mnist(kFashionMnistDir, "test");
  int n = 0;
  for (const char* split : {"train", "val", "test"}) {
    if (!fs::is_directory(out / split)) continue;
    for (auto& s : read_all((out / split).string())) {
      ++n;
      const bool is_test = s.meta.at("original_split") == "test";
      EXPECT_EQ(is_test, std::string(split) == "test");
      const FashionMnist& ref = is_test ? test : train;
      const size_t i = s.meta.at("index").get<size_t>();
      ASSERT_LT(i, 20u);
      EXPECT_EQ(s.label, ref.labels[i]) << s.key;
      EXPECT_EQ(s.text, fashion_mnist_classes()[ref.labels[i]]);
      const cv::Mat m = decode(s);
      ASSERT_EQ(m.type(), CV_8UC1);
      ASSERT_EQ(m.rows, 28);
      ASSERT_EQ(m.cols, 28);
      EXPECT_TRUE(std::equal(m.data, m.data + 784, ref.images.begin() + long(i) * 784)) << s.key;
    }
  }
  EXPECT_EQ(n, 40);
  // The first training label of Fashion-MNIST is 9 (Ankle boot), the first test label 9 too.
  EXPECT_EQ(train.labels[0], 9);
  EXPECT_EQ(test.labels[0], 9);
}

TEST(Corpus, BadOptionsThrow) {
  CorpusOptions o;
  o.source = "imagenet";
  o.out_dir = fresh_dir("bad").string();
  EXPECT_THROW(build_corpus(o), florence::Error);
  o.source = "emoji";
  o.input = "/nonexistent/emoji";
  EXPECT_THROW(build_corpus(o), florence::Error);
}

// --overwrite replaces a corpus only once the new source's input is known to be there: a missing
// package is an error that leaves the existing corpus's files in place.
TEST(Corpus, MissingInputKeepsTheOldCorpus) {
  const fs::path out = fresh_dir("keep_old");
  fs::create_directories(out / "train");
  std::ofstream(out / "summary.json") << "{}";
  std::ofstream(out / "train" / "000000.tar") << "old shard";
  for (const std::string src : {"emoji", "openclipart", "fashion-mnist"}) {
    CorpusOptions o;
    o.source = src;
    o.out_dir = out.string();
    o.input = "/nonexistent/" + src;
    o.overwrite = true;
    EXPECT_THROW(build_corpus(o), florence::Error) << src;
    EXPECT_TRUE(fs::exists(out / "summary.json")) << src;
    EXPECT_TRUE(fs::exists(out / "train" / "000000.tar")) << src;
  }
  // Inputs that exist but fail while building (not JSON; an emoji list that yields no image; an
  // empty SVG folder): the error leaves the old corpus exactly as it was, with nothing set aside.
  const fs::path bad = fresh_dir("keep_old_inputs");
  fs::create_directories(bad / "garbage");
  std::ofstream(bad / "garbage" / "emoji.json") << "garbage";
  fs::create_directories(bad / "empty_list");
  std::ofstream(bad / "empty_list" / "emoji.json") << "[]";
  fs::create_directories(bad / "no_svg");
  for (const auto& [src, input] : std::vector<std::pair<std::string, fs::path>>{
           {"emoji", bad / "garbage"}, {"emoji", bad / "empty_list"}, {"openclipart", bad / "no_svg"}}) {
    CorpusOptions o;
    o.source = src;
    o.out_dir = out.string();
    o.input = input.string();
    o.overwrite = true;
    EXPECT_THROW(build_corpus(o), florence::Error) << input;
    std::ifstream shard(out / "train" / "000000.tar");
    std::string content((std::istreambuf_iterator<char>(shard)), std::istreambuf_iterator<char>());
    EXPECT_EQ(content, "old shard") << input;
    EXPECT_TRUE(fs::exists(out / "summary.json")) << input;
    EXPECT_FALSE(fs::exists(out / ".previous-corpus")) << input;
  }
}

}  // namespace test_corpus
