#pragma once
// Internal to adapt/vlp: the VQA forward passes and predictions that `vqa train` (its validation
// and test evaluation, vlp_train.cpp) and `vqa eval` / `vqa ask` (vqa_eval.cpp) share. Not part
// of the installed API.
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "florence/adapt/vlp/meter.h"
#include "florence/adapt/vlp/vqa_data.h"
#include "florence/adapt/vlp/vqa_metric.h"

namespace florence::text {
class Tokenizer;
}

namespace florence::vlp::detail {

/// Image tokens [n, Li, C] for the questions `rows` (indices into split.items); each distinct image
/// goes through the tower once. blind: zeros of the same shape (the tower does not run).
torch::Tensor image_tokens_for(MeterModelImpl& m, const VqaSplit& split, const std::vector<int64_t>& rows, bool blind,
                               int image_size, const torch::Device& dev);

/// VQA logits [n, num_answers] of the questions `rows`; `ids` [N, L] are the split's token ids.
torch::Tensor question_logits(MeterModelImpl& m, const VqaSplit& split, const torch::Tensor& ids,
                              const std::vector<int64_t>& rows, bool blind, int image_size, const torch::Device& dev);

/// VQA logits [N, num_answers] (float32, CPU) of every question of the split, in items order, in
/// eval mode without gradients; batches of up to `batch_size` questions hold whole images.
torch::Tensor split_logits(MeterModelImpl& m, const VqaSplit& split, const torch::Tensor& ids, bool blind,
                           int image_size, const torch::Device& dev, int64_t batch_size);

/// The answer string of each row's highest logit.
std::vector<std::string> argmax_answers(const torch::Tensor& logits, const AnswerVocab& v);

/// The prior baseline's answer for each question of `s` (its question type's most common answer).
std::vector<std::string> prior_predictions(const PriorBaseline& p, const VqaSplit& s);

/// The result object of `vqa eval` (vqa_evaluate's shape, task "vqa-eval"), which `florence report`
/// reads from RUN/eval/vqa_SPLIT.json. `prior` may be null (no baseline).
nlohmann::json eval_record(const std::string& checkpoint, bool blind, bool bf16, const std::string& set,
                           const VqaSplit& split, const nlohmann::json& model, const nlohmann::json& prior);

/// Token ids [N, context_length] of the split's questions.
torch::Tensor tokenize_questions(const text::Tokenizer& tok, const VqaSplit& s, int context_length);

}  // namespace florence::vlp::detail
