// `florence data build all`: every corpus source into OUT/NAME, several at once, skipping the ones
// already built with the same source and options (split from corpus.cpp, which builds one source).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/core/parallel.h"
#include "florence/data/corpus.h"

namespace fs = std::filesystem;

namespace florence::data {

namespace {

/// Every split that summary.json counts shards for has at least that many .tar files.
bool shards_present(const std::string& out_dir, const nlohmann::json& summary) {
  const nlohmann::json shards = summary.value("shards", nlohmann::json::object());
  if (!shards.is_object()) return false;
  for (const auto& [split, n] : shards.items()) {
    if (!n.is_number_integer() || n.get<int64_t>() <= 0) continue;
    int64_t found = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(fs::path(out_dir) / split, ec))
      found += e.path().extension() == ".tar" && e.path().filename().string()[0] != '.';
    if (ec || found < n.get<int64_t>()) return false;
  }
  return true;
}

}  // namespace

CorpusOptions all_corpora_options(const BuildAllOptions& a, const std::string& source) {
  CorpusOptions o = a.base;
  o.source = source;
  o.out_dir = (fs::path(a.out_dir) / source).string();
  o.input.clear();
  o.fields.clear();
  if (source == "openclipart") o.fields = {"title", "keywords"};
  if (source == "emoji" || source == "twemoji") o.short_names = true;
  return o;
}

nlohmann::json build_all_corpora(const BuildAllOptions& a) {
  if (a.out_dir.empty()) throw Error("data build all: --out is required");
  if (a.parallel < 1) throw Error("data build all: --parallel must be >= 1");
  std::vector<std::string> names = a.sources;
  if (names.empty())
    for (const auto& s : corpus_sources()) names.push_back(s.name);
  std::set<std::string> distinct;
  for (const auto& n : names) {
    (void)corpus_source(n);  // unknown names fail before any work
    if (!distinct.insert(n).second) throw Error("data build all: '" + n + "' is named twice in --sources");
  }
  const auto t0 = std::chrono::steady_clock::now();
  const int total_threads = core::resolve_threads(a.base.threads);
  const int parallel = std::min<int>(a.parallel, int(names.size()));
  const int per_source = std::max(1, total_threads / std::max(1, parallel));
  std::vector<nlohmann::json> rows(names.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < names.size(); i = next++) {
      nlohmann::json row = {{"name", names[i]}};
      try {
        CorpusOptions o = all_corpora_options(a, names[i]);
        o.threads = per_source;
        const fs::path summary = fs::path(o.out_dir) / "summary.json";
        bool build = true;
        if (fs::exists(summary)) {
          nlohmann::json old;
          std::string unreadable;
          try {
            old = core::read_json_file(summary);
            if (!old.is_object()) unreadable = "not a JSON object";
          } catch (const Error& e) {
            unreadable = e.what();
          }
          if (unreadable.empty() && old.value("source", "") == names[i] &&
              old.value("options", nlohmann::json()) == corpus_options_json(o) && shards_present(o.out_dir, old)) {
            row["status"] = "up to date";
            row["summary"] = old;
            build = false;
          } else if (!a.base.overwrite) {
            throw Error(!unreadable.empty() ? "'" + summary.string() + "' is unreadable (" + unreadable +
                                                  "); pass --overwrite to rebuild the corpus"
                        : old.value("source", "") != names[i]
                            ? "'" + o.out_dir + "' holds a corpus of source '" + old.value("source", "?") +
                                  "'; pass --overwrite to replace it"
                            : "'" + o.out_dir + "' holds a corpus built with other options or missing shards; pass " +
                                  "--overwrite to rebuild it");
          }
        } else {
          o.overwrite = true;  // shards without a summary: an interrupted build, nothing complete to lose
        }
        if (build) {
          spdlog::info("data build all: {} -> {} ({} threads)", names[i], o.out_dir, o.threads);
          nlohmann::json s = build_corpus(o);
          s.erase("failed_items");
          row["status"] = "built";
          row["summary"] = s;
        }
      } catch (const std::exception& e) {
        row["status"] = "failed";
        row["error"] = e.what();
        spdlog::error("data build all: {}: {}", names[i], e.what());
      }
      rows[i] = std::move(row);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < parallel; ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  int64_t failed = 0;
  for (const auto& r : rows) failed += r.value("status", "") == "failed";
  return {{"out_dir", a.out_dir},
          {"sources", rows},
          {"failed", failed},
          {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
}

std::string format_build_all_summary(const nlohmann::json& r) {
  std::string out = fmt::format("{:<14} {:<11} {:>8} {:>7} {:>20} {:>6} {:>8}\n", "source", "status", "written", "failed",
                                "train / val / test", "class", "seconds");
  for (const auto& row : r.value("sources", nlohmann::json::array())) {
    const nlohmann::json s = row.value("summary", nlohmann::json::object());
    const nlohmann::json sp = s.value("splits", nlohmann::json::object());
    const std::string status = row.value("status", "");
    if (status == "failed") {
      out += fmt::format("{:<14} {:<11} {}\n", row.value("name", ""), status, row.value("error", ""));
      continue;
    }
    out += fmt::format("{:<14} {:<11} {:>8} {:>7} {:>20} {:>6} {:>8.1f}\n", row.value("name", ""), status,
                       s.value("samples", int64_t(0)), s.value("failed_total", int64_t(0)),
                       fmt::format("{} / {} / {}", sp.value("train", int64_t(0)), sp.value("val", int64_t(0)),
                                   sp.value("test", int64_t(0))),
                       s.contains("categories") ? s["categories"].size() : 0, s.value("seconds", 0.0));
  }
  out += fmt::format("{} source(s), {} failed, {:.1f} s in all\n", r.value("sources", nlohmann::json::array()).size(),
                     r.value("failed", int64_t(0)), r.value("seconds", 0.0));
  return out;
}

}  // namespace florence::data
