// safetensors reader/writer: bit-exact round trips, compatibility with an independent writer
// and reader (make_safetensors.py, written from the format description with struct + json),
// rejection of malformed files with specific messages, and a seeded mutation fuzz loop.
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_safetensors {

namespace fs = std::filesystem;
using florence::core::load_safetensors;
using florence::core::save_safetensors;
using florence::core::TensorMap;

namespace {

std::string tmp_path(const std::string& name) {
  const fs::path dir = fs::path(FLORENCE_TEST_TMP) / "safetensors";
  fs::create_directories(dir);
  return (dir / name).string();
}

std::string script() { return std::string(FLORENCE_SOURCE_DIR) + "/tests/unit/core/make_safetensors.py"; }

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string u64le(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

/// A file from a header text and data bytes; the length prefix is the header's own length
/// unless `length` overrides it.
std::string make_file(const std::string& header, const std::string& data,
                      std::optional<uint64_t> length = std::nullopt) {
  return u64le(length.value_or(header.size())) + header + data;
}

/// Same dtype, same shape, same bytes.
::testing::AssertionResult bit_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type())
    return ::testing::AssertionFailure() << "dtype " << a.scalar_type() << " vs " << b.scalar_type();
  if (a.sizes() != b.sizes()) return ::testing::AssertionFailure() << "shape " << a.sizes() << " vs " << b.sizes();
  const auto ca = a.contiguous().cpu(), cb = b.contiguous().cpu();
  const size_t n = ca.numel() * ca.element_size();
  if (n && std::memcmp(ca.data_ptr(), cb.data_ptr(), n) != 0)
    return ::testing::AssertionFailure() << "bytes differ";
  return ::testing::AssertionSuccess();
}

/// The tensors make_safetensors.py writes, spelled out independently.
TensorMap expected_tensors() {
  TensorMap m;
  m["f32"] = torch::tensor({-1.5f, 0.0f, 0.25f, 3.0f, 1024.5f, -7.125f}).reshape({2, 3});
  m["f16"] = torch::tensor({1.0f, -2.5f, 65504.0f, 0.5f}).to(torch::kFloat16);
  m["bf16"] = torch::tensor({1.0f, -3.0f, 0.15625f, 256.0f}).to(torch::kBFloat16).reshape({2, 2});
  m["f64"] = torch::tensor({3.141592653589793, -1e300, 5e-324}, torch::kFloat64);
  m["i64"] = torch::tensor({-(int64_t{1} << 40) - 3, int64_t{1} << 62}, torch::kInt64);
  m["i32"] = torch::tensor({-7, 0, 2147483647}, torch::kInt32);
  m["i16"] = torch::tensor({-32768, 12345}, torch::kInt32).to(torch::kInt16);
  m["i8"] = torch::tensor({-128, 127}, torch::kInt32).to(torch::kInt8);
  m["u8"] = torch::tensor({0, 1, 128, 255}, torch::kInt32).to(torch::kUInt8);
  m["bool"] = torch::tensor({1, 0, 1}, torch::kInt32).to(torch::kBool);
  m["scalar"] = torch::tensor(42.5f);
  m["empty"] = torch::empty({0, 3}, torch::kFloat32);
  return m;
}
const std::map<std::string, std::string> kExpectedMetadata{{"format", "pt"}, {"source", "hand-written"}};

int run_python(const std::string& args) {
  const std::string cmd = std::string(FLORENCE_PYTHON) + " " + script() + " " + args;
  return std::system(cmd.c_str());
}

/// Loading `path` throws florence::Error whose message names the file, contains `word` and,
/// when given, names the tensor.
void expect_rejected(const std::string& path, const std::string& word, const std::string& tensor = "") {
  try {
    load_safetensors(path);
    ADD_FAILURE() << path << ": loaded, expected an error containing '" << word << "'";
  } catch (const florence::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(word), std::string::npos) << "message: " << msg << "\nexpected word: " << word;
    EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
    if (!tensor.empty()) {
      EXPECT_NE(msg.find("\"" + tensor + "\""), std::string::npos)
          << "message does not name tensor " << tensor << ": " << msg;
    }
  }
}

void expect_header_rejected(const std::string& name, const std::string& header, const std::string& data,
                            const std::string& word, const std::string& tensor = "") {
  const std::string path = tmp_path(name + ".safetensors");
  write_bytes(path, make_file(header, data));
  expect_rejected(path, word, tensor);
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtypeBitExact) {
  torch::manual_seed(7);
  TensorMap in;
  auto specials = torch::tensor({std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                 -std::numeric_limits<float>::infinity(), -0.0f, 1e-45f /* denormal */});
  in["f32"] = torch::cat({torch::randn({37}), specials});
  in["f16"] = torch::cat({torch::randn({19}), specials}).to(torch::kFloat16);
  in["bf16"] = torch::cat({torch::randn({23}), specials}).to(torch::kBFloat16);
  in["f64"] = torch::cat({torch::randn({11}, torch::kFloat64), specials.to(torch::kFloat64)});
  in["i64"] = torch::randint(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), {3, 5},
                             torch::kInt64);
  in["i32"] = torch::randint(-1000000, 1000000, {4}, torch::kInt32);
  in["i16"] = torch::randint(-30000, 30000, {4}, torch::kInt16);
  in["i8"] = torch::randint(-128, 128, {6}, torch::kInt8);
  in["u8"] = torch::randint(0, 256, {2, 2, 2}, torch::kUInt8);
  in["bool"] = torch::randint(0, 2, {9}, torch::kInt32).to(torch::kBool);
  in["scalar"] = torch::tensor(3.25f);
  in["scalar_i64"] = torch::tensor(int64_t{-9});
  in["empty"] = torch::empty({0}, torch::kFloat32);
  in["empty2d"] = torch::empty({4, 0}, torch::kBFloat16);
  in["noncontig"] = torch::arange(12, torch::kFloat32).reshape({3, 4}).t();  // written contiguous
  in["a.b.c.weight"] = torch::randn({2, 3}).to(torch::kFloat16);

  const std::map<std::string, std::string> meta{{"format", "pt"}, {"step", "1200"}, {"note", "ünïcode ✓"}, {"", ""}};
  const std::string path = tmp_path("roundtrip.safetensors");
  save_safetensors(path, in, meta);
  const auto out = load_safetensors(path);
  ASSERT_EQ(out.tensors.size(), in.size());
  for (const auto& [name, t] : in) {
    ASSERT_TRUE(out.tensors.count(name)) << name;
    EXPECT_TRUE(bit_equal(out.tensors.at(name), t)) << name;
    EXPECT_TRUE(out.tensors.at(name).is_contiguous()) << name;
  }
  EXPECT_EQ(out.tensors.at("scalar").dim(), 0);
  EXPECT_EQ(out.tensors.at("scalar").item<float>(), 3.25f);
  EXPECT_EQ(out.tensors.at("empty2d").sizes(), (std::vector<int64_t>{4, 0}));
  EXPECT_EQ(out.metadata, meta);

  // Header length is a multiple of 8 and the data buffer starts right after it.
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
}

TEST(Safetensors, NoMetadataRoundTripAndEmptyFile) {
  const std::string path = tmp_path("nometa.safetensors");
  save_safetensors(path, {{"x", torch::ones({2})}});
  auto f = load_safetensors(path);
  EXPECT_TRUE(f.metadata.empty());
  EXPECT_TRUE(bit_equal(f.tensors.at("x"), torch::ones({2})));

  save_safetensors(path, {});  // no tensors at all is a valid (if useless) file
  f = load_safetensors(path);
  EXPECT_TRUE(f.tensors.empty());
  EXPECT_EQ(read_bytes(path).size(), 16u);  // 8-byte length + "{}" padded to 8
}

TEST(Safetensors, ReadsFileFromIndependentWriter) {
  const std::string path = tmp_path("python_written.safetensors");
  ASSERT_EQ(run_python("write " + path), 0);
  const auto f = load_safetensors(path);
  const TensorMap expected = expected_tensors();
  ASSERT_EQ(f.tensors.size(), expected.size());
  for (const auto& [name, t] : expected) {
    ASSERT_TRUE(f.tensors.count(name)) << name;
    EXPECT_TRUE(bit_equal(f.tensors.at(name), t)) << name << ": got " << f.tensors.at(name);
  }
  EXPECT_EQ(f.metadata, kExpectedMetadata);
  // Spot values, independent of the helper above.
  EXPECT_EQ(f.tensors.at("f32")[1][1].item<float>(), 1024.5f);
  EXPECT_EQ(f.tensors.at("i64")[1].item<int64_t>(), int64_t{1} << 62);
  EXPECT_EQ(f.tensors.at("f16")[2].item<float>(), 65504.0f);
  EXPECT_EQ(f.tensors.at("bf16")[1][0].item<float>(), 0.15625f);
  EXPECT_EQ(f.tensors.at("u8")[3].item<int>(), 255);
}

TEST(Safetensors, WrittenFileParsesInIndependentReader) {
  const std::string path = tmp_path("cpp_written.safetensors");
  save_safetensors(path, expected_tensors(), kExpectedMetadata);
  EXPECT_EQ(run_python("check " + path), 0);
  // The checker itself can fail: a file laid out differently (the Python writer's
  // reverse-ordered layout) is rejected by it.
  const std::string other = tmp_path("python_layout.safetensors");
  ASSERT_EQ(run_python("write " + other), 0);
  EXPECT_NE(run_python("check " + other + " > /dev/null"), 0);
}

TEST(Safetensors, AtomicOverwriteLeavesNoTemporaries) {
  const fs::path dir = fs::path(FLORENCE_TEST_TMP) / "safetensors_atomic";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "w.safetensors").string();
  save_safetensors(path, {{"a", torch::zeros({3})}});
  save_safetensors(path, {{"b", torch::ones({2})}});
  const auto f = load_safetensors(path);
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_TRUE(f.tensors.count("b"));
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1u);
}

TEST(Safetensors, SaveRejectsBadInput) {
  EXPECT_THROW(save_safetensors(tmp_path("c.safetensors"), {{"c", torch::zeros({2}, torch::kComplexFloat)}}),
               florence::Error);
  EXPECT_THROW(save_safetensors(tmp_path("m.safetensors"), {{"__metadata__", torch::zeros({2})}}), florence::Error);
  EXPECT_THROW(save_safetensors(tmp_path("u.safetensors"), {{"u", torch::Tensor()}}), florence::Error);
  EXPECT_THROW(save_safetensors("/nonexistent-dir-florence/x.safetensors", {{"a", torch::zeros({1})}}),
               florence::Error);
  EXPECT_THROW(save_safetensors(tmp_path("utf.safetensors"), {{std::string("bad\xff", 4), torch::zeros({1})}}),
               florence::Error);
}

// ---------------------------------------------------------------------------------------
// Malformed files: each one rejected with a florence::Error that says what is wrong.
// ---------------------------------------------------------------------------------------

TEST(SafetensorsMalformed, FileOfThreeBytes) {
  const std::string path = tmp_path("three.safetensors");
  write_bytes(path, "abc");
  expect_rejected(path, "too short");
}

TEST(SafetensorsMalformed, TruncatedInData) {
  const std::string path = tmp_path("truncated.safetensors");
  save_safetensors(path, {{"weight", torch::randn({64})}});
  std::string bytes = read_bytes(path);
  write_bytes(path, bytes.substr(0, bytes.size() - 10));
  expect_rejected(path, "truncated", "weight");
}

TEST(SafetensorsMalformed, HeaderLengthLargerThanFile) {
  const std::string path = tmp_path("lying.safetensors");
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  write_bytes(path, make_file(header, std::string(4, '\0'), header.size() + 100));
  expect_rejected(path, "exceeds the file size");
}

TEST(SafetensorsMalformed, HugeHeaderLength) {
  const std::string path = tmp_path("huge.safetensors");
  write_bytes(path, make_file("{}", "", uint64_t{1} << 60));
  expect_rejected(path, "exceeds the limit");
}

TEST(SafetensorsMalformed, HeaderNotJson) {
  expect_header_rejected("notjson", "{\"a\": [1, 2,", "", "not valid JSON");
  expect_header_rejected("binary", std::string("\x00\x01\x02\x03", 4), "", "not valid JSON");
  expect_header_rejected("notobject", "[1, 2, 3]", "", "not a JSON object");
  expect_header_rejected("emptyheader", "", "", "not valid JSON");
}

TEST(SafetensorsMalformed, OverlappingOffsets) {
  expect_header_rejected("overlap",
                         R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         std::string(12, '\0'), "overlap", "b");
  // Same range twice is an overlap too.
  expect_header_rejected("overlap_same",
                         R"({"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                         std::string(4, '\0'), "overlap");
}

TEST(SafetensorsMalformed, OffsetsBeyondData) {
  expect_header_rejected("beyond", R"({"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}})",
                         std::string(16, '\0'), "beyond the data buffer", "w");
  expect_header_rejected("beyond_huge",
                         R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[18446744073709551612,18446744073709551615]}})",
                         std::string(16, '\0'), "beyond the data buffer", "w");
}

TEST(SafetensorsMalformed, ByteCountMismatch) {
  expect_header_rejected("mismatch", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                         std::string(8, '\0'), "mismatch", "w");
}

TEST(SafetensorsMalformed, UnknownDtype) {
  expect_header_rejected("dtype", R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})",
                         std::string(2, '\0'), "unknown dtype", "w");
  expect_header_rejected("dtype_num", R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})",
                         std::string(8, '\0'), "not a string", "w");
}

TEST(SafetensorsMalformed, NegativeOrBadShape) {
  expect_header_rejected("negative", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                         std::string(4, '\0'), "negative", "w");
  expect_header_rejected("fractional", R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,4]}})",
                         std::string(4, '\0'), "not a non-negative integer", "w");
  expect_header_rejected("overflow",
                         R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
                         std::string(4, '\0'), "overflows", "w");
  // Zero elements but dimensions whose strides would overflow.
  expect_header_rejected("overflow_empty",
                         R"({"w":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})", "",
                         "overflows", "w");
  expect_header_rejected("nested", R"({"w":{"dtype":"F32","shape":[[1]],"data_offsets":[0,4]}})",
                         std::string(4, '\0'), "deeper", "w");
  std::string dims = "1";
  for (int i = 1; i < 100; ++i) dims += ",1";
  expect_header_rejected("rank", R"({"w":{"dtype":"F32","shape":[)" + dims + R"(],"data_offsets":[0,4]}})",
                         std::string(4, '\0'), "longer than", "w");
}

TEST(SafetensorsMalformed, DuplicateKey) {
  expect_header_rejected("dup",
                         R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                         R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                         std::string(8, '\0'), "duplicate");
  expect_header_rejected("dup_field", R"({"w":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                         std::string(4, '\0'), "duplicate");
  expect_header_rejected("dup_meta", R"({"__metadata__":{"k":"a","k":"b"}})", "", "duplicate");
}

TEST(SafetensorsMalformed, MetadataNotStrings) {
  expect_header_rejected("meta_int", R"({"__metadata__":{"k":1}})", "", "not a string");
  expect_header_rejected("meta_array", R"({"__metadata__":["a"]})", "", "not an object");
}

TEST(SafetensorsMalformed, EntryStructure) {
  expect_header_rejected("entry_array", R"({"w":[1,2]})", "", "not an object", "w");
  expect_header_rejected("missing", R"({"w":{"dtype":"F32","shape":[1]}})", "", "missing field", "w");
  expect_header_rejected("extra", R"({"w":{"dtype":"F32","shape":[],"data_offsets":[0,4],"x":1}})",
                         std::string(4, '\0'), "unknown field", "w");
  expect_header_rejected("reversed", R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})",
                         std::string(4, '\0'), "reversed", "w");
  expect_header_rejected("three_offsets", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})",
                         std::string(4, '\0'), "two non-negative integers", "w");
  expect_header_rejected("negative_offset", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})",
                         std::string(4, '\0'), "two non-negative integers", "w");
  expect_header_rejected("bad_bool", R"({"w":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})",
                         std::string("\x01\x07", 2), "neither 0 nor 1", "w");
}

TEST(SafetensorsMalformed, NotAFile) {
  expect_rejected(tmp_path("does_not_exist.safetensors"), "cannot open");
  const std::string dir = tmp_path("a_directory.safetensors");
  fs::create_directories(dir);
  expect_rejected(dir, "not a regular file");
}

TEST(SafetensorsMalformed, ValidEdgeCasesAreAccepted) {
  // Gaps, trailing whitespace, empty tensors at any offset and unordered layout are legal.
  const std::string path = tmp_path("edge.safetensors");
  const std::string header =
      R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("a":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},)"
      R"("e":{"dtype":"F32","shape":[0],"data_offsets":[1,1]}}   )";
  write_bytes(path, make_file(header, std::string("\x01\x02\x00\x00\x03\x04", 6)));
  const auto f = load_safetensors(path);
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_TRUE(bit_equal(f.tensors.at("a"), torch::tensor({3, 4}, torch::kInt32).to(torch::kUInt8)));
  EXPECT_TRUE(bit_equal(f.tensors.at("b"), torch::tensor({1, 2}, torch::kInt32).to(torch::kUInt8)));
  EXPECT_EQ(f.tensors.at("e").numel(), 0);
}

// ---------------------------------------------------------------------------------------
// Fuzz: seeded random mutations of a valid file either load or throw florence::Error.
// Any other exception fails the test; a crash kills it.
// ---------------------------------------------------------------------------------------

TEST(SafetensorsFuzz, MutationsLoadOrThrowFlorenceError) {
  TensorMap base;
  base["f32"] = torch::arange(6, torch::kFloat32).reshape({2, 3});
  base["f16"] = torch::ones({3}, torch::kFloat16);
  base["i64"] = torch::tensor({int64_t{5}, int64_t{-5}});
  base["flag"] = torch::tensor({1, 0}, torch::kInt32).to(torch::kBool);
  base["s"] = torch::tensor(2.0, torch::kFloat64);
  base["z"] = torch::empty({0, 2}, torch::kUInt8);
  const std::string valid_path = tmp_path("fuzz_base.safetensors");
  save_safetensors(valid_path, base, {{"k", "v"}});
  const std::string valid = read_bytes(valid_path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, valid.data(), 8);
  const size_t header_end = 8 + header_len;

  std::mt19937_64 rng(20240611);
  auto uniform = [&rng](size_t lo, size_t hi) { return std::uniform_int_distribution<size_t>(lo, hi)(rng); };
  const std::string path = tmp_path("fuzz.safetensors");
  int loaded = 0, rejected = 0;
  const int kIterations = 3000;
  for (int it = 0; it < kIterations; ++it) {
    std::string b = valid;
    switch (it % 6) {
      case 0:  // flip 1-3 random bytes anywhere
        for (size_t k = 0, n = uniform(1, 3); k < n; ++k) b[uniform(0, b.size() - 1)] ^= static_cast<char>(uniform(1, 255));
        break;
      case 1: {  // change a digit of the header (shapes, offsets) to another digit or '-'
        std::vector<size_t> digits;
        for (size_t i = 8; i < header_end; ++i)
          if (b[i] >= '0' && b[i] <= '9') digits.push_back(i);
        for (size_t k = 0, n = uniform(1, 2); k < n; ++k)
          b[digits[uniform(0, digits.size() - 1)]] = "0123456789-9"[uniform(0, 11)];
        break;
      }
      case 2:  // truncate anywhere
        b.resize(uniform(0, b.size() - 1));
        break;
      case 3:  // corrupt the length prefix
        b[uniform(0, 7)] = static_cast<char>(uniform(0, 255));
        break;
      case 4:  // replace one header character with JSON punctuation
        b[uniform(8, header_end - 1)] = "{}[],:\"\\ e.+"[uniform(0, 12)];
        break;
      case 5: {  // insert a digit into the header (longer numbers), fixing the length prefix
        b.insert(uniform(9, header_end - 2), 1, static_cast<char>('0' + uniform(0, 9)));
        const std::string len = u64le(header_len + 1);
        b.replace(0, 8, len);
        break;
      }
    }
    write_bytes(path, b);
    try {
      const auto f = load_safetensors(path);
      for (const auto& [name, t] : f.tensors) ASSERT_TRUE(t.defined()) << name;
      ++loaded;
    } catch (const florence::Error&) {
      ++rejected;
    }
  }
  std::cout << "fuzz: " << kIterations << " mutations, " << loaded << " loaded, " << rejected << " rejected\n";
  EXPECT_EQ(loaded + rejected, kIterations);
  EXPECT_GT(loaded, 0);    // some mutations (data bytes) keep the file valid
  EXPECT_GT(rejected, 0);  // and most are caught
}

}  // namespace test_safetensors
