// BPE trainer: hand-computed merges on tiny corpora, tie-breaking, determinism, vocabulary size,
// round trip through the tokenizer, corpus line handling, and the `florence tokenizer train` CLI.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "florence/core/error.h"
#include "florence/text/bpe_trainer.h"
#include "florence/text/tokenizer.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_bpe_trainer {

namespace fs = std::filesystem;
using florence::Error;
using florence::text::BpeTrainer;
using florence::text::BpeTrainerOptions;
using florence::text::Tokenizer;
using Merges = std::vector<std::pair<std::string, std::string>>;

namespace {

fs::path tmp_dir() {
  fs::path d = fs::path(FLORENCE_TEST_TMP) / "bpe_trainer";
  fs::create_directories(d);
  return d;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Merges train_on(const std::vector<std::string>& docs, int64_t vocab, int64_t min_freq) {
  BpeTrainer t({vocab, min_freq});
  for (const auto& d : docs) t.add_text(d);
  return t.train();
}

/// A deterministic synthetic corpus: pseudo-words from a small syllable set, digits,
/// punctuation, and some multi-byte text, ~100 KB.
fs::path make_corpus() {
  const fs::path p = tmp_dir() / "corpus.txt";
  std::mt19937 rng(1234);
  const std::vector<std::string> syll = {"ka", "lo", "mi", "tor", "en", "sh", "qu", "ix",
                                         "stra", "ße", "ü", "Δο", "日本", "🐱", "ing", "the"};
  std::ofstream f(p, std::ios::binary);
  for (int line = 0; line < 2000; ++line) {
    const int nwords = 3 + static_cast<int>(rng() % 10);
    std::string doc;
    for (int w = 0; w < nwords; ++w) {
      const int ns = 1 + static_cast<int>(rng() % 3);
      for (int s = 0; s < ns; ++s) doc += syll[rng() % syll.size()];
      if (rng() % 7 == 0) doc += std::to_string(rng() % 1000);
      if (rng() % 9 == 0) doc += "!?";
      doc += ' ';
    }
    if (line % 10 == 0) {
      f << nlohmann::json{{"text", doc}}.dump() << "\n";
    } else {
      f << doc << "\n";
    }
  }
  return p;
}

}  // namespace

TEST(BpeTrainer, HandComputedMerges) {
  // Words: "aaab" x3 -> a a a b</w> ; "ab" x1 -> a b</w>.
  // Pair counts: (a,a) = 2*3 = 6, (a,b</w>) = 3 + 1 = 4  -> merge 1: "a a".
  // Then aaab = aa a b</w>: (aa,a) = 3, (a,b</w>) = 4      -> merge 2: "a b</w>".
  // Then aaab = aa ab</w>: (aa,ab</w>) = 3                  -> merge 3: "aa ab</w>". No pairs left.
  const Merges want = {{"a", "a"}, {"a", "b</w>"}, {"aa", "ab</w>"}};
  EXPECT_EQ(train_on({"aaab aaab aaab ab"}, 514 + 3, 2), want);
  EXPECT_EQ(train_on({"aaab aaab aaab ab"}, 514 + 100, 2), want);  // stops: no pairs left
  EXPECT_EQ(train_on({"aaab aaab aaab ab"}, 514 + 1, 2), Merges({{"a", "a"}}));
  // min_frequency 5: only (a,a)=6 qualifies.
  EXPECT_EQ(train_on({"aaab aaab aaab ab"}, 514 + 100, 5), Merges({{"a", "a"}}));
  // Documents are cleaned like the tokenizer does: case and HTML entities.
  EXPECT_EQ(train_on({"AAAB aaab", "&#97;aab ab"}, 514 + 3, 2), want);
}

TEST(BpeTrainer, TiesBrokenByPairStrings) {
  // (c,d</w>) and (a,b</w>) both occur twice: "a" < "c" wins; then (c,d</w>).
  EXPECT_EQ(train_on({"cd ab cd ab"}, 516, 1), Merges({{"a", "b</w>"}, {"c", "d</w>"}}));
  // Overlapping pair counts like the tokenizer: "aaa" -> (a,a) twice (merged once: "aa a</w>").
  EXPECT_EQ(train_on({"aaa"}, 516, 1), Merges({{"a", "a"}, {"aa", "a</w>"}}));
}

TEST(BpeTrainer, RejectsBadOptions) {
  EXPECT_THROW(BpeTrainer({513, 2}), Error);
  EXPECT_THROW(BpeTrainer({1000, 0}), Error);
  EXPECT_NO_THROW(BpeTrainer({514, 1}));
  BpeTrainer t({600, 1});
  EXPECT_THROW(t.add_text("bad \xFF"), Error);
}

TEST(BpeTrainer, DeterministicVocabSizeAndRoundTrip) {
  const fs::path corpus = make_corpus();
  const fs::path out1 = tmp_dir() / "merges1.txt";
  const fs::path out2 = tmp_dir() / "merges2.txt";
  const fs::path out_gz = tmp_dir() / "merges3.txt.gz";
  const BpeTrainerOptions opt{1000, 2};
  const auto s1 = florence::text::train_bpe({corpus.string()}, opt, out1.string());
  florence::text::train_bpe({corpus.string()}, opt, out2.string());
  florence::text::train_bpe({corpus.string()}, opt, out_gz.string());
  EXPECT_EQ(s1.merges, 1000 - 514);
  EXPECT_EQ(s1.vocab_size, 1000);
  EXPECT_EQ(s1.documents, 2000);
  const std::string bytes1 = read_file(out1);
  EXPECT_EQ(bytes1, read_file(out2));
  EXPECT_EQ(bytes1.rfind("#version: 0.2 florence-bpe merges=486 ", 0), 0u) << bytes1.substr(0, 80);

  const Tokenizer tok = Tokenizer::from_file(out1.string());
  EXPECT_EQ(tok.vocab_size(), 1000);
  EXPECT_EQ(tok.num_merges(), 486);
  EXPECT_EQ(tok.sot_id(), 998);
  EXPECT_EQ(tok.eot_id(), 999);
  EXPECT_EQ(tok.token(998), "<|startoftext|>");
  const Tokenizer tok_gz = Tokenizer::from_file(out_gz.string());
  EXPECT_EQ(tok_gz.vocab_size(), 1000);

  // Frequent corpus words become single tokens.
  EXPECT_EQ(tok.encode("the").size(), 1u);
  EXPECT_EQ(tok.encode("ka").size(), 1u);

  // Round trip on many strings, including text the trainer never saw. CLIP's decode turns each
  // word end into a space, so decode(encode(x)) is the cleaned pieces each followed by " "; with
  // spaces removed it equals clean(x) with spaces removed.
  std::vector<std::string> samples = {
      "Hello, World! 123 4567", "Straße und Grüße", "日本語のテキスト", "Привет мир",
      "emoji 🐱🐶🚗 mixed 👩‍👩‍👧", "&amp; &lt;tag&gt; &#39;x&#39;", "tab\tand\nnewline",
      "C++ & C# // comments /* x */", "ΟΔΟΣ", "a\xCC\x81 e\xCC\x88", "'s 're 've 'm 'll 'd",
      "12.5% of $3,000", "", "   ", "\xC2\xA0nbsp\xC2\xA0", "kalomi torenq ix 999 !?"};
  std::mt19937 rng(99);
  const std::vector<std::string> pool = {"a", "Z", "9", " ", ".", "é", "ß", "中", "🐱", "\t", "'", "-",
                                         "\xE2\x80\x94", "ka", "the", "&amp;", "Δ", "\xF0\x9F\x87\xAB"};
  for (int i = 0; i < 300; ++i) {
    std::string s;
    const int n = static_cast<int>(rng() % 25);
    for (int k = 0; k < n; ++k) s += pool[rng() % pool.size()];
    samples.push_back(s);
  }
  for (const auto& x : samples) {
    const std::string cleaned = Tokenizer::clean(x);
    std::string want;
    for (const auto& piece : florence::text::pretokenize(cleaned)) want += piece + " ";
    const auto ids = tok.encode(x);
    for (int64_t id : ids) ASSERT_LT(id, 998) << x;
    EXPECT_EQ(tok.decode(ids), want) << x;
    std::string a = tok.decode(ids), b = cleaned;
    a.erase(std::remove(a.begin(), a.end(), ' '), a.end());
    b.erase(std::remove(b.begin(), b.end(), ' '), b.end());
    EXPECT_EQ(a, b) << x;
    EXPECT_EQ(tok_gz.encode(x), ids) << x;
  }
}

TEST(BpeTrainer, CorpusLines) {
  const fs::path corpus = tmp_dir() / "mixed.jsonl";
  {
    std::ofstream f(corpus, std::ios::binary);
    f << "{\"text\": \"aaab aaab\"}\n";           // JSON document
    f << "aaab ab\r\n";                            // plain text (CRLF)
    f << "\n   \n";                                // blank lines
    f << "{\"caption\": \"no text field\"}\n";     // skipped
    f << "{\"text\": 5}\n";                        // skipped
    f << "bad \xFF utf8\n";                        // skipped
    f << "{braces} are plain text\n";              // not JSON -> plain text
  }
  BpeTrainer t({514 + 3, 2});
  t.add_file(corpus.string());
  EXPECT_EQ(t.stats().documents, 3);
  EXPECT_EQ(t.stats().skipped_lines, 3);
  EXPECT_EQ(t.stats().empty_lines, 2);
  EXPECT_EQ(t.train(), Merges({{"a", "a"}, {"a", "b</w>"}, {"aa", "ab</w>"}}));
  EXPECT_THROW(t.add_file((tmp_dir() / "missing.txt").string()), Error);
  // A word over kMaxTrainWordBytes is left out and counted, the rest of its document is kept.
  BpeTrainer l({514 + 3, 2});
  l.add_text("aaab " + std::string(florence::text::kMaxTrainWordBytes + 1, 'z') + " aaab");
  EXPECT_EQ(l.stats().long_words, 1);
  EXPECT_EQ(l.stats().words, 2);
}

TEST(BpeTrainer, TruncatedGzipCorpusIsAnError) {
  // A cut-off .gz corpus must not be taken for a complete (shorter) one.
  const fs::path full = tmp_dir() / "corpus_full.txt.gz", cut = tmp_dir() / "corpus_cut.txt.gz";
  {
    gzFile g = gzopen(full.c_str(), "wb");
    std::mt19937 rng(1);
    for (int i = 0; i < 20000; ++i) {
      const std::string line = "caption " + std::to_string(rng()) + " of a picture\n";
      gzwrite(g, line.data(), unsigned(line.size()));
    }
    gzclose(g);
  }
  std::string bytes;
  {
    std::ifstream in(full, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  BpeTrainer ok({600, 2});
  ok.add_file(full.string());
  EXPECT_EQ(ok.stats().documents, 20000);
  BpeTrainer t({600, 2});
  EXPECT_THROW(t.add_file(cut.string()), Error);
  // The merges reader has the same check.
  EXPECT_THROW(Tokenizer::from_file(cut.string()), Error);
}

TEST(BpeTrainer, CliMatchesLibrary) {
  ASSERT_TRUE(fs::exists(FLORENCE_CLI)) << "build the florence_cli target first: " << FLORENCE_CLI;
  const fs::path corpus = make_corpus();
  const fs::path lib_out = tmp_dir() / "lib.txt";
  const fs::path cli_out = tmp_dir() / "cli.txt";
  florence::text::train_bpe({corpus.string()}, {700, 3}, lib_out.string());
  const fs::path log = tmp_dir() / "cli.log", stdout_file = tmp_dir() / "cli.stdout";
  const std::string cmd = std::string(FLORENCE_CLI) + " tokenizer train --corpus " +
                          corpus.string() + " --vocab-size 700 --min-frequency 3 --out " +
                          cli_out.string() + " > " + stdout_file.string() + " 2> " + log.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  EXPECT_EQ(read_file(cli_out), read_file(lib_out));
  // Progress on stderr (a long corpus is no longer silent): the file read, the start of learning and
  // every tenth of the 700 - 514 = 186 merges; stdout holds only the final summary line.
  const std::string progress = read_file(log);
  EXPECT_NE(progress.find("tokenizer train: reading " + corpus.string()), std::string::npos) << progress;
  EXPECT_NE(progress.find("tokenizer train: " + corpus.string() + ": 2000 lines, 2000 documents"), std::string::npos)
      << progress;
  EXPECT_NE(progress.find("learning up to 186 merges from "), std::string::npos) << progress;
  size_t tenths = 0;
  for (size_t at = 0; (at = progress.find(" of 186 merges (", at)) != std::string::npos; ++at) ++tenths;
  EXPECT_EQ(tenths, 10u) << progress;
  EXPECT_NE(progress.find("19 of 186 merges (10%)"), std::string::npos) << progress;  // ceil(18.6)
  EXPECT_NE(progress.find("186 of 186 merges (100%)"), std::string::npos) << progress;
  const std::string summary = read_file(stdout_file);
  EXPECT_EQ(summary.rfind("wrote ", 0), 0u) << summary;
  EXPECT_EQ(std::count(summary.begin(), summary.end(), '\n'), 1) << summary;
  const std::string bad = std::string(FLORENCE_CLI) + " tokenizer train --corpus " +
                          corpus.string() + " --vocab-size 500 --out " + cli_out.string() +
                          " > /dev/null 2>&1";
  EXPECT_NE(std::system(bad.c_str()), 0);
}

}  // namespace test_bpe_trainer
