// Fuzz harness: the HTTP request handling of `florence serve` (search/server.h). The input is sent
// as raw bytes over a real TCP connection to an in-process Server (one florence-nano model with
// random weights and a small BPE vocabulary, one index of six pictures, 4 handler threads), the
// write side is then shut down and the answer read to the end. Findings: a crash or sanitizer
// report in the server (its threads run in this process), no answer within 10 s, an answer that
// is not HTTP, a 500 (the server's "anything unexpected": every bad request must get a 4xx), and a
// server that no longer answers GET /health.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <string_view>
#include <thread>

#include "florence/eval/encode.h"
#include "florence/search/builder.h"
#include "florence/search/server.h"
#include "florence/text/bpe_trainer.h"
#include "fuzz.h"

namespace fuzz_http {

namespace fs = std::filesystem;
using namespace florence;

struct Running {
  std::unique_ptr<eval::EvalModel> model;
  std::unique_ptr<search::Server> server;
  std::thread thread;
  int port = 0;
};

/// The model, the index and the listening server, made on first use and kept for the process.
Running& running() {
  static Running* r = [] {
    spdlog::set_level(spdlog::level::warn);
    const fs::path dir = fs::path(fuzz::scratch_path("http") + ".d");
    fs::remove_all(dir);
    fs::create_directories(dir / "pictures");
    {
      std::ofstream t(dir / "texts.txt");
      for (int i = 0; i < 8; ++i) t << "a photo of a red disc; a green square on blue; picture number " << i << "\n";
    }
    text::BpeTrainerOptions bo;
    bo.vocab_size = 600;
    text::train_bpe({(dir / "texts.txt").string()}, bo, (dir / "vocab.bpe").string());
    for (int i = 0; i < 6; ++i) {
      cv::Mat img(40, 48, CV_8UC3, cv::Scalar(40 * i, 255 - 40 * i, 90));
      cv::circle(img, cv::Point(10 + 5 * i, 20), 6, cv::Scalar(10, 20, 240), -1);
      cv::imwrite((dir / "pictures" / ("p" + std::to_string(i) + ".png")).string(), img);
    }
    auto* run = new Running;
    torch::manual_seed(3);
    eval::LoadOptions lo;
    lo.model = "florence-nano";
    lo.vocab = (dir / "vocab.bpe").string();
    run->model = std::make_unique<eval::EvalModel>(eval::load_eval_model(lo));
    search::BuildOptions b;
    b.inputs = {(dir / "pictures").string()};
    b.progress = 0;
    b.handle_signals = false;
    search::build_index(*run->model, (dir / "index").string(), b);
    search::ServeOptions so;
    so.indices = {"pics=" + (dir / "index").string()};
    so.port = 0;
    so.threads = 4;
    so.max_body_bytes = 256 * 1024;
    so.max_pixels = 512 * 512;
    so.io_timeout_seconds = 0.2;
    run->server = std::make_unique<search::Server>(*run->model, so);
    run->port = run->server->bind();
    run->thread = std::thread([run] { run->server->listen(); });
    run->thread.detach();  // serves until the process ends
    return run;
  }();
  return *r;
}

/// Where the responses in `answer` end when they are all complete (walked by Content-Length), else
/// std::string::npos. Checks each status line on the way. `head_request`: the input holds a HEAD request,
/// whose response carries the Content-Length of the body it leaves out (RFC 9110 §9.3.2), so a
/// response followed directly by the next one, or by the end, may have no body.
size_t complete_responses(const std::string& answer, bool head_request) {
  size_t at = 0;
  while (at < answer.size()) {
    if (answer.size() - at < 12) return std::string::npos;
    fuzz::check(answer.compare(at, 9, "HTTP/1.1 ") == 0, "http: the answer is not an HTTP response");
    const std::string code = answer.substr(at + 9, 3);
    fuzz::check(code[0] >= '1' && code[0] <= '5', "http: malformed status code");
    fuzz::check(code != "500", "http: the server answered 500 (an unexpected exception escaped the handlers)");
    const size_t end = answer.find("\r\n\r\n", at);
    if (end == std::string::npos) return std::string::npos;
    std::string head = answer.substr(at, end - at);
    for (char& c : head) c = char(std::tolower(static_cast<unsigned char>(c)));
    const size_t cl = head.find("\r\ncontent-length: ");
    fuzz::check(cl != std::string::npos, "http: a response without Content-Length");
    const size_t body = end + 4;
    if (head_request && (body == answer.size() || answer.compare(body, 9, "HTTP/1.1 ") == 0)) {
      at = body;
      continue;
    }
    at = body + size_t(std::stoull(head.substr(cl + 18)));
    if (at > answer.size()) return std::string::npos;
  }
  return at;
}

/// Sends `size` bytes to the server and reads what it answers (`head_request`: the input holds a
/// HEAD request, see complete_responses): until it closes the connection, or
/// 20 ms after a read left only complete responses (keep-alive connections stay open), then
/// closes. The server's I/O timeout is 0.2 s, so an incomplete request is answered or dropped
/// well within the 10 s this allows before calling it a hang. Returns the bytes answered.
std::string exchange(const uint8_t* data, size_t size, bool head_request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  fuzz::check(fd >= 0, "http: socket() failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(running().port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  fuzz::check(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "http: the server does not accept connections");
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  size_t sent = 0;
  while (sent < size) {
    const ssize_t w = ::send(fd, data + sent, size - sent, MSG_NOSIGNAL);
    if (w <= 0) break;  // the server may close early (413, 400): what it answered is still read
    sent += size_t(w);
  }
  std::string answer;
  char buf[65536];
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    const bool complete = !answer.empty() && complete_responses(answer, head_request) == answer.size();
    const auto waited = std::chrono::steady_clock::now() - start;
    if (!complete && waited > std::chrono::seconds(10)) {
      ::close(fd);
      fuzz::check(false, "http: no complete answer within 10 s");
    }
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, complete ? 20 : 100);
    if (ready == 0) {
      if (complete) break;
      continue;
    }
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;  // closed (or reset after an early answer)
    answer.append(buf, size_t(n));
  }
  ::close(fd);
  return answer;
}

}  // namespace fuzz_http

FLORENCE_FUZZ_TARGET(http) {
  using namespace fuzz_http;
  const bool head_request = std::string_view(reinterpret_cast<const char*>(data), size).find("HEAD") != std::string_view::npos;
  const std::string answer = exchange(data, size, head_request);
  // A connection closed in the middle of a response is a finding; no answer at all is not (a
  // request line too malformed for HTTP gets the connection closed).
  if (!answer.empty())
    florence::fuzz::check(complete_responses(answer, head_request) == answer.size(), "http: a response was cut off");
  static const std::string health = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  const std::string h = exchange(reinterpret_cast<const uint8_t*>(health.data()), health.size(), false);
  florence::fuzz::check(h.rfind("HTTP/1.1 200", 0) == 0, "http: GET /health fails after the input");
  return 0;
}
