// Loader throughput: images/s of the 224 px train pipeline (decode + RandomResizedCrop + flip +
// normalise + tokenize + batch) over real WebDataset shards, with all cores.
//
//   bench_loader SHARDS [--workers N] [--batch B] [--size S] [--batches K] [--eval]
//                       [--vocab PATH]
// SHARDS: anything list_shards() accepts (directory of .tar, file, brace pattern).
// Prints one line "loader: X images/s ..." and the loader's epoch statistics.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "florence/core/error.h"
#include "florence/data/loader.h"
#include "florence/data/readers.h"
#include "florence/text/tokenizer.h"
#include "support/args.h"
#include "support/paths.h"
#include "support/vocab.h"

using namespace florence;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: %s SHARDS [--workers N] [--batch B] [--size S] [--batches K] [--eval] "
                 "[--vocab PATH]\n",
                 argv[0]);
    return 2;
  }
  data::LoaderOptions o;
  o.batch_size = 64;
  o.image_size = 224;
  o.train = true;
  o.num_workers = int(std::thread::hardware_concurrency());
  int64_t max_batches = 0;  // 0 = whole epoch
  std::string vocab = ::test::clip_vocab();
  const std::string spec = argv[1];
  try {  // bad arguments (a missing value, a non-number) end in the catch below
    for (int i = 2; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&] { return florence::test::arg_value(i, argc, argv); };
      if (a == "--workers") o.num_workers = std::stoi(value());
      else if (a == "--batch") o.batch_size = std::stoll(value());
      else if (a == "--size") o.image_size = std::stoi(value());
      else if (a == "--batches") max_batches = std::stoll(value());
      else if (a == "--eval") o.train = false;
      else if (a == "--vocab") vocab = value();
      else {
        std::fprintf(stderr, "unknown argument %s\n", a.c_str());
        return 2;
      }
    }
    spdlog::set_level(spdlog::level::warn);
    auto source = data::ShardSource::from_spec(spec);
    std::shared_ptr<const text::Tokenizer> tok;
    if (std::filesystem::exists(vocab)) {
      tok = std::make_shared<const text::Tokenizer>(text::Tokenizer::from_file(vocab));
    } else {
      std::fprintf(stderr, "note: vocabulary %s not found, texts are not tokenized\n", vocab.c_str());
    }
    data::Loader loader(source, o, tok);
    const auto t0 = std::chrono::steady_clock::now();
    loader.start_epoch(0);
    data::Batch b;
    int64_t images = 0, batches = 0;
    double checksum = 0;
    while (loader.next(b)) {
      images += b.size();
      checksum += b.images.index({0, 0, 0, 0}).item<float>();  // touch the data
      if (max_batches > 0 && ++batches >= max_batches) break;
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const data::EpochStats st = loader.stats();
    loader.stop();
    std::printf("loader: %.1f images/s (%lld images in %.2f s; %s pipeline %d px, batch %lld, "
                "%d workers, %u cores; %s)\n",
                images / secs, static_cast<long long>(images), secs, o.train ? "train" : "eval",
                o.image_size, static_cast<long long>(o.batch_size), o.num_workers,
                std::thread::hardware_concurrency(), source->describe().c_str());
    std::printf("stats: %s (checksum %.3f)\n", st.summary().c_str(), checksum);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
