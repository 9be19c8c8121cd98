// Unit tests of florence::text::TextTransformer / TextConfig: shapes, parameter names and
// count (hand-computed), initialisation scales, first-EOT pooling, causal masking, input
// errors, config JSON. Numerical parity with PyTorch is in tests/parity/text.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <set>
#include <string>

#include "florence/core/error.h"
#include "florence/text/text_transformer.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_text_transformer {

namespace {

using florence::Error;
using florence::text::TextConfig;
using florence::text::TextTransformer;

// Small tower with a vocabulary that extends past EOT, so ids > eot_token occur.
TextConfig tiny() {
  TextConfig c;
  c.vocab_size = 64;
  c.context_length = 16;
  c.width = 32;
  c.heads = 4;
  c.layers = 2;
  c.sot_token = 39;
  c.eot_token = 40;
  return c;
}

torch::Tensor row(std::vector<int64_t> v) { return torch::tensor(v, torch::kLong); }

// Throws florence::Error whose message contains `needle`.
template <typename F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected florence::Error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TextTransformer, ParameterCountMatchesHandComputedNumber) {
  // vocab 64 * 32 + context 16 * 32 = 2048 + 512; per layer (W = 32, M = 128):
  // ln_1 64 + in_proj 3072 + 96 + out_proj 1024 + 32 + ln_2 64 + c_fc 4096 + 128
  // + c_proj 4096 + 32 = 12704, two layers 25408; ln_final 64. Total 28032.
  torch::manual_seed(0);
  TextTransformer m(tiny());
  int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  EXPECT_EQ(n, 28032);
  EXPECT_EQ(tiny().num_parameters(), 28032);
  // CLIP's text tower (512 wide, 12 layers, 8 heads): "63M" in the CLIP paper §2.4;
  // 49408*512 + 77*512 + 12*(12*512^2 + 13*512) + 2*512.
  EXPECT_EQ(TextConfig{}.num_parameters(), 63165952);
}

TEST(TextTransformer, ParameterNamesFollowClip) {
  TextTransformer m(tiny());
  std::set<std::string> names;
  for (const auto& p : m->named_parameters()) names.insert(p.key());
  const std::set<std::string> want_some = {
      "token_embedding.weight", "positional_embedding", "resblocks.1.ln_1.weight",
      "resblocks.1.ln_1.bias", "resblocks.1.attn.in_proj_weight", "resblocks.1.attn.in_proj_bias",
      "resblocks.1.attn.out_proj.weight", "resblocks.1.attn.out_proj.bias", "resblocks.1.ln_2.weight",
      "resblocks.1.mlp.c_fc.weight", "resblocks.1.mlp.c_fc.bias", "resblocks.1.mlp.c_proj.weight",
      "resblocks.1.mlp.c_proj.bias", "ln_final.weight", "ln_final.bias"};
  for (const auto& n : want_some) EXPECT_TRUE(names.count(n)) << n;
  EXPECT_EQ(names.size(), 4u + 2u * 12u);
  EXPECT_EQ(m->buffers().size(), 0u);  // the causal mask is a cache, not state
  auto params = m->named_parameters();
  EXPECT_EQ(params["resblocks.0.attn.in_proj_weight"].sizes(), (std::vector<int64_t>{96, 32}));
  EXPECT_EQ(params["positional_embedding"].sizes(), (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(params["resblocks.0.mlp.c_fc.weight"].sizes(), (std::vector<int64_t>{128, 32}));
}

TEST(TextTransformer, InitialisationScalesFollowClip) {
  TextConfig c = tiny();
  c.vocab_size = 2048;
  c.context_length = 77;
  c.width = 64;
  c.layers = 2;
  torch::manual_seed(1);
  TextTransformer m(c);
  auto p = m->named_parameters();
  auto std_of = [&](const std::string& n) { return p[n].std().item<double>(); };
  const double W = 64;
  EXPECT_NEAR(std_of("token_embedding.weight"), 0.02, 0.02 * 0.05);
  EXPECT_NEAR(std_of("positional_embedding"), 0.01, 0.01 * 0.1);
  EXPECT_NEAR(std_of("resblocks.0.attn.in_proj_weight"), 1 / std::sqrt(W), 0.1 / std::sqrt(W));
  const double proj = 1 / std::sqrt(W) / std::sqrt(2.0 * 2);
  EXPECT_NEAR(std_of("resblocks.0.attn.out_proj.weight"), proj, 0.1 * proj);
  EXPECT_NEAR(std_of("resblocks.1.mlp.c_proj.weight"), proj, 0.1 * proj);
  EXPECT_NEAR(std_of("resblocks.1.mlp.c_fc.weight"), 1 / std::sqrt(2 * W), 0.1 / std::sqrt(2 * W));
  EXPECT_EQ(p["resblocks.0.attn.in_proj_bias"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(p["resblocks.0.attn.out_proj.bias"].abs().max().item<double>(), 0.0);
}

TEST(TextTransformer, OutputShapesAndFirstEotPooling) {
  torch::manual_seed(2);
  TextTransformer m(tiny());
  m->eval();
  torch::NoGradGuard ng;
  // Row 0: EOT at 3, zero padding. Row 1: EOT at 5 then more tokens incl. ids > EOT and a
  // second EOT at 9. Row 2: EOT at the last position.
  auto ids = torch::stack({row({39, 5, 6, 40, 0, 0, 0, 0, 0, 0, 0, 0}),
                           row({39, 7, 8, 9, 10, 40, 63, 50, 41, 40, 62, 1}),
                           row({39, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 40})});
  auto pooled = m->forward(ids);
  auto tokens = m->forward_tokens(ids);
  ASSERT_EQ(pooled.sizes(), (std::vector<int64_t>{3, 32}));
  ASSERT_EQ(tokens.sizes(), (std::vector<int64_t>{3, 12, 32}));
  EXPECT_TRUE(torch::equal(pooled[0], tokens[0][3]));
  EXPECT_TRUE(torch::equal(pooled[1], tokens[1][5]));
  EXPECT_TRUE(torch::equal(pooled[2], tokens[2][11]));
  EXPECT_FALSE(torch::allclose(pooled[1], tokens[1][9]));  // not the second EOT

  // Changing everything after the first EOT (ids above EOT, another EOT) leaves the pooled
  // feature unchanged (causal mask) although later token outputs change.
  auto ids2 = ids.clone();
  ids2[1].slice(0, 6) = row({40, 40, 63, 1, 2, 3});
  auto pooled2 = m->forward(ids2);
  EXPECT_TRUE(torch::allclose(pooled2, pooled, 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(m->forward_tokens(ids2)[1][8], tokens[1][8]));
}

TEST(TextTransformer, CausalMaskHidesLaterTokensAndIsReusedAcrossLengths) {
  torch::manual_seed(3);
  TextTransformer m(tiny());
  torch::NoGradGuard ng;
  auto ids = torch::randint(0, 64, {2, 16}, torch::kLong);
  auto full = m->forward_tokens(ids);
  auto ids2 = ids.clone();
  ids2.select(1, 6).fill_(17);
  ids2.select(1, 6)[0] = 18;
  auto full2 = m->forward_tokens(ids2);
  EXPECT_TRUE(torch::allclose(full2.slice(1, 0, 6), full.slice(1, 0, 6), 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(full2.slice(1, 6, 7), full.slice(1, 6, 7)));
  // A shorter input (cached mask sliced to [8, 8]) gives the prefix of the longer one.
  auto short_ = m->forward_tokens(ids.slice(1, 0, 8));
  EXPECT_TRUE(torch::allclose(short_, full.slice(1, 0, 8), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(m->forward_tokens(ids), full));
  // Another dtype gets its own mask.
  m->to(torch::kDouble);
  auto dbl = m->forward_tokens(ids);
  EXPECT_EQ(dbl.scalar_type(), torch::kDouble);
  EXPECT_TRUE(torch::allclose(dbl.to(torch::kFloat), full, 1e-4, 1e-5));

  // Without the causal mask, earlier positions do see the change.
  TextConfig c = tiny();
  c.causal = false;
  TextTransformer bi(c);
  auto b1 = bi->forward_tokens(ids), b2 = bi->forward_tokens(ids2);
  EXPECT_FALSE(torch::allclose(b1.slice(1, 0, 6), b2.slice(1, 0, 6)));
}

TEST(TextTransformer, BadInputsThrowClearErrors) {
  TextTransformer m(tiny());
  auto good = row({39, 1, 40, 0}).unsqueeze(0);
  expect_error([&] { m->forward(torch::stack({row({39, 1, 40, 0}), row({39, 1, 2, 0})})); },
               "no EOT token (40): rows 1");
  expect_error([&] { m->forward(torch::zeros({1, 17}, torch::kLong)); },
               "sequence length 17 exceeds context_length 16");
  expect_error([&] { m->forward(good.to(torch::kInt)); }, "ids must be int64");
  expect_error([&] { m->forward(good[0]); }, "ids must be [B, L]");
  expect_error([&] { m->forward(torch::zeros({1, 0}, torch::kLong)); }, "length 0");
  expect_error([&] { m->forward(row({39, 64, 40}).unsqueeze(0)); }, "token id 64 is outside");
  expect_error([&] { m->forward_tokens(row({39, -1, 40}).unsqueeze(0)); }, "token id -1 is outside");
  // forward_tokens does not need an EOT.
  EXPECT_EQ(m->forward_tokens(row({39, 1, 2}).unsqueeze(0)).sizes(),
            (std::vector<int64_t>{1, 3, 32}));
}

TEST(TextConfig, JsonRoundTripAndErrors) {
  TextConfig c = tiny();
  c.norm_eps = 1e-12;
  c.mlp_ratio = 2.0;
  c.causal = false;
  const auto j = c.to_json();
  const TextConfig back = TextConfig::from_json(j);
  EXPECT_EQ(back.to_json(), j);
  EXPECT_EQ(back.norm_eps, 1e-12);
  EXPECT_EQ(back.eot_token, 40);
  EXPECT_FALSE(back.causal);
  EXPECT_EQ(back.mlp_width(), 64);
  // Missing fields take the defaults.
  const TextConfig d = TextConfig::from_json(nlohmann::json{{"width", 256}});
  EXPECT_EQ(d.width, 256);
  EXPECT_EQ(d.context_length, 77);
  EXPECT_EQ(d.eot_token, 49407);

  expect_error([] { TextConfig::from_json(nlohmann::json{{"widht", 3}}); }, "'widht'");
  expect_error([] { TextConfig::from_json(nlohmann::json{{"heads", "eight"}}); }, "'heads'");
  expect_error([] { TextConfig::from_json(nlohmann::json::array()); }, "JSON object");

  auto bad = [](auto edit, const std::string& needle) {
    TextConfig c = tiny();
    edit(c);
    expect_error([&] { c.validate(); }, needle);
    expect_error([&] { TextTransformer t(c); }, needle);  // the constructor validates too
  };
  bad([](TextConfig& c) { c.heads = 5; }, "not divisible by heads");
  bad([](TextConfig& c) { c.width = 0; }, "width must be positive");
  bad([](TextConfig& c) { c.layers = -1; }, "layers must be positive");
  bad([](TextConfig& c) { c.eot_token = 64; }, "eot_token 64 is outside");
  bad([](TextConfig& c) { c.sot_token = -2; }, "sot_token -2 is outside");
  bad([](TextConfig& c) { c.mlp_ratio = 0; }, "mlp_ratio");
  EXPECT_NO_THROW(TextConfig{}.validate());
}

}  // namespace

}  // namespace test_text_transformer
