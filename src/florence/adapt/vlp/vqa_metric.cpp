// The official VQA accuracy and METER's soft targets; see vqa_metric.h. Behaviour read from
// GT-Vision-Lab/VQA vqaEval.py and zdou0830/METER meter/utils/write_vqa.py; written anew.
#include "florence/adapt/vlp/vqa_metric.h"

#include <unicode/locid.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <array>
#include <unordered_set>

#include "florence/core/error.h"
#include "florence/text/tokenizer.h"

namespace florence::vlp {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

constexpr std::array<char, 21> kPunct = {';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+',
                                         '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'};
constexpr int kMaxPeriodsRemoved = 32;  // re.sub(..., re.UNICODE): the flag lands in `count`

// vqaEval.py manualMap (number words) and contractions.
const std::unordered_map<std::string, std::string>& number_words() {
  static const std::unordered_map<std::string, std::string> m = {
      {"none", "0"}, {"zero", "0"}, {"one", "1"}, {"two", "2"},   {"three", "3"}, {"four", "4"},
      {"five", "5"}, {"six", "6"},  {"seven", "7"}, {"eight", "8"}, {"nine", "9"},  {"ten", "10"}};
  return m;
}

const std::unordered_map<std::string, std::string>& contractions() {
  static const std::unordered_map<std::string, std::string> m = {
      {"aint", "ain't"}, {"arent", "aren't"}, {"cant", "can't"}, {"couldve", "could've"},
      {"couldnt", "couldn't"}, {"couldn'tve", "couldn't've"}, {"couldnt've", "couldn't've"},
      {"didnt", "didn't"}, {"doesnt", "doesn't"}, {"dont", "don't"}, {"hadnt", "hadn't"},
      {"hadnt've", "hadn't've"}, {"hadn'tve", "hadn't've"}, {"hasnt", "hasn't"}, {"havent", "haven't"},
      {"hed", "he'd"}, {"hed've", "he'd've"}, {"he'dve", "he'd've"}, {"hes", "he's"}, {"howd", "how'd"},
      {"howll", "how'll"}, {"hows", "how's"}, {"Id've", "I'd've"}, {"I'dve", "I'd've"}, {"Im", "I'm"},
      {"Ive", "I've"}, {"isnt", "isn't"}, {"itd", "it'd"}, {"itd've", "it'd've"}, {"it'dve", "it'd've"},
      {"itll", "it'll"}, {"let's", "let's"}, {"maam", "ma'am"}, {"mightnt", "mightn't"},
      {"mightnt've", "mightn't've"}, {"mightn'tve", "mightn't've"}, {"mightve", "might've"},
      {"mustnt", "mustn't"}, {"mustve", "must've"}, {"neednt", "needn't"}, {"notve", "not've"},
      {"oclock", "o'clock"}, {"oughtnt", "oughtn't"}, {"ow's'at", "'ow's'at"}, {"'ows'at", "'ow's'at"},
      {"'ow'sat", "'ow's'at"}, {"shant", "shan't"}, {"shed've", "she'd've"}, {"she'dve", "she'd've"},
      {"she's", "she's"}, {"shouldve", "should've"}, {"shouldnt", "shouldn't"},
      {"shouldnt've", "shouldn't've"}, {"shouldn'tve", "shouldn't've"}, {"somebody'd", "somebodyd"},
      {"somebodyd've", "somebody'd've"}, {"somebody'dve", "somebody'd've"}, {"somebodyll", "somebody'll"},
      {"somebodys", "somebody's"}, {"someoned", "someone'd"}, {"someoned've", "someone'd've"},
      {"someone'dve", "someone'd've"}, {"someonell", "someone'll"}, {"someones", "someone's"},
      {"somethingd", "something'd"}, {"somethingd've", "something'd've"},
      {"something'dve", "something'd've"}, {"somethingll", "something'll"}, {"thats", "that's"},
      {"thered", "there'd"}, {"thered've", "there'd've"}, {"there'dve", "there'd've"},
      {"therere", "there're"}, {"theres", "there's"}, {"theyd", "they'd"}, {"theyd've", "they'd've"},
      {"they'dve", "they'd've"}, {"theyll", "they'll"}, {"theyre", "they're"}, {"theyve", "they've"},
      {"twas", "'twas"}, {"wasnt", "wasn't"}, {"wed've", "we'd've"}, {"we'dve", "we'd've"},
      {"weve", "we've"}, {"werent", "weren't"}, {"whatll", "what'll"}, {"whatre", "what're"},
      {"whats", "what's"}, {"whatve", "what've"}, {"whens", "when's"}, {"whered", "where'd"},
      {"wheres", "where's"}, {"whereve", "where've"}, {"whod", "who'd"}, {"whod've", "who'd've"},
      {"who'dve", "who'd've"}, {"wholl", "who'll"}, {"whos", "who's"}, {"whove", "who've"},
      {"whyll", "why'll"}, {"whyre", "why're"}, {"whys", "why's"}, {"wont", "won't"},
      {"wouldve", "would've"}, {"wouldnt", "wouldn't"}, {"wouldnt've", "wouldn't've"},
      {"wouldn'tve", "wouldn't've"}, {"yall", "y'all"}, {"yall'll", "y'all'll"}, {"y'allll", "y'all'll"},
      {"yall'd've", "y'all'd've"}, {"y'alld've", "y'all'd've"}, {"y'all'dve", "y'all'd've"},
      {"youd", "you'd"}, {"youd've", "you'd've"}, {"you'dve", "you'd've"}, {"youll", "you'll"},
      {"youre", "you're"}, {"youve", "you've"}};
  return m;
}

/// '\n' and '\t' -> ' ', then leading/trailing whitespace removed (the evaluate() preamble).
std::string clean(std::string_view s) {
  std::string out(s);
  std::replace(out.begin(), out.end(), '\n', ' ');
  std::replace(out.begin(), out.end(), '\t', ' ');
  size_t b = 0, e = out.size();
  while (b < e && is_space(out[b])) ++b;
  while (e > b && is_space(out[e - 1])) --e;
  return out.substr(b, e - b);
}

bool has_digit_comma_digit(std::string_view s) {
  for (size_t i = 1; i + 1 < s.size(); ++i) {
    if (s[i] == ',' && is_digit(s[i - 1]) && is_digit(s[i + 1])) return true;
  }
  return false;
}

}  // namespace

std::string vqa_process_punctuation(std::string_view in) {
  const bool comma_number = has_digit_comma_digit(in);
  std::string out(in);
  for (char p : kPunct) {
    const std::string after{p, ' '}, before{' ', p};
    const bool remove = comma_number || in.find(after) != std::string_view::npos ||
                        in.find(before) != std::string_view::npos;
    std::string next;
    next.reserve(out.size());
    for (char c : out) {
      if (c != p) next.push_back(c);
      else if (!remove) next.push_back(' ');
    }
    out.swap(next);
  }
  // Periods not followed by a digit, leftmost first, at most 32 (lookahead on the text as it is).
  std::string result;
  result.reserve(out.size());
  int removed = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const bool next_digit = i + 1 < out.size() && is_digit(out[i + 1]);
    if (out[i] == '.' && !next_digit && removed < kMaxPeriodsRemoved) {
      ++removed;
      continue;
    }
    result.push_back(out[i]);
  }
  return result;
}

std::string vqa_process_digit_article(std::string_view in) {
  if (const int64_t bad = text::find_invalid_utf8(in); bad >= 0) {
    throw Error(fmt::format("VQA answer is not valid UTF-8 (byte {}): '{}'", bad, std::string(in)));
  }
  // Lowercase as Python's str.lower: Unicode full case mapping, root locale.
  std::string lower;
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(in.data(), static_cast<int32_t>(in.size())));
  u.toLower(icu::Locale::getRoot()).toUTF8String(lower);

  std::vector<std::string> words;
  size_t i = 0;
  while (i < lower.size()) {
    while (i < lower.size() && is_space(lower[i])) ++i;
    size_t j = i;
    while (j < lower.size() && !is_space(lower[j])) ++j;
    if (j > i) {
      std::string w = lower.substr(i, j - i);
      if (auto it = number_words().find(w); it != number_words().end()) w = it->second;
      if (w != "a" && w != "an" && w != "the") words.push_back(std::move(w));
    }
    i = j;
  }
  std::string out;
  for (auto& w : words) {
    if (auto it = contractions().find(w); it != contractions().end()) w = it->second;
    if (!out.empty()) out.push_back(' ');
    out += w;
  }
  return out;
}

std::string normalize_answer(std::string_view text) {
  return vqa_process_digit_article(vqa_process_punctuation(clean(text)));
}

double vqa_accuracy(std::string_view prediction, const std::vector<std::string>& gt_answers) {
  if (gt_answers.empty()) throw Error("VQA accuracy: a question has no ground-truth answers");
  std::vector<std::string> gts;
  gts.reserve(gt_answers.size());
  for (const auto& a : gt_answers) gts.push_back(clean(a));
  std::string pred = clean(prediction);
  const bool all_same = std::all_of(gts.begin(), gts.end(), [&](const std::string& a) { return a == gts.front(); });
  if (!all_same) {
    for (auto& a : gts) a = vqa_process_digit_article(vqa_process_punctuation(a));
    pred = vqa_process_digit_article(vqa_process_punctuation(pred));
  }
  const auto matches = static_cast<int64_t>(std::count(gts.begin(), gts.end(), pred));
  double sum = 0;
  for (const auto& a : gts) {
    const int64_t others = matches - (a == pred ? 1 : 0);  // leave this annotator out
    sum += std::min(1.0, static_cast<double>(others) / 3.0);
  }
  return sum / static_cast<double>(gts.size());
}

VqaResult evaluate_vqa(const std::vector<VqaQuestion>& questions, const std::vector<std::string>& predictions) {
  if (questions.size() != predictions.size()) {
    throw Error(fmt::format("VQA evaluation: {} questions but {} predictions", questions.size(), predictions.size()));
  }
  if (questions.empty()) throw Error("VQA evaluation: no questions");
  VqaResult r;
  std::map<std::string, double> qt_sum, at_sum;
  double total = 0;
  for (size_t i = 0; i < questions.size(); ++i) {
    const auto& q = questions[i];
    if (q.answers.empty()) throw Error(fmt::format("VQA evaluation: question {} has no ground-truth answers", i));
    const double acc = vqa_accuracy(predictions[i], q.answers);
    r.per_question.push_back(acc);
    total += acc;
    qt_sum[q.question_type] += acc;
    at_sum[q.answer_type] += acc;
    ++r.question_type_counts[q.question_type];
    ++r.answer_type_counts[q.answer_type];
  }
  r.overall = 100.0 * total / static_cast<double>(questions.size());
  for (const auto& [k, s] : qt_sum) r.per_question_type[k] = 100.0 * s / static_cast<double>(r.question_type_counts[k]);
  for (const auto& [k, s] : at_sum) r.per_answer_type[k] = 100.0 * s / static_cast<double>(r.answer_type_counts[k]);
  return r;
}

double vqa_soft_score(int64_t count) {
  if (count < 0) throw Error(fmt::format("VQA soft score: negative answer count {}", count));
  return count >= 4 ? 1.0 : 0.3 * static_cast<double>(count);
}

std::string majority_answer(const std::vector<std::string>& answers) {
  std::vector<std::pair<std::string, int64_t>> counts;  // first-seen order
  for (const auto& a : answers) {
    const std::string n = normalize_answer(a);
    auto it = std::find_if(counts.begin(), counts.end(), [&](const auto& c) { return c.first == n; });
    if (it == counts.end()) counts.emplace_back(n, 1);
    else ++it->second;
  }
  std::string best;
  int64_t best_n = 0;
  for (const auto& [a, n] : counts) {
    if (n > best_n) {
      best = a;
      best_n = n;
    }
  }
  return best;
}

int64_t AnswerVocab::find(std::string_view answer) const {
  auto it = index.find(normalize_answer(answer));
  return it == index.end() ? -1 : it->second;
}

AnswerVocab build_answer_vocab(const std::vector<std::vector<std::string>>& train_answers, int64_t min_count) {
  if (min_count < 1) throw Error(fmt::format("answer vocabulary: min_count must be >= 1, got {}", min_count));
  std::unordered_map<std::string, int64_t> counts;
  for (const auto& answers : train_answers) {
    const std::string m = majority_answer(answers);
    if (!m.empty()) ++counts[m];
  }
  std::vector<std::pair<std::string, int64_t>> kept;
  for (const auto& [a, n] : counts) {
    if (n >= min_count) kept.emplace_back(a, n);
  }
  std::sort(kept.begin(), kept.end(), [](const auto& x, const auto& y) {
    return x.second != y.second ? x.second > y.second : x.first < y.first;
  });
  AnswerVocab v;
  for (const auto& [a, n] : kept) {
    v.index.emplace(a, v.size());
    v.answers.push_back(a);
    v.counts.push_back(n);
  }
  return v;
}

SoftTarget soft_target(const std::vector<std::string>& answers, const AnswerVocab& vocab) {
  std::vector<std::pair<int64_t, int64_t>> counts;  // label, annotators; first-seen order
  for (const auto& a : answers) {
    const int64_t label = vocab.find(a);
    if (label < 0) continue;
    auto it = std::find_if(counts.begin(), counts.end(), [&](const auto& c) { return c.first == label; });
    if (it == counts.end()) counts.emplace_back(label, 1);
    else ++it->second;
  }
  SoftTarget t;
  for (const auto& [label, n] : counts) {
    t.labels.push_back(label);
    t.scores.push_back(static_cast<float>(vqa_soft_score(n)));
  }
  return t;
}

torch::Tensor soft_target_tensor(const std::vector<SoftTarget>& targets, int64_t num_answers) {
  auto out = torch::zeros({static_cast<int64_t>(targets.size()), num_answers}, torch::kFloat);
  auto acc = out.accessor<float, 2>();
  for (size_t b = 0; b < targets.size(); ++b) {
    const auto& t = targets[b];
    if (t.labels.size() != t.scores.size()) {
      throw Error(fmt::format("VQA targets: row {} has {} labels but {} scores", b, t.labels.size(), t.scores.size()));
    }
    for (size_t k = 0; k < t.labels.size(); ++k) {
      if (t.labels[k] < 0 || t.labels[k] >= num_answers) {
        throw Error(fmt::format("VQA targets: row {} has label {} outside [0, {})", b, t.labels[k], num_answers));
      }
      acc[b][t.labels[k]] = t.scores[k];
    }
  }
  return out;
}

}  // namespace florence::vlp
