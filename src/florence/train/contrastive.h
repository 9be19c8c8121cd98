#pragma once
// The contrastive (UniCL) training step's two halves that pretraining and retrieval fine-tuning
// share: the batch a process trains on, and the loss object that spans processes.
//
// Data parallelism (trainer.h): every process loads the same GLOBAL batch of B rows (so texts,
// prompt templates and labels are drawn identically everywhere) and computes the towers on its
// own B/W rows [rank*B/W, (rank+1)*B/W). The loss is UniCL over the global batch (open_clip's
// ClipLoss idea, open_clip/loss.py): this process's image and text features are gathered from
// every rank with gradient (dist::gather_with_grad), then either the whole [B, B] loss is computed
// on every rank (identical values), or, with `local_loss`, only this rank's rows against all
// columns (loss::unicl_loss_local, whose mean over ranks is the global loss). Once the gradients
// are averaged over ranks both give the single-process gradient.
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "florence/dist/dist.h"
#include "florence/loss/unicl.h"
#include "florence/train/grad_cache.h"

namespace florence::data {
struct Batch;
}
namespace florence::text {
class Tokenizer;
}

namespace florence::train {

/// What one process trains on in a contrastive step.
struct ContrastiveBatch {
  torch::Tensor images;   ///< [B/W, 3, S, S] this process's rows, on the device
  torch::Tensor ids;      ///< [B/W, L] int64 token ids of those rows' texts, on the device
  torch::Tensor labels;   ///< [B] int64 UniCL labels of the GLOBAL batch, on the device
  int64_t row0 = 0;       ///< first global row of this process
  int64_t augmented = 0;  ///< rows (of the global batch) whose text became a prompt template
  int64_t tagged = 0;     ///< rows whose text became one of its tags
};

/// Texts, labels and tokens of a loaded global batch (prompts.h make_batch_texts with the given
/// stage / seed / position / tag sampling), and this process's rows of it. Throws florence::Error
/// when the batch does not have rows * world_size rows.
ContrastiveBatch contrastive_batch(const data::Batch& batch, const text::Tokenizer& tokenizer, int context_length,
                                   int stage, uint64_t seed, int64_t epoch, int64_t batch_index, double tag_sampling,
                                   int rank, int world_size, const torch::Device& device);

/// UniCL over the global batch of a (possibly) data-parallel run; see the file comment.
class DistributedUniCL {
 public:
  DistributedUniCL(dist::DistContext& dist, loss::UniCLOptions options, bool local_loss);
  /// u, v: this process's features [n, D]; labels: global [B]; row0: this process's first row;
  /// tau: 0-d temperature. Single process: loss::unicl_loss(u, v, labels, tau).
  torch::Tensor operator()(const torch::Tensor& u, const torch::Tensor& v, const torch::Tensor& labels, int64_t row0,
                           const torch::Tensor& tau) const;
  /// The loss of one batch as a FeatureLoss for contrastive_backward (grad_cache.h).
  FeatureLoss bind(const ContrastiveBatch& batch) const;

 private:
  dist::DistContext* dist_;
  loss::UniCLOptions options_;
  bool local_loss_;
};

}  // namespace florence::train
