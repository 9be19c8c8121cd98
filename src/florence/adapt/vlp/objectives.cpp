// ITM / MLM / VQA objectives; see objectives.h.
#include "florence/adapt/vlp/objectives.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "florence/core/error.h"
#include "florence/data/transforms.h"

namespace florence::vlp {

namespace {

constexpr int64_t kIgnore = -100;  // PyTorch cross_entropy's default ignore_index (HF, METER)

void check_1d_long(const torch::Tensor& t, const char* what) {
  if (!t.defined() || t.dim() != 1 || t.scalar_type() != torch::kLong) {
    throw Error(fmt::format("{} must be a 1-D int64 tensor", what));
  }
}

/// Uniformly chosen k distinct values of `pool` (partial Fisher-Yates), in draw order.
std::vector<int64_t> draw_without_replacement(std::vector<int64_t> pool, size_t k, std::mt19937_64& rng) {
  k = std::min(k, pool.size());
  for (size_t i = 0; i < k; ++i) {
    const size_t j = i + data::uniform_int(rng, pool.size() - i);
    std::swap(pool[i], pool[j]);
  }
  pool.resize(k);
  return pool;
}

}  // namespace

ItmBatch make_itm_batch(const torch::Tensor& text_labels, uint64_t seed) {
  check_1d_long(text_labels, "ITM text_labels");
  auto labels_cpu = text_labels.to(torch::kCPU).contiguous();
  const int64_t B = labels_cpu.size(0);
  const int64_t* lab = labels_cpu.data_ptr<int64_t>();
  std::vector<int64_t> index(B), match(B, 1), rows(B);
  std::iota(index.begin(), index.end(), 0);
  std::iota(rows.begin(), rows.end(), 0);
  std::mt19937_64 rng(seed);
  ItmBatch out;
  for (int64_t i : draw_without_replacement(rows, static_cast<size_t>(B - B / 2), rng)) {
    std::vector<int64_t> others;
    for (int64_t j = 0; j < B; ++j) {
      if (lab[j] != lab[i]) others.push_back(j);
    }
    if (others.empty()) {
      ++out.unswappable;
      continue;
    }
    index[i] = others[data::uniform_int(rng, others.size())];
    match[i] = 0;
    ++out.negatives;
  }
  if (out.unswappable > 0) {
    spdlog::warn("ITM: {} of {} rows drawn as negatives kept their image (every other row has the same text)",
                 out.unswappable, B);
  }
  const auto opt = torch::TensorOptions().dtype(torch::kLong);
  out.image_index = torch::tensor(index, opt).to(text_labels.device());
  out.labels = torch::tensor(match, opt).to(text_labels.device());
  return out;
}

void MlmOptions::validate() const {
  for (auto [name, p] : {std::pair<const char*, double>{"mask_prob", mask_prob},
                         {"mask_token_prob", mask_token_prob},
                         {"random_token_prob", random_token_prob}}) {
    if (!(p >= 0.0 && p <= 1.0)) throw Error(fmt::format("MLM options: {} must be in [0, 1], got {}", name, p));
  }
  if (mask_token_prob + random_token_prob > 1.0 + 1e-12) {
    throw Error(fmt::format("MLM options: mask_token_prob {} + random_token_prob {} exceed 1", mask_token_prob,
                            random_token_prob));
  }
  const int64_t specials = (sot >= 0 && sot < vocab) + (eot >= 0 && eot < vocab && eot != sot);
  if (vocab - specials < 1) throw Error(fmt::format("MLM options: vocab {} has no ordinary token", vocab));
}

MlmBatch mask_tokens(const torch::Tensor& ids, const MlmOptions& opt, uint64_t seed) {
  opt.validate();
  if (!ids.defined() || ids.dim() != 2 || ids.scalar_type() != torch::kLong) {
    throw Error("MLM: ids must be a 2-D int64 tensor [B, L]");
  }
  auto in = ids.to(torch::kCPU).contiguous();
  auto out_ids = in.clone();
  auto labels = torch::full_like(in, kIgnore);
  const int64_t B = in.size(0), L = in.size(1);
  const int64_t* src = in.data_ptr<int64_t>();
  int64_t* dst = out_ids.data_ptr<int64_t>();
  int64_t* lab = labels.data_ptr<int64_t>();
  // Ordinary ids: [0, vocab) without the specials; a draw r in [0, vocab - #specials) is shifted
  // past each special at or below it, in increasing order.
  std::vector<int64_t> specials;
  for (int64_t s : {opt.sot, opt.eot}) {
    if (s >= 0 && s < opt.vocab && std::find(specials.begin(), specials.end(), s) == specials.end()) specials.push_back(s);
  }
  std::sort(specials.begin(), specials.end());
  const uint64_t ordinary = static_cast<uint64_t>(opt.vocab) - specials.size();

  std::mt19937_64 rng(seed);
  MlmBatch out;
  std::vector<int64_t> missing_eot;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* row = src + b * L;
    std::vector<int64_t> eligible;
    bool has_eot = false;
    for (int64_t t = 0; t < L; ++t) {
      if (row[t] == opt.eot) {
        has_eot = true;
        break;
      }
      if (row[t] != opt.sot) eligible.push_back(t);
    }
    if (!has_eot) {
      missing_eot.push_back(b);
      continue;
    }
    if (eligible.empty() || opt.mask_prob <= 0.0) continue;
    const auto n = std::max<int64_t>(1, std::llround(opt.mask_prob * static_cast<double>(eligible.size())));
    for (int64_t t : draw_without_replacement(eligible, static_cast<size_t>(n), rng)) {
      lab[b * L + t] = row[t];
      ++out.predicted;
      const double u = data::uniform01(rng);
      if (u < opt.mask_token_prob) {
        dst[b * L + t] = opt.mask_token;
        ++out.masked;
      } else if (u < opt.mask_token_prob + opt.random_token_prob) {
        auto r = static_cast<int64_t>(data::uniform_int(rng, ordinary));
        for (int64_t s : specials) r += (r >= s);
        dst[b * L + t] = r;
        ++out.randomized;
      } else {
        ++out.kept;
      }
    }
  }
  if (!missing_eot.empty()) {
    throw Error(fmt::format("MLM: {} row(s) have no EOT token ({}), first: row {}", missing_eot.size(), opt.eot,
                            missing_eot.front()));
  }
  out.ids = out_ids.to(ids.device());
  out.labels = labels.to(ids.device());
  return out;
}

torch::Tensor itm_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
  if (logits.dim() != 2 || logits.size(1) != 2 || labels.dim() != 1 || labels.size(0) != logits.size(0)) {
    throw Error(fmt::format("ITM loss: logits must be [B, 2] and labels [B], got {} and {}", c10::str(logits.sizes()),
                            c10::str(labels.sizes())));
  }
  return torch::nn::functional::cross_entropy(logits, labels);
}

namespace {

void check_mlm_shapes(const torch::Tensor& logits, const torch::Tensor& labels) {
  if (logits.dim() < 2 || labels.dim() != logits.dim() - 1 || logits.sizes().slice(0, labels.dim()) != labels.sizes()) {
    throw Error(fmt::format("MLM: logits must be [..., V] and labels [...], got {} and {}", c10::str(logits.sizes()),
                            c10::str(labels.sizes())));
  }
}

}  // namespace

torch::Tensor mlm_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
  check_mlm_shapes(logits, labels);
  if ((labels != kIgnore).sum().item<int64_t>() == 0) throw Error("MLM loss: no position has a label");
  return torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnore));
}

torch::Tensor vqa_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  if (logits.dim() != 2 || logits.sizes() != targets.sizes()) {
    throw Error(fmt::format("VQA loss: logits and targets must both be [B, A], got {} and {}",
                            c10::str(logits.sizes()), c10::str(targets.sizes())));
  }
  // METER: F.binary_cross_entropy_with_logits (mean over B x A) * A.
  return torch::nn::functional::binary_cross_entropy_with_logits(logits, targets.to(logits.dtype())) *
         static_cast<double>(logits.size(1));
}

Accuracy itm_accuracy(const torch::Tensor& logits, const torch::Tensor& labels) {
  Accuracy a;
  a.total = labels.numel();
  a.correct = (logits.argmax(1) == labels).sum().item<int64_t>();
  return a;
}

Accuracy mlm_accuracy(const torch::Tensor& logits, const torch::Tensor& labels) {
  check_mlm_shapes(logits, labels);
  const auto has = labels != kIgnore;
  Accuracy a;
  a.total = has.sum().item<int64_t>();
  a.correct = ((logits.argmax(-1) == labels) & has).sum().item<int64_t>();
  return a;
}

double vqa_score_sum(const torch::Tensor& logits, const torch::Tensor& targets) {
  if (logits.dim() != 2 || logits.sizes() != targets.sizes()) {
    throw Error("VQA score: logits and targets must both be [B, A]");
  }
  return targets.gather(1, logits.argmax(1, /*keepdim=*/true)).sum().item<double>();
}

}  // namespace florence::vlp
