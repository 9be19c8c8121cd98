// Feature pyramid; see fpn.h.
#include "florence/adapt/detect/fpn.h"

#include <fmt/format.h>

#include "florence/core/error.h"

namespace florence::detect {

namespace F = torch::nn::functional;

namespace {

torch::nn::Conv2d xavier_conv(int64_t in, int64_t out, int64_t k, int64_t stride) {
  torch::nn::Conv2d c(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2));
  torch::NoGradGuard ng;
  torch::nn::init::kaiming_uniform_(c->weight, /*a=*/1.0);
  torch::nn::init::zeros_(c->bias);
  return c;
}

}  // namespace

FPNImpl::FPNImpl(const FPNOptions& o) : options(o) {
  const int64_t n = int64_t(o.in_channels.size());
  if (n == 0) throw Error("FPN: no input stages");
  const int64_t last = o.first_level + n - 1;
  if (o.max_level < last)
    throw Error(fmt::format("FPN: max_level {} is below the last stage's level {}", o.max_level, last));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t level = o.first_level + i;
    lateral.push_back(register_module(fmt::format("fpn_lateral{}", level), xavier_conv(o.in_channels[size_t(i)], o.out_channels, 1, 1)));
    output.push_back(register_module(fmt::format("fpn_output{}", level), xavier_conv(o.out_channels, o.out_channels, 3, 1)));
  }
  if (o.max_level > last) {
    auto top = register_module("top_block", std::make_shared<torch::nn::Module>("LastLevelP6P7"));
    for (int64_t level = last + 1; level <= o.max_level; ++level)
      extra.push_back(top->register_module(fmt::format("p{}", level), xavier_conv(o.out_channels, o.out_channels, 3, 2)));
  }
}

std::vector<torch::Tensor> FPNImpl::forward(const std::vector<torch::Tensor>& stages) {
  const size_t n = lateral.size();
  if (stages.size() != n) throw Error(fmt::format("FPN: expected {} stage maps, got {}", n, stages.size()));
  for (size_t i = 0; i < n; ++i) {
    if (stages[i].dim() != 4 || stages[i].size(1) != options.in_channels[i])
      throw Error(fmt::format("FPN: stage {} (level {}) must be [B, {}, H, W]", i, options.first_level + int64_t(i),
                              options.in_channels[i]));
  }
  std::vector<torch::Tensor> out(n);
  torch::Tensor inner = lateral[n - 1]->forward(stages[n - 1]);
  out[n - 1] = output[n - 1]->forward(inner);
  for (size_t i = n - 1; i-- > 0;) {
    auto lat = lateral[i]->forward(stages[i]);
    auto up = F::interpolate(inner, F::InterpolateFuncOptions()
                                        .size(std::vector<int64_t>{lat.size(2), lat.size(3)})
                                        .mode(torch::kNearest));
    inner = lat + up;
    out[i] = output[i]->forward(inner);
  }
  torch::Tensor prev = out.back();
  for (size_t e = 0; e < extra.size(); ++e) {
    prev = extra[e]->forward(e == 0 ? prev : torch::relu(prev));
    out.push_back(prev);
  }
  return out;
}

}  // namespace florence::detect
