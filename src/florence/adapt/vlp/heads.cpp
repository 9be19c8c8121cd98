// METER's heads; see heads.h.
#include "florence/adapt/vlp/heads.h"


namespace florence::vlp {

PoolerImpl::PoolerImpl(int64_t hidden) {
  dense = register_module("dense", torch::nn::Linear(hidden, hidden));
}

torch::Tensor PoolerImpl::forward(const torch::Tensor& h) { return torch::tanh(dense(h.select(1, 0))); }

ItmHeadImpl::ItmHeadImpl(int64_t in) { fc = register_module("fc", torch::nn::Linear(in, 2)); }

torch::Tensor ItmHeadImpl::forward(const torch::Tensor& x) { return fc(x); }

MlmHeadImpl::MlmHeadImpl(int64_t hidden, int64_t vocab, double norm_eps) {
  auto transform = register_module("transform", std::make_shared<torch::nn::Module>());
  transform_dense = transform->register_module("dense", torch::nn::Linear(hidden, hidden));
  transform_norm = transform->register_module(
      "LayerNorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden}).eps(norm_eps)));
  decoder = register_module("decoder", torch::nn::Linear(torch::nn::LinearOptions(hidden, vocab).bias(false)));
  bias = register_parameter("bias", torch::zeros({vocab}));
}

torch::Tensor MlmHeadImpl::forward(const torch::Tensor& h) {
  return decoder(transform_norm(torch::gelu(transform_dense(h)))) + bias;
}

torch::nn::Sequential make_vqa_classifier(int64_t in, int64_t answers) {
  return torch::nn::Sequential(torch::nn::Linear(in, in), torch::nn::LayerNorm(torch::nn::LayerNormOptions({in})),
                               torch::nn::GELU(), torch::nn::Linear(in, answers));
}

}  // namespace florence::vlp
