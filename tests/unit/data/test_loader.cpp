// Loader determinism, rank splits, skip accounting, and the manifest / ImageFolder readers.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include "florence/data/loader.h"
#include "florence/data/readers.h"
#include "florence/data/transforms.h"
#include "florence/data/webdataset.h"
#include "florence/text/tokenizer.h"
#include "support/paths.h"
#include "support/vocab.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_loader {

namespace fs = std::filesystem;
using namespace florence::data;

namespace {

constexpr int kN = 40;  // samples in the synthetic corpus
// Bad samples planted in the corpus (by index).
constexpr int kCorruptImage = 5, kEmptyText = 17, kBadUtf8 = 29;

std::string tmp_dir(const std::string& name) {
  const fs::path p = fs::path(FLORENCE_TEST_TMP) / ("loader_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

std::vector<uint8_t> png_for(int i, int w = 10, int h = 8) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      m.at<cv::Vec3b>(y, x) = cv::Vec3b(uint8_t(i * 13 + x * 9), uint8_t(i * 7 + y * 17), uint8_t(i * 31));
  std::vector<uint8_t> buf;
  cv::imencode(".png", m, buf);
  return buf;
}

std::string key_of(int i) {
  char b[16];
  std::snprintf(b, sizeof b, "s%03d", i);
  return b;
}

std::vector<Sample> corpus() {
  std::vector<Sample> out;
  for (int i = 0; i < kN; ++i) {
    Sample s;
    s.key = key_of(i);
    s.image = png_for(i);
    s.image_ext = "png";
    s.text = "a photo of thing number " + std::to_string(i);
    s.label = i % 5;
    if (i == kCorruptImage) s.image = {'n', 'o', 't', ' ', 'p', 'n', 'g'};
    if (i == kEmptyText) s.text = "   ";
    if (i == kBadUtf8) s.text = std::string("bad \xff\xfe text");
    out.push_back(s);
  }
  return out;
}

std::set<std::string> good_keys() {
  std::set<std::string> k;
  for (int i = 0; i < kN; ++i)
    if (i != kCorruptImage && i != kEmptyText && i != kBadUtf8) k.insert(key_of(i));
  return k;
}

// 40 samples in shards of 7 (6 shards), written once per test binary run.
std::shared_ptr<ShardSource> shard_source() {
  static std::shared_ptr<ShardSource> src = [] {
    const std::string dir = tmp_dir("shards");
    ShardWriterOptions o;
    o.max_samples_per_shard = 7;
    ShardWriter w(dir, o);
    for (const auto& s : corpus()) w.write(s);
    w.close();
    return std::make_shared<ShardSource>(w.shards());
  }();
  return src;
}

std::shared_ptr<const florence::text::Tokenizer> tokenizer() {
  static auto tok = std::make_shared<const florence::text::Tokenizer>(
      florence::text::Tokenizer::from_file(::test::clip_vocab()));
  return tok;
}

struct EpochData {
  std::vector<std::string> keys;
  std::vector<int64_t> batch_sizes;
  torch::Tensor images, ids, labels;
  EpochStats stats;
};

EpochData run_epoch(std::shared_ptr<const SampleSource> src, LoaderOptions o, int64_t epoch = 0,
                    bool with_tokenizer = true) {
  Loader loader(std::move(src), o, with_tokenizer ? tokenizer() : nullptr);
  loader.start_epoch(epoch);
  EpochData d;
  std::vector<torch::Tensor> im, ids, lab;
  Batch b;
  while (loader.next(b)) {
    d.batch_sizes.push_back(b.size());
    EXPECT_EQ(b.images.size(0), b.size());
    EXPECT_EQ(b.labels.size(0), b.size());
    d.keys.insert(d.keys.end(), b.keys.begin(), b.keys.end());
    im.push_back(b.images);
    lab.push_back(b.labels);
    if (b.ids.defined()) ids.push_back(b.ids);
  }
  d.stats = loader.stats();
  if (!im.empty()) {
    d.images = torch::cat(im);
    d.labels = torch::cat(lab);
    if (!ids.empty()) d.ids = torch::cat(ids);
  }
  return d;
}

LoaderOptions small_options() {
  LoaderOptions o;
  o.batch_size = 4;
  o.image_size = 8;
  o.train = true;
  o.seed = 1234;
  o.num_workers = 1;
  o.prefetch = 2;
  o.shuffle_buffer = 8;
  return o;
}

}  // namespace

TEST(Loader, SameSeedGivesSameOrderAndTensorsForAnyWorkerCount) {
  LoaderOptions o = small_options();
  o.num_workers = 1;
  EpochData one = run_epoch(shard_source(), o);
  o.num_workers = 3;
  EpochData three = run_epoch(shard_source(), o);
  ASSERT_EQ(one.keys.size(), good_keys().size());
  EXPECT_EQ(one.keys, three.keys);
  EXPECT_TRUE(torch::equal(one.images, three.images));
  EXPECT_TRUE(torch::equal(one.ids, three.ids));
  EXPECT_TRUE(torch::equal(one.labels, three.labels));
  EXPECT_EQ(one.images.sizes(), (std::vector<int64_t>{37, 3, 8, 8}));
  EXPECT_EQ(one.ids.sizes(), (std::vector<int64_t>{37, 77}));
  // Shuffled: not the corpus order.
  const std::set<std::string> good = good_keys();
  const std::vector<std::string> sorted(good.begin(), good.end());
  EXPECT_NE(one.keys, sorted);
  // Same with the per-sample source (part permutation instead of a shuffle buffer).
  auto vec = std::make_shared<VectorSource>(corpus());
  o.num_workers = 1;
  EpochData v1 = run_epoch(vec, o);
  o.num_workers = 3;
  EpochData v3 = run_epoch(vec, o);
  EXPECT_EQ(v1.keys, v3.keys);
  EXPECT_TRUE(torch::equal(v1.images, v3.images));
}

TEST(Loader, DifferentSeedOrEpochGivesDifferentOrder) {
  LoaderOptions o = small_options();
  EpochData a = run_epoch(shard_source(), o, 0);
  EpochData e1 = run_epoch(shard_source(), o, 1);
  o.seed = 99;
  EpochData b = run_epoch(shard_source(), o, 0);
  EXPECT_NE(a.keys, b.keys);
  EXPECT_NE(a.keys, e1.keys);
  EXPECT_EQ(std::set<std::string>(a.keys.begin(), a.keys.end()),
            std::set<std::string>(b.keys.begin(), b.keys.end()));
}

TEST(Loader, BadSamplesAreSkippedAndCounted) {
  // Vector source: the loader itself sees all three bad samples.
  EpochData v = run_epoch(std::make_shared<VectorSource>(corpus()), small_options());
  EXPECT_EQ(v.stats.read, kN);
  EXPECT_EQ(v.stats.samples, kN - 3);
  EXPECT_EQ(v.stats.skipped.at("bad_image"), 1);
  EXPECT_EQ(v.stats.skipped.at("empty_text"), 1);
  EXPECT_EQ(v.stats.skipped.at("invalid_utf8_text"), 1);
  EXPECT_EQ(v.stats.skipped_total(), 3);
  EXPECT_TRUE(v.stats.finished);
  EXPECT_EQ(std::set<std::string>(v.keys.begin(), v.keys.end()), good_keys());
  // Batches are still filled: 37 good samples -> 9 full batches of 4 and one of 1.
  EXPECT_EQ(v.batch_sizes, (std::vector<int64_t>{4, 4, 4, 4, 4, 4, 4, 4, 4, 1}));
  // Shards: the reader drops the non-UTF-8 text itself (counted as shard_bad_text).
  EpochData s = run_epoch(shard_source(), small_options());
  EXPECT_EQ(s.stats.read, kN - 1);
  EXPECT_EQ(s.stats.skipped.at("bad_image"), 1);
  EXPECT_EQ(s.stats.skipped.at("empty_text"), 1);
  EXPECT_EQ(s.stats.skipped.at("shard_bad_text"), 1);
  EXPECT_EQ(std::set<std::string>(s.keys.begin(), s.keys.end()), good_keys());
  int64_t bytes = 0;
  for (const auto& smp : corpus())
    if (smp.key != key_of(kBadUtf8)) bytes += int64_t(smp.image.size());
  EXPECT_EQ(s.stats.bytes, bytes);
}

TEST(Loader, DropLast) {
  LoaderOptions o = small_options();
  o.drop_last = true;
  EpochData d = run_epoch(std::make_shared<VectorSource>(corpus()), o);
  EXPECT_EQ(d.batch_sizes.size(), 9u);
  EXPECT_EQ(d.stats.samples, 36);
  EXPECT_EQ(d.stats.dropped_last, 1);
}

TEST(Loader, RanksAreDisjointAndCoverEverything) {
  for (bool shards : {true, false}) {
    std::shared_ptr<const SampleSource> src =
        shards ? std::shared_ptr<const SampleSource>(shard_source())
               : std::make_shared<VectorSource>(corpus());
    for (int world : {2, 3}) {
      std::set<std::string> all;
      size_t total = 0;
      for (int rank = 0; rank < world; ++rank) {
        LoaderOptions o = small_options();
        o.world_size = world;
        o.rank = rank;
        o.num_workers = 2;
        EpochData d = run_epoch(src, o, 3);
        EXPECT_FALSE(d.keys.empty()) << "rank " << rank << " of " << world;
        total += d.keys.size();
        all.insert(d.keys.begin(), d.keys.end());
      }
      EXPECT_EQ(total, all.size()) << "overlap, world " << world << " shards " << shards;
      EXPECT_EQ(all, good_keys()) << "world " << world << " shards " << shards;
    }
  }
  // Part lists themselves: disjoint and complete.
  LoaderOptions o = small_options();
  o.world_size = 3;
  std::multiset<size_t> parts;
  for (int r = 0; r < 3; ++r) {
    o.rank = r;
    Loader l(shard_source(), o);
    for (size_t p : l.parts_for_epoch(7)) parts.insert(p);
  }
  EXPECT_EQ(parts, (std::multiset<size_t>{0, 1, 2, 3, 4, 5}));
}

TEST(Loader, BatchContentsMatchTheSamples) {
  LoaderOptions o = small_options();
  o.train = false;  // deterministic pipeline: compare with the transform applied directly
  o.crop_pct = 1.0;
  o.num_workers = 2;
  auto data = corpus();
  Loader loader(std::make_shared<VectorSource>(data), o, tokenizer());
  loader.start_epoch(0);
  ImageTransform tf(o.transform_options());
  Batch b;
  int seen = 0;
  while (loader.next(b)) {
    for (int64_t i = 0; i < b.size(); ++i) {
      const int idx = std::stoi(b.keys[size_t(i)].substr(1));
      const Sample& s = data[size_t(idx)];
      EXPECT_EQ(b.texts[size_t(i)], s.text);
      EXPECT_EQ(b.labels[i].item<int64_t>(), idx % 5);
      std::mt19937_64 rng(0);
      EXPECT_TRUE(torch::equal(b.images[i], tf(s.image, rng))) << s.key;
      const auto ids = tokenizer()->encode_with_specials(s.text, 77);
      EXPECT_TRUE(torch::equal(b.ids[i], torch::tensor(ids, torch::kInt64))) << s.key;
      ++seen;
    }
  }
  EXPECT_EQ(seen, kN - 3);
  EXPECT_FALSE(loader.next(b));  // stays exhausted
}

TEST(Loader, WithoutTokenizerIdsAreUndefinedAndLabelOnlyDataWorks) {
  auto data = corpus();
  for (auto& s : data) s.text.clear();
  LoaderOptions o = small_options();
  o.require_text = false;
  EpochData d = run_epoch(std::make_shared<VectorSource>(data), o, 0, /*with_tokenizer=*/false);
  EXPECT_FALSE(d.ids.defined());
  EXPECT_EQ(d.stats.samples, kN - 1);  // only the corrupt image is skipped
  EXPECT_EQ(d.stats.skipped.at("bad_image"), 1);
}

TEST(Loader, StopsCleanlyMidEpochAndRestarts) {
  std::vector<Sample> many;
  for (int i = 0; i < 300; ++i) {
    Sample s;
    s.key = key_of(i);
    s.image = png_for(i, 64, 48);
    s.image_ext = "png";
    s.text = "x";
    many.push_back(s);
  }
  auto src = std::make_shared<VectorSource>(many);
  LoaderOptions o = small_options();
  o.batch_size = 2;
  o.prefetch = 1;
  o.image_size = 32;
  o.num_workers = 3;
  {
    Loader loader(src, o, tokenizer());
    loader.start_epoch(0);
    Batch b;
    ASSERT_TRUE(loader.next(b));
    EXPECT_EQ(b.size(), 2);
    loader.start_epoch(1);  // abandons epoch 0 mid-way
    ASSERT_TRUE(loader.next(b));
    EXPECT_FALSE(loader.stats().finished);
  }  // destructor joins the threads of epoch 1
  Loader never_started(src, o);
  Batch b;
  EXPECT_THROW(never_started.next(b), florence::Error);
}

TEST(Loader, RejectsBadOptions) {
  LoaderOptions o = small_options();
  o.rank = 2;
  o.world_size = 2;
  EXPECT_THROW(Loader(shard_source(), o), florence::Error);
  o = small_options();
  o.batch_size = 0;
  EXPECT_THROW(Loader(shard_source(), o), florence::Error);
  EXPECT_THROW(Loader(nullptr, small_options()), florence::Error);
}

// --------------------------------------------------------------------------------------------
// Readers
// --------------------------------------------------------------------------------------------

namespace {
void write_file(const fs::path& p, const std::string& content) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
}
void write_png(const fs::path& p, int i) {
  fs::create_directories(p.parent_path());
  const auto bytes = png_for(i);
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                           std::streamsize(bytes.size()));
}
std::vector<Sample> read_all(const SampleSource& src, SkipCounts& skips) {
  std::vector<Sample> out;
  for (size_t p = 0; p < src.num_parts(); ++p) {
    src.read_part(p, [&](Sample& s) { out.push_back(s); return true; }, skips);
  }
  return out;
}
}  // namespace

TEST(ManifestSource, JsonlResolvesRelativePathsAndCountsBadLines) {
  const fs::path dir = tmp_dir("jsonl");
  write_png(dir / "sub/img/a.png", 1);
  write_png(dir / "b.png", 2);
  write_file(dir / "sub/m.jsonl",
             "{\"image\": \"img/a.png\", \"text\": \"a red cat\", \"label\": 3, \"source\": \"x\"}\n"
             "\n"
             "{\"image\": \"" + (dir / "b.png").string() + "\", \"text\": \"b\", \"key\": \"kb\"}\n"
             "not json\n"
             "{\"text\": \"no image\"}\n"
             "{\"image\": \"img/a.png\", \"text\": 5}\n"
             "[1, 2]\n"
             "{\"image\": \"img/missing.png\", \"text\": \"gone\"}\n");
  ManifestSource src((dir / "sub/m.jsonl").string());
  EXPECT_EQ(src.num_parts(), 3u);
  EXPECT_EQ(src.load_skips().at("bad_manifest_line"), 4);
  SkipCounts skips;
  auto got = read_all(src, skips);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(skips.at("missing_file"), 1);
  EXPECT_EQ(got[0].key, "img/a.png");
  EXPECT_EQ(got[0].text, "a red cat");
  EXPECT_EQ(got[0].label, 3);
  EXPECT_EQ(got[0].image, png_for(1));
  EXPECT_EQ(got[0].image_ext, "png");
  EXPECT_EQ(got[0].meta.value("source", ""), "x");
  EXPECT_EQ(got[1].key, "kb");
  EXPECT_EQ(got[1].label, -1);
  EXPECT_EQ(got[1].image, png_for(2));
}

TEST(ManifestSource, TsvWithClassNameLabels) {
  const fs::path dir = tmp_dir("tsv");
  write_png(dir / "i/1.png", 1);
  write_png(dir / "i/2.png", 2);
  write_png(dir / "i/3.png", 3);
  write_file(dir / "m.tsv",
             "text\timage\tlabel\n"
             "a dog\ti/1.png\tdog\n"
             "a cat\ti/2.png\tcat\n"
             "too\tmany\tfields\there\n"
             "an ant\ti/3.png\tant\n");
  ManifestSource src((dir / "m.tsv").string());
  EXPECT_EQ(src.classes(), (std::vector<std::string>{"ant", "cat", "dog"}));
  EXPECT_EQ(src.load_skips().at("bad_manifest_line"), 1);
  SkipCounts skips;
  auto got = read_all(src, skips);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_TRUE(skips.empty());
  EXPECT_EQ(got[0].text, "a dog");
  EXPECT_EQ(got[0].label, 2);
  EXPECT_EQ(got[1].label, 1);
  EXPECT_EQ(got[2].label, 0);
  EXPECT_EQ(got[2].image, png_for(3));
  // Missing "image" column and unknown extension are errors.
  write_file(dir / "bad.tsv", "text\tlabel\nx\t1\n");
  EXPECT_THROW(ManifestSource((dir / "bad.tsv").string()), florence::Error);
  write_file(dir / "m.csv", "image,text\n");
  EXPECT_THROW(ManifestSource((dir / "m.csv").string()), florence::Error);
  EXPECT_THROW(ManifestSource((dir / "nope.jsonl").string()), florence::Error);
}

TEST(ImageFolderSource, LabelsBySortedClassNames) {
  const fs::path root = tmp_dir("folder");
  write_png(root / "zebra/1.png", 1);
  write_png(root / "ant/x/2.png", 2);
  write_png(root / "ant/1.png", 3);
  write_png(root / "bee_hive/3.PNG", 4);
  write_file(root / "bee_hive/readme.txt", "not an image");
  ImageFolderSource src(root.string());
  EXPECT_EQ(src.classes(), (std::vector<std::string>{"ant", "bee_hive", "zebra"}));
  EXPECT_EQ(src.load_skips().at("not_an_image"), 1);
  SkipCounts skips;
  auto got = read_all(src, skips);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].key, "ant/1");
  EXPECT_EQ(got[0].label, 0);
  EXPECT_EQ(got[0].image, png_for(3));
  EXPECT_EQ(got[1].key, "ant/x/2");
  EXPECT_EQ(got[1].label, 0);
  EXPECT_EQ(got[2].key, "bee_hive/3");
  EXPECT_EQ(got[2].label, 1);
  EXPECT_EQ(got[2].text, "bee hive");
  EXPECT_EQ(got[2].meta.value("class", ""), "bee_hive");
  EXPECT_EQ(got[3].key, "zebra/1");
  EXPECT_EQ(got[3].label, 2);
  EXPECT_THROW(ImageFolderSource((root / "nothing").string()), florence::Error);
  // Loader over the folder: all four images, labels from the class order.
  LoaderOptions o = small_options();
  EpochData d = run_epoch(std::make_shared<ImageFolderSource>(root.string()), o);
  EXPECT_EQ(d.stats.samples, 4);
  EXPECT_EQ(d.labels.sum().item<int64_t>(), 0 + 0 + 1 + 2);
}

}  // namespace test_loader
