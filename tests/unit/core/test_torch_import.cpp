// load_torch_state_dict against files written by real torch.save (make_torch_checkpoints.py, run
// with the reference Python): every tensor must have the exact bytes, dtype, shape, strides and
// storage offset Python saved (expected.json); torchvision swin_t is compared with LibTorch's own
// unpickler reading the same tensors saved as a plain dict. Malformed and hostile files, and a
// seeded mutation loop over a real data.pkl, must give florence::Error and nothing else.
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_torch_import {

namespace fs = std::filesystem;
using florence::core::load_torch_state_dict;
using florence::core::TensorMap;

namespace {

fs::path dir() { return fs::path(FLORENCE_TEST_TMP) / "torch_import"; }
std::string file(const std::string& name) { return (dir() / name).string(); }

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

torch::ScalarType dtype_of(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> m = {
      {"float32", torch::kFloat32}, {"float16", torch::kFloat16}, {"bfloat16", torch::kBFloat16},
      {"float64", torch::kFloat64}, {"int64", torch::kInt64},     {"bool", torch::kBool}};
  return m.at(name);
}

std::string hex_of(const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  const size_t n = static_cast<size_t>(c.numel()) * c.element_size();
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

class TorchImport : public ::testing::Test {
 protected:
  static std::string script() { return std::string(FLORENCE_SOURCE_DIR) + "/tests/unit/core/make_torch_checkpoints.py"; }

  static void generate(const std::string& what) {
    const std::string cmd = std::string(FLORENCE_PYTHON) + " " + script() + " " + dir().string() + " " + what;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }

  // ctest runs every test in its own process: the small files are written once and reused
  // while they are newer than the script.
  static void SetUpTestSuite() {
    fs::create_directories(dir());
    const fs::path stamp = file("expected.json");
    if (!fs::exists(stamp) || fs::last_write_time(stamp) < fs::last_write_time(script())) generate("small");
    if (HasFatalFailure()) return;
    expected_ = new nlohmann::json(nlohmann::json::parse(read_bytes(stamp.string())));
  }
  void SetUp() override { ASSERT_NE(expected_, nullptr) << "make_torch_checkpoints.py failed"; }
  static void TearDownTestSuite() {
    delete expected_;
    expected_ = nullptr;
  }

  // Keys, dtype, shape, stride, storage offset and bytes exactly as Python saved them.
  static void expect_as_saved(const std::string& name) {
    const TensorMap got = load_torch_state_dict(file(name));
    const nlohmann::json& want = expected_->at(name);
    std::set<std::string> want_keys, got_keys;
    for (const auto& [k, v] : want.items()) want_keys.insert(k);
    for (const auto& [k, v] : got) got_keys.insert(k);
    EXPECT_EQ(got_keys, want_keys) << name;
    for (const auto& [k, w] : want.items()) {
      if (!got.count(k)) continue;
      const torch::Tensor& t = got.at(k);
      SCOPED_TRACE(name + ": " + k);
      EXPECT_EQ(t.scalar_type(), dtype_of(w.at("dtype").get<std::string>()));
      EXPECT_EQ(t.sizes().vec(), w.at("shape").get<std::vector<int64_t>>());
      EXPECT_EQ(t.strides().vec(), w.at("stride").get<std::vector<int64_t>>());
      EXPECT_EQ(t.storage_offset(), w.at("offset").get<int64_t>());
      EXPECT_EQ(hex_of(t), w.at("hex").get<std::string>());
      EXPECT_TRUE(t.device().is_cpu());
    }
  }

  static void expect_error(const std::string& name, const std::string& needle) {
    try {
      load_torch_state_dict(file(name));
      ADD_FAILURE() << name << ": no error";
    } catch (const florence::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << name << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << "message does not name the file";
    } catch (const std::exception& e) {
      ADD_FAILURE() << name << ": not a florence::Error: " << e.what();
    }
  }

  static nlohmann::json* expected_;
};
nlohmann::json* TorchImport::expected_ = nullptr;

TEST_F(TorchImport, ModuleStateDictIsAnOrderedDict) {
  expect_as_saved("module_sd.pt");
  const TensorMap sd = load_torch_state_dict(file("module_sd.pt"));
  ASSERT_EQ(sd.count("index"), 1u);
  EXPECT_TRUE(torch::equal(sd.at("index"), torch::arange(6, torch::kInt64).reshape({2, 3}) * 7 - 3));
}

TEST_F(TorchImport, TrainingCheckpointUnwrapsModelAndIgnoresTheRest) {
  // "epoch", the AdamW state (int-keyed tensors), argparse.Namespace, a numpy scalar and a
  // 2**64-1 seed are all outside the unwrapped "model" entry.
  expect_as_saved("wrapped.pt");
}

TEST_F(TorchImport, DtypesParametersAndSharedStorageViews) {
  expect_as_saved("dtypes.pt");
  const TensorMap sd = load_torch_state_dict(file("dtypes.pt"));
  // The transposed slice is a view of "base", as in Python, not a copy.
  EXPECT_TRUE(sd.at("view").is_alias_of(sd.at("base")));
  EXPECT_TRUE(torch::equal(sd.at("view"), sd.at("base").slice(0, 1, 5).slice(1, 1, 8, 3).t()));
  EXPECT_EQ(sd.at("scalar").dim(), 0);
  EXPECT_EQ(sd.at("scalar").item<double>(), 2.5);
}

TEST_F(TorchImport, PlainNestedDictAgreesWithLibTorchUnpickler) {
  expect_as_saved("plain.pt");
  const TensorMap sd = load_torch_state_dict(file("plain.pt"));
  const std::string bytes = read_bytes(file("plain.pt"));
  const c10::IValue ref = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  const auto enc = ref.toGenericDict().at("enc").toGenericDict();
  EXPECT_TRUE(torch::equal(sd.at("enc.w"), enc.at("w").toTensor()));
  EXPECT_TRUE(torch::equal(sd.at("enc.deep.b"), enc.at("deep").toGenericDict().at("b").toTensor()));
  EXPECT_TRUE(torch::equal(sd.at("top"), ref.toGenericDict().at("top").toTensor()));
}

TEST_F(TorchImport, TorchvisionSwinT) {
  generate("swin");
  const TensorMap sd = load_torch_state_dict(file("swin_t.pt"));
  const nlohmann::json want = nlohmann::json::parse(read_bytes(file("swin_expected.json")));
  ASSERT_EQ(sd.size(), want.size());
  const std::string bytes = read_bytes(file("swin_t_plain.pt"));
  const auto ref = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end())).toGenericDict();
  ASSERT_EQ(ref.size(), want.size());
  for (const auto& [k, w] : want.items()) {
    ASSERT_EQ(sd.count(k), 1u) << k;
    const torch::Tensor& t = sd.at(k);
    EXPECT_EQ(t.scalar_type(), dtype_of(w.at("dtype").get<std::string>())) << k;
    EXPECT_EQ(t.sizes().vec(), w.at("shape").get<std::vector<int64_t>>()) << k;
    const torch::Tensor r = ref.at(k).toTensor();
    EXPECT_EQ(t.scalar_type(), r.scalar_type()) << k;
    EXPECT_TRUE(torch::equal(t, r)) << k;
  }
  const torch::Tensor rpi = sd.at("features.1.0.attn.relative_position_index");
  EXPECT_EQ(rpi.scalar_type(), torch::kInt64);
  EXPECT_EQ(rpi.numel(), 49 * 49);
  EXPECT_EQ(rpi.min().item<int64_t>(), 0);
  EXPECT_EQ(rpi.max().item<int64_t>(), 13 * 13 - 1);  // (2*7-1)^2 relative positions
  fs::remove(file("swin_t.pt"));  // ~110 MB each
  fs::remove(file("swin_t_plain.pt"));
}

TEST_F(TorchImport, HandMadeLayoutLoads) {
  // Control for the hand-made bad files: same writer, correct numbers.
  const TensorMap sd = load_torch_state_dict(file("hand_ok.pt"));
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_TRUE(torch::equal(sd.at("w"), torch::tensor({1.0f, 2.0f, 3.0f})));
  // Saved from a GPU: the location is ignored, tensors come back on the CPU.
  const TensorMap cuda = load_torch_state_dict(file("hand_cuda.pt"));
  ASSERT_EQ(cuda.size(), 1u);
  EXPECT_TRUE(cuda.at("w").device().is_cpu());
  EXPECT_TRUE(torch::equal(cuda.at("w"), torch::tensor({1.0f, 2.0f, 3.0f})));
}

TEST_F(TorchImport, MalformedFilesGiveErrors) {
  expect_error("legacy.pt", "legacy");
  expect_error("no_pkl.pt", "no data.pkl");
  expect_error("garbage_pkl.pt", "data.pkl byte");
  expect_error("trunc_pkl.pt", "truncated");
  expect_error("underflow.pt", "stack underflow");
  expect_error("view_oob.pt", "outside its storage");
  expect_error("numel_lie.pt", "has 16 bytes");
  expect_error("no_record.pt", "'data/7' is missing");
  expect_error("neg_stride.pt", "negative size or stride");
  expect_error("cyclic.pt", "nested deeper");
  expect_error("whole_module.pt", "Python object of class '__main__.Small'");
  expect_error("quantized.pt", "'q' is a tensor stored with ");

  const std::string good = read_bytes(file("module_sd.pt"));
  write_bytes(file("truncated_zip.pt"), good.substr(0, good.size() / 2));
  expect_error("truncated_zip.pt", "");
  write_bytes(file("text.pt"), "hello, not a checkpoint\n");
  expect_error("text.pt", "not a zip-format");
  write_bytes(file("empty.pt"), "");
  expect_error("empty.pt", "not a zip-format");
  EXPECT_THROW(load_torch_state_dict(file("does_not_exist.pt")), florence::Error);
}

// Seeded mutations of a real data.pkl, re-packed into a valid zip with LibTorch's own writer, so
// that the zip CRC does not stop them before the pickle reader: every outcome must be a result
// or a florence::Error.
TEST_F(TorchImport, MutatedPicklesNeverCrash) {
  caffe2::serialize::PyTorchStreamReader reader(file("dtypes.pt"));
  std::map<std::string, std::string> records;
  for (const std::string& name : reader.getAllRecords()) {
    if (name == "version" || name == ".data/version") continue;
    auto [ptr, size] = reader.getRecord(name);
    records[name] = std::string(static_cast<const char*>(ptr.get()), size);
  }
  ASSERT_TRUE(records.count("data.pkl"));
  const std::string pkl = records.at("data.pkl");
  std::mt19937 rng(1234);
  int errors = 0, loaded = 0;
  const int iterations = 400;
  for (int it = 0; it < iterations; ++it) {
    std::string m = pkl;
    const int kind = it % 4;
    if (kind == 3) {
      m.resize(std::uniform_int_distribution<size_t>(0, m.size() - 1)(rng));
    } else {
      const int flips = 1 + kind * 2;
      for (int f = 0; f < flips; ++f) {
        const size_t at = std::uniform_int_distribution<size_t>(0, m.size() - 1)(rng);
        m[at] = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
      }
    }
    const std::string path = file("mutated.pt");
    {
      caffe2::serialize::PyTorchStreamWriter writer(path);
      for (const auto& [name, data] : records) {
        const std::string& bytes = name == "data.pkl" ? m : data;
        writer.writeRecord(name, bytes.data(), bytes.size());
      }
      writer.writeEndOfFile();
    }
    try {
      const TensorMap sd = load_torch_state_dict(path);
      for (const auto& [k, t] : sd) (void)t.sum().item<double>();  // touch every element
      ++loaded;
    } catch (const florence::Error&) {
      ++errors;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iteration " << it << ": not a florence::Error: " << e.what();
    }
  }
  EXPECT_EQ(errors + loaded, iterations);
  EXPECT_GT(errors, iterations / 4);  // most mutations of a pickle are detectably broken
  std::printf("mutations: %d rejected with florence::Error, %d loaded\n", errors, loaded);
}

}  // namespace

}  // namespace test_torch_import
