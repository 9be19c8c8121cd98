// Trainer building blocks: AdamW parameter groups, lr schedule, GradCache, UniCL batch labels and
// prompt augmentation, the data mixture and the stage plan.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <map>
#include <set>

#include "florence/core/error.h"
#include "florence/data/readers.h"
#include "florence/loss/unicl.h"
#include "florence/model/florence.h"
#include "florence/model/registry.h"
#include "florence/train/grad_cache.h"
#include "florence/train/mixture.h"
#include "florence/train/prompts.h"
#include "florence/train/schedule.h"
#include "florence/train/trainer.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_train {

using namespace florence;

namespace {

model::FlorenceConfig nano_config() {
  model::FlorenceConfig c = model::resolve_florence_config("florence-nano");
  c.text.vocab_size = 1000;  // a small BPE vocabulary, as `pretrain --vocab` would set
  c.text.sot_token = 998;
  c.text.eot_token = 999;
  return c;
}

torch::Tensor text_batch(const text::TextConfig& c, int64_t n) {
  const int64_t len = c.context_length;
  torch::Tensor ids = torch::randint(1, 900, {n, len}, torch::kLong);
  ids.select(1, 0).fill_(c.sot_token);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t eot = 2 + (i * 5) % (len - 2);
    ids[i][eot] = c.eot_token;
    if (eot + 1 < len) ids[i].slice(0, eot + 1).zero_();
  }
  return ids;
}

std::map<std::string, torch::Tensor> grads_of(model::FlorenceModel& m) {
  std::map<std::string, torch::Tensor> g;
  for (const auto& p : m->named_parameters()) {
    g[p.key()] = p.value().grad().defined() ? p.value().grad().clone() : torch::zeros_like(p.value());
  }
  return g;
}

// max |a - b| over all parameters, relative to max(1, max |a|).
double max_grad_diff(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b,
                     std::string* worst = nullptr) {
  double diff = 0, scale = 1;
  for (const auto& [k, t] : a) {
    const double d = (t - b.at(k)).abs().max().item<double>();
    scale = std::max(scale, t.abs().max().item<double>());
    if (d > diff) {
      diff = d;
      if (worst) *worst = k;
    }
  }
  return diff / scale;
}

data::Sample sample(const std::string& key, const std::string& text, int64_t label = -1) {
  data::Sample s;
  s.key = key;
  s.text = text;
  s.label = label;
  s.image = {1, 2, 3};
  s.image_ext = "png";
  return s;
}

std::vector<data::Sample> read_all(const data::SampleSource& src) {
  std::vector<data::Sample> out;
  data::SkipCounts skips;
  for (size_t p = 0; p < src.num_parts(); ++p) {
    src.read_part(p, [&](data::Sample& s) {
      out.push_back(s);
      return true;
    }, skips);
  }
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Parameter groups
// ------------------------------------------------------------------------------------------------

TEST(ParamGroups, FlorenceNanoSplit) {
  model::FlorenceModel m(nano_config());
  train::ParamGroups g = train::split_param_groups(*m);
  const std::set<std::string> decay(g.decay_names.begin(), g.decay_names.end());
  const std::set<std::string> no_decay(g.no_decay_names.begin(), g.no_decay_names.end());
  // Hand count for florence-nano: vision = stem conv (1) + 5 blocks x {qkv, proj, fc1, fc2} (20)
  // + 2 downsample convs (2); text = 4 layers x {in_proj, out_proj, c_fc, c_proj} (16);
  // projections (2). Everything else (norms, biases, embeddings, bias tables, logit_scale) is
  // excluded.
  EXPECT_EQ(decay.size(), 41u);
  for (const char* n : {"image_encoder.patch_embed.proj.weight", "image_encoder.layers.0.blocks.0.attn.qkv.weight",
                        "image_encoder.layers.1.blocks.1.mlp.fc2.weight", "image_encoder.layers.0.downsample.proj.weight",
                        "text_encoder.resblocks.0.attn.in_proj_weight", "text_encoder.resblocks.3.mlp.c_fc.weight",
                        "text_encoder.resblocks.2.attn.out_proj.weight", "image_projection", "text_projection"}) {
    EXPECT_TRUE(decay.count(n)) << n;
  }
  for (const char* n : {"logit_scale", "text_encoder.token_embedding.weight", "text_encoder.positional_embedding",
                        "image_encoder.layers.0.blocks.0.attn.relative_position_bias_table",
                        "image_encoder.layers.2.blocks.1.attn.relative_position_bias_table",
                        "image_encoder.patch_embed.proj.bias", "image_encoder.patch_embed.norm.weight",
                        "image_encoder.layers.0.blocks.0.norm1.weight", "image_encoder.layers.0.blocks.0.norm1.bias",
                        "image_encoder.layers.0.blocks.0.attn.qkv.bias", "image_encoder.norm.weight",
                        "text_encoder.resblocks.0.attn.in_proj_bias", "text_encoder.resblocks.0.ln_1.weight",
                        "text_encoder.ln_final.bias"}) {
    EXPECT_TRUE(no_decay.count(n)) << n;
  }
  // The two groups partition the trainable parameters.
  EXPECT_EQ(decay.size() + no_decay.size(), m->parameters().size());
  for (const auto& n : decay) EXPECT_FALSE(no_decay.count(n)) << n;
  EXPECT_TRUE(train::uses_weight_decay("x.fc.weight", 2));
  EXPECT_FALSE(train::uses_weight_decay("x.fc.weight", 1));
  EXPECT_FALSE(train::uses_weight_decay("absolute_pos_embed", 3));
}

// ------------------------------------------------------------------------------------------------
// Schedule
// ------------------------------------------------------------------------------------------------

TEST(LrSchedule, HandComputedSteps) {
  train::LrSchedule s;
  s.peak_lr = 1e-3;
  s.min_lr = 1e-5;
  s.warmup_steps = 10;
  s.total_steps = 110;
  EXPECT_DOUBLE_EQ(s.at(0), 1e-4);       // (0+1)/10 of the peak
  EXPECT_DOUBLE_EQ(s.at(4), 5e-4);       // 5/10
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3);       // last warm-up step reaches the peak
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);      // cosine start: cos(0) = 1
  EXPECT_NEAR(s.at(60), (1e-3 + 1e-5) / 2, 1e-15);  // midpoint: cos(pi/2) = 0
  // quarter: 1e-5 + 0.5 (1 + cos(pi/4)) (1e-3 - 1e-5)
  EXPECT_NEAR(s.at(35), 1e-5 + 0.5 * (1 + std::sqrt(0.5)) * (1e-3 - 1e-5), 1e-15);
  EXPECT_DOUBLE_EQ(s.at(110), 1e-5);     // end
  EXPECT_DOUBLE_EQ(s.at(500), 1e-5);
  EXPECT_GT(s.at(109), 1e-5);
  EXPECT_LT(s.at(109), 1.1e-5);
  train::LrSchedule nowarm;
  nowarm.peak_lr = 2.0;
  nowarm.total_steps = 4;
  EXPECT_DOUBLE_EQ(nowarm.at(0), 2.0);
  EXPECT_NEAR(nowarm.at(2), 1.0, 1e-15);
  train::LrSchedule bad;
  bad.total_steps = 0;
  EXPECT_THROW(bad.at(0), Error);
}

// ------------------------------------------------------------------------------------------------
// GradCache
// ------------------------------------------------------------------------------------------------

TEST(GradCache, AccumulationEqualsOneFullBatch) {
  torch::manual_seed(3);
  model::FlorenceConfig cfg = nano_config();
  ASSERT_EQ(cfg.vision.drop_path_rate, 0.0);
  model::FlorenceModel m(cfg);
  m->train();
  const int64_t B = 6;  // 32 px keeps the test fast; the towers accept any size
  torch::Tensor images = torch::randn({B, 3, 32, 32});
  torch::Tensor ids = text_batch(cfg.text, B);
  // Rows 0, 3 and 5 share a label (identical texts): UniCL positives.
  torch::Tensor labels = torch::arange(B, torch::kLong);
  labels[3] = 0;
  labels[5] = 0;

  m->zero_grad();
  const auto full = train::contrastive_backward(m, images, ids, labels, 1);
  const auto g_full = grads_of(m);
  for (int accum : {2, 4}) {  // 2: split 3 + 3; 4: micro-batch 2 -> 2 + 2 + 2
    m->zero_grad();
    const auto acc = train::contrastive_backward(m, images, ids, labels, accum);
    EXPECT_NEAR(acc.loss.item<double>(), full.loss.item<double>(), 1e-5) << "accum " << accum;
    std::string worst;
    const double d = max_grad_diff(g_full, grads_of(m), &worst);
    std::cout << "GradCache accum " << accum << ": loss diff "
              << std::abs(acc.loss.item<double>() - full.loss.item<double>()) << ", max relative grad diff " << d
              << " (" << worst << ")\n";
    EXPECT_LE(d, 1e-5) << "accum " << accum << ", worst parameter " << worst;
  }
  // The logit scale gets its gradient only from the loss pass; it must not be zero.
  EXPECT_GT(g_full.at("logit_scale").abs().item<double>(), 0.0);
  EXPECT_THROW(train::contrastive_backward(m, images, ids, labels, 0), Error);
}

TEST(GradCache, StochasticDepthReplaysTheSameRandomNumbers) {
  // With drop path on, GradCache must equal plain autograd over the same micro-batch split
  // started from the same generator state (pass 3 restores each micro-batch's RNG state).
  model::FlorenceConfig cfg = nano_config();
  cfg.vision.drop_path_rate = 0.5;
  torch::manual_seed(5);
  model::FlorenceModel m(cfg);
  m->train();
  const int64_t B = 4;
  torch::Tensor images = torch::randn({B, 3, 32, 32});
  torch::Tensor ids = text_batch(cfg.text, B);
  torch::Tensor labels = torch::arange(B, torch::kLong);

  torch::manual_seed(77);
  m->zero_grad();
  const auto gc = train::contrastive_backward(m, images, ids, labels, 2);
  const auto g_gc = grads_of(m);
  const double after_gc = torch::rand({1}).item<double>();

  // Reference: plain autograd, same split and order as GradCache's pass 1 (image, then text,
  // per micro-batch), same starting generator state.
  torch::manual_seed(77);
  m->zero_grad();
  std::vector<torch::Tensor> us, vs;
  for (int64_t s = 0; s < B; s += 2) {
    us.push_back(m->encode_image(images.narrow(0, s, 2)));
    vs.push_back(m->encode_text(ids.narrow(0, s, 2)));
  }
  torch::Tensor loss = loss::unicl_loss(torch::cat(us), torch::cat(vs), labels, m->temperature());
  loss.backward();
  const double after_ref = torch::rand({1}).item<double>();
  EXPECT_NEAR(gc.loss.item<double>(), loss.item<double>(), 1e-5);
  const double d = max_grad_diff(grads_of(m), g_gc);
  std::cout << "GradCache with drop path 0.5 vs plain autograd: max relative grad diff " << d << "\n";
  EXPECT_LE(d, 1e-5);
  // The generator ends where one pass over the micro-batches leaves it.
  EXPECT_EQ(after_gc, after_ref);
}

// ------------------------------------------------------------------------------------------------
// Labels and prompt augmentation
// ------------------------------------------------------------------------------------------------

TEST(BatchTexts, LabelsAndStageOneAugmentation) {
  const int64_t cls = train::class_label("t-shirt");
  const std::vector<std::string> raw = {"A Cat", "a   cat", "a dog on a sofa", "cat", "t-shirt", "Red heart"};
  const std::vector<int64_t> cl = {-1, -1, -1, -1, cls, -1};
  const auto s1 = train::make_batch_texts(raw, cl, 1, 42, 0, 7);
  const auto s2 = train::make_batch_texts(raw, cl, 2, 42, 0, 7);
  // Identical cleaned texts => one label; labels are the hash of the cleaned ORIGINAL text.
  EXPECT_EQ(s1.labels[0], s1.labels[1]);
  EXPECT_EQ(s1.labels[0], loss::text_label("a cat"));
  EXPECT_EQ(s1.labels[3], loss::text_label("cat"));
  EXPECT_EQ(s1.labels[5], loss::text_label("red heart"));
  EXPECT_NE(s1.labels[0], s1.labels[2]);
  EXPECT_LT(s1.labels[0], 0);  // text labels are negative
  // Class data: the class label, in every stage.
  EXPECT_EQ(s1.labels[4], cls);
  EXPECT_EQ(s2.labels[4], cls);
  EXPECT_GE(cls, 0);
  EXPECT_EQ(s1.labels, s2.labels);  // augmentation never changes a label
  // Stage 1: 1-2 word texts become templates of themselves; longer texts stay.
  auto is_template_of = [](const std::string& t, const std::string& name) {
    for (const auto& tmpl : train::prompt_templates()) {
      if (t == train::fill_template(tmpl, name)) return true;
    }
    return false;
  };
  EXPECT_TRUE(is_template_of(s1.texts[0], "a cat")) << s1.texts[0];
  EXPECT_TRUE(is_template_of(s1.texts[3], "cat")) << s1.texts[3];
  EXPECT_TRUE(is_template_of(s1.texts[5], "red heart")) << s1.texts[5];
  EXPECT_EQ(s1.texts[2], "a dog on a sofa");
  EXPECT_TRUE(is_template_of(s1.texts[4], "t-shirt")) << s1.texts[4];
  EXPECT_EQ(s1.augmented, 5);
  // Stage 2: originals (cleaned), templates only for class data.
  EXPECT_EQ(s2.texts[0], "a cat");
  EXPECT_EQ(s2.texts[3], "cat");
  EXPECT_TRUE(is_template_of(s2.texts[4], "t-shirt"));
  EXPECT_EQ(s2.augmented, 1);
  // Deterministic in (seed, epoch, batch, row); the templates vary across draws.
  EXPECT_EQ(train::make_batch_texts(raw, cl, 1, 42, 0, 7).texts, s1.texts);
  std::set<std::string> seen;
  for (int64_t b = 0; b < 200; ++b) seen.insert(train::make_batch_texts({"cat"}, {-1}, 1, 42, 0, b).texts[0]);
  EXPECT_GE(seen.size(), train::prompt_templates().size() - 2);
  EXPECT_EQ(train::count_words("a b"), 2);
  EXPECT_EQ(train::count_words(""), 0);
  EXPECT_THROW(train::make_batch_texts({"a"}, {}, 1, 0, 0, 0), Error);
}

TEST(BatchTexts, TagSamplingDrawsOnePieceOfAListText) {
  // Pieces: split at ", " and ". ", trimmed, a final '.' dropped, duplicates once, order kept.
  EXPECT_EQ(train::text_tags("2 dead frogs. frog, swamp, frog, green."),
            (std::vector<std::string>{"2 dead frogs", "frog", "swamp", "green"}));
  EXPECT_EQ(train::text_tags("grinning face, grinning"), (std::vector<std::string>{"grinning face", "grinning"}));
  EXPECT_EQ(train::text_tags("a dog on a sofa"), (std::vector<std::string>{"a dog on a sofa"}));
  EXPECT_EQ(train::text_tags("v1.2 release, 3,5 mm"), (std::vector<std::string>{"v1.2 release", "3,5 mm"}));
  EXPECT_TRUE(train::text_tags(", . ,").empty());
  EXPECT_EQ(train::text_tags("cat, ,, dog, ..., é"), (std::vector<std::string>{"cat", "dog", "é"}));
  EXPECT_TRUE(train::text_tags("").empty());

  const std::vector<std::string> raw = {"Red Apple. fruit, food, apple", "a dog on a sofa", "cat", "shirt"};
  const std::vector<int64_t> cl = {-1, -1, -1, train::class_label("shirt")};
  const std::vector<std::string> pieces = {"red apple", "fruit", "food", "apple"};
  std::map<std::string, int> drawn;
  int64_t tagged = 0;
  for (int64_t b = 0; b < 400; ++b) {
    const auto t = train::make_batch_texts(raw, cl, 1, 42, 0, b, 1.0);
    tagged += t.tagged;
    // p = 1: the list always becomes one piece, labelled by that piece; templated (1-2 words).
    bool found = false;
    for (const auto& p : pieces) {
      for (const auto& tmpl : train::prompt_templates()) {
        if (t.texts[0] == train::fill_template(tmpl, p)) {
          found = true;
          EXPECT_EQ(t.labels[0], loss::text_label(p));
          ++drawn[p];
        }
      }
    }
    EXPECT_TRUE(found) << t.texts[0];
    // Texts of one piece and class rows are never tagged.
    EXPECT_EQ(t.texts[1], "a dog on a sofa");
    EXPECT_EQ(t.labels[1], loss::text_label("a dog on a sofa"));
    EXPECT_EQ(t.labels[2], loss::text_label("cat"));
    EXPECT_EQ(t.labels[3], cl[3]);
  }
  EXPECT_EQ(tagged, 400);
  // Uniform over the 4 pieces: each expected 100 times (binomial sd ~8.7).
  ASSERT_EQ(drawn.size(), 4u);
  for (const auto& [p, n] : drawn) {
    EXPECT_GT(n, 60) << p;
    EXPECT_LT(n, 140) << p;
  }
  // p = 0.25: about a quarter of the draws; stage 2 never tags; p = 0 keeps the draws of a run without it.
  int64_t quarter = 0;
  for (int64_t b = 0; b < 400; ++b) quarter += train::make_batch_texts(raw, cl, 1, 42, 0, b, 0.25).tagged;
  EXPECT_GT(quarter, 70);
  EXPECT_LT(quarter, 130);
  const auto s2 = train::make_batch_texts(raw, cl, 2, 42, 0, 3, 1.0);
  EXPECT_EQ(s2.tagged, 0);
  EXPECT_EQ(s2.texts[0], "red apple. fruit, food, apple");
  EXPECT_EQ(train::make_batch_texts(raw, cl, 1, 42, 0, 3, 0.0).texts, train::make_batch_texts(raw, cl, 1, 42, 0, 3).texts);
  EXPECT_EQ(train::make_batch_texts(raw, cl, 1, 42, 0, 3, 1.0).texts, train::make_batch_texts(raw, cl, 1, 42, 0, 3, 1.0).texts);
  EXPECT_THROW(train::make_batch_texts(raw, cl, 1, 42, 0, 3, 1.5), Error);
  EXPECT_THROW(train::make_batch_texts(raw, cl, 1, 42, 0, 3, -0.1), Error);
  EXPECT_THROW(train::make_batch_texts(raw, cl, 1, 42, 0, 3, std::nan("")), Error);
}

// ------------------------------------------------------------------------------------------------
// Mixture
// ------------------------------------------------------------------------------------------------

TEST(Mixture, ConcatenationWithoutWeights) {
  std::vector<data::Sample> a, b;
  for (int i = 0; i < 5; ++i) a.push_back(sample("a" + std::to_string(i), "text a", 3));
  for (int i = 0; i < 3; ++i) b.push_back(sample("b" + std::to_string(i), "shirt", 1));
  auto va = std::make_shared<data::VectorSource>(a);
  auto vb = std::make_shared<data::VectorSource>(b);
  train::MixtureSource mix({{va, -1, train::SourceKind::kPairs, "a"}, {vb, -1, train::SourceKind::kLabelled, "b"}},
                           1);
  ASSERT_EQ(mix.num_parts(), 8u);
  const auto all = read_all(mix);
  ASSERT_EQ(all.size(), 8u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(all[i].key, "a" + std::to_string(i));
    EXPECT_EQ(all[i].label, -1);  // pairs: the class id is dropped (the text decides the label)
  }
  for (int i = 5; i < 8; ++i) {
    EXPECT_EQ(all[i].label, train::class_label("shirt"));  // labelled: class label of the name
    EXPECT_EQ(all[i].text, "shirt");
  }
}

TEST(Mixture, WeightsGiveSharesWithinStatisticalBounds) {
  std::vector<data::Sample> a, b, c;
  for (int i = 0; i < 7; ++i) a.push_back(sample("a" + std::to_string(i), "x"));
  for (int i = 0; i < 50; ++i) b.push_back(sample("b" + std::to_string(i), "y"));
  for (int i = 0; i < 3; ++i) c.push_back(sample("c" + std::to_string(i), "z"));
  auto va = std::make_shared<data::VectorSource>(a);
  auto vb = std::make_shared<data::VectorSource>(b);
  auto vc = std::make_shared<data::VectorSource>(c);
  const int64_t N = 30000;
  std::vector<train::MixtureInput> in = {{va, 3.0, train::SourceKind::kPairs, "a"},
                                         {vb, 1.0, train::SourceKind::kPairs, "b"},
                                         {vc, 0.0, train::SourceKind::kPairs, "c"}};
  train::MixtureSource mix(in, 9, N);
  std::vector<int64_t> count(3, 0);
  std::map<size_t, int64_t> a_parts;
  for (const auto& [k, p] : mix.table()) {
    ++count[size_t(k)];
    if (k == 0) ++a_parts[p];
  }
  // Binomial(N, 3/4): sd = sqrt(N * 3/4 * 1/4) = 75; allow 5 sd.
  EXPECT_NEAR(double(count[0]), 0.75 * N, 5 * 75.0);
  EXPECT_EQ(count[0] + count[1], N);
  EXPECT_EQ(count[2], 0);  // weight 0 excludes the source
  // Round-robin through permutations: every part of A is used equally often (+-1).
  ASSERT_EQ(a_parts.size(), 7u);
  int64_t lo = INT64_MAX, hi = 0;
  for (const auto& [p, n] : a_parts) {
    lo = std::min(lo, n);
    hi = std::max(hi, n);
  }
  EXPECT_LE(hi - lo, 1);
  // Deterministic by seed; another seed gives another table.
  EXPECT_EQ(train::MixtureSource(in, 9, N).table(), mix.table());
  EXPECT_NE(train::MixtureSource(in, 10, N).table(), mix.table());
  // Default size: all parts together.
  EXPECT_EQ(train::MixtureSource(in, 9).num_parts(), 60u);
  EXPECT_THROW(train::MixtureSource({{vc, 0.0, train::SourceKind::kPairs, "c"}}, 1), Error);
}

TEST(Mixture, LabelledWithoutClassIsSkippedAndCounted) {
  auto v = std::make_shared<data::VectorSource>(std::vector<data::Sample>{sample("k0", "", -1), sample("k1", "dog", 2)});
  train::MixtureSource mix({{v, -1, train::SourceKind::kLabelled, "v"}}, 0);
  data::SkipCounts skips;
  std::vector<std::string> texts;
  for (size_t p = 0; p < mix.num_parts(); ++p) {
    mix.read_part(p, [&](data::Sample& s) {
      texts.push_back(s.text);
      return true;
    }, skips);
  }
  EXPECT_EQ(texts, std::vector<std::string>{"dog"});
  EXPECT_EQ(skips["labelled_without_class"], 1);
}

TEST(Mixture, WeightedSpecParsing) {
  EXPECT_EQ(train::parse_weighted_spec("data/train:0.5"), (std::pair<std::string, double>{"data/train", 0.5}));
  EXPECT_EQ(train::parse_weighted_spec("data/train"), (std::pair<std::string, double>{"data/train", -1}));
  EXPECT_EQ(train::parse_weighted_spec("a/{0..3}.tar::b/x.tar"),
            (std::pair<std::string, double>{"a/{0..3}.tar::b/x.tar", -1}));
  EXPECT_EQ(train::parse_weighted_spec("d:2"), (std::pair<std::string, double>{"d", 2}));
  EXPECT_THROW(train::parse_weighted_spec("d:-1"), Error);
  EXPECT_THROW(train::parse_weighted_spec(":3"), Error);
}

// ------------------------------------------------------------------------------------------------
// Stages
// ------------------------------------------------------------------------------------------------

TEST(Stages, ResolutionRules) {
  train::TrainOptions o;
  o.steps = 1180;
  auto p = train::resolve_stages(o, -1);
  EXPECT_EQ(p.stage_steps[0], 1000);  // Florence's 1M : 180k ratio
  EXPECT_EQ(p.stage_steps[1], 180);
  EXPECT_EQ(p.total, 1180);
  EXPECT_EQ(p.stage_of(999), 1);
  EXPECT_EQ(p.stage_of(1000), 2);
  EXPECT_TRUE(p.is_stage_end(1000));
  EXPECT_TRUE(p.is_stage_end(1180));
  EXPECT_FALSE(p.is_stage_end(500));
  o.stage1_steps = 100;
  o.stage3_steps = 30;
  p = train::resolve_stages(o, -1);
  EXPECT_EQ(p.stage_steps[1], 1050);
  EXPECT_EQ(p.stage_of(1150), 3);
  o = train::TrainOptions{};
  o.stage1_steps = 20;
  o.stage2_steps = 10;
  p = train::resolve_stages(o, -1);
  EXPECT_EQ(p.total, 30);
  o.steps = 31;
  EXPECT_THROW(train::resolve_stages(o, -1), Error);
  o = train::TrainOptions{};
  o.epochs = 3;
  o.stage2_steps = 0;
  p = train::resolve_stages(o, 7);
  EXPECT_EQ(p.total, 21);
  EXPECT_EQ(p.stage_steps[0], 21);
  EXPECT_THROW(train::resolve_stages(train::TrainOptions{}, -1), Error);
}

TEST(TrainOptions, JsonRoundTripAndUnknownKey) {
  train::TrainOptions o;
  o.model = "x.json";
  o.data = {{"shards", "a/b", 0.5}, {"labelled", "c", -1}};
  o.stage3_steps = 7;
  o.seed = 123;
  const auto j = o.to_json();
  EXPECT_EQ(train::TrainOptions::from_json(j).to_json(), j);
  auto bad = j;
  bad["lrr"] = 1;
  EXPECT_THROW(train::TrainOptions::from_json(bad), Error);
}

}  // namespace test_train
