// Near-duplicate quality and speed (issue 5 benchmark; not a test).
//
//   bench_neardup [--input SPEC] [--distinct SPEC] [--originals N] [--distinct-count N]
//                 [--threads N] [--scale N] [--seed S] [--json FILE] [--checkpoint FILE]
//                 [--dump-embeddings FILE.safetensors]
//
// Quality: N real originals (default: the first 300 OpenClipArt renders of data/openclipart/train
// that are neither marked duplicate_of by the corpus builder nor pixel-identical to an earlier one)
// each get seven planted copies - resized (0.5-0.8x, INTER_AREA), re-encoded as JPEG at quality
// 20-40, cropped (keeping 88-95% of each side at a random offset), a 5% crop (95% of each side),
// brightness-shifted (+-15..35 grey levels), blurred (Gaussian, sigma 1-2 px) and mirrored
// left-right - plus M distinct real images with no copy (default: the next 300 renders and the
// first 200 emoji of data/emoji/train). Ground truth: a pair is a duplicate iff both images come
// from the same original. For pHash and dHash and thresholds 0..16 it prints pair precision and
// recall (pairs within the threshold, found by the multi-index hash and checked against brute
// force), recall per edit (original-copy pairs), the false pairs and the pictures they merge (an
// original with its copies counts once).
// With --checkpoint, the same for the cosine similarity of the checkpoint's image embeddings
// (eval preprocessing) at thresholds 0.80..0.99, and for pHash <= 10 OR cosine >= c.
// Speed: decode + hash throughput (images/s, all threads), and the index on `--scale` synthetic
// hashes (default 1,000,000: random hashes with planted clusters): build time, leader clustering
// time, candidates per query, bytes of index per image.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <torch/torch.h>

#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/curate/cluster.h"
#include "florence/curate/hamming_index.h"
#include "florence/curate/phash.h"
#include "florence/data/readers.h"
#include "florence/data/transforms.h"
#include "florence/data/webdataset.h"
#include "florence/eval/encode.h"
#include "support/args.h"
#include "unit/curate/real_images.h"
#include "support/paths.h"

using namespace florence;
using Clock = std::chrono::steady_clock;

namespace {

double secs(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Image {
  std::vector<uint8_t> bytes;  // encoded
  int group = -1;              // original index, -1 for distinct images
  std::string edit;            // "original", "resize", "jpeg", "crop", "brightness", "distinct"
  std::string key;
};

using curate_test::encode;  // PNG, or JPEG at a quality > 0

/// Up to `n` samples of a shard spec, skipping those marked duplicate_of and exact pixel copies of
/// earlier ones (and of `seen`).
std::vector<data::Sample> take(const std::string& spec, size_t n, size_t skip, std::set<std::pair<uint64_t, uint64_t>>& seen) {
  std::vector<data::Sample> out;
  size_t skipped = 0;
  for (const auto& path : data::list_shards(spec)) {
    data::ShardReader r(path);
    data::Sample s;
    while (out.size() < n && r.next(s)) {
      if (s.meta.contains("duplicate_of")) continue;
      const curate::PixelHash h = curate::pixel_hash(data::decode_rgb(s.image));
      if (!seen.insert({h.high, h.low}).second) continue;
      if (skipped < skip) {
        ++skipped;
        continue;
      }
      out.push_back(s);
    }
    if (out.size() >= n) break;
  }
  return out;
}

struct Metrics {
  int64_t tp = 0, fp = 0, fn = 0;
  std::map<std::string, std::pair<int64_t, int64_t>> by_edit;  // edit -> (found, total) for original-copy pairs
  int64_t merged = 0;  // pictures (a planted original with its copies, or a distinct image) in a false pair
  double precision() const { return tp + fp == 0 ? 1.0 : double(tp) / double(tp + fp); }
  double recall() const { return tp + fn == 0 ? 1.0 : double(tp) / double(tp + fn); }
};

const std::vector<std::string> kEdits = {"resize", "jpeg", "crop", "crop5", "brightness", "blur", "flip"};

/// Scores pairs (i < j) against the ground truth.
Metrics evaluate_pairs(const std::vector<Image>& imgs, const std::set<std::pair<uint32_t, uint32_t>>& found) {
  Metrics m;
  std::set<int64_t> merged;  // a picture: its group, or -1 - index for a distinct image
  const auto picture = [&](uint32_t i) { return imgs[i].group >= 0 ? int64_t(imgs[i].group) : -1 - int64_t(i); };
  for (const auto& [i, j] : found) {
    if (imgs[i].group >= 0 && imgs[i].group == imgs[j].group) {
      ++m.tp;
    } else {
      ++m.fp;
      merged.insert(picture(i)), merged.insert(picture(j));
    }
  }
  m.merged = int64_t(merged.size());
  // Positives: all pairs within a group.
  std::map<int, std::vector<uint32_t>> groups;
  for (uint32_t i = 0; i < imgs.size(); ++i)
    if (imgs[i].group >= 0) groups[imgs[i].group].push_back(i);
  int64_t positives = 0;
  for (const auto& [g, members] : groups) {
    positives += int64_t(members.size() * (members.size() - 1) / 2);
    for (uint32_t a : members) {
      if (imgs[a].edit != "original") continue;
      for (uint32_t b : members) {
        if (b == a) continue;
        auto& e = m.by_edit[imgs[b].edit];
        ++e.second;
        if (found.count({std::min(a, b), std::max(a, b)})) ++e.first;
      }
    }
  }
  m.fn = positives - m.tp;
  return m;
}

std::set<std::pair<uint32_t, uint32_t>> hash_pairs(const std::vector<uint64_t>& h, int t, int threads) {
  const auto pairs = curate::index_pairs(curate::HammingIndex(h, t), t, threads);
  return {pairs.begin(), pairs.end()};
}

/// Pairs (i < j) whose cosine similarity (rows of L2-normalised e [N, D]) is >= c.
std::set<std::pair<uint32_t, uint32_t>> cosine_pairs(const torch::Tensor& sim, double c) {
  std::set<std::pair<uint32_t, uint32_t>> out;
  const torch::Tensor ij = torch::triu(sim >= c, 1).nonzero();
  const auto a = ij.accessor<int64_t, 2>();
  for (int64_t r = 0; r < ij.size(0); ++r) out.insert({uint32_t(a[r][0]), uint32_t(a[r][1])});
  return out;
}

double edit_recall(const Metrics& m, const std::string& e) {
  auto it = m.by_edit.find(e);
  return it == m.by_edit.end() || it->second.second == 0 ? 0.0 : double(it->second.first) / double(it->second.second);
}

/// One printed row and its JSON.
nlohmann::json report_row(const char* kind, const std::string& threshold, const Metrics& m) {
  const double p = m.precision(), r = m.recall(), f1 = p + r > 0 ? 2 * p * r / (p + r) : 0;
  std::printf("%-7s %9s  %9.4f  %7.4f  %6.4f |", kind, threshold.c_str(), p, r, f1);
  nlohmann::json row{{"threshold", threshold}, {"precision", p}, {"recall", r}, {"f1", f1}, {"tp", m.tp},
                     {"fp", m.fp},            {"fn", m.fn},      {"merged", m.merged}};
  for (const auto& e : kEdits) {
    std::printf(" %6.3f", edit_recall(m, e));
    row["recall_" + e] = edit_recall(m, e);
  }
  std::printf(" | %5lld %6lld\n", (long long)m.fp, (long long)m.merged);
  return row;
}

void print_header(const char* kind) {
  std::printf("\n%-7s threshold  precision  recall    F1   | recall by edit:", kind);
  for (const auto& e : kEdits) std::printf(" %6s", e.substr(0, 6).c_str());
  std::printf(" | false merged\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string input = std::string(FLORENCE_SOURCE_DIR) + "/data/openclipart/train";
  std::string distinct_spec = std::string(FLORENCE_SOURCE_DIR) + "/data/emoji/train";
  size_t n_orig = 300, n_distinct = 300, n_emoji = 200;
  int threads = int(std::thread::hardware_concurrency());
  size_t scale = 1000000;
  uint64_t seed = 0;
  std::string json_path, checkpoint, dump;
  try {  // bad arguments (a missing value, a non-number) end in the catch below
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&] { return florence::test::arg_value(i, argc, argv); };
      if (a == "--input") input = value();
      else if (a == "--distinct") distinct_spec = value();
      else if (a == "--originals") n_orig = std::stoul(value());
      else if (a == "--distinct-count") n_distinct = std::stoul(value());
      else if (a == "--emoji-count") n_emoji = std::stoul(value());
      else if (a == "--threads") threads = std::stoi(value());
      else if (a == "--scale") scale = std::stoul(value());
      else if (a == "--seed") seed = std::stoull(value());
      else if (a == "--json") json_path = value();
      else if (a == "--checkpoint") checkpoint = value();
      else if (a == "--dump-embeddings") dump = value();
      else {
        std::fprintf(stderr, "unknown argument %s\n", a.c_str());
        return 2;
      }
    }
    std::set<std::pair<uint64_t, uint64_t>> seen;
    const auto originals = take(input, n_orig, 0, seen);
    const auto distinct = take(input, n_distinct, 0, seen);
    std::vector<data::Sample> emoji;
    if (n_emoji > 0 && std::filesystem::exists(distinct_spec)) emoji = take(distinct_spec, n_emoji, 0, seen);
    std::printf("near-dup benchmark: %zu originals x %zu (original + edits), %zu distinct renders, %zu distinct emoji\n",
                originals.size(), kEdits.size() + 1, distinct.size(), emoji.size());

    std::mt19937_64 rng(seed);
    auto uni = [&](double lo, double hi) { return lo + (hi - lo) * data::uniform01(rng); };
    std::vector<Image> imgs;
    for (size_t g = 0; g < originals.size(); ++g) {
      const cv::Mat rgb = data::decode_rgb(originals[g].image);
      imgs.push_back({originals[g].image, int(g), "original", originals[g].key});
      cv::Mat small;
      const double s = uni(0.5, 0.8);
      cv::resize(rgb, small, cv::Size(std::max(8, int(rgb.cols * s)), std::max(8, int(rgb.rows * s))), 0, 0, cv::INTER_AREA);
      imgs.push_back({encode(small), int(g), "resize", originals[g].key + "#resize"});
      imgs.push_back({encode(rgb, int(uni(20, 40))), int(g), "jpeg", originals[g].key + "#jpeg"});
      const double kw = uni(0.88, 0.95), kh = uni(0.88, 0.95);
      const int cw = int(rgb.cols * kw), ch = int(rgb.rows * kh);
      const int x0 = int(uni(0, rgb.cols - cw + 0.999)), y0 = int(uni(0, rgb.rows - ch + 0.999));
      imgs.push_back({encode(rgb(cv::Rect(x0, y0, cw, ch)).clone()), int(g), "crop", originals[g].key + "#crop"});
      const int c5w = std::max(1, int(std::lround(rgb.cols * 0.95))), c5h = std::max(1, int(std::lround(rgb.rows * 0.95)));
      const int x5 = int(uni(0, rgb.cols - c5w + 0.999)), y5 = int(uni(0, rgb.rows - c5h + 0.999));
      imgs.push_back({encode(rgb(cv::Rect(x5, y5, c5w, c5h)).clone()), int(g), "crop5", originals[g].key + "#crop5"});
      cv::Mat b;
      const double shift = uni(15, 35) * (data::uniform01(rng) < 0.5 ? -1 : 1);
      rgb.convertTo(b, -1, 1.0, shift);
      imgs.push_back({encode(b), int(g), "brightness", originals[g].key + "#brightness"});
      cv::Mat blurred, flipped;
      cv::GaussianBlur(rgb, blurred, cv::Size(0, 0), uni(1.0, 2.0));
      imgs.push_back({encode(blurred), int(g), "blur", originals[g].key + "#blur"});
      cv::flip(rgb, flipped, 1);
      imgs.push_back({encode(flipped), int(g), "flip", originals[g].key + "#flip"});
    }
    for (const auto& s : distinct) imgs.push_back({s.image, -1, "distinct", s.key});
    for (const auto& s : emoji) imgs.push_back({s.image, -1, "distinct", s.key});

    // Hash throughput: decode + pixel hash + pHash + dHash, all threads.
    std::vector<uint64_t> ph(imgs.size()), dh(imgs.size());
    auto t0 = Clock::now();
    curate::parallel_ranges(imgs.size(), threads, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) {
        const cv::Mat rgb = data::decode_rgb(imgs[i].bytes);
        (void)curate::pixel_hash(rgb);
        ph[i] = curate::phash(rgb);
        dh[i] = curate::dhash(rgb);
      }
    });
    const double hash_s = secs(t0);
    std::printf("hashing: %zu images in %.2f s = %.0f images/s (%d threads; decode + xxh3-128 + pHash + dHash)\n",
                imgs.size(), hash_s, double(imgs.size()) / hash_s, threads);

    nlohmann::json out{{"images", imgs.size()}, {"originals", originals.size()}, {"distinct", distinct.size() + emoji.size()},
                       {"hash_images_per_s", double(imgs.size()) / hash_s}, {"threads", threads}};
    for (const char* kind : {"phash", "dhash"}) {
      const auto& h = std::string(kind) == "phash" ? ph : dh;
      print_header(kind);
      nlohmann::json rows = nlohmann::json::array();
      for (int t : {0, 2, 4, 6, 8, 10, 12, 14, 16}) {
        // Oracle check of the index on the same hashes.
        const auto found = hash_pairs(h, t, threads);
        const auto oracle = curate::brute_force_pairs(h, t);
        if (std::set<std::pair<uint32_t, uint32_t>>(oracle.begin(), oracle.end()) != found)
          throw Error("index and brute force disagree at threshold " + std::to_string(t));
        rows.push_back(report_row(kind, std::to_string(t), evaluate_pairs(imgs, found)));
      }
      out[kind] = rows;
    }

    // The image embeddings of a checkpoint: cosine similarity, alone and OR pHash <= 10.
    if (!checkpoint.empty()) {
      eval::LoadOptions lo;
      lo.checkpoint = checkpoint;
      eval::EvalModel model = eval::load_eval_model(lo);
      std::vector<data::Sample> samples;
      for (size_t i = 0; i < imgs.size(); ++i) {
        data::Sample s;
        s.key = std::to_string(i);
        s.image = imgs[i].bytes;
        samples.push_back(std::move(s));
      }
      t0 = Clock::now();
      const eval::EncodedImages enc = eval::encode_source(model, std::make_shared<data::VectorSource>(std::move(samples)), false);
      const double embed_s = secs(t0);
      if (int64_t(enc.keys.size()) != int64_t(imgs.size()))
        throw Error("embedding: " + std::to_string(imgs.size() - enc.keys.size()) + " image(s) not encoded");
      for (size_t r = 0; r < enc.keys.size(); ++r)
        if (enc.keys[r] != std::to_string(r)) throw Error("embedding: rows out of order");
      std::printf("\nembedding: %zu images in %.2f s = %.0f images/s (%s, %d px)\n", imgs.size(), embed_s,
                  double(imgs.size()) / embed_s, checkpoint.c_str(), model.preprocess.image_size);
      if (!dump.empty()) {
        std::vector<int64_t> group, edit;
        for (const auto& im : imgs) {
          group.push_back(im.group);
          const auto it = std::find(kEdits.begin(), kEdits.end(), im.edit);
          edit.push_back(im.edit == "original" ? -1 : im.edit == "distinct" ? -2 : int64_t(it - kEdits.begin()));
        }
        core::save_safetensors(dump, {{"embeds", enc.embeds}, {"group", torch::tensor(group)}, {"edit", torch::tensor(edit)}});
      }
      const torch::Tensor sim = torch::mm(enc.embeds, enc.embeds.t());
      const auto ph10 = hash_pairs(ph, 10, threads);
      nlohmann::json rows = nlohmann::json::array(), both = nlohmann::json::array();
      print_header("cosine");
      for (double c : {0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99})
        rows.push_back(report_row("cosine", fmt::format("{:.2f}", c), evaluate_pairs(imgs, cosine_pairs(sim, c))));
      print_header("ph10|cos");
      for (double c : {0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99}) {
        auto found = cosine_pairs(sim, c);
        found.insert(ph10.begin(), ph10.end());
        both.push_back(report_row("ph10|cos", fmt::format("{:.2f}", c), evaluate_pairs(imgs, found)));
      }
      out["embedding"] = {{"checkpoint", checkpoint}, {"images_per_s", double(imgs.size()) / embed_s},
                          {"image_size", model.preprocess.image_size}, {"cosine", rows}, {"phash10_or_cosine", both}};
    }

    // Index at scale: synthetic hashes, 10% of them in planted clusters of 2-5 within 6 bits.
    if (scale > 0) {
      std::vector<uint64_t> h;
      h.reserve(scale);
      while (h.size() < scale) {
        const uint64_t base = rng();
        h.push_back(base);
        if (data::uniform01(rng) < 0.05) {
          const int copies = 1 + int(data::uniform_int(rng, 4));
          for (int c = 0; c < copies && h.size() < scale; ++c) {
            uint64_t x = base;
            const int flips = int(data::uniform_int(rng, 7));
            for (int f = 0; f < flips; ++f) x ^= uint64_t(1) << data::uniform_int(rng, 64);
            h.push_back(x);
          }
        }
      }
      std::vector<uint32_t> priority(h.size());
      for (uint32_t i = 0; i < priority.size(); ++i) priority[i] = i;
      const int t = 10;
      t0 = Clock::now();
      curate::HammingIndex index(h, t);
      const double build_s = secs(t0);
      const size_t bytes = index.memory_bytes();
      t0 = Clock::now();
      const curate::NearDupResult r = curate::near_duplicate_clusters(h, priority, t, curate::ClusterMode::kLeader, threads);
      const double cluster_s = secs(t0);
      std::printf(
          "\nindex at scale: %zu hashes, threshold %d: %d chunks (radius %d each), build %.2f s, leader clustering %.2f s "
          "(%.0f queries/s, %.1f candidates/query vs %zu for brute force), %.1f bytes/image (%.1f MiB), %lld removed\n",
          h.size(), t, index.chunks(), index.chunk_radius(), build_s, cluster_s, double(r.stats.queries) / cluster_s,
          double(r.stats.candidates) / double(std::max<uint64_t>(1, r.stats.queries)), h.size(), double(bytes) / double(h.size()),
          double(bytes) / (1 << 20), (long long)r.removed);
      out["scale"] = {{"hashes", h.size()}, {"threshold", t}, {"chunks", index.chunks()}, {"build_s", build_s},
                      {"cluster_s", cluster_s}, {"queries", r.stats.queries}, {"candidates", r.stats.candidates},
                      {"bytes_per_image", double(bytes) / double(h.size())}, {"removed", r.removed}};
    }
    if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
