// `florence index build|add|reindex|info` (see builder.h).
#include "florence/search/builder.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <unordered_map>

#include "florence/core/error.h"
#include "florence/data/loader.h"
#include "florence/data/webdataset.h"
#include "florence/eval/embed.h"
#include "florence/search/store.h"
#include "florence/search/thumbnail.h"
#include "florence/text/tokenizer.h"
#include "florence/train/run_state.h"

namespace fs = std::filesystem;

namespace florence::search {

namespace {

using Clock = std::chrono::steady_clock;

/// One input resolved into a sample source.
struct Input {
  std::string spec;  // absolute
  std::shared_ptr<data::SampleSource> source;
  std::vector<std::string> shards;  // non-empty for shard inputs (one chunk per shard)
};

bool holds_tar(const fs::path& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().extension() == ".tar") return true;
  return false;
}

Input resolve_input(const std::string& spec) {
  Input in;
  const fs::path p(spec);
  in.spec = spec.find('{') != std::string::npos || spec.find("::") != std::string::npos
                ? spec
                : fs::absolute(p).lexically_normal().string();
  std::error_code ec;
  const std::string ext = p.extension().string();
  if (fs::is_directory(p, ec) && !holds_tar(p)) {
    // A corpus root: split folders holding shards.
    std::vector<fs::path> splits;
    for (const auto& e : fs::directory_iterator(p, ec))
      if (e.is_directory() && holds_tar(e.path())) splits.push_back(e.path());
    std::sort(splits.begin(), splits.end());
    for (const auto& s : splits)
      for (auto& sh : data::list_shards(s.string())) in.shards.push_back(sh);
  } else if (fs::is_directory(p, ec) || ext == ".tar" || spec.find('{') != std::string::npos ||
             spec.find("::") != std::string::npos) {
    in.shards = data::list_shards(spec);
  }
  if (!in.shards.empty()) {
    in.source = std::make_shared<data::ShardSource>(in.shards);
  } else if (ext == ".jsonl" || ext == ".tsv" || ext == ".json") {
    in.source = std::make_shared<data::ManifestSource>(spec);
  } else {
    in.source = eval::image_inputs({spec});
  }
  if (in.source->num_parts() == 0) throw Error("input '" + spec + "' holds no images");
  return in;
}

/// The chunks of the inputs: {"input", "parts": [begin, end), "what"}.
nlohmann::json plan_chunks(const std::vector<Input>& inputs, int64_t chunk_size) {
  nlohmann::json chunks = nlohmann::json::array();
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto& in = inputs[i];
    const int64_t parts = int64_t(in.source->num_parts());
    if (!in.shards.empty()) {
      for (int64_t p = 0; p < parts; ++p)
        chunks.push_back({{"input", i}, {"parts", {p, p + 1}}, {"what", "shard " + in.shards[size_t(p)]}});
      continue;
    }
    for (int64_t p = 0; p < parts; p += chunk_size) {
      const int64_t e = std::min(parts, p + chunk_size);
      chunks.push_back({{"input", i},
                        {"parts", {p, e}},
                        {"what", "items " + std::to_string(p) + ".." + std::to_string(e - 1) + " of " + in.spec}});
    }
  }
  return chunks;
}

/// What the loader needs to know about a sample it does not carry (Batch has keys and texts only).
struct Record {
  int64_t chunk = 0;  // plan index
  ImageRow row;
  std::string thumb;
};

/// The parts of the pending chunks as one source. Each emitted sample's key is replaced by a
/// sequence number (unique) and its metadata and thumbnail are kept here until the embedding
/// loop takes them; its text is cleared (the loader would drop invalid UTF-8; captions are
/// stored, repaired, here instead).
class PlanSource : public data::SampleSource {
 public:
  struct ChunkAcc {
    int64_t emitted = 0;
    data::SkipCounts skips;  // read-time
    std::vector<int64_t> seqs;
  };

  PlanSource(const std::vector<Input>& inputs, const nlohmann::json& chunks, int64_t from, int thumb_size,
             int64_t max_pixels)
      : thumb_size_(thumb_size), max_pixels_(max_pixels) {
    for (const auto& in : inputs) srcs_.push_back(in.source);
    for (int64_t c = from; c < int64_t(chunks.size()); ++c) {
      const auto& ch = chunks[size_t(c)];
      const int src = ch.at("input").get<int>();
      for (int64_t p = ch.at("parts")[0].get<int64_t>(); p < ch.at("parts")[1].get<int64_t>(); ++p)
        refs_.push_back({src, size_t(p), c});
    }
  }
  size_t num_parts() const override { return refs_.size(); }
  std::string describe() const override { return std::to_string(refs_.size()) + " parts of the index plan"; }

  void read_part(size_t part, const std::function<bool(data::Sample&)>& emit, data::SkipCounts& skips) const override {
    if (part >= refs_.size()) throw Error("index plan: part " + std::to_string(part) + " out of range");
    const Ref& r = refs_[part];
    data::SkipCounts local;
    srcs_[size_t(r.src)]->read_part(r.part, [&](data::Sample& s) {
      Record rec;
      rec.chunk = r.chunk;
      rec.row.key = s.key;
      const std::string suffix = ":" + s.key;  // shard samples: origin = "SHARD:KEY"
      rec.row.source = s.origin.size() > suffix.size() && s.origin.compare(s.origin.size() - suffix.size(), suffix.size(), suffix) == 0
                           ? s.origin.substr(0, s.origin.size() - suffix.size())
                           : s.origin;
      rec.row.caption = text::find_invalid_utf8(s.text) < 0 ? s.text : text::utf8_decode_replace(s.text);
      if (!s.meta.empty()) rec.row.meta = s.meta;
      Thumbnail t = make_thumbnail(s.image, thumb_size_, max_pixels_);
      rec.row.width = t.width;
      rec.row.height = t.height;
      rec.row.thumb_type = t.mime;
      rec.thumb = std::move(t.bytes);
      const int64_t seq = next_seq_++;
      {
        std::lock_guard<std::mutex> lock(mu_);
        records_.emplace(seq, std::move(rec));
        ChunkAcc& a = acc_[r.chunk];
        a.emitted++;
        a.seqs.push_back(seq);
      }
      s.key = std::to_string(seq);
      s.text.clear();
      return emit(s);
    }, local);
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [k, v] : local) {
      skips[k] += v;
      acc_[r.chunk].skips[k] += v;
    }
    parts_read_++;
  }

  Record take(int64_t seq) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = records_.find(seq);
    if (it == records_.end()) throw Error("index plan: unknown sample " + std::to_string(seq));
    Record r = std::move(it->second);
    records_.erase(it);
    return r;
  }
  /// Removes what is left of chunk c (samples the loader dropped) and returns its tallies.
  ChunkAcc finish_chunk(int64_t c) {
    std::lock_guard<std::mutex> lock(mu_);
    ChunkAcc a = std::move(acc_[c]);
    acc_.erase(c);
    for (int64_t s : a.seqs) records_.erase(s);
    return a;
  }
  int64_t parts_read() const { return parts_read_.load(); }

 private:
  struct Ref {
    int src;
    size_t part;
    int64_t chunk;
  };
  std::vector<std::shared_ptr<data::SampleSource>> srcs_;
  std::vector<Ref> refs_;
  int thumb_size_;
  int64_t max_pixels_;
  mutable std::mutex mu_;
  mutable std::unordered_map<int64_t, Record> records_;
  mutable std::map<int64_t, ChunkAcc> acc_;
  mutable std::atomic<int64_t> next_seq_{0};
  mutable std::atomic<int64_t> parts_read_{0};
};

std::string format_eta(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const int64_t t = int64_t(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(t / 3600), (long long)(t / 60 % 60));
  else std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  return buf;
}

/// A one-line progress bar on a terminal (else a log line every 10 s): parts read, images, img/s, ETA.
class Progress {
 public:
  Progress(int64_t total_parts, int mode) : total_(total_parts), bar_(mode == 1 || (mode < 0 && isatty(STDERR_FILENO))) {}
  void update(int64_t parts, int64_t images, bool force = false) {
    const auto now = Clock::now();
    const double el = std::chrono::duration<double>(now - start_).count();
    if (!force && std::chrono::duration<double>(now - last_).count() < (bar_ ? 0.25 : 10.0)) return;
    last_ = now;
    const double frac = total_ > 0 ? double(parts) / double(total_) : 1.0;
    const double rate = el > 0 ? double(images) / el : 0;
    const std::string eta = frac > 0 ? format_eta(el / frac * (1 - frac)) : "?";
    if (bar_) {
      const int width = 30, fill = int(frac * width);
      std::fprintf(stderr, "\r[%s%s] %3d%%  %lld/%lld parts  %lld images  %.1f img/s  ETA %s   ",
                   std::string(size_t(fill), '#').c_str(), std::string(size_t(width - fill), ' ').c_str(),
                   int(frac * 100), (long long)parts, (long long)total_, (long long)images, rate, eta.c_str());
      open_ = true;
    } else {
      spdlog::info("index: {}/{} parts read, {} images embedded, {:.1f} img/s, ETA {}", parts, total_, images, rate, eta);
    }
  }
  void close() {
    if (open_) std::fprintf(stderr, "\n");
    open_ = false;
  }
  ~Progress() { close(); }

 private:
  int64_t total_;
  bool bar_, open_ = false;
  Clock::time_point start_ = Clock::now(), last_ = Clock::time_point{};
};

nlohmann::json comparable(nlohmann::json id) {
  id.erase("temperature");
  id.erase("vocab");
  id.erase("precision");  // bf16 / amp_bf16 embeddings stay within cosine 0.999 of fp32 (docs/performance.md)
  if (id.contains("preprocess")) id["preprocess"].erase("batch_size");
  return id;
}

void check_same_model(const IndexStore& store, const eval::EvalModel& m) {
  const nlohmann::json have = comparable(store.model()), want = comparable(model_identity(m));
  if (have != want)
    throw Error("index '" + store.dir() + "' was embedded by " + have.dump() + " but the model given is " + want.dump() +
                "; embeddings of different models cannot share an index (pass the index's --checkpoint and preprocessing)");
}

std::vector<Input> resolve_inputs(const std::vector<std::string>& specs) {
  if (specs.empty()) throw Error("index: no inputs given");
  std::vector<Input> inputs;
  for (const auto& s : specs) inputs.push_back(resolve_input(s));
  return inputs;
}

nlohmann::json specs_of(const std::vector<Input>& inputs) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& in : inputs) j.push_back(in.spec);
  return j;
}

/// Embeds plan chunks [done, end) into the store. Returns false when interrupted.
bool embed_chunks(eval::EvalModel& m, IndexStore& store, const std::vector<Input>& inputs, const nlohmann::json& plan,
                  const BuildOptions& o, BuildReport& rep) {
  const nlohmann::json& chunks = plan.at("chunks");
  const int64_t first_id = plan.at("first_chunk").get<int64_t>();
  const int64_t n_chunks = int64_t(chunks.size());
  const int64_t done = store.next_chunk_id() - first_id;
  rep.chunks_planned = n_chunks;
  rep.chunks_resumed = done;
  if (done > 0) spdlog::info("index: resuming: {} of {} chunks already done", done, n_chunks);
  if (done >= n_chunks) return true;

  data::LoaderOptions lo = eval::eval_loader_options(m, /*require_text=*/false);
  auto src = std::make_shared<PlanSource>(inputs, chunks, done, o.thumb_size, lo.max_pixels);
  data::Loader loader(src, lo, nullptr);
  Progress progress(int64_t(src->num_parts()), o.progress);

  struct Pending {
    std::vector<torch::Tensor> embeds;
    std::vector<ImageRow> rows;
    std::string thumbs;
  };
  std::map<int64_t, Pending> pending;
  int64_t next_flush = done;
  auto flush_until = [&](int64_t end) {  // chunks [next_flush, end) are complete
    for (; next_flush < end; ++next_flush) {
      Pending p = std::move(pending[next_flush]);
      pending.erase(next_flush);
      PlanSource::ChunkAcc acc = src->finish_chunk(next_flush);
      std::map<std::string, int64_t> skipped(acc.skips.begin(), acc.skips.end());
      if (const int64_t dropped = acc.emitted - int64_t(p.rows.size()); dropped > 0) skipped["not_decoded"] += dropped;
      torch::Tensor e = p.embeds.empty() ? torch::zeros({0, store.dim()}) : torch::stack(p.embeds);
      if (store.next_chunk_id() != first_id + next_flush) throw Error("index: chunk order broken (internal error)");
      store.append_chunk(e, p.rows, p.thumbs, chunks[size_t(next_flush)].at("what").get<std::string>(), skipped);
      rep.chunks_done++;
    }
  };

  const auto t0 = Clock::now();
  torch::NoGradGuard ng;
  loader.start_epoch(0);
  data::Batch b;
  bool interrupted = false;
  int64_t max_chunk = done;
  while (loader.next(b)) {
    torch::Tensor e = m.model->encode_image(b.images.to(m.device)).to(torch::kCPU, torch::kFloat);
    for (int64_t i = 0; i < b.size(); ++i) {
      Record r = src->take(std::stoll(b.keys[size_t(i)]));
      Pending& p = pending[r.chunk];
      if (!r.thumb.empty()) {
        r.row.thumb_offset = int64_t(p.thumbs.size());
        r.row.thumb_size = int32_t(r.thumb.size());
        p.thumbs += r.thumb;
      }
      p.rows.push_back(std::move(r.row));
      p.embeds.push_back(e[i]);
      max_chunk = std::max(max_chunk, r.chunk);
    }
    rep.rows_added += b.size();
    flush_until(max_chunk);
    progress.update(src->parts_read(), rep.rows_added);
    if (o.handle_signals && train::StopSignalScope::signal() != 0) {
      interrupted = true;
      break;
    }
  }
  loader.stop();
  if (!interrupted) flush_until(n_chunks);
  progress.update(src->parts_read(), rep.rows_added, true);
  progress.close();
  rep.embed_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  rep.images_per_second = rep.embed_seconds > 0 ? double(rep.rows_added) / rep.embed_seconds : 0;
  for (const auto& [k, v] : loader.stats().skipped) rep.skipped[k] += v;
  if (interrupted) {
    // Rows of unfinished chunks are redone on resume; count only what was written.
    int64_t unwritten = 0;
    for (const auto& [c, p] : pending) unwritten += int64_t(p.rows.size());
    rep.rows_added -= unwritten;
  }
  spdlog::info("index: embedded {} images in {:.1f} s ({:.1f} img/s), {} chunks written{}", rep.rows_added, rep.embed_seconds,
               rep.images_per_second, rep.chunks_done, interrupted ? " - interrupted, rerun the same command to resume" : "");
  return !interrupted;
}

BuildReport run_plan(eval::EvalModel& m, IndexStore& store, const std::vector<Input>& inputs, const nlohmann::json& plan,
                     const BuildOptions& o, bool extend) {
  BuildReport rep;
  train::StopSignalScope signals(o.handle_signals);
  if (!embed_chunks(m, store, inputs, plan, o, rep)) {
    rep.interrupted = true;
    rep.rows_total = store.rows();
    return rep;
  }
  store.finish_pending();
  rep.knn = extend && !store.knn().is_null() ? extend_knn(store) : build_knn(store, o.knn);
  rep.rows_total = store.rows();
  return rep;
}

/// The sources list of the manifest with one more entry.
nlohmann::json plan_for(const IndexStore& store, const std::string& command, const std::vector<Input>& inputs,
                        const BuildOptions& o) {
  return {{"command", command},
          {"inputs", specs_of(inputs)},
          {"chunk_size", o.chunk_size},
          {"thumb_size", o.thumb_size},
          {"first_chunk", store.next_chunk_id()},
          {"chunks", plan_chunks(inputs, o.chunk_size)}};
}

/// Resumes store's pending plan when it is `command` over the same inputs; throws when it is another.
bool resume_pending(IndexStore& store, const std::string& command, const std::vector<Input>& inputs, const BuildOptions& o) {
  const nlohmann::json& p = store.pending();
  if (p.is_null()) return false;
  const nlohmann::json now = plan_chunks(inputs, p.value("chunk_size", o.chunk_size));
  if (p.at("command") != command || p.at("inputs") != specs_of(inputs))
    throw Error("index '" + store.dir() + "' has an unfinished `index " + p.at("command").get<std::string>() + "` of " +
                p.at("inputs").dump() + "; rerun that command to finish it first");
  if (p.at("chunks") != now)
    throw Error("the inputs of the unfinished `index " + command + "` in '" + store.dir() +
                "' changed since it started (other files or shards); restore them, or start a new index");
  return true;
}

}  // namespace

nlohmann::json BuildReport::to_json() const {
  return {{"rows_added", rows_added},     {"rows_total", rows_total},         {"chunks_done", chunks_done},
          {"chunks_resumed", chunks_resumed}, {"chunks_planned", chunks_planned}, {"skipped", skipped},
          {"embed_seconds", embed_seconds},   {"images_per_second", images_per_second},
          {"interrupted", interrupted},       {"knn", knn}};
}

nlohmann::json model_identity(const eval::EvalModel& m) {
  nlohmann::json id = m.describe();
  if (!m.checkpoint.empty()) id["checkpoint"] = fs::absolute(m.checkpoint).lexically_normal().string();
  return id;
}

eval::LoadOptions index_load_options(const std::string& dir, eval::LoadOptions o) {
  const IndexStore store = IndexStore::open(dir);
  const nlohmann::json& model = store.model();
  if (o.checkpoint.empty()) {
    o.checkpoint = model.value("checkpoint", std::string());
    if (o.checkpoint.empty()) throw Error("index '" + dir + "' records no checkpoint; pass --checkpoint");
  }
  if (o.vocab.empty()) o.vocab = model.value("vocab", std::string());
  const nlohmann::json pre = model.value("preprocess", nlohmann::json::object());
  try {
    if (o.preprocess.image_size <= 0 && pre.contains("image_size")) o.preprocess.image_size = pre["image_size"].get<int>();
    if (!o.preprocess.crop_pct && pre.contains("crop_pct")) o.preprocess.crop_pct = pre["crop_pct"].get<double>();
    if (!o.preprocess.mean && pre.contains("mean")) o.preprocess.mean = pre["mean"].get<std::array<float, 3>>();
    if (!o.preprocess.std && pre.contains("std")) o.preprocess.std = pre["std"].get<std::array<float, 3>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(dir + "/index.json: bad model.preprocess: " + e.what());
  }
  return o;
}

BuildReport build_index(eval::EvalModel& m, const std::string& dir, const BuildOptions& o) {
  if (o.chunk_size < 1) throw Error("index: --chunk-size must be >= 1");
  const std::vector<Input> inputs = resolve_inputs(o.inputs);
  if (!IndexStore::exists(dir)) {
    nlohmann::json id = model_identity(m);
    if (!o.vocab.empty()) id["vocab"] = fs::absolute(o.vocab).lexically_normal().string();
    IndexStore store = IndexStore::create(dir, m.embed_dim(), id);
    nlohmann::json plan = plan_for(store, "build", inputs, o);
    store.set_pending(plan);
    spdlog::info("index: {} inputs, {} chunks -> {}", inputs.size(), plan["chunks"].size(), dir);
    return run_plan(m, store, inputs, plan, o, false);
  }
  IndexStore store = IndexStore::open(dir);
  check_same_model(store, m);
  if (resume_pending(store, "build", inputs, o)) {
    nlohmann::json plan = store.pending();
    return run_plan(m, store, inputs, plan, o, false);
  }
  // A finished index: the same build again only (re)builds a missing or stale FAISS index.
  const nlohmann::json built = store.manifest().value("built_from", nlohmann::json());
  if (built.is_null() && store.pending().is_null() && store.chunks().empty()) {
    // Created, but the first build's plan was never recorded (e.g. the disk filled right after
    // index.json): start that build now.
    nlohmann::json plan = plan_for(store, "build", inputs, o);
    store.set_pending(plan);
    spdlog::info("index: '{}' holds no build yet; building {} inputs, {} chunks", dir, inputs.size(), plan["chunks"].size());
    return run_plan(m, store, inputs, plan, o, false);
  }
  if (built != specs_of(inputs))
    throw Error("'" + dir + "' already holds an index built from " + built.dump() +
                "; use `florence index add` to append other images, or another folder");
  BuildReport rep;
  rep.rows_total = store.rows();
  rep.chunks_planned = rep.chunks_resumed = int64_t(store.chunks().size());
  const nlohmann::json& knn = store.knn();
  if (knn.is_null() || knn.value("rows", int64_t(-1)) != store.rows() || !fs::is_regular_file(store.knn_path())) {
    rep.knn = build_knn(store, o.knn);
  } else {
    spdlog::info("index: '{}' is complete ({} rows); nothing to do (`florence index reindex` rebuilds the FAISS index)", dir,
                 store.rows());
    rep.knn = knn;
  }
  return rep;
}

BuildReport add_to_index(eval::EvalModel& m, const std::string& dir, const BuildOptions& o) {
  if (o.chunk_size < 1) throw Error("index: --chunk-size must be >= 1");
  IndexStore store = IndexStore::open(dir);
  check_same_model(store, m);
  const std::vector<Input> inputs = resolve_inputs(o.inputs);
  if (!resume_pending(store, "add", inputs, o)) {
    for (const auto& s : store.manifest().value("added", nlohmann::json::array()))
      if (s == specs_of(inputs)) {
        // Finished before (a rerun to resume an add that had already ended): only the FAISS
        // index may lag behind, when the earlier call stopped while extending it.
        spdlog::info("index: these inputs were already added to '{}'; nothing to embed", dir);
        BuildReport rep;
        rep.rows_total = store.rows();
        rep.knn = store.knn().is_null() ? build_knn(store, o.knn)
                  : store.knn().value("rows", int64_t(-1)) != store.rows() ? extend_knn(store)
                                                                           : store.knn();
        return rep;
      }
    store.set_pending(plan_for(store, "add", inputs, o));
  }
  nlohmann::json plan = store.pending();
  BuildReport rep = run_plan(m, store, inputs, plan, o, true);
  return rep;
}

nlohmann::json reindex(const std::string& dir, const KnnBuildOptions& options) {
  IndexStore store = IndexStore::open(dir);
  if (!store.pending().is_null())
    throw Error("index '" + dir + "' has an unfinished `index " + store.pending().value("command", std::string("build")) +
                "`; finish it first");
  return build_knn(store, options);
}

nlohmann::json index_info(const std::string& dir) {
  IndexStore store = IndexStore::open(dir);
  std::map<std::string, int64_t> skipped;
  for (const auto& c : store.chunks())
    for (const auto& [k, v] : c.skipped.items()) skipped[k] += v.get<int64_t>();
  std::map<std::string, int64_t> disk;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(dir) / "chunks", ec))
    if (e.is_regular_file()) disk[e.path().extension().string().substr(1)] += int64_t(e.file_size());
  if (fs::is_regular_file(store.knn_path())) disk["knn.index"] = int64_t(fs::file_size(store.knn_path()));
  nlohmann::json j{{"dir", dir},
                   {"rows", store.rows()},
                   {"dim", store.dim()},
                   {"chunks", store.chunks().size()},
                   {"skipped", skipped},
                   {"model", store.model()},
                   {"knn", store.knn()},
                   {"disk_bytes", disk},
                   {"built_from", store.manifest().value("built_from", nlohmann::json())},
                   {"added", store.manifest().value("added", nlohmann::json::array())}};
  if (!store.pending().is_null()) {
    const auto& p = store.pending();
    j["unfinished"] = {{"command", p.at("command")},
                       {"inputs", p.at("inputs")},
                       {"chunks_done", store.next_chunk_id() - p.at("first_chunk").get<int64_t>()},
                       {"chunks_planned", p.at("chunks").size()}};
  }
  return j;
}

}  // namespace florence::search
