// florence eval zero-shot|retrieval --checkpoint FILE [--model ...] [--vocab FILE] --data DIR_OR_SHARDS
//                 [--split test] [--name NAME] [--out result.json] [preprocessing flags]
//                 zero-shot also: [--templates FILE] [--class-field F] [--class-names FILE.json]
//                                 [--prompt-selection val|none]
// florence eval all --checkpoint FILE --data-root DATA [--out-dir DIR] [--sets a,b] [--prompt-selection val|none]
#include <filesystem>
#include <iostream>

#include <spdlog/spdlog.h>

#include "command.h"
#include "eval_flags.h"
#include "florence/eval/embed.h"
#include "florence/eval/retrieval.h"
#include "florence/eval/standard.h"
#include "florence/eval/zero_shot.h"

namespace {

namespace fs = std::filesystem;
using namespace florence;

std::string set_name(const std::string& given, const std::string& data) {
  return given.empty() ? eval::default_set_name(data) : given;
}

// The selection split of --prompt-selection ("" = none): "none" turns it off; left at its default
// (val) while val is the reported split, nothing is chosen; given empty, it is an error.
std::string prompt_selection_flag(const std::string& value, bool given, const std::string& split) {
  if (given && value.empty())  // an unset shell variable, not a wish to skip selection
    throw Error("--prompt-selection is empty: give a split folder name (val) or none");
  if (value == "none") return "";
  if (!given && value == split) {
    spdlog::info("--split {} is reported, so prompts are not chosen on it (no selection)", split);
    return "";
  }
  return value;
}

void finish(const nlohmann::json& r, const std::string& out, bool as_json) {
  if (!out.empty()) {
    eval::write_json_file(out, r);
    std::cerr << "wrote " << out << "\n";
  }
  if (as_json) {
    std::cout << r.dump(2) << "\n";
  } else {
    std::cout << eval::format_summary({r});
  }
}

void setup_eval(CLI::App& root) {
  auto* grp = cli::group(root, "eval", "Evaluate a Florence checkpoint on held-out data");

  {  // zero-shot
    auto* cmd = grp->add_subcommand("zero-shot", "Zero-shot classification with a prompt ensemble (classes = meta category)");
    auto f = std::make_shared<cli::EvalFlags>();
    auto data = std::make_shared<std::string>();
    auto split = std::make_shared<std::string>("test");
    auto name = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    auto templates = std::make_shared<std::string>();
    auto field = std::make_shared<std::string>("category");
    auto class_names = std::make_shared<std::string>();
    auto selection = std::make_shared<std::string>("val");
    auto max_samples = std::make_shared<int64_t>(0);
    auto as_json = std::make_shared<bool>(false);
    cli::add_eval_flags(cmd, f);
    cmd->add_option("--data", *data, "Corpus root (uses its --split folder), shard dir/pattern, manifest or ImageFolder")
        ->required();
    cmd->add_option("--split", *split, "Split folder of a corpus root")->capture_default_str();
    cmd->add_option("--name", *name,
                    "Set name in the result (default: the data folder's name); fashion-mnist, openclipart and emoji "
                    "use their built-in class-name table, as eval all does");
    cmd->add_option("--templates", *templates, "Prompt templates file, one per line with {} (default: built-in ensemble)");
    cmd->add_option("--class-field", *field, "Sample meta field holding the class name")->capture_default_str();
    cmd->add_option("--class-names", *class_names,
                    "JSON object {\"class\": \"words in the prompts\"} (default: the built-in table of a standard "
                    "set, else the class name with '_' as space)");
    auto* sel_opt = cmd->add_option("--prompt-selection", *selection,
                                    "Split folder of the corpus root on which the prompt setting (templates or bare "
                                    "words, class-name table or names) is chosen by top-1, as eval all does, or none "
                                    "(default: val, none when --split is val)");
    cmd->add_option("--max-samples", *max_samples, "Only the first N images (0 = all)")->check(florence::cli::non_negative());
    cmd->add_option("--out", *out, "Write the result JSON here");
    cmd->add_flag("--json", *as_json, "Print the full result JSON instead of the table");
    cmd->callback([=] {
      eval::ZeroShotRunOptions zo;
      zo.data = *data;
      zo.split = *split;
      zo.name = *name;
      zo.class_field = *field;
      zo.max_samples = *max_samples;
      zo.prompt_selection = prompt_selection_flag(*selection, sel_opt->count() > 0, *split);
      eval::check_prompt_selection(zo.prompt_selection, zo.split);  // before the model is loaded
      if (!templates->empty()) zo.templates = eval::read_templates(*templates);
      if (!class_names->empty()) {
        zo.class_names = eval::read_class_prompts(*class_names);
        zo.class_names_file = *class_names;
      }
      eval::EvalModel m = eval::load_eval_model(f->resolve());
      nlohmann::json r = eval::zero_shot_run(m, zo);
      for (const auto& [c, words] : zo.class_names) {  // a misspelt class would otherwise go unnoticed
        if (r.at("prompt_names").contains(c)) continue;
        std::string known;
        for (const auto& [k, v] : r.at("prompt_names").items()) known += (known.empty() ? "" : ", ") + k;
        spdlog::warn("zero-shot: --class-names entry '{}' matches no class among the {} evaluated image(s) of {} "
                     "(classes: {})", c, r.at("num_images").get<int64_t>(), r.at("set").get<std::string>(), known);
      }
      finish(r, *out, *as_json);
      if (!*as_json) {
        std::cout << "words in the prompts per class:\n";
        for (const auto& [c, words] : r.at("prompt_names").items())
          std::cout << "  " << c << (c == words.get<std::string>() ? "" : " -> " + words.get<std::string>()) << "\n";
      }
    });
  }

  {  // retrieval
    auto* cmd = grp->add_subcommand("retrieval", "Image<->text retrieval (R@1/5/10, median rank) on captioned images");
    auto f = std::make_shared<cli::EvalFlags>();
    auto data = std::make_shared<std::string>();
    auto split = std::make_shared<std::string>("test");
    auto name = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    auto max_samples = std::make_shared<int64_t>(0);
    auto examples = std::make_shared<int64_t>(8);
    auto as_json = std::make_shared<bool>(false);
    cli::add_eval_flags(cmd, f);
    cmd->add_option("--data", *data, "Corpus root (uses its --split folder), shard dir/pattern or manifest")->required();
    cmd->add_option("--split", *split, "Split folder of a corpus root")->capture_default_str();
    cmd->add_option("--name", *name, "Set name in the result (default: the data folder's name)");
    cmd->add_option("--max-samples", *max_samples, "Only the first N images (0 = all)")->check(florence::cli::non_negative());
    cmd->add_option("--examples", *examples, "Text->image examples kept (images written next to --out)")
        ->capture_default_str()
        ->check(florence::cli::non_negative());
    cmd->add_option("--out", *out, "Write the result JSON here (example images in OUT_STEM_examples/)");
    cmd->add_flag("--json", *as_json, "Print the full result JSON instead of the table");
    cmd->callback([=] {
      eval::EvalModel m = eval::load_eval_model(f->resolve());
      eval::RetrievalOptions ro;
      ro.name = set_name(*name, *data);
      ro.max_samples = *max_samples;
      ro.num_examples = *examples;
      if (!out->empty()) {
        const fs::path o(*out);
        ro.examples_dir = (o.parent_path() / (o.stem().string() + "_examples")).string();
        ro.relative_to = o.parent_path().empty() ? "." : o.parent_path().string();
      }
      finish(eval::retrieval(m, eval::open_source(*data, *split), ro), *out, *as_json);
    });
  }

  {  // all
    auto* cmd = grp->add_subcommand("all", "Every standard held-out set under --data-root; prints a summary with chance");
    auto f = std::make_shared<cli::EvalFlags>();
    auto o = std::make_shared<eval::EvalAllOptions>();
    auto sets = std::make_shared<std::string>();
    auto templates = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    cli::add_eval_flags(cmd, f);
    cmd->add_option("--data-root", o->data_root, "Folder with fashion-mnist/, openclipart/, emoji/ corpora")->required();
    cmd->add_option("--split", o->split, "Split folder inside each corpus")->capture_default_str();
    cmd->add_option("--out-dir", o->out_dir, "Result JSONs (default: RUN/eval for a checkpoint in RUN/checkpoints/)");
    cmd->add_option("--sets", *sets, "Comma-separated subset: fashion-mnist,openclipart,emoji");
    cmd->add_option("--templates", *templates,
                    "Prompt templates file (default: built-in ensemble); with --prompt-selection it competes "
                    "with the bare class words");
    auto selection = std::make_shared<std::string>("val");
    auto* sel_opt = cmd->add_option("--prompt-selection", *selection,
                                    "Split folder on which each set's zero-shot prompts (templates or bare words, "
                                    "class-name table or names) are chosen by top-1, or none (default: val, none "
                                    "when --split is val)");
    cmd->add_option("--max-samples", o->max_samples, "Only the first N images per set (0 = all)")->check(florence::cli::non_negative());
    cmd->add_option("--examples", o->num_examples, "Retrieval examples per set")->capture_default_str();
    cmd->add_flag("--json", *as_json, "Print the full results JSON instead of the table");
    cmd->callback([=] {
      eval::EvalAllOptions opt = *o;
      opt.prompt_selection_split = prompt_selection_flag(*selection, sel_opt->count() > 0, opt.split);
      eval::check_prompt_selection(opt);  // before the model is loaded
      if (cmd->count("--sets") > 0) {
        for (const auto& s : eval::split_labels(*sets, "--sets")) opt.sets.push_back(s);
        if (opt.sets.empty()) throw Error("eval all: --sets is empty (give fashion-mnist,openclipart,emoji or leave it out)");
      }
      eval::LoadOptions lo = f->resolve();
      eval::EvalModel m = eval::load_eval_model(lo);
      if (opt.out_dir.empty()) opt.out_dir = eval::default_eval_dir(lo.checkpoint);
      if (!templates->empty()) opt.templates = eval::read_templates(*templates);
      nlohmann::json r = eval::eval_all(m, opt);
      if (*as_json) {
        std::cout << r.dump(2) << "\n";
      } else {
        std::cout << eval::format_summary(r["results"].get<std::vector<nlohmann::json>>());
        for (const auto& s : r["missing"]) std::cout << "missing set: " << s.get<std::string>() << "\n";
        if (!opt.out_dir.empty()) std::cout << "results in " << opt.out_dir << "\n";
      }
      if (!r["failed"].empty()) {  // the other sets' results are written; the exit status says some failed
        for (const auto& f : r["failed"])
          std::cerr << "failed: " << f["set"].get<std::string>() << " " << f["task"].get<std::string>() << ": "
                    << f["error"].get<std::string>() << "\n";
        throw Error("eval all: " + std::to_string(r["failed"].size()) + " evaluation(s) failed (listed above)");
      }
    });
  }
}

}  // namespace

FLORENCE_COMMAND(setup_eval);
