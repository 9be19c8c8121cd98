// florence eval linear-probe --checkpoint FILE --data ROOT [--train-split train --val-split val --test-split test]
//                            [--features pooled|embed] [--l2 X] [--out result.json] [eval flags]
// florence eval few-shot --checkpoint FILE --data ROOT [--split test[,val]] --ways N --shots K --episodes E
//                        [--queries Q] [--classifiers prototype,logreg] [--out result.json]
// Both accept --random-init: the same model config with random weights (the baseline that shows
// what pretraining is worth). Thin front ends over eval::linear_probe / eval::few_shot.
#include <torch/torch.h>

#include <filesystem>
#include <iostream>

#include "command.h"
#include "eval_flags.h"
#include "florence/data/corpus.h"
#include "florence/eval/embed.h"
#include "florence/eval/few_shot.h"
#include "florence/eval/linear_probe.h"
#include "florence/eval/standard.h"
#include "florence/model/florence.h"

namespace {

namespace fs = std::filesystem;
using namespace florence;

struct TransferFlags {
  std::shared_ptr<cli::EvalFlags> eval = std::make_shared<cli::EvalFlags>();
  bool random_init = false;
  uint64_t init_seed = 0;
  std::string name, out, cache_dir, features = "pooled", class_field = "category";
  bool no_cache = false, as_json = false;
  uint64_t seed = 0;
};

void add_transfer_flags(CLI::App* cmd, TransferFlags& t) {
  cli::add_eval_flags(cmd, t.eval, /*checkpoint_required=*/false);
  cmd->add_flag("--random-init", t.random_init,
                "Random weights for the model config of --checkpoint (or --model): the no-pretraining baseline");
  cmd->add_option("--init-seed", t.init_seed, "Seed of the random initialisation")->capture_default_str();
  cmd->add_option("--name", t.name, "Set name in the result (default: the data folder's name)");
  cmd->add_option("--features", t.features, "pooled: tower output before the projection (CLIP); embed: joint space")
      ->capture_default_str()
      ->check(CLI::IsMember({"pooled", "embed"}));
  cmd->add_option("--class-field", t.class_field, "Sample meta field holding the class name")->capture_default_str();
  cmd->add_option("--cache-dir", t.cache_dir, "Feature cache folder (default: $FLORENCE_CACHE/features)");
  cmd->add_flag("--no-cache", t.no_cache, "Do not read or write cached features");
  cmd->add_option("--seed", t.seed, "Seed of subsets / episodes")->capture_default_str();
  cmd->add_option("--out", t.out, "Write the result JSON here");
  cmd->add_flag("--json", t.as_json, "Print the full result JSON");
}

std::string set_name(const TransferFlags& t, const std::string& data) {
  std::string n = t.name;
  if (n.empty()) {
    fs::path p = fs::path(data).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    n = p.filename().string();
  }
  return t.random_init ? n + " [random init]" : n;
}

// A missing or folder --checkpoint would otherwise surface as "does not describe its model (no
// sidecar JSON)" from the spec lookup: name the actual problem first.
void check_checkpoint_path(const std::string& path) {
  if (path.empty()) return;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) throw Error("checkpoint '" + path + "' does not exist");
  if (fs::is_directory(st))
    throw Error("checkpoint '" + path + "' is a directory; pass the weights file (e.g. " +
                (fs::path(path) / "model.safetensors").string() + ")");
}

eval::EvalModel make_model(const TransferFlags& t) {
  eval::LoadOptions lo = t.eval->resolve();
  check_checkpoint_path(lo.checkpoint);
  if (!t.random_init) {
    if (lo.checkpoint.empty()) throw Error("give --checkpoint (or --random-init with --model or --checkpoint)");
    return eval::load_eval_model(lo);
  }
  if (lo.checkpoint.empty() && lo.model.empty()) throw Error("--random-init needs --model or --checkpoint (for the config)");
  // Resolve config, preprocessing and vocabulary exactly as for the checkpoint, then replace the
  // weights by a seeded random initialisation of the same config.
  eval::EvalModel m = eval::load_eval_model(lo);
  torch::manual_seed(t.init_seed);
  m.model = model::FlorenceModel(*m.spec.florence);
  m.model->to(m.device);
  m.model->eval();
  m.checkpoint.clear();
  return m;
}

eval::FeatureOptions feature_options(const TransferFlags& t) {
  eval::FeatureOptions f;
  f.features = t.features;
  f.class_field = t.class_field;
  f.seed = t.seed;
  f.random_init_seed = t.random_init ? int64_t(t.init_seed) : -1;
  if (!t.no_cache) f.cache_dir = t.cache_dir.empty() ? (fs::path(data::florence_cache_dir()) / "features").string() : t.cache_dir;
  return f;
}

void finish(const nlohmann::json& r, const TransferFlags& t, const std::string& summary) {
  if (!t.out.empty()) {
    eval::write_json_file(t.out, r);
    std::cerr << "wrote " << t.out << "\n";
  }
  if (t.as_json) std::cout << r.dump(2) << "\n";
  else std::cout << summary;
}

void setup_eval_transfer(CLI::App& root) {
  auto* grp = cli::group(root, "eval", "Evaluate a Florence checkpoint on held-out data");

  {  // linear-probe
    auto* cmd = grp->add_subcommand(
        "linear-probe",
        "CLIP linear probe: frozen features (cached), L2 logistic regression (L-BFGS), lambda swept on val, top-1 on test");
    auto t = std::make_shared<TransferFlags>();
    auto o = std::make_shared<eval::LinearProbeOptions>();
    auto data = std::make_shared<std::string>();
    auto refit = std::make_shared<std::string>("train+val");
    auto no_val = std::make_shared<bool>(false);
    auto max_train = std::make_shared<int64_t>(0);
    auto l2 = std::make_shared<double>(0);
    add_transfer_flags(cmd, *t);
    cmd->add_option("--data", *data, "Corpus root with split folders (or use --train/--val/--test)");
    cmd->add_option("--train", o->train, "Train data spec (default: --data with --train-split)");
    cmd->add_option("--val", o->val, "Validation data spec (default: --data with --val-split)");
    cmd->add_option("--test", o->test, "Test data spec (default: --data with --test-split)");
    cmd->add_option("--train-split", o->train_split, "Split folder for training")->capture_default_str();
    cmd->add_option("--val-split", o->val_split, "Split folder for the lambda sweep")->capture_default_str();
    cmd->add_option("--test-split", o->test_split, "Split folder for the reported accuracy")->capture_default_str();
    cmd->add_flag("--no-val", *no_val, "No validation split: hold out --val-fraction of train for the sweep");
    cmd->add_option("--val-fraction", o->val_fraction, "Held-out fraction with --no-val, in (0, 1)")
        ->capture_default_str();
    cmd->add_option("--max-train-samples", *max_train, "Seeded random subset of train (0 = all)")
        ->check(cli::non_negative());
    cmd->add_option("--max-eval-samples", o->max_eval_samples, "Seeded random subset of val and test (0 = all)")
        ->check(cli::non_negative());
    cmd->add_option("--l2", *l2, "Fixed lambda >= 0 (skips the sweep; its val top-1 is still measured)")
        ->check(cli::non_negative());
    cmd->add_option("--refit", *refit, "Final classifier trained on: train | train+val")
        ->capture_default_str()
        ->check(CLI::IsMember({"train", "train+val"}));
    cmd->add_option("--max-iter", o->logreg.max_iter, "L-BFGS iterations per fit (>= 1)")
        ->capture_default_str()
        ->check(cli::positive());
    cmd->callback([=] {
      eval::LinearProbeOptions opt = *o;
      if (cmd->count("--l2") > 0) opt.fixed_l2 = *l2;
      if (data->empty() && (opt.train.empty() || opt.test.empty())) throw Error("give --data ROOT or --train and --test");
      if (opt.train.empty()) opt.train = *data;
      if (opt.test.empty()) opt.test = *data;
      if (opt.val.empty() && !*no_val) {
        if (data->empty()) throw Error("give --val, --data ROOT with a val split, or --no-val");
        opt.val = *data;
      }
      if (*no_val) opt.val.clear();
      opt.refit_on_val = *refit == "train+val";
      opt.features = feature_options(*t);
      opt.features.max_samples = *max_train;
      opt.name = set_name(*t, data->empty() ? opt.train : *data);
      eval::EvalModel m = make_model(*t);
      const nlohmann::json r = eval::linear_probe(m, opt);
      const auto& mt = r["metrics"];
      const size_t num_classes = r["classes"].size();
      const int64_t trained = r["num_trained_classes"].get<int64_t>();
      std::string summary = fmt::format(
          "linear probe {} ({} features {}-d, {} train, {} test, {} classes{})\n"
          "  lambda {:.3g} ({}, val top-1 {:.2f} %)\n  test top-1 {:.2f} %  top-5 {:.2f} %  mean per-class "
          "{:.2f} %  (chance {:.2f} %)\n",
          opt.name, r["features"].get<std::string>(), r["feature_dim"].get<int64_t>(), r["num_train"].get<int64_t>(),
          r["num_test"].get<int64_t>(), num_classes,
          int64_t(num_classes) == trained ? std::string() : fmt::format(", {} with training samples", trained),
          r["final"]["l2"].get<double>(), r["sweep"]["fixed"].get<bool>() ? "fixed" : "swept",
          100 * r["sweep"]["best_val_top1"].get<double>(), 100 * mt["top1"].get<double>(),
          100 * mt["top5"].get<double>(), 100 * mt["mean_per_class"].get<double>(),
          100 * mt["chance"]["top1"].get<double>());
      if (int64_t(num_classes) != trained)
        summary += fmt::format("  warning: {} test images belong to classes without a training sample: {}\n",
                               r["test_samples_of_untrained_classes"].get<int64_t>(),
                               r["classes_without_train_samples"].dump());
      finish(r, *t, summary);
    });
  }

  {  // few-shot
    auto* cmd = grp->add_subcommand(
        "few-shot", "N-way K-shot episodes on frozen features: prototype and logistic regression, mean +- 95% CI");
    auto t = std::make_shared<TransferFlags>();
    auto o = std::make_shared<eval::FewShotOptions>();
    auto splits = std::make_shared<std::string>("test");
    auto classifiers = std::make_shared<std::string>("prototype,logreg");
    auto max_samples = std::make_shared<int64_t>(0);
    auto l2 = std::make_shared<double>(0);
    add_transfer_flags(cmd, *t);
    cmd->add_option("--data", o->data, "Corpus root with split folders, shards, manifest or ImageFolder")->required();
    cmd->add_option("--split", *splits, "Split folder(s) to draw from, comma-separated (pooled)")->capture_default_str();
    cmd->add_option("--ways", o->ways, "Classes per episode (N)")->capture_default_str()->check(CLI::Range(2, 1000));
    cmd->add_option("--shots", o->shots, "Support images per class (K)")->capture_default_str()->check(cli::positive());
    cmd->add_option("--queries", o->queries, "Query images per class")->capture_default_str()->check(cli::positive());
    cmd->add_option("--episodes", o->episodes, "Episodes (E; the 95% CI needs E >= 2)")
        ->capture_default_str()
        ->check(cli::positive());
    cmd->add_option("--classifiers", *classifiers, "prototype and/or logreg, comma-separated")->capture_default_str();
    cmd->add_option("--l2", *l2, "Logistic-regression lambda >= 0 (default: 1 / (ways * shots), sklearn's C = 1)")
        ->check(cli::non_negative());
    cmd->add_option("--max-samples", *max_samples, "Seeded random subset of the pool per split (0 = all)")
        ->check(cli::non_negative());
    cmd->callback([=] {
      eval::FewShotOptions opt = *o;
      if (cmd->count("--l2") > 0) opt.l2 = *l2;
      opt.splits = eval::split_labels(*splits);
      opt.classifiers = eval::split_labels(*classifiers);
      opt.features = feature_options(*t);
      opt.features.max_samples = *max_samples;
      opt.seed = t->seed;
      opt.name = set_name(*t, opt.data);
      eval::validate_few_shot_options(opt);  // before the model is loaded
      eval::EvalModel m = make_model(*t);
      const nlohmann::json r = eval::few_shot(m, opt);
      std::string s = fmt::format("few-shot {} {}-way {}-shot, {} episodes x {} queries/class ({} images, {} of {} "
                                  "classes eligible); chance {:.2f} %\n",
                                  opt.name, opt.ways, opt.shots, opt.episodes, opt.queries, r["num_images"].get<int64_t>(),
                                  r["eligible_classes"].get<int64_t>(), r["num_classes"].get<int64_t>(),
                                  100 * r["chance"].get<double>());
      for (const auto& [clf, v] : r["results"].items())
        s += fmt::format("  {:<10} {:.2f} +- {} %\n", clf, 100 * v["mean"].get<double>(),
                         v["ci95"].is_null() ? std::string("n/a (95% CI needs >= 2 episodes)")
                                             : fmt::format("{:.2f}", 100 * v["ci95"].get<double>()));
      finish(r, *t, s);
    });
  }
}

}  // namespace

FLORENCE_COMMAND(setup_eval_transfer);
