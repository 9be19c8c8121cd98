// The public API (florence/florence.h) over the library: eval::EvalModel for the model, the
// search component's SearchIndex for the index. Each entry point turns library and LibTorch
// exceptions into florence::Error, so callers see one exception type.
#include "florence/core/parallel.h"
#include "florence/florence.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <opencv2/core.hpp>
#include <torch/torch.h>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <thread>
#include <mutex>
#include <random>
#include <string_view>

#include "florence/core/device.h"
#include "florence/core/threads.h"
#include "florence/data/readers.h"
#include "florence/data/transforms.h"
#include "florence/eval/embed.h"
#include "florence/eval/encode.h"
#include "florence/search/searcher.h"
#include "florence/text/tokenizer.h"

#ifndef FLORENCE_VERSION
#define FLORENCE_VERSION "0.0.0"
#endif

namespace florence {

namespace {

// Runs f, turning the exceptions of LibTorch (c10::Error), OpenCV (cv::Exception) and the
// standard library into florence::Error; every message starts with the API function's name.
template <class F>
auto guarded(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    if (std::string_view(e.what()).rfind("florence::", 0) == 0) throw;
    throw Error(fmt::format("{}: {}", what, e.what()));
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: {}", what, e.what_without_backtrace()));
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: {}", what, e.what()));
  }
}

template <class S>
S& live(const std::shared_ptr<S>& s, const char* what) {
  if (!s) throw Error(std::string(what) + ": this object was moved from (it holds no model or index)");
  return *s;
}

constexpr uintmax_t kMaxImageFileBytes = uintmax_t(1) << 30;  // 1 GiB: far above any real image file

// The bytes of an image file. Throws florence::Error naming `path` when it is not a regular file
// (a folder, a FIFO, /dev/zero), is larger than kMaxImageFileBytes, or cannot be read.
std::vector<uint8_t> read_image_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw Error("'" + path + "' does not exist");
  if (!fs::is_regular_file(st)) throw Error("'" + path + "' is not a regular file");
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) throw Error("'" + path + "': " + ec.message());
  if (size > kMaxImageFileBytes) throw Error(fmt::format("'{}' has {} bytes, over the 1 GiB limit for an image", path, size));
  return data::read_file_bytes(path);
}

// The device of ModelOptions: "cpu" or "cuda[:N]" with a GPU present; anything else is an error naming it.
// The library logs through spdlog's default logger. spdlog's own default (unnamed) writes to
// stdout, where a program's output goes: replace it with a stderr logger named "florence". A
// logger the program installed (it has a name) is kept.
void log_to_stderr_unless_set() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (!spdlog::default_logger()->name().empty()) return;
    auto logger = spdlog::get("florence");
    spdlog::set_default_logger(logger ? logger : spdlog::stderr_color_mt("florence"));
  });
}

}  // namespace

const char* version() { return FLORENCE_VERSION; }

void set_log_level(const std::string& level) {
  guarded("florence::set_log_level", [&] {
    const auto l = spdlog::level::from_str(level);
    if (l == spdlog::level::off && level != "off")
      throw Error("florence::set_log_level: unknown level '" + level + "' (trace, debug, info, warn, error, critical, off)");
    log_to_stderr_unless_set();
    spdlog::set_level(l);
  });
}

struct Model::State {
  eval::EvalModel m;
  data::ImageTransform transform;
  std::mutex mu;  // one call at a time on the model (EvalModel's calls are not re-entrant)

  State(eval::EvalModel model, data::ImageTransform tf) : m(std::move(model)), transform(std::move(tf)) {}

  // [3, S, S] float32 for an 8-bit RGB image.
  torch::Tensor preprocess(const cv::Mat& rgb) const {
    std::mt19937_64 unused(0);  // the eval transform draws nothing
    return transform.apply(rgb, unused);
  }
  torch::Tensor encode(const std::vector<torch::Tensor>& images) {
    std::lock_guard<std::mutex> lock(mu);
    return eval::encode_image_tensor(m, torch::stack(images));
  }
};

Model Model::load(const ModelOptions& options) {
  return guarded("florence::Model::load", [&] {
    if (options.checkpoint.empty()) throw Error("florence::Model::load: ModelOptions::checkpoint is empty");
    if (options.batch_size < 1) throw Error(fmt::format("florence::Model::load: batch_size {} (must be >= 1)", options.batch_size));
    const int cores = core::resolve_threads(0);
    if (options.threads < 0 || options.threads > 4 * cores)
      throw Error(fmt::format("florence::Model::load: threads {} (0 = automatic, else 1..{}: 4x the {} cores)", options.threads,
                              4 * cores, cores));
    parse_device(options.device, "device");
    log_to_stderr_unless_set();
    configure_threads(options.threads);
    eval::LoadOptions lo;
    lo.checkpoint = options.checkpoint;
    lo.model = options.model;
    lo.vocab = options.vocab;
    lo.device = options.device;
    lo.precision = options.precision;
    lo.preprocess.batch_size = options.batch_size;
    eval::EvalModel m = eval::load_eval_model(lo);
    data::ImageTransform tf(eval::eval_loader_options(m, false).transform_options());
    return Model(std::make_shared<State>(std::move(m), std::move(tf)));
  });
}

int64_t Model::embed_dim() const { return guarded("florence::Model", [&] { return live(s_, "florence::Model::embed_dim").m.embed_dim(); }); }
int Model::image_size() const {
  return guarded("florence::Model", [&] { return live(s_, "florence::Model::image_size").m.preprocess.image_size; });
}
double Model::temperature() const {
  return guarded("florence::Model", [&] { return live(s_, "florence::Model::temperature").m.temperature(); });
}
bool Model::has_tokenizer() const {
  return guarded("florence::Model", [&] { return live(s_, "florence::Model::has_tokenizer").m.tokenizer != nullptr; });
}

torch::Tensor Model::embed_image_files(const std::vector<std::string>& paths) const {
  return guarded("florence::Model::embed_image_files", [&] {
    if (paths.empty()) throw Error("florence::Model::embed_image_files: no paths given");
    std::vector<torch::Tensor> images;
    images.reserve(paths.size());
    State& st = live(s_, "florence::Model::embed_image_files");
    for (const auto& p : paths) {
      try {
        const std::vector<uint8_t> bytes = read_image_file(p);
        images.push_back(st.preprocess(data::decode_rgb(bytes.data(), bytes.size())));
      } catch (const std::exception& e) {
        const std::string what = e.what();
        throw Error("florence::Model::embed_image_files: " + (what.find(p) != std::string::npos ? what : "'" + p + "': " + what));
      }
    }
    return st.encode(images);
  });
}

torch::Tensor Model::embed_image_bytes(const void* data, size_t size) const {
  return guarded("florence::Model::embed_image_bytes", [&] {
    State& st = live(s_, "florence::Model::embed_image_bytes");
    if (data == nullptr || size == 0) throw Error("florence::Model::embed_image_bytes: no bytes given");
    if (size > kMaxImageFileBytes) throw Error(fmt::format("florence::Model::embed_image_bytes: {} bytes, over the 1 GiB limit", size));
    return st.encode({st.preprocess(data::decode_rgb(static_cast<const uint8_t*>(data), size))});
  });
}

torch::Tensor Model::embed_image(const cv::Mat& image) const {
  return guarded("florence::Model::embed_image", [&] {
    State& st = live(s_, "florence::Model::embed_image");
    if (image.empty()) throw Error("florence::Model::embed_image: empty image");
    if (image.dims != 2) throw Error(fmt::format("florence::Model::embed_image: a {}-dimensional cv::Mat (need a 2-D image)", image.dims));
    if (image.depth() == CV_32F || image.depth() == CV_64F) {
      if (!cv::checkRange(image)) throw Error("florence::Model::embed_image: the float image holds NaN or infinite values");
      double lo = 0, hi = 0;
      cv::minMaxLoc(image.reshape(1), &lo, &hi);
      if (lo < 0 || hi > 1) throw Error(fmt::format("florence::Model::embed_image: float pixels must lie in [0, 1], got [{}, {}]", lo, hi));
    }
    return st.encode({st.preprocess(data::to_rgb8(image))});
  });
}

torch::Tensor Model::embed_rgb(const uint8_t* rgb, int width, int height, size_t row_stride) const {
  return guarded("florence::Model::embed_rgb", [&] {
    State& st = live(s_, "florence::Model::embed_rgb");
    if (rgb == nullptr) throw Error("florence::Model::embed_rgb: null pixel pointer");
    if (width < 1 || height < 1)
      throw Error(fmt::format("florence::Model::embed_rgb: size {}x{} (width and height must be >= 1)", width, height));
    if (int64_t(width) * height > data::kDefaultMaxPixels)
      throw Error(fmt::format("florence::Model::embed_rgb: {}x{} pixels, over the {} pixel limit", width, height,
                              data::kDefaultMaxPixels));
    const size_t stride = row_stride == 0 ? size_t(width) * 3 : row_stride;
    if (stride < size_t(width) * 3)
      throw Error(fmt::format("florence::Model::embed_rgb: row stride {} < 3 * width = {}", stride, size_t(width) * 3));
    const cv::Mat view(height, width, CV_8UC3, const_cast<uint8_t*>(rgb), stride);  // read only
    return st.encode({st.preprocess(view)});
  });
}

torch::Tensor Model::embed_texts(const std::vector<std::string>& texts) const {
  return guarded("florence::Model::embed_texts", [&] {
    State& st = live(s_, "florence::Model::embed_texts");
    if (texts.empty()) throw Error("florence::Model::embed_texts: no texts given");
    std::lock_guard<std::mutex> lock(st.mu);
    return eval::encode_texts(st.m, texts);
  });
}

torch::Tensor Model::zero_shot(const torch::Tensor& image_embeds, const std::vector<std::string>& labels,
                               const std::vector<std::string>& templates) const {
  return guarded("florence::Model::zero_shot", [&] {
    State& st = live(s_, "florence::Model::zero_shot");
    std::lock_guard<std::mutex> lock(st.mu);
    if (st.m.tokenizer) {  // name a label or template the tokenizer refuses (invalid UTF-8)
      auto check = [&](const std::string& t, const std::string& what) {
        try {
          st.m.tokenizer->tokenize({t}, st.m.context_length);
        } catch (const Error& e) {
          throw Error("florence::Model::zero_shot: " + what + ": " + e.what());
        }
      };
      for (size_t i = 0; i < labels.size(); ++i) check(labels[i], "label " + std::to_string(i));
      for (size_t i = 0; i < templates.size(); ++i) check(templates[i], "template " + std::to_string(i));
    }
    if (image_embeds.defined() && !image_embeds.is_floating_point())
      throw Error(fmt::format("florence::Model::zero_shot: image embeddings of type {} (need a floating type)",
                              c10::toString(image_embeds.scalar_type())));
    const torch::Tensor unit =
        image_embeds.defined() && image_embeds.dim() == 2 && image_embeds.is_floating_point()
            ? torch::nn::functional::normalize(image_embeds.to(torch::kCPU, torch::kFloat), torch::nn::functional::NormalizeFuncOptions().dim(1))
            : image_embeds;
    return eval::score_labels(st.m, unit, labels, templates).probs;
  });
}

torch::Tensor similarity(const torch::Tensor& a, const torch::Tensor& b) {
  return guarded("florence::similarity", [&] {
    if (!a.defined() || !b.defined() || a.dim() != 2 || b.dim() != 2 || a.size(1) != b.size(1))
      throw Error(fmt::format("florence::similarity: need [N, D] and [M, D], got [{}] and [{}]",
                              a.defined() ? fmt::format("{}", fmt::join(a.sizes(), ", ")) : "none",
                              b.defined() ? fmt::format("{}", fmt::join(b.sizes(), ", ")) : "none"));
    return torch::matmul(a.to(torch::kCPU, torch::kFloat), b.to(torch::kCPU, torch::kFloat).t());
  });
}

struct ImageIndex::State {
  std::shared_ptr<search::SearchIndex> index;
};

ImageIndex ImageIndex::open(const std::string& dir) {
  return guarded("florence::ImageIndex::open", [&] {
    auto s = std::make_shared<State>();
    s->index = search::SearchIndex::open(dir);
    return ImageIndex(std::move(s));
  });
}

int64_t ImageIndex::size() const {
  return guarded("florence::ImageIndex", [&] { return live(s_, "florence::ImageIndex::size").index->size(); });
}
int64_t ImageIndex::dim() const {
  return guarded("florence::ImageIndex", [&] { return live(s_, "florence::ImageIndex::dim").index->dim(); });
}

std::vector<std::vector<SearchResult>> ImageIndex::search(const torch::Tensor& queries, int64_t k) const {
  return guarded("florence::ImageIndex::search", [&] {
    if (!queries.defined() || queries.dim() != 2 || queries.size(1) != dim())
      throw Error(fmt::format("florence::ImageIndex::search: queries must be [Q, {}], got [{}]", dim(),
                              queries.defined() ? fmt::format("{}", fmt::join(queries.sizes(), ", ")) : "none"));
    const State& st = live(s_, "florence::ImageIndex::search");
    const torch::Tensor q = queries.to(torch::kCPU, torch::kFloat).contiguous();
    const auto hits = st.index->search(q.data_ptr<float>(), q.size(0), k);
    std::vector<std::vector<SearchResult>> out(hits.size());
    for (size_t i = 0; i < hits.size(); ++i) {
      for (const auto& h : hits[i]) {
        const search::ImageRow& row = st.index->row(h.id);
        out[i].push_back({h.id, h.score, row.key, row.caption, row.source});
      }
    }
    return out;
  });
}

}  // namespace florence
