// CLIP BPE tokenizer: golden cases produced by CLIP's simple_tokenizer.py
// (shared/fixtures/clip_tokenizer_cases.jsonl), cleaning rules checked against Python's
// html.unescape / str.lower outputs (values computed with /usr/bin/python3 and written here),
// truncation/padding, thread safety, gzip vs plain loading, decode, error handling, and the
// `florence tokenize` CLI against the library.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "florence/core/error.h"
#include "florence/text/tokenizer.h"
#include "support/paths.h"
#include "support/vocab.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_tokenizer {

namespace fs = std::filesystem;
using florence::Error;
using florence::text::Tokenizer;

namespace {

const std::string kVocabGz = ::test::clip_vocab();
const std::string kCases = std::string(FLORENCE_SHARED_DIR) + "/fixtures/clip_tokenizer_cases.jsonl";

const Tokenizer& clip() {
  static const Tokenizer tok = Tokenizer::from_file(kVocabGz);
  return tok;
}

struct Case {
  std::string text;
  std::vector<int64_t> ids, ids_untruncated;
};

std::vector<Case> load_cases() {
  std::ifstream in(kCases);
  EXPECT_TRUE(in.good()) << kCases;
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    cases.push_back({j.at("text").get<std::string>(), j.at("ids").get<std::vector<int64_t>>(),
                     j.at("ids_untruncated").get<std::vector<int64_t>>()});
  }
  return cases;
}

fs::path tmp_dir() {
  fs::path d = fs::path(FLORENCE_TEST_TMP) / "tokenizer";
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST(ClipTokenizer, VocabularyLayout) {
  const Tokenizer& t = clip();
  EXPECT_EQ(t.vocab_size(), 49408);
  EXPECT_EQ(t.num_merges(), 48894);
  EXPECT_EQ(t.sot_id(), 49406);
  EXPECT_EQ(t.eot_id(), 49407);
  EXPECT_EQ(t.token(49406), "<|startoftext|>");
  EXPECT_EQ(t.token(49407), "<|endoftext|>");
  EXPECT_EQ(t.token(0), "!");
  EXPECT_EQ(t.token(256), "!</w>");
  EXPECT_EQ(t.token(93), "~");
  EXPECT_EQ(t.token(94), "\xC2\xA1");       // U+00A1 follows '~'
  EXPECT_EQ(t.token(127), "\xC3\x83");      // byte 0xC3 keeps its code point
  EXPECT_EQ(t.token(188), "\xC4\x80");      // first remapped byte (0x00 -> U+0100)
  EXPECT_EQ(t.token(320), "a</w>");
  EXPECT_EQ(t.token(2368), "cat</w>");
  EXPECT_THROW(t.token(49408), Error);
  EXPECT_THROW(t.token(-1), Error);
}

TEST(ClipTokenizer, ByteAlphabet) {
  const auto& b2u = florence::text::byte_to_unicode();
  EXPECT_EQ(b2u['a'], U'a');
  EXPECT_EQ(b2u[0x00], 0x100u);
  EXPECT_EQ(b2u[' '], 0x120u);  // 33rd remapped byte (0x00..0x20)
  EXPECT_EQ(b2u[0xAD], 0x143u);  // last remapped byte (soft hyphen)
  EXPECT_EQ(b2u[0xFF], 0xFFu);
  const auto& order = florence::text::byte_symbol_order();
  EXPECT_EQ(order[0], '!');
  EXPECT_EQ(order[93], '~');
  EXPECT_EQ(order[94], 0xA1);
  EXPECT_EQ(order[188], 0x00);
  EXPECT_EQ(order[255], 0xAD);
}

TEST(ClipTokenizer, EveryFixtureCase) {
  const auto cases = load_cases();
  ASSERT_GE(cases.size(), 80u);
  const Tokenizer& t = clip();
  for (const Case& c : cases) {
    const auto row = t.encode_with_specials(c.text, 77);
    ASSERT_EQ(row.size(), 77u) << c.text;
    const std::vector<int64_t> head(row.begin(), row.begin() + static_cast<long>(c.ids.size()));
    EXPECT_EQ(head, c.ids) << "text: " << c.text;
    for (size_t k = c.ids.size(); k < row.size(); ++k) EXPECT_EQ(row[k], 0) << c.text;
    EXPECT_EQ(t.encode_with_specials(c.text, 77, /*pad=*/false), c.ids) << c.text;
    ASSERT_GE(c.ids_untruncated.size(), 2u);
    const std::vector<int64_t> body(c.ids_untruncated.begin() + 1, c.ids_untruncated.end() - 1);
    EXPECT_EQ(t.encode(c.text), body) << c.text;
  }
}

TEST(ClipTokenizer, HandCheckedIds) {
  // ids from the fixture's first case, spelled out: "a photo of a cat."
  EXPECT_EQ(clip().encode("a photo of a cat."),
            (std::vector<int64_t>{320, 1125, 539, 320, 2368, 269}));
  // Literal special tokens in text map to the special ids (CLIP pre-seeds its cache with them).
  EXPECT_EQ(clip().encode("<|startoftext|> x <|endoftext|>"),
            (std::vector<int64_t>{49406, clip().encode("x")[0], 49407}));
}

TEST(ClipTokenizer, SpecialsInTextCanBeDisabled) {
  florence::text::TokenizerOptions o;
  o.specials_in_text = false;
  const Tokenizer t = Tokenizer::from_file(kVocabGz, o);
  const auto ids = t.encode("<|startoftext|>");
  EXPECT_GT(ids.size(), 1u);
  for (int64_t id : ids) EXPECT_LT(id, 49406);
}

TEST(ClipTokenizer, CleaningHtmlEntities) {
  // Expected strings computed with Python: html.unescape(html.unescape(x)).strip(), whitespace
  // collapse, .lower().
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"&amp;lt;b&amp;gt;", "<b>"},                 // double unescape
      {"&amp;amp;amp;", "&amp;"},                   // ... but only twice
      {"&#38;amp;", "&"},
      {"&amp;#38;", "&"},
      {"&ampfoo", "&foo"},                          // legacy name without ';'
      {"&copy2023", "\xC2\xA9" "2023"},
      {"&notit;", "\xC2\xAC" "it;"},                // longest legacy prefix "not"
      {"&notin;", "\xE2\x88\x89"},
      {"&AMP;&AMP&Amp;", "&&&amp;"},                // names are case-sensitive
      {"&LT&GT&lt&gtx", "<><>x"},
      {"&#65;&#x42;&#X43", "abc"},                  // numeric, ';' optional, lowercased after
      {"&#128;&#x80;", "\xE2\x82\xAC\xE2\x82\xAC"},  // windows-1252 reading of 0x80
      {"&#0;|&#x110000;|&#xD800;|&#99999999999999999999;",
       "\xEF\xBF\xBD|\xEF\xBF\xBD|\xEF\xBF\xBD|\xEF\xBF\xBD"},
      {"a&#1;b&#x7f;c&#xFFFE;d&#x1FFFF;e", "abcde"},  // dropped code points
      {"&foo; & &#; &#x; &;", "&foo; & &#; &#x; &;"},  // not references
      {"x&#13;y", "x y"},
      {"&nbsp;x&nbsp;", "x"},
      {"&NotNestedGreaterGreater;", "\xE2\xAA\xA2\xCC\xB8"},  // two code points
      {"&ThickSpace;", ""},                                     // U+205F U+200A: whitespace
      {"&zwnj;", "\xE2\x80\x8C"},
      {"&abcdefghijklmnopqrstuvwxyzabcdefghijk;amp", "&abcdefghijklmnopqrstuvwxyzabcdefghijk;amp"},
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(Tokenizer::clean(in), want) << in;
  EXPECT_EQ(florence::text::html_unescape("&amp;amp;"), "&amp;");  // a single pass
}

TEST(ClipTokenizer, CleaningWhitespaceAndCase) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"  a \t\n b  ", "a b"},
      {"\xE3\x80\x80x\xC2\xA0\xE2\x80\xA8y\xC2\x85", "x y"},  // U+3000, NBSP, U+2028, NEL
      {"\x1C a \x1D", "a"},                                      // str.strip removes U+001C..1F
      {"ALLCAPS Shouting", "allcaps shouting"},
      {"\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3 \xCE\xA3\xCE\x91\xCE\xA3",  // "ΟΔΟΣ ΣΑΣ": final sigma
       "\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82 \xCF\x83\xCE\xB1\xCF\x82"},
      {"\xC4\xB0STANBUL", "i\xCC\x87stanbul"},  // U+0130 -> "i" + U+0307 (full mapping)
      {"Stra\xC3\x9F" "e", "stra\xC3\x9F" "e"},
      {"", ""},
      {" \t\n ", ""},
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(Tokenizer::clean(in), want) << in;
}

TEST(ClipTokenizer, Pretokenize) {
  using V = std::vector<std::string>;
  EXPECT_EQ(florence::text::pretokenize("don't stop'em 'apos' x2y c++ 12"),
            (V{"don", "'t", "stop", "'", "em", "'", "apos", "'", "x", "2", "y", "c", "++", "1", "2"}));
  EXPECT_EQ(florence::text::pretokenize("\xE4\xB8\xAD\xE6\x96\x87!?"),
            (V{"\xE4\xB8\xAD\xE6\x96\x87", "!?"}));
}

TEST(ClipTokenizer, TruncationKeepsEot) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += "a ";
  const auto body = clip().encode(text);
  ASSERT_EQ(body.size(), 100u);
  for (int64_t id : body) EXPECT_EQ(id, 320);
  const auto row = clip().encode_with_specials(text, 77);
  ASSERT_EQ(row.size(), 77u);
  EXPECT_EQ(row[0], 49406);
  for (int k = 1; k < 76; ++k) EXPECT_EQ(row[k], 320) << k;
  EXPECT_EQ(row[76], 49407);
  // exactly 75 tokens fit without truncation
  std::string fit;
  for (int i = 0; i < 75; ++i) fit += "a ";
  const auto row2 = clip().encode_with_specials(fit, 77);
  EXPECT_EQ(row2[75], 320);
  EXPECT_EQ(row2[76], 49407);
}

TEST(ClipTokenizer, PaddingAndContextLength) {
  const auto row = clip().encode_with_specials("a", 77);
  ASSERT_EQ(row.size(), 77u);
  EXPECT_EQ(row[0], 49406);
  EXPECT_EQ(row[1], 320);
  EXPECT_EQ(row[2], 49407);
  for (int k = 3; k < 77; ++k) EXPECT_EQ(row[k], 0);
  EXPECT_EQ(clip().encode_with_specials("a photo of a cat.", 4),
            (std::vector<int64_t>{49406, 320, 1125, 49407}));
  EXPECT_EQ(clip().encode_with_specials("", 3), (std::vector<int64_t>{49406, 49407, 0}));
  EXPECT_EQ(clip().encode_with_specials("a cat", 2), (std::vector<int64_t>{49406, 49407}));
  EXPECT_THROW(clip().encode_with_specials("a", 1), Error);
}

TEST(ClipTokenizer, TokenizeTensor) {
  const std::vector<std::string> texts = {"a photo of a cat.", "", "Straße und Grüße"};
  const torch::Tensor ids = clip().tokenize(texts, 77);
  ASSERT_EQ(ids.dim(), 2);
  EXPECT_EQ(ids.size(0), 3);
  EXPECT_EQ(ids.size(1), 77);
  EXPECT_EQ(ids.scalar_type(), torch::kLong);
  for (size_t r = 0; r < texts.size(); ++r) {
    const auto want = clip().encode_with_specials(texts[r], 77);
    for (int c = 0; c < 77; ++c) EXPECT_EQ(ids[r][c].item<int64_t>(), want[c]);
  }
  EXPECT_THROW(clip().tokenize({"ok", "bad \xFF"}, 77), Error);
}

TEST(ClipTokenizer, InvalidUtf8Throws) {
  for (const std::string bad : {"\xFF", "ab\xC3", "\xED\xA0\x80", "\xC0\xAF", "\xF4\x90\x80\x80",
                                "x\xE2\x82"}) {
    EXPECT_THROW(clip().encode(bad), Error) << bad;
    EXPECT_THROW(Tokenizer::clean(bad), Error);
  }
  EXPECT_EQ(florence::text::find_invalid_utf8("ab\xC3"), 2);
  EXPECT_EQ(florence::text::find_invalid_utf8("ok \xF0\x9F\x90\xB1"), -1);
  try {
    clip().encode("abc\xFF");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("byte offset 3"), std::string::npos) << e.what();
  }
}

TEST(ClipTokenizer, Utf8ReplaceMatchesPython) {
  // Python: bytes.decode('utf-8', errors='replace')
  const std::string r = "\xEF\xBF\xBD";
  using florence::text::utf8_decode_replace;
  EXPECT_EQ(utf8_decode_replace("\xE2\x82" "a"), r + "a");
  EXPECT_EQ(utf8_decode_replace("\xF0\x9F\x98"), r);
  EXPECT_EQ(utf8_decode_replace("\xC0\xAF"), r + r);
  EXPECT_EQ(utf8_decode_replace("\xED\xA0\x80"), r + r + r);
  EXPECT_EQ(utf8_decode_replace("\xF4\x90\x80\x80"), r + r + r + r);
  EXPECT_EQ(utf8_decode_replace("a\xFF" "b"), "a" + r + "b");
  EXPECT_EQ(utf8_decode_replace("\xE0\x80\x80"), r + r + r);
}

TEST(ClipTokenizer, Decode) {
  const Tokenizer& t = clip();
  const auto row = t.encode_with_specials("A photo of a CAT.", 77, false);
  EXPECT_EQ(t.decode(row), "<|startoftext|>a photo of a cat . <|endoftext|>");
  EXPECT_EQ(t.decode(row, /*skip_special_tokens=*/true), "a photo of a cat . ");
  EXPECT_EQ(t.decode(t.encode("Straße 🐱")), "straße 🐱 ");
  // A lone byte of a multi-byte character decodes to U+FFFD (errors='replace').
  EXPECT_EQ(t.decode({127}), "\xEF\xBF\xBD");  // id 127 = byte 0xC3 alone
  EXPECT_THROW(t.decode({49408}), Error);
  EXPECT_THROW(t.decode({-1}), Error);
}

TEST(ClipTokenizer, ConcurrentEncodeEqualsSerial) {
  const auto cases = load_cases();
  std::vector<std::string> texts;
  for (const Case& c : cases) texts.push_back(c.text);
  for (int i = 0; i < 200; ++i) texts.push_back("word" + std::to_string(i * 7919) + " x" + std::to_string(i));
  const Tokenizer fresh = Tokenizer::from_file(kVocabGz);  // empty cache: threads race to fill it
  std::vector<std::vector<int64_t>> serial;
  for (const auto& s : texts) serial.push_back(clip().encode(s));
  std::vector<std::vector<std::vector<int64_t>>> results(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep) {
        results[t].clear();
        for (size_t k = 0; k < texts.size(); ++k) {
          const size_t i = (k + static_cast<size_t>(t) * 37) % texts.size();  // different orders
          results[t].push_back(fresh.encode(texts[i]));
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) {
    for (size_t k = 0; k < texts.size(); ++k) {
      const size_t i = (k + static_cast<size_t>(t) * 37) % texts.size();
      EXPECT_EQ(results[t][k], serial[i]) << "thread " << t << " text " << texts[i];
    }
  }
}

TEST(ClipTokenizer, PlainAndGzipGiveSameIds) {
  const fs::path plain = tmp_dir() / "bpe_plain.txt";
  {
    gzFile in = gzopen(kVocabGz.c_str(), "rb");
    ASSERT_NE(in, nullptr);
    std::ofstream out(plain, std::ios::binary);
    char buf[1 << 16];
    int n;
    while ((n = gzread(in, buf, sizeof(buf))) > 0) out.write(buf, n);
    gzclose(in);
  }
  const Tokenizer p = Tokenizer::from_file(plain.string());
  EXPECT_EQ(p.vocab_size(), 49408);
  for (const Case& c : load_cases()) EXPECT_EQ(p.encode(c.text), clip().encode(c.text)) << c.text;
  florence::text::TokenizerOptions o;
  o.max_merges = 1000;
  const Tokenizer small = Tokenizer::from_file(plain.string(), o);
  EXPECT_EQ(small.vocab_size(), 512 + 1000 + 2);
  EXPECT_EQ(small.eot_id(), 1513);
}

TEST(ClipTokenizer, BadFilesAreErrors) {
  EXPECT_THROW(Tokenizer::from_file((tmp_dir() / "does_not_exist.txt").string()), Error);
  const fs::path three = tmp_dir() / "three_parts.txt";
  std::ofstream(three) << "#version: 0.2\na b\nc d e\n";
  EXPECT_THROW(Tokenizer::from_file(three.string()), Error);
  const fs::path short_file = tmp_dir() / "short.txt";
  std::ofstream(short_file) << "#version: 0.2 florence-bpe merges=5\na b\n";
  EXPECT_THROW(Tokenizer::from_file(short_file.string()), Error);
  const fs::path alien = tmp_dir() / "alien.txt";
  std::ofstream(alien) << "#version: 0.2\na \xE2\x82\xAC\n";  // '€' is not in the byte alphabet
  EXPECT_THROW(Tokenizer::from_file(alien.string()), Error);
  const fs::path ok = tmp_dir() / "ok.txt";
  std::ofstream(ok) << "#version: 0.2\na b</w>\n";
  const Tokenizer t = Tokenizer::from_file(ok.string());
  EXPECT_EQ(t.vocab_size(), 515);
  EXPECT_EQ(t.encode("ab b"), (std::vector<int64_t>{512, 256 + ('b' - '!')}));
}

TEST(ClipTokenizer, CliMatchesLibrary) {
  ASSERT_TRUE(fs::exists(FLORENCE_CLI)) << "build the florence_cli target first: " << FLORENCE_CLI;
  const fs::path in = tmp_dir() / "cli_in.jsonl";
  const fs::path out = tmp_dir() / "cli_out.jsonl";
  const fs::path err = tmp_dir() / "cli_err.txt";
  const std::vector<std::string> texts = {"a photo of a cat.", "Straße und Grüße",
                                          "&amp;lt;tag&amp;gt; emoji 🐱", std::string(300, 'x')};
  {
    std::ofstream f(in);
    for (const auto& s : texts) f << nlohmann::json{{"text", s}}.dump() << "\n";
  }
  const std::string cmd = std::string(FLORENCE_CLI) + " tokenize --vocab " + kVocabGz + " < " +
                          in.string() + " > " + out.string() + " 2> " + err.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream f(out);
  std::string line;
  size_t n = 0;
  while (std::getline(f, line)) {
    ASSERT_LT(n, texts.size());
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("ids").get<std::vector<int64_t>>(),
              clip().encode_with_specials(texts[n], 77, false))
        << texts[n];
    ++n;
  }
  EXPECT_EQ(n, texts.size());

  // Bad lines give an error line at their position, the rest is still tokenized, exit != 0.
  {
    std::ofstream g(in);
    g << "{\"text\": \"a cat\"}\nnot json\n{\"txt\": 1}\n\n{\"text\": \"a dog\"}\n";
  }
  const std::string cmd2 = std::string(FLORENCE_CLI) + " tokenize --pad --context-length 8 --vocab " +
                           kVocabGz + " < " + in.string() + " > " + out.string() + " 2> " + err.string();
  EXPECT_NE(std::system(cmd2.c_str()), 0);
  std::ifstream g(out);
  std::vector<nlohmann::json> lines;
  while (std::getline(g, line)) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0].at("ids").get<std::vector<int64_t>>(), clip().encode_with_specials("a cat", 8));
  EXPECT_TRUE(lines[1].contains("error"));
  EXPECT_TRUE(lines[2].contains("error"));
  EXPECT_TRUE(lines[3].contains("error"));
  EXPECT_EQ(lines[4].at("ids").get<std::vector<int64_t>>(), clip().encode_with_specials("a dog", 8));
  std::stringstream es;
  es << std::ifstream(err).rdbuf();
  EXPECT_NE(es.str().find("3 failed"), std::string::npos) << es.str();
}

TEST(ClipTokenizer, LongWordsEqualTheNaiveReference) {
  // Long and repetitive words stress the heap-ordered BPE (overlapping equal pairs, many rounds);
  // the reference is CLIP's naive rescan-and-merge loop in Python (bpe_reference.py).
  std::vector<std::string> words = {std::string(1000, 'a'), "", "", "", "", "", std::string(301, '!')};
  for (int i = 0; i < 400; ++i) words[1] += "ab";
  for (int i = 0; i < 300; ++i) words[2] += "aab";
  for (int i = 0; i < 200; ++i) words[3] += "\xc3\xa9t\xc3\xa9";  // "été"
  uint32_t x = 12345;
  for (int i = 0; i < 2000; ++i) {
    x = x * 1664525u + 1013904223u;
    words[4] += char('a' + (x >> 24) % 26);
  }
  for (int i = 0; i < 500; ++i) words[5] += (i % 7 < 4 ? "th" : "e");
  const fs::path dir = fs::path(::testing::TempDir()) / "bpe_reference";
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "words.txt", std::ios::binary);
    for (const auto& w : words) f << w << "\n";
  }
  const std::string cmd = std::string(FLORENCE_PYTHON) + " " + FLORENCE_SOURCE_DIR + "/tests/unit/text/bpe_reference.py " +
                          kVocabGz + " " + (dir / "words.txt").string() + " > " + (dir / "ids.txt").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(dir / "ids.txt");
  for (const auto& w : words) {
    std::string line;
    ASSERT_TRUE(std::getline(in, line)) << "reference output ended early";
    std::vector<int64_t> expected;
    std::istringstream ls(line);
    for (int64_t id; ls >> id;) expected.push_back(id);
    EXPECT_EQ(clip().encode(w), expected) << "word of " << w.size() << " bytes starting " << w.substr(0, 12);
  }
}

}  // namespace test_tokenizer
