// florence vqa train --checkpoint WEIGHTS | --random-init --vocab BPE  --data VQA_SET --out RUN_DIR
//                    [--steps N | --epochs N] [--blind] [--lr X] ... [--resume [RUN_DIR]] [--result FILE]
// florence vqa eval  --checkpoint RUN/model.safetensors --data VQA_SET [--split test] [--result FILE (RUN/eval/vqa_test.json)]
// florence vqa ask   --checkpoint RUN/model.safetensors IMAGE "question" [--top-k 5]
// VQA fine-tuning of the METER-style fusion model (adapt/vlp/vlp_train.h), the official VQA
// accuracy per question / answer type with the per-question-type prior baseline, and answers to
// one question. Front end over vlp::vqa_train / vqa_evaluate / vqa_ask.
#include <iostream>

#include "command.h"
#include "run_flags.h"
#include "florence/adapt/vlp/vlp_train.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/core/precision.h"

namespace {

using florence::vlp::VqaOptions;

void write_result(const std::string& path, const nlohmann::json& j) {
  if (path.empty()) return;
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  florence::core::write_text_atomic(p, j.dump(2) + "\n");
}

/// `vqa eval` writes beside its checkpoint by default, where `vqa train` put its own test numbers:
/// says so when the file it replaces described another evaluation (set, question count, prior).
void warn_if_replacing(const std::string& path, const nlohmann::json& now) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return;
  nlohmann::json old;
  try {
    old = florence::core::read_json_file(path);
  } catch (const std::exception&) {
    return;  // not ours to judge; it is replaced
  }
  auto describe = [](const nlohmann::json& j) {
    auto text = [](const nlohmann::json& o, const char* k) {
      return o.is_object() && o.contains(k) && (o.at(k).is_string() || o.at(k).is_number())
                 ? (o.at(k).is_string() ? o.at(k).get<std::string>() : o.at(k).dump())
                 : std::string("?");
    };
    const nlohmann::json none;
    const nlohmann::json& m = j.is_object() && j.contains("model") ? j.at("model") : none;
    return fmt::format("set '{}', {} questions, {}", text(j, "set"), text(m, "questions"),
                       j.is_object() && j.contains("prior") ? "with the prior baseline" : "no prior baseline");
  };
  const std::string was = describe(old), is = describe(now);
  if (was != is) std::cerr << "warning: replacing " << path << " (" << was << ") with this evaluation (" << is << ")\n";
}

void setup_vqa(CLI::App& root) {
  auto* grp = florence::cli::group(root, "vqa", "Visual question answering with the METER-style fusion adapter");

  auto* train = grp->add_subcommand("train", "Fine-tune the fusion model with a VQA head (soft-score BCE) on a VQA set");
  auto o = std::make_shared<VqaOptions>();
  auto resume = std::make_shared<std::string>();
  auto result = std::make_shared<std::string>();
  florence::cli::add_run_flags(train, *o);
  train->add_option("--resume", *resume, "Continue a run: RUN_DIR or checkpoint (without a value: --out)")->expected(0, 1);
  train->add_option("--result", *result, "Also write the result JSON here");
  train->callback([train, o, resume, result] {
    if (train->count("--steps") > 0 && o->steps < 1)
      throw florence::Error(fmt::format("--steps must be >= 1, got {}", o->steps));
    if (train->count("--epochs") > 0 && o->epochs < 1)
      throw florence::Error(fmt::format("--epochs must be >= 1, got {}", o->epochs));
    if (o->threads == 0) o->threads = florence::cli::requested_threads();
    VqaOptions run = *o;
    if (train->count("--resume") > 0) {
      const std::string target = resume->empty() ? o->out_dir : *resume;
      if (target.empty()) throw florence::Error("--resume without a value needs --out RUN_DIR");
      run = florence::cli::resume_merge(train, florence::vlp::load_vqa_options(target), *o);
      run.resume = target;
    }
    const auto r = florence::vlp::vqa_train(run);
    if (r.interrupted) {
      std::cout << fmt::format("stopped after step {}/{}; resume with: florence vqa train --resume {}\n", r.steps_done,
                               r.total_steps, r.run_dir);
      return;
    }
    write_result(*result, r.result);
    std::cout << fmt::format("trained {} steps ({:.0f} s){}; loss {:.4f} -> {:.4f} (mean of first / last 10)\n",
                             r.steps_done, r.seconds, run.blind ? ", blind (image tokens zeroed)" : "",
                             r.first_loss_mean, r.last_loss_mean);
    if (r.result.contains("val_vqa_accuracy"))
      std::cout << fmt::format("val VQA accuracy {:.2f}\n", r.result["val_vqa_accuracy"].get<double>());
    if (r.result.contains("test")) {
      std::cout << florence::vlp::format_vqa_result(r.result["test"], "test (" + run.test_split + ")")
                << florence::vlp::format_vqa_result(r.result["prior"], "prior baseline (most frequent answer per question type)");
    }
    std::cout << "weights " << r.final_weights << "\n";
  });

  auto* ev = grp->add_subcommand("eval", "Official VQA accuracy of a `vqa train` model on a VQA set split");
  auto eo = std::make_shared<florence::vlp::VqaEvalOptions>();
  auto eresult = std::make_shared<std::string>();
  ev->add_option("--checkpoint", eo->checkpoint, "A `vqa train` run's model.safetensors")->required();
  ev->add_option("--data", eo->data, "VQA set root (florence data build vqa)")->required();
  ev->add_option("--split", eo->split, "Split evaluated")->capture_default_str();
  ev->add_option("--train-split", eo->train_split, "Split of the prior baseline's answers ('' = no baseline)")
      ->capture_default_str();
  ev->add_option("--device", eo->device, "Torch device")->capture_default_str();
  florence::cli::add_adapter_precision(ev, &eo->precision);
  ev->add_option("--batch-size", eo->batch_size, "Questions per forward")->capture_default_str()->check(florence::cli::positive());
  ev->add_option("--max-questions", eo->max_questions, "Questions of the first images, whole images until N are reached (may pass N; 0 = all)")
      ->check(florence::cli::non_negative());
  ev->add_option("--predictions", eo->predictions, "Write VQA-format results [{question_id, answer}] here");
  ev->add_option("--result", *eresult,
                 "Write the result JSON here (default: CHECKPOINT's folder/eval/vqa_SPLIT.json, where `florence report` "
                 "reads it)");
  ev->callback([eo, eresult] {
    namespace fs = std::filesystem;
    const std::string out = eresult->empty()
                                ? (fs::path(eo->checkpoint).parent_path() / "eval" / ("vqa_" + eo->split + ".json")).string()
                                : *eresult;
    // Outputs checked before the evaluation: never over an input or each other.
    florence::cli::NamedPaths inputs = florence::cli::checkpoint_files("--checkpoint", eo->checkpoint);
    for (const std::string f : {"questions", "annotations"})
      inputs.push_back({"the split's " + f, fs::path(eo->data) / (eo->split + "_" + f + ".json")});
    if (!eo->predictions.empty()) {
      florence::cli::check_output("--predictions", eo->predictions, inputs);
      inputs.push_back({"--predictions", eo->predictions});
    }
    florence::cli::check_output("--result", out, inputs);
    const nlohmann::json r = florence::vlp::vqa_evaluate(*eo);
    std::cout << florence::vlp::format_vqa_result(r["model"], std::string("model") + (r["blind"].get<bool>() ? " (blind)" : ""));
    if (r.contains("prior"))
      std::cout << florence::vlp::format_vqa_result(r["prior"], "prior baseline (most frequent answer per question type)");
    warn_if_replacing(out, r);
    write_result(out, r);
    std::cout << "result " << out << "\n";
  });

  auto* ask = grp->add_subcommand("ask", "Answer a question about an image with a `vqa train` model");
  auto checkpoint = std::make_shared<std::string>();
  auto image = std::make_shared<std::string>();
  auto question = std::make_shared<std::string>();
  auto top_k = std::make_shared<int>(5);
  auto device = std::make_shared<std::string>("cpu");
  auto precision = std::make_shared<std::string>("fp32");
  ask->add_option("--checkpoint", *checkpoint, "A `vqa train` run's model.safetensors")->required();
  ask->add_option("image", *image, "Image file")->required();
  ask->add_option("question", *question, "The question")->required();
  ask->add_option("--top-k", *top_k, "Answers shown")->capture_default_str()->check(florence::cli::positive());
  ask->add_option("--device", *device, "Torch device")->capture_default_str();
  florence::cli::add_adapter_precision(ask, precision.get());
  ask->callback([=] {
    florence::vlp::VqaModel m = florence::vlp::load_vqa_model(*checkpoint, *device);
    m.autocast_bf16 = florence::adapter_autocast(*precision, m.device, "vqa ask");
    for (const auto& [answer, score] : florence::vlp::vqa_ask(m, *image, *question, *top_k))
      std::cout << fmt::format("{:.4f}  {}\n", score, answer);
  });
}

}  // namespace

FLORENCE_COMMAND(setup_vqa);
