#pragma once
// Training tasks of the METER-style adapter on the shared run layer (train/run.h), and the VQA
// evaluation / question answering of a trained model.
//
// `florence vlp pretrain` (vlp_pretrain): ITM + MLM on the image-text pairs of real corpora
//   (METER's pretraining objectives, Dou et al. 2022 §3.3). Per step and batch of B pairs:
//     * the image tower runs ONCE on the B images; its tokens serve both objectives (METER runs
//       the whole model once per objective; with dropout-free towers the result is the same and
//       the image tower's cost is halved);
//     * MLM: mask_tokens (15%, 80/10/10) of the texts, fused with their own images, cross-entropy
//       over the masked positions (mlm_logits_at);
//     * ITM: make_itm_batch swaps ceil(B/2) images for another row's image whose text differs
//       (text label = the exact text, as UniCL's); cross-entropy over itm_score;
//     * loss = MLM + ITM (METER sums its objectives' losses).
//   Random choices are seeded by (run seed, step), so a resumed run replays them. Evaluation at
//   the end (RUN/result.json): ITM accuracy, MLM accuracy and both losses on up to
//   max_eval_samples held-out pairs (the corpora's test split), with fixed seeds.
//
// `florence vqa train` (vqa_train): the fusion model with a VQA head, fine-tuned with METER's soft
//   score BCE (vqa_loss) on a VQA set (vqa_set.h). Batches hold the questions of consecutive
//   images of a (seed, epoch) permutation, and each distinct image of a batch goes through the
//   image tower once. `blind`: the question-only baseline of the same model (image tokens zeroed,
//   the image tower never runs). Evaluation: the official VQA accuracy (vqa_metric.h) overall, per
//   question type and per answer type on the test split, val accuracy at every epoch end
//   (metrics.jsonl "val_vqa_accuracy"), and the per-question-type prior baseline on the same split.
//
// Initial weights (--checkpoint): a Florence two-tower checkpoint (towers only: load_towers; the
//   fusion and heads are new), or a `vlp pretrain` run's weights (towers + fusion; heads the task
//   does not use are dropped, a VQA head is new). Without one: --random-init / --model with
//   --vocab (the no-pretraining baseline). The vocabulary and the preprocessing come from the
//   checkpoint's run (model/run_artifacts.h) unless given.
//
// Checkpoint sidecars (and RUN/model.json) carry "kind" ("vlp-pretrain" | "vqa"), "meter" (the
// MeterConfig JSON, so the model is rebuilt from the file alone), "vocab", "preprocess"
// {image_size, crop_pct 1, mean, std}, "init", and for VQA "answers" (label -> answer) and "blind".
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "florence/adapt/vlp/meter.h"
#include "florence/adapt/vlp/vqa_data.h"
#include "florence/adapt/vlp/vqa_metric.h"
#include "florence/train/options.h"
#include "florence/train/run.h"

namespace florence::text {
class Tokenizer;
}

namespace florence::vlp {

/// Options shared by both tasks: where the model comes from.
struct MeterInitFields {
  std::string model = "meter-nano";  ///< fusion config (name / JSON); the towers follow --checkpoint
  std::string checkpoint;            ///< Florence two-tower weights, or a `vlp pretrain` run's weights
  bool random_init = false;          ///< seeded random weights (the no-pretraining baseline)
  std::string vocab;                 ///< BPE merges file (default: the checkpoint's run)
  int image_size = 0;                ///< 0: the checkpoint run's image size, else the towers' config
  double lr_mult_fusion = 5.0;       ///< lr scale of the fusion layers (METER: 5)
};

/// `florence vlp pretrain` options: the engine's plus these. Defaults: lr 1e-4 (METER uses 1e-5
/// on its large pretrained towers; the nano towers and the new fusion take a larger step),
/// weight decay 0.01, betas (0.9, 0.98), eps 1e-8 (METER), clip 1, batch 32; warm-up the engine's
/// 5% (METER: 10%, --warmup-steps).
struct VlpPretrainOptions : train::TaskOptions<VlpPretrainOptions>, MeterInitFields {
  std::string data;                      ///< corpus roots with image-text pairs, comma-separated
  std::string train_split = "train", test_split = "test";
  double mlm_prob = 0.15;                ///< MLM: fraction of tokens predicted (BERT / METER)
  double lr_mult_head = 5.0;             ///< lr scale of the ITM / MLM heads (METER pretraining: 5)
  int64_t max_eval_samples = 1000;       ///< held-out pairs evaluated at the end (0 = all)

  VlpPretrainOptions();

 public:
  static constexpr const char* kWhat = "vlp pretrain options";  ///< names the struct in from_json errors

 private:
  friend struct train::TaskOptions<VlpPretrainOptions>;
  template <class S, class F>
  static void visit_fields(S& s, F& f);
};

/// `florence vqa train` options. Defaults: lr 1e-4, heads x 50 (METER's VQA multiplier), fusion
/// x 5, the rest as VlpPretrainOptions.
struct VqaOptions : train::TaskOptions<VqaOptions>, MeterInitFields {
  std::string data;                                            ///< VQA set root (vqa_set.h)
  std::string train_split = "train", val_split = "val", test_split = "test";  ///< "" = none (val/test)
  bool blind = false;                 ///< question-only baseline: image tokens zeroed
  double lr_mult_head = 50.0;         ///< lr scale of the VQA head (METER: 50)
  int64_t max_train_questions = 0;    ///< > 0: the questions of the first images up to this many
  int64_t max_eval_questions = 0;     ///< same for val / test

  VqaOptions();

 public:
  static constexpr const char* kWhat = "vqa options";  ///< names the struct in from_json errors

 private:
  friend struct train::TaskOptions<VqaOptions>;
  template <class S, class F>
  static void visit_fields(S& s, F& f);
};

/// Runs (or resumes) ITM + MLM pretraining. RunResult::result: {"task": "vlp-pretrain", "init",
/// "model", "weights", "steps", "train_loss" {first10, last10}, "eval": {"pairs", "itm_accuracy",
/// "itm_loss", "mlm_accuracy", "mlm_loss", "mlm_predicted"}, "data", "seconds"}. Throws
/// florence::Error for bad options (naming the flag), missing data / checkpoint / vocabulary, and
/// what run_task throws.
train::RunResult vlp_pretrain(const VlpPretrainOptions& options);

/// Runs (or resumes) VQA fine-tuning. RunResult::result: {"task": "vqa", "init", "blind", "model",
/// "weights", "steps", "train_loss", "answers", "val_vqa_accuracy", "test": vqa_eval_json,
/// "prior": vqa_eval_json of the per-question-type prior on the same split, "data", "seconds"}.
train::RunResult vqa_train(const VqaOptions& options);

/// The options a run was started with (RUN_DIR/config.json or a checkpoint sidecar). Throws
/// florence::Error when it is not a run of that kind.
VlpPretrainOptions load_vlp_pretrain_options(const std::string& run_dir_or_checkpoint);
VqaOptions load_vqa_options(const std::string& run_dir_or_checkpoint);

// ---------------------------------------------------------------------------------------------
// A trained VQA model: evaluation and questions
// ---------------------------------------------------------------------------------------------

struct VqaModel {
  MeterModel model{nullptr};
  AnswerVocab answers;
  std::shared_ptr<text::Tokenizer> tokenizer;
  VqaImageOptions image;
  bool blind = false;
  std::string weights;
  torch::Device device{torch::kCPU};
  /// vqa_logits / vqa_ask run the network under bfloat16 autocast (--precision amp_bf16;
  /// florence::adapter_autocast); logits and scores come back float32.
  bool autocast_bf16 = false;
};

/// Loads a `vqa train` model (weights + sidecar: "meter", "answers", "preprocess", "blind"; the
/// vocabulary from the run, or `vocab`). Throws florence::Error naming the file when it is not a
/// VQA checkpoint or does not load strictly.
VqaModel load_vqa_model(const std::string& weights, const std::string& device = "cpu", const std::string& vocab = "");

/// Logits [N, A] of questions `items` (indices into split.items), batched by `batch_size`
/// questions; every distinct image of a batch is encoded once (zeros when model.blind). Eval mode,
/// no gradient.
torch::Tensor vqa_logits(VqaModel& model, const VqaSplit& split, const torch::Tensor& ids, int64_t batch_size);

/// JSON of an evaluation: {"accuracy" (percent), "per_question_type", "per_answer_type",
/// "question_type_counts", "answer_type_counts", "questions"}.
nlohmann::json vqa_result_json(const VqaResult& r);

struct VqaEvalOptions {
  std::string checkpoint;  ///< a `vqa train` model
  std::string data;        ///< VQA set root
  std::string split = "test", train_split = "train";  ///< train_split: for the prior baseline ("" = none)
  std::string device = "cpu";
  std::string precision = "fp32";  ///< fp32 | amp_bf16 (florence::adapter_autocast)
  int64_t batch_size = 64;
  int64_t max_questions = 0;
  std::string predictions;  ///< "" = none; else VQA results JSON [{question_id, answer}] written here
};

/// Official VQA accuracy of a model on a split, with the prior baseline:
/// {"task": "vqa-eval", "checkpoint", "blind", "precision", "set" (the set folder's name), "data"
///  (its path), "split", "model": vqa_result_json, "prior": vqa_result_json (when train_split is
///  given), "skipped", "seconds"}. `vqa train` writes this object (without "seconds"; its "prior" also
///  has "answer_of_type") for its test split to RUN/eval/vqa_SPLIT.json, where `florence report`
///  reads it.
nlohmann::json vqa_evaluate(const VqaEvalOptions& options);

/// The top_k answers of one image file and question, with sigmoid scores (the model's
/// per-answer probability, as trained with BCE), best first. Throws florence::Error for an
/// unreadable image or an empty question.
std::vector<std::pair<std::string, double>> vqa_ask(VqaModel& model, const std::string& image_path,
                                                    const std::string& question, int top_k = 5);

/// Human-readable lines of a vqa_result_json (overall, per answer type, per question type).
std::string format_vqa_result(const nlohmann::json& r, const std::string& title);

// ---------------------------------------------------------------------------------------------
// Field tables
// ---------------------------------------------------------------------------------------------

template <class S, class F>
void init_fields(S& s, F& f) {
  using train::Field;
  f(Field{"model", "--model", "Fusion config (meter-nano | meter-t | meter-h | JSON); towers from --checkpoint"},
    s.model);
  f(Field{"checkpoint", "--checkpoint",
          "Initial weights: a Florence two-tower checkpoint (towers) or a `vlp pretrain` run's model.safetensors"},
    s.checkpoint);
  f(Field{"random_init", "--random-init", "Random weights (the no-pretraining baseline; needs --vocab without a checkpoint)"},
    s.random_init);
  f(Field{"vocab", "--vocab", "BPE merges file (default: the checkpoint's run)"}, s.vocab);
  f(Field{"image_size", "--image-size", "Input size in pixels (default: the checkpoint run's, else the towers')"},
    s.image_size);
  f(Field{"lr_mult_fusion", "--lr-mult-fusion", "Learning-rate multiplier of the co-attention fusion (METER: 5)",
          Field::kPositive},
    s.lr_mult_fusion);
}

template <class S, class F>
void VlpPretrainOptions::visit_fields(S& s, F& f) {
  using train::Field;
  init_fields(s, f);
  f(Field{"data", "--data", "Corpus roots with image-text pairs (split folders), comma-separated"}, s.data);
  f(Field{"train_split", "--train-split", "Training split folder"}, s.train_split);
  f(Field{"test_split", "--test-split", "Held-out split for the ITM / MLM evaluation ('' = none)"}, s.test_split);
  f(Field{"mlm_prob", "--mlm-prob", "MLM: fraction of text tokens predicted", Field::kProbability}, s.mlm_prob);
  f(Field{"lr_mult_head", "--lr-mult-head", "Learning-rate multiplier of the ITM / MLM heads (METER: 5)",
          Field::kPositive},
    s.lr_mult_head);
  f(Field{"max_eval_samples", "--max-eval-samples", "Held-out pairs evaluated (0 = all)", Field::kNonNegative},
    s.max_eval_samples);
}

template <class S, class F>
void VqaOptions::visit_fields(S& s, F& f) {
  using train::Field;
  init_fields(s, f);
  f(Field{"data", "--data", "VQA set root (florence data build vqa)"}, s.data);
  f(Field{"train_split", "--train-split", "Training split"}, s.train_split);
  f(Field{"val_split", "--val-split", "Validation split, accuracy at epoch ends ('' = none)"}, s.val_split);
  f(Field{"test_split", "--test-split", "Test split evaluated at the end ('' = none)"}, s.test_split);
  f(Field{"blind", "--blind", "Question-only baseline: image tokens zeroed (the image tower never runs)"}, s.blind);
  f(Field{"lr_mult_head", "--lr-mult-head", "Learning-rate multiplier of the VQA head (METER: 50)", Field::kPositive},
    s.lr_mult_head);
  f(Field{"max_train_questions", "--max-train-questions", "Questions of the first training images, whole images until N are reached (may pass N; 0 = all)",
          Field::kNonNegative},
    s.max_train_questions);
  f(Field{"max_eval_questions", "--max-eval-questions", "Same for val / test (0 = all)", Field::kNonNegative},
    s.max_eval_questions);
}

}  // namespace florence::vlp
