// Two-tower model, named configs, analytic counts, checkpoints and gradient flow.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/model/florence.h"
#include "florence/model/info.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_model {

using namespace florence;
namespace fs = std::filesystem;

namespace {

int64_t numel_of(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& kv : core::state_dict(m)) n += kv.second.numel();
  return n;
}

fs::path tmpdir(const std::string& name) {
  fs::path p = fs::path(FLORENCE_TEST_TMP) / "model" / name;
  fs::create_directories(p);
  return p;
}

torch::Tensor text_batch(const text::TextConfig& c, int64_t n, int64_t len) {
  torch::Tensor ids = torch::randint(1, 1000, {n, len}, torch::kLong);
  ids.select(1, 0).fill_(c.sot_token);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t eot = 2 + i % (len - 2);
    ids[i][eot] = c.eot_token;
    if (eot + 1 < len) ids[i].slice(0, eot + 1).zero_();
  }
  return ids;
}

}  // namespace

TEST(Registry, EveryNameResolvesAndValidates) {
  for (const auto& name : model::model_names()) {
    model::ModelSpec s = model::resolve_model(name);
    EXPECT_TRUE(s.florence || s.vision || s.text) << name;
    EXPECT_EQ(s.name, name);
  }
}

TEST(Registry, UnknownNameListsKnownOnes) {
  try {
    model::resolve_model("coswin-xxl");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("coswin-xxl"), std::string::npos);
    EXPECT_NE(msg.find("florence-t"), std::string::npos);
  }
}

TEST(Registry, JsonFileRoundTripAndStrictFields) {
  const fs::path dir = tmpdir("registry");
  for (const std::string name : {"florence-nano", "coswin-h", "clip-text-b"}) {
    const auto spec = model::resolve_model(name);
    const nlohmann::json j = model::spec_to_json(spec);
    const fs::path file = dir / (name + ".json");
    std::ofstream(file) << j.dump(2);
    const auto back = model::resolve_model(file.string());
    EXPECT_EQ(model::spec_to_json(back).dump(), j.dump()) << name;
  }
  nlohmann::json bad = model::spec_to_json(model::resolve_model("florence-nano"));
  bad["vision"]["windw_size"] = 7;
  std::ofstream(dir / "bad.json") << bad.dump();
  try {
    model::resolve_model((dir / "bad.json").string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("windw_size"), std::string::npos) << e.what();
  }
  std::ofstream(dir / "broken.json") << "{\"vision\": ";
  EXPECT_THROW(model::resolve_model((dir / "broken.json").string()), Error);
}

// Numbers outside a field's type are errors, not wrapped or undefined conversions (the fuzzer found
// "eot_token": 4.9e29 accepted through nlohmann's unchecked float-to-int cast; fuzz/regressions/model_config).
TEST(Registry, NumbersOutsideTheFieldTypeAreErrors) {
  const nlohmann::json good = model::spec_to_json(model::resolve_model("florence-nano"));
  const std::vector<std::pair<std::vector<std::string>, nlohmann::json>> cases = {
      {{"text", "eot_token"}, 4.9e29},      {{"text", "width"}, 3000000000LL}, {{"text", "layers"}, 2.5},
      {{"text", "context_length"}, -1e300}, {{"vision", "embed_dim"}, 1e30},   {{"vision", "depths"}, {1, 1e20, 2}}};
  for (const auto& [path, value] : cases) {
    nlohmann::json j = good;
    j[path[0]][path[1]] = value;
    EXPECT_THROW(model::spec_from_json(j, "case"), Error) << path[1] << " = " << value.dump();
  }
  nlohmann::json ok = good;
  ok["text"]["width"] = 128.0;  // an integral float is still accepted
  EXPECT_NO_THROW(model::spec_from_json(ok, "integral float"));
}

// The analytic counts (used by `florence info` without building the weights) must equal the
// instantiated modules exactly.
TEST(Info, AnalyticParamsEqualModules) {
  for (const std::string name : {"swin-t", "coswin-t"}) {
    auto spec = model::resolve_model(name);
    vision::SwinTransformer tower(*spec.vision);
    EXPECT_EQ(model::count_vision(*spec.vision, 224, 224).params, numel_of(*tower)) << name;
  }
  {
    auto t = *model::resolve_model("clip-text-b").text;
    text::TextTransformer tower(t);
    EXPECT_EQ(model::count_text(t).params, numel_of(*tower));
  }
  for (const std::string name : {"florence-nano", "florence-t"}) {
    auto c = model::resolve_florence_config(name);
    model::FlorenceModel m(c);
    const int64_t analytic = model::count_vision(c.vision, 224, 224).params + model::count_text(c.text).params +
                             model::count_heads(c);
    EXPECT_EQ(analytic, numel_of(*m)) << name;
  }
}

TEST(Info, SwinTHasItsPublishedSize) {
  auto v = *model::resolve_model("swin-t").vision;
  auto n = model::count_vision(v, 224, 224);
  // Swin paper Table 1: Swin-T 28M params (with the 1000-class head), 4.5G FLOPs (= MACs).
  EXPECT_EQ(n.params + 768 * 1000 + 1000, 28288354);
  EXPECT_NEAR(n.macs / 1e9, 4.5, 0.1);
}

TEST(Info, FlorenceHMatchesThePaper) {
  auto c = model::resolve_florence_config("florence-h");
  const double img = model::count_vision(c.vision, 224, 224).params;
  const double txt = model::count_text(c.text).params;
  const double total = img + txt + model::count_heads(c);
  // Florence §2.2 / §3: 637M CoSwin-H + 256M text transformer = 893M.
  EXPECT_LT(std::abs(img / 637e6 - 1.0), 0.03) << img;
  EXPECT_LT(std::abs(txt / 256e6 - 1.0), 0.03) << txt;
  EXPECT_LT(std::abs(total / 893e6 - 1.0), 0.03) << total;
}

TEST(Model, EmbeddingsAreNormalisedAndLogitsScaled) {
  torch::manual_seed(0);
  auto c = model::resolve_florence_config("florence-nano");
  model::FlorenceModel m(c);
  m->eval();
  torch::NoGradGuard ng;
  auto u = m->encode_image(torch::randn({3, 3, 64, 64}));
  auto v = m->encode_text(text_batch(c.text, 4, c.text.context_length));
  ASSERT_EQ(u.sizes(), (std::vector<int64_t>{3, c.embed_dim}));
  ASSERT_EQ(v.sizes(), (std::vector<int64_t>{4, c.embed_dim}));
  EXPECT_TRUE(torch::allclose(u.norm(2, -1), torch::ones({3}), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(v.norm(2, -1), torch::ones({4}), 1e-5, 1e-5));
  auto logits = m->forward(torch::randn({3, 3, 64, 64}), text_batch(c.text, 4, c.text.context_length));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 4}));
  EXPECT_NEAR(m->temperature().item<double>(), 1.0 / 0.07, 1e-3);
  m->logit_scale.fill_(10.0);  // exp(10) > 100: clamped
  EXPECT_DOUBLE_EQ(m->temperature().item<double>(), 100.0);
}

// Issue #2 parity item 4: one AdamW step changes every trainable parameter, and each one
// received a non-zero gradient (so no parameter is disconnected from the loss).
TEST(Model, OneAdamWStepChangesEveryParameter) {
  torch::manual_seed(1);
  auto c = model::resolve_florence_config("florence-nano");
  model::FlorenceModel m(c);
  m->train();
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : m->named_parameters()) before[p.key()] = p.value().detach().clone();
  torch::optim::AdamW opt(m->parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.0));
  const int64_t n = 4;
  // EOT at the last position in one row so every positional embedding row gets a gradient.
  torch::Tensor ids = text_batch(c.text, n, c.text.context_length);
  ids[0][c.text.context_length - 1] = c.text.eot_token;
  ids[0].slice(0, 1, c.text.context_length - 1).random_(1, 1000);
  auto logits = m->forward(torch::randn({n, 3, 64, 64}), ids);
  auto labels = torch::arange(n);
  auto loss = torch::nn::functional::cross_entropy(logits, labels) +
              torch::nn::functional::cross_entropy(logits.t(), labels);
  opt.zero_grad();
  loss.backward();
  for (const auto& p : m->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key() << " has no gradient";
    EXPECT_GT(p.value().grad().abs().max().item<double>(), 0.0) << p.key() << " has an all-zero gradient";
  }
  opt.step();
  for (const auto& p : m->named_parameters()) {
    EXPECT_FALSE(torch::equal(before[p.key()], p.value().detach())) << p.key() << " did not change";
  }
}

TEST(Checkpoint, SaveLoadRoundTripThroughSidecar) {
  torch::manual_seed(2);
  const fs::path dir = tmpdir("ckpt");
  auto spec = model::resolve_model("florence-nano");
  model::FlorenceModel a(*spec.florence);
  a->eval();
  const std::string path = (dir / "nano.safetensors").string();
  model::save_checkpoint(*a, spec, path);
  ASSERT_TRUE(fs::exists(dir / "nano.json"));
  auto spec_back = model::resolve_spec("", path);
  ASSERT_TRUE(spec_back.florence.has_value());
  model::FlorenceModel b = model::load_florence(spec_back, path);
  b->eval();
  torch::NoGradGuard ng;
  auto x = torch::randn({2, 3, 64, 64});
  auto ids = text_batch(spec.florence->text, 2, spec.florence->text.context_length);
  EXPECT_TRUE(torch::equal(a->encode_image(x), b->encode_image(x)));
  EXPECT_TRUE(torch::equal(a->encode_text(ids), b->encode_text(ids)));

  // bfloat16 storage: loads back within bf16 rounding.
  const std::string p16 = (dir / "nano_bf16.safetensors").string();
  model::save_checkpoint(*a, spec, p16, torch::kBFloat16);
  model::FlorenceModel c16 = model::load_florence(spec, p16);
  c16->eval();
  EXPECT_LT((a->encode_image(x) - c16->encode_image(x)).abs().max().item<double>(), 0.05);
  EXPECT_LT(fs::file_size(p16), fs::file_size(path) * 0.6);
}

TEST(Checkpoint, StrictLoadingNamesTheKey) {
  auto spec = model::resolve_model("florence-nano");
  model::FlorenceModel m(*spec.florence);
  core::TensorMap sd = core::state_dict(*m);
  sd.erase("logit_scale");
  sd["text_encoder.bogus"] = torch::zeros({1});
  sd["image_projection"] = torch::zeros({3, 3});
  try {
    core::load_state_dict(*m, sd);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("logit_scale"), std::string::npos) << msg;
    EXPECT_NE(msg.find("text_encoder.bogus"), std::string::npos) << msg;
    EXPECT_NE(msg.find("image_projection"), std::string::npos) << msg;
  }
}

// Every --model accepts a checkpoint's sidecar; a weights file or a binary file given as a config
// gets a clear error (no raw parse error quoting binary bytes); `info --checkpoint` reads the model
// as trained; `convert` refuses to overwrite the --model file with its sidecar.
TEST(Registry, SidecarsWeightsFilesAndBinaryConfigs) {
  const fs::path d = tmpdir("sidecar");
  model::FlorenceConfig cfg = model::resolve_florence_config("florence-nano");
  cfg.text.vocab_size = 4096;
  cfg.text.sot_token = 4094;
  cfg.text.eot_token = 4095;
  model::ModelSpec spec;
  spec.name = "florence-nano";
  spec.florence = cfg;
  spec.vision = cfg.vision;
  spec.text = cfg.text;
  model::FlorenceModel m(cfg);
  const std::string weights = (d / "model.safetensors").string();
  model::save_checkpoint(*m, spec, weights, torch::kFloat, {{"train_state", {{"step", 3}}}});
  const model::ModelSpec back = model::resolve_model((d / "model.json").string());
  ASSERT_TRUE(back.florence);
  EXPECT_EQ(back.florence->text.vocab_size, 4096);
  try {
    model::resolve_model(weights);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("is a weights file, not a config"), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.json"), std::string::npos) << msg;
  }
  {
    std::ofstream f(d / "garbage.json", std::ios::binary);
    f << '\x93' << "NUMPY" << '\0' << '\x01';
  }
  try {
    model::resolve_model((d / "garbage.json").string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not start with '{'"), std::string::npos) << e.what();
  }
  // The CLI: info on the sidecar and on the checkpoint give the trained size (4,096-token vocab).
  const std::string cli = FLORENCE_CLI;
  auto run = [&](const std::string& args) {
    const fs::path out = d / "out.txt";
    const int rc = std::system((cli + " " + args + " > '" + out.string() + "' 2>&1").c_str());
    std::ifstream in(out);
    std::stringstream ss;
    ss << in.rdbuf();
    return std::make_pair(rc, ss.str());
  };
  const auto [rc1, side_out] = run("info --json --model '" + (d / "model.json").string() + "'");
  const auto [rc2, ckpt_out] = run("info --json --checkpoint '" + weights + "'");
  ASSERT_EQ(rc1, 0) << side_out;
  ASSERT_EQ(rc2, 0) << ckpt_out;
  const auto js = nlohmann::json::parse(side_out), jc = nlohmann::json::parse(ckpt_out);
  EXPECT_EQ(js.at("total_params"), jc.at("total_params"));
  EXPECT_EQ(jc.at("total_params").get<int64_t>(), numel_of(*m));
  // convert refuses to write its sidecar over the --model file.
  const fs::path cfg_file = d / "conv.json";
  std::ofstream(cfg_file) << model::spec_to_json(spec).dump();
  const auto [rc3, conv_out] =
      run("convert '" + weights + "' '" + (d / "conv.safetensors").string() + "' --model '" + cfg_file.string() + "'");
  EXPECT_NE(rc3, 0);
  EXPECT_NE(conv_out.find("would replace your config"), std::string::npos) << conv_out;
  EXPECT_EQ(model::resolve_model(cfg_file.string()).florence->text.vocab_size, 4096);  // untouched
  EXPECT_FALSE(fs::exists(d / "conv.safetensors"));
}

}  // namespace test_model
