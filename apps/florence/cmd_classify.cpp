// florence classify --checkpoint FILE [--vocab FILE] --labels "a,b,c" [--top K] [--template T...] IMAGE...
#include <fmt/format.h>

#include <iostream>

#include "command.h"
#include "eval_flags.h"
#include "florence/eval/embed.h"

namespace {

using namespace florence;

void setup_classify(CLI::App& root) {
  auto* cmd = root.add_subcommand("classify", "Zero-shot label probabilities for images: softmax(tau * cosine)");
  auto f = std::make_shared<cli::EvalFlags>();
  auto labels = std::make_shared<std::string>();
  auto images = std::make_shared<std::vector<std::string>>();
  auto templates = std::make_shared<std::vector<std::string>>();
  auto top = std::make_shared<int>(5);
  auto as_json = std::make_shared<bool>(false);
  cli::add_eval_flags(cmd, f);
  cmd->add_option("--labels", *labels, "Comma-separated candidate labels")->required();
  cmd->add_option("--template", *templates,
                  "Prompt template with {} (repeatable; default: the built-in ensemble; \"{}\" = bare labels)")
      ->allow_extra_args(false);
  cmd->add_option("--top", *top, "Labels printed per image")->capture_default_str()->check(florence::cli::positive());
  cmd->add_flag("--json", *as_json, "Print JSON");
  cmd->add_option("images", *images, "Image files, folders or shards")->required();
  cmd->callback([=] {
    const auto names = eval::split_labels(*labels, "classify: --labels");
    eval::EvalModel m = eval::load_eval_model(f->resolve());
    eval::ClassifyResult r = eval::classify(m, eval::image_inputs(*images), names, *templates);
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < r.image_keys.size(); ++i) {
      torch::Tensor p = r.probs[int64_t(i)];
      auto [vals, idx] = p.topk(std::min<int64_t>(*top, int64_t(names.size())));
      nlohmann::json row{{"image", r.image_keys[i]}, {"top", nlohmann::json::array()}};
      if (!*as_json) std::cout << r.image_keys[i] << "\n";
      for (int64_t k = 0; k < vals.size(0); ++k) {
        const std::string& label = names[size_t(idx[k].item<int64_t>())];
        const double prob = vals[k].item<double>();
        row["top"].push_back({{"label", label}, {"prob", prob}});
        if (!*as_json) std::cout << fmt::format("  {:6.2f}%  {}\n", 100 * prob, label);
      }
      out.push_back(row);
    }
    if (*as_json) std::cout << nlohmann::json{{"temperature", r.temperature}, {"results", out}}.dump(2) << "\n";
    else std::cout << fmt::format("(tau = {:.3f} applied to cosines before the softmax)\n", r.temperature);
  });
}

}  // namespace

FLORENCE_COMMAND(setup_classify);
