// The curation pipeline's output folder: checks before pass 1, clean-up, pass 3; see output.h.
#include "florence/curate/output.h"

#include <spdlog/spdlog.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <string>

#include "florence/core/error.h"
#include "florence/core/parallel.h"
#include "florence/curate/montage.h"
#include "florence/data/transforms.h"
#include "florence/data/webdataset.h"

namespace fs = std::filesystem;

namespace florence::curate::detail {

using nlohmann::json;

namespace {

bool path_within(const fs::path& inner, const fs::path& outer) {
  // Absolute first: libstdc++'s weakly_canonical leaves a relative path with no existing prefix
  // ("out") relative, which would then never lie within anything.
  const fs::path a = fs::weakly_canonical(fs::absolute(inner)), b = fs::weakly_canonical(fs::absolute(outer));
  auto ia = a.begin(), ib = b.begin();
  for (; ib != b.end(); ++ia, ++ib) {
    if (ib->empty()) continue;  // trailing separator
    if (ia == a.end() || *ia != *ib) return false;
  }
  return true;
}

/// Whether `j` is a report.json written by curate() (the keys every curate report has).
bool is_curate_report(const json& j) {
  return j.is_object() && j.contains("options") && j.contains("counts") && j.contains("stages") && j.contains("shards") &&
         j["shards"].is_array();
}

}  // namespace

PreviousOutput check_out_dir(const CurateOptions& opt, const std::vector<InputShard>& inputs) {
  const fs::path out(opt.out_dir);
  for (const auto& in : inputs) {
    if (path_within(in.path, out))
      throw Error("curate: input shard '" + in.path + "' lies inside the output directory '" + opt.out_dir + "'");
    fs::path folder = fs::path(in.path).parent_path();
    if (folder.empty()) folder = ".";  // a bare shard name: the current folder
    if (path_within(out, folder))
      throw Error("curate: the output directory '" + opt.out_dir + "' lies inside the input folder of '" + in.path +
                  "'; choose a directory outside the input");
  }
  PreviousOutput prev;
  std::error_code ec;
  if (!fs::exists(out, ec)) return prev;
  if (!fs::is_directory(out, ec)) throw Error("curate: output '" + opt.out_dir + "' exists and is not a directory");
  // Every .tar below out_dir (our temporary folder aside), sorted for a stable message.
  std::vector<fs::path> tars;
  for (auto it = fs::recursive_directory_iterator(out, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it.depth() == 0 && it->path().filename() == kTmpDir) {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && it->path().extension() == ".tar") tars.push_back(it->path().lexically_normal());
  }
  if (ec) throw Error("curate: cannot list the output directory '" + opt.out_dir + "': " + ec.message());
  std::sort(tars.begin(), tars.end());
  prev.tmp_dir = fs::exists(out / kTmpDir, ec);
  std::vector<fs::path> side_files;
  for (const char* f : {"removed.jsonl", "montage.png"})
    if (fs::exists(out / f, ec)) side_files.push_back(out / f);
  const fs::path report_path = out / "report.json";
  const std::string refuse = "; curate never deletes files it did not write, even with --overwrite: choose another --out "
                             "or remove them yourself";
  if (!fs::exists(report_path, ec)) {
    if (!tars.empty())
      throw Error("curate: '" + opt.out_dir + "' holds " + std::to_string(tars.size()) + " .tar file(s) (" +
                  tars.front().lexically_relative(out).string() + ", ...) but no curate report.json: it is not the output "
                  "of a (finished) curate run and writing there would destroy it" + refuse);
    if (!side_files.empty())
      throw Error("curate: '" + opt.out_dir + "' holds " + side_files.front().filename().string() +
                  " but no curate report.json: it is not the output of a (finished) curate run" + refuse);
    if (prev.tmp_dir && !opt.overwrite)
      throw Error("curate: '" + opt.out_dir + "' holds an interrupted curate run (" + std::string(kTmpDir) +
                  "); pass --overwrite to replace it");
    return prev;
  }
  json report;
  try {
    std::ifstream in(report_path);
    report = json::parse(in);
  } catch (const json::exception& e) {
    throw Error("curate: '" + report_path.string() + "' is not valid JSON (" + e.what() +
                "), so '" + opt.out_dir + "' is not a curate output" + refuse);
  }
  if (!is_curate_report(report))
    throw Error("curate: '" + report_path.string() + "' is not a curate report, so '" + opt.out_dir +
                "' is not a curate output" + refuse);
  // The shards the previous run wrote: relative .tar paths inside out_dir.
  std::set<fs::path> listed;
  for (const json& sh : report["shards"]) {
    if (!sh.is_object() || !sh.contains("output") || !sh["output"].is_string()) continue;
    const fs::path rel = fs::path(sh["output"].get<std::string>()).lexically_normal();
    if (rel.empty() || rel.is_absolute() || rel.begin()->string() == ".." || rel.extension() != ".tar") continue;
    listed.insert((out / rel).lexically_normal());
  }
  for (const fs::path& p : tars)
    if (!listed.count(p))
      throw Error("curate: '" + opt.out_dir + "' holds '" + p.lexically_relative(out).string() +
                  "', which the curate report.json there does not list: it was not written by that curate run" + refuse);
  if (!opt.overwrite)
    throw Error("curate: '" + opt.out_dir + "' already holds curated output (report.json of an earlier run); pass "
                "--overwrite to replace it");
  prev.files = tars;
  prev.files.insert(prev.files.end(), side_files.begin(), side_files.end());
  prev.files.push_back(report_path);
  return prev;
}

void remove_previous_output(const CurateOptions& opt, const PreviousOutput& prev) {
  const fs::path out(opt.out_dir);
  for (const fs::path& p : prev.files) {
    std::error_code ec;
    fs::remove(p, ec);
    if (ec) throw Error("curate: cannot remove '" + p.string() + "' of the previous run: " + ec.message());
  }
  if (prev.tmp_dir) {
    std::error_code ec;
    fs::remove_all(out / kTmpDir, ec);
    if (ec) throw Error("curate: cannot remove '" + (out / kTmpDir).string() + "': " + ec.message());
  }
}

WrittenShards write_shards(const Table& t, const std::vector<InputShard>& inputs, const std::vector<uint32_t>& own,
                           const std::vector<std::pair<size_t, size_t>>& ranges, const std::set<uint32_t>& montage_idx,
                           const std::set<uint32_t>& example_idx, const CurateOptions& opt, int threads) {
  const fs::path out(opt.out_dir);
  std::mutex mu;
  WrittenShards res;
  json &thumbs = res.thumbs, &texts = res.texts, &written = res.written;
  core::parallel_ranges(own.size(), threads, [&](size_t b, size_t e) {
    for (size_t k = b; k < e; ++k) {
      const uint32_t gi = own[k];
      const auto [first, last] = ranges[gi];
      int64_t kept = 0;
      bool wanted = false;
      for (size_t i = first; i < last; ++i) {
        if (t.rec[i].stage == kKept) ++kept;
        if (montage_idx.count(uint32_t(i)) || example_idx.count(uint32_t(i))) wanted = true;
      }
      if (kept == 0 && !wanted) continue;
      std::unique_ptr<data::ShardWriter> w;
      const fs::path tmp = out / kTmpDir / std::to_string(gi);
      if (kept > 0) {
        std::error_code ec;
        fs::remove_all(tmp, ec);
        data::ShardWriterOptions wo;
        wo.max_samples_per_shard = std::numeric_limits<int64_t>::max();
        wo.max_bytes = std::numeric_limits<int64_t>::max();
        wo.pattern = "%d.tar";
        w = std::make_unique<data::ShardWriter>(tmp.string(), wo);
      }
      data::ShardReader r(inputs[gi].path);
      data::Sample s;
      size_t i = first;
      while (i < last && r.next(s)) {
        if (t.keys.get(i) != s.key)
          throw Error("curate: input shard '" + inputs[gi].path + "' changed during curation (sample " +
                      std::to_string(i - first) + ")");
        if (t.rec[i].stage == kKept) w->write(s);
        if (montage_idx.count(uint32_t(i))) {
          std::vector<uint8_t> png;
          try {
            data::DecodeOptions d;
            d.max_pixels = opt.max_pixels;
            cv::Mat bgr;
            cv::cvtColor(thumbnail(data::decode_rgb(s.image, d), opt.montage_tile), bgr, cv::COLOR_RGB2BGR);
            cv::imencode(".png", bgr, png);
          } catch (const std::exception& ex) {
            spdlog::warn("curate: montage: cannot decode '{}': {}", s.key, ex.what());
          }
          std::lock_guard<std::mutex> lk(mu);
          thumbs[std::to_string(i)] = json::binary_t(std::move(png));
        }
        if (example_idx.count(uint32_t(i))) {
          std::lock_guard<std::mutex> lk(mu);
          texts[std::to_string(i)] = s.text;
        }
        ++i;
        s = data::Sample{};
      }
      if (i < last) throw Error("curate: input shard '" + inputs[gi].path + "' changed during curation (fewer samples)");
      int64_t bytes = 0;
      std::string done;
      if (w) {
        w->close();
        if (w->shards().size() != 1) throw Error("curate: internal: curated shard split unexpectedly");
        // Stays in the temporary folder until every shard is written (publish_shards): a failed
        // run leaves nothing in out_dir that looks like curated output.
        done = w->shards().front();
        bytes = int64_t(fs::file_size(done));
      }
      std::lock_guard<std::mutex> lk(mu);
      written.push_back({gi, kept, bytes});
      if (!done.empty()) res.finished.emplace_back(done, (out / inputs[gi].out_rel).string());
    }
  });
  return res;
}

void publish_shards(const WrittenShards& w) {
  for (const auto& [done, target] : w.finished) {
    std::error_code ec;
    fs::create_directories(fs::path(target).parent_path(), ec);
    fs::rename(done, target, ec);
    if (ec) throw Error("curate: cannot move '" + done + "' to '" + target + "': " + ec.message());
    fs::remove_all(fs::path(done).parent_path(), ec);
  }
}

}  // namespace florence::curate::detail
