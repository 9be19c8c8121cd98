// METER-style fusion model on Florence's towers; see meter.h. Structure read from
// zdou0830/METER meter/modules/meter_module.py (METERTransformerSS.__init__ / infer).
#include "florence/adapt/vlp/meter.h"

#include <sstream>

#include "florence/core/error.h"
#include "florence/model/io.h"

namespace florence::vlp {

torch::Tensor text_padding_mask(const torch::Tensor& ids, int64_t eot) {
  if (!ids.defined() || ids.dim() != 2 || ids.scalar_type() != torch::kLong) {
    throw Error("meter: text ids must be a 2-D int64 tensor [B, L]");
  }
  const int64_t B = ids.size(0), L = ids.size(1);
  auto pos = torch::arange(L, ids.options()).unsqueeze(0).expand({B, L});
  auto first = torch::where(ids == eot, pos, torch::full_like(pos, L)).amin(1, /*keepdim=*/true);  // [B, 1]
  if (B > 0) {
    auto missing = torch::nonzero(first.squeeze(1) == L).flatten().cpu();
    if (missing.numel() > 0) {
      std::ostringstream rows;
      for (int64_t i = 0; i < std::min<int64_t>(missing.numel(), 10); ++i) {
        rows << (i ? ", " : "") << missing[i].item<int64_t>();
      }
      if (missing.numel() > 10) rows << ", ...";
      throw Error(fmt::format("meter: {} text row(s) have no EOT token ({}): rows {}", missing.numel(), eot,
                              rows.str()));
    }
  }
  return pos <= first;
}

MeterModelImpl::MeterModelImpl(const MeterConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  const int64_t H = cfg_.hidden;
  text_transformer = register_module("text_transformer", text::TextTransformer(cfg_.text_config()));
  vit_model = register_module("vit_model", vision::SwinTransformer(cfg_.vision_config()));
  cross_modal_text_transform =
      register_module("cross_modal_text_transform", torch::nn::Linear(cfg_.towers.text.width, H));
  cross_modal_image_transform =
      register_module("cross_modal_image_transform", torch::nn::Linear(cfg_.towers.vision.num_features(), H));
  token_type_embeddings = register_module("token_type_embeddings", torch::nn::Embedding(2, H));
  auto image_list = register_module("cross_modal_image_layers", torch::nn::ModuleList());
  auto text_list = register_module("cross_modal_text_layers", torch::nn::ModuleList());
  for (int i = 0; i < cfg_.layers; ++i) {
    image_layers.emplace_back(cfg_.fusion_options());
    image_list->push_back(image_layers.back());
    text_layers.emplace_back(cfg_.fusion_options());
    text_list->push_back(text_layers.back());
  }
  cross_modal_image_pooler = register_module("cross_modal_image_pooler", Pooler(H));
  cross_modal_text_pooler = register_module("cross_modal_text_pooler", Pooler(H));
  if (cfg_.mlm_head) mlm_score = register_module("mlm_score", MlmHead(H, cfg_.mlm_vocab(), cfg_.norm_eps));
  if (cfg_.itm_head) itm_score = register_module("itm_score", ItmHead(2 * H));
  if (cfg_.num_answers > 0) vqa_classifier = register_module("vqa_classifier", make_vqa_classifier(2 * H, cfg_.num_answers));

  // METER applies objectives.init_weights to everything but the pretrained towers.
  for (auto& item : named_children()) {
    if (item.key() != "text_transformer" && item.key() != "vit_model") init_meter_weights(*item.value());
  }
}

torch::Tensor MeterModelImpl::encode_text(const torch::Tensor& ids, torch::Tensor* mask) {
  auto m = text_padding_mask(ids, cfg_.towers.text.eot_token);
  auto tokens = text_transformer->forward_tokens(ids, m);
  if (mask) *mask = m;
  return tokens;
}

torch::Tensor MeterModelImpl::encode_image(const torch::Tensor& images) {
  std::vector<torch::Tensor> stages;
  vit_model->forward_features(images, &stages);
  return stages.back().flatten(2).transpose(1, 2);  // [B, C, h, w] -> [B, h*w, C]
}

MeterOutput MeterModelImpl::fuse(const torch::Tensor& text_tokens, const torch::Tensor& text_mask,
                                 const torch::Tensor& image_tokens) {
  if (text_tokens.dim() != 3 || text_tokens.size(2) != cfg_.towers.text.width || image_tokens.dim() != 3 ||
      image_tokens.size(2) != cfg_.towers.vision.num_features() || text_tokens.size(0) != image_tokens.size(0)) {
    throw Error(fmt::format("meter: fuse needs text [B, Lt, {}] and image [B, Li, {}] tokens, got {} and {}",
                            cfg_.towers.text.width, cfg_.towers.vision.num_features(), c10::str(text_tokens.sizes()),
                            c10::str(image_tokens.sizes())));
  }
  const auto type_ids = [&](int64_t type) {
    return torch::full({1, 1}, type, torch::TensorOptions().dtype(torch::kLong).device(text_tokens.device()));
  };
  auto x = cross_modal_text_transform(text_tokens) + token_type_embeddings(type_ids(0));
  auto y = cross_modal_image_transform(image_tokens) + token_type_embeddings(type_ids(1));
  const torch::Tensor no_mask;  // image tokens are all real
  for (size_t i = 0; i < text_layers.size(); ++i) {
    auto x1 = text_layers[i]->forward(x, y, text_mask, no_mask);
    auto y1 = image_layers[i]->forward(y, x, no_mask, text_mask);
    x = x1;
    y = y1;
  }
  MeterOutput out;
  out.text_feats = x;
  out.image_feats = y;
  out.text_mask = text_mask;
  auto pooled_text = cross_modal_text_pooler(x);
  auto pooled_image = cross_modal_image_pooler(y.mean(1, /*keepdim=*/true));
  out.cls_feats = torch::cat({pooled_text, pooled_image}, -1);
  return out;
}

MeterOutput MeterModelImpl::forward(const torch::Tensor& images, const torch::Tensor& ids) {
  if (images.dim() >= 1 && ids.dim() >= 1 && images.size(0) != ids.size(0)) {
    throw Error(fmt::format("meter: {} images but {} texts in one batch", images.size(0), ids.size(0)));
  }
  torch::Tensor mask;
  auto text = encode_text(ids, &mask);
  return fuse(text, mask, encode_image(images));
}

torch::Tensor MeterModelImpl::itm_logits(const MeterOutput& out) {
  if (!itm_score) throw Error("meter: this model has no ITM head (itm_head = false)");
  return itm_score(out.cls_feats);
}

torch::Tensor MeterModelImpl::mlm_logits(const MeterOutput& out) {
  if (!mlm_score) throw Error("meter: this model has no MLM head (mlm_head = false)");
  return mlm_score(out.text_feats);
}

torch::Tensor MeterModelImpl::mlm_logits_at(const MeterOutput& out, const torch::Tensor& labels,
                                            torch::Tensor* targets) {
  if (!mlm_score) throw Error("meter: this model has no MLM head (mlm_head = false)");
  if (labels.dim() != 2 || labels.size(0) != out.text_feats.size(0) || labels.size(1) != out.text_feats.size(1)) {
    throw Error(fmt::format("meter: MLM labels must be [{}, {}], got {}", out.text_feats.size(0),
                            out.text_feats.size(1), c10::str(labels.sizes())));
  }
  const auto where = labels.ne(-100);
  if (targets) *targets = labels.masked_select(where);
  return mlm_score(out.text_feats.index({where}));  // [N, H] -> [N, V]
}

torch::Tensor MeterModelImpl::vqa_logits(const MeterOutput& out) {
  if (!vqa_classifier) throw Error("meter: this model has no VQA head (num_answers = 0)");
  return vqa_classifier->forward(out.cls_feats);
}

// ---------------------------------------------------------------------------------------------
// Tower initialisation from a Florence checkpoint
// ---------------------------------------------------------------------------------------------

void load_towers(MeterModelImpl& model, const core::TensorMap& weights) {
  core::TensorMap image, text;
  std::vector<std::string> unexpected;
  auto strip = [](const std::string& key, const std::string& prefix, core::TensorMap& into, const torch::Tensor& t) {
    if (key.rfind(prefix, 0) != 0) return false;
    into[key.substr(prefix.size())] = t;
    return true;
  };
  for (const auto& [key, t] : weights) {
    if (strip(key, "image_encoder.", image, t) || strip(key, "text_encoder.", text, t)) continue;
    if (key == "image_projection" || key == "text_projection" || key == "logit_scale") continue;
    unexpected.push_back(key);
  }
  if (!unexpected.empty()) {
    std::string names;
    for (const auto& n : unexpected) names += (names.empty() ? "" : ", ") + n;
    throw Error("meter: load_towers: unexpected keys in the Florence weights: " + names);
  }
  // [MASK]: one more embedding row than the checkpoint, set to the mean of its rows.
  const int64_t V = model.config().towers.text.vocab_size;
  if (auto it = text.find("token_embedding.weight"); it != text.end()) {
    const auto& emb = it->second;
    if (emb.dim() != 2 || emb.size(0) != V) {
      throw Error(fmt::format("meter: load_towers: text_encoder.token_embedding.weight is {}, expected [{}, W]",
                              c10::str(emb.sizes()), V));
    }
    auto e = emb.to(torch::kFloat);
    it->second = torch::cat({e, e.mean(0, /*keepdim=*/true)}, 0);
  }
  try {
    core::load_state_dict(*model.vit_model, image);
  } catch (const Error& e) {
    throw Error(std::string("meter: load_towers: image_encoder: ") + e.what());
  }
  try {
    core::load_state_dict(*model.text_transformer, text);
  } catch (const Error& e) {
    throw Error(std::string("meter: load_towers: text_encoder: ") + e.what());
  }
}

void load_towers_from_checkpoint(MeterModelImpl& model, const std::string& path) {
  model::ModelSpec spec;
  spec.name = model.config().towers.name;
  spec.florence = model.config().towers;
  try {
    load_towers(model, model::read_weights(path, spec));
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

}  // namespace florence::vlp
