// Corpus builders (openclipart | emoji | fashion-mnist) -> WebDataset shards + summary.json.
//
// Rendering choice: OpenClipArt SVGs are rendered by spawning `rsvg-convert` once per file rather
// than linking librsvg. A process per file isolates the builder from crashes, runaway memory and
// hangs in a pathological SVG (it is killed after render_timeout_s; in-process librsvg offers no
// way to abort a render), needs no GLib/Cairo development packages, and costs ~2 ms of fork/exec
// against tens of ms of rendering. Work is spread over `threads` workers; results are committed in
// source order so the shards are identical for any thread count.
#include "florence/core/parallel.h"
#include "florence/data/corpus.h"

#include <fcntl.h>
#include <libxml/parser.h>  // xmlInitParser before the worker threads read SVGs
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <optional>
#include <set>
#include <thread>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/corpus_detail.h"
#include "florence/data/idx.h"
#include "florence/data/sample.h"
#include "florence/data/transforms.h"
#include "florence/data/webdataset.h"

extern char** environ;

namespace fs = std::filesystem;

namespace florence::data {

// ------------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------------

std::string florence_cache_dir() {
  if (const char* c = std::getenv("FLORENCE_CACHE"); c && *c) return c;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.cache/florence";
}

std::string default_emoji_dir() {
  return florence_cache_dir() + "/emoji-datasource-google-" + kEmojiVersion + "/package";
}

std::string default_openclipart_dir() { return "/usr/share/openclipart/svg"; }

namespace {

std::string to_lower_ascii(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

using core::resolve_threads;

/// Where a build reads its source: --input, else where scripts/setup puts it (corpus_sources()).
std::string input_root(const CorpusOptions& o) { return o.input.empty() ? corpus_source(o.source).default_input : o.input; }

}  // namespace

std::string key_from_relative_path(const std::string& rel) {
  std::string p = rel;
  const size_t slash = p.rfind('/');
  const size_t dot = p.rfind('.');
  if (dot != std::string::npos && (slash == std::string::npos || dot > slash)) p.resize(dot);
  for (auto& c : p) {
    const auto u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) && u < 0x80) && c != '_' && c != '-' && c != '/') c = '_';
  }
  return p;
}

namespace {

// ------------------------------------------------------------------------------------------------
// Subprocess with timeout (rsvg-convert)
// ------------------------------------------------------------------------------------------------

struct ProcResult {
  bool started = false, timed_out = false;
  int exit_code = -1;  // -1 when killed by a signal
  std::string out, err;
};

ProcResult run_process(const std::vector<std::string>& argv, double timeout_s) {
  ProcResult r;
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return r;
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  // dup2 clears FD_CLOEXEC on the target, so only fds 1 and 2 reach the child; the O_CLOEXEC pipes
  // of concurrent workers are never inherited (which would delay their EOF).
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    r.err = std::string("cannot start ") + argv[0] + ": " + std::strerror(rc);
    return r;
  }
  r.started = true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[1 << 16];
  while (open_fds > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      r.timed_out = true;
      break;
    }
    const int pr = poll(fds, 2, int(std::min<long long>(left, 1000)));
    if (pr < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        (i == 0 ? r.out : r.err).append(buf, size_t(n));
        if (r.err.size() > 4096) r.err.resize(4096);
      } else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  if (r.timed_out) kill(pid, SIGKILL);
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// ------------------------------------------------------------------------------------------------
// Ordered parallel pipeline: produce(i) runs on `threads` workers, consume(i, item) runs on the
// calling thread in index order.
// ------------------------------------------------------------------------------------------------

struct Item {
  bool ok = false;
  std::string reason, detail, name;  // failure reason / detail; source item name for logs
  std::vector<Sample> samples;       // one or more (emoji base + skin variants)
  std::vector<std::string> splits;   // parallel to samples
  std::vector<std::string> failures;  // per-sample failure reasons of partially failed items
};

void run_ordered(size_t n, int threads, const std::function<Item(size_t)>& produce,
                 const std::function<void(size_t, Item&)>& consume) {
  std::vector<std::optional<Item>> slots(n);
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  std::exception_ptr worker_error;
  auto worker = [&] {
    while (!stop) {
      const size_t i = next++;
      if (i >= n) break;
      Item item;
      try {
        item = produce(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu);
        if (!worker_error) worker_error = std::current_exception();
        stop = true;
      }
      {
        std::lock_guard<std::mutex> lk(mu);
        slots[i] = std::move(item);
      }
      cv.notify_all();
    }
  };
  std::vector<std::thread> pool;
  const int nt = std::max(1, std::min<int>(threads, int(std::max<size_t>(n, 1))));
  for (int t = 0; t < nt; ++t) pool.emplace_back(worker);
  std::exception_ptr consume_error;
  try {
    for (size_t i = 0; i < n; ++i) {
      Item item;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return slots[i].has_value() || (stop && worker_error); });
        if (worker_error) break;
        item = std::move(*slots[i]);
        slots[i].reset();
      }
      consume(i, item);
    }
  } catch (...) {
    consume_error = std::current_exception();
  }
  stop = true;
  for (auto& t : pool) t.join();
  if (worker_error) std::rethrow_exception(worker_error);
  if (consume_error) std::rethrow_exception(consume_error);
}

// ------------------------------------------------------------------------------------------------
// Output side: writers per split + counters + summary
// ------------------------------------------------------------------------------------------------

const char* const kSplits[] = {"train", "val", "test"};

class CorpusSink {
 public:
  CorpusSink(const CorpusOptions& o) : o_(o) {
    fs::create_directories(o.out_dir);
    const std::vector<fs::path> existing = corpus_files();
    const fs::path kept = previous_dir();
    if (fs::exists(kept))
      throw Error("data build: '" + kept.string() + "' holds the corpus an interrupted build was replacing; " +
                  "move its files back into '" + o.out_dir + "' or remove it, then build again");
    if (!existing.empty()) {
      if (!o.overwrite)
        throw Error("data build: '" + o.out_dir + "' already holds a corpus (" + existing.front().string() +
                    ", ...); pass --overwrite to replace it");
      // Set aside, not removed: a build that fails or writes nothing puts them back (restore()).
      spdlog::info("data build: setting aside {} file(s) of the previous corpus in {}", existing.size(), kept.string());
      for (const auto& p : existing) {
        const fs::path to = kept / fs::relative(p, o.out_dir);
        fs::create_directories(to.parent_path());
        fs::rename(p, to);
        moved_.push_back(fs::relative(p, o.out_dir));
      }
    }
    for (const char* s : kSplits) split_counts_[s] = 0;
  }

  fs::path previous_dir() const { return fs::path(o_.out_dir) / ".previous-corpus"; }

  /// The files a corpus build owns in out_dir: summary.json, the split shards and their partial
  /// (hidden .tmp) shards.
  std::vector<fs::path> corpus_files() const {
    std::vector<fs::path> out;
    if (fs::exists(fs::path(o_.out_dir) / "summary.json")) out.push_back(fs::path(o_.out_dir) / "summary.json");
    for (const char* s : kSplits) {
      const fs::path d = fs::path(o_.out_dir) / s;
      if (!fs::is_directory(d)) continue;
      for (const auto& e : fs::directory_iterator(d)) {
        const std::string name = e.path().filename().string();
        if (e.is_regular_file() && (e.path().extension() == ".tar" || (name[0] == '.' && e.path().extension() == ".tmp")))
          out.push_back(e.path());
      }
    }
    return out;
  }

  /// After a failed build: removes what this build wrote and moves the previous corpus back.
  void restore() {
    writers_.clear();  // closes the open shards first
    std::error_code ec;
    try {  // all written by this build: the old ones are aside
      for (const auto& p : corpus_files()) fs::remove(p, ec);
    } catch (const std::exception& e) {  // restore() runs while an error propagates: log, never throw
      spdlog::error("data build: cannot list {} to remove the failed build's files: {}", o_.out_dir, e.what());
    }
    for (const auto& rel : moved_) fs::rename(previous_dir() / rel, fs::path(o_.out_dir) / rel, ec);
    if (!moved_.empty()) spdlog::warn("data build: failed; the previous corpus in {} is back in place", o_.out_dir);
    fs::remove_all(previous_dir(), ec);
  }

  /// After a successful build: drops the previous corpus.
  void commit() {
    std::error_code ec;
    fs::remove_all(previous_dir(), ec);
  }

  void add(const Sample& s, const std::string& split) {
    auto& w = writers_[split];
    if (!w) {
      ShardWriterOptions wo;
      wo.max_samples_per_shard = o_.shard_size;
      w = std::make_unique<ShardWriter>((fs::path(o_.out_dir) / split).string(), wo);
    }
    w->write(s);
    ++split_counts_[split];
    const std::string cat = s.meta.value("category", std::string("(none)"));
    ++categories_[cat];
    ++categories_by_split_[split][cat];
  }

  void fail(const std::string& name, const std::string& reason, const std::string& detail) {
    ++failures_[reason];
    failed_.push_back({{"item", name}, {"reason", reason}, {"detail", detail}});
    if (failures_[reason] <= 10)
      spdlog::warn("data build: {}: {}{}", name, reason, detail.empty() ? "" : " (" + detail + ")");
    else
      spdlog::debug("data build: {}: {} ({})", name, reason, detail);
  }

  nlohmann::json finish(nlohmann::json head, int64_t considered, double seconds) {
    nlohmann::json shards = nlohmann::json::object();
    int64_t total = 0;
    for (const char* s : kSplits) {
      shards[s] = 0;
      total += split_counts_[s];
    }
    if (total == 0) {
      std::string why;
      for (const auto& [k, v] : failures_) why += fmt::format("{}{} {}", why.empty() ? "" : ", ", v, k);
      throw Error(fmt::format("data build {}: no sample was written ({} considered{}{})", o_.source, considered,
                              why.empty() ? "" : "; failed: ", why));
    }
    for (auto& [split, w] : writers_) {
      w->close();
      shards[split] = w->shards().size();
    }
    head["considered"] = considered;
    head["samples"] = total;
    head["splits"] = split_counts_;
    head["shards"] = shards;
    head["categories"] = categories_;
    head["categories_by_split"] = categories_by_split_;
    int64_t nfail = 0;
    for (auto& [k, v] : failures_) nfail += v;
    head["failures"] = failures_;
    head["failed_total"] = nfail;
    head["failed_items"] = failed_;
    head["seconds"] = seconds;
    core::write_text_atomic(fs::path(o_.out_dir) / "summary.json", head.dump(2) + "\n");
    return head;
  }

 private:
  const CorpusOptions& o_;
  std::vector<fs::path> moved_;  ///< previous corpus files set aside, relative to out_dir
  std::map<std::string, std::unique_ptr<ShardWriter>> writers_;
  std::map<std::string, int64_t> split_counts_, categories_, failures_;
  std::map<std::string, std::map<std::string, int64_t>> categories_by_split_;
  nlohmann::json failed_ = nlohmann::json::array();
};

/// An exclusive flock on OUT/.build.lock for the life of one build: a second build of the same folder
/// (another `data build`, or a source named twice) fails at once instead of replacing the first one's
/// files. The lock goes with the process (no stale lock after a kill).
class BuildLock {
 public:
  explicit BuildLock(const std::string& out_dir) {
    fs::create_directories(out_dir);
    const std::string path = (fs::path(out_dir) / ".build.lock").string();
    fd_ = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error("data build: cannot open '" + path + "': " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd_);
      throw Error(err == EWOULDBLOCK ? "data build: another build is writing '" + out_dir + "' (it holds " + path + ")"
                                     : "data build: cannot lock '" + path + "': " + std::strerror(err));
    }
  }
  ~BuildLock() { ::close(fd_); }
  BuildLock(const BuildLock&) = delete;
  BuildLock& operator=(const BuildLock&) = delete;

 private:
  int fd_ = -1;
};

struct Progress {
  std::string what;
  size_t total;
  bool on;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  size_t every;
  void tick(size_t done) {
    if (!on || total == 0 || (done % every != 0 && done != total)) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int filled = int(20 * done / total);
    spdlog::info("data build {:<12} [{}{}] {}/{} ({:.1f}%) {:.1f} items/s", what, std::string(size_t(filled), '#'),
                 std::string(size_t(20 - filled), '.'), done, total, 100.0 * double(done) / double(total),
                 s > 0 ? double(done) / s : 0.0);
  }
};

// ------------------------------------------------------------------------------------------------
// Rendering one source image to the corpus's PNG
// ------------------------------------------------------------------------------------------------

/// Renders `path` (.svg: rsvg-convert at size x size keeping the aspect ratio; else an image file
/// OpenCV decodes) onto a white size x size canvas. On failure returns an empty vector and sets
/// item.reason / item.detail. Throws when rsvg-convert cannot be started at all (a setup problem).
std::vector<uint8_t> render_corpus_image(const std::string& path, const CorpusOptions& o, Item& item) {
  std::string bytes;
  std::string ext = fs::path(path).extension().string();
  for (auto& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (ext == ".svg") {
    const std::string size_str = std::to_string(o.size);
    ProcResult pr = run_process({"rsvg-convert", "--unlimited", "-a", "-w", size_str, "-h", size_str, "-f", "png", path},
                                o.render_timeout_s);
    if (!pr.started) {
      throw Error(o.source + ": " + pr.err + " (install Debian package librsvg2-bin: scripts/setup)");
    }
    if (pr.timed_out) {
      item.reason = "render_timeout";
      item.detail = fmt::format("killed after {} s", o.render_timeout_s);
      return {};
    }
    if (pr.exit_code != 0 || pr.out.empty()) {
      item.reason = "render_failed";
      item.detail = detail::collapse_ws(pr.err).substr(0, 300);
      if (item.detail.empty()) item.detail = "exit code " + std::to_string(pr.exit_code);
      return {};
    }
    bytes = std::move(pr.out);
  } else {
    constexpr uintmax_t kMaxImageFileBytes = 64ull << 20;
    std::error_code ec;
    const uintmax_t file_bytes = fs::file_size(path, ec);
    if (!ec && file_bytes > kMaxImageFileBytes) {
      item.reason = "image_too_large";
      item.detail = fmt::format("{} bytes, over the {} byte limit", file_bytes, kMaxImageFileBytes);
      return {};
    }
    try {
      bytes = core::read_text_file(path);
    } catch (const Error& e) {
      item.reason = "missing_image";
      item.detail = e.what();
      return {};
    }
  }
  std::vector<uint8_t> png;
  try {
    png = composite_on_white_png(std::vector<uint8_t>(bytes.begin(), bytes.end()), o.size);
  } catch (const ImageTooLarge& e) {
    item.reason = "image_too_large";
    item.detail = e.what();
    return {};
  }
  if (png.empty()) item.reason = ext == ".svg" ? "render_undecodable" : "undecodable_image";
  return png;
}

// ------------------------------------------------------------------------------------------------
// openclipart
// ------------------------------------------------------------------------------------------------

void build_openclipart(const CorpusOptions& o, CorpusSink& sink, nlohmann::json& head, int64_t& considered) {
  const std::string root = input_root(o);  // checked by check_input

  std::vector<std::string> rel;  // relative paths, sorted
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::follow_directory_symlink);
       it != fs::recursive_directory_iterator(); ++it) {
    std::error_code ec;
    if (!it->is_regular_file(ec)) continue;  // follows file symlinks (the package's duplicates)
    if (to_lower_ascii(it->path().extension().string()) != ".svg") continue;
    // Lexical: fs::relative() would resolve the symlinked duplicates to their targets' paths.
    rel.push_back(it->path().lexically_relative(root).generic_string());
  }
  std::sort(rel.begin(), rel.end());
  if (rel.empty()) throw Error("openclipart: no .svg file under '" + root + "'");
  if (o.limit > 0 && size_t(o.limit) < rel.size()) rel.resize(size_t(o.limit));
  considered = int64_t(rel.size());

  // Keys (unique), split keys (a symlink's target, so duplicates share their original's split).
  const fs::path canon_root = fs::weakly_canonical(root);
  std::vector<std::string> keys(rel.size()), split_keys(rel.size()), dup_of(rel.size());
  std::set<std::string> used;
  int64_t collisions = 0;
  for (size_t i = 0; i < rel.size(); ++i) {
    std::string k = key_from_relative_path(rel[i]);
    if (used.count(k)) {
      ++collisions;
      int n = 2;
      while (used.count(k + "_" + std::to_string(n))) ++n;
      k += "_" + std::to_string(n);
    }
    used.insert(k);
    keys[i] = k;
    split_keys[i] = k;
    const fs::path full = fs::path(root) / rel[i];
    std::error_code ec;
    if (fs::is_symlink(full, ec)) {
      const fs::path target = fs::weakly_canonical(full, ec);
      if (!ec) {
        const std::string trel = fs::relative(target, canon_root, ec).generic_string();
        if (!ec && !trel.empty() && trel.rfind("..", 0) != 0) {
          split_keys[i] = key_from_relative_path(trel);
          dup_of[i] = split_keys[i];
        }
      }
    }
  }
  head["key_collisions"] = collisions;

  xmlInitParser();
  const std::vector<std::string> fields = detail::resolve_fields("openclipart", o.fields);
  auto produce = [&](size_t i) -> Item {
    Item item;
    item.name = rel[i];
    const std::string path = (fs::path(root) / rel[i]).string();
    SvgMetadata md;
    std::string err;
    if (!read_svg_metadata(path, md, err)) {
      item.reason = "xml_unreadable";
      item.detail = err;
      return item;
    }
    const std::string text = svg_text(md, fields);
    if (text.empty()) {
      item.reason = "no_text";
      return item;
    }
    std::vector<uint8_t> png = render_corpus_image(path, o, item);
    if (png.empty()) return item;
    Sample s;
    s.key = keys[i];
    s.image = std::move(png);
    s.image_ext = "png";
    s.text = text;
    const size_t slash = rel[i].find('/');
    const size_t last = rel[i].rfind('/');
    s.meta = {{"source", "openclipart"},
              {"category", slash == std::string::npos ? std::string("(root)") : rel[i].substr(0, slash)},
              {"folder", last == std::string::npos ? std::string() : rel[i].substr(0, last)},
              {"path", rel[i]},
              {"title", md.title},
              {"description", md.description},
              {"keywords", md.keywords}};
    if (!dup_of[i].empty()) s.meta["duplicate_of"] = dup_of[i];
    const std::string split = split_of(split_keys[i]);
    s.meta["split"] = split;
    item.samples.push_back(std::move(s));
    item.splits.push_back(split);
    item.ok = true;
    return item;
  };
  Progress prog{"openclipart", rel.size(), o.progress, std::chrono::steady_clock::now(), 500};
  run_ordered(rel.size(), resolve_threads(o.threads), produce, [&](size_t i, Item& item) {
    if (item.ok)
      sink.add(item.samples[0], item.splits[0]);
    else
      sink.fail(item.name, item.reason, item.detail);
    prog.tick(i + 1);
  });
}

// ------------------------------------------------------------------------------------------------
// listed sources: tuxpaint, openmoji, mdi, tabler, fontawesome, flags (corpus_icons.cpp reads them)
// ------------------------------------------------------------------------------------------------

void build_listed(const CorpusOptions& o, CorpusSink& sink, nlohmann::json& head, int64_t& considered) {
  const std::string root = input_root(o);  // checked by check_input
  detail::ListedSource listed = detail::list_source(o, root);
  if (o.limit > 0 && size_t(o.limit) < listed.items.size()) listed.items.resize(size_t(o.limit));
  considered = int64_t(listed.items.size());
  head.update(listed.head);
  auto produce = [&](size_t i) -> Item {
    const detail::ListedItem& li = listed.items[i];
    Item item;
    item.name = li.name;
    if (!li.fail_reason.empty()) {
      item.reason = li.fail_reason;
      item.detail = li.fail_detail;
      return item;
    }
    try {  // text and meta come from file names and files: invalid UTF-8 is one bad item, not a failed build
      (void)li.meta.dump();
      (void)nlohmann::json(li.text).dump();
    } catch (const nlohmann::json::exception& e) {
      item.reason = "invalid_utf8_text";
      item.detail = e.what();
      return item;
    }
    std::vector<uint8_t> png = render_corpus_image(li.path, o, item);
    if (png.empty()) return item;
    Sample s;
    s.key = li.key;
    s.image = std::move(png);
    s.image_ext = "png";
    s.text = li.text;
    s.meta = li.meta;
    const std::string split = split_of(li.split_key);
    s.meta["split"] = split;
    item.samples.push_back(std::move(s));
    item.splits.push_back(split);
    item.ok = true;
    return item;
  };
  Progress prog{o.source, listed.items.size(), o.progress, std::chrono::steady_clock::now(), 500};
  std::set<std::string> seen;
  run_ordered(listed.items.size(), resolve_threads(o.threads), produce, [&](size_t i, Item& item) {
    if (item.ok && !seen.insert(item.samples[0].key).second)
      sink.fail(item.name, "duplicate_key", "");
    else if (item.ok)
      sink.add(item.samples[0], item.splits[0]);
    else
      sink.fail(item.name, item.reason, item.detail);
    prog.tick(i + 1);
  });
}

// ------------------------------------------------------------------------------------------------
// emoji, twemoji
// ------------------------------------------------------------------------------------------------

void build_emoji(const CorpusOptions& o, CorpusSink& sink, nlohmann::json& head, int64_t& considered) {
  const std::string dir = input_root(o);
  const fs::path json_path = fs::path(dir) / "emoji.json";  // present: checked by check_input
  const std::string art = o.source == "twemoji" ? "twitter" : "google";
  nlohmann::json list;
  {
    std::ifstream f(json_path);
    try {
      list = nlohmann::json::parse(f);
    } catch (const nlohmann::json::exception& e) {
      throw Error(o.source + ": '" + json_path.string() + "' is not valid JSON: " + e.what());
    }
  }
  if (!list.is_array()) throw Error(o.source + ": '" + json_path.string() + "' is not a JSON array");
  const fs::path img_dir = fs::path(dir) / "img" / art / "64";
  size_t n = list.size();
  if (o.limit > 0 && size_t(o.limit) < n) n = size_t(o.limit);
  int64_t total_images = 0;
  for (size_t i = 0; i < n; ++i)
    if (list[i].is_object()) {
      const auto& sv = list[i].contains("skin_variations") ? list[i]["skin_variations"] : nlohmann::json();
      total_images += 1 + (sv.is_object() ? int64_t(sv.size()) : 0);
    }
  considered = total_images;
  head["entries"] = n;

  auto str = [](const nlohmann::json& j, const char* k) {
    return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
  };
  auto produce = [&](size_t i) -> Item {
    Item item;
    const nlohmann::json& e = list[i];
    if (!e.is_object() || str(e, "unified").empty() || str(e, "image").empty()) {
      item.name = "emoji.json[" + std::to_string(i) + "]";
      item.reason = "bad_entry";
      item.detail = "not an object with 'unified' and 'image'";
      return item;
    }
    const std::string unified = str(e, "unified");
    item.name = unified;
    std::string text = detail::collapse_ws(to_lower_ascii(str(e, "name")));
    std::vector<std::string> shorts;
    if (e.contains("short_names") && e["short_names"].is_array())
      for (const auto& s : e["short_names"])
        if (s.is_string()) shorts.push_back(s.get<std::string>());
    if (o.short_names) {
      for (auto s : shorts) {
        std::replace(s.begin(), s.end(), '_', ' ');
        if (s != text) text += (text.empty() ? "" : ", ") + s;
      }
    }
    if (text.empty()) {  // counted once per image: the base and each of its variants
      item.reason = "no_text";
      const size_t images = 1 + (e.contains("skin_variations") && e["skin_variations"].is_object() ? e["skin_variations"].size() : 0);
      item.failures.assign(images, "no_text");
      return item;
    }
    const std::string base_key = to_lower_ascii(unified);
    const std::string split = split_of(base_key);  // variants follow their base (see corpus.h)
    auto make = [&](const std::string& key, const std::string& image, const std::string& u, const std::string& tone) {
      if (!detail::safe_file_name(image)) {  // a metadata path must stay in the image folder
        item.failures.push_back("bad_entry");
        item.detail += (item.detail.empty() ? "" : "; ") + std::string("image '") + image + "' leaves " + img_dir.string();
        return;
      }
      const fs::path p = img_dir / image;
      std::ifstream f(p, std::ios::binary);
      if (!f) {
        item.failures.push_back("missing_image");
        item.detail += (item.detail.empty() ? "" : "; ") + p.string();
        return;
      }
      std::vector<uint8_t> raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      std::vector<uint8_t> png;
      try {
        png = composite_on_white_png(raw, 0);
      } catch (const ImageTooLarge& e) {
        item.failures.push_back("image_too_large");
        item.detail += (item.detail.empty() ? "" : "; ") + p.string() + ": " + e.what();
        return;
      }
      if (png.empty()) {
        item.failures.push_back("undecodable_image");
        item.detail += (item.detail.empty() ? "" : "; ") + p.string();
        return;
      }
      Sample s;
      s.key = key;
      s.image = std::move(png);
      s.image_ext = "png";
      s.text = text;
      s.meta = {{"source", o.source},    {"category", str(e, "category")}, {"subcategory", str(e, "subcategory")},
                {"unified", u},          {"name", str(e, "name")},         {"short_names", shorts},
                {"base", unified},       {"split", split}};
      if (!tone.empty()) s.meta["skin_tone"] = tone;
      item.samples.push_back(std::move(s));
      item.splits.push_back(split);
    };
    make(base_key, str(e, "image"), unified, "");
    if (e.contains("skin_variations") && e["skin_variations"].is_object()) {
      for (const auto& [tone, v] : e["skin_variations"].items()) {
        if (!v.is_object() || str(v, "unified").empty() || str(v, "image").empty()) {
          item.failures.push_back("bad_entry");
          continue;
        }
        make(to_lower_ascii(str(v, "unified")), str(v, "image"), str(v, "unified"), tone);
      }
    }
    item.ok = true;
    return item;
  };
  Progress prog{o.source, n, o.progress, std::chrono::steady_clock::now(), 500};
  std::set<std::string> seen;
  run_ordered(n, resolve_threads(o.threads), produce, [&](size_t i, Item& item) {
    for (size_t k = 0; k < item.samples.size(); ++k) {
      if (!seen.insert(item.samples[k].key).second) {
        sink.fail(item.samples[k].key, "duplicate_key", "");
        continue;
      }
      sink.add(item.samples[k], item.splits[k]);
    }
    for (const auto& reason : item.failures) sink.fail(item.name, reason, item.detail);
    if (!item.ok && item.failures.empty()) sink.fail(item.name, item.reason, item.detail);
    prog.tick(i + 1);
  });
}

// ------------------------------------------------------------------------------------------------
// fashion-mnist
// ------------------------------------------------------------------------------------------------

/// Share of the original training set carved out as "val" (by split_of(key, 95, 5)).
constexpr int kFashionValPct = 5;

void build_fashion_mnist(const CorpusOptions& o, CorpusSink& sink, nlohmann::json& head, int64_t& considered) {
  const std::string dir = input_root(o);  // checked by check_input
  const auto& classes = fashion_mnist_classes();
  considered = 0;
  for (const std::string orig : {"train", "test"}) {
    const FashionMnist fm = load_fashion_mnist(dir, orig);
    size_t n = fm.size();
    if (o.limit > 0 && size_t(o.limit) < n) n = size_t(o.limit);
    considered += int64_t(n);
    const int64_t px = fm.rows * fm.cols;
    auto produce = [&](size_t i) -> Item {
      Item item;
      const std::string key = fmt::format("fmnist-{}-{:05d}", orig, i);
      item.name = key;
      cv::Mat img(int(fm.rows), int(fm.cols), CV_8UC1, const_cast<uint8_t*>(fm.images.data() + int64_t(i) * px));
      Sample s;
      if (!cv::imencode(".png", img, s.image)) {
        item.reason = "encode_failed";
        return item;
      }
      const int label = fm.labels[i];
      std::string split = orig;
      if (orig == "train") split = split_of(key, 100 - kFashionValPct, kFashionValPct) == "train" ? "train" : "val";
      s.key = key;
      s.image_ext = "png";
      s.label = label;
      s.text = classes[size_t(label)];
      s.meta = {{"source", "fashion-mnist"}, {"category", classes[size_t(label)]}, {"class_name", classes[size_t(label)]},
                {"original_split", orig},    {"index", i},                        {"split", split}};
      item.samples.push_back(std::move(s));
      item.splits.push_back(split);
      item.ok = true;
      return item;
    };
    Progress prog{"fashion-mnist " + orig, n, o.progress, std::chrono::steady_clock::now(), 10000};
    run_ordered(n, resolve_threads(o.threads), produce, [&](size_t i, Item& item) {
      if (item.ok)
        sink.add(item.samples[0], item.splits[0]);
      else
        sink.fail(item.name, item.reason, item.detail);
      prog.tick(i + 1);
    });
  }
  head["val_from_train_pct"] = kFashionValPct;
  head["classes"] = classes;
}

// The checks on a source's input that need no reading: run before the output folder is touched,
// so a missing package never costs an existing corpus its files (--overwrite removes them).
void check_input(const CorpusOptions& o) {
  if (o.source == "openclipart") {
    const std::string root = input_root(o);
    if (!fs::is_directory(root))
      throw Error("openclipart: '" + root + "' is not a directory (install Debian package openclipart-svg: scripts/setup)");
  } else if (o.source == "emoji" || o.source == "twemoji") {
    const fs::path json_path = fs::path(input_root(o)) / "emoji.json";
    if (!fs::is_regular_file(json_path))
      throw Error(o.source + ": '" + json_path.string() + "' not found (scripts/setup fetches " +
                  corpus_source(o.source).provided_by.substr(4) + " with npm pack into $FLORENCE_CACHE)");
  } else if (o.source != "fashion-mnist") {
    const std::string root = input_root(o);
    if (!fs::is_directory(root))
      throw Error(o.source + ": '" + root + "' is not a directory (" + corpus_source(o.source).provided_by +
                  ": scripts/setup installs it)");
  } else {
    const std::string dir = input_root(o);
    if (!fs::is_directory(dir))
      throw Error("fashion-mnist: '" + dir + "' is not a directory (install Debian package dataset-fashion-mnist: scripts/setup)");
  }
}

}  // namespace

nlohmann::json corpus_options_json(const CorpusOptions& o) {
  nlohmann::json opts = {{"limit", o.limit}, {"shard_size", o.shard_size}, {"input", o.input}};
  const CorpusSourceInfo info = corpus_source(o.source);
  if (o.source != "emoji" && o.source != "twemoji" && o.source != "fashion-mnist") {
    opts["size"] = o.size;
    opts["render_timeout_s"] = o.render_timeout_s;
  }
  if (!info.fields.empty()) opts["fields"] = detail::resolve_fields(o.source, o.fields);
  if (o.source == "emoji" || o.source == "twemoji") {
    opts["short_names"] = o.short_names;
    opts["package_version"] = kEmojiVersion;
  }
  return opts;
}

nlohmann::json build_corpus(const CorpusOptions& o) {
  const CorpusSourceInfo info = corpus_source(o.source);  // throws on an unknown source
  (void)detail::resolve_fields(o.source, o.fields);          // throws on a field the source lacks
  if (o.out_dir.empty()) throw Error("data build: --out is required");
  if (o.size < 8 || o.size > 4096) throw Error("data build: --size must be in [8, 4096]");
  if (o.shard_size < 1) throw Error("data build: --shard-size must be >= 1");
  if (o.limit < 0) throw Error("data build: --limit must be >= 0");
  if (o.render_timeout_s <= 0) throw Error("data build: render timeout must be > 0");
  check_input(o);
  const BuildLock lock(o.out_dir);  // one build per output folder at a time
  const auto t0 = std::chrono::steady_clock::now();
  CorpusSink sink(o);
  nlohmann::json head;
  head["source"] = o.source;
  head["out_dir"] = o.out_dir;
  head["threads"] = resolve_threads(o.threads);
  head["options"] = corpus_options_json(o);
  head["provided_by"] = info.provided_by;
  head["license"] = info.license;
  head["class_field"] = info.class_field;
  int64_t considered = 0;
  try {
    if (o.source == "openclipart") build_openclipart(o, sink, head, considered);
    else if (o.source == "emoji" || o.source == "twemoji") build_emoji(o, sink, head, considered);
    else if (o.source == "fashion-mnist") build_fashion_mnist(o, sink, head, considered);
    else build_listed(o, sink, head, considered);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    nlohmann::json summary = sink.finish(std::move(head), considered, secs);
    sink.commit();
    return summary;
  } catch (...) {
    sink.restore();
    throw;
  }
}

std::string format_corpus_summary(const nlohmann::json& s) {
  std::string out;
  out += fmt::format("source      {}  ->  {}\n", s.value("source", ""), s.value("out_dir", ""));
  out += fmt::format("considered  {}   written {}   failed {}   ({:.1f} s, {} threads)\n", s.value("considered", 0),
                     s.value("samples", 0), s.value("failed_total", 0), s.value("seconds", 0.0), s.value("threads", 0));
  if (s.contains("splits")) {
    out += "splits     ";
    for (const char* k : kSplits)
      out += fmt::format(" {} {} ({} shards)", k, s["splits"].value(k, 0), s.contains("shards") ? s["shards"].value(k, 0) : 0);
    out += "\n";
  }
  if (s.contains("failures") && !s["failures"].empty()) {
    out += "failures   ";
    for (auto& [k, v] : s["failures"].items()) out += fmt::format(" {} {}", k, v.get<int64_t>());
    out += "\n";
  }
  if (s.contains("categories")) {
    out += fmt::format("categories  {}\n", s["categories"].size());
    std::vector<std::pair<int64_t, std::string>> cats;
    for (auto& [k, v] : s["categories"].items()) cats.emplace_back(v.get<int64_t>(), k);
    std::sort(cats.begin(), cats.end(), [](auto& a, auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
    for (size_t i = 0; i < cats.size() && i < 12; ++i) out += fmt::format("  {:>7}  {}\n", cats[i].first, cats[i].second);
    if (cats.size() > 12) out += fmt::format("  ... {} more\n", cats.size() - 12);
  }
  return out;
}

}  // namespace florence::data
