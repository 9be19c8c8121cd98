// map_unicl_keys: realistic UniCL- and CLIP-style key sets map onto the two-tower names
// (image_encoder.*, text_encoder.*, image_projection, text_projection, logit_scale).
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_key_mapping {

using florence::core::map_unicl_keys;
using florence::core::TensorMap;

namespace {

using Pairs = std::vector<std::pair<std::string, std::string>>;  // input key -> expected ("" = dropped)

/// Maps the input keys (tensor i holds the value i) and checks every expected name holds the
/// value of its source key, dropped keys are gone, and nothing else appears.
void expect_mapping(const Pairs& pairs, const std::string& prefix = "") {
  TensorMap in;
  std::map<std::string, float> want;
  for (size_t i = 0; i < pairs.size(); ++i) {
    in[prefix + pairs[i].first] = torch::full({1}, static_cast<float>(i));
    if (!pairs[i].second.empty()) want[pairs[i].second] = static_cast<float>(i);
  }
  const TensorMap out = map_unicl_keys(in);
  std::vector<std::string> got_keys, want_keys;
  for (const auto& kv : out) got_keys.push_back(kv.first);
  for (const auto& kv : want) want_keys.push_back(kv.first);
  EXPECT_EQ(got_keys, want_keys);
  for (const auto& [name, value] : want) {
    auto it = out.find(name);
    ASSERT_NE(it, out.end()) << name;
    EXPECT_EQ(it->second.item<float>(), value) << name << " holds the wrong tensor";
  }
}

// microsoft/UniCL naming (Swin image encoder, `lang_encoder` text Transformer).
const Pairs kUniCL = {
    {"image_encoder.patch_embed.proj.weight", "image_encoder.patch_embed.proj.weight"},
    {"image_encoder.patch_embed.proj.bias", "image_encoder.patch_embed.proj.bias"},
    {"image_encoder.patch_embed.norm.weight", "image_encoder.patch_embed.norm.weight"},
    {"image_encoder.layers.0.blocks.0.norm1.weight", "image_encoder.layers.0.blocks.0.norm1.weight"},
    {"image_encoder.layers.0.blocks.0.attn.relative_position_bias_table",
     "image_encoder.layers.0.blocks.0.attn.relative_position_bias_table"},
    {"image_encoder.layers.0.blocks.0.attn.relative_position_index", ""},
    {"image_encoder.layers.0.blocks.0.attn.qkv.weight", "image_encoder.layers.0.blocks.0.attn.qkv.weight"},
    {"image_encoder.layers.0.blocks.0.attn.proj.bias", "image_encoder.layers.0.blocks.0.attn.proj.bias"},
    {"image_encoder.layers.0.blocks.1.attn_mask", ""},
    {"image_encoder.layers.0.blocks.1.mlp.fc1.weight", "image_encoder.layers.0.blocks.1.mlp.fc1.weight"},
    {"image_encoder.layers.0.blocks.1.mlp.fc2.bias", "image_encoder.layers.0.blocks.1.mlp.fc2.bias"},
    {"image_encoder.layers.0.downsample.reduction.weight", "image_encoder.layers.0.downsample.reduction.weight"},
    {"image_encoder.layers.0.downsample.norm.bias", "image_encoder.layers.0.downsample.norm.bias"},
    {"image_encoder.layers.3.blocks.1.attn.relative_position_index", ""},
    {"image_encoder.norm.weight", "image_encoder.norm.weight"},
    {"image_encoder.head.weight", "image_encoder.head.weight"},
    {"lang_encoder.token_embedding.weight", "text_encoder.token_embedding.weight"},
    {"lang_encoder.positional_embedding", "text_encoder.positional_embedding"},
    {"lang_encoder.resblocks.0.attn.in_proj_weight", "text_encoder.resblocks.0.attn.in_proj_weight"},
    {"lang_encoder.resblocks.0.attn.in_proj_bias", "text_encoder.resblocks.0.attn.in_proj_bias"},
    {"lang_encoder.resblocks.0.attn.out_proj.weight", "text_encoder.resblocks.0.attn.out_proj.weight"},
    {"lang_encoder.resblocks.0.ln_1.weight", "text_encoder.resblocks.0.ln_1.weight"},
    {"lang_encoder.resblocks.0.mlp.c_fc.weight", "text_encoder.resblocks.0.mlp.c_fc.weight"},
    {"lang_encoder.resblocks.11.mlp.c_proj.bias", "text_encoder.resblocks.11.mlp.c_proj.bias"},
    {"lang_encoder.resblocks.11.ln_2.bias", "text_encoder.resblocks.11.ln_2.bias"},
    {"lang_encoder.ln_final.weight", "text_encoder.ln_final.weight"},
    {"lang_encoder.ln_final.bias", "text_encoder.ln_final.bias"},
    {"lang_projection", "text_projection"},
    {"image_projection", "image_projection"},
    {"logit_scale", "logit_scale"},
};

// openai/CLIP naming (ViT image tower under visual.*, text tower at the top level).
const Pairs kCLIP = {
    {"input_resolution", ""},
    {"context_length", ""},
    {"vocab_size", ""},
    {"visual.class_embedding", "image_encoder.class_embedding"},
    {"visual.positional_embedding", "image_encoder.positional_embedding"},
    {"visual.conv1.weight", "image_encoder.conv1.weight"},
    {"visual.ln_pre.weight", "image_encoder.ln_pre.weight"},
    {"visual.transformer.resblocks.0.attn.in_proj_weight", "image_encoder.transformer.resblocks.0.attn.in_proj_weight"},
    {"visual.transformer.resblocks.11.mlp.c_fc.bias", "image_encoder.transformer.resblocks.11.mlp.c_fc.bias"},
    {"visual.ln_post.bias", "image_encoder.ln_post.bias"},
    {"visual.proj", "image_projection"},
    {"token_embedding.weight", "text_encoder.token_embedding.weight"},
    {"positional_embedding", "text_encoder.positional_embedding"},
    {"transformer.resblocks.0.ln_1.weight", "text_encoder.resblocks.0.ln_1.weight"},
    {"transformer.resblocks.0.attn.in_proj_weight", "text_encoder.resblocks.0.attn.in_proj_weight"},
    {"transformer.resblocks.0.attn.in_proj_bias", "text_encoder.resblocks.0.attn.in_proj_bias"},
    {"transformer.resblocks.0.attn.out_proj.bias", "text_encoder.resblocks.0.attn.out_proj.bias"},
    {"transformer.resblocks.0.mlp.c_fc.weight", "text_encoder.resblocks.0.mlp.c_fc.weight"},
    {"transformer.resblocks.11.mlp.c_proj.weight", "text_encoder.resblocks.11.mlp.c_proj.weight"},
    {"transformer.resblocks.11.ln_2.bias", "text_encoder.resblocks.11.ln_2.bias"},
    {"ln_final.weight", "text_encoder.ln_final.weight"},
    {"ln_final.bias", "text_encoder.ln_final.bias"},
    {"text_projection", "text_projection"},
    {"logit_scale", "logit_scale"},
};

}  // namespace

TEST(KeyMapping, UniCLNaming) { expect_mapping(kUniCL); }

TEST(KeyMapping, UniCLNamingUnderDataParallel) {
  expect_mapping(kUniCL, "module.");
  expect_mapping(kUniCL, "module.module.");
}

TEST(KeyMapping, CLIPNaming) { expect_mapping(kCLIP); }

TEST(KeyMapping, OurNamingPassesThrough) {
  expect_mapping({
      {"image_encoder.layers.1.downsample.proj.weight", "image_encoder.layers.1.downsample.proj.weight"},
      {"text_encoder.resblocks.3.attn.in_proj_weight", "text_encoder.resblocks.3.attn.in_proj_weight"},
      {"text_encoder.positional_embedding", "text_encoder.positional_embedding"},
      {"image_projection", "image_projection"},
      {"text_projection", "text_projection"},
      {"logit_scale", "logit_scale"},
  });
}

TEST(KeyMapping, OldUniCLNaming) {
  // UniCLModel._convert_old_weights: visual.* / text.* / vision_projection.
  expect_mapping({
      {"visual.layers.0.blocks.0.attn.qkv.weight", "image_encoder.layers.0.blocks.0.attn.qkv.weight"},
      {"text.resblocks.0.ln_1.weight", "text_encoder.resblocks.0.ln_1.weight"},
      {"vision_projection", "image_projection"},
      {"text_projection", "text_projection"},
  });
}

TEST(KeyMapping, UnknownKeysPassThroughAndOnlyExactBufferNamesAreDropped) {
  expect_mapping({
      {"some_head.fc.weight", "some_head.fc.weight"},
      {"image_encoder.layers.0.blocks.0.attn_mask_gate.weight", "image_encoder.layers.0.blocks.0.attn_mask_gate.weight"},
      {"image_encoder.layers.0.blocks.0.attn.cpb_mlp.0.weight", "image_encoder.layers.0.blocks.0.attn.cpb_mlp.0.weight"},
      {"image_encoder.layers.0.blocks.0.attn.relative_coords_table", ""},
      {"lang_encoder.attn_mask", ""},
      {"visual_extra.weight", "visual_extra.weight"},
      {"transformers_misc", "transformers_misc"},
  });
}

TEST(KeyMapping, CollisionsAreErrorsNamingBothKeys) {
  TensorMap in{{"visual.proj", torch::zeros({1})}, {"image_projection", torch::ones({1})}};
  try {
    map_unicl_keys(in);
    FAIL() << "expected florence::Error";
  } catch (const florence::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("visual.proj"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'image_projection'"), std::string::npos) << msg;
  }
  EXPECT_THROW(map_unicl_keys({{"module.logit_scale", torch::zeros({})}, {"logit_scale", torch::zeros({})}}),
               florence::Error);
}

TEST(KeyMapping, TensorsAreSharedNotCopied) {
  auto t = torch::randn({4, 4});
  const auto out = map_unicl_keys({{"module.lang_projection", t}});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out.at("text_projection").is_same(t));
}

}  // namespace test_key_mapping
