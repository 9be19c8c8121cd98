#include "florence/model/florence.h"

#include <cmath>

#include "florence/core/error.h"
#include "florence/core/json_get.h"
#include "florence/core/precision.h"

namespace florence::model {

using nlohmann::json;

json FlorenceConfig::to_json() const {
  return json{{"name", name},
              {"embed_dim", embed_dim},
              {"logit_scale_init", logit_scale_init},
              {"logit_scale_max", logit_scale_max},
              {"vision", vision.to_json()},
              {"text", text.to_json()}};
}

FlorenceConfig FlorenceConfig::from_json(const json& j) {
  if (!j.is_object()) throw Error("model config must be a JSON object");
  FlorenceConfig c;
  for (const auto& [key, value] : j.items()) {
    try {
      if (key == "name") {
        c.name = core::json_get<std::string>(value, "model config field 'name'");
      } else if (key == "embed_dim") {
        c.embed_dim = core::json_get<int>(value, "model config field 'embed_dim'");
      } else if (key == "logit_scale_init") {
        c.logit_scale_init = core::json_get<double>(value, "model config field 'logit_scale_init'");
      } else if (key == "logit_scale_max") {
        c.logit_scale_max = core::json_get<double>(value, "model config field 'logit_scale_max'");
      } else if (key == "vision") {
        c.vision = vision::SwinConfig::from_json(value);
      } else if (key == "text") {
        c.text = text::TextConfig::from_json(value);
      } else {
        throw Error("unknown field '" + key + "' in model config");
      }
    } catch (const json::exception& e) {
      throw Error("model config field '" + key + "': " + e.what());
    }
  }
  c.validate();
  return c;
}

void FlorenceConfig::validate() const {
  if (embed_dim <= 0 || embed_dim > 16384) throw Error("model config: embed_dim must be in [1, 16384], got " + std::to_string(embed_dim));
  if (!(logit_scale_max > 0)) throw Error("model config: logit_scale_max must be positive");
  vision.validate();
  text.validate();
}

FlorenceModelImpl::FlorenceModelImpl(const FlorenceConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  image_encoder = register_module("image_encoder", vision::SwinTransformer(cfg_.vision));
  text_encoder = register_module("text_encoder", text::TextTransformer(cfg_.text));
  const int64_t c_img = cfg_.vision.num_features();
  const int64_t w = cfg_.text.width;
  // UniCL initialises both projections with trunc_normal(std=0.02).
  image_projection = register_parameter(
      "image_projection", torch::empty({c_img, cfg_.embed_dim}).normal_(0.0, 0.02).clamp_(-0.04, 0.04));
  text_projection = register_parameter(
      "text_projection", torch::empty({w, cfg_.embed_dim}).normal_(0.0, 0.02).clamp_(-0.04, 0.04));
  logit_scale = register_parameter("logit_scale", torch::full({}, cfg_.logit_scale_init));
}

namespace {

// Embeddings leave the model in float32 when it computes in 16 bits (bf16 weights or autocast):
// the normalisation, the similarities and the loss then run in float32.
torch::Tensor normalized_embedding(torch::Tensor f) {
  if (f.scalar_type() == torch::kBFloat16 || f.scalar_type() == torch::kHalf) f = f.to(torch::kFloat);
  return torch::nn::functional::normalize(f, torch::nn::functional::NormalizeFuncOptions().dim(-1));
}

// Pixels in the weights' dtype (bfloat16 under --precision bf16).
torch::Tensor as_weight_dtype(const torch::Tensor& images, torch::ScalarType weights) {
  return images.is_floating_point() && images.scalar_type() != weights ? images.to(weights) : images;
}

}  // namespace

torch::Tensor FlorenceModelImpl::encode_image(const torch::Tensor& images) {
  AutocastGuard autocast(autocast_bf16_, images.device());
  torch::Tensor f = image_encoder->forward_features(as_weight_dtype(images, image_projection.scalar_type()));
  return normalized_embedding(torch::matmul(f, image_projection));
}

torch::Tensor FlorenceModelImpl::image_features(const torch::Tensor& images) {
  AutocastGuard autocast(autocast_bf16_, images.device());
  return image_encoder->forward_features(as_weight_dtype(images, image_projection.scalar_type())).to(torch::kFloat);
}

torch::Tensor FlorenceModelImpl::encode_text(const torch::Tensor& ids) {
  AutocastGuard autocast(autocast_bf16_, ids.device());
  torch::Tensor f = text_encoder->forward(ids);
  return normalized_embedding(torch::matmul(f, text_projection));
}

torch::Tensor FlorenceModelImpl::temperature() const {
  return logit_scale.exp().clamp_max(cfg_.logit_scale_max);
}

torch::Tensor FlorenceModelImpl::forward(const torch::Tensor& images, const torch::Tensor& ids) {
  torch::Tensor u = encode_image(images);
  torch::Tensor v = encode_text(ids);
  return temperature() * torch::matmul(u, v.t());
}

}  // namespace florence::model
