// florence search --index DIR (--text T | --image FILE | --embedding FILE) [--top 10] [--json] [--dedup [X]]
#include <iostream>

#include "command.h"
#include "eval_flags.h"
#include "florence/search/builder.h"
#include "florence/search/searcher.h"

namespace {

using namespace florence;

void setup_search(CLI::App& root) {
  auto* cmd = root.add_subcommand("search", "Nearest images of an index for a text, an image or an embedding");
  auto ef = std::make_shared<cli::EvalFlags>();
  auto dir = std::make_shared<std::string>();
  auto q = std::make_shared<search::QuerySpec>();
  auto json = std::make_shared<bool>(false);
  cli::add_eval_flags(cmd, ef, /*checkpoint_required=*/false);
  cmd->add_option("--index", *dir, "Index folder (florence index build)")->required();
  cmd->add_option("--text", q->text, "Text query");
  cmd->add_option("--image", q->image, "Image file query");
  cmd->add_option("--embedding", q->embedding, "Embedding file: .npy [D] or [N, D], .json array, or `florence embed` .safetensors");
  cmd->add_option("--top", q->k, "Results per query")->capture_default_str()->check(cli::positive());
  cmd->add_option("--dedup", q->dedup, "Drop results whose cosine with a better one is >= X (near duplicates)")
      ->expected(0, 1)
      ->default_str("0.96")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--json", *json, "Print JSON");
  cmd->callback([=] {
    // `--dedup` without a value: CLI11 leaves the default string, applied here.
    if (cmd->count("--dedup") && q->dedup == 0) q->dedup = 0.96;
    auto index = search::SearchIndex::open(*dir);
    std::optional<eval::EvalModel> m;
    if (q->embedding.empty()) m = eval::load_eval_model(search::index_load_options(*dir, ef->resolve()));
    const nlohmann::json r = search::run_search(*index, *q, m ? &*m : nullptr);
    if (*json) {
      std::cout << r.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      return;
    }
    for (const auto& query : r["queries"]) {
      std::cout << "query: " << query["query"].get<std::string>() << "\n";
      int rank = 1;
      for (const auto& h : query["results"])
        std::cout << fmt::format("{:3d}  {:.4f}  {}  {}  {}\n", rank++, h["score"].get<double>(), h["key"].get<std::string>(),
                                 h["caption"].get<std::string>(), h["source"].get<std::string>());
    }
  });
}

}  // namespace

FLORENCE_COMMAND(setup_search);
