// VQA inference shared by training and evaluation (vqa_infer.h), VQA evaluation and questions
// (vlp_train.h).
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <unordered_map>

#include "florence/adapt/vlp/vlp_train.h"
#include "florence/adapt/vlp/vqa_infer.h"
#include "florence/core/checkpoint.h"
#include "florence/core/device.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/core/precision.h"
#include "florence/model/io.h"
#include "florence/model/run_artifacts.h"
#include "florence/text/tokenizer.h"

namespace florence::vlp {

namespace fs = std::filesystem;

namespace detail {

/// Image tokens for the questions `rows` (indices into split.items): the distinct images go
/// through the tower once; blind: zeros [n, Li, C].
torch::Tensor image_tokens_for(MeterModelImpl& m, const VqaSplit& split, const std::vector<int64_t>& rows, bool blind,
                               int image_size, const torch::Device& dev) {
  const int64_t n = int64_t(rows.size());
  if (blind) {
    const auto& c = m.config();
    return torch::zeros({n, image_tokens(c.vision_config(), image_size), c.towers.vision.num_features()},
                        torch::TensorOptions().device(dev));
  }
  std::vector<int64_t> distinct, which(rows.size());
  std::unordered_map<int64_t, int64_t> slot;
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t img = split.items[size_t(rows[i])].image;
    auto [it, fresh] = slot.emplace(img, int64_t(distinct.size()));
    if (fresh) distinct.push_back(img);
    which[i] = it->second;
  }
  const torch::Tensor imgs = split.images.index_select(0, torch::tensor(distinct, torch::kLong)).to(dev);
  return m.encode_image(imgs).index_select(0, torch::tensor(which, torch::kLong).to(dev));
}

torch::Tensor question_logits(MeterModelImpl& m, const VqaSplit& split, const torch::Tensor& ids,
                              const std::vector<int64_t>& rows, bool blind, int image_size, const torch::Device& dev) {
  const torch::Tensor idx = torch::tensor(rows, torch::kLong);
  torch::Tensor mask;
  const torch::Tensor text = m.encode_text(ids.index_select(0, idx).to(dev), &mask);
  return m.vqa_logits(m.fuse(text, mask, image_tokens_for(m, split, rows, blind, image_size, dev)));
}

torch::Tensor split_logits(MeterModelImpl& m, const VqaSplit& split, const torch::Tensor& ids, bool blind,
                           int image_size, const torch::Device& dev, int64_t batch_size) {
  const bool was_training = m.is_training();
  m.eval();
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> out;
  // Image by image, so each batch shares its images.
  std::vector<int64_t> rows;
  auto flush = [&] {
    if (rows.empty()) return;
    out.push_back(question_logits(m, split, ids, rows, blind, image_size, dev).to(torch::kCPU, torch::kFloat));
    rows.clear();
  };
  for (const auto& qs : split.by_image) {
    for (int64_t q : qs) rows.push_back(q);
    if (int64_t(rows.size()) >= batch_size) flush();
  }
  flush();
  if (was_training) m.train();
  // Back to items order.
  torch::Tensor all = torch::cat(out, 0);
  std::vector<int64_t> order;
  for (const auto& qs : split.by_image) order.insert(order.end(), qs.begin(), qs.end());
  torch::Tensor inv = torch::empty({int64_t(order.size())}, torch::kLong);
  for (size_t i = 0; i < order.size(); ++i) inv[order[i]] = int64_t(i);
  return all.index_select(0, inv);
}

std::vector<std::string> argmax_answers(const torch::Tensor& logits, const AnswerVocab& v) {
  const torch::Tensor best = logits.argmax(1).contiguous();
  std::vector<std::string> out;
  const int64_t* p = best.data_ptr<int64_t>();
  for (int64_t i = 0; i < best.size(0); ++i) out.push_back(v.answers.at(size_t(p[i])));
  return out;
}

std::vector<std::string> prior_predictions(const PriorBaseline& p, const VqaSplit& s) {
  std::vector<std::string> out;
  for (const auto& it : s.items) out.push_back(p.predict(it.question_type));
  return out;
}

nlohmann::json eval_record(const std::string& checkpoint, bool blind, bool bf16, const std::string& set,
                           const VqaSplit& split, const nlohmann::json& model, const nlohmann::json& prior) {
  // "set": the set folder's name (the report's set column), "data": the path as given.
  fs::path root = fs::path(set).lexically_normal();
  if (root.filename().empty()) root = root.parent_path();
  nlohmann::json r = {{"task", "vqa-eval"},
                      {"checkpoint", checkpoint},
                      {"blind", blind},
                      {"precision", bf16 ? "amp_bf16" : "fp32"},
                      {"set", root.filename().string()},
                      {"data", set},
                      {"split", split.split},
                      {"model", model},
                      {"skipped", split.skipped}};
  if (!prior.is_null()) r["prior"] = prior;
  return r;
}

torch::Tensor tokenize_questions(const text::Tokenizer& tok, const VqaSplit& s, int context_length) {
  std::vector<std::string> q;
  q.reserve(s.items.size());
  for (const auto& it : s.items) q.push_back(it.question);
  return tok.tokenize(q, context_length);
}
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Evaluation and questions
// ---------------------------------------------------------------------------------------------

VqaModel load_vqa_model(const std::string& weights, const std::string& device, const std::string& vocab) {
  if (!fs::is_regular_file(weights)) throw Error(fmt::format("checkpoint '{}' does not exist", weights));
  const model::RunArtifacts art = model::find_run_artifacts(weights, vocab);
  const nlohmann::json& side = art.sidecar;
  if (!side.is_object() || side.value("kind", "") != "vqa" || !side.contains("meter") || !side.contains("answers"))
    throw Error(fmt::format("'{}' is not a `florence vqa train` model (its sidecar has no kind \"vqa\" / meter / answers)",
                            weights));
  VqaModel m;
  m.weights = weights;
  m.device = parse_device(device);
  try {
    const MeterConfig cfg = MeterConfig::from_json(side["meter"]);
    m.answers = answer_vocab_from_list(side["answers"].get<std::vector<std::string>>(), model::sidecar_path(weights));
    if (int64_t(cfg.num_answers) != m.answers.size())
      throw Error(fmt::format("'{}': {} answers but a head of {}", weights, m.answers.size(), cfg.num_answers));
    m.blind = side.value("blind", false);
    const nlohmann::json pre = side.value("preprocess", nlohmann::json::object());
    m.image.image_size = pre.value("image_size", cfg.towers.vision.image_size);
    if (pre.contains("mean")) m.image.mean = pre["mean"].get<std::array<float, 3>>();
    if (pre.contains("std")) m.image.std = pre["std"].get<std::array<float, 3>>();
    m.model = MeterModel(cfg);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("'{}': bad sidecar: {}", model::sidecar_path(weights), e.what()));
  }
  try {
    core::load_state_dict(*m.model, core::load_safetensors(weights).tensors);
  } catch (const Error& e) {
    throw Error(fmt::format("loading '{}': {}", weights, e.what()));
  }
  if (art.vocab.empty())
    throw Error(fmt::format("no BPE vocabulary found for '{}'{}: pass --vocab FILE", weights,
                            art.vocab_problem.empty() ? std::string() : " (" + art.vocab_problem + ")"));
  m.tokenizer = std::make_shared<text::Tokenizer>(text::Tokenizer::from_file(art.vocab));
  m.model->to(m.device);
  m.model->eval();
  return m;
}

torch::Tensor vqa_logits(VqaModel& m, const VqaSplit& split, const torch::Tensor& ids, int64_t batch_size) {
  AutocastGuard autocast(m.autocast_bf16, m.device);  // split_logits returns float32
  return detail::split_logits(*m.model, split, ids, m.blind, m.image.image_size, m.device, batch_size);
}

nlohmann::json vqa_result_json(const VqaResult& r) {
  return {{"accuracy", r.overall},
          {"per_question_type", r.per_question_type},
          {"per_answer_type", r.per_answer_type},
          {"question_type_counts", r.question_type_counts},
          {"answer_type_counts", r.answer_type_counts},
          {"questions", r.per_question.size()}};
}

nlohmann::json vqa_evaluate(const VqaEvalOptions& o) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  if (o.data.empty()) throw Error("vqa eval: --data is required");
  if (o.batch_size < 1) throw Error("--batch-size must be >= 1");
  VqaModel m = load_vqa_model(o.checkpoint, o.device);
  m.autocast_bf16 = adapter_autocast(o.precision, m.device, "vqa eval");
  VqaImageOptions io = m.image;
  io.max_questions = o.max_questions;
  const VqaSplit s = load_vqa_split(o.data, o.split, io);
  const torch::Tensor ids = detail::tokenize_questions(*m.tokenizer, s, m.model->config().towers.text.context_length);
  const std::vector<std::string> pred = detail::argmax_answers(vqa_logits(m, s, ids, o.batch_size), m.answers);
  nlohmann::json prior;
  if (!o.train_split.empty()) {
    VqaImageOptions tio = m.image;
    const VqaSplit train = load_vqa_split(o.data, o.train_split, tio);
    prior = vqa_result_json(evaluate_vqa(s.questions(), detail::prior_predictions(prior_baseline(train), s)));
  }
  nlohmann::json r = detail::eval_record(o.checkpoint, m.blind, m.autocast_bf16, o.data, s,
                                         vqa_result_json(evaluate_vqa(s.questions(), pred)), prior);
  if (!o.predictions.empty()) {
    nlohmann::json p = nlohmann::json::array();
    for (size_t i = 0; i < s.items.size(); ++i) p.push_back({{"question_id", s.items[i].question_id}, {"answer", pred[i]}});
    if (fs::path(o.predictions).has_parent_path()) fs::create_directories(fs::path(o.predictions).parent_path());
    core::write_text_atomic(o.predictions, p.dump() + "\n");
  }
  r["seconds"] = std::chrono::duration<double>(Clock::now() - t0).count();
  return r;
}

std::vector<std::pair<std::string, double>> vqa_ask(VqaModel& m, const std::string& image_path,
                                                    const std::string& question, int top_k) {
  if (question.find_first_not_of(" \t\r\n") == std::string::npos) throw Error("vqa ask: the question is empty");
  if (top_k < 1) throw Error("vqa ask: --top-k must be >= 1");
  const torch::Tensor img = load_vqa_image(image_path, m.image).unsqueeze(0).to(m.device);
  const torch::Tensor ids = m.tokenizer->tokenize({question}, m.model->config().towers.text.context_length).to(m.device);
  torch::NoGradGuard ng;
  m.model->eval();
  AutocastGuard autocast(m.autocast_bf16, m.device);
  torch::Tensor mask;
  const torch::Tensor text = m.model->encode_text(ids, &mask);
  torch::Tensor tokens = m.model->encode_image(img);
  if (m.blind) tokens = torch::zeros_like(tokens);
  const torch::Tensor p =
      torch::sigmoid(m.model->vqa_logits(m.model->fuse(text, mask, tokens))[0].to(torch::kFloat)).to(torch::kCPU);
  const auto top = p.topk(std::min<int64_t>(top_k, p.size(0)));
  std::vector<std::pair<std::string, double>> out;
  for (int64_t i = 0; i < std::get<1>(top).size(0); ++i)
    out.emplace_back(m.answers.answers.at(size_t(std::get<1>(top)[i].item<int64_t>())),
                     std::get<0>(top)[i].item<double>());
  return out;
}

std::string format_vqa_result(const nlohmann::json& r, const std::string& title) {
  std::string s = fmt::format("{}: VQA accuracy {:.2f} ({} questions)\n", title, r.at("accuracy").get<double>(),
                              r.at("questions").get<int64_t>());
  for (const char* k : {"per_answer_type", "per_question_type"}) {
    s += std::string("  ") + (k[4] == 'a' ? "answer type  " : "question type") + ":";
    for (const auto& [t, v] : r.at(k).items()) s += fmt::format("  {} {:.2f}", t, v.get<double>());
    s += "\n";
  }
  return s;
}
}  // namespace florence::vlp
