// florence embed --checkpoint FILE [--model ...] [--vocab FILE] [--images PATH...] [--texts FILE] [--text "..."...]
//                --out embeds.safetensors [preprocessing flags]
#include <iostream>

#include "command.h"
#include "eval_flags.h"
#include "florence/eval/embed.h"

namespace {

using namespace florence;

void setup_embed(CLI::App& root) {
  auto* cmd = root.add_subcommand("embed", "L2-normalised image and/or text embeddings to a safetensors file");
  auto f = std::make_shared<cli::EvalFlags>();
  auto images = std::make_shared<std::vector<std::string>>();
  auto texts_file = std::make_shared<std::string>();
  auto texts = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  cli::add_eval_flags(cmd, f);
  cmd->add_option("--images", *images, "Image files, folders (recursive) or WebDataset shards (dir, .tar, pattern)");
  cmd->add_option("--texts", *texts_file, "Texts file: one per line, or JSON lines {\"text\": ...}");
  cmd->add_option("--text", *texts, "A text to embed (repeatable)")->allow_extra_args(false);
  cmd->add_option("--out", *out, "Output .safetensors (image_embeds [N,D], text_embeds [M,D]; order in metadata + OUT.json)")
      ->required();
  cmd->callback([=] {
    std::vector<std::string> all_texts;
    if (!texts_file->empty()) {
      all_texts = eval::read_texts(*texts_file);
      if (all_texts.empty()) throw Error("embed: texts file '" + *texts_file + "' holds no text (only blank lines or nothing)");
    }
    all_texts.insert(all_texts.end(), texts->begin(), texts->end());
    if (images->empty() && all_texts.empty()) throw Error("embed: give --images and/or --texts/--text");
    eval::EvalModel m = eval::load_eval_model(f->resolve());
    auto src = images->empty() ? nullptr : eval::image_inputs(*images);
    eval::EmbedResult r = eval::embed(m, src, all_texts);
    eval::save_embeddings(r, m.describe(), *out);
    int64_t skipped = 0;
    for (const auto& [reason, n] : r.skipped) skipped += n;
    std::cout << "wrote " << *out << ": " << r.image_keys.size() << " image embeddings, " << r.texts.size()
              << " text embeddings, D = " << m.embed_dim();
    if (skipped) std::cout << " (" << skipped << " images skipped, see log)";
    std::cout << "\n";
  });
}

}  // namespace

FLORENCE_COMMAND(setup_embed);
