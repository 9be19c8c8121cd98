// florence index build --out DIR --checkpoint CKPT INPUT... [--index-key KEY] [--max-memory 4G] ...
// florence index add DIR INPUT... [--checkpoint CKPT]
// florence index reindex DIR [--index-key KEY] [--max-memory 4G] [--target-recall 0.95]
// florence index info DIR [--json]
#include <iostream>

#include "command.h"
#include "eval_flags.h"
#include "florence/search/builder.h"

namespace {

using namespace florence;

struct IndexFlags {
  std::vector<std::string> inputs;
  std::string max_memory = "4G";
  int progress = -1;
  bool json = false;
  search::BuildOptions build;
};

void add_knn_flags(CLI::App* cmd, const std::shared_ptr<IndexFlags>& f) {
  cmd->add_option("--index-key", f->build.knn.index_key,
                  "FAISS factory string (Flat, HNSW32, IVF4096,Flat, IVF4096,PQ32x8, ...); default: chosen from the size and --max-memory");
  cmd->add_option("--max-memory", f->max_memory, "Memory budget of the FAISS index (4G, 512M, ...)")->capture_default_str();
  cmd->add_option("--target-recall", f->build.knn.target_recall, "recall@10 the search parameter is tuned to")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
}

void add_embed_flags(CLI::App* cmd, const std::shared_ptr<IndexFlags>& f) {
  cmd->add_option("--chunk-size", f->build.chunk_size, "Image files / manifest lines per chunk (a shard is one chunk)")
      ->capture_default_str()
      ->check(cli::positive());
  cmd->add_option("--thumb-size", f->build.thumb_size, "Longer side of the stored thumbnails in pixels (0 = none)")
      ->capture_default_str()
      ->check(cli::non_negative());
  cmd->add_option("--progress", f->progress, "Progress bar: 1 on, 0 log lines, -1 when stderr is a terminal")
      ->capture_default_str()
      ->check(CLI::Range(-1, 1));
  cmd->add_flag("--json", f->json, "Print the report as JSON");
}

void print_report(const search::BuildReport& r, const std::string& dir, bool json) {
  if (json) {
    std::cout << r.to_json().dump(2) << "\n";
    return;
  }
  int64_t skipped = 0;
  for (const auto& [k, v] : r.skipped) skipped += v;
  std::cout << dir << ": " << r.rows_total << " images (" << r.rows_added << " embedded now at "
            << fmt::format("{:.1f}", r.images_per_second) << " images/s, " << r.chunks_done << " chunks written, "
            << r.chunks_resumed << " found done, " << skipped << " images skipped)\n";
  if (r.interrupted) {
    std::cout << "interrupted: rerun the same command to resume\n";
  } else if (!r.knn.is_null()) {
    std::cout << "vector index: " << r.knn.value("key", std::string()) << " "
              << (r.knn.value("search_params", std::string()).empty() ? "(exact)" : r.knn.value("search_params", std::string()))
              << ", recall@10 " << fmt::format("{:.4f}", r.knn.value("recall_at_10", 0.0)) << ", "
              << fmt::format("{:.1f}", double(r.knn.value("bytes", int64_t(0))) / double(1 << 20)) << " MiB\n";
  }
}

void setup_index(CLI::App& root) {
  CLI::App* grp = cli::group(root, "index", "Image indices for search: build, add, reindex, info");

  {
    auto* cmd = grp->add_subcommand("build", "Embed images (files, folders, shards, manifests) and build a FAISS index");
    auto f = std::make_shared<IndexFlags>();
    auto ef = std::make_shared<cli::EvalFlags>();
    auto out = std::make_shared<std::string>();
    cli::add_eval_flags(cmd, ef);
    cmd->add_option("--out", *out, "Index folder (created; rerun the same command to resume)")->required();
    cmd->add_option("inputs", f->inputs, "Image files, folders, shard folders/patterns, corpus roots, manifests")->required();
    add_knn_flags(cmd, f);
    add_embed_flags(cmd, f);
    cmd->callback([=] {
      f->build.inputs = f->inputs;
      f->build.progress = f->progress;
      f->build.knn.max_memory = search::parse_bytes(f->max_memory);
      f->build.vocab = ef->load.vocab;
      eval::EvalModel m = eval::load_eval_model(ef->resolve());
      print_report(search::build_index(m, *out, f->build), *out, f->json);
    });
  }
  {
    auto* cmd = grp->add_subcommand("add", "Append images to an index (ids continue; the FAISS index is extended, not retrained)");
    auto f = std::make_shared<IndexFlags>();
    auto ef = std::make_shared<cli::EvalFlags>();
    auto dir = std::make_shared<std::string>();
    cli::add_eval_flags(cmd, ef, /*checkpoint_required=*/false);
    cmd->add_option("dir", *dir, "Index folder")->required();
    cmd->add_option("inputs", f->inputs, "Image files, folders, shard folders/patterns, corpus roots, manifests")->required();
    add_embed_flags(cmd, f);
    cmd->callback([=] {
      f->build.inputs = f->inputs;
      f->build.progress = f->progress;
      eval::EvalModel m = eval::load_eval_model(search::index_load_options(*dir, ef->resolve()));
      print_report(search::add_to_index(m, *dir, f->build), *dir, f->json);
    });
  }
  {
    auto* cmd = grp->add_subcommand("reindex", "Rebuild only the FAISS index of an index folder from its embeddings");
    auto f = std::make_shared<IndexFlags>();
    auto dir = std::make_shared<std::string>();
    cmd->add_option("dir", *dir, "Index folder")->required();
    add_knn_flags(cmd, f);
    cmd->callback([=] {
      f->build.knn.max_memory = search::parse_bytes(f->max_memory);
      const nlohmann::json knn = search::reindex(*dir, f->build.knn);
      std::cout << knn.dump(2) << "\n";
    });
  }
  {
    auto* cmd = grp->add_subcommand("info", "Summary of an index folder");
    auto dir = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    cmd->add_option("dir", *dir, "Index folder")->required();
    cmd->add_flag("--json", *json, "Print JSON");
    cmd->callback([=] {
      const nlohmann::json j = search::index_info(*dir);
      if (*json) {
        std::cout << j.dump(2) << "\n";
        return;
      }
      std::cout << "index " << *dir << ": " << j["rows"] << " images, d = " << j["dim"] << ", " << j["chunks"] << " chunks\n";
      std::cout << "model: " << j["model"].value("model", std::string("?")) << " from "
                << j["model"].value("checkpoint", std::string("?")) << "\n";
      if (j["knn"].is_null()) std::cout << "vector index: none yet\n";
      else
        std::cout << "vector index: " << j["knn"].value("key", std::string()) << " "
                  << j["knn"].value("search_params", std::string()) << ", recall@10 " << j["knn"].value("recall_at_10", 0.0)
                  << " (" << j["knn"].value("reason", std::string()) << ")\n";
      if (!j["skipped"].empty()) std::cout << "skipped: " << j["skipped"].dump() << "\n";
      std::cout << "disk bytes: " << j["disk_bytes"].dump() << "\n";
      if (j.contains("unfinished"))
        std::cout << "UNFINISHED `index " << j["unfinished"]["command"].get<std::string>() << "`: "
                  << j["unfinished"]["chunks_done"] << " of " << j["unfinished"]["chunks_planned"]
                  << " chunks done; rerun it to finish\n";
    });
  }
}

}  // namespace

FLORENCE_COMMAND(setup_index);
