// florence data build SOURCE --out DIR [--size N] [--limit N] [--threads N] [--shard-size N]
//                    [--fields title,description,keywords] [--short-names] [--input PATH] [--overwrite] [--json]
#include <iostream>

#include "command.h"
#include "florence/data/corpus.h"

namespace {

void setup_data(CLI::App& root) {
  auto* data = florence::cli::group(root, "data", "Data sets: build WebDataset corpora from local sources");
  auto* cmd = data->add_subcommand(
      "build", "Build WebDataset shards OUT/{train,val,test}/NNNNNN.tar + OUT/summary.json from a local source");
  auto o = std::make_shared<florence::data::CorpusOptions>();
  auto fields = std::make_shared<std::string>("title");
  auto as_json = std::make_shared<bool>(false);
  cmd->add_option("source", o->source, "openclipart | emoji | fashion-mnist")
      ->required()
      ->check(CLI::IsMember({"openclipart", "emoji", "fashion-mnist"}));
  cmd->add_option("--out", o->out_dir, "Output directory")->required();
  cmd->add_option("--input", o->input,
                  "Source location (default: /usr/share/openclipart/svg, "
                  "$FLORENCE_CACHE/emoji-datasource-google-VERSION/package, /usr/share/datasets/fashion-mnist)");
  cmd->add_option("--size", o->size, "openclipart: render size in pixels (square, white background)")
      ->capture_default_str();
  cmd->add_option("--limit", o->limit,
                  "Only the first N source items (SVG files / emoji entries / images per original split); 0 = all")
      ->capture_default_str()
      ->check(florence::cli::non_negative());
  cmd->add_option("--threads", o->threads, "Worker threads (default: the global --threads, else all cores)")
      ->check(florence::cli::non_negative());
  cmd->add_option("--shard-size", o->shard_size, "Samples per shard")->capture_default_str()->check(florence::cli::positive());
  cmd->add_option("--fields", *fields, "openclipart: text fields, comma-separated: title,description,keywords")
      ->capture_default_str();
  cmd->add_option("--render-timeout", o->render_timeout_s, "openclipart: seconds before a rsvg-convert run is killed")
      ->capture_default_str()
      ->check(florence::cli::positive());
  cmd->add_flag("--short-names", o->short_names, "emoji: append the short names to the text");
  cmd->add_flag("--overwrite", o->overwrite, "Replace an existing corpus in --out");
  cmd->add_flag("--json", *as_json, "Print the summary as JSON");
  cmd->callback([=] {
    o->fields.clear();
    std::string cur;
    for (char c : *fields + ",") {
      if (c == ',') {
        if (!cur.empty()) o->fields.push_back(cur);
        cur.clear();
      } else if (c != ' ') {
        cur.push_back(c);
      }
    }
    if (o->threads == 0) o->threads = florence::cli::requested_threads();
    const nlohmann::json summary = florence::data::build_corpus(*o);
    if (*as_json) {
      nlohmann::json brief = summary;
      brief.erase("failed_items");
      std::cout << brief.dump(2) << "\n";
    } else {
      std::cout << florence::data::format_corpus_summary(summary);
    }
  });
}

}  // namespace

FLORENCE_COMMAND(setup_data);
