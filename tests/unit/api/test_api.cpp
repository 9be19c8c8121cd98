// florence/florence.h in process, with a random-init florence-nano (its sidecar names CLIP's
// vocabulary): the four ways of giving an image agree, texts and zero-shot have the documented
// shapes and values, concurrent callers get the serial results, and bad input is a florence::Error
// naming the input.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <optional>
#include <thread>

#include "e2e/search/fixtures.h"
#include "florence/florence.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_api {

namespace ts = florence::test::search;
namespace fs = std::filesystem;

namespace {

struct Fixture {
  fs::path root;
  std::string ckpt;
  std::optional<florence::Model> model;
};

Fixture& fixture() {
  static Fixture f = [] {
    Fixture f;
    f.root = ts::scratch("unit_api");
    f.ckpt = ts::tiny_checkpoint(f.root);
    florence::ModelOptions o;
    o.checkpoint = f.ckpt;
    o.threads = 2;
    f.model = florence::Model::load(o);
    return f;
  }();
  return f;
}

const florence::Model& model() { return *fixture().model; }

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const florence::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("NOT a florence::Error: ") + e.what();
  }
  return "no error";
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

TEST(Api, ModelFacts) {
  EXPECT_EQ(model().embed_dim(), 128);  // florence-nano (model/registry.cpp)
  EXPECT_EQ(model().image_size(), 64);
  EXPECT_TRUE(model().has_tokenizer());
  EXPECT_GT(model().temperature(), 0);
  EXPECT_STREQ(florence::version(), "0.1.0");
}

TEST(Api, FourWaysOfGivingAnImageAgree) {
  const cv::Mat bgr = ts::picture(3);  // 48x40 BGR
  const fs::path png = fixture().root / "p3.png";
  ASSERT_TRUE(cv::imwrite(png.string(), bgr));
  const torch::Tensor from_file = model().embed_image_files({png.string()});
  ASSERT_EQ(from_file.sizes(), (std::vector<int64_t>{1, model().embed_dim()}));
  EXPECT_NEAR(from_file.norm().item<double>(), 1.0, 1e-5);
  const std::vector<uint8_t> bytes = ts::png(bgr);
  EXPECT_LT(max_diff(model().embed_image_bytes(bytes.data(), bytes.size()), from_file), 1e-6);
  EXPECT_LT(max_diff(model().embed_image(bgr), from_file), 1e-6);
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  EXPECT_LT(max_diff(model().embed_rgb(rgb.data, rgb.cols, rgb.rows), from_file), 1e-6);
  // A padded row stride (a sub-image of a wider buffer) reads the same pixels.
  cv::Mat wide(rgb.rows, rgb.cols + 5, CV_8UC3, cv::Scalar(1, 2, 3));
  rgb.copyTo(wide(cv::Rect(0, 0, rgb.cols, rgb.rows)));
  EXPECT_LT(max_diff(model().embed_rgb(wide.data, rgb.cols, rgb.rows, wide.step), from_file), 1e-6);
  // Grey and BGRA (alpha composited on white: opaque alpha is the plain image).
  cv::Mat bgra;
  cv::cvtColor(bgr, bgra, cv::COLOR_BGR2BGRA);
  EXPECT_LT(max_diff(model().embed_image(bgra), from_file), 1e-6);
  // Several files: rows in the order given, each the single-file embedding.
  const fs::path png2 = fixture().root / "p4.png";
  ASSERT_TRUE(cv::imwrite(png2.string(), ts::picture(4)));
  const torch::Tensor two = model().embed_image_files({png2.string(), png.string()});
  EXPECT_LT(max_diff(two[1], from_file[0]), 1e-6);
  EXPECT_GT(max_diff(two[0], from_file[0]), 1e-3);
}

TEST(Api, TextsSimilarityAndZeroShot) {
  const torch::Tensor t = model().embed_texts({"a red disc", "a green square", "a red disc"});
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{3, model().embed_dim()}));
  EXPECT_LT(max_diff(t[0], t[2]), 1e-6);
  const torch::Tensor img = model().embed_image(ts::picture(5));
  const torch::Tensor s = florence::similarity(img, t);
  ASSERT_EQ(s.sizes(), (std::vector<int64_t>{1, 3}));
  EXPECT_NEAR(s[0][1].item<double>(), (img[0] * t[1]).sum().item<double>(), 1e-6);
  // zero_shot with the bare-label template: softmax(tau * cos) by hand.
  const torch::Tensor p = model().zero_shot(img, {"a red disc", "a green square"}, {"{}"});
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{1, 2}));
  const torch::Tensor expect = torch::softmax(s.slice(1, 0, 2).to(torch::kDouble) * model().temperature(), 1);
  EXPECT_LT(max_diff(p.to(torch::kDouble), expect), 1e-6);
  // Default templates: still a distribution.
  const torch::Tensor pd = model().zero_shot(img, {"disc", "square", "triangle"});
  EXPECT_NEAR(pd.sum().item<double>(), 1.0, 1e-5);
}

TEST(Api, ConcurrentCallersGetTheSerialResults) {
  const torch::Tensor text_ref = model().embed_texts({"picture number 7"});
  const torch::Tensor img_ref = model().embed_image(ts::picture(7));
  std::vector<std::thread> threads;
  std::vector<double> diffs(8, 1.0);
  const florence::Model copy = model();  // copies share the loaded model
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      const florence::Model& m = i % 2 ? copy : model();
      diffs[size_t(i)] = i % 2 ? max_diff(m.embed_texts({"picture number 7"}), text_ref)
                               : max_diff(m.embed_image(ts::picture(7)), img_ref);
    });
  for (auto& t : threads) t.join();
  for (double d : diffs) EXPECT_LT(d, 1e-6);
}

// Found by a newcomer's hostile-input run (2026-12-06); each failed before its fix.
TEST(Api, HostileInputFoundByANewcomer) {
  const fs::path root = fixture().root;
  // A moved-from Model / ImageIndex: an error, not a segfault.
  florence::Model a = model();
  const florence::Model b = std::move(a);
  EXPECT_NE(error_of([&] { a.embed_texts({"x"}); }).find("moved from"), std::string::npos);
  EXPECT_NE(error_of([&] { a.embed_dim(); }).find("moved from"), std::string::npos);
  EXPECT_EQ(b.embed_dim(), 128);
  // A folder, a FIFO and /dev/zero given as image files: named, refused before reading.
  fs::create_directories(root / "adir.png");
  EXPECT_NE(error_of([&] { model().embed_image_files({(root / "adir.png").string()}); }).find("adir.png' is not a regular file"),
            std::string::npos);
  const fs::path fifo = root / "fifo.png";
  fs::remove(fifo);
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_NE(error_of([&] { model().embed_image_files({fifo.string()}); }).find("fifo.png' is not a regular file"),
            std::string::npos);
  EXPECT_NE(error_of([&] { model().embed_image_files({"/dev/zero"}); }).find("/dev/zero"), std::string::npos);
  // A 100000 x 1 PNG (a few hundred bytes) would be resized to 7.3M x 73 pixels: refused (before the
  // fix it was embedded, after 45 s and 2.6 GB).
  const cv::Mat thin(1, 100000, CV_8UC3, cv::Scalar(10, 200, 30));
  const fs::path thin_png = root / "thin.png";
  ASSERT_TRUE(cv::imwrite(thin_png.string(), thin));
  EXPECT_NE(error_of([&] { model().embed_image_files({thin_png.string()}); }).find("thin.png"), std::string::npos);
  EXPECT_NE(error_of([&] { model().embed_image(thin); }).find("would be resized"), std::string::npos);
  // threads out of range, devices LibTorch would accept or explain badly.
  florence::ModelOptions o;
  o.checkpoint = fixture().ckpt;
  for (int t : {-1, 100000}) {
    o.threads = t;
    EXPECT_NE(error_of([&] { florence::Model::load(o); }).find("threads " + std::to_string(t)), std::string::npos);
  }
  o.threads = 2;
  for (const char* d : {"cpu:99", "meta", "cuda:7"}) {
    o.device = d;
    EXPECT_NE(error_of([&] { florence::Model::load(o); }).find(std::string("device '") + d + "'"), std::string::npos) << d;
  }
  // Invalid UTF-8 at row 70 of 100 texts, in a label, in a template: the position is named.
  std::vector<std::string> texts(100, "fine");
  texts[70] = "bad \xff";
  EXPECT_NE(error_of([&] { model().embed_texts(texts); }).find("text row 70"), std::string::npos);
  const torch::Tensor img = model().embed_image(ts::picture(2));
  EXPECT_NE(error_of([&] { model().zero_shot(img, {"a", "b", "d\xff"}); }).find("label 2"), std::string::npos);
  EXPECT_NE(error_of([&] { model().zero_shot(img, {"a", "b"}, {"{} \xfe"}); }).find("template 0"), std::string::npos);
  // A 3-D cv::Mat, float pixels that are NaN or outside [0, 1], integer embeddings.
  const int sz[3] = {4, 4, 4};
  EXPECT_NE(error_of([&] { model().embed_image(cv::Mat(3, sz, CV_8UC3, cv::Scalar(0))); }).find("3-dimensional"), std::string::npos);
  cv::Mat nan_img(8, 8, CV_32FC3, cv::Scalar(0.5, 0.5, 0.5));
  nan_img.at<cv::Vec3f>(2, 2)[1] = std::nanf("");
  EXPECT_NE(error_of([&] { model().embed_image(nan_img); }).find("NaN"), std::string::npos);
  EXPECT_NE(error_of([&] { model().embed_image(cv::Mat(8, 8, CV_32FC3, cv::Scalar(200, 10, 3))); }).find("[0, 1]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { model().zero_shot(torch::ones({1, 128}, torch::kLong), {"a", "b"}); }).find("floating"),
            std::string::npos);
  // zero_shot normalises its input: scaled embeddings give the same probabilities.
  EXPECT_LT(max_diff(model().zero_shot(img * 1000, {"a", "b"}), model().zero_shot(img, {"a", "b"})), 1e-6);
}

TEST(Api, BadInputIsAFlorenceErrorNamingIt) {
  florence::ModelOptions o;
  EXPECT_NE(error_of([&] { florence::Model::load(o); }).find("checkpoint is empty"), std::string::npos);
  o.checkpoint = (fixture().root / "nope.safetensors").string();
  EXPECT_NE(error_of([&] { florence::Model::load(o); }).find("nope.safetensors"), std::string::npos);
  o.checkpoint = fixture().ckpt;
  o.device = "toaster";
  EXPECT_NE(error_of([&] { florence::Model::load(o); }).find("toaster"), std::string::npos);

  const fs::path broken = fixture().root / "broken.png";
  { std::ofstream(broken) << "not a png"; }
  EXPECT_NE(error_of([&] { model().embed_image_files({broken.string()}); }).find("broken.png"), std::string::npos);
  EXPECT_NE(error_of([&] { model().embed_image_files({"/no/such/file.png"}); }).find("/no/such/file.png"), std::string::npos);
  EXPECT_NE(error_of([&] { model().embed_image_files({}); }).find("no paths"), std::string::npos);
  EXPECT_NE(error_of([&] { model().embed_image_bytes("xx", 2); }).find("embed_image_bytes"), std::string::npos);
  EXPECT_NE(error_of([&] { model().embed_image(cv::Mat()); }).find("empty"), std::string::npos);
  const uint8_t px[3] = {1, 2, 3};
  EXPECT_NE(error_of([&] { model().embed_rgb(nullptr, 1, 1); }).find("null"), std::string::npos);
  EXPECT_NE(error_of([&] { model().embed_rgb(px, 0, 1); }).find("must be >= 1"), std::string::npos);
  EXPECT_NE(error_of([&] { model().embed_rgb(px, 2, 1, 3); }).find("stride"), std::string::npos);
  EXPECT_NE(error_of([&] { model().embed_texts({}); }).find("no texts"), std::string::npos);
  EXPECT_NE(error_of([&] { model().embed_texts({std::string("\xff\xfe")}); }).find("UTF-8"), std::string::npos);

  const torch::Tensor img = model().embed_image(ts::picture(1));
  EXPECT_NE(error_of([&] { model().zero_shot(img, {"one"}); }).find("at least 2"), std::string::npos);
  EXPECT_NE(error_of([&] { model().zero_shot(img, {"a", "a"}); }).find("given twice"), std::string::npos);
  EXPECT_NE(error_of([&] { model().zero_shot(img, {"a", "b"}, {"no placeholder"}); }).find("{}"), std::string::npos);
  EXPECT_NE(error_of([&] { model().zero_shot(torch::zeros({1, 5}), {"a", "b"}); }).find("[1, 5]"), std::string::npos);
  EXPECT_NE(error_of([&] { florence::similarity(img, torch::zeros({2, 3})); }).find("[2, 3]"), std::string::npos);

  EXPECT_NE(error_of([&] { florence::ImageIndex::open((fixture().root / "no-index").string()); }).find("no-index"),
            std::string::npos);
  EXPECT_NE(error_of([] { florence::set_log_level("loud"); }).find("unknown level 'loud'"), std::string::npos);
  EXPECT_EQ(error_of([] { florence::set_log_level("warn"); }), "no error");
  florence::set_log_level("info");
}

}  // namespace test_api
