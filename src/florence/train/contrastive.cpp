// Contrastive batches and the distributed UniCL loss; see contrastive.h.
#include "florence/train/contrastive.h"

#include "florence/core/error.h"
#include "florence/data/loader.h"
#include "florence/text/tokenizer.h"
#include "florence/train/prompts.h"

namespace florence::train {

ContrastiveBatch contrastive_batch(const data::Batch& batch, const text::Tokenizer& tokenizer, int context_length,
                                   int stage, uint64_t seed, int64_t epoch, int64_t batch_index, double tag_sampling,
                                   int rank, int world_size, const torch::Device& device) {
  const int64_t B = batch.size();
  if (world_size < 1 || B % world_size != 0)
    throw Error(fmt::format("internal: a batch of {} rows cannot be split over {} processes", B, world_size));
  std::vector<int64_t> class_labels(static_cast<size_t>(B));
  {
    auto acc = batch.labels.accessor<int64_t, 1>();
    for (int64_t i = 0; i < B; ++i) class_labels[size_t(i)] = acc[i];
  }
  // Texts and labels of the whole global batch (the same on every process); this process's rows.
  BatchTexts bt = make_batch_texts(batch.texts, class_labels, stage, seed, epoch, batch_index, tag_sampling);
  const int64_t n = B / world_size;
  ContrastiveBatch out;
  out.row0 = int64_t(rank) * n;
  const std::vector<std::string> mine(bt.texts.begin() + out.row0, bt.texts.begin() + out.row0 + n);
  out.ids = tokenizer.tokenize(mine, context_length).to(device);
  out.labels = torch::tensor(bt.labels, torch::kInt64).to(device);
  out.images = (world_size == 1 ? batch.images : batch.images.narrow(0, out.row0, n)).to(device);
  out.augmented = bt.augmented;
  out.tagged = bt.tagged;
  return out;
}

DistributedUniCL::DistributedUniCL(dist::DistContext& dist, loss::UniCLOptions options, bool local_loss)
    : dist_(&dist), options_(options), local_loss_(local_loss) {}

torch::Tensor DistributedUniCL::operator()(const torch::Tensor& u, const torch::Tensor& v, const torch::Tensor& labels,
                                           int64_t row0, const torch::Tensor& tau) const {
  if (!dist_->distributed()) return loss::unicl_loss(u, v, labels, tau, options_);
  const int64_t D = u.size(1);
  torch::Tensor uv = dist::gather_with_grad(*dist_, torch::cat({u, v}, 1));
  torch::Tensor U = uv.narrow(1, 0, D), V = uv.narrow(1, D, v.size(1));
  if (local_loss_) return loss::unicl_loss_local(u, v, U, V, labels, row0, tau, options_);
  return loss::unicl_loss(U, V, labels, tau, options_);
}

FeatureLoss DistributedUniCL::bind(const ContrastiveBatch& batch) const {
  return [this, labels = batch.labels, row0 = batch.row0](const torch::Tensor& u, const torch::Tensor& v,
                                                          const torch::Tensor& tau) {
    return (*this)(u, v, labels, row0, tau);
  };
}

}  // namespace florence::train
