// florence info --model NAME|CONFIG.json|SIDECAR.json | --checkpoint CKPT [--image-size N] [--json] [--print-config]
#include <fmt/format.h>

#include <iostream>

#include "command.h"
#include "florence/core/error.h"
#include "florence/model/info.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"

namespace {

std::string millions(int64_t n) { return fmt::format("{:.1f}M", n / 1e6); }

void setup_info(CLI::App& root) {
  auto* cmd = root.add_subcommand("info", "Parameter counts per tower and forward GFLOPs per input");
  auto model = std::make_shared<std::string>();
  auto image_size = std::make_shared<int>(0);
  auto as_json = std::make_shared<bool>(false);
  auto print_config = std::make_shared<bool>(false);
  auto checkpoint = std::make_shared<std::string>();
  cmd->add_option("--model", *model, "Registered name, JSON config file, or a checkpoint's sidecar JSON");
  cmd->add_option("--checkpoint", *checkpoint,
                  "A checkpoint (.safetensors): the model it holds, as trained (e.g. its vocabulary size)");
  cmd->add_option("--image-size", *image_size, "Square input size in pixels (default: the config's)")
      ->check(florence::cli::positive());
  cmd->add_flag("--json", *as_json, "Print the counts as JSON");
  cmd->add_flag("--print-config", *print_config, "Print the full config JSON (a file --model accepts)");
  cmd->callback([=] {
    using namespace florence::model;
    if (model->empty() == checkpoint->empty()) throw florence::Error("give either --model or --checkpoint");
    ModelSpec spec;
    if (!model->empty()) {
      spec = resolve_model(*model);
    } else {
      auto found = read_checkpoint_spec(*checkpoint);
      if (!found) throw florence::Error("checkpoint '" + *checkpoint + "' describes no model (no sidecar, no metadata)");
      spec = *found;
    }
    if (*print_config) {
      std::cout << spec_to_json(spec).dump(2) << "\n";
      return;
    }
    nlohmann::json out{{"model", spec.name}};
    Counts vis, txt;
    int64_t heads = 0, total = 0;
    int size = 0;
    if (spec.vision) {
      size = *image_size > 0 ? *image_size : spec.vision->image_size;
      vis = count_vision(*spec.vision, size, size);
      if (spec.florence) vis.macs += double(spec.vision->num_features()) * spec.florence->embed_dim;
      out["image_size"] = size;
      out["image_tower"] = {{"params", vis.params}, {"gflops_per_image", vis.gflops()}};
      total += vis.params;
    }
    if (spec.text) {
      txt = count_text(*spec.text);
      if (spec.florence) txt.macs += double(spec.text->width) * spec.florence->embed_dim;
      out["text_tower"] = {{"params", txt.params}, {"context_length", spec.text->context_length},
                           {"gflops_per_text", txt.gflops()}};
      total += txt.params;
    }
    if (spec.florence) {
      heads = count_heads(*spec.florence);
      out["projections_params"] = heads;
      out["embed_dim"] = spec.florence->embed_dim;
      total += heads;
    }
    out["total_params"] = total;
    if (*as_json) {
      std::cout << out.dump(2) << "\n";
      return;
    }
    std::cout << fmt::format("model            {}\n", spec.name);
    if (spec.vision) {
      const auto& v = *spec.vision;
      std::string depths, nh;
      for (size_t i = 0; i < v.depths.size(); ++i) {
        depths += (i ? "-" : "") + std::to_string(v.depths[i]);
        nh += (i ? "-" : "") + std::to_string(v.num_heads[i]);
      }
      std::cout << fmt::format("image tower      {} C={} depths {} heads {} window {}: {} params ({})\n",
                               v.variant, v.embed_dim, depths, nh, v.window_size, vis.params,
                               millions(vis.params));
      std::cout << fmt::format("  forward        {:.2f} GFLOPs per image at {}x{} ({:.2f} GMACs)\n", vis.gflops(),
                               size, size, vis.macs / 1e9);
    }
    if (spec.text) {
      const auto& t = *spec.text;
      std::cout << fmt::format("text tower       width {} heads {} layers {} vocab {} context {}: {} params ({})\n",
                               t.width, t.heads, t.layers, t.vocab_size, t.context_length, txt.params,
                               millions(txt.params));
      std::cout << fmt::format("  forward        {:.2f} GFLOPs per text of {} tokens ({:.2f} GMACs)\n",
                               txt.gflops(), t.context_length, txt.macs / 1e9);
    }
    if (spec.florence) {
      std::cout << fmt::format("projections      D={}: {} params (image_projection, text_projection, logit_scale)\n",
                               spec.florence->embed_dim, heads);
    }
    std::cout << fmt::format("total            {} params ({})\n", total, millions(total));
  });
}

}  // namespace

FLORENCE_COMMAND(setup_info);
