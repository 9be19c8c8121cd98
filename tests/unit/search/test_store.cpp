// The file formats of an image index: .npy (against numpy itself), the index folder (chunks,
// manifest, row lookup), thumbnails, base64 (RFC 4648 test vectors) and the Prometheus text.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/search/metrics.h"
#include "florence/search/npy.h"
#include "florence/search/query.h"
#include "florence/search/store.h"
#include "florence/search/thumbnail.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_store {

using namespace florence;
using namespace florence::search;
namespace fs = std::filesystem;

namespace {

fs::path tmp(const std::string& name) {
  const fs::path p = fs::path(FLORENCE_TEST_TMP) / "unit_search_store" / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

int sh(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return rc == -1 ? -1 : (rc >> 8);
}

std::vector<uint8_t> encode(const cv::Mat& bgr, const std::string& ext) {
  std::vector<uint8_t> out;
  cv::imencode(ext, bgr, out);
  return out;
}

}  // namespace

TEST(Npy, NumpyReadsWhatWeWriteAndWeReadWhatNumpyWrites) {
  const fs::path d = tmp("npy");
  torch::manual_seed(3);
  const torch::Tensor a = torch::randn({5, 7});
  write_npy((d / "ours.npy").string(), a);
  // numpy's own reader: same shape and values (printed with repr precision).
  const std::string py = std::string(FLORENCE_PYTHON) + " -c \"import numpy as np; a = np.load('" + (d / "ours.npy").string() +
                         "'); assert a.dtype == np.float32 and a.shape == (5, 7), (a.dtype, a.shape); "
                         "np.save('" + (d / "back.npy").string() + "', a.astype(np.float64) * 2); "
                         "np.save('" + (d / "vec.npy").string() + "', a[1]); "
                         "np.lib.format.write_array(open('" + (d / "v2.npy").string() + "', 'wb'), a, version=(2, 0)); "
                         "np.save('" + (d / "fortran.npy").string() + "', np.asfortranarray(a)); "
                         "np.save('" + (d / "ints.npy").string() + "', np.arange(6).reshape(2, 3))\"";
  ASSERT_EQ(sh(py), 0) << py;
  EXPECT_TRUE(torch::allclose(read_npy((d / "back.npy").string()), a * 2, 0, 1e-6));  // float64 -> float32
  EXPECT_TRUE(torch::equal(read_npy((d / "vec.npy").string()), a[1]));
  EXPECT_TRUE(torch::equal(read_npy((d / "v2.npy").string()), a));
  EXPECT_TRUE(torch::equal(read_npy((d / "ours.npy").string()), a));
  // Header: data aligned at 64 bytes, as numpy writes it.
  const NpyHeader h = read_npy_header((d / "ours.npy").string());
  EXPECT_EQ(h.data_offset % 64, 0);
  EXPECT_EQ(h.shape, (std::vector<int64_t>{5, 7}));
  std::vector<float> row(7);
  read_npy_row((d / "ours.npy").string(), h, 3, row.data());
  for (int j = 0; j < 7; ++j) EXPECT_EQ(row[size_t(j)], a[3][j].item<float>());
  EXPECT_THROW(read_npy_row((d / "ours.npy").string(), h, 5, row.data()), Error);
  // Refused, with the file named.
  EXPECT_THROW(read_npy((d / "fortran.npy").string()), Error);
  try {
    read_npy((d / "ints.npy").string());
    FAIL() << "int64 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ints.npy"), std::string::npos) << e.what();
  }
  core::write_text_atomic(d / "junk.npy", "not numpy at all");
  EXPECT_THROW(read_npy((d / "junk.npy").string()), Error);
  // Truncated data.
  std::string bytes = core::read_text_file(d / "ours.npy");
  core::write_text_atomic(d / "cut.npy", bytes.substr(0, bytes.size() - 4));
  EXPECT_THROW(read_npy((d / "cut.npy").string()), Error);
}

TEST(IndexStore, ChunksRowsAndEmbeddingsRoundTrip) {
  const fs::path d = tmp("store") / "idx";
  IndexStore s = IndexStore::create(d.string(), 4, {{"model", "test"}, {"checkpoint", "/x.safetensors"}});
  EXPECT_THROW(IndexStore::create(d.string(), 4, {}), Error);  // already an index
  torch::Tensor e0 = torch::nn::functional::normalize(torch::randn({3, 4}), torch::nn::functional::NormalizeFuncOptions().dim(1));
  std::vector<ImageRow> r0(3);
  for (int i = 0; i < 3; ++i) {
    r0[size_t(i)].key = "k" + std::to_string(i);
    r0[size_t(i)].source = "shard.tar";
    r0[size_t(i)].caption = "caption " + std::to_string(i);
    r0[size_t(i)].width = 10 + i;
    r0[size_t(i)].height = 20;
  }
  r0[1].thumb_offset = 0;
  r0[1].thumb_size = 5;
  r0[1].thumb_type = "image/png";
  r0[2].meta = {{"category", "animals"}};
  s.append_chunk(e0, r0, "abcde", "shard shard.tar", {{"bad_image", 2}});
  s.append_chunk(torch::zeros({0, 4}), {}, "", "empty", {});  // a chunk whose images were all bad
  torch::Tensor e2 = torch::eye(4).slice(0, 0, 2);
  std::vector<ImageRow> r2(2);
  r2[0].key = "a";
  r2[1].key = "b";
  s.append_chunk(e2, r2, "", "files", {});
  EXPECT_THROW(s.append_chunk(torch::zeros({2, 3}), r2, "", "bad", {}), Error);  // wrong dim

  IndexStore o = IndexStore::open(d.string());
  EXPECT_EQ(o.rows(), 5);
  EXPECT_EQ(o.chunks().size(), 3u);
  EXPECT_EQ(o.chunks()[2].first_row, 3);
  EXPECT_EQ(o.chunks()[0].skipped["bad_image"], 2);
  EXPECT_EQ(o.chunk_of(2), 0);
  EXPECT_EQ(o.chunk_of(3), 2);  // skips the empty chunk 1
  EXPECT_THROW(o.chunk_of(5), Error);
  EXPECT_TRUE(torch::equal(o.load_embeddings(), torch::cat({e0, e2}, 0)));
  EXPECT_TRUE(torch::equal(o.load_embeddings(4), e2.slice(0, 1)));
  const auto rows = o.load_rows();
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[1].caption, "caption 1");
  EXPECT_EQ(rows[1].thumb_type, "image/png");
  EXPECT_EQ(rows[2].meta["category"], "animals");
  EXPECT_EQ(rows[4].key, "b");
  EXPECT_EQ(rows[4].chunk, 2);
  std::vector<float> v(4);
  o.read_embedding(4, v.data());
  EXPECT_EQ(v, (std::vector<float>{0, 1, 0, 0}));
  // The .npy of chunk 0 is numpy's too.
  EXPECT_EQ(sh(std::string(FLORENCE_PYTHON) + " -c \"import numpy as np; assert np.load('" + o.embeddings_path(0) +
               "').shape == (3, 4)\""),
            0);

  // A manifest whose row count disagrees with its chunks is refused, naming the file.
  nlohmann::json m = core::read_json_file(d / "index.json");
  m["rows"] = 7;
  core::write_text_atomic(d / "index.json", m.dump());
  try {
    IndexStore::open(d.string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("index.json"), std::string::npos) << e.what();
  }
  // Numbers no integer can hold (before: an unchecked float-to-int cast, undefined behaviour) are
  // refused with the field named.
  for (const char* field : {"rows", "dim"}) {
    nlohmann::json h = m;
    h[field] = 1e300;
    core::write_text_atomic(d / "index.json", h.dump());
    try {
      IndexStore::open(d.string());
      ADD_FAILURE() << field;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("\"") + field + "\": 1e+300 is not an integer in range"),
                std::string::npos)
          << e.what();
    }
  }
  {  // rows whose sum overflows int64 (before: "index info" printed a negative image count), a dim no
     // model has
    nlohmann::json h = m;
    h["chunks"][0]["rows"] = 9000000000000000000LL;
    h["chunks"][1]["first_row"] = 9000000000000000000LL;
    h["chunks"][1]["rows"] = 9000000000000000000LL;
    core::write_text_atomic(d / "index.json", h.dump());
    EXPECT_THROW(IndexStore::open(d.string()), Error);
    h = m;
    h["dim"] = 1000000000;
    core::write_text_atomic(d / "index.json", h.dump());
    EXPECT_THROW(IndexStore::open(d.string()), Error);
  }
  {
    nlohmann::json h = m;
    h["chunks"][0]["rows"] = 3.5;
    core::write_text_atomic(d / "index.json", h.dump());
    EXPECT_THROW(IndexStore::open(d.string()), Error);
  }
  // A metadata file with a missing row.
  m["rows"] = 5;
  core::write_text_atomic(d / "index.json", m.dump());
  core::write_text_atomic(o.metadata_path(2), "{\"id\": 3, \"key\": \"a\", \"source\": \"\"}\n");
  EXPECT_THROW(IndexStore::open(d.string()).load_rows(), Error);
  EXPECT_THROW(IndexStore::open((d / "nope").string()), Error);
}

TEST(Thumbnail, KeepsSmallImagesResizesLargeOnesAndNeverThrows) {
  cv::Mat small(40, 30, CV_8UC3, cv::Scalar(10, 200, 30));
  const auto png = encode(small, ".png");
  Thumbnail t = make_thumbnail(png, 64, 1 << 20);
  EXPECT_EQ(t.mime, "image/png");
  EXPECT_EQ(t.width, 30);
  EXPECT_EQ(t.height, 40);
  EXPECT_EQ(t.bytes, std::string(png.begin(), png.end()));  // kept as it is

  cv::Mat big(300, 400, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::circle(big, {200, 150}, 100, cv::Scalar(255, 255, 255), -1);
  const auto jpg = encode(big, ".jpg");
  t = make_thumbnail(jpg, 100, 1 << 20);
  EXPECT_EQ(t.mime, "image/jpeg");
  EXPECT_EQ(t.width, 400);
  EXPECT_EQ(t.height, 300);
  cv::Mat back = cv::imdecode(std::vector<uint8_t>(t.bytes.begin(), t.bytes.end()), cv::IMREAD_COLOR);
  ASSERT_FALSE(back.empty());
  EXPECT_EQ(back.cols, 100);
  EXPECT_EQ(back.rows, 75);
  EXPECT_GT(back.at<cv::Vec3b>(37, 50)[0], 200);  // the circle's centre stays white
  EXPECT_LT(back.at<cv::Vec3b>(2, 2)[0], 40);

  // A BMP is not shown by every browser: re-encoded even when small.
  t = make_thumbnail(encode(small, ".bmp"), 64, 1 << 20);
  EXPECT_EQ(t.mime, "image/jpeg");
  // Over the pixel limit or not an image: no thumbnail, no exception.
  t = make_thumbnail(jpg, 100, 1000);
  EXPECT_TRUE(t.bytes.empty());
  const std::vector<uint8_t> junk{'n', 'o', 'p', 'e'};
  t = make_thumbnail(junk, 100, 1 << 20);
  EXPECT_TRUE(t.bytes.empty());
  EXPECT_EQ(image_mime(junk.data(), junk.size()), "");
}

TEST(Base64, Rfc4648VectorsDataUrlsAndBadInput) {
  auto s = [](const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); };
  EXPECT_EQ(s(decode_base64("Zg==")), "f");
  EXPECT_EQ(s(decode_base64("Zm8=")), "fo");
  EXPECT_EQ(s(decode_base64("Zm9v")), "foo");
  EXPECT_EQ(s(decode_base64("Zm9vYg==")), "foob");
  EXPECT_EQ(s(decode_base64("Zm9vYmE=")), "fooba");
  EXPECT_EQ(s(decode_base64("Zm9vYmFy")), "foobar");
  EXPECT_EQ(s(decode_base64("Zm9v\nYmFy")), "foobar");
  EXPECT_EQ(s(decode_base64("data:image/png;base64,Zm9vYmFy")), "foobar");
  EXPECT_EQ(decode_base64("AP8A").size(), 3u);
  for (const char* bad : {"", "Zm9", "Zm9v!mFy", "Zg=a", "Z===", "data:image/png,Zm9v", "=Zg="}) {
    EXPECT_THROW(decode_base64(bad), Error) << bad;
  }
}

TEST(Metrics, PrometheusTextWithCumulativeBuckets) {
  Metrics m;
  m.observe_request("/knn", 200, 0.004);
  m.observe_request("/knn", 200, 0.03);
  m.observe_request("/knn", 400, 0.0001);
  m.observe_request("/images/idx/3", 200, 0.002);
  m.observe_request("/../../etc/passwd", 404, 0.0001);
  m.observe_batch(3, 0.01);
  m.count_rejection();
  EXPECT_EQ(m.requests("/knn", 200), 2);
  EXPECT_EQ(m.requests("/images", 200), 1);
  EXPECT_EQ(m.requests("other", 404), 1);
  const std::string t = m.render({{"florence_index_vectors{index=\"a\"}", "Vectors.", 5}, {"florence_index_vectors{index=\"b\"}", "Vectors.", 40}});
  EXPECT_NE(t.find("florence_http_requests_total{route=\"/knn\",code=\"200\"} 2\n"), std::string::npos) << t;
  EXPECT_NE(t.find("florence_http_requests_total{route=\"other\",code=\"404\"} 1\n"), std::string::npos);
  // /knn latencies 0.0001, 0.004, 0.03: cumulative counts per bound.
  EXPECT_NE(t.find("florence_http_request_duration_seconds_bucket{route=\"/knn\",le=\"0.001\"} 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("florence_http_request_duration_seconds_bucket{route=\"/knn\",le=\"0.005\"} 2\n"), std::string::npos);
  EXPECT_NE(t.find("florence_http_request_duration_seconds_bucket{route=\"/knn\",le=\"0.05\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("florence_http_request_duration_seconds_bucket{route=\"/knn\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("florence_http_request_duration_seconds_count{route=\"/knn\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("florence_model_batch_items_bucket{le=\"2\"} 0\n"), std::string::npos);
  EXPECT_NE(t.find("florence_model_batch_items_bucket{le=\"4\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("florence_model_queue_rejections_total 1\n"), std::string::npos);
  // One HELP/TYPE header for the two gauges of one name.
  EXPECT_EQ(t.find("# TYPE florence_index_vectors gauge"), t.rfind("# TYPE florence_index_vectors gauge"));
  // Whole numbers print as integers ("40", not %g's shortest "4e+01").
  EXPECT_NE(t.find("florence_index_vectors{index=\"b\"} 40\n"), std::string::npos) << t;
  EXPECT_EQ(t.find("e+0"), std::string::npos) << t;
}

}  // namespace test_store
