// The curation report: report.json, removed.jsonl, montage.png and the summary; see report.h.
#include "florence/curate/report.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/curate/balance.h"
#include "florence/curate/montage.h"
#include "florence/curate/output.h"

namespace fs = std::filesystem;

namespace florence::curate {

using nlohmann::json;

namespace detail {

json distribution(std::vector<double> v, const std::vector<double>& edges) {
  json j{{"count", v.size()}};
  if (v.empty()) return j;
  std::sort(v.begin(), v.end());
  auto q = [&](double p) { return v[size_t(std::llround(p * double(v.size() - 1)))]; };
  j["min"] = v.front();
  j["p05"] = q(0.05);
  j["p50"] = q(0.5);
  j["p95"] = q(0.95);
  j["max"] = v.back();
  j["mean"] = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  if (!edges.empty()) {
    std::vector<int64_t> counts(edges.size(), 0);  // bin k = [edges[k], edges[k+1]); last = [edges.back(), inf)
    for (double x : v) {
      auto it = std::upper_bound(edges.begin(), edges.end(), x);
      const size_t k = it == edges.begin() ? 0 : size_t(it - edges.begin() - 1);
      ++counts[k];
    }
    j["hist"] = {{"edges", edges}, {"counts", counts}};
  }
  return j;
}

std::vector<double> linspace_edges(double lo, double hi, int bins) {
  std::vector<double> e;
  for (int i = 0; i < bins; ++i) e.push_back(lo + (hi - lo) * i / bins);
  return e;
}

int64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;  // Linux: kilobytes
}

std::vector<std::vector<uint32_t>> select_montage(const Table& t, const std::vector<Cluster>& clusters,
                                                  const CurateOptions& opt) {
  const size_t k = std::min<size_t>(size_t(opt.montage_clusters), clusters.size());
  std::vector<size_t> order(clusters.size());
  std::iota(order.begin(), order.end(), size_t(0));
  // Half the rows: the most doubtful clusters (largest distance to the representative) ...
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (clusters[a].max_distance != clusters[b].max_distance) return clusters[a].max_distance > clusters[b].max_distance;
    return t.keys.get(clusters[a].rep) < t.keys.get(clusters[b].rep);
  });
  const size_t doubtful = (k + 1) / 2;
  std::vector<size_t> chosen(order.begin(), order.begin() + long(doubtful));
  // ... the other half: a seeded sample of the rest.
  std::vector<size_t> rest(order.begin() + long(doubtful), order.end());
  constexpr uint64_t kMontageTag = 0x6d6f6e74616765ull;  // "montage"
  std::sort(rest.begin(), rest.end(), [&](size_t a, size_t b) {
    const double ua = balance_uniform(opt.seed, t.keys.get(clusters[a].rep), kMontageTag);
    const double ub = balance_uniform(opt.seed, t.keys.get(clusters[b].rep), kMontageTag);
    return ua != ub ? ua < ub : a < b;
  });
  for (size_t i = 0; i < rest.size() && chosen.size() < k; ++i) chosen.push_back(rest[i]);
  std::vector<std::vector<uint32_t>> rows;
  for (size_t c : chosen) {
    std::vector<uint32_t> row{clusters[c].rep};
    for (uint32_t m : clusters[c].members) {
      if (int(row.size()) >= opt.montage_members) break;
      row.push_back(m);
    }
    rows.push_back(row);
  }
  return rows;
}

namespace {

std::string removed_line(const Table& t, const std::vector<InputShard>& inputs, size_t i) {
  const Record& r = t.rec[i];
  json j{{"key", std::string(t.keys.get(i))}, {"shard", inputs[r.shard].path}, {"stage", kStageNames[r.stage]},
         {"reason", kReasonNames[r.reason]}};
  if (r.duplicate_of != kNone) {
    j["duplicate_of"] = std::string(t.keys.get(r.duplicate_of));
    const uint32_t rep_shard = t.rec[r.duplicate_of].shard;
    if (rep_shard != r.shard) j["duplicate_of_shard"] = inputs[rep_shard].path;
  }
  if (r.stage == kNear) j["distance"] = r.distance;
  if (r.stage == kRelevance && r.reason == kLowSimilarity) j["similarity"] = r.similarity;
  return j.dump();
}

}  // namespace

json build_report(const CurateOptions& opt, int world_size, int threads, const std::vector<InputShard>& inputs,
                  const Table& t, const std::vector<std::pair<size_t, size_t>>& ranges, Decisions& d,
                  const std::vector<json>& finals, std::map<uint32_t, std::vector<uint8_t>>& thumb_by_idx) {
  std::map<uint32_t, std::pair<int64_t, int64_t>> written_by_shard;
  std::map<uint32_t, std::string> text_by_idx;
  json perf_ranks = json::array();
  for (const json& f : finals) {
    for (const auto& w : f.at("written")) written_by_shard[w[0].get<uint32_t>()] = {w[1].get<int64_t>(), w[2].get<int64_t>()};
    for (const auto& [k, v] : f.at("thumbs").items()) thumb_by_idx[uint32_t(std::stoul(k))] = v.get_binary();
    for (const auto& [k, v] : f.at("texts").items()) text_by_idx[uint32_t(std::stoul(k))] = v.get<std::string>();
    perf_ranks.push_back(f.at("perf"));
  }
  if (d.balance.is_object())
    for (auto& e : d.balance["top_entries"])
      if (e.contains("example_key"))
        for (const auto& [idx, text] : text_by_idx)
          if (t.keys.get(idx) == e["example_key"].get<std::string>()) e["text"] = text;

  // Counts per stage.
  int64_t dropped_samples = 0;
  std::map<std::string, int64_t> dropped_reasons;
  for (const Dropped& x : t.dropped) {
    if (x.reason != kUnreadableShard) {
      ++dropped_samples;
      ++dropped_reasons[kReasonNames[x.reason]];
    }
  }
  std::vector<int64_t> removed_by_stage(kNumStages, 0);
  std::vector<std::map<std::string, int64_t>> reasons(kNumStages);
  for (const Record& r : t.rec) {
    ++removed_by_stage[r.stage];
    if (r.stage != kKept) ++reasons[r.stage][kReasonNames[r.reason]];
  }
  removed_by_stage[kValidate] += dropped_samples;
  for (const auto& [k, v] : dropped_reasons) reasons[kValidate][k] += v;
  const int64_t input_total = int64_t(t.rec.size()) + dropped_samples;
  const bool enabled[kNumStages] = {true, opt.validate, opt.small, opt.exact, opt.near, opt.relevance, opt.balance};
  json stages = json::array();
  int64_t flowing = input_total;
  for (int s = kValidate; s < kNumStages; ++s) {
    json rj = json::object();
    for (const auto& [k, v] : reasons[size_t(s)]) rj[k] = v;
    stages.push_back({{"stage", kStageNames[s]},
                      {"enabled", enabled[s]},
                      {"in", flowing},
                      {"removed", removed_by_stage[size_t(s)]},
                      {"out", flowing - removed_by_stage[size_t(s)]},
                      {"reasons", rj}});
    flowing -= removed_by_stage[size_t(s)];
  }
  const int64_t kept_total = removed_by_stage[kKept];

  // Distributions.
  const std::vector<double> side_edges{0, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048};
  const std::vector<double> text_edges{0, 1, 8, 16, 32, 64, 128, 256, 512, 1024};
  auto dists = [&](bool kept_only) {
    std::vector<double> w, h, side, chars;
    for (const Record& r : t.rec) {
      if (kept_only && r.stage != kKept) continue;
      chars.push_back(r.text_chars);
      if (!r.decoded()) continue;
      w.push_back(r.width);
      h.push_back(r.height);
      side.push_back(std::min(r.width, r.height));
    }
    return json{{"width", distribution(w, side_edges)},
                {"height", distribution(h, side_edges)},
                {"shorter_side", distribution(side, side_edges)},
                {"text_chars", distribution(chars, text_edges)}};
  };

  json shards = json::array(), problem_shards = json::array();
  int64_t unreadable_count = 0, truncated_count = 0;
  for (uint32_t gi = 0; gi < inputs.size(); ++gi) {
    const ShardInfo& si = t.shards[gi];
    const auto wit = written_by_shard.find(gi);
    const int64_t kept = wit == written_by_shard.end() ? 0 : wit->second.first;
    json sj{{"input", inputs[gi].path},
            {"output", kept > 0 ? json(inputs[gi].out_rel) : json(nullptr)},
            {"read", int64_t(ranges[gi].second - ranges[gi].first)},
            {"kept", kept},
            {"bytes", wit == written_by_shard.end() ? 0 : wit->second.second}};
    if (si.unreadable) sj["unreadable"] = true;
    if (si.truncated) sj["truncated"] = true;
    if (!si.problem.empty()) {
      sj["problem"] = si.problem;
      problem_shards.push_back({{"input", inputs[gi].path},
                                {"problem", si.unreadable ? "unreadable" : "truncated"},
                                {"reason", si.problem},
                                {"samples_read", si.samples}});
      ++(si.unreadable ? unreadable_count : truncated_count);
    }
    if (si.missing_image + si.bad_text + si.corrupt > 0)
      sj["reader"] = {{"missing_image", si.missing_image}, {"bad_text", si.bad_text}, {"corrupt_events", si.corrupt}};
    shards.push_back(sj);
  }

  double total_s = 0, scan_max = 0, score_max = 0, write_max = 0;
  int64_t rss_max = 0, scanned_all = 0;
  for (const json& p : perf_ranks) {
    total_s = std::max(total_s, p.at("total_s").get<double>());
    scan_max = std::max(scan_max, p.at("scan_s").get<double>());
    score_max = std::max(score_max, p.at("score_s").get<double>());
    write_max = std::max(write_max, p.at("write_s").get<double>());
    rss_max = std::max(rss_max, p.at("peak_rss_bytes").get<int64_t>());
    scanned_all += p.at("scanned").get<int64_t>();
  }
  // Per-image figures only when there are images (null otherwise, "n/a" in the summary).
  const json table_per_image = t.rec.empty() ? json(nullptr) : json(double(t.bytes()) / double(t.rec.size()));
  json perf{{"world_size", world_size},
            {"threads", threads},
            {"seconds", {{"scan", scan_max}, {"decide", d.seconds}, {"score", score_max}, {"write", write_max}, {"total", total_s}}},
            {"scan_images_per_s", double(scanned_all) / std::max(1e-9, scan_max)},
            {"images_per_s", double(input_total) / std::max(1e-9, total_s)},
            {"peak_rss_bytes", rss_max},
            {"table_bytes_per_image", table_per_image},
            {"index_bytes_per_image", d.near.is_object() ? d.near["index"]["bytes_per_image"] : json(0)},
            {"ranks", perf_ranks}};

  json report{{"inputs", opt.inputs},
              {"out_dir", opt.out_dir},
              {"options", opt.to_json()},
              {"counts", {{"input", input_total}, {"kept", kept_total}, {"removed", input_total - kept_total},
                          {"input_shards", inputs.size()}, {"unreadable_shards", unreadable_count},
                          {"truncated_shards", truncated_count}}},
              {"problem_shards", problem_shards},
              {"stages", stages},
              {"exact", d.exact},
              {"near", d.near},
              {"relevance", d.relevance},
              {"balance", d.balance},
              {"distributions", {{"input", dists(false)}, {"output", dists(true)}}},
              {"shards", shards},
              {"montage", nullptr},
              {"performance", perf}};

  return report;
}

void write_report_files(const CurateOptions& opt, const std::vector<InputShard>& inputs, const Table& t,
                        const std::vector<std::pair<size_t, size_t>>& ranges, const Decisions& d,
                        const std::vector<std::vector<uint32_t>>& montage_rows,
                        const std::map<uint32_t, std::vector<uint8_t>>& thumb_by_idx, json& report) {
  const fs::path out(opt.out_dir);
  fs::create_directories(out);
  // removed.jsonl in input order; reader drops after their shard's records.
  {
    const fs::path path = out / "removed.jsonl", tmp = out / ".removed.jsonl.tmp";
    std::ofstream f(tmp, std::ios::binary);
    size_t next = 0;  // the reader's drops are sorted by shard
    for (uint32_t gi = 0; gi < inputs.size(); ++gi) {
      for (size_t i = ranges[gi].first; i < ranges[gi].second; ++i)
        if (t.rec[i].stage != kKept) f << removed_line(t, inputs, i) << "\n";
      for (; next < t.dropped.size() && t.dropped[next].shard == gi; ++next) {
        const Dropped& x = t.dropped[next];
        json line{{"key", x.key.empty() ? json(nullptr) : json(x.key)}, {"shard", inputs[gi].path}, {"stage", "validate"},
                  {"reason", kReasonNames[x.reason]}};
        if (x.reason == kUnreadableShard) line["error"] = t.shards[gi].problem;
        f << line.dump() << "\n";
      }
    }
    if (!f) throw Error("curate: cannot write '" + tmp.string() + "'");
    f.close();
    fs::rename(tmp, path);
  }
  if (!montage_rows.empty()) {
    std::vector<std::vector<MontageTile>> rows;
    for (const auto& row : montage_rows) {
      std::vector<MontageTile> tiles;
      for (uint32_t idx : row) {
        MontageTile tile;
        auto it = thumb_by_idx.find(idx);
        if (it != thumb_by_idx.end() && !it->second.empty()) {
          cv::Mat bgr = cv::imdecode(it->second, cv::IMREAD_COLOR);
          if (!bgr.empty()) cv::cvtColor(bgr, tile.rgb, cv::COLOR_BGR2RGB);
        }
        const Record& r = t.rec[idx];
        tile.representative = r.stage != kNear;
        tile.caption = (tile.representative ? std::string("rep ") : "d=" + std::to_string(r.distance) + " ") +
                       std::to_string(r.width) + "x" + std::to_string(r.height);
        tile.subcaption = std::string(t.keys.get(idx));
        tiles.push_back(std::move(tile));
      }
      rows.push_back(std::move(tiles));
    }
    const std::string title = fmt::format("{} clusters of {} (Hamming <= {}); {} shown. green: kept, red: removed, d: distance",
                                          d.clusters.size(), hash_kind_name(opt.hash), opt.near_dup_threshold, rows.size());
    write_png_rgb(compose_montage(rows, opt.montage_tile, title), (out / "montage.png").string());
    report["montage"] = "montage.png";
  }
  core::write_text_atomic(out / "report.json", report.dump(2) + "\n");
  std::error_code ec;
  fs::remove_all(out / kTmpDir, ec);
}

}  // namespace detail

std::string format_curate_summary(const json& r) {
  // A per-image figure: "n/a" when the report has none (no image to divide by).
  auto per_image = [](const json& v) { return v.is_number() ? fmt::format("{:.1f}", v.get<double>()) : std::string("n/a"); };
  std::string s;
  const json& c = r.at("counts");
  s += fmt::format("curate: {} sample(s) in, {} kept, {} removed ({} input shard(s))\n", c.at("input").get<int64_t>(),
                   c.at("kept").get<int64_t>(), c.at("removed").get<int64_t>(), c.at("input_shards").get<int64_t>());
  const int64_t unreadable = c.value("unreadable_shards", int64_t(0)), truncated = c.value("truncated_shards", int64_t(0));
  if (unreadable + truncated > 0) {
    s += fmt::format("  problem shards: {} unreadable (skipped), {} truncated (samples before the error used); see "
                     "report.json \"problem_shards\"\n",
                     unreadable, truncated);
    constexpr size_t kShown = 5;
    const json& list = r.contains("problem_shards") ? r.at("problem_shards") : json::array();
    for (size_t i = 0; i < list.size() && i < kShown; ++i)
      s += fmt::format("    {} {}: {}\n", list[i].at("problem").get<std::string>(), list[i].at("input").get<std::string>(),
                       list[i].at("reason").get<std::string>());
    if (list.size() > kShown) s += fmt::format("    ... and {} more\n", list.size() - kShown);
  }
  for (const json& st : r.at("stages")) {
    if (!st.at("enabled").get<bool>() && st.at("removed").get<int64_t>() == 0) continue;
    std::string why;
    for (const auto& [k, v] : st.at("reasons").items()) why += fmt::format("{}{} {}", why.empty() ? "" : ", ", v.get<int64_t>(), k);
    s += fmt::format("  {:<10} {:>9} -> {:>9}  (-{}{}{})\n", st.at("stage").get<std::string>(), st.at("in").get<int64_t>(),
                     st.at("out").get<int64_t>(), st.at("removed").get<int64_t>(), why.empty() ? "" : ": ", why);
  }
  if (r.at("near").is_object()) {
    const json& n = r.at("near");
    const json& ix = n.at("index");
    s += fmt::format("  near-dup: {} cluster(s); index: {} chunk(s), {:.1f} candidates/query (brute force: {:.0f} pairs), {} bytes/image\n",
                     n.at("clusters").get<int64_t>(), ix.at("chunks").get<int>(), ix.at("candidates_per_query").get<double>(),
                     ix.at("brute_force_comparisons").get<double>(), per_image(ix.at("bytes_per_image")));
  }
  if (r.at("relevance").is_object() && r.at("relevance").at("cut").is_number())
    s += fmt::format("  relevance: cut {:.4f} over {} scored pair(s)\n", r.at("relevance").at("cut").get<double>(),
                     r.at("relevance").at("scored").get<int64_t>());
  const json& p = r.at("performance");
  s += fmt::format("  throughput: {:.1f} images/s overall, scan {:.1f} images/s ({} process(es) x {} thread(s)); {:.2f} s total\n",
                   p.at("images_per_s").get<double>(), p.at("scan_images_per_s").get<double>(), p.at("world_size").get<int>(),
                   p.at("threads").get<int>(), p.at("seconds").at("total").get<double>());
  s += fmt::format("  memory: peak RSS {:.1f} MiB; state {} bytes/image (records + keys) + {} bytes/image (hash index)\n",
                   double(p.at("peak_rss_bytes").get<int64_t>()) / (1 << 20), per_image(p.at("table_bytes_per_image")),
                   per_image(p.at("index_bytes_per_image")));
  return s;
}

}  // namespace florence::curate
