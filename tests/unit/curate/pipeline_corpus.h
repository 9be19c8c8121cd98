#pragma once
// The planted curation corpus and the helpers the two pipeline test files share
// (test_pipeline.cpp: what curation decides; test_pipeline_inputs.cpp: inputs and the output folder).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "florence/core/error.h"
#include "florence/curate/pipeline.h"
#include "florence/data/webdataset.h"
#include "unit/curate/real_images.h"

namespace curate_pipeline_test {

namespace fs = std::filesystem;
using namespace florence;
using nlohmann::json;

inline fs::path fresh(const std::string& name) {
  const fs::path d = fs::path(FLORENCE_TEST_TMP) / "curate_pipeline" / name;
  fs::remove_all(d);
  fs::create_directories(d.parent_path());
  return d;
}

inline data::Sample sample(const std::string& key, std::vector<uint8_t> image, const std::string& text, const std::string& ext = "png") {
  data::Sample s;
  s.key = key;
  s.image = std::move(image);
  s.image_ext = ext;
  s.text = text;
  s.meta = {{"source", "test"}};
  return s;
}

inline cv::Mat resized(const cv::Mat& m, int size) {
  cv::Mat out;
  cv::resize(m, out, cv::Size(size, size), 0, 0, size < m.cols ? cv::INTER_AREA : cv::INTER_CUBIC);
  return out;
}

inline std::vector<uint8_t> bmp(const cv::Mat& rgb) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> out;
  cv::imencode(".bmp", bgr, out);
  return out;
}

/// The planted corpus (see the expectations in PlantedDuplicates): ROOT/{train,val}/00000{0,1}.tar.
struct Corpus {
  fs::path root;
  std::map<std::string, data::Sample> by_key;  // last written sample per key
};

inline const Corpus& corpus() {
  static Corpus c = [] {
    Corpus x;
    x.root = fresh("corpus");
    std::vector<cv::Mat> img;
    for (const auto& code : curate_test::emoji_codes()) {
      img.push_back(curate_test::emoji_rgb(code));
      if (img.back().empty()) throw Error("emoji " + code + " missing: run scripts/setup");
    }
    auto png = [](const cv::Mat& m) { return curate_test::encode(m); };
    auto text = [](int i) { return "emoji number " + std::to_string(i); };
    cv::Mat bright;
    img[6].convertTo(bright, -1, 1.0, 20);
    cv::Mat bgr1;
    cv::cvtColor(img[1], bgr1, cv::COLOR_RGB2BGR);
    std::vector<uint8_t> png9;
    cv::imencode(".png", bgr1, png9, {cv::IMWRITE_PNG_COMPRESSION, 9});
    cv::Mat flipped;
    cv::flip(img[8], flipped, 1);
    const std::string bad_utf8 = std::string("caf") + char(0xE9) + " au lait";  // Latin-1, not UTF-8
    std::vector<std::vector<data::Sample>> shards(4);
    shards[0] = {sample("img_00", png(img[0]), text(0)), sample("img_01", png(img[1]), text(1)),
                 sample("img_02", png(img[2]), text(2)), sample("img_03", png(img[3]), text(3)),
                 sample("img_00_bmp", bmp(img[0]), "a bitmap copy", "bmp"), sample("img_01_png9", png9, "recompressed"),
                 sample("junk_00", {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'}, "broken file")};
    shards[1] = {sample("img_04", png(img[4]), text(4)), sample("img_05", png(img[5]), text(5)),
                 sample("img_06", png(img[6]), text(6)), sample("img_03_jpeg", curate_test::encode(img[3], 50), "jpeg copy", "jpg"),
                 sample("img_05_big", png(resized(img[5], 96)), "upscaled copy"), sample("empty_00", png(img[9]), " \t "),
                 sample("badutf8_00", png(img[10]), bad_utf8)};
    shards[2] = {sample("img_07", png(img[7]), text(7)), sample("img_08", png(img[8]), text(8)),
                 sample("img_09", png(img[9]), text(9)), sample("img_04_small", png(resized(img[4], 56)), "smaller copy"),
                 sample("img_06_bright", png(bright), "brighter copy"), sample("long_00", png(img[11]), std::string(300, 'x'))};
    shards[3] = {sample("img_10", png(img[10]), text(10)), sample("img_11", png(img[11]), text(11)),
                 sample("img_02_copy", png(img[2]), "same picture, another shard"),
                 sample("img_07_tiny", png(resized(img[7], 24)), "tiny copy"), sample("img_08", png(flipped), "same key again")};
    const char* dirs[4] = {"train", "train", "val", "val"};
    for (int s = 0; s < 4; ++s) {
      // One writer per shard, renamed into DIR/00000{0,1}.tar (two shards per split).
      const fs::path dir = x.root / dirs[s];
      data::ShardWriter w((x.root / ".tmp" / std::to_string(s)).string());
      for (const auto& smp : shards[size_t(s)]) {
        w.write(smp);
        x.by_key[smp.key] = smp;
      }
      w.close();
      fs::create_directories(dir);
      fs::rename(w.shards().front(), dir / ("00000" + std::to_string(s % 2) + ".tar"));
    }
    fs::remove_all(x.root / ".tmp");
    return x;
  }();
  return c;
}

inline std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

inline std::map<std::string, data::Sample> read_output(const fs::path& out) {
  std::map<std::string, data::Sample> m;
  for (auto it = fs::recursive_directory_iterator(out); it != fs::recursive_directory_iterator(); ++it) {
    if (it->path().extension() != ".tar") continue;
    data::ShardReader r(it->path().string());
    data::Sample s;
    while (r.next(s)) m[s.key] = s;
  }
  return m;
}

inline std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// Every file under a directory (relative path -> bytes), skipping report.json.
inline std::map<std::string, std::string> tree(const fs::path& root) {
  std::map<std::string, std::string> m;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it)
    if (it->is_regular_file() && it->path().filename() != "report.json")
      m[fs::relative(it->path(), root).string()] = file_bytes(it->path());
  return m;
}

/// report.json without what legitimately differs between runs (timings, memory, paths).
inline json comparable(json r) {
  r.erase("performance");
  r.erase("out_dir");
  if (r["near"].is_object()) {
    r["near"]["index"].erase("seconds");
    // index work counters are per query and equal; the byte count is too
  }
  return r;
}

/// An all-gather between threads of one process: ranks as threads.
class ThreadGroup {
 public:
  explicit ThreadGroup(int n) : n_(n), slots_(size_t(n)) {}
  std::vector<std::string> all_gather(int rank, const std::string& mine) {
    std::unique_lock<std::mutex> lk(mu_);
    const int gen = generation_;
    slots_[size_t(rank)] = mine;
    if (++arrived_ == n_) {
      result_ = slots_;
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return result_;
    }
    cv_.wait(lk, [&] { return generation_ != gen; });
    return result_;
  }

 private:
  int n_, arrived_ = 0, generation_ = 0;
  std::vector<std::string> slots_, result_;
  std::mutex mu_;
  std::condition_variable cv_;
};

/// Runs `opt` as `world` ranks (threads) and returns rank 0's report.
inline json run_ranks(const curate::CurateOptions& opt, int world) {
  ThreadGroup g(world);
  std::vector<json> reports(static_cast<size_t>(world));
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> th;
  for (int r = 0; r < world; ++r)
    th.emplace_back([&, r] {
      curate::Collective c;
      c.rank = r;
      c.world_size = world;
      c.all_gather = [&g, r](const std::string& s) { return g.all_gather(r, s); };
      try {
        reports[size_t(r)] = curate::curate(opt, c);
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto& t : th) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[size_t(r)], "") << "rank " << r;
  for (int r = 1; r < world; ++r) EXPECT_EQ(comparable(reports[size_t(r)]), comparable(reports[0])) << "rank " << r;
  return reports[0];
}

inline curate::CurateOptions base_options(const fs::path& out) {
  curate::CurateOptions o;
  o.inputs = {corpus().root.string()};
  o.out_dir = out.string();
  o.max_text_chars = 200;
  o.threads = 2;
  o.progress = false;
  o.montage_tile = 48;
  return o;
}


}  // namespace curate_pipeline_test
