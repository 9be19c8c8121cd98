#pragma once
// `florence serve`: an HTTP/JSON service over one model and one or more image indices, on
// cpp-httplib (Debian libcpp-httplib-dev 0.11; blocking sockets, a thread pool of handlers).
//
//   POST /knn       {"text" | "image" (base64) | "embedding" [D numbers] | "id" (a stored image),
//                    "k": 10, "index": NAME, "dedup": 0..1}  -> {"index", "k", "results": [...], "took_ms"}
//   POST /embed     {"texts": [...], "images": [base64...]}   -> {"dim", "text_embeddings", "image_embeddings"}
//   POST /classify  {"image": base64, "labels": [...], "templates": [...]}
//                    -> {"labels", "probs", "cosine", "temperature"} (softmax over labels of tau * cosine)
//   GET  /indices   the loaded indices and the model;   GET /health;   GET /metrics (Prometheus text)
//   GET  /images/NAME/ID, /images/ID   the stored thumbnail of an indexed image (default index: the first)
//   GET  /          the search page (page.html, compiled in)
// Errors are JSON {"error": "..."} with 400 (bad JSON, unknown field, bad base64, not an image,
// wrong embedding size, k out of range), 404 (unknown route, image, or index), 405 (wrong
// method), 413 (body or image pixels over the limit), 503 (model queue full; Retry-After: 1),
// 500 (anything unexpected); the server keeps serving. Only thumbnails stored inside the index
// folders are ever served: /images/ takes an index name and a numeric row id, never a path.
// Model calls of concurrent requests are batched (batcher.h).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "florence/search/batcher.h"

namespace florence::eval {
struct EvalModel;
}

namespace florence::search {

class Metrics;
class SearchIndex;

struct ServeOptions {
  std::vector<std::string> indices;       ///< index folders, each "DIR" or "NAME=DIR"; the first is the default
  std::string host = "127.0.0.1";         ///< bind address (loopback unless told otherwise)
  int port = 8080;                        ///< 0 = any free port
  int threads = 8;                        ///< HTTP handler threads (request parsing, image decoding, FAISS search)
  BatcherOptions batch;                   ///< model batching and queue bound
  int64_t max_body_bytes = int64_t(8) << 20;   ///< larger requests get 413
  int64_t max_pixels = int64_t(4096) * 4096;   ///< decoded image pixels per request image
  int64_t max_k = 1000;                   ///< largest k of /knn
  int64_t max_texts = 256;                ///< texts per /embed
  int64_t max_images = 16;                ///< images per /embed
  int64_t max_labels = 100;               ///< labels per /classify
  double timeout_seconds = 60;            ///< a request waiting longer for the model gets 503
  /// Seconds a connection may take to send the next part of a request (and to take a response)
  /// before it is closed. A stalled client holds one handler thread for at most this long.
  double io_timeout_seconds = 10;
  /// Seconds an idle keep-alive connection (between requests) keeps its handler thread.
  int keep_alive_seconds = 5;
};

class Server {
 public:
  /// Opens the indices (SearchIndex::open) and checks that each was embedded by a model with
  /// this model's embedding size (a different checkpoint is logged as a warning). Throws
  /// florence::Error on an index that cannot be opened, duplicate names, or a dimension mismatch.
  Server(eval::EvalModel& model, ServeOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Binds host:port (port 0: a free port) and returns the port. Throws florence::Error when the
  /// address cannot be bound.
  int bind();
  /// Serves until stop() is called (from another thread or a signal watcher). bind() first.
  void listen();
  void stop();
  int port() const;
  const Metrics& metrics() const;
  /// The JSON answer of GET /indices.
  nlohmann::json indices_json() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// `florence serve`: Server + bind + "listening on http://HOST:PORT" on stdout, serving until
/// SIGINT / SIGTERM (then it finishes the requests in flight and returns).
void serve(eval::EvalModel& model, const ServeOptions& options);

/// The search page (page.html, embedded at build time).
const std::string& search_page();

}  // namespace florence::search
