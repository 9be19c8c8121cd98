#pragma once
// Pretraining and fine-tuning objectives of the METER-style model, as functions a training
// task calls (zdou0830/METER meter/modules/objectives.py compute_itm / compute_mlm /
// compute_vqa; HuggingFace DataCollatorForLanguageModeling for METER's MLM masking):
//   ITM: half the batch keeps its image (label 1), the other half gets another row's image
//        (label 0); cross-entropy over itm_score's 2 logits.
//   MLM: 15% of the text tokens (never SOT, EOT or padding) are predicted; of those 80% become
//        [MASK], 10% a random ordinary token, 10% stay; cross-entropy over the masked positions.
//   VQA: binary cross-entropy with logits against soft scores, summed over answers and averaged
//        over the batch (METER: mean BCE x number of answers, after ban-vqa).
// Random choices use std::mt19937_64 seeded by the caller (data::uniform01 / uniform_int,
// platform independent): the same seed gives the same batch everywhere, so a resumed run can
// replay it from (run seed, step).
#include <torch/types.h>

#include <cstdint>

namespace florence::vlp {

// ---------------------------------------------------------------------------------------------
// ITM
// ---------------------------------------------------------------------------------------------

struct ItmBatch {
  torch::Tensor image_index;  ///< [B] int64: row i is paired with image image_index[i] of the batch
  torch::Tensor labels;       ///< [B] int64: 1 = the row's own image (match), 0 = swapped in
  int64_t negatives = 0;      ///< rows with label 0
  int64_t unswappable = 0;    ///< rows drawn as negatives that kept their image (no other text in the batch)
};

/// Chooses ceil(B/2) rows (METER: B - B/2 negatives) uniformly at random and gives each one the
/// image of a uniformly drawn row whose text differs: text_labels[j] != text_labels[i]
/// (text_labels: [B] int64, equal for identical texts, e.g. the UniCL label of the pair), so a
/// swapped image is never a positive of that text. A drawn row with no such j in the batch
/// keeps its own image and label 1 and is counted in `unswappable` (logged at warn).
/// Apply with images.index_select(0, image_index). Throws florence::Error if text_labels is not
/// a 1-D int64 tensor.
ItmBatch make_itm_batch(const torch::Tensor& text_labels, uint64_t seed);

// ---------------------------------------------------------------------------------------------
// MLM
// ---------------------------------------------------------------------------------------------

struct MlmOptions {
  double mask_prob = 0.15;          ///< fraction of eligible tokens predicted (BERT; METER mlm_prob)
  double mask_token_prob = 0.8;     ///< of the predicted: replaced by [MASK]
  double random_token_prob = 0.1;   ///< of the predicted: a random ordinary token (the rest unchanged)
  int64_t sot = 49406;         ///< never masked
  int64_t eot = 49407;         ///< never masked; positions after the first EOT are padding
  int64_t mask_token = 49408;  ///< the [MASK] id (MeterConfig::mask_token())
  int64_t vocab = 49408;       ///< ordinary ids are [0, vocab) minus sot and eot
  /// Throws florence::Error naming the field if a probability is outside [0, 1], the two
  /// replacement probabilities sum above 1, or vocab has no ordinary token.
  void validate() const;
};

struct MlmBatch {
  torch::Tensor ids;     ///< [B, L] int64 input with the replacements
  torch::Tensor labels;  ///< [B, L] int64: the original id at predicted positions, -100 elsewhere
  int64_t predicted = 0; ///< positions with a label
  int64_t masked = 0, randomized = 0, kept = 0;  ///< how the predicted positions were replaced
};

/// Selects per row n = max(1, round(mask_prob * E)) of its E eligible positions (tokens before
/// the first EOT other than SOT/EOT ids; rows with E = 0 are left alone) without replacement -
/// Google BERT's create_pretraining_data.py count, which guarantees each row a target, where
/// HuggingFace draws Bernoulli(mask_prob) per token - then replaces each as MlmOptions says.
/// ids: [B, L] int64 (CPU or not; work happens on CPU, the results are on ids' device). Throws
/// florence::Error for a wrong shape/dtype, a row without EOT, or invalid options.
MlmBatch mask_tokens(const torch::Tensor& ids, const MlmOptions& opt, uint64_t seed);

// ---------------------------------------------------------------------------------------------
// Losses and accuracies
// ---------------------------------------------------------------------------------------------

/// Mean cross-entropy of logits [B, 2] against labels [B] int64 in {0, 1}.
torch::Tensor itm_loss(const torch::Tensor& logits, const torch::Tensor& labels);

/// Mean cross-entropy over positions with labels != -100. logits [..., V], labels [...] (e.g.
/// [B, L, V] and [B, L], or MeterModel::mlm_logits_at's [N, V] and [N]).
/// Throws florence::Error for other shapes or when no position has a label (0/0).
torch::Tensor mlm_loss(const torch::Tensor& logits, const torch::Tensor& labels);

/// Soft-score BCE: logits, targets [B, A] (targets in [0, 1]) ->
/// (1/B) sum_b sum_a BCEWithLogits(logits[b, a], targets[b, a]), a scalar.
torch::Tensor vqa_loss(const torch::Tensor& logits, const torch::Tensor& targets);

/// Counts for a metric accumulated over batches: accuracy = correct / total.
struct Accuracy {
  int64_t correct = 0, total = 0;
  double value() const { return total > 0 ? static_cast<double>(correct) / total : 0.0; }
  Accuracy& operator+=(const Accuracy& o) {
    correct += o.correct;
    total += o.total;
    return *this;
  }
};

/// argmax(logits [B, 2]) == labels [B].
Accuracy itm_accuracy(const torch::Tensor& logits, const torch::Tensor& labels);
/// argmax over V == label, at positions with labels != -100 (shapes as mlm_loss).
Accuracy mlm_accuracy(const torch::Tensor& logits, const torch::Tensor& labels);
/// METER's training-time VQA score (gadgets/my_metrics.py VQAScore) summed over rows:
/// sum_b targets[b, argmax_a logits[b, a]], the soft score of each predicted answer; divide by B.
double vqa_score_sum(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace florence::vlp
