// Threaded deterministic loader; the design and its determinism argument are in loader.h.
#include "florence/core/parallel.h"
#include "florence/data/loader.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <random>
#include <thread>

#include "florence/core/error.h"
#include "florence/text/tokenizer.h"

namespace florence::data {

namespace {

// How many skipped samples per epoch are logged individually (the rest only counted).
constexpr int64_t kMaxLoggedSkips = 20;

// splitmix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer, used to derive
// independent generator seeds from (seed, epoch, rank, n).
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
uint64_t mix(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x666c6f72656e6365ull;  // "florence"
  for (uint64_t v : values) h = splitmix64(h ^ splitmix64(v));
  return h;
}
// Stream tags, so the part order, shuffle buffer and per-sample generators never share a seed.
constexpr uint64_t kTagParts = 1, kTagBuffer = 2, kTagSample = 3;

bool blank_ascii(const std::string& s) {
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != '\v') return false;
  }
  return true;
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

TransformOptions LoaderOptions::transform_options() const {
  TransformOptions t;
  t.image_size = image_size;
  t.train = train;
  t.crop_pct = crop_pct;
  t.hflip = hflip;
  t.mean = mean;
  t.std = std;
  t.decode.max_pixels = max_pixels;
  return t;
}

int64_t EpochStats::skipped_total() const {
  int64_t n = 0;
  for (const auto& [reason, count] : skipped) n += count;
  return n;
}

std::string EpochStats::summary() const {
  std::string s = fmt::format("epoch {}: {} samples in {} batches, {} read, {} skipped", epoch,
                              samples, batches, read, skipped_total());
  if (!skipped.empty()) {
    s += " (";
    bool first = true;
    for (const auto& [reason, count] : skipped) {
      s += fmt::format("{}{} {}", first ? "" : ", ", reason, count);
      first = false;
    }
    s += ")";
  }
  if (dropped_last > 0) s += fmt::format(", {} dropped by drop_last", dropped_last);
  s += fmt::format(", {:.1f} MB images, {:.2f} s elapsed, {:.2f} s waited", bytes / 1e6,
                   elapsed_seconds, wait_seconds);
  return s;
}

// One epoch in flight: shared state of its threads.
struct Loader::Run {
  struct Pending {
    int64_t n = -1;
    Sample sample;
  };
  struct Result {
    int64_t n = -1;  // -1 = slot empty
    std::string skip_reason;  // empty = good
    torch::Tensor image;      // [3, S, S] float32
    std::vector<int64_t> ids;
    std::string key, text;
    int64_t label = -1;
    int64_t bytes = 0;
  };

  const Loader* loader = nullptr;
  int64_t epoch = 0;
  int64_t window = 0;
  Clock::time_point t0;

  std::mutex m;
  std::condition_variable cv_space;    // reader: window space freed
  std::condition_variable cv_pending;  // workers: a sample was queued / reader done
  std::condition_variable cv_result;   // assembler: a result arrived
  std::condition_variable cv_batch;    // consumer and assembler: batch queue changed
  std::deque<Pending> pending;
  bool reader_done = false;
  int64_t total = -1;          // number of samples numbered by the reader, once done
  int64_t assembled_next = 0;  // next n the assembler needs
  std::vector<Result> slots;
  std::deque<Batch> batches;
  bool assembler_done = false;
  std::atomic<bool> stopping{false};
  std::exception_ptr error;
  EpochStats stats;  // guarded by m
  int64_t logged_skips = 0;

  std::vector<std::thread> threads;

  void fail(std::exception_ptr e) {
    {
      std::lock_guard<std::mutex> lock(m);
      if (!error) error = e;
    }
    request_stop();
  }
  // Must not be called with m held. Taking m before notifying closes the window in which a
  // thread has checked its predicate but not yet started waiting (a lost wake-up).
  void request_stop() {
    {
      std::lock_guard<std::mutex> lock(m);
      stopping = true;
    }
    cv_space.notify_all();
    cv_pending.notify_all();
    cv_result.notify_all();
    cv_batch.notify_all();
  }

  void reader_main();
  void worker_main();
  void assembler_main();
  Result process(Pending& p) const;
  Batch build_batch(std::vector<Result>& rows) const;
};

void Loader::Run::reader_main() {
  try {
    const LoaderOptions& o = loader->opt_;
    const SampleSource& src = *loader->source_;
    const std::vector<size_t> parts = loader->parts_for_epoch(epoch);
    const bool use_buffer = o.shuffle && o.shuffle_buffer > 1 && src.size_hint() < 0;
    std::mt19937_64 buffer_rng(mix({o.seed, uint64_t(epoch), uint64_t(o.rank), kTagBuffer}));
    std::vector<Sample> buffer;
    int64_t n = 0;

    // Hands one sample to the workers, waiting while the window is full. false = stopping.
    auto push = [&](Sample&& s) -> bool {
      std::unique_lock<std::mutex> lock(m);
      cv_space.wait(lock, [&] { return stopping || n < assembled_next + window; });
      if (stopping) return false;
      ++stats.read;
      stats.bytes += int64_t(s.image.size());
      pending.push_back(Pending{n++, std::move(s)});
      cv_pending.notify_one();
      return true;
    };

    SkipCounts skips;
    for (size_t part : parts) {
      if (stopping) break;
      src.read_part(
          part,
          [&](Sample& s) -> bool {
            if (stopping) return false;
            if (!use_buffer) return push(std::move(s));
            if (int64_t(buffer.size()) < o.shuffle_buffer) {
              buffer.push_back(std::move(s));
              return true;
            }
            // Emit a random buffered sample and keep the new one in its place.
            const size_t k = size_t(uniform_int(buffer_rng, buffer.size()));
            std::swap(buffer[k], s);
            return push(std::move(s));
          },
          skips);
      if (!skips.empty()) {
        std::lock_guard<std::mutex> lock(m);
        for (const auto& [reason, count] : skips) stats.skipped[reason] += count;
        skips.clear();
      }
    }
    while (!buffer.empty() && !stopping) {
      const size_t k = size_t(uniform_int(buffer_rng, buffer.size()));
      Sample s = std::move(buffer[k]);
      buffer[k] = std::move(buffer.back());
      buffer.pop_back();
      if (!push(std::move(s))) break;
    }
    {
      std::lock_guard<std::mutex> lock(m);
      reader_done = true;
      total = n;
    }
    cv_pending.notify_all();
    cv_result.notify_all();
  } catch (...) {
    fail(std::current_exception());
  }
}

Loader::Run::Result Loader::Run::process(Pending& p) const {
  const LoaderOptions& o = loader->opt_;
  Result r;
  r.n = p.n;
  r.key = p.sample.key;
  r.label = p.sample.label;
  r.bytes = int64_t(p.sample.image.size());
  const std::string& text = p.sample.text;
  // Text first: it is cheap and a bad text saves decoding the image.
  if (text::find_invalid_utf8(text) >= 0) {
    r.skip_reason = "invalid_utf8_text";
    return r;
  }
  if (loader->tokenizer_) {
    try {
      r.ids = loader->tokenizer_->encode_with_specials(text, o.context_length);
    } catch (const Error&) {
      r.skip_reason = "tokenize_error";
      return r;
    }
    // [SOT, EOT, 0...]: nothing left after cleaning.
    if (o.require_text && r.ids.size() >= 2 && r.ids[1] == loader->tokenizer_->eot_id() &&
        o.context_length > 2) {
      r.skip_reason = "empty_text";
      return r;
    }
  } else if (o.require_text && blank_ascii(text)) {
    r.skip_reason = "empty_text";
    return r;
  }
  if (p.sample.image.empty()) {
    r.skip_reason = "missing_image";
    return r;
  }
  std::mt19937_64 rng(mix({o.seed, uint64_t(epoch), uint64_t(o.rank), uint64_t(p.n), kTagSample}));
  try {
    const cv::Mat rgb = decode_rgb(p.sample.image, loader->transform_.options().decode);
    r.image = loader->transform_.apply(rgb, rng);
  } catch (const ImageTooLarge&) {
    r.skip_reason = "image_too_large";
    return r;
  } catch (const Error&) {
    r.skip_reason = "bad_image";
    return r;
  } catch (const cv::Exception&) {
    r.skip_reason = "bad_image";
    return r;
  }
  r.text = std::move(p.sample.text);
  return r;
}

void Loader::Run::worker_main() {
  try {
    while (true) {
      Pending p;
      {
        std::unique_lock<std::mutex> lock(m);
        cv_pending.wait(lock, [&] { return stopping || !pending.empty() || reader_done; });
        if (stopping) return;
        if (pending.empty()) return;  // reader done and nothing left
        p = std::move(pending.front());
        pending.pop_front();
      }
      Result r = process(p);
      if (!r.skip_reason.empty()) {
        std::lock_guard<std::mutex> lock(m);
        if (logged_skips < kMaxLoggedSkips) {
          spdlog::warn("loader: skipping sample {} ({}): {}", p.sample.key, p.sample.origin,
                       r.skip_reason);
        }
        ++logged_skips;
      }
      {
        std::lock_guard<std::mutex> lock(m);
        slots[size_t(r.n % window)] = std::move(r);
      }
      cv_result.notify_all();
    }
  } catch (...) {
    fail(std::current_exception());
  }
}

Batch Loader::Run::build_batch(std::vector<Result>& rows) const {
  const LoaderOptions& o = loader->opt_;
  const int64_t B = int64_t(rows.size()), S = o.image_size;
  Batch b;
  b.images = torch::empty({B, 3, S, S}, torch::kFloat32);
  b.labels = torch::empty({B}, torch::kInt64);
  if (loader->tokenizer_) b.ids = torch::zeros({B, int64_t(o.context_length)}, torch::kInt64);
  float* img = b.images.data_ptr<float>();
  int64_t* lab = b.labels.data_ptr<int64_t>();
  const size_t plane = size_t(3 * S * S);
  for (int64_t i = 0; i < B; ++i) {
    Result& r = rows[size_t(i)];
    std::memcpy(img + size_t(i) * plane, r.image.data_ptr<float>(), plane * sizeof(float));
    lab[i] = r.label;
    if (b.ids.defined()) {
      std::memcpy(b.ids.data_ptr<int64_t>() + i * o.context_length, r.ids.data(),
                  r.ids.size() * sizeof(int64_t));
    }
    b.keys.push_back(std::move(r.key));
    b.texts.push_back(std::move(r.text));
  }
  rows.clear();
  return b;
}

void Loader::Run::assembler_main() {
  try {
    const LoaderOptions& o = loader->opt_;
    std::vector<Result> rows;
    rows.reserve(size_t(o.batch_size));
    auto emit = [&](bool partial) -> bool {
      Batch b = build_batch(rows);
      std::unique_lock<std::mutex> lock(m);
      cv_batch.wait(lock, [&] { return stopping || int64_t(batches.size()) < o.prefetch; });
      if (stopping) return false;
      stats.samples += b.size();
      ++stats.batches;
      batches.push_back(std::move(b));
      cv_batch.notify_all();
      return true;
    };
    int64_t next = 0;
    while (true) {
      Result r;
      {
        std::unique_lock<std::mutex> lock(m);
        Result& slot = slots[size_t(next % window)];
        cv_result.wait(lock, [&] {
          return stopping || slot.n == next || (reader_done && next >= total);
        });
        if (stopping) return;
        if (slot.n != next) break;  // reader done, all samples assembled
        r = std::move(slot);
        slot = Result{};
        assembled_next = ++next;
        if (!r.skip_reason.empty()) ++stats.skipped[r.skip_reason];
      }
      cv_space.notify_one();
      if (!r.skip_reason.empty()) continue;
      rows.push_back(std::move(r));
      if (int64_t(rows.size()) == o.batch_size && !emit(false)) return;
    }
    if (!rows.empty()) {
      if (o.drop_last) {
        std::lock_guard<std::mutex> lock(m);
        stats.dropped_last += int64_t(rows.size());
        rows.clear();
      } else if (!emit(true)) {
        return;
      }
    }
    {
      std::lock_guard<std::mutex> lock(m);
      assembler_done = true;
      stats.finished = true;
      stats.elapsed_seconds = seconds_since(t0);
      spdlog::info("loader {}", stats.summary());
    }
    cv_batch.notify_all();
  } catch (...) {
    fail(std::current_exception());
  }
}

Loader::Loader(std::shared_ptr<const SampleSource> source, LoaderOptions options,
               std::shared_ptr<const text::Tokenizer> tokenizer)
    : source_(std::move(source)),
      opt_(std::move(options)),
      tokenizer_(std::move(tokenizer)),
      transform_(opt_.transform_options()) {
  if (!source_) throw Error("Loader: null sample source");
  if (opt_.batch_size < 1) throw Error("Loader: batch_size must be >= 1");
  if (opt_.prefetch < 1) throw Error("Loader: prefetch must be >= 1");
  if (opt_.world_size < 1) throw Error("Loader: world_size must be >= 1");
  if (opt_.rank < 0 || opt_.rank >= opt_.world_size) {
    throw Error(fmt::format("Loader: rank {} outside [0, world_size = {})", opt_.rank,
                            opt_.world_size));
  }
  if (opt_.context_length < 2) throw Error("Loader: context_length must be >= 2");
  num_workers_ = core::resolve_threads(opt_.num_workers);
  for (const auto& [reason, count] : source_->load_skips()) {
    spdlog::info("loader source {}: {} item(s) dropped while loading ({})", source_->describe(),
                 count, reason);
  }
}

Loader::~Loader() {
  try {
    stop();
  } catch (const std::exception& e) {
    spdlog::error("Loader: error while stopping: {}", e.what());
  }
}

std::vector<size_t> Loader::parts_for_epoch(int64_t epoch) const {
  const size_t P = source_->num_parts();
  std::vector<size_t> order(P);
  for (size_t i = 0; i < P; ++i) order[i] = i;
  if (opt_.shuffle) {
    // Fisher-Yates with the platform-independent bounded draw; same on every rank.
    std::mt19937_64 rng(mix({opt_.seed, uint64_t(epoch), kTagParts}));
    for (size_t i = P; i > 1; --i) std::swap(order[i - 1], order[size_t(uniform_int(rng, i))]);
  }
  std::vector<size_t> mine;
  mine.reserve(P / size_t(opt_.world_size) + 1);
  for (size_t i = size_t(opt_.rank); i < P; i += size_t(opt_.world_size)) mine.push_back(order[i]);
  return mine;
}

void Loader::start_epoch(int64_t epoch) {
  stop();
  auto run = std::make_unique<Run>();
  run->loader = this;
  run->epoch = epoch;
  run->window = std::max<int64_t>(int64_t(opt_.prefetch) * opt_.batch_size, 2 * num_workers_);
  run->slots.resize(size_t(run->window));
  run->t0 = Clock::now();
  run->stats.epoch = epoch;
  Run* r = run.get();
  run_ = std::move(run);
  try {
    r->threads.emplace_back([r] { r->reader_main(); });
    for (int i = 0; i < num_workers_; ++i) r->threads.emplace_back([r] { r->worker_main(); });
    r->threads.emplace_back([r] { r->assembler_main(); });
  } catch (...) {
    stop();
    throw;
  }
}

bool Loader::next(Batch& out) {
  if (!run_) throw Error("Loader::next: call start_epoch() first");
  Run& r = *run_;
  const auto t0 = Clock::now();
  std::unique_lock<std::mutex> lock(r.m);
  r.cv_batch.wait(lock, [&] {
    return !r.batches.empty() || r.assembler_done || r.error || r.stopping;
  });
  r.stats.wait_seconds += seconds_since(t0);
  if (r.error) {
    std::exception_ptr e = r.error;
    lock.unlock();
    stop();
    std::rethrow_exception(e);
  }
  if (r.batches.empty()) return false;
  out = std::move(r.batches.front());
  r.batches.pop_front();
  r.cv_batch.notify_all();
  return true;
}

void Loader::stop() {
  if (!run_) return;
  run_->request_stop();
  for (auto& t : run_->threads) {
    if (t.joinable()) t.join();
  }
  {
    std::lock_guard<std::mutex> lock(run_->m);
    if (!run_->stats.finished) run_->stats.elapsed_seconds = seconds_since(run_->t0);
    last_stats_ = run_->stats;
  }
  if (!last_stats_.finished) spdlog::info("loader stopped early: {}", last_stats_.summary());
  run_.reset();
}

EpochStats Loader::stats() const {
  if (!run_) return last_stats_;
  std::lock_guard<std::mutex> lock(run_->m);
  EpochStats s = run_->stats;
  if (!s.finished) s.elapsed_seconds = seconds_since(run_->t0);
  return s;
}

}  // namespace florence::data
