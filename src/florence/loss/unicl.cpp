#include "florence/loss/unicl.h"

#include <torch/torch.h>

#include <cstring>
#include <limits>

#include "florence/core/error.h"
#include "florence/core/precision.h"

namespace florence::loss {
namespace {

std::string shape_str(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

void check_features(const torch::Tensor& t, const char* name) {
  if (!t.defined()) throw Error(std::string("unicl: ") + name + " is undefined");
  if (t.dim() != 2)
    throw Error(std::string("unicl: ") + name + " must be 2-D [N, D], got shape " + shape_str(t));
  if (t.scalar_type() != torch::kFloat32 && t.scalar_type() != torch::kFloat64)
    throw Error(std::string("unicl: ") + name + " must be float32 or float64, got " +
                std::string(c10::toString(t.scalar_type())));
  if (t.size(0) == 0 || t.size(1) == 0)
    throw Error(std::string("unicl: ") + name + " is empty, shape " + shape_str(t));
}

void check_same(const torch::Tensor& a, const char* an, const torch::Tensor& b, const char* bn) {
  if (a.scalar_type() != b.scalar_type())
    throw Error(std::string("unicl: ") + an + " and " + bn + " differ in dtype (" +
                std::string(c10::toString(a.scalar_type())) + " vs " +
                std::string(c10::toString(b.scalar_type())) + ")");
  if (a.device() != b.device())
    throw Error(std::string("unicl: ") + an + " and " + bn + " are on different devices (" +
                a.device().str() + " vs " + b.device().str() + ")");
}

void check_labels(const torch::Tensor& labels, const char* name, int64_t n,
                  const torch::Tensor& like) {
  if (!labels.defined()) throw Error(std::string("unicl: ") + name + " is undefined");
  if (labels.dim() != 1 || labels.size(0) != n)
    throw Error(std::string("unicl: ") + name + " must have shape [" + std::to_string(n) +
                "], got " + shape_str(labels));
  if (labels.scalar_type() != torch::kInt64)
    throw Error(std::string("unicl: ") + name + " must be int64, got " +
                std::string(c10::toString(labels.scalar_type())));
  if (like.defined() && labels.device() != like.device())
    throw Error(std::string("unicl: ") + name + " is on " + labels.device().str() +
                " but the features are on " + like.device().str());
}

torch::Tensor check_tau(const torch::Tensor& tau) {
  if (!tau.defined()) throw Error("unicl: tau is undefined");
  if (tau.numel() != 1 || tau.dim() > 1)
    throw Error("unicl: tau must be a 0-d (or 1-element) tensor, got shape " + shape_str(tau));
  if (!tau.is_floating_point())
    throw Error("unicl: tau must be floating point, got " +
                std::string(c10::toString(tau.scalar_type())));
  return tau.reshape({});
}

// One direction of UniCL for rows vs columns:
//   -(1/n) sum_i (1/|P(i)|) sum_k targets[i,k] * log_softmax(logits[i, :])_k
// logits, targets: [n, N] of the same floating dtype. |P(i)| >= 1 because every row's own label
// appears among the columns (checked by construction of the callers).
torch::Tensor direction_term(const torch::Tensor& logits, const torch::Tensor& targets) {
  auto log_prob = torch::log_softmax(logits, /*dim=*/1);
  auto per_row = (targets * log_prob).sum(1) / targets.sum(1);
  return -per_row.mean();
}

torch::Tensor combine(const torch::Tensor& i2t, const torch::Tensor& t2i,
                      const UniCLOptions& options) {
  auto total = i2t + t2i;
  return options.average_directions ? total * 0.5 : total;
}

}  // namespace

torch::Tensor labels_to_targets(const torch::Tensor& row_labels, const torch::Tensor& col_labels,
                                torch::ScalarType dtype) {
  if (!row_labels.defined() || !col_labels.defined())
    throw Error("labels_to_targets: labels tensor is undefined");
  for (const auto* t : {&row_labels, &col_labels}) {
    if (t->dim() != 1)
      throw Error("labels_to_targets: labels must be 1-D, got shape " + shape_str(*t));
    if (t->scalar_type() != torch::kInt64)
      throw Error("labels_to_targets: labels must be int64, got " +
                  std::string(c10::toString(t->scalar_type())));
  }
  if (row_labels.device() != col_labels.device())
    throw Error("labels_to_targets: row and column labels are on different devices");
  if (!c10::isFloatingType(dtype))
    throw Error("labels_to_targets: dtype must be floating, got " +
                std::string(c10::toString(dtype)));
  return row_labels.unsqueeze(1).eq(col_labels.unsqueeze(0)).to(dtype);
}

torch::Tensor labels_to_targets(const torch::Tensor& labels, torch::ScalarType dtype) {
  return labels_to_targets(labels, labels, dtype);
}

torch::Tensor unicl_loss(const torch::Tensor& image_features, const torch::Tensor& text_features,
                         const torch::Tensor& labels, const torch::Tensor& tau,
                         const UniCLOptions& options) {
  NoAutocastGuard fp32;  // float32 even inside a --precision amp_bf16 step
  check_features(image_features, "image_features");
  check_features(text_features, "text_features");
  if (image_features.sizes() != text_features.sizes())
    throw Error("unicl: image_features " + shape_str(image_features) + " and text_features " +
                shape_str(text_features) + " must have the same shape [N, D]");
  check_same(image_features, "image_features", text_features, "text_features");
  check_labels(labels, "labels", image_features.size(0), image_features);
  auto t = check_tau(tau);

  // logits[i, j] = tau * u_i . v_j: rows are images (i2t), columns are texts (t2i).
  auto logits = t * torch::matmul(image_features, text_features.t());
  auto targets = labels_to_targets(labels, image_features.scalar_type());  // symmetric
  auto i2t = direction_term(logits, targets);
  auto t2i = direction_term(logits.t(), targets);
  return combine(i2t, t2i, options);
}

torch::Tensor unicl_loss_local(const torch::Tensor& local_image_features,
                               const torch::Tensor& local_text_features,
                               const torch::Tensor& global_image_features,
                               const torch::Tensor& global_text_features,
                               const torch::Tensor& global_labels, int64_t offset,
                               const torch::Tensor& tau, const UniCLOptions& options) {
  NoAutocastGuard fp32;  // float32 even inside a --precision amp_bf16 step
  check_features(local_image_features, "local_image_features");
  check_features(local_text_features, "local_text_features");
  check_features(global_image_features, "global_image_features");
  check_features(global_text_features, "global_text_features");
  if (local_image_features.sizes() != local_text_features.sizes())
    throw Error("unicl: local_image_features " + shape_str(local_image_features) +
                " and local_text_features " + shape_str(local_text_features) +
                " must have the same shape [n, D]");
  if (global_image_features.sizes() != global_text_features.sizes())
    throw Error("unicl: global_image_features " + shape_str(global_image_features) +
                " and global_text_features " + shape_str(global_text_features) +
                " must have the same shape [N, D]");
  if (local_image_features.size(1) != global_image_features.size(1))
    throw Error("unicl: local features have width " +
                std::to_string(local_image_features.size(1)) + " but global features " +
                std::to_string(global_image_features.size(1)));
  check_same(local_image_features, "local_image_features", local_text_features,
             "local_text_features");
  check_same(local_image_features, "local_image_features", global_image_features,
             "global_image_features");
  check_same(local_image_features, "local_image_features", global_text_features,
             "global_text_features");
  const int64_t n = local_image_features.size(0);
  const int64_t n_global = global_image_features.size(0);
  check_labels(global_labels, "global_labels", n_global, global_image_features);
  if (offset < 0 || n > n_global || offset > n_global - n)
    throw Error("unicl: local rows [" + std::to_string(offset) + ", " +
                std::to_string(offset + n) + ") are not inside the global batch of " +
                std::to_string(n_global) + " rows");
  auto t = check_tau(tau);

  const auto dtype = local_image_features.scalar_type();
  auto local_labels = global_labels.narrow(0, offset, n);
  auto targets = labels_to_targets(local_labels, global_labels, dtype);  // [n, N]
  auto logits_i2t = t * torch::matmul(local_image_features, global_text_features.t());
  auto logits_t2i = t * torch::matmul(local_text_features, global_image_features.t());
  return combine(direction_term(logits_i2t, targets), direction_term(logits_t2i, targets),
                 options);
}

int64_t text_label(std::string_view cleaned_text) {
  // FNV-1a, 64-bit (Fowler, Noll, Vo): xor the byte, then multiply by the FNV prime.
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : cleaned_text) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  h |= 0x8000000000000000ULL;  // text labels are negative: disjoint from class ids >= 0
  if (h == 0xffffffffffffffffULL) h = 0x8000000000000000ULL;  // keep -1 ("no class") free
  int64_t out;
  static_assert(sizeof(out) == sizeof(h));
  std::memcpy(&out, &h, sizeof(out));
  return out;
}

torch::Tensor text_labels(const std::vector<std::string>& cleaned_texts) {
  auto out = torch::empty({static_cast<int64_t>(cleaned_texts.size())}, torch::kInt64);
  auto* p = out.data_ptr<int64_t>();
  for (size_t i = 0; i < cleaned_texts.size(); ++i) p[i] = text_label(cleaned_texts[i]);
  return out;
}

}  // namespace florence::loss
