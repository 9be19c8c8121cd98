// florence convert IN.pt|IN.safetensors OUT.safetensors --model NAME|CONFIG.json [--dtype f32|f16|bf16]
#include <filesystem>
#include <iostream>

#include "command.h"
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/model/io.h"
#include "florence/text/text_transformer.h"
#include "florence/vision/swin.h"

namespace {

void setup_convert(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "convert", "Convert a PyTorch .pt/.pth state dict (torchvision Swin, UniCL, CLIP naming) to a florence checkpoint");
  auto in = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto model = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>("f32");
  cmd->add_option("input", *in, "Input checkpoint (.pt, .pth or .safetensors)")->required()->check(CLI::ExistingFile);
  cmd->add_option("output", *out, "Output .safetensors (a .json sidecar is written beside it)")->required();
  cmd->add_option("--model", *model, "Registered name or JSON config describing the checkpoint")->required();
  cmd->add_option("--dtype", *dtype, "Stored float dtype")->check(CLI::IsMember({"f32", "f16", "bf16"}));
  cmd->callback([=] {
    using namespace florence;
    // The sidecar written beside OUT would replace a config file of that name: refuse.
    namespace fs = std::filesystem;
    std::error_code ec;
    const std::string side = model::sidecar_path(*out);
    if (fs::exists(*model, ec) && fs::exists(side, ec) && fs::equivalent(*model, side, ec))
      throw Error("--model '" + *model + "' is where the sidecar of '" + *out +
                  "' goes; writing it would replace your config. Move the config or choose another output name");
    model::ModelSpec spec = model::resolve_model(*model);
    const torch::Dtype dt = *dtype == "f16" ? torch::kHalf : *dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
    core::TensorMap weights = model::read_weights(*in, spec);
    std::shared_ptr<torch::nn::Module> module;
    if (spec.florence) {
      module = model::FlorenceModel(*spec.florence).ptr();
    } else if (spec.vision) {
      module = vision::SwinTransformer(*spec.vision).ptr();
    } else {
      module = text::TextTransformer(*spec.text).ptr();
    }
    try {
      core::load_state_dict(*module, weights);  // strict: validates every key and shape
    } catch (const Error& e) {
      throw Error("'" + *in + "' does not fit model '" + spec.name + "': " + e.what());
    }
    model::save_checkpoint(*module, spec, *out, dt, {{"converted_from", *in}});
    std::cout << "wrote " << *out << " (" << weights.size() << " tensors) and " << model::sidecar_path(*out) << "\n";
  });
}

}  // namespace

FLORENCE_COMMAND(setup_convert);
