// florence tokenize --vocab FILE [--context-length 77] [--pad] [--max-merges M]
//   stdin: JSON lines {"text": "..."}; stdout: one line per input line, same order:
//   {"ids": [SOT, ..., EOT]} (truncated to the context length keeping EOT; zero padded only with
//   --pad) or {"error": "line N: ..."} for a line that is not a JSON object with a string "text"
//   or whose text is not valid UTF-8 / is empty. After the last line a summary goes to stderr;
//   if any line failed the command exits with status 2 (after writing every line).
// florence tokenizer train --corpus FILE... --vocab-size N --out FILE [--min-frequency K]
//   learns a byte-level BPE merges file (format: florence/text/bpe_trainer.h).
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "command.h"
#include "florence/core/error.h"
#include "florence/text/bpe_trainer.h"
#include "florence/text/tokenizer.h"

namespace {

using florence::Error;
using nlohmann::json;

std::string error_line(const std::string& message) {
  return json{{"error", message}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

void setup_tokenize(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "tokenize", "Tokenize JSON lines {\"text\": ...} from stdin with a CLIP BPE vocabulary; "
                  "writes {\"ids\": [...]} (or {\"error\": ...}) per line to stdout");
  auto vocab = std::make_shared<std::string>();
  auto context = std::make_shared<int>(florence::text::kClipContextLength);
  auto pad = std::make_shared<bool>(false);
  auto max_merges = std::make_shared<int64_t>(-1);
  cmd->add_option("--vocab", *vocab, "Merges file (CLIP's bpe_simple_vocab_16e6.txt.gz or one "
                                     "written by `florence tokenizer train`), plain or gzip")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--context-length", *context, "Tokens per text incl. SOT/EOT (CLIP: 77)")
      ->check(CLI::Range(2, 1 << 20));
  cmd->add_flag("--pad", *pad, "Zero-pad every id list to the context length (as clip.tokenize)");
  cmd->add_option("--max-merges", *max_merges,
                  "Merge lines to use (-1: the file header's merges=M, else CLIP's 48894)");
  cmd->callback([=] {
    florence::text::TokenizerOptions options;
    options.max_merges = *max_merges;
    const auto tok = florence::text::Tokenizer::from_file(*vocab, options);
    std::ios::sync_with_stdio(false);
    std::string line;
    int64_t line_no = 0, failed = 0;
    while (std::getline(std::cin, line)) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      std::string out;
      try {
        if (line.find_first_not_of(" \t") == std::string::npos) throw Error("empty line");
        const json j = json::parse(line, nullptr, false);
        if (j.is_discarded()) throw Error("not valid JSON (or not valid UTF-8)");
        if (!j.is_object()) throw Error("expected a JSON object");
        auto it = j.find("text");
        if (it == j.end() || !it->is_string()) throw Error("no string field \"text\"");
        const auto ids = tok.encode_with_specials(it->get<std::string>(), *context, *pad);
        out = json{{"ids", ids}}.dump();
      } catch (const Error& e) {
        ++failed;
        out = error_line(fmt::format("line {}: {}", line_no, e.what()));
      }
      std::cout << out << '\n';
    }
    std::cout.flush();
    std::cerr << "tokenize: " << line_no << " lines, " << (line_no - failed) << " tokenized, "
              << failed << " failed\n";
    if (failed > 0) {
      throw Error(fmt::format("tokenize: {} of {} input lines failed (see the \"error\" lines)",
                              failed, line_no));
    }
  });
}

void setup_tokenizer_train(CLI::App& root) {
  CLI::App* group = florence::cli::group(root, "tokenizer", "Tokenizer tools");
  auto* cmd = group->add_subcommand(
      "train", "Learn byte-level BPE merges (CLIP's file format) from text or JSON-lines corpora");
  auto corpus = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  auto options = std::make_shared<florence::text::BpeTrainerOptions>();
  cmd->add_option("--corpus", *corpus,
                  "Corpus files (plain or gzip), one document per line; JSON lines with a "
                  "\"text\" field are read through that field")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--vocab-size", options->vocab_size,
                  "Final vocabulary size: 512 byte symbols + merges + 2 specials (>= 514)")
      ->required();
  cmd->add_option("--out", *out, "Output merges file (.gz for gzip)")->required();
  cmd->add_option("--min-frequency", options->min_frequency,
                  "Stop when the most frequent pair occurs fewer times than this");
  cmd->callback([=] {
    const auto stats = florence::text::train_bpe(*corpus, *options, *out);
    std::cout << "wrote " << *out << ": " << stats.merges << " merges, vocab size "
              << stats.vocab_size << " (" << stats.documents << " documents, " << stats.words
              << " words, " << stats.unique_words << " unique, " << stats.skipped_lines
              << " lines skipped, " << stats.long_words << " words over "
              << florence::text::kMaxTrainWordBytes << " bytes left out)\n";
  });
}

}  // namespace

FLORENCE_COMMAND(setup_tokenize);
FLORENCE_COMMAND(setup_tokenizer_train);
