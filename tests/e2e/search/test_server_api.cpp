// `florence serve` in process: every route with good requests (values checked against the
// library and the stored embeddings), hostile requests (bad JSON, unknown fields, bad base64,
// non-images, oversized bodies and images, path tricks, wrong methods, a full queue) answered
// with 4xx/503 JSON while the server keeps serving, and a short load test (16 keep-alive clients,
// zero errors, no memory growth).
#include <gtest/gtest.h>
#include <httplib.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <torch/torch.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "e2e/search/fixtures.h"
#include "florence/eval/embed.h"
#include "florence/eval/encode.h"
#include "florence/search/builder.h"
#include "florence/search/metrics.h"
#include "florence/search/searcher.h"
#include "florence/search/server.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_server_api {

using namespace florence;
using namespace florence::search;
namespace ts = florence::test::search;
namespace fs = std::filesystem;

namespace {

// Standard base64 (RFC 4648, padded) by OpenSSL's EVP_EncodeBlock: an encoder independent of the
// server's decoder (cpp-httplib 0.11's compiled library does not export its own).
std::string b64(const std::vector<uint8_t>& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes.data(), int(bytes.size()));
  out.resize(size_t(n));
  return out;
}

nlohmann::json body_json(const httplib::Result& r) { return nlohmann::json::parse(r->body); }

struct Running {
  std::unique_ptr<Server> server;
  std::thread thread;
  int port = 0;
  void start(eval::EvalModel& m, ServeOptions o) {
    o.port = 0;
    server = std::make_unique<Server>(m, o);
    port = server->bind();
    thread = std::thread([this] { server->listen(); });
    httplib::Client c("127.0.0.1", port);
    for (int i = 0; i < 100 && !c.Get("/health"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  void stop() {
    if (!server) return;
    server->stop();
    thread.join();
    server.reset();
  }
};

}  // namespace

class ServeApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const fs::path root = ts::scratch("e2e_search_api");
    ts::write_shards(root / "shards", 40, 16);
    eval::LoadOptions lo;
    lo.checkpoint = ts::tiny_checkpoint(root);
    model_ = new eval::EvalModel(eval::load_eval_model(lo));
    BuildOptions bo;
    bo.inputs = {(root / "shards").string()};
    bo.progress = 0;
    bo.handle_signals = false;
    build_index(*model_, (root / "pictures").string(), bo);
    index_ = SearchIndex::open((root / "pictures").string());
    dir_ = (root / "pictures").string();
    embeds_ = new torch::Tensor(index_->store().load_embeddings());
    ServeOptions o;
    o.indices = {(root / "pictures").string(), "second=" + (root / "pictures").string()};
    o.threads = 32;
    main_.start(*model_, o);
    ServeOptions tight = o;
    tight.indices = {(root / "pictures").string()};
    tight.max_body_bytes = 64 * 1024;
    tight.max_pixels = 10000;
    tight.batch = {1, 1};
    tight.threads = 40;
    tight_.start(*model_, tight);
  }
  static void TearDownTestSuite() {
    main_.stop();
    tight_.stop();
    delete embeds_;
    index_.reset();
    delete model_;
  }
  static httplib::Result post(const std::string& path, const std::string& body, Running& r = main_) {
    httplib::Client c("127.0.0.1", r.port);
    c.set_read_timeout(60, 0);
    return c.Post(path.c_str(), body, "application/json");
  }
  static httplib::Result get(const std::string& path, Running& r = main_) {
    httplib::Client c("127.0.0.1", r.port);
    return c.Get(path.c_str());
  }
  static void expect_error(const httplib::Result& r, int status, const std::string& words) {
    ASSERT_TRUE(r) << "no response";
    EXPECT_EQ(r->status, status) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(r->body)) << r->body;
    ASSERT_TRUE(j.contains("error")) << r->body;
    EXPECT_NE(j["error"].get<std::string>().find(words), std::string::npos) << j["error"];
  }
  static inline eval::EvalModel* model_ = nullptr;
  static inline std::shared_ptr<SearchIndex> index_;
  static inline std::string dir_;
  static inline torch::Tensor* embeds_ = nullptr;
  static inline Running main_, tight_;
};

TEST_F(ServeApi, HealthIndicesPageAndMetrics) {
  auto h = get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(body_json(h)["status"], "ok");
  auto i = get("/indices");
  ASSERT_TRUE(i);
  const nlohmann::json j = body_json(i);
  ASSERT_EQ(j["indices"].size(), 2u);
  EXPECT_EQ(j["indices"][0]["name"], "pictures");
  EXPECT_EQ(j["indices"][1]["name"], "second");
  EXPECT_EQ(j["indices"][0]["rows"], 40);
  EXPECT_EQ(j["indices"][0]["knn"]["key"], "Flat");
  EXPECT_EQ(j["default"], "pictures");
  auto p = get("/");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 200);
  EXPECT_NE(p->body.find("<title>florence search</title>"), std::string::npos);
  EXPECT_NE(p->get_header_value("Content-Security-Policy").find("default-src 'none'"), std::string::npos);
  EXPECT_EQ(p->get_header_value("X-Content-Type-Options"), "nosniff");
  auto m = get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->get_header_value("Content-Type").find("text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(m->body.find("florence_http_requests_total{route=\"/health\",code=\"200\"}"), std::string::npos) << m->body;
  EXPECT_NE(m->body.find("florence_index_vectors{index=\"second\"} 40"), std::string::npos);
  EXPECT_NE(m->body.find("process_resident_memory_bytes "), std::string::npos);
}

TEST_F(ServeApi, KnnByTextImageEmbeddingAndIdMatchTheLibrary) {
  const torch::Tensor t = eval::encode_texts(*model_, {"a red disc"});
  const torch::Tensor ref = torch::matmul(*embeds_, t[0]);  // [40] exact scores
  auto r = post("/knn", R"({"text": "a red disc", "k": 5})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  nlohmann::json j = body_json(r);
  ASSERT_EQ(j["results"].size(), 5u);
  const auto top = std::get<1>(torch::topk(ref, 5));
  for (int i = 0; i < 5; ++i) {
    const auto& h = j["results"][size_t(i)];
    EXPECT_EQ(h["id"].get<int64_t>(), top[i].item<int64_t>()) << i;
    EXPECT_NEAR(h["score"].get<double>(), ref[h["id"].get<int64_t>()].item<double>(), 1e-4);
    EXPECT_EQ(h["image"], "/images/pictures/" + std::to_string(h["id"].get<int64_t>()));
    EXPECT_EQ(h["caption"], index_->row(h["id"]).caption);
  }
  // By a stored embedding, by id, and by the image itself: that image first, cosine 1.
  std::vector<float> e17 = index_->embedding(17);
  r = post("/knn", nlohmann::json{{"embedding", e17}, {"k", 3}}.dump());
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body_json(r)["results"][0]["id"], 17);
  EXPECT_NEAR(body_json(r)["results"][0]["score"].get<double>(), 1.0, 1e-4);
  r = post("/knn", R"({"id": 17, "k": 3, "index": "second"})");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body_json(r)["index"], "second");
  EXPECT_EQ(body_json(r)["results"][0]["id"], 17);
  r = post("/knn", nlohmann::json{{"image", b64(ts::png(ts::picture(17)))}, {"k", 3}}.dump());
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body_json(r)["results"][0]["key"], "img0017");
  EXPECT_NEAR(body_json(r)["results"][0]["score"].get<double>(), 1.0, 1e-4);
  // A data: URL (what the page sends) works the same.
  r = post("/knn", nlohmann::json{{"image", "data:image/png;base64," + b64(ts::png(ts::picture(17)))}, {"k", 1}}.dump());
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body_json(r)["results"][0]["key"], "img0017");
  // dedup: the near-duplicate threshold 0.999999 drops nothing here (distinct pictures), k is kept.
  r = post("/knn", R"({"id": 3, "k": 40, "dedup": 0.999999})");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(body_json(r)["results"].size(), 40u);
  // dedup with a threshold below every pairwise cosine keeps only the first result.
  const double min_cos = torch::matmul(*embeds_, embeds_->t()).min().item<double>();
  r = post("/knn", nlohmann::json{{"id", 3}, {"k", 10}, {"dedup", std::max(0.0, min_cos - 1e-3)}}.dump());
  ASSERT_EQ(r->status, 200);
  if (min_cos > 1e-3) {
    EXPECT_EQ(body_json(r)["results"].size(), 1u) << "min pairwise cosine " << min_cos;
  }
}

TEST_F(ServeApi, EmbedClassifyAndThumbnails) {
  auto r = post("/embed", nlohmann::json{{"texts", {"a disc", "a square"}}, {"images", {b64(ts::png(ts::picture(4)))}}}.dump());
  ASSERT_EQ(r->status, 200) << r->body;
  nlohmann::json j = body_json(r);
  EXPECT_EQ(j["dim"], model_->embed_dim());
  const torch::Tensor t = eval::encode_texts(*model_, {"a disc", "a square"});
  for (int i = 0; i < 2; ++i)
    for (int d = 0; d < model_->embed_dim(); ++d)
      ASSERT_NEAR(j["text_embeddings"][size_t(i)][size_t(d)].get<double>(), t[i][d].item<double>(), 1e-5);
  std::vector<float> e4 = index_->embedding(4);
  for (int d = 0; d < model_->embed_dim(); ++d) ASSERT_NEAR(j["image_embeddings"][0][size_t(d)].get<double>(), e4[size_t(d)], 1e-5);

  // classify equals the library's `florence classify` for the same image and labels.
  const fs::path f = fs::path(FLORENCE_TEST_TMP) / "e2e_search_api" / "seven.png";
  cv::imwrite(f.string(), ts::picture(7));
  const std::vector<std::string> labels{"disc", "square", "triangle"};
  const eval::ClassifyResult ref = eval::classify(*model_, eval::image_inputs({f.string()}), labels);
  r = post("/classify", nlohmann::json{{"image", b64(ts::png(ts::picture(7)))}, {"labels", labels}}.dump());
  ASSERT_EQ(r->status, 200) << r->body;
  j = body_json(r);
  double sum = 0;
  for (int l = 0; l < 3; ++l) {
    EXPECT_NEAR(j["probs"][size_t(l)].get<double>(), ref.probs[0][l].item<double>(), 1e-5);
    EXPECT_NEAR(j["cosine"][size_t(l)].get<double>(), ref.cosine[0][l].item<double>(), 1e-5);
    sum += j["probs"][size_t(l)].get<double>();
  }
  EXPECT_NEAR(sum, 1.0, 1e-9);

  // Thumbnails: the stored bytes (small PNGs are kept as they are), for both routes.
  auto img = get("/images/pictures/12");
  ASSERT_TRUE(img);
  ASSERT_EQ(img->status, 200);
  EXPECT_EQ(img->get_header_value("Content-Type"), "image/png");
  const auto png12 = ts::png(ts::picture(12));
  EXPECT_EQ(img->body, std::string(png12.begin(), png12.end()));
  EXPECT_EQ(get("/images/12")->body, img->body);
  EXPECT_EQ(get("/images/second/12")->body, img->body);
}

TEST_F(ServeApi, HostileRequestsGetJsonErrorsAndTheServerKeepsServing) {
  expect_error(post("/knn", "{\"text\": "), 400, "not valid JSON");
  expect_error(post("/knn", ""), 400, "empty");
  expect_error(post("/knn", "[1, 2]"), 400, "JSON object");
  expect_error(post("/knn", R"({"text": "x", "color": "red"})"), 400, "unknown field 'color'");
  expect_error(post("/knn", R"({"k": 3})"), 400, "exactly one");
  expect_error(post("/knn", R"({"text": "x", "id": 3})"), 400, "exactly one");
  expect_error(post("/knn", R"({"text": "x", "k": 0})"), 400, "'k'");
  expect_error(post("/knn", R"({"text": "x", "k": 100000})"), 400, "'k'");
  expect_error(post("/knn", R"({"text": "x", "k": "5"})"), 400, "integer");
  expect_error(post("/knn", R"({"text": 42})"), 400, "string");
  expect_error(post("/knn", R"({"text": "   "})"), 400, "empty");
  expect_error(post("/knn", "{\"text\": \"bad \xff\xfe utf8\"}"), 400, "not valid JSON");
  expect_error(post("/knn", R"({"image": "not base64!!"})"), 400, "base64");
  expect_error(post("/knn", nlohmann::json{{"image", b64({'h', 'e', 'l', 'l', 'o', '!'})}}.dump()), 400, "not a decodable image");
  expect_error(post("/knn", R"({"embedding": [1, 2, 3]})"), 400, "array of 128 numbers");
  expect_error(post("/knn", nlohmann::json{{"embedding", std::vector<float>(128, 0.f)}}.dump()), 400, "zero vector");
  // Integers above INT64_MAX are reported as sent (before: wrapped, "got -1").
  expect_error(post("/knn", R"({"text": "x", "k": 18446744073709551615})"), 400, "got 18446744073709551615");
  expect_error(post("/knn", R"({"id": 9223372036854775808})"), 404, "image 9223372036854775808 is not in index");
  {  // finite as a double, out of a float's range (before: an unchecked double-to-float cast)
    std::vector<double> huge(128, 0.5);
    huge[7] = 1e300;
    expect_error(post("/knn", nlohmann::json{{"embedding", huge}}.dump()), 400, "'embedding': 1e+300 is not a finite number in range");
  }
  expect_error(post("/knn", R"({"id": 40})"), 404, "not in index");
  expect_error(post("/knn", R"({"id": -1})"), 404, "not in index");
  expect_error(post("/knn", R"({"id": 1, "index": "nope"})"), 404, "no index named 'nope'");
  expect_error(post("/knn", R"({"id": 1, "dedup": 2})"), 400, "dedup");
  expect_error(post("/embed", R"({})"), 400, "'texts'");
  expect_error(post("/embed", nlohmann::json{{"texts", std::vector<std::string>(300, "x")}}.dump()), 413, "limit");
  expect_error(post("/classify", nlohmann::json{{"image", b64(ts::png(ts::picture(1)))}, {"labels", {"one"}}}.dump()), 400,
               "at least 2");
  expect_error(post("/classify", nlohmann::json{{"image", b64(ts::png(ts::picture(1)))}, {"labels", {"a", "a"}}}.dump()), 400,
               "twice");
  expect_error(post("/classify", nlohmann::json{{"image", b64(ts::png(ts::picture(1)))}, {"labels", {"a", "b"}},
                                                {"templates", {"no placeholder"}}}.dump()),
               400, "templates");
  // Path tricks and unknown images never reach the file system.
  for (const char* p : {"/images/../../etc/passwd", "/images/%2e%2e/%2e%2e/etc/passwd", "/images/pictures/../index.json",
                        "/images/pictures/abc", "/images/pictures/-1", "/images/pictures/40", "/images/pictures/99999999999999999999",
                        "/images/nope/1", "/images/", "/index.json", "/chunks/000000.thumbs"}) {
    auto r = get(p);
    ASSERT_TRUE(r) << p;
    EXPECT_EQ(r->status, 404) << p << ": " << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json") << p;
    EXPECT_EQ(r->body.find("florence-image-index"), std::string::npos) << p;
  }
  expect_error(get("/knn"), 405, "POST");
  expect_error(post("/health", "{}"), 405, "GET");
  {
    httplib::Client c("127.0.0.1", main_.port);
    const auto allow_post = [](const httplib::Result& r) {
      expect_error(r, 405, "POST");
      if (r) EXPECT_EQ(r->get_header_value("Allow"), "POST");
    };
    allow_post(c.Put("/knn", "{}", "application/json"));
    allow_post(c.Delete("/knn"));
    allow_post(c.Options("/knn"));
    expect_error(c.Patch("/indices", "{}", "application/json"), 405, "GET");
    expect_error(c.Post("/images/3", "{}", "application/json"), 405, "GET");
  }
  expect_error(get("/nowhere"), 404, "not found");
  // Raw garbage on a socket: the connection is dropped, the server lives on.
  {
    httplib::Client c("127.0.0.1", main_.port);
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(main_.port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    const char junk[] = "\x16\x03\x01 GARBAGE / HTTP/9\r\n\r\n";
    ASSERT_GT(::send(fd, junk, sizeof junk - 1, 0), 0);
    char buf[256];
    (void)::recv(fd, buf, sizeof buf, 0);
    ::close(fd);
  }
  auto h = get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  // The errors were counted by route and status.
  EXPECT_GE(main_.server->metrics().requests("/knn", 400), 15);
  EXPECT_GE(main_.server->metrics().requests("/images", 404), 5);
}

TEST_F(ServeApi, LimitsGive413AndAFullQueueGives503) {
  // Body over --max-body (64 KiB); the message states the limit.
  expect_error(post("/knn", nlohmann::json{{"text", std::string(100000, 'a')}}.dump(), tight_), 413,
               "larger than the limit of 65536 bytes");
  // A JSON body under the limit sent with curl -d's default type (form-urlencoded) is read as JSON:
  // cpp-httplib's own 8 KiB cap for form bodies does not apply.
  {
    httplib::Client c("127.0.0.1", tight_.port);
    auto r = c.Post("/knn", nlohmann::json{{"text", std::string(20000, 'a')}}.dump(), "application/x-www-form-urlencoded");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
  }
  // A port in use is refused, not shared (no SO_REUSEPORT).
  {
    ServeOptions o;
    o.indices = {dir_};
    o.port = tight_.port;
    Server second(*model_, o);
    try {
      second.bind();
      ADD_FAILURE() << "a second server bound port " << tight_.port;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos) << e.what();
    }
  }
  // An image over --max-pixels (10,000): 200 x 100.
  cv::Mat big(100, 200, CV_8UC3, cv::Scalar(1, 2, 3));
  expect_error(post("/knn", nlohmann::json{{"image", b64(ts::png(big))}}.dump(), tight_), 413, "image");
  // A queue of one job and batches of one item: 24 simultaneous requests of 200 texts each.
  const std::string heavy = nlohmann::json{{"texts", std::vector<std::string>(200, "a picture of a red disc on grass")}}.dump();
  std::atomic<int> ok{0}, busy{0}, other{0};
  std::mutex m;
  std::vector<std::string> others;  // what the unexpected answers were (status or client error)
  std::vector<std::thread> th;
  for (int i = 0; i < 24; ++i)
    th.emplace_back([&] {
      auto r = post("/embed", heavy, tight_);
      if (r && r->status == 200) ok++;
      else if (r && r->status == 503 && r->get_header_value("Retry-After") == "1") busy++;
      else {
        other++;
        std::lock_guard<std::mutex> g(m);
        others.push_back(r ? "status " + std::to_string(r->status) + " " + r->body.substr(0, 120)
                           : "client error " + httplib::to_string(r.error()));
      }
    });
  for (auto& t : th) t.join();
  EXPECT_GE(ok.load(), 1);
  EXPECT_GE(busy.load(), 1);
  std::string what;
  for (const auto& o : others) what += o + "; ";
  EXPECT_EQ(other.load(), 0) << what;
  EXPECT_EQ(get("/health", tight_)->status, 200);
}

TEST_F(ServeApi, StalledUploadsAreDroppedAfterTheIoTimeout) {
  // 2 handler threads, --io-timeout 0.5, --keep-alive 1: two clients that send half a request and
  // stall hold both threads; after 0.5 s each gets 400, after 1 s more without a next request its
  // connection is closed, and the server answers again (with the former fixed 10 s read timeout
  // and 5 s keep-alive, /health stayed unanswered for 15 s).
  Running r;
  ServeOptions o;
  o.indices = {dir_};
  o.threads = 2;
  o.io_timeout_seconds = 0.5;
  o.keep_alive_seconds = 1;
  r.start(*model_, o);
  auto stalled = [&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(r.port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    const std::string part = "POST /knn HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"te";
    EXPECT_GT(::send(fd, part.data(), part.size(), 0), 0);
    return fd;
  };
  const int s1 = stalled(), s2 = stalled();
  const auto t0 = std::chrono::steady_clock::now();
  httplib::Client c("127.0.0.1", r.port);
  c.set_connection_timeout(5, 0);
  c.set_read_timeout(5, 0);
  auto h = c.Get("/health");
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_LT(waited, 3.0) << "the stalled clients held the handler threads past the I/O timeout";
  // The server answered the stalled requests (400: the body never came) and closed the connections.
  for (int fd : {s1, s2}) {
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[1024];
    std::string got;
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) got.append(buf, size_t(n));
    EXPECT_EQ(n, 0) << "the stalled connection was not closed by the server";
    EXPECT_EQ(got.rfind("HTTP/1.1 400", 0), 0u) << got;
    ::close(fd);
  }
  r.stop();
  EXPECT_THROW(Server(*model_, [&] {
                 ServeOptions bad = o;
                 bad.io_timeout_seconds = 0;
                 return bad;
               }()),
               Error);
}

TEST_F(ServeApi, ShortLoadTestHasNoErrorsAndNoMemoryGrowth) {
  // 16 keep-alive clients, 2 x 1,000 requests (3 of 4 by embedding, 1 of 4 by text); the
  // resident memory after the second half may not exceed the first half's by more than 16 MiB.
  const int clients = 16, per_half = 1000;
  std::atomic<int> errors{0};
  std::mutex why_mu;
  std::vector<std::string> why;  // what each failed request got
  auto run_half = [&](int half) {
    std::atomic<int> next{0};
    std::vector<std::thread> th;
    for (int c = 0; c < clients; ++c)
      th.emplace_back([&, c] {
        httplib::Client cl("127.0.0.1", main_.port);
        cl.set_keep_alive(true);
        cl.set_read_timeout(60, 0);
        for (int i = next++; i < per_half; i = next++) {
          const int id = (i * 7 + half) % 40;
          const std::string body = i % 4 == 3 ? nlohmann::json{{"text", "picture number " + std::to_string(id)}, {"k", 10}}.dump()
                                              : nlohmann::json{{"embedding", index_->embedding(id)}, {"k", 10}}.dump();
          auto r = cl.Post("/knn", body, "application/json");
          if (!r || r->status != 200) {
            errors++;
            std::lock_guard<std::mutex> lock(why_mu);
            why.push_back(r ? "status " + std::to_string(r->status) + ": " + r->body : "no response: " + httplib::to_string(r.error()));
          }
        }
      });
    for (auto& t : th) t.join();
  };
  run_half(0);
  const int64_t rss1 = resident_memory_bytes();
  const auto t0 = std::chrono::steady_clock::now();
  run_half(1);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t rss2 = resident_memory_bytes();
  EXPECT_EQ(errors.load(), 0) << (why.empty() ? std::string() : why.front());
  EXPECT_LT(rss2 - rss1, int64_t(16) << 20) << "rss " << rss1 << " -> " << rss2;
  std::cout << "load: " << per_half << " requests by " << clients << " clients in " << secs << " s (" << per_half / secs
            << " req/s); rss " << rss1 / (1 << 20) << " -> " << rss2 / (1 << 20) << " MiB\n";
}

}  // namespace test_server_api
