// `florence serve` (see server.h).
#include "florence/search/server.h"

#include <httplib.h>

#include <sys/socket.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <thread>

#include "florence/core/json_get.h"
#include "florence/eval/encode.h"
#include "florence/eval/zero_shot.h"
#include "florence/search/metrics.h"
#include "florence/search/query.h"
#include "florence/search/searcher.h"
#include "florence/text/tokenizer.h"
#include "florence/train/run_state.h"

namespace florence::search {

namespace {

using Clock = std::chrono::steady_clock;

/// An error answered with a given HTTP status.
class HttpError : public Error {
 public:
  HttpError(int status, const std::string& what) : Error(what), status(status) {}
  int status;
};

void send_json(httplib::Response& res, int status, const nlohmann::json& j) {
  res.status = status;
  res.set_content(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
}

// The 413 message for a body over --max-body (from the content reader and from httplib's own check).
std::string body_too_large(int64_t limit) {
  return "the request body is larger than the limit of " + std::to_string(limit) + " bytes (--max-body)";
}

/// The body as a JSON object whose fields are all in `allowed`.
nlohmann::json parse_body(const httplib::Request& req, const std::vector<std::string>& allowed) {
  if (req.body.empty()) throw HttpError(400, "the request body is empty; expected a JSON object");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(req.body);
  } catch (const nlohmann::json::exception& e) {
    throw HttpError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw HttpError(400, "the request body must be a JSON object");
  for (const auto& [k, v] : j.items()) {
    if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) continue;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    throw HttpError(400, "unknown field '" + k + "' (allowed: " + list + ")");
  }
  return j;
}

std::string get_string(const nlohmann::json& j, const std::string& key) {
  if (!j.at(key).is_string()) throw HttpError(400, "'" + key + "' must be a string");
  return j.at(key).get<std::string>();
}

std::vector<std::string> get_strings(const nlohmann::json& j, const std::string& key, int64_t max) {
  const auto& a = j.at(key);
  if (!a.is_array()) throw HttpError(400, "'" + key + "' must be an array of strings");
  if (int64_t(a.size()) > max)
    throw HttpError(413, "'" + key + "' holds " + std::to_string(a.size()) + " items; the limit is " + std::to_string(max));
  std::vector<std::string> out;
  for (const auto& v : a) {
    if (!v.is_string()) throw HttpError(400, "'" + key + "' must be an array of strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

/// A JSON integer as int64, or nullopt for an unsigned value above INT64_MAX (get<int64_t> would
/// wrap it).
std::optional<int64_t> as_int64(const nlohmann::json& v) {
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return v.get<int64_t>();
}

int64_t get_int(const nlohmann::json& j, const std::string& key, int64_t def, int64_t lo, int64_t hi) {
  if (!j.contains(key)) return def;
  const auto& v = j.at(key);
  if (!v.is_number_integer()) throw HttpError(400, "'" + key + "' must be an integer");
  const std::optional<int64_t> x = as_int64(v);
  if (!x || *x < lo || *x > hi)
    throw HttpError(400, "'" + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + v.dump());
  return *x;
}

nlohmann::json rows_json(const torch::Tensor& t) {
  nlohmann::json out = nlohmann::json::array();
  if (!t.defined()) return out;
  auto a = t.accessor<float, 2>();
  for (int64_t i = 0; i < t.size(0); ++i) {
    std::vector<float> r(size_t(t.size(1)));
    for (int64_t j = 0; j < t.size(1); ++j) r[size_t(j)] = a[i][j];
    out.push_back(r);
  }
  return out;
}

const std::set<std::string> kThumbTypes{"image/png", "image/jpeg", "image/gif", "image/webp"};

thread_local Clock::time_point t_request_start;
thread_local bool t_request_started = false;

}  // namespace

struct Server::Impl {
  eval::EvalModel& model;
  ServeOptions opt;
  Metrics metrics;
  std::vector<std::shared_ptr<SearchIndex>> indices;
  std::map<std::string, size_t> by_name;
  std::unique_ptr<ModelBatcher> batcher;
  httplib::Server http;
  int port = -1;
  int listen_fd = -1;  ///< the socket httplib last created (the bound one once bind() succeeds)
  double temperature = 1;

  Impl(eval::EvalModel& m, ServeOptions o) : model(m), opt(std::move(o)) {}

  const SearchIndex& index_of(const nlohmann::json& body) const {
    if (!body.contains("index")) return *indices.front();
    const std::string name = get_string(body, "index");
    auto it = by_name.find(name);
    if (it == by_name.end()) throw HttpError(404, "no index named '" + name + "'");
    return *indices[it->second];
  }

  JobEmbeddings run_job(torch::Tensor ids, torch::Tensor images) {
    std::future<JobEmbeddings> f = batcher->submit(std::move(ids), std::move(images));
    if (f.wait_for(std::chrono::duration<double>(opt.timeout_seconds)) != std::future_status::ready)
      throw HttpError(503, "the model did not answer within " + std::to_string(int(opt.timeout_seconds)) + " s");
    try {
      return f.get();
    } catch (const Error& e) {  // the request was validated: a failing model call is the server's fault
      throw HttpError(500, std::string("the model call failed: ") + e.what());
    }
  }

  torch::Tensor tokenize(const std::vector<std::string>& texts, const std::string& field) {
    if (!model.tokenizer) throw HttpError(400, "this server's model has no vocabulary: text queries are unavailable");
    for (size_t i = 0; i < texts.size(); ++i)
      if (texts[i].find_first_not_of(" \t\r\n") == std::string::npos)
        throw HttpError(400, "'" + field + "'" + (texts.size() > 1 ? "[" + std::to_string(i) + "]" : "") + " is empty");
    try {
      return model.tokenizer->tokenize(texts, model.context_length);
    } catch (const Error& e) {
      throw HttpError(400, "'" + field + "': " + e.what());
    }
  }

  torch::Tensor image_tensor(const nlohmann::json& v, const std::string& field) {
    if (!v.is_string()) throw HttpError(400, "'" + field + "' must be a base64 string");
    std::vector<uint8_t> bytes;
    try {
      bytes = decode_base64(v.get_ref<const std::string&>());
    } catch (const Error& e) {
      throw HttpError(400, "'" + field + "' is not valid base64: " + e.what());
    }
    try {
      return preprocess_image(model, bytes, opt.max_pixels);
    } catch (const TooManyPixels& e) {
      throw HttpError(413, "'" + field + "': " + e.what());
    } catch (const Error& e) {
      throw HttpError(400, "'" + field + "': " + e.what());
    }
  }

  void handle_knn(const httplib::Request& req, httplib::Response& res) {
    const auto t0 = Clock::now();
    const nlohmann::json body = parse_body(req, {"text", "image", "embedding", "id", "k", "index", "dedup"});
    const SearchIndex& idx = index_of(body);
    const int64_t k = get_int(body, "k", 10, 1, opt.max_k);
    double dedup = 0;
    if (body.contains("dedup")) {
      const auto& d = body.at("dedup");
      if (d.is_boolean()) dedup = d.get<bool>() ? 0.96 : 0;
      else if (d.is_number() && d.get<double>() >= 0 && d.get<double>() <= 1) dedup = d.get<double>();
      else throw HttpError(400, "'dedup' must be true/false or a cosine threshold in [0, 1]");
    }
    int given = 0;
    for (const char* f : {"text", "image", "embedding", "id"}) given += body.contains(f) ? 1 : 0;
    if (given != 1) throw HttpError(400, "give exactly one of 'text', 'image', 'embedding', 'id'");
    std::vector<float> q;
    if (body.contains("text")) {
      JobEmbeddings e = run_job(tokenize({get_string(body, "text")}, "text"), {});
      q.assign(e.texts.data_ptr<float>(), e.texts.data_ptr<float>() + e.texts.numel());
    } else if (body.contains("image")) {
      JobEmbeddings e = run_job({}, image_tensor(body.at("image"), "image"));
      q.assign(e.images.data_ptr<float>(), e.images.data_ptr<float>() + e.images.numel());
    } else if (body.contains("embedding")) {
      const auto& a = body.at("embedding");
      if (!a.is_array() || int64_t(a.size()) != idx.dim())
        throw HttpError(400, "'embedding' must be an array of " + std::to_string(idx.dim()) + " numbers");
      double norm = 0;
      for (const auto& v : a) {
        if (!v.is_number() || !std::isfinite(v.get<double>())) throw HttpError(400, "'embedding' holds a value that is not a finite number");
        try {
          q.push_back(core::json_get<float>(v, "'embedding'"));  // 1e300 is finite but no float
        } catch (const Error& e) {
          throw HttpError(400, e.what());
        }
        norm += double(q.back()) * q.back();
      }
      if (!(norm > 0)) throw HttpError(400, "'embedding' is the zero vector");
    } else {
      const auto& v = body.at("id");
      if (!v.is_number_integer()) throw HttpError(400, "'id' must be an integer");
      const int64_t id = as_int64(v).value_or(-1);
      if (id < 0 || id >= idx.size()) throw HttpError(404, "image " + v.dump() + " is not in index '" + idx.name() + "'");
      q = idx.embedding(id);
    }
    const auto hits = idx.search(q.data(), 1, k, dedup);
    nlohmann::json results = nlohmann::json::array();
    for (const auto& h : hits[0]) results.push_back(idx.hit_json(h));
    send_json(res, 200,
              {{"index", idx.name()},
               {"k", k},
               {"results", results},
               {"took_ms", std::chrono::duration<double, std::milli>(Clock::now() - t0).count()}});
  }

  void handle_embed(const httplib::Request& req, httplib::Response& res) {
    const nlohmann::json body = parse_body(req, {"texts", "images"});
    std::vector<std::string> texts;
    if (body.contains("texts")) texts = get_strings(body, "texts", opt.max_texts);
    torch::Tensor images;
    if (body.contains("images")) {
      const auto& a = body.at("images");
      if (!a.is_array()) throw HttpError(400, "'images' must be an array of base64 strings");
      if (int64_t(a.size()) > opt.max_images)
        throw HttpError(413, "'images' holds " + std::to_string(a.size()) + " items; the limit is " + std::to_string(opt.max_images));
      std::vector<torch::Tensor> t;
      for (size_t i = 0; i < a.size(); ++i) t.push_back(image_tensor(a[i], "images[" + std::to_string(i) + "]"));
      if (!t.empty()) images = torch::cat(t, 0);
    }
    if (texts.empty() && !images.defined()) throw HttpError(400, "give 'texts' and/or 'images' (non-empty)");
    JobEmbeddings e = run_job(texts.empty() ? torch::Tensor() : tokenize(texts, "texts"), images);
    send_json(res, 200,
              {{"dim", model.embed_dim()}, {"text_embeddings", rows_json(e.texts)}, {"image_embeddings", rows_json(e.images)}});
  }

  void handle_classify(const httplib::Request& req, httplib::Response& res) {
    const nlohmann::json body = parse_body(req, {"image", "labels", "templates"});
    if (!body.contains("image") || !body.contains("labels")) throw HttpError(400, "give 'image' and 'labels'");
    const std::vector<std::string> labels = get_strings(body, "labels", opt.max_labels);
    if (labels.size() < 2) throw HttpError(400, "'labels' needs at least 2 labels");
    std::set<std::string> seen;
    for (const auto& l : labels) {
      if (l.find_first_not_of(" \t\r\n") == std::string::npos) throw HttpError(400, "'labels' holds an empty label");
      if (!seen.insert(l).second) throw HttpError(400, "label '" + l + "' is given twice");
    }
    std::vector<std::string> templates = eval::default_templates();
    if (body.contains("templates")) {
      templates = get_strings(body, "templates", 64);
      if (templates.empty()) throw HttpError(400, "'templates' is empty");
    }
    std::vector<std::string> prompts;
    try {
      for (const auto& l : labels)
        for (const auto& t : templates) prompts.push_back(eval::fill_template(t, l));
    } catch (const Error& e) {
      throw HttpError(400, std::string("'templates': ") + e.what());
    }
    torch::Tensor img = image_tensor(body.at("image"), "image");
    JobEmbeddings e = run_job(tokenize(prompts, "labels"), img);
    const int64_t c = int64_t(labels.size()), t = int64_t(templates.size());
    torch::Tensor w = eval::ensemble_embeddings(e.texts.view({c, t, -1}));  // [C, D]
    torch::Tensor cos = torch::matmul(w, e.images[0]).to(torch::kDouble);     // [C]
    torch::Tensor probs = torch::softmax(cos * temperature, 0);
    std::vector<double> pv(static_cast<size_t>(c)), cv(static_cast<size_t>(c));
    for (int64_t i = 0; i < c; ++i) {
      pv[size_t(i)] = probs[i].item<double>();
      cv[size_t(i)] = cos[i].item<double>();
    }
    send_json(res, 200, {{"labels", labels}, {"probs", pv}, {"cosine", cv}, {"temperature", temperature}});
  }

  void handle_image(const std::string& name, const std::string& id_text, httplib::Response& res) {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw HttpError(404, "no index named '" + name + "'");
    const SearchIndex& idx = *indices[it->second];
    int64_t id = -1;
    if (id_text.size() <= 18) id = std::stoll(id_text);  // the route allows digits only
    if (id < 0 || id >= idx.size()) throw HttpError(404, "image " + id_text + " is not in index '" + name + "'");
    std::pair<std::string, std::string> thumb;
    try {
      thumb = idx.thumbnail(id);
    } catch (const Error& e) {
      throw HttpError(500, e.what());
    }
    if (thumb.first.empty()) throw HttpError(404, "image " + id_text + " of index '" + name + "' has no stored thumbnail");
    if (!kThumbTypes.count(thumb.second)) throw HttpError(500, "image " + id_text + " has an unexpected type");
    res.status = 200;
    res.set_header("Cache-Control", "public, max-age=3600");
    res.set_content(thumb.first, thumb.second.c_str());
  }

  using Fn = std::function<void(const httplib::Request&, httplib::Response&)>;
  /// Maps the exceptions of a handler to JSON errors.
  Fn guarded(Fn fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) {
      try {
        fn(req, res);
      } catch (const HttpError& e) {
        if (e.status >= 500) spdlog::error("serve: {} {}: {}", req.method, req.path, e.what());
        send_json(res, e.status, {{"error", e.what()}});
      } catch (const QueueFull& e) {
        metrics.count_rejection();
        res.set_header("Retry-After", "1");
        send_json(res, 503, {{"error", e.what()}});
      } catch (const Error& e) {
        send_json(res, 400, {{"error", e.what()}});
      } catch (const std::exception& e) {
        spdlog::error("serve: {} {}: {}", req.method, req.path, e.what());
        send_json(res, 500, {{"error", std::string("internal error: ") + e.what()}});
      }
    };
  }

  /// A POST route whose body is read through a content reader. Debian's compiled cpp-httplib 0.11
  /// refuses a body typed application/x-www-form-urlencoded (curl -d's default) above 8 KiB when it
  /// reads the body itself; read this way only --max-body (payload_max_length) applies, and the
  /// body is parsed as JSON whatever its type.
  void post_json(const char* path, Fn fn) {
    const int64_t limit = opt.max_body_bytes;
    http.Post(path, [fn, limit](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
      if (req.is_multipart_form_data()) {
        send_json(res, 415, {{"error", "send the body as JSON (Content-Type: application/json), not multipart/form-data"}});
        return;
      }
      httplib::Request with_body = req;
      const bool read = reader([&](const char* data, size_t n) {
        with_body.body.append(data, n);
        return true;
      });
      if (!read) {  // over --max-body (the reader set 413), or the connection broke
        if (res.status == 413)
          send_json(res, 413, {{"error", body_too_large(limit)}});
        else
          send_json(res, 400, {{"error", "the request body could not be read"}});
        return;
      }
      fn(with_body, res);
    });
  }

  void routes() {
    post_json("/knn", guarded([this](const auto& q, auto& r) { handle_knn(q, r); }));
    post_json("/embed", guarded([this](const auto& q, auto& r) { handle_embed(q, r); }));
    post_json("/classify", guarded([this](const auto& q, auto& r) { handle_classify(q, r); }));
    http.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_header("Content-Security-Policy",
                     "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data: blob:; "
                     "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
      res.set_content(search_page(), "text/html; charset=utf-8");
    });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, {{"status", "ok"}, {"indices", indices.size()}, {"queue_depth", batcher->queue_depth()}});
    });
    http.Get("/indices", [this](const httplib::Request&, httplib::Response& res) { send_json(res, 200, indices_json()); });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      std::vector<Metrics::Gauge> g;
      g.push_back({"florence_model_queue_depth", "Jobs waiting for the model.", double(batcher->queue_depth())});
      for (const auto& i : indices)
        g.push_back({"florence_index_vectors{index=\"" + i->name() + "\"}", "Vectors in each loaded index.", double(i->size())});
      g.push_back({"process_resident_memory_bytes", "Resident memory of the server process.", double(resident_memory_bytes())});
      res.set_content(metrics.render(g), "text/plain; version=0.0.4; charset=utf-8");
    });
    http.Get(R"(/images/([A-Za-z0-9._-]+)/([0-9]+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
               handle_image(req.matches[1], req.matches[2], res);
             }));
    http.Get(R"(/images/([0-9]+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
               handle_image(indices.front()->name(), req.matches[1], res);
             }));
    auto wrong_method = [](const char* allow) {
      return [allow](const httplib::Request& req, httplib::Response& res) {
        res.set_header("Allow", allow);
        send_json(res, 405, {{"error", req.method + " is not allowed on " + req.path + " (use " + allow + ")"}});
      };
    };
    for (const char* p : {"/knn", "/embed", "/classify"}) http.Get(p, wrong_method("POST"));
    for (const char* p : {"/", "/health", "/indices", "/metrics"}) http.Post(p, wrong_method("GET"));
    http.Post(R"(/images/.*)", wrong_method("GET"));
    // Every other method on a known path: 405 with Allow (PUT, PATCH, DELETE, OPTIONS).
    const std::pair<const char*, const char*> known[] = {
        {"/knn", "POST"}, {"/embed", "POST"}, {"/classify", "POST"}, {"/", "GET"}, {"/health", "GET"},
        {"/indices", "GET"}, {"/metrics", "GET"}, {R"(/images/.*)", "GET"}};
    for (const auto& [p, allow] : known) {
      http.Put(p, wrong_method(allow));
      http.Patch(p, wrong_method(allow));
      http.Delete(p, wrong_method(allow));
      http.Options(p, wrong_method(allow));
    }
    const int64_t max_body = opt.max_body_bytes;
    http.set_error_handler(httplib::Server::HandlerWithResponse([max_body](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // a JSON error of ours
      std::string msg = "not found: " + req.path;
      if (res.status == 413) msg = body_too_large(max_body);
      else if (res.status == 400) msg = "bad request (malformed HTTP)";
      else if (res.status != 404) msg = "HTTP error " + std::to_string(res.status);
      send_json(res, res.status, {{"error", msg}});
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
      send_json(res, 500, {{"error", "internal error"}});
    });
    http.set_pre_routing_handler([](const httplib::Request&, httplib::Response& res) {
      t_request_start = Clock::now();
      t_request_started = true;
      res.set_header("X-Content-Type-Options", "nosniff");
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      const double s = t_request_started ? std::chrono::duration<double>(Clock::now() - t_request_start).count() : 0.0;
      t_request_started = false;
      metrics.observe_request(req.path, res.status, s);
    });
  }

  nlohmann::json indices_json() const {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& i : indices) list.push_back(i->describe());
    return {{"indices", list}, {"default", indices.front()->name()}, {"model", model.describe()}};
  }
};

Server::Server(eval::EvalModel& model, ServeOptions options) : impl_(std::make_unique<Impl>(model, std::move(options))) {
  Impl& s = *impl_;
  if (s.opt.indices.empty()) throw Error("serve: give at least one --index");
  if (s.opt.threads < 1) throw Error("serve: --threads must be >= 1");
  for (const auto& spec : s.opt.indices) {
    const size_t eq = spec.find('=');
    const std::string dir = eq == std::string::npos ? spec : spec.substr(eq + 1);
    auto fixed = SearchIndex::open(dir, eq == std::string::npos ? "" : spec.substr(0, eq));
    if (fixed->dim() != model.embed_dim())
      throw Error("index '" + dir + "' holds " + std::to_string(fixed->dim()) + "-d embeddings but the model makes " +
                  std::to_string(model.embed_dim()) + "-d ones");
    const std::string ck = fixed->store().model().value("checkpoint", std::string());
    if (!model.checkpoint.empty() && ck != std::filesystem::absolute(model.checkpoint).lexically_normal().string())
      spdlog::warn("serve: index '{}' was embedded with checkpoint '{}', not '{}': text and image queries may not match it",
                   dir, ck, model.checkpoint);
    if (!s.by_name.emplace(fixed->name(), s.indices.size()).second)
      throw Error("serve: two indices are named '" + fixed->name() + "'; name them with NAME=DIR");
    s.indices.push_back(fixed);
    spdlog::info("serve: index '{}' ({} images, {}) from {}", fixed->name(), fixed->size(),
                 fixed->store().knn().value("key", std::string("?")), dir);
  }
  s.temperature = model.temperature();
  s.batcher = std::make_unique<ModelBatcher>(model, s.opt.batch, &s.metrics);
  const int threads = s.opt.threads;
  s.http.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  s.http.set_payload_max_length(size_t(s.opt.max_body_bytes));
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which let a second `serve` bind a
  // port already in use and take half of its connections.
  s.http.set_socket_options([&s](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    s.listen_fd = sock;
  });
  s.http.set_keep_alive_max_count(1000);
  // cpp-httplib 0.11 leaves Nagle's algorithm on: a response written in two parts then waits for
  // the client's delayed ACK (measured: ~95 ms per keep-alive request on loopback, whatever the work).
  s.http.set_tcp_nodelay(true);
  if (!(s.opt.io_timeout_seconds > 0 && s.opt.io_timeout_seconds <= 3600))
    throw Error("serve: --io-timeout must be in (0, 3600] seconds");
  const auto io_sec = time_t(s.opt.io_timeout_seconds);
  const auto io_usec = time_t((s.opt.io_timeout_seconds - double(io_sec)) * 1e6);
  if (s.opt.keep_alive_seconds < 1 || s.opt.keep_alive_seconds > 3600)
    throw Error("serve: --keep-alive must be in [1, 3600] seconds");
  s.http.set_keep_alive_timeout(time_t(s.opt.keep_alive_seconds));
  s.http.set_read_timeout(io_sec, io_usec);
  s.http.set_write_timeout(io_sec, io_usec);
  s.routes();
}

Server::~Server() {
  stop();
  impl_->batcher->stop();
}

int Server::bind() {
  Impl& s = *impl_;
  if (s.opt.port == 0) {
    s.port = s.http.bind_to_any_port(s.opt.host);
    if (s.port < 0) throw Error("serve: cannot bind " + s.opt.host + " to a free port");
  } else {
    if (!s.http.bind_to_port(s.opt.host, s.opt.port))
      throw Error("serve: cannot bind " + s.opt.host + ":" + std::to_string(s.opt.port) + " (in use, or not an address of this host)");
    s.port = s.opt.port;
  }
  // Debian's compiled cpp-httplib 0.11 listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG): 24
  // clients connecting at once overflowed it (TcpExtListenOverflows) and some had their connection
  // closed without an answer. listen() on the bound socket again raises the backlog (Linux).
  if (s.listen_fd >= 0 && ::listen(s.listen_fd, SOMAXCONN) != 0)
    spdlog::warn("serve: could not raise the listen backlog: {}", std::strerror(errno));
  return s.port;
}

void Server::listen() { impl_->http.listen_after_bind(); }
void Server::stop() {
  if (impl_->http.is_running()) impl_->http.stop();
}
int Server::port() const { return impl_->port; }
const Metrics& Server::metrics() const { return impl_->metrics; }
nlohmann::json Server::indices_json() const { return impl_->indices_json(); }

void serve(eval::EvalModel& model, const ServeOptions& options) {
  Server server(model, options);
  const int port = server.bind();
  train::StopSignalScope signals(true);
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done.load()) {
      if (train::StopSignalScope::signal() != 0) {
        spdlog::info("serve: signal {}, stopping", train::StopSignalScope::signal());
        server.stop();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::cout << "listening on http://" << options.host << ":" << port << "/" << std::endl;
  server.listen();
  done.store(true);
  watcher.join();
}

}  // namespace florence::search
