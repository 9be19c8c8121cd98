#include "florence/train/prompts.h"

#include <algorithm>
#include <cctype>
#include <random>

#include "florence/core/error.h"
#include "florence/data/transforms.h"
#include "florence/loss/unicl.h"
#include "florence/text/tokenizer.h"
#include "florence/train/seeding.h"

namespace florence::train {

const std::vector<std::string>& prompt_templates() {
  static const std::vector<std::string> t = {
      "a photo of a {}.",          "a drawing of a {}.",       "an icon of a {}.",
      "a cartoon of a {}.",        "a picture of a {}.",       "a sketch of a {}.",
      "a clip art image of a {}.", "an illustration of a {}.", "a rendering of the {}.",
      "a close-up picture of a {}.", "a small image of a {}.", "a simple drawing of the {}.",
      "an emoji of a {}.",         "a symbol showing a {}.",   "a low resolution photo of a {}.",
      "a black and white image of a {}.",
  };
  return t;
}

std::string fill_template(std::string_view tmpl, std::string_view name) {
  std::string out(tmpl);
  const size_t pos = out.find("{}");
  if (pos == std::string::npos) return out;
  out.replace(pos, 2, name);
  return out;
}

int count_words(std::string_view cleaned) {
  int n = 0;
  bool in_word = false;
  for (char c : cleaned) {
    if (c == ' ') {
      in_word = false;
    } else if (!in_word) {
      in_word = true;
      ++n;
    }
  }
  return n;
}

std::vector<std::string> text_tags(std::string_view cleaned) {
  std::vector<std::string> tags;
  auto add = [&](std::string_view piece) {
    while (!piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
    while (!piece.empty() && (piece.back() == ' ' || piece.back() == '.')) piece.remove_suffix(1);
    // A piece without a letter or digit (",", "...") is not a caption; bytes >= 0x80 count as letters.
    const bool wordy = std::any_of(piece.begin(), piece.end(), [](char c) {
      const auto u = static_cast<unsigned char>(c);
      return u >= 0x80 || std::isalnum(u);
    });
    if (!wordy) return;
    if (std::find(tags.begin(), tags.end(), piece) == tags.end()) tags.emplace_back(piece);
  };
  size_t start = 0;
  for (size_t i = 0; i + 1 < cleaned.size(); ++i) {
    if ((cleaned[i] == ',' || cleaned[i] == '.') && cleaned[i + 1] == ' ') {
      add(cleaned.substr(start, i - start));
      start = i + 2;
      ++i;
    }
  }
  add(cleaned.substr(std::min(start, cleaned.size())));
  return tags;
}

BatchTexts make_batch_texts(const std::vector<std::string>& raw_texts, const std::vector<int64_t>& class_labels,
                            int stage, uint64_t seed, int64_t epoch, int64_t batch_index, double tag_sampling) {
  if (raw_texts.size() != class_labels.size()) {
    throw Error(fmt::format("batch texts: {} texts but {} labels", raw_texts.size(), class_labels.size()));
  }
  if (stage < 1 || stage > 3) throw Error(fmt::format("batch texts: stage must be 1, 2 or 3, got {}", stage));
  if (!(tag_sampling >= 0.0 && tag_sampling <= 1.0)) {
    throw Error(fmt::format("batch texts: tag sampling must be a probability in [0, 1], got {}", tag_sampling));
  }
  const auto& templates = prompt_templates();
  BatchTexts out;
  out.texts.reserve(raw_texts.size());
  out.labels.reserve(raw_texts.size());
  for (size_t i = 0; i < raw_texts.size(); ++i) {
    const int64_t off = text::find_invalid_utf8(raw_texts[i]);
    if (off >= 0) throw Error(fmt::format("batch texts: row {} has invalid UTF-8 at byte {}", i, off));
    std::string cleaned = text::Tokenizer::clean(raw_texts[i]);
    const bool is_class = class_labels[i] >= 0;
    std::mt19937_64 rng(seed_mix({kTagPrompt, seed, uint64_t(epoch), uint64_t(batch_index), uint64_t(i)}));
    if (!is_class && stage == 1 && tag_sampling > 0.0) {
      // Draws only when tag sampling is on, so a run without it keeps its template draws.
      if (std::uniform_real_distribution<double>(0.0, 1.0)(rng) < tag_sampling) {
        std::vector<std::string> tags = text_tags(cleaned);  // split only for the rows that draw
        if (tags.size() > 1) {
          cleaned = std::move(tags[data::uniform_int(rng, tags.size())]);
          ++out.tagged;
        }
      }
    }
    const bool templated = is_class || (stage == 1 && count_words(cleaned) >= 1 && count_words(cleaned) <= 2);
    if (templated) {
      out.texts.push_back(fill_template(templates[data::uniform_int(rng, templates.size())], cleaned));
      ++out.augmented;
    } else {
      out.texts.push_back(cleaned);
    }
    out.labels.push_back(is_class ? class_labels[i] : loss::text_label(cleaned));
  }
  return out;
}

}  // namespace florence::train
