// Image <-> text retrieval with several correct items per query (see retrieval.h).
#include "florence/eval/retrieval.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <unordered_map>

#include "florence/core/error.h"
#include "florence/data/transforms.h"
#include "florence/eval/metrics.h"
#include "florence/text/tokenizer.h"

namespace fs = std::filesystem;

namespace florence::eval {

TextGroups group_texts(const std::vector<std::string>& captions) {
  TextGroups g;
  std::unordered_map<std::string, int64_t> index;
  g.group.reserve(captions.size());
  for (const auto& c : captions) {
    std::string cleaned;
    try {
      cleaned = text::Tokenizer::clean(c);
    } catch (const Error&) {
      cleaned = c;  // invalid UTF-8 cannot reach here through the loader; group by raw bytes
    }
    auto [it, added] = index.emplace(cleaned, int64_t(g.texts.size()));
    if (added) g.texts.push_back(c);
    g.group.push_back(it->second);
  }
  return g;
}

std::vector<std::string> write_key_images(const data::SampleSource& source, const std::vector<std::string>& keys,
                                          const std::string& dir) {
  std::vector<std::string> paths(keys.size());
  if (keys.empty()) return paths;
  fs::create_directories(dir);
  std::unordered_map<std::string, std::vector<size_t>> want;
  for (size_t i = 0; i < keys.size(); ++i) want[keys[i]].push_back(i);
  size_t found = 0;
  data::SkipCounts skips;
  for (size_t p = 0; p < source.num_parts() && found < want.size(); ++p) {
    source.read_part(
        p,
        [&](data::Sample& s) {
          auto it = want.find(s.key);
          if (it == want.end() || !paths[it->second[0]].empty()) return true;
          try {
            cv::Mat rgb = data::decode_rgb(s.image), bgr;
            cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
            const std::string path = (fs::path(dir) / ("img_" + std::to_string(it->second[0]) + ".png")).string();
            if (!cv::imwrite(path, bgr)) throw Error("cannot write '" + path + "'");
            for (size_t i : it->second) paths[i] = path;
          } catch (const Error& e) {
            spdlog::warn("example image '{}' skipped: {}", s.key, e.what());
          }
          ++found;
          return true;
        },
        skips);
  }
  for (size_t i = 0; i < keys.size(); ++i)
    if (paths[i].empty()) spdlog::warn("example image '{}' not written (not found or undecodable)", keys[i]);
  return paths;
}

nlohmann::json retrieval(EvalModel& m, std::shared_ptr<const data::SampleSource> source, const RetrievalOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  require_tokenizer(m, "retrieval evaluation");
  EncodedImages enc = encode_source(m, source, /*require_text=*/true, o.max_samples, /*with_meta=*/false);
  const int64_t n = int64_t(enc.keys.size());
  if (n < 2) throw Error("retrieval on " + source->describe() + ": needs at least 2 captioned images, got " + std::to_string(n));
  TextGroups g = group_texts(enc.texts);
  const int64_t mt = int64_t(g.texts.size());
  if (mt < 2) throw Error("retrieval on " + source->describe() + ": all captions are the same text");
  torch::Tensor txt = encode_texts(m, g.texts);                 // [M, D]
  torch::Tensor sim = torch::matmul(enc.embeds, txt.t());       // [N, M] cosines
  torch::Tensor img_group = torch::tensor(g.group, torch::kLong);  // [N]
  torch::Tensor text_ids = torch::arange(mt, torch::kLong);        // [M]
  torch::Tensor rel_i2t = relevance_from_groups(img_group, text_ids);  // [N, M]
  RetrievalMetrics i2t = retrieval_metrics(sim, rel_i2t, o.ks);
  RetrievalMetrics t2i = retrieval_metrics(sim.t().contiguous(), rel_i2t.t().contiguous(), o.ks);

  // Examples: a seeded sample of text queries, hits (first image correct) and misses apart (RetrievalOptions).
  std::vector<int64_t> hits, misses;
  for (int64_t q = 0; q < mt; ++q) (t2i.ranks[size_t(q)] == 1 ? hits : misses).push_back(q);
  const int64_t ne = std::min<int64_t>(o.num_examples, mt);
  // Half hits (rounded up), more when there are too few misses, never more than there are.
  const int64_t n_hits = std::min<int64_t>(int64_t(hits.size()), std::max<int64_t>((ne + 1) / 2, ne - int64_t(misses.size())));
  const int64_t n_misses = ne - n_hits;
  std::mt19937_64 rng(o.example_seed);
  auto sample = [&rng](std::vector<int64_t> pool, int64_t k) {  // partial Fisher-Yates, first k
    for (size_t i = 0; i < size_t(k); ++i) std::swap(pool[i], pool[i + size_t(rng() % uint64_t(pool.size() - i))]);
    pool.resize(size_t(k));
    return pool;
  };
  std::vector<int64_t> queries = sample(hits, n_hits), chosen_misses = sample(misses, n_misses);
  queries.insert(queries.end(), chosen_misses.begin(), chosen_misses.end());
  std::sort(queries.begin(), queries.end());
  nlohmann::json examples = nlohmann::json::array();
  std::vector<std::string> example_keys;
  const int64_t top = std::min<int64_t>(o.example_top, n);
  for (const int64_t q : queries) {
    torch::Tensor order = std::get<1>(sim.select(1, q).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
    nlohmann::json ex{{"query", g.texts[size_t(q)]}, {"rank", t2i.ranks[size_t(q)]}, {"hit", t2i.ranks[size_t(q)] == 1}};
    nlohmann::json relevant = nlohmann::json::array();
    for (int64_t i = 0; i < n; ++i)
      if (g.group[size_t(i)] == q) relevant.push_back(enc.keys[size_t(i)]);
    ex["relevant"] = relevant;
    nlohmann::json tops = nlohmann::json::array();
    for (int64_t r = 0; r < top; ++r) {
      const int64_t i = order[r].item<int64_t>();
      tops.push_back({{"key", enc.keys[size_t(i)]},
                      {"text", enc.texts[size_t(i)]},
                      {"score", sim[i][q].item<double>()},
                      {"correct", g.group[size_t(i)] == q}});
      example_keys.push_back(enc.keys[size_t(i)]);
    }
    ex["top"] = tops;
    examples.push_back(ex);
  }
  if (!o.examples_dir.empty()) {
    std::vector<std::string> paths = write_key_images(*source, example_keys, o.examples_dir);
    size_t k = 0;
    for (auto& ex : examples)
      for (auto& t : ex["top"]) {
        std::string p = paths[k++];
        if (!p.empty() && !o.relative_to.empty()) p = fs::relative(fs::absolute(p), fs::absolute(o.relative_to)).string();
        t["image"] = p;
      }
  }

  nlohmann::json j{{"task", "retrieval"},
                   {"set", o.name},
                   {"source", source->describe()},
                   {"model", m.describe()},
                   {"num_images", n},
                   {"num_texts", mt},
                   {"read", enc.read},
                   {"skipped", enc.skipped},
                   {"text_dedup", "captions grouped by cleaned text (Tokenizer::clean); a text's correct images are all "
                                  "images with that caption"},
                   {"image_to_text", i2t.to_json()},
                   {"text_to_image", t2i.to_json()},
                   {"examples", examples},
                   {"example_selection",
                    {{"method", "seeded sample of the text queries: half hits (first image correct), half misses"},
                     {"seed", o.example_seed},
                     {"queries", mt},
                     {"hits", int64_t(hits.size())},
                     {"misses", int64_t(misses.size())},
                     {"shown_hits", n_hits},
                     {"shown_misses", n_misses}}}};
  j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("retrieval {}: {} images, {} texts; i2t R@5 {:.4f} (chance {:.4f}), t2i R@5 {:.4f} (chance {:.4f})", o.name, n,
               mt, i2t.recall.count(5) ? i2t.recall.at(5) : -1.0, i2t.chance_recall.count(5) ? i2t.chance_recall.at(5) : -1.0,
               t2i.recall.count(5) ? t2i.recall.at(5) : -1.0, t2i.chance_recall.count(5) ? t2i.chance_recall.at(5) : -1.0);
  return j;
}

}  // namespace florence::eval
