#pragma once
// The real Emoji corpus (npm emoji-datasource-google, unpacked by scripts/setup) as WebDataset
// shards plus a BPE vocabulary learnt from its train texts, built once per folder for the
// training tests (header-only).
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "florence/data/corpus.h"
#include "florence/data/readers.h"
#include "florence/data/webdataset.h"
#include "florence/text/bpe_trainer.h"
#include "support/files.h"

namespace florence::test {

struct EmojiCorpus {
  bool available = false;
  std::string skip_reason;               ///< why not available (the emoji package is missing)
  std::filesystem::path root;            ///< DIR/NAME: train/, val/, test/, summary.json
  std::filesystem::path train_shards;    ///< root/train
  std::filesystem::path vocab;           ///< DIR/NAME_bpe.txt, learnt from the train texts only
  int64_t train_samples = 0;
};

/// Builds DIR/NAME from the first `limit` Emoji entries (0: all) in shards of `shard_size`, and a
/// `vocab_size`-token BPE vocabulary from its train texts; either is kept when already there.
/// Not available (skip_reason set) when the emoji package is missing.
inline EmojiCorpus emoji_corpus(const std::filesystem::path& dir, const std::string& name, int64_t limit,
                                int64_t shard_size, int64_t vocab_size) {
  namespace fs = std::filesystem;
  EmojiCorpus c;
  if (!fs::exists(fs::path(data::default_emoji_dir()) / "emoji.json")) {
    c.skip_reason = "emoji package missing at " + data::default_emoji_dir() + " (run scripts/setup)";
    return c;
  }
  c.root = dir / name;
  if (!fs::exists(c.root / "summary.json")) {
    data::CorpusOptions o;
    o.source = "emoji";
    o.out_dir = c.root.string();
    o.limit = limit;
    o.shard_size = shard_size;
    o.threads = 2;
    o.overwrite = true;
    o.progress = false;
    data::build_corpus(o);
  }
  c.train_samples = nlohmann::json::parse(read_text(c.root / "summary.json"))["splits"]["train"].get<int64_t>();
  c.train_shards = c.root / "train";
  c.vocab = dir / (name + "_bpe.txt");
  if (!fs::exists(c.vocab)) {
    const fs::path texts = dir / (name + "_train_texts.txt");
    {
      std::ofstream f(texts);
      for (const auto& shard : data::list_shards(c.train_shards.string())) {
        data::ShardReader r(shard);
        data::Sample s;
        while (r.next(s)) f << s.text << "\n";
      }
    }
    text::BpeTrainerOptions bo;
    bo.vocab_size = vocab_size;
    text::train_bpe({texts.string()}, bo, c.vocab.string());
  }
  c.available = true;
  return c;
}

}  // namespace florence::test
