// Model loading, data-source resolution and batched encoding for the evaluation commands.
#include "florence/eval/encode.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "florence/core/device.h"
#include "florence/core/error.h"
#include "florence/core/json_get.h"
#include "florence/core/precision.h"
#include "florence/data/loader.h"
#include "florence/data/transforms.h"
#include "florence/data/webdataset.h"
#include "florence/model/io.h"
#include "florence/model/run_artifacts.h"
#include "florence/text/tokenizer.h"

namespace fs = std::filesystem;

namespace florence::eval {

nlohmann::json PreprocessOptions::to_json() const {
  nlohmann::json j{{"image_size", image_size}, {"batch_size", batch_size}, {"resize", "bicubic shorter side to floor(image_size / crop_pct), center crop"}};
  if (crop_pct) j["crop_pct"] = *crop_pct;
  if (mean) j["mean"] = *mean;
  if (std) j["std"] = *std;
  return j;
}

std::pair<std::array<float, 3>, std::array<float, 3>> named_normalization(const std::string& name) {
  if (name == "clip") return {data::kClipMean, data::kClipStd};
  if (name == "imagenet") return {data::kImageNetMean, data::kImageNetStd};
  throw Error("unknown normalization '" + name + "' (clip | imagenet)");
}

std::array<float, 3> parse_triple(const std::string& text, const std::string& what) {
  std::array<float, 3> out{};
  std::stringstream ss(text);
  std::string item;
  int n = 0;
  while (std::getline(ss, item, ',')) {
    if (n >= 3) throw Error(what + ": expected three comma-separated numbers, got '" + text + "'");
    try {
      size_t used = 0;
      out[n] = std::stof(item, &used);
      while (used < item.size() && item[used] == ' ') ++used;
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw Error(what + ": '" + item + "' is not a number (in '" + text + "')");
    }
    ++n;
  }
  if (n != 3) throw Error(what + ": expected three comma-separated numbers, got '" + text + "'");
  return out;
}

int64_t EvalModel::embed_dim() const { return spec.florence->embed_dim; }

double EvalModel::temperature() const {
  torch::NoGradGuard ng;
  return model->temperature().to(torch::kCPU, torch::kDouble).item<double>();
}

nlohmann::json EvalModel::describe() const {
  return {{"model", spec.name}, {"checkpoint", checkpoint}, {"embed_dim", embed_dim()},
          {"preprocess", preprocess.to_json()}, {"temperature", temperature()}, {"precision", precision}};
}

namespace {

std::array<float, 3> json_triple(const nlohmann::json& j, const std::string& what) {
  if (!j.is_array() || j.size() != 3) throw Error(what + " must be an array of three numbers");
  // Range checked (core/json_get.h): 1e300 is an error, not an infinity that makes every
  // embedding NaN.
  return core::json_get<std::array<float, 3>>(j, what);
}

}  // namespace

EvalModel load_eval_model(const LoadOptions& o) {
  EvalModel m;
  m.spec = model::resolve_spec(o.model, o.checkpoint);
  if (!m.spec.florence) throw Error("model '" + m.spec.name + "' is a single tower; evaluation needs a two-tower model");
  m.checkpoint = o.checkpoint;

  // What the run wrote: preprocessing and vocabulary the model was trained with.
  const model::RunArtifacts art = model::find_run_artifacts(o.checkpoint, o.vocab);
  const std::string& side_path = art.preprocess_origin;
  m.preprocess = o.preprocess;
  const nlohmann::json& pre = art.preprocess;
  try {
    if (m.preprocess.image_size <= 0)
      m.preprocess.image_size = pre.contains("image_size") ? pre["image_size"].get<int>() : m.spec.florence->vision.image_size;
    if (!m.preprocess.crop_pct) m.preprocess.crop_pct = pre.contains("crop_pct") ? pre["crop_pct"].get<double>() : 0.875;
    if (!m.preprocess.mean)
      m.preprocess.mean = pre.contains("mean") ? json_triple(pre["mean"], side_path + ": preprocess.mean") : data::kImageNetMean;
    if (!m.preprocess.std)
      m.preprocess.std = pre.contains("std") ? json_triple(pre["std"], side_path + ": preprocess.std") : data::kImageNetStd;
  } catch (const nlohmann::json::exception& e) {
    throw Error("checkpoint sidecar '" + side_path + "': bad preprocess entry: " + e.what());
  }
  if (m.preprocess.batch_size < 1) throw Error("--batch-size must be >= 1");
  // Validate the transform options early (throws florence::Error on bad values).
  data::TransformOptions to;
  to.image_size = m.preprocess.image_size;
  to.crop_pct = *m.preprocess.crop_pct;
  to.mean = *m.preprocess.mean;
  to.std = *m.preprocess.std;
  to.train = false;
  data::ImageTransform check{to};
  (void)check;

  const std::string& vocab = art.vocab;
  m.vocab_problem = art.vocab_problem;
  if (!vocab.empty() && o.vocab.empty()) spdlog::info("eval: vocabulary {} (from the checkpoint's run)", vocab);
  if (!vocab.empty()) {
    auto tok = std::make_shared<text::Tokenizer>(text::Tokenizer::from_file(vocab));
    auto& text_cfg = m.spec.florence->text;
    if (o.checkpoint.empty()) {
      // Random init: the text tower follows the vocabulary, as `pretrain --vocab` makes it.
      text_cfg.vocab_size = int(tok->vocab_size());
      text_cfg.sot_token = tok->sot_id();
      text_cfg.eot_token = tok->eot_id();
    } else if (tok->vocab_size() > text_cfg.vocab_size) {
      throw Error("vocabulary '" + vocab + "' has " + std::to_string(tok->vocab_size()) +
                  " tokens but the text tower of '" + m.spec.name + "' only " + std::to_string(text_cfg.vocab_size));
    } else if (tok->eot_id() != text_cfg.eot_token) {
      // The tower pools at its EOT id: with another one every text would fail at the first query.
      throw Error("vocabulary '" + vocab + "' ends texts with token " + std::to_string(tok->eot_id()) +
                  " but the text tower of '" + m.spec.name + "' expects EOT " + std::to_string(text_cfg.eot_token) +
                  ": pass the vocabulary the model was trained with (--vocab)");
    }
    m.tokenizer = tok;
  }
  m.context_length = m.spec.florence->text.context_length;

  m.device = parse_device(o.device);
  const Precision precision = resolve_precision(parse_precision(o.precision), m.device, "inference");
  m.precision = precision_name(precision);
  m.model = model::load_florence(m.spec, o.checkpoint);
  // The temperature stays float32 in bf16: bfloat16 keeps 3 significant digits (tau 14.286 -> 14.243).
  const torch::Tensor logit_scale = m.model->logit_scale.detach().clone();
  m.model->to(m.device, storage_dtype(precision));
  if (precision == Precision::kBf16) {
    torch::NoGradGuard ng;
    m.model->logit_scale.set_data(logit_scale.to(m.device));
  }
  m.model->set_autocast_bf16(precision == Precision::kAmpBf16);
  m.model->eval();
  spdlog::info("eval: model {} ({}), image size {}, crop_pct {}, tau {:.3f}, {}", m.spec.name,
               o.checkpoint.empty() ? std::string("random init") : o.checkpoint, m.preprocess.image_size,
               *m.preprocess.crop_pct, m.temperature(), m.precision);
  return m;
}

const text::Tokenizer& require_tokenizer(const EvalModel& m, const std::string& command) {
  if (!m.tokenizer)
    throw Error(command + " needs a BPE vocabulary: " +
                (m.vocab_problem.empty() ? std::string("the checkpoint does not name one") : m.vocab_problem) +
                "; pass --vocab FILE");
  return *m.tokenizer;
}

std::shared_ptr<data::SampleSource> open_source(const std::string& spec, const std::string& split) {
  const fs::path p(spec);
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    if (!split.empty() && fs::is_directory(p / split)) return data::ShardSource::from_spec((p / split).string());
    bool has_tar = false;
    for (const auto& e : fs::directory_iterator(p, ec))
      if (e.is_regular_file() && e.path().extension() == ".tar") has_tar = true;
    if (has_tar) return data::ShardSource::from_spec(spec);
    if (fs::exists(p / "summary.json"))
      throw Error("'" + spec + "' is a corpus root without a '" + split + "' split folder");
    return std::make_shared<data::ImageFolderSource>(spec);
  }
  const std::string ext = p.extension().string();
  if (ext == ".jsonl" || ext == ".json" || ext == ".tsv") return std::make_shared<data::ManifestSource>(spec);
  return data::ShardSource::from_spec(spec);
}

torch::Tensor encode_image_tensor(EvalModel& m, const torch::Tensor& images) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> out;
  const int64_t n = images.size(0), bs = m.preprocess.batch_size;
  for (int64_t i = 0; i < n; i += bs) {
    torch::Tensor chunk = images.slice(0, i, std::min(n, i + bs)).to(m.device);
    out.push_back(m.model->encode_image(chunk).to(torch::kCPU, torch::kFloat));
  }
  if (out.empty()) return torch::zeros({0, m.embed_dim()});
  return torch::cat(out, 0);
}

torch::Tensor encode_texts(EvalModel& m, const std::vector<std::string>& texts) {
  const text::Tokenizer& tok = require_tokenizer(m, "text encoding");
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> out;
  const int64_t n = int64_t(texts.size()), bs = m.preprocess.batch_size;
  for (int64_t i = 0; i < n; i += bs) {
    std::vector<std::string> chunk(texts.begin() + i, texts.begin() + std::min(n, i + bs));
    torch::Tensor ids;
    try {
      ids = tok.tokenize(chunk, m.context_length);
    } catch (const Error& e) {
      // Name the row of `texts` that fails (the tokenizer counts within the chunk).
      for (size_t r = 0; r < chunk.size(); ++r) {
        try {
          tok.tokenize({chunk[r]}, m.context_length);
        } catch (const Error& one) {
          throw Error("text row " + std::to_string(i + int64_t(r)) + ": " + one.what());
        }
      }
      throw Error("text rows " + std::to_string(i) + ".." + std::to_string(i + int64_t(chunk.size()) - 1) + ": " + e.what());
    }
    out.push_back(m.model->encode_text(ids.to(m.device)).to(torch::kCPU, torch::kFloat));
  }
  if (out.empty()) return torch::zeros({0, m.embed_dim()});
  return torch::cat(out, 0);
}

data::LoaderOptions eval_loader_options(const EvalModel& m, bool require_text) {
  data::LoaderOptions lo;
  lo.batch_size = m.preprocess.batch_size;
  lo.image_size = m.preprocess.image_size;
  lo.train = false;
  lo.crop_pct = *m.preprocess.crop_pct;
  lo.mean = *m.preprocess.mean;
  lo.std = *m.preprocess.std;
  lo.num_workers = m.preprocess.num_workers;
  lo.shuffle = false;
  lo.require_text = require_text;
  lo.context_length = m.context_length;
  lo.drop_last = false;
  return lo;
}

EncodedImages encode_source(EvalModel& m, std::shared_ptr<const data::SampleSource> source, bool require_text,
                            int64_t max_samples, bool with_meta) {
  if (!source) throw Error("encode_source: no source");
  data::Loader loader(source, eval_loader_options(m, require_text), nullptr);

  std::unordered_map<std::string, nlohmann::json> metas;
  if (with_meta) {
    data::SkipCounts ignore;  // the loader counts read-time skips itself
    // Metadata is joined to the loader's rows by key, so a key that repeats with different
    // metadata (e.g. two classes) would mislabel samples silently: refuse it.
    int64_t conflicts = 0;
    std::string first_conflict;
    for (size_t p = 0; p < source->num_parts(); ++p)
      source->read_part(p, [&](data::Sample& s) {
        auto [it, fresh] = metas.emplace(s.key, s.meta);
        if (!fresh && it->second != s.meta && conflicts++ == 0) first_conflict = s.key;
        return true;
      }, ignore);
    if (conflicts > 0)
      throw Error(fmt::format("eval: {} sample(s) in {} repeat a key with different metadata (first: '{}'); keys must be "
                              "unique within a data set for labels to be read",
                              conflicts, source->describe(), first_conflict));
  }

  EncodedImages out;
  std::vector<torch::Tensor> embeds;
  torch::NoGradGuard ng;
  loader.start_epoch(0);
  data::Batch b;
  int64_t rows = 0;
  while (loader.next(b)) {
    int64_t take = b.size();
    if (max_samples > 0) take = std::min(take, max_samples - rows);
    torch::Tensor imgs = b.images.slice(0, 0, take).to(m.device);
    embeds.push_back(m.model->encode_image(imgs).to(torch::kCPU, torch::kFloat));
    for (int64_t i = 0; i < take; ++i) {
      out.keys.push_back(b.keys[i]);
      out.texts.push_back(b.texts[i]);
      out.labels.push_back(b.labels[i].item<int64_t>());
      if (with_meta) {
        auto it = metas.find(b.keys[i]);
        out.metas.push_back(it == metas.end() ? nlohmann::json::object() : it->second);
      }
    }
    rows += take;
    if (max_samples > 0 && rows >= max_samples) break;
  }
  loader.stop();
  data::EpochStats st = loader.stats();
  out.skipped = st.skipped;
  out.read = st.read;
  out.embeds = embeds.empty() ? torch::zeros({0, m.embed_dim()}) : torch::cat(embeds, 0);
  spdlog::info("eval: encoded {} images from {} ({} skipped)", out.keys.size(), source->describe(), st.skipped_total());
  return out;
}

}  // namespace florence::eval
