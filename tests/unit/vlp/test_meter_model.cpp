// The METER-style model: head shapes, analytic counts against the modules, padding and
// bidirectionality, tower initialisation from a Florence model, parameter groups, configs, and
// a loss that falls over a few optimizer steps on a tiny fixed batch.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "florence/adapt/vlp/meter.h"
#include "florence/adapt/vlp/objectives.h"
#include "florence/adapt/vlp/param_groups.h"
#include "florence/adapt/vlp/vqa_metric.h"
#include "florence/core/error.h"
#include "florence/core/precision.h"
#include "florence/model/florence.h"
#include "support/paths.h"
#include "unit/vlp/meter_test_config.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_meter_model {

namespace {

using namespace florence;
using vlp::MeterConfig;
using vlp::MeterModel;

constexpr int kSot = test::kTinySot, kEot = test::kTinyEot;

MeterConfig tiny_config() { return test::tiny_meter_config(); }

int64_t numel(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

TEST(MeterModel, NanoHeadShapesAndCounts) {
  MeterConfig c = vlp::resolve_meter_config("meter-nano");
  c.num_answers = 10;
  MeterModel model(c);
  model->eval();
  torch::NoGradGuard no_grad;
  auto ids = torch::zeros({2, 32}, torch::kLong);
  ids[0][0] = 49406;
  ids[0][1] = 320;
  ids[0][2] = 49407;
  ids[1][0] = 49406;
  ids[1][1] = 49408;  // [MASK]
  ids[1][31] = 49407;
  const auto out = model->forward(torch::randn({2, 3, 64, 64}), ids);
  EXPECT_EQ(out.text_feats.sizes(), (std::vector<int64_t>{2, 32, 128}));
  EXPECT_EQ(out.image_feats.sizes(), (std::vector<int64_t>{2, 16, 128}));  // 64 px -> 4 x 4 tokens
  EXPECT_EQ(out.cls_feats.sizes(), (std::vector<int64_t>{2, 256}));
  EXPECT_EQ(model->itm_logits(out).sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(model->mlm_logits(out).sizes(), (std::vector<int64_t>{2, 32, 49408}));
  EXPECT_EQ(model->vqa_logits(out).sizes(), (std::vector<int64_t>{2, 10}));
  // MLM at the labelled positions only: the same loss and accuracy as over all positions.
  auto labels = torch::full({2, 32}, -100, torch::kLong);
  labels[0][1] = 320;
  labels[1][1] = 1000;
  torch::Tensor targets;
  const auto at = model->mlm_logits_at(out, labels, &targets);
  EXPECT_EQ(at.sizes(), (std::vector<int64_t>{2, 49408}));
  EXPECT_TRUE(torch::equal(targets, torch::tensor({320, 1000}, torch::kLong)));
  EXPECT_NEAR(vlp::mlm_loss(at, targets).item<double>(), vlp::mlm_loss(model->mlm_logits(out), labels).item<double>(),
              1e-5);
  EXPECT_EQ(vlp::mlm_accuracy(at, targets).total, 2);
  EXPECT_THROW(vlp::mlm_loss(at, labels), Error);  // shapes that do not pair up
  EXPECT_EQ(vlp::image_tokens(c.vision_config(), 64), 16);
  EXPECT_EQ(vlp::image_tokens(vlp::resolve_meter_config("meter-t").vision_config(), 224), 49);
  // The analytic parameter count is the modules' count.
  EXPECT_EQ(vlp::count_meter(c, 32, 64).params(), numel(*model));
  const MeterConfig tiny = tiny_config();
  EXPECT_EQ(vlp::count_meter(tiny, 16, 16).params(), numel(*MeterModel(tiny)));
  // A head the config did not build is an error, not a crash.
  MeterConfig no_heads = tiny;
  no_heads.itm_head = no_heads.mlm_head = false;
  no_heads.num_answers = 0;
  MeterModel bare(no_heads);
  const auto bare_out = bare->forward(torch::randn({1, 3, 16, 16}), torch::tensor({{kSot, 3, kEot}}, torch::kLong));
  EXPECT_THROW(bare->itm_logits(bare_out), Error);
  EXPECT_THROW(bare->mlm_logits(bare_out), Error);
  EXPECT_THROW(bare->vqa_logits(bare_out), Error);
}

// --precision amp_bf16 (vqa eval / ask): under bfloat16 autocast the fused features are computed in
// bfloat16 and the VQA logits follow float32's within 5% (relative L2).
TEST(MeterModel, AmpBf16VqaLogitsFollowFloat32) {
  torch::manual_seed(5);
  MeterConfig c = vlp::resolve_meter_config("meter-nano");
  c.num_answers = 10;
  MeterModel model(c);
  model->eval();
  torch::NoGradGuard no_grad;
  // Two 4-token texts (SOT, two words, EOT) padded to 32.
  const auto ids = torch::constant_pad_nd(torch::tensor({49406, 320, 1929, 49407, 49406, 321, 1929, 49407}, torch::kLong)
                                              .view({2, 4}),
                                          {0, 28}, 0);
  const auto images = torch::randn({2, 3, 64, 64});
  const torch::Tensor f32 = model->vqa_logits(model->forward(images, ids));
  torch::Tensor amp;
  {
    AutocastGuard guard(true, torch::kCPU);
    const auto out = model->forward(images, ids);
    EXPECT_EQ(out.cls_feats.scalar_type(), torch::kBFloat16);
    amp = model->vqa_logits(out).to(torch::kFloat);
  }
  const double rel = (amp - f32).norm().item<double>() / f32.norm().item<double>();
  EXPECT_LT(rel, 0.05);
  EXPECT_GT(rel, 0.0);
}

TEST(MeterModel, PaddingIsIgnoredAndTextIsBidirectional) {
  MeterModel model(tiny_config());
  model->eval();
  torch::NoGradGuard no_grad;
  const auto images = torch::randn({2, 3, 16, 16});
  auto ids = torch::tensor({{kSot, 5, 6, 7, kEot, 0, 0, 0}, {kSot, 8, kEot, 1, 2, 3, 4, 5}}, torch::kLong);
  const auto base = model->forward(images, ids);
  // Other padding ids (after the first EOT): the real tokens and the pooled pair do not move.
  auto repadded = ids.clone();
  repadded.index_put_({0, torch::indexing::Slice(5, 8)}, torch::tensor({40, kEot, kSot}, torch::kLong));
  repadded.index_put_({1, torch::indexing::Slice(3, 8)}, 77);
  const auto same = model->forward(images, repadded);
  EXPECT_TRUE(torch::allclose(same.cls_feats, base.cls_feats, 0.0, 1e-6));
  EXPECT_TRUE(torch::allclose(same.image_feats, base.image_feats, 0.0, 1e-6));
  EXPECT_TRUE(torch::allclose(same.text_feats.index({0, torch::indexing::Slice(0, 5)}),
                              base.text_feats.index({0, torch::indexing::Slice(0, 5)}), 0.0, 1e-6));
  // Bidirectional: changing the LAST real token moves the text tower's first position (SOT).
  auto changed = ids.clone();
  changed[0][3] = 60;
  torch::Tensor m1, m2;
  const auto t1 = model->encode_text(ids, &m1), t2 = model->encode_text(changed, &m2);
  EXPECT_GT((t1[0][0] - t2[0][0]).abs().max().item<double>(), 1e-4);
  EXPECT_THROW(model->forward(images, torch::tensor({{kSot, 5, 6}, {kSot, kEot, 1}}, torch::kLong)), Error);
  EXPECT_THROW(model->forward(torch::randn({3, 3, 16, 16}), ids), Error);
}

TEST(MeterModel, LoadTowersFromFlorence) {
  const MeterConfig c = tiny_config();
  model::FlorenceModel florence(c.towers);
  auto weights = core::state_dict(*florence);
  MeterModel meter(c);
  vlp::load_towers(*meter, weights);
  const auto ours = core::state_dict(*meter);
  for (const auto& [k, v] : weights) {
    if (k.rfind("image_encoder.", 0) == 0) {
      ASSERT_TRUE(torch::equal(ours.at("vit_model." + k.substr(14)), v)) << k;
    } else if (k.rfind("text_encoder.", 0) == 0 && k != "text_encoder.token_embedding.weight") {
      ASSERT_TRUE(torch::equal(ours.at("text_transformer." + k.substr(13)), v)) << k;
    }
  }
  const auto& emb = ours.at("text_transformer.token_embedding.weight");
  const auto& src = weights.at("text_encoder.token_embedding.weight");
  ASSERT_EQ(emb.size(0), 101);
  EXPECT_TRUE(torch::equal(emb.slice(0, 0, 100), src));
  EXPECT_TRUE(torch::allclose(emb[100], src.mean(0), 0.0, 1e-6));  // [MASK] = mean row

  // Through a checkpoint file as the CLI will pass it.
  const std::string dir = std::string(FLORENCE_TEST_TMP) + "/meter_towers";
  std::filesystem::create_directories(dir);
  core::save_safetensors(dir + "/towers.safetensors", weights);
  MeterModel from_file(c);
  vlp::load_towers_from_checkpoint(*from_file, dir + "/towers.safetensors");
  EXPECT_TRUE(torch::equal(core::state_dict(*from_file).at("vit_model.norm.weight"), weights.at("image_encoder.norm.weight")));

  // Strict: an unknown key, a missing key and a wrong vocabulary are named.
  auto extra = weights;
  extra["decoder.weight"] = torch::zeros({1});
  try {
    vlp::load_towers(*meter, extra);
    FAIL() << "unexpected key accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("decoder.weight"), std::string::npos) << e.what();
  }
  auto missing = weights;
  missing.erase("text_encoder.ln_final.weight");
  try {
    vlp::load_towers(*meter, missing);
    FAIL() << "missing key accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ln_final.weight"), std::string::npos) << e.what();
  }
  auto wrong_vocab = weights;
  wrong_vocab["text_encoder.token_embedding.weight"] = torch::zeros({99, 32});
  EXPECT_THROW(vlp::load_towers(*meter, wrong_vocab), Error);
}

TEST(MeterModel, ParameterGroups) {
  MeterModel model(tiny_config());
  const auto groups = vlp::meter_param_groups(*model, 5.0, 50.0);
  std::set<std::string> seen;
  std::map<std::string, const vlp::ParamGroup*> by_name;
  for (const auto& g : groups) {
    by_name[g.name] = &g;
    for (const auto& n : g.names) EXPECT_TRUE(seen.insert(n).second) << n << " in two groups";
  }
  EXPECT_EQ(seen.size(), model->parameters().size());  // every parameter exactly once
  ASSERT_EQ(by_name.size(), 6u);
  EXPECT_DOUBLE_EQ(by_name.at("towers/decay")->lr_scale, 1.0);
  EXPECT_DOUBLE_EQ(by_name.at("fusion/no_decay")->lr_scale, 5.0);
  EXPECT_DOUBLE_EQ(by_name.at("heads/decay")->lr_scale, 50.0);
  auto in = [&](const std::string& group, const std::string& name) {
    const auto& n = by_name.at(group)->names;
    return std::find(n.begin(), n.end(), name) != n.end();
  };
  EXPECT_TRUE(in("towers/no_decay", "text_transformer.token_embedding.weight"));
  EXPECT_TRUE(in("towers/no_decay", "text_transformer.positional_embedding"));
  EXPECT_TRUE(in("towers/no_decay", "vit_model.layers.0.blocks.0.attn.relative_position_bias_table"));
  EXPECT_TRUE(in("towers/decay", "vit_model.layers.0.blocks.0.attn.qkv.weight"));
  EXPECT_TRUE(in("fusion/no_decay", "token_type_embeddings.weight"));
  EXPECT_TRUE(in("fusion/no_decay", "cross_modal_text_layers.1.output.LayerNorm.weight"));
  EXPECT_TRUE(in("fusion/no_decay", "cross_modal_image_layers.0.attention.self.query.bias"));
  EXPECT_TRUE(in("fusion/decay", "cross_modal_image_layers.0.crossattention.self.key.weight"));
  EXPECT_TRUE(in("heads/decay", "mlm_score.decoder.weight"));
  EXPECT_TRUE(in("heads/no_decay", "mlm_score.bias"));
  EXPECT_TRUE(in("heads/decay", "vqa_classifier.3.weight"));
  EXPECT_TRUE(in("heads/no_decay", "vqa_classifier.1.weight"));
  const auto adamw = vlp::adamw_groups(groups, 1e-4, 0.01);
  ASSERT_EQ(adamw.size(), groups.size());
  for (size_t i = 0; i < groups.size(); ++i) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(adamw[i].options());
    EXPECT_DOUBLE_EQ(o.lr(), 1e-4 * groups[i].lr_scale);
    EXPECT_DOUBLE_EQ(o.weight_decay(), groups[i].weight_decay ? 0.01 : 0.0);
  }
  EXPECT_THROW(vlp::meter_param_groups(*model, 0.0, 1.0), Error);
}

TEST(MeterConfig, JsonRegistryAndErrors) {
  const MeterConfig c = vlp::resolve_meter_config("meter-nano");
  EXPECT_EQ(c.hidden, 128);
  EXPECT_EQ(c.mask_token(), 49408);
  EXPECT_FALSE(c.text_config().causal);
  EXPECT_EQ(c.text_config().vocab_size, 49409);
  const MeterConfig back = MeterConfig::from_json(c.to_json());
  EXPECT_EQ(back.to_json(), c.to_json());
  const MeterConfig t = vlp::resolve_meter_config("meter-t");
  EXPECT_EQ(t.hidden, 768);
  EXPECT_EQ(t.heads, 12);
  EXPECT_EQ(t.layers, 6);
  EXPECT_EQ(t.intermediate, 3072);
  EXPECT_EQ(vlp::meter_config_names(), (std::vector<std::string>{"meter-h", "meter-nano", "meter-t"}));
  // A JSON file naming its towers by registry name.
  const std::string dir = std::string(FLORENCE_TEST_TMP) + "/meter_config";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/m.json") << R"({"name": "m", "towers": "florence-nano", "hidden": 64, "heads": 2})";
  const MeterConfig f = vlp::resolve_meter_config(dir + "/m.json");
  EXPECT_EQ(f.hidden, 64);
  EXPECT_EQ(f.towers.name, "florence-nano");
  try {
    vlp::resolve_meter_config("meter-xl");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("meter-nano"), std::string::npos) << e.what();
  }
  EXPECT_THROW(MeterConfig::from_json(nlohmann::json{{"hidden_size", 3}}), Error);
  // Out of range for an int: an error naming the field (before: unchecked cast, undefined behaviour).
  for (const char* field : {"hidden", "heads", "num_answers"}) {
    try {
      MeterConfig::from_json(nlohmann::json{{field, 3e9}});
      ADD_FAILURE() << field;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("meter config field '") + field + "': 3000000000.0 is not an integer in range"),
                std::string::npos)
          << e.what();
    }
  }
  MeterConfig bad = tiny_config();
  bad.heads = 5;  // 32 % 5 != 0
  EXPECT_THROW(MeterModel{bad}, Error);
}

TEST(MeterModel, LossFallsOnATinyFixedBatch) {
  // One thread: the model is too small for intra-op threads to help, and on a busy machine two
  // spinning OpenMP threads made this test 13x slower (measured 7 s vs 91 s wall).
  torch::set_num_threads(1);
  torch::manual_seed(0);
  MeterModel model(tiny_config());
  model->train();
  const int64_t B = 4;
  const auto images = torch::randn({B, 3, 16, 16});
  const auto ids = torch::tensor({{kSot, 10, 11, 12, 13, kEot, 0, 0},
                                  {kSot, 20, 21, kEot, 0, 0, 0, 0},
                                  {kSot, 30, 31, 32, 33, 34, 35, kEot},
                                  {kSot, 40, 41, 42, kEot, 0, 0, 0}},
                                 torch::kLong);
  vlp::MlmOptions mo;
  mo.sot = kSot;
  mo.eot = kEot;
  mo.mask_token = 100;
  mo.vocab = 100;
  const auto mlm = vlp::mask_tokens(ids, mo, 5);
  const auto itm = vlp::make_itm_batch(torch::arange(B, torch::kLong), 9);
  const auto itm_images = images.index_select(0, itm.image_index);
  std::vector<vlp::SoftTarget> targets(B);
  for (int64_t b = 0; b < B; ++b) targets[b] = {{b % 5, (b + 1) % 5}, {1.0f, 0.3f}};
  const auto vqa_targets = vlp::soft_target_tensor(targets, 5);

  torch::optim::AdamW opt(vlp::adamw_groups(vlp::meter_param_groups(*model), 1e-3, 0.01));
  auto step_loss = [&] {
    const auto m = model->forward(images, mlm.ids);
    const auto i = model->forward(itm_images, ids);
    return vlp::mlm_loss(model->mlm_logits(m), mlm.labels) + vlp::itm_loss(model->itm_logits(i), itm.labels) +
           vlp::vqa_loss(model->vqa_logits(i), vqa_targets);
  };
  double first = 0, last = 0;
  for (int s = 0; s < 30; ++s) {
    opt.zero_grad();
    auto loss = step_loss();
    if (s == 0) first = loss.item<double>();
    last = loss.item<double>();
    loss.backward();
    opt.step();
  }
  std::printf("[meter tiny] loss step 0 %.4f -> step 29 %.4f\n", first, last);
  EXPECT_TRUE(std::isfinite(last));
  EXPECT_LT(last, 0.5 * first);
}

TEST(MeterCounts, FusionMacsByHandAndStepTable) {
  // tiny_config: H = 32, FFN 64, 2 layers, text width 32, image width 32; Lt = 8, Li = 4 (16 px).
  // A stream with Lq queries and Lo other tokens: 4 Lq H^2 + 2 Lq^2 H (self) + 2 Lq H^2 + 2 Lo H^2
  // + 2 Lq Lo H (cross) + 2 Lq H F (FFN):
  //   text  (8, 4): 32768 + 4096 + 16384 + 8192 + 2048 + 32768 = 96256
  //   image (4, 8): 16384 + 1024 + 8192 + 16384 + 2048 + 16384 = 60416
  // 2 layers: 313344; input projections 8*32*32 + 4*32*32 = 12288; poolers 2*32*32 = 2048.
  const auto n = vlp::count_meter(tiny_config(), 8, 16);
  EXPECT_DOUBLE_EQ(n.fusion.macs, 327680.0);
  EXPECT_DOUBLE_EQ(n.itm.macs, 2.0 * 64);
  EXPECT_DOUBLE_EQ(n.vqa.macs, 64.0 * 64 + 64.0 * 5);

  // The table of docs/vqa.md: GFLOPs (2 x MACs) per image-text pair. A pretraining step runs two
  // forwards per pair (MLM on masked text, ITM on the half-swapped pairs) and backward ~2x forward;
  // a VQA step one forward with the VQA head (3,129 answers, METER's VQAv2 vocabulary).
  struct Row { const char* name; int text_len, image_size; };
  for (const Row& r : {Row{"meter-nano", 32, 64}, Row{"meter-t", 40, 224}, Row{"meter-h", 40, 224},
                       Row{"meter-h", 40, 384}}) {
    MeterConfig c = vlp::resolve_meter_config(r.name);
    c.num_answers = 3129;
    const auto k = vlp::count_meter(c, r.text_len, r.image_size);
    const double pre = 3.0 * (k.forward_macs(true, false, false) + k.forward_macs(false, true, false)) * 2 / 1e9;
    const double vqa = 3.0 * k.forward_macs(false, false, true) * 2 / 1e9;
    std::printf("[meter counts] %s Lt=%d %dpx: params %.1fM (fusion %.1fM, mlm %.1fM) | GFLOPs fwd: image %.3f "
                "text %.3f fusion %.3f mlm %.3f | train step per pair: pretrain %.3f vqa %.3f\n",
                r.name, r.text_len, r.image_size, k.params() / 1e6, k.fusion.params / 1e6, k.mlm.params / 1e6,
                2 * k.vision.macs / 1e9, 2 * k.text.macs / 1e9, 2 * k.fusion.macs / 1e9, 2 * k.mlm.macs / 1e9, pre,
                vqa);
    EXPECT_GT(pre, vqa);
  }
}

}  // namespace

}  // namespace test_meter_model
