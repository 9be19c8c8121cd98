// WebDataset shards: writer -> reader round trip, truncation, groups without image, shard lists,
// and the stable split function.
#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "florence/core/error.h"
#include "florence/data/sample.h"
#include "florence/data/webdataset.h"
#include "support/paths.h"
#include "support/tar.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_webdataset {

namespace fs = std::filesystem;
using namespace florence::data;
using florence::test::write_tar;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::path(FLORENCE_TEST_TMP) / "webdataset" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

Sample make_sample(int i) {
  Sample s;
  s.key = "s" + std::to_string(1000 + i);
  // Arbitrary bytes (not a real PNG: the reader does not decode), varying length, with zeros.
  for (int k = 0; k < 100 + 37 * i; ++k) s.image.push_back(uint8_t((k * 31 + i) & 0xff));
  s.image_ext = i % 3 == 0 ? "jpg" : "png";
  s.text = i == 4 ? "" : "caption number " + std::to_string(i) + " \xc3\xa9";  // UTF-8 e-acute
  s.label = i % 2 ? i : -1;
  s.meta = {{"category", "cat" + std::to_string(i % 3)}, {"split", "train"}, {"n", i}};
  return s;
}

// Writes a tar by hand with the given (name, content) members.
}  // namespace

TEST(SplitOf, MatchesIndependentFnv1a) {
  // Expected buckets from a separate Python FNV-1a 64 implementation (hash % 100):
  // "" -> 37, "a" -> 96 (hash 0xaf63dc4c8601ec8c, the published FNV-1a test vector),
  // "foobar" -> 68, "key00036" -> 93, "key00002" -> 98, "1f385-1f3fb" -> 77.
  EXPECT_EQ(split_of(""), "train");
  EXPECT_EQ(split_of("a"), "test");
  EXPECT_EQ(split_of("foobar"), "train");
  EXPECT_EQ(split_of("key00036"), "val");
  EXPECT_EQ(split_of("key00002"), "test");
  EXPECT_EQ(split_of("1f385-1f3fb"), "train");
  EXPECT_EQ(split_of("animals/amphibian/2_dead_frogs_lumen_desig_01"), "train");  // bucket 19
  // Other percentages move the boundaries: bucket 68 ("foobar") is val at 60/10, test at 50/10.
  EXPECT_EQ(split_of("foobar", 60, 10), "val");
  EXPECT_EQ(split_of("foobar", 50, 10), "test");
  EXPECT_THROW(split_of("x", 95, 10), florence::Error);
}

TEST(SplitOf, RoughlyNinetyFiveFive) {
  std::map<std::string, int> c;
  char buf[16];
  for (int i = 0; i < 10000; ++i) {
    std::snprintf(buf, sizeof(buf), "key%05d", i);
    ++c[split_of(buf)];
  }
  // Python reference over the same keys: train 8996, val 504, test 500.
  EXPECT_EQ(c["train"], 8996);
  EXPECT_EQ(c["val"], 504);
  EXPECT_EQ(c["test"], 500);
}

TEST(WebDataset, SplitMemberName) {
  EXPECT_EQ(split_member_name("a/b/name.seg.png"), std::make_pair(std::string("a/b/name"), std::string("seg.png")));
  EXPECT_EQ(split_member_name("./x.txt"), std::make_pair(std::string("x"), std::string("txt")));
  EXPECT_EQ(split_member_name("d.ir/x"), std::make_pair(std::string("d.ir/x"), std::string("")));
}

TEST(WebDataset, RoundTripAcrossShards) {
  const fs::path dir = fresh_dir("roundtrip");
  std::vector<Sample> in;
  for (int i = 0; i < 7; ++i) in.push_back(make_sample(i));
  {
    ShardWriterOptions o;
    o.max_samples_per_shard = 3;
    ShardWriter w(dir.string(), o);
    for (auto& s : in) w.write(s);
    w.close();
    ASSERT_EQ(w.shards().size(), 3u);  // 3 + 3 + 1
    EXPECT_EQ(fs::path(w.shards()[0]).filename(), "000000.tar");
    EXPECT_EQ(fs::path(w.shards()[2]).filename(), "000002.tar");
  }
  // No temporary files left behind.
  for (auto& e : fs::directory_iterator(dir)) EXPECT_EQ(e.path().extension(), ".tar") << e.path();

  const auto shards = list_shards(dir.string());
  ASSERT_EQ(shards.size(), 3u);
  std::vector<Sample> out;
  ShardStats total;
  for (const auto& p : shards) {
    ShardReader r(p, 4096);
    Sample s;
    while (r.next(s)) out.push_back(s);
    total.samples += r.stats().samples;
    total.corrupt += r.stats().corrupt;
    total.skipped_members += r.stats().skipped_members;
    total.members += r.stats().members;
  }
  EXPECT_EQ(total.samples, 7);
  EXPECT_EQ(total.members, 21);
  EXPECT_EQ(total.corrupt, 0);
  EXPECT_EQ(total.skipped_members, 0);
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i].key, in[i].key);
    EXPECT_EQ(out[i].image, in[i].image) << i;
    EXPECT_EQ(out[i].image_ext, in[i].image_ext);
    EXPECT_EQ(out[i].text, in[i].text);
    EXPECT_EQ(out[i].label, in[i].label);
    nlohmann::json expected = in[i].meta;
    if (in[i].label >= 0) expected["label"] = in[i].label;
    EXPECT_EQ(out[i].meta, expected);
  }
}

TEST(WebDataset, WriterAddsSplitAndRejectsBadKeys) {
  const fs::path dir = fresh_dir("writer");
  ShardWriter w(dir.string());
  Sample s = make_sample(1);
  s.meta = nlohmann::json::object();
  s.key = "key00036";  // split_of -> val
  w.write(s);
  Sample bad = make_sample(2);
  bad.key = "has.dot";
  EXPECT_THROW(w.write(bad), florence::Error);
  bad.key = "";
  EXPECT_THROW(w.write(bad), florence::Error);
  bad.key = "ok";
  bad.image.clear();
  EXPECT_THROW(w.write(bad), florence::Error);
  w.close();
  EXPECT_THROW(w.write(s), florence::Error);
  ShardReader r(w.shards().at(0));
  Sample o;
  ASSERT_TRUE(r.next(o));
  EXPECT_EQ(o.meta.at("split"), "val");
  EXPECT_EQ(o.meta.at("label"), 1);
  EXPECT_FALSE(r.next(o));
  EXPECT_THROW(ShardWriter(dir.string(), ShardWriterOptions{10, 1 << 20, "shard.tar"}), florence::Error);
}

TEST(WebDataset, MaxBytesStartsNewShard) {
  const fs::path dir = fresh_dir("maxbytes");
  ShardWriterOptions o;
  o.max_bytes = 600;  // each sample below carries > 300 payload bytes
  ShardWriter w(dir.string(), o);
  for (int i = 5; i < 9; ++i) w.write(make_sample(i));  // images of 285..396 bytes
  w.close();
  EXPECT_EQ(w.shards().size(), 4u);
}

TEST(WebDataset, TruncatedShardKeepsCompleteSamples) {
  const fs::path dir = fresh_dir("truncated");
  std::vector<Sample> in;
  for (int i = 0; i < 5; ++i) in.push_back(make_sample(i));
  std::string path;
  {
    ShardWriter w(dir.string());
    for (auto& s : in) w.write(s);
    w.close();
    path = w.shards().at(0);
  }
  // Find where sample 3's image member data starts: header offsets are multiples of 512; cut in
  // the middle of that member's data so samples 0..2 are complete and sample 3 is not.
  std::ifstream f(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const std::string name3 = in[3].key + "." + in[3].image_ext;
  const size_t hdr = bytes.find(name3);
  ASSERT_NE(hdr, std::string::npos);
  ASSERT_EQ(hdr % 512, 0u);
  const size_t cut = hdr + 512 + in[3].image.size() / 2;
  const fs::path cut_path = dir / "cut.tar";
  std::ofstream(cut_path, std::ios::binary).write(bytes.data(), std::streamsize(cut));

  ShardReader r(cut_path.string());
  std::vector<std::string> keys;
  Sample s;
  while (r.next(s)) {
    keys.push_back(s.key);
    EXPECT_EQ(s.image, in[keys.size() - 1].image);
  }
  EXPECT_EQ(keys, (std::vector<std::string>{in[0].key, in[1].key, in[2].key}));
  EXPECT_EQ(r.stats().samples, 3);
  EXPECT_EQ(r.stats().corrupt, 1);
  EXPECT_FALSE(r.next(s));  // stays at the end

  // Cut inside a header: same complete samples, still no crash.
  const fs::path cut2 = dir / "cut2.tar";
  std::ofstream(cut2, std::ios::binary).write(bytes.data(), std::streamsize(hdr + 100));
  ShardReader r2(cut2.string());
  int n = 0;
  while (r2.next(s)) ++n;
  EXPECT_EQ(n, 3);
  EXPECT_EQ(r2.stats().corrupt, 1);

  // Cut inside sample 3's second member (its text): sample 3 is incomplete and dropped.
  const size_t hdr_txt = bytes.find(in[3].key + ".txt");
  ASSERT_NE(hdr_txt, std::string::npos);
  const fs::path cut3 = dir / "cut3.tar";
  std::ofstream(cut3, std::ios::binary).write(bytes.data(), std::streamsize(hdr_txt + 512 + 5));
  ShardReader r4(cut3.string());
  keys.clear();
  while (r4.next(s)) keys.push_back(s.key);
  EXPECT_EQ(keys, (std::vector<std::string>{in[0].key, in[1].key, in[2].key}));
  EXPECT_EQ(r4.stats().corrupt, 1);
  EXPECT_EQ(r4.stats().skipped_members, 2);  // sample 3's complete image + its cut text

  // Not a tar at all: counted as corrupt, no sample, no throw.
  const fs::path junk = dir / "junk.tar";
  std::ofstream(junk, std::ios::binary) << std::string(2000, 'x');
  ShardReader r3(junk.string());
  EXPECT_FALSE(r3.next(s));
  EXPECT_EQ(r3.stats().corrupt, 1);

  // An empty file: no sample, no throw.
  std::ofstream(dir / "empty.tar", std::ios::binary).close();
  ShardReader r5((dir / "empty.tar").string());
  EXPECT_FALSE(r5.next(s));

  EXPECT_THROW(ShardReader((dir / "missing.tar").string()), florence::Error);
}

TEST(WebDataset, GroupWithoutImageIsSkippedAndCounted) {
  const fs::path dir = fresh_dir("noimage");
  const fs::path p = dir / "000000.tar";
  write_tar(p, {{"a.png", "IMG-A"},
                {"a.txt", "text a"},
                {"a.json", R"({"label": 3, "category": "x"})"},
                {"b.txt", "orphan text"},
                {"b.json", "{}"},
                {"c.jpg", "IMG-C"},
                {"c.cls", "7"},
                {"c.json", "not json"},
                {"c.weird", "?"},
                {"d.png", "IMG-D"},
                {"d.txt", "\xff\xfe bad utf8"}});
  ShardReader r(p.string());
  Sample s;
  ASSERT_TRUE(r.next(s));
  EXPECT_EQ(s.key, "a");
  EXPECT_EQ(std::string(s.image.begin(), s.image.end()), "IMG-A");
  EXPECT_EQ(s.text, "text a");
  EXPECT_EQ(s.label, 3);
  EXPECT_EQ(s.meta.at("category"), "x");
  ASSERT_TRUE(r.next(s));
  EXPECT_EQ(s.key, "c");
  EXPECT_EQ(s.image_ext, "jpg");
  EXPECT_EQ(s.label, 7);  // from c.cls
  EXPECT_TRUE(s.meta.empty());
  EXPECT_EQ(s.text, "");
  EXPECT_FALSE(r.next(s));
  const auto& st = r.stats();
  EXPECT_EQ(st.samples, 2);
  EXPECT_EQ(st.members, 11);
  EXPECT_EQ(st.missing_image, 1);
  EXPECT_EQ(st.bad_meta, 1);
  EXPECT_EQ(st.bad_text, 1);
  // b.txt, b.json (no image), c.weird (unknown), d.png, d.txt (bad text)
  EXPECT_EQ(st.skipped_members, 5);
  EXPECT_EQ(st.corrupt, 0);
}

TEST(SampleKeys, UnsafeKeyReasons) {
  for (const char* ok : {"a", "a/b", "v1.0/img", "dir-1/sub_2/0001", "caf\xc3\xa9/x"})
    EXPECT_EQ(unsafe_key_reason(ok), "") << ok;
  const std::pair<std::string, std::string> bad[] = {
      {"", "empty"},
      {std::string(1025, 'k'), "longer than 1024 bytes"},
      {"ab\xff", "not valid UTF-8"},
      {"a\nb", "holds a control character"},
      {std::string("a\0b", 3), "holds a control character"},
      {"a\\b", "holds a backslash"},
      {"/etc/passwd", "absolute (starts with '/')"},
      {"../../escape", "has a '..' path part"},
      {"a/./b", "has a '.' path part"},
      {"a//b", "has an empty path part"},
      {"a/", "has an empty path part"},
      {"has.dot", "has a '.' in its last part"}};
  for (const auto& [key, why] : bad) EXPECT_EQ(unsafe_key_reason(key), why) << printable_key(key);
  EXPECT_EQ(printable_key("a\x01" "b\xff"), "a\\x01b\\xff");
  EXPECT_EQ(printable_key("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(printable_key(std::string(199, 'a') + "\xc3\xa9"), std::string(199, 'a') + "...");  // whole code points
}

// Issue 23: a member named ../../escape.png made the whole curate run fail in ShardWriter. The
// reader now skips and counts such samples (and GIF-only ones), and returns the others.
TEST(WebDataset, HostileKeysAreSkippedAndCounted) {
  const fs::path dir = fresh_dir("hostile");
  const fs::path p = dir / "000000.tar";
  write_tar(p, {{"../../escape.png", "IMG-E"},
                {"../../escape.txt", "escape"},
                {"/abs/key.png", "IMG-ABS"},
                {"ok.png", "IMG-OK"},
                {"ok.txt", "fine"},
                {"bad\x01" "ctl.png", "IMG-CTL"},
                {"only.gif", "GIF89a"},
                {"v1.0/img.png", "IMG-V"},
                {"a//b.png", "IMG-AB"}});
  ShardReader r(p.string());
  Sample s;
  std::vector<std::string> keys;
  while (r.next(s)) keys.push_back(s.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"ok", "v1.0/img"}));
  const auto& st = r.stats();
  EXPECT_EQ(st.samples, 2);
  EXPECT_EQ(st.unsafe_key, 4);  // ../../escape, /abs/key, bad\x01ctl, a//b
  EXPECT_EQ(st.unsupported_format, 1);
  EXPECT_EQ(st.missing_image, 0);
  EXPECT_EQ(st.skipped_members, 6);  // 2 + 1 + 1 + 1 unsafe, 1 gif
  // Every returned key is one a ShardWriter accepts.
  ShardWriter w((dir / "out").string());
  ShardReader again(p.string());
  while (again.next(s)) EXPECT_NO_THROW(w.write(s));
  Sample bad = s;
  for (const char* key : {"../x", "a\nb", "/abs"}) {
    bad.key = key;
    EXPECT_THROW(w.write(bad), florence::Error) << key;
  }
}

TEST(WebDataset, ListShardsPatterns) {
  const fs::path dir = fresh_dir("list");
  for (const char* sub : {"train", "val"}) {
    fs::create_directories(dir / sub);
    for (int i = 0; i < 3; ++i) {
      char name[32];
      std::snprintf(name, sizeof(name), "%06d.tar", i);
      std::ofstream(dir / sub / name) << "";
    }
  }
  const std::string d = dir.string();
  auto v = list_shards(d + "/train/{000000..000002}.tar");
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[2], d + "/train/000002.tar");
  v = list_shards(d + "/{train,val}/{000001..000002}.tar");
  EXPECT_EQ(v, (std::vector<std::string>{d + "/train/000001.tar", d + "/train/000002.tar", d + "/val/000001.tar",
                                         d + "/val/000002.tar"}));
  v = list_shards(d + "/val::" + d + "/train/000000.tar");
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v[0], (dir / "val" / "000000.tar").string());
  EXPECT_EQ(v[3], d + "/train/000000.tar");
  EXPECT_THROW(list_shards(d + "/train/{000000..000003}.tar"), florence::Error);  // 000003 missing
  EXPECT_THROW(list_shards(d + "/train/{000002..000000}.tar"), florence::Error);  // reversed
  EXPECT_THROW(list_shards(d + "/train/{0000..x}.tar"), florence::Error);
  EXPECT_THROW(list_shards(d + "/train/{000000.tar"), florence::Error);
  EXPECT_THROW(list_shards(d), florence::Error);  // no .tar directly in it
}

}  // namespace test_webdataset
