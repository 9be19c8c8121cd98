// Transfer-evaluation building blocks: L2 logistic regression (hand-solvable optimum, stationarity,
// separable data), CLIP's lambda sweep, few-shot episode sampling, the 95% CI, the prototype
// classifier, and the class index / seeded subsets they use; bad-input handling of the linear
// probe and few-shot runs (on a tiny ImageFolder of solid-colour images and a random-init
// florence-nano at 32 px).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "florence/core/error.h"
#include "florence/data/readers.h"
#include "florence/data/relabel.h"
#include "florence/eval/encode.h"
#include "florence/eval/few_shot.h"
#include "florence/eval/features.h"
#include "florence/eval/linear_probe.h"
#include "florence/eval/logreg.h"
#include "florence/eval/report_transfer.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_transfer {

using namespace florence;
using namespace florence::eval;

namespace {

// Two classes, one feature: x = +1 for 8 samples (7 of class 1, 1 of class 0) and x = -1 for 8
// samples (7 of class 0, 1 of class 1). With the logit difference d = w1 - w0 the stationarity
// condition of J (logreg.h) is sigma(d) - 7/8 + lambda * d / 2 = 0 (the penalty of the optimal split
// w1 = -w0 = d/2 is lambda d^2 / 4). For lambda = 1 / (4 ln 3) it holds at d = ln 3
// (sigma(ln 3) = 3/4, and lambda ln3 / 2 = 1/8), so W = [-ln3/2, ln3/2], b = [0, 0] (biases have
// zero gradient by symmetry).
TEST(LogReg, MatchesHandSolvedOptimum) {
  std::vector<float> xs;
  std::vector<int64_t> ys;
  for (int i = 0; i < 8; ++i) {
    xs.push_back(1.f);
    ys.push_back(i < 7 ? 1 : 0);
    xs.push_back(-1.f);
    ys.push_back(i < 7 ? 0 : 1);
  }
  torch::Tensor x = torch::tensor(xs).unsqueeze(1), y = torch::tensor(ys, torch::kLong);
  LogRegOptions o;
  o.l2 = 1.0 / (4.0 * std::log(3.0));
  LogRegModel m = fit_logreg(x, y, 2, o);
  const double h = std::log(3.0) / 2.0;
  EXPECT_NEAR(m.weight[0][0].item<double>(), -h, 1e-6);
  EXPECT_NEAR(m.weight[0][1].item<double>(), h, 1e-6);
  EXPECT_NEAR(m.bias[0].item<double>() - m.bias[1].item<double>(), 0.0, 1e-6);
  // p(class 1 | x = +1) = 3/4 exactly at the optimum.
  torch::Tensor p = torch::softmax(m.logits(torch::tensor({{1.f}})), 1);
  EXPECT_NEAR(p[0][1].item<double>(), 0.75, 1e-6);
  // Objective by hand: (14 * -log(3/4) + 2 * -log(1/4)) / 16 + lambda * (ln 3)^2 / 4.
  const double j = (14 * -std::log(0.75) + 2 * -std::log(0.25)) / 16 + o.l2 * std::log(3.0) * std::log(3.0) / 4;
  EXPECT_NEAR(m.objective, j, 1e-10);
  EXPECT_LT(m.grad_max, 1e-6);
}

// Unregularised with one-hot group features: the fitted probabilities are the empirical class
// frequencies of each group (the maximum-likelihood solution of a saturated model).
TEST(LogReg, UnregularisedReproducesGroupFrequencies) {
  // group 0: classes {0,0,0,1,2,2}; group 1: {1,1,2,2,2,0}; three classes, no bias term.
  std::vector<std::pair<int, int>> rows = {{0, 0}, {0, 0}, {0, 0}, {0, 1}, {0, 2}, {0, 2},
                                           {1, 1}, {1, 1}, {1, 2}, {1, 2}, {1, 2}, {1, 0}};
  torch::Tensor x = torch::zeros({int64_t(rows.size()), 2});
  std::vector<int64_t> ys;
  for (size_t i = 0; i < rows.size(); ++i) {
    x[int64_t(i)][rows[i].first] = 1;
    ys.push_back(rows[i].second);
  }
  LogRegOptions o;
  o.l2 = 0;
  o.fit_bias = false;
  o.tolerance_grad = 1e-10;
  LogRegModel m = fit_logreg(x, torch::tensor(ys, torch::kLong), 3, o);
  torch::Tensor p = torch::softmax(m.logits(torch::eye(2)), 1);
  const double want[2][3] = {{3.0 / 6, 1.0 / 6, 2.0 / 6}, {1.0 / 6, 2.0 / 6, 3.0 / 6}};
  for (int g = 0; g < 2; ++g)
    for (int c = 0; c < 3; ++c) EXPECT_NEAR(p[g][c].item<double>(), want[g][c], 1e-7) << "group " << g << " class " << c;
}

// On a generic problem the returned point satisfies the optimality condition grad J = 0 (checked
// independently with autograd on logreg_objective), and nearby points have a larger objective.
TEST(LogReg, GradientVanishesAtSolution) {
  torch::manual_seed(3);
  torch::Tensor x = torch::randn({40, 5}, torch::kDouble);
  torch::Tensor y = torch::randint(0, 3, {40}, torch::kLong);
  LogRegOptions o;
  o.l2 = 0.05;
  LogRegModel m = fit_logreg(x, y, 3, o);
  torch::Tensor w = m.weight.clone().set_requires_grad(true), b = m.bias.clone().set_requires_grad(true);
  torch::Tensor j = logreg_objective(x, y, w, b, o.l2);
  j.backward();
  EXPECT_LT(w.grad().abs().max().item<double>(), 1e-7);
  EXPECT_LT(b.grad().abs().max().item<double>(), 1e-7);
  EXPECT_NEAR(j.item<double>(), m.objective, 1e-12);
  for (int t = 0; t < 5; ++t) {
    torch::NoGradGuard ng;
    torch::Tensor w2 = m.weight + 1e-3 * torch::randn_like(m.weight);
    EXPECT_GT(logreg_objective(x, y, w2, m.bias, o.l2).item<double>(), m.objective);
  }
}

// Three well separated clusters: every training point is classified correctly, and new points
// near each centre get that centre's class.
TEST(LogReg, SeparableClustersAreClassifiedByHand) {
  const std::vector<std::pair<float, float>> centres = {{2, 0}, {-1, 2}, {-1, -2}};
  const std::vector<std::pair<float, float>> offsets = {{0, 0}, {0.3f, 0.1f}, {-0.2f, 0.3f}, {0.1f, -0.3f}};
  std::vector<float> xs;
  std::vector<int64_t> ys;
  for (size_t c = 0; c < centres.size(); ++c)
    for (const auto& d : offsets) {
      xs.push_back(centres[c].first + d.first);
      xs.push_back(centres[c].second + d.second);
      ys.push_back(int64_t(c));
    }
  torch::Tensor x = torch::tensor(xs).view({-1, 2}), y = torch::tensor(ys, torch::kLong);
  LogRegOptions o;
  o.l2 = 1e-3;
  LogRegModel m = fit_logreg(x, y, 3, o);
  EXPECT_TRUE(m.predict(x).eq(y).all().item<bool>());
  torch::Tensor probe = torch::tensor({{3.f, 0.f}, {-1.f, 3.f}, {-1.f, -3.f}, {1.5f, 0.5f}});
  torch::Tensor pred = m.predict(probe);
  EXPECT_EQ(pred[0].item<int64_t>(), 0);
  EXPECT_EQ(pred[1].item<int64_t>(), 1);
  EXPECT_EQ(pred[2].item<int64_t>(), 2);
  EXPECT_EQ(pred[3].item<int64_t>(), 0);
}

TEST(LogReg, RejectsBadInput) {
  torch::Tensor x = torch::randn({4, 2}), y = torch::tensor({0, 1, 0, 1}, torch::kLong);
  EXPECT_THROW(fit_logreg(x, torch::tensor({0, 1, 2, 1}, torch::kLong), 2), Error);  // label out of range
  EXPECT_THROW(fit_logreg(x, y.slice(0, 0, 3), 2), Error);                         // size mismatch
  EXPECT_THROW(fit_logreg(x, y, 1), Error);                                         // one class
  LogRegOptions neg;
  neg.l2 = -1;
  EXPECT_THROW(fit_logreg(x, y, 2, neg), Error);
  torch::Tensor bad = x.clone();
  bad[0][0] = std::nan("");
  EXPECT_THROW(fit_logreg(bad, y, 2), Error);
  LogRegOptions no_iter;
  no_iter.max_iter = 0;  // would return the all-zero start point as a "fit"
  EXPECT_THROW(fit_logreg(x, y, 2, no_iter), Error);
  LogRegOptions no_hist;
  no_hist.history = 0;
  EXPECT_THROW(fit_logreg(x, y, 2, no_hist), Error);
}

// CLIP's search: 7 coarse values (1e-6 .. 1e6, 2 decades apart) + 2 per halving (1, 1/2, 1/4,
// 1/8 decade) = 15 fits on the 1/8-decade grid; the best is the highest val top-1 with ties to
// the larger lambda.
TEST(LogReg, SweepFollowsClipSchedule) {
  torch::manual_seed(5);
  // Two noisy Gaussian classes in 8-D: heavy regularisation (weights ~ 0) predicts by bias only.
  torch::Tensor mu = torch::zeros({8});
  mu[0] = 1.0;
  auto make = [&](int64_t n) {
    torch::Tensor y = torch::arange(n) % 2;
    torch::Tensor x = torch::randn({n, 8}) + (2 * y - 1).to(torch::kFloat).unsqueeze(1) * mu;
    return std::make_pair(x, y);
  };
  auto [xt, yt] = make(60);
  auto [xv, yv] = make(60);
  SweepResult s = sweep_l2(xt, yt, xv, yv, 2);
  ASSERT_EQ(s.points.size(), 15u);
  std::set<double> seen;
  double best = -1;
  for (const auto& p : s.points) {
    const double l = std::log10(p.l2) * 8;
    EXPECT_NEAR(l, std::round(l), 1e-9);  // on the 1/8-decade grid
    EXPECT_GE(p.l2, 1e-6 * (1 - 1e-12));
    EXPECT_LE(p.l2, 1e6 * (1 + 1e-12));
    EXPECT_TRUE(seen.insert(p.l2).second) << "lambda evaluated twice: " << p.l2;
    best = std::max(best, p.val_accuracy);
  }
  EXPECT_DOUBLE_EQ(s.best_val_accuracy, best);
  for (const auto& p : s.points) {
    if (p.val_accuracy == best) {
      EXPECT_LE(p.l2, s.best_l2 * (1 + 1e-12));
    }
  }
  EXPECT_GT(s.best_val_accuracy, 0.7);  // the signal is learnable (Bayes accuracy ~0.84)
  // The first seven are the coarse grid.
  for (int i = 0; i < 7; ++i) EXPECT_NEAR(std::log10(s.points[size_t(i)].l2), -6 + 2 * i, 1e-9);
}

std::vector<std::vector<int64_t>> toy_rows() {
  // 6 classes with 30, 25, 20, 16, 8, 3 samples, interleaved rows.
  const std::vector<int64_t> sizes = {30, 25, 20, 16, 8, 3};
  std::vector<int64_t> labels;
  for (int64_t round = 0; round < 30; ++round)
    for (size_t c = 0; c < sizes.size(); ++c)
      if (round < sizes[c]) labels.push_back(int64_t(c));
  return rows_by_class(torch::tensor(labels, torch::kLong), 6);
}

TEST(FewShot, EpisodesAreReproducibleAndBalanced) {
  const auto rows = toy_rows();
  std::vector<int64_t> label_of(102);
  for (size_t c = 0; c < rows.size(); ++c)
    for (int64_t r : rows[c]) label_of[size_t(r)] = int64_t(c);
  const int64_t ways = 3, shots = 5, queries = 10;  // needs 15 per class: classes 0..3 eligible
  EXPECT_EQ(eligible_classes(rows, shots + queries), (std::vector<int64_t>{0, 1, 2, 3}));
  std::map<int64_t, int> drawn;
  bool any_differs = false;
  for (int64_t e = 0; e < 400; ++e) {
    Episode a = sample_episode(rows, ways, shots, queries, 7, e);
    Episode b = sample_episode(rows, ways, shots, queries, 7, e);
    EXPECT_EQ(a.classes, b.classes);
    EXPECT_EQ(a.support, b.support);
    EXPECT_EQ(a.query, b.query);
    Episode other = sample_episode(rows, ways, shots, queries, 8, e);
    any_differs = any_differs || other.support != a.support;
    ASSERT_EQ(a.classes.size(), size_t(ways));
    ASSERT_EQ(a.support.size(), size_t(ways * shots));
    ASSERT_EQ(a.query.size(), size_t(ways * queries));
    EXPECT_EQ(std::set<int64_t>(a.classes.begin(), a.classes.end()).size(), size_t(ways));
    std::set<int64_t> all(a.support.begin(), a.support.end());
    all.insert(a.query.begin(), a.query.end());
    EXPECT_EQ(all.size(), size_t(ways * (shots + queries)));  // support and queries disjoint
    std::vector<int64_t> per_label(size_t(ways), 0);
    for (size_t i = 0; i < a.support.size(); ++i) {
      EXPECT_EQ(label_of[size_t(a.support[i])], a.classes[size_t(a.support_labels[i])]);
      per_label[size_t(a.support_labels[i])]++;
    }
    for (int64_t n : per_label) EXPECT_EQ(n, shots);
    std::vector<int64_t> per_q(size_t(ways), 0);
    for (size_t i = 0; i < a.query.size(); ++i) {
      EXPECT_EQ(label_of[size_t(a.query[i])], a.classes[size_t(a.query_labels[i])]);
      per_q[size_t(a.query_labels[i])]++;
    }
    for (int64_t n : per_q) EXPECT_EQ(n, queries);
    for (int64_t c : a.classes) drawn[c]++;
  }
  EXPECT_TRUE(any_differs);
  // Only eligible classes are drawn, each in about 3/4 of the episodes (3 of 4 eligible).
  EXPECT_EQ(drawn.size(), 4u);
  for (const auto& [c, n] : drawn) {
    EXPECT_LT(c, 4);
    EXPECT_NEAR(double(n) / 400.0, 0.75, 0.08) << "class " << c;
  }
  // Episode e does not depend on which other episodes were drawn.
  EXPECT_EQ(sample_episode(rows, ways, shots, queries, 7, 123).support,
            sample_episode(rows, ways, shots, queries, 7, 123).support);
  EXPECT_THROW(sample_episode(rows, 5, shots, queries, 7, 0), Error);  // only 4 eligible classes
  EXPECT_THROW(sample_episode(rows, 1, shots, queries, 7, 0), Error);
  EXPECT_THROW(sample_episode(rows, 2, 0, queries, 7, 0), Error);
}

TEST(FewShot, ConfidenceIntervalOnKnownNumbers) {
  // mean 0.65; population std sqrt((0.15^2 + 0.05^2 + 0.05^2 + 0.15^2) / 4) = sqrt(0.0125);
  // CI = 1.96 * sqrt(0.0125) / sqrt(4) = 0.109567...
  MeanCI ci = mean_ci95({0.5, 0.6, 0.7, 0.8});
  EXPECT_NEAR(ci.mean, 0.65, 1e-12);
  EXPECT_NEAR(ci.std, std::sqrt(0.0125), 1e-12);
  ASSERT_TRUE(ci.ci95.has_value());
  EXPECT_NEAR(*ci.ci95, 1.96 * std::sqrt(0.0125) / 2.0, 1e-12);
  EXPECT_NEAR(*ci.ci95, 0.10956733, 1e-8);
  MeanCI same = mean_ci95({0.5, 0.5, 0.5});  // exactly representable: std is exactly 0
  ASSERT_TRUE(same.ci95.has_value());
  EXPECT_DOUBLE_EQ(*same.ci95, 0.0);
  // Two values 0 and 1: std 0.5, CI 1.96 * 0.5 / sqrt(2).
  EXPECT_NEAR(mean_ci95({0.0, 1.0}).ci95.value_or(-1), 0.98 / std::sqrt(2.0), 1e-12);
  // 600 episodes of alternating 0 and 1: std 0.5 -> 1.96 * 0.5 / sqrt(600) = 0.040008...
  std::vector<double> alt;
  for (int i = 0; i < 600; ++i) alt.push_back(i % 2);
  EXPECT_NEAR(mean_ci95(alt).ci95.value_or(-1), 0.98 / std::sqrt(600.0), 1e-12);
  // One episode: the mean is that value, the CI is undefined (not 0).
  MeanCI one = mean_ci95({0.5});
  EXPECT_DOUBLE_EQ(one.mean, 0.5);
  EXPECT_EQ(one.n, 1);
  EXPECT_FALSE(one.ci95.has_value());
  EXPECT_THROW(mean_ci95({}), Error);
}

TEST(FewShot, OptionValidationNamesTheProblem) {
  auto message = [](const FewShotOptions& o) -> std::string {
    try {
      validate_few_shot_options(o);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  FewShotOptions ok;
  EXPECT_EQ(message(ok), "");
  FewShotOptions o = ok;
  o.classifiers = {};
  EXPECT_NE(message(o).find("no classifier"), std::string::npos) << message(o);
  o.classifiers = {"prototype", "svm"};
  EXPECT_NE(message(o).find("unknown classifier 'svm'"), std::string::npos) << message(o);
  o.classifiers = {"logreg", "logreg"};  // would pool 2 accuracies per episode into one CI
  EXPECT_NE(message(o).find("listed twice"), std::string::npos) << message(o);
  o = ok;
  o.l2 = -1.0;
  EXPECT_NE(message(o).find("--l2 must be"), std::string::npos) << message(o);
  o.l2 = 0.0;  // lambda 0 (unregularised) is allowed
  EXPECT_EQ(message(o), "");
  o = ok;
  o.episodes = 0;
  EXPECT_NE(message(o).find("--episodes"), std::string::npos);
  o = ok;
  o.shots = 0;
  EXPECT_NE(message(o).find("--shots"), std::string::npos);
  o = ok;
  o.queries = 0;
  EXPECT_NE(message(o).find("--queries"), std::string::npos);
  o = ok;
  o.ways = 1;
  EXPECT_NE(message(o).find("--ways"), std::string::npos);
  o = ok;
  o.features.max_samples = -2;
  EXPECT_NE(message(o).find("--max-samples"), std::string::npos);
}

TEST(FewShot, PrototypeClassifierByHand) {
  // Class 0 support at (1,0) and (0.8, 0.2) -> mean (0.9, 0.1); class 1 at (0,1) -> (0,1).
  torch::Tensor s = torch::tensor({{1.0, 0.0}, {0.8, 0.2}, {0.0, 1.0}}, torch::kDouble);
  torch::Tensor sl = torch::tensor({0, 0, 1}, torch::kLong);
  // (0.6, 0.4): distance to (0.9,0.1) = sqrt(0.18), to (0,1) = sqrt(0.72) -> class 0 (correct);
  // (0.4, 0.6): sqrt(0.5) vs sqrt(0.32) -> class 1 (labelled 0: wrong); (0.1, 0.9) -> class 1 (correct).
  torch::Tensor q = torch::tensor({{0.6, 0.4}, {0.4, 0.6}, {0.1, 0.9}}, torch::kDouble);
  torch::Tensor ql = torch::tensor({0, 0, 1}, torch::kLong);
  EXPECT_NEAR(prototype_accuracy(s, sl, q, ql, 2), 2.0 / 3.0, 1e-12);
}

data::Sample labelled(const std::string& key, const std::string& category) {
  data::Sample s;
  s.key = key;
  s.image = {1};
  s.image_ext = "png";
  if (!category.empty()) s.meta["category"] = category;
  return s;
}

TEST(FeatureSets, ClassIndexSubsetAndAlignment) {
  std::vector<data::Sample> v = {labelled("a", "dog"), labelled("b", "cat"), labelled("c", ""), labelled("d", "dog"),
                                 labelled("a", "cat")};
  data::VectorSource src(v);
  data::ClassIndex idx = data::index_classes(src, "category");
  EXPECT_EQ(idx.classes, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(idx.keys, (std::vector<std::string>{"a", "b", "d"}));
  EXPECT_EQ(idx.labels, (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(idx.skipped.at("no_class"), 1);
  EXPECT_EQ(idx.skipped.at("duplicate_key"), 1);

  auto sub = data::seeded_subset(100, 10, 42);
  EXPECT_EQ(sub, data::seeded_subset(100, 10, 42));
  EXPECT_NE(sub, data::seeded_subset(100, 10, 43));
  EXPECT_EQ(std::set<size_t>(sub.begin(), sub.end()).size(), 10u);
  EXPECT_TRUE(std::is_sorted(sub.begin(), sub.end()));
  EXPECT_EQ(data::seeded_subset(5, 9, 1).size(), 5u);

  FeatureSet fs;
  fs.features = torch::arange(8, torch::kFloat).view({4, 2});
  fs.labels = torch::tensor({0, 1, 2, 1}, torch::kLong);
  fs.classes = {"bird", "cat", "dog"};
  FeatureSet al = align_classes(fs, {"cat", "dog"});
  EXPECT_EQ(al.size(), 3);
  EXPECT_TRUE(al.labels.equal(torch::tensor({0, 1, 0}, torch::kLong)));
  EXPECT_EQ(al.skipped.at("class_not_in_train"), 1);
  EXPECT_FLOAT_EQ(al.features[0][0].item<float>(), 2.f);
}

// ---------------------------------------------------------------------------------------------
// Runs on a tiny ImageFolder: train / val / test with classes blue, green, red (solid colours).
// ---------------------------------------------------------------------------------------------

const std::filesystem::path kTmp = std::filesystem::path(FLORENCE_TEST_TMP) / "transfer";

// ROOT/<split>/<class>/<i>.png, `per_class` images per class, each a 16x16 solid colour with a
// small per-image brightness shift so that no two images are identical.
void write_split(const std::filesystem::path& dir, int per_class) {
  const std::vector<std::pair<std::string, cv::Scalar>> colours = {
      {"blue", {220, 30, 30}}, {"green", {30, 220, 30}}, {"red", {30, 30, 220}}};  // BGR
  for (const auto& [name, bgr] : colours) {
    std::filesystem::create_directories(dir / name);
    for (int i = 0; i < per_class; ++i) {
      cv::Mat img(16, 16, CV_8UC3, bgr + cv::Scalar(3 * i, 3 * i, 3 * i));
      ASSERT_TRUE(cv::imwrite((dir / name / (std::to_string(i) + ".png")).string(), img));
    }
  }
}

struct TinyData {
  std::string train, val, test;
};

const TinyData& tiny_data() {
  static const TinyData d = [] {
    std::filesystem::remove_all(kTmp);
    write_split(kTmp / "train", 4);
    write_split(kTmp / "val", 2);
    write_split(kTmp / "test", 2);
    return TinyData{(kTmp / "train").string(), (kTmp / "val").string(), (kTmp / "test").string()};
  }();
  return d;
}

EvalModel& tiny_model() {
  // Never destroyed: a static torch module outliving libtorch's own statics crashes at exit.
  static EvalModel* m = [] {
    LoadOptions lo;
    lo.model = "florence-nano";
    lo.preprocess.image_size = 32;
    lo.preprocess.num_workers = 1;
    torch::manual_seed(1);
    return new EvalModel(load_eval_model(lo));  // random init
  }();
  return *m;
}

LinearProbeOptions tiny_probe() {
  LinearProbeOptions o;
  o.name = "tiny";
  o.train = tiny_data().train;
  o.val = tiny_data().val;
  o.test = tiny_data().test;
  o.min_log10 = -4;  // a short sweep: 5 fits
  o.max_log10 = 0;
  o.steps_per_decade = 1;
  return o;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(LinearProbeRun, RejectsBadOptionsBeforeEncoding) {
  EvalModel unused;  // never touched: the options are checked first
  LinearProbeOptions o = tiny_probe();
  o.fixed_l2 = -5.0;
  EXPECT_NE(error_of([&] { linear_probe(unused, o); }).find("--l2 must be"), std::string::npos);
  o = tiny_probe();
  o.logreg.max_iter = 0;
  EXPECT_NE(error_of([&] { linear_probe(unused, o); }).find("--max-iter must be >= 1"), std::string::npos);
  o = tiny_probe();
  o.features.max_samples = -1;
  EXPECT_NE(error_of([&] { linear_probe(unused, o); }).find("--max-train-samples"), std::string::npos);
  o = tiny_probe();
  o.max_eval_samples = -1;
  EXPECT_NE(error_of([&] { linear_probe(unused, o); }).find("--max-eval-samples"), std::string::npos);
}

// Seeds of the train subset (the rule of features.h: data::seeded_subset over the class index in
// source order) for which a subset of `k` holds exactly `want` distinct classes; -1 if none < 200.
int64_t seed_with_classes(size_t k, size_t want) {
  auto src = open_source(tiny_data().train, "train");
  const data::ClassIndex idx = data::index_classes(*src, "category");
  for (uint64_t seed = 0; seed < 200; ++seed) {
    std::set<int64_t> cls;
    for (size_t i : data::seeded_subset(idx.keys.size(), k, seed)) cls.insert(idx.labels[i]);
    if (cls.size() == want) return int64_t(seed);
  }
  return -1;
}

TEST(LinearProbeRun, TrainingSubsetNeedsTwoClassesAndReportsMissingOnes) {
  EvalModel& m = tiny_model();
  // One training sample: one class. An error, not a "9 classes" majority-vote result.
  LinearProbeOptions o = tiny_probe();
  o.features.max_samples = 1;
  const std::string err = error_of([&] { linear_probe(m, o); });
  EXPECT_NE(err.find("has 1 class(es) of the split's 3"), std::string::npos) << err;

  // Two samples of two classes: runs; the third class is reported with its 2 test images.
  const int64_t seed = seed_with_classes(2, 2);
  ASSERT_GE(seed, 0);
  o.features.max_samples = 2;
  o.features.seed = uint64_t(seed);
  o.refit_on_val = false;  // the final classifier is trained on the 2 train samples only
  const nlohmann::json r = linear_probe(m, o);
  EXPECT_EQ(r.at("classes").size(), 3u);
  EXPECT_EQ(r.at("num_trained_classes").get<int64_t>(), 2);
  ASSERT_EQ(r.at("classes_without_train_samples").size(), 1u);
  EXPECT_EQ(r.at("test_samples_of_untrained_classes").get<int64_t>(), 2);
  EXPECT_EQ(r.at("num_test").get<int64_t>(), 6);  // the test set does not shrink with the subset
  EXPECT_LE(r.at("metrics").at("top1").get<double>(), 4.0 / 6.0 + 1e-12);  // 2 of 6 are always wrong
  // Refit on train + val: val holds all 3 classes, so the final classifier has seen every class.
  o.refit_on_val = true;
  const nlohmann::json r2 = linear_probe(m, o);
  EXPECT_EQ(r2.at("num_trained_classes").get<int64_t>(), 3);
  EXPECT_TRUE(r2.at("classes_without_train_samples").empty());
  EXPECT_EQ(r2.at("test_samples_of_untrained_classes").get<int64_t>(), 0);
}

TEST(LinearProbeRun, FixedLambdaMeasuresValAccuracy) {
  LinearProbeOptions o = tiny_probe();
  o.fixed_l2 = 1e-4;
  o.refit_on_val = false;
  const nlohmann::json r = linear_probe(tiny_model(), o);
  const auto& sw = r.at("sweep");
  EXPECT_TRUE(sw.at("fixed").get<bool>());
  EXPECT_DOUBLE_EQ(sw.at("best_l2").get<double>(), 1e-4);
  ASSERT_EQ(sw.at("points").size(), 1u);
  // Solid colours, one cluster per class: a measured val top-1 is 1, never the old placeholder 0.
  EXPECT_DOUBLE_EQ(sw.at("best_val_top1").get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(sw.at("points")[0].at("val_top1").get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(r.at("final").at("l2").get<double>(), 1e-4);
}

TEST(FewShotRun, OneEpisodeHasNoConfidenceInterval) {
  FewShotOptions o;
  o.name = "tiny";
  o.data = tiny_data().train;
  o.ways = 2;
  o.shots = 1;
  o.queries = 1;
  o.episodes = 1;
  const nlohmann::json r = few_shot(tiny_model(), o);
  for (const char* c : {"prototype", "logreg"}) {
    const auto& v = r.at("results").at(c);
    EXPECT_TRUE(v.at("ci95").is_null()) << c;
    const double mean = v.at("mean").get<double>();
    EXPECT_TRUE(mean == 0.0 || mean == 0.5 || mean == 1.0) << mean;  // 2 queries
  }
  o.episodes = 2;
  const nlohmann::json r2 = few_shot(tiny_model(), o);
  EXPECT_TRUE(r2.at("results").at("prototype").at("ci95").is_number());
  o.classifiers = {};
  EXPECT_NE(error_of([&] { few_shot(tiny_model(), o); }).find("no classifier"), std::string::npos);
}

}  // namespace

TEST(ReportRows, DetectionResultsShowCocoNumbersBesideTheirBaseline) {
  nlohmann::json m = {{"AP", 0.125}, {"AP50", 0.25}, {"AP75", 0.0625}, {"APs", -1.0}, {"APm", 0.5}, {"APl", 0.75},
                      {"AR1", 0.1},  {"AR10", 0.2},  {"AR100", 0.3}};
  nlohmann::json j = {{"task", "zero-shot detection"}, {"split", "test_unseen"}, {"images", 40}, {"metrics", m}};
  auto rows = eval::transfer_report_rows(j);
  ASSERT_EQ(rows.size(), 7u);
  EXPECT_EQ(rows[0].task, "zero-shot detection on 'test_unseen' (40 images)");
  EXPECT_EQ(rows[1].metric, "AP50");
  EXPECT_EQ(rows[1].value, "0.2500");
  EXPECT_EQ(rows[1].chance, "—");
  EXPECT_EQ(rows[3].value, "n/a");  // APs -1: no small box in the split
  EXPECT_EQ(rows[6].metric, "AR100");
  j["task"] = "detection";
  j["baseline"] = {{"name", "box prior"}, {"metrics", m}};
  rows = eval::transfer_report_rows(j);
  ASSERT_EQ(rows.size(), 7u);
  EXPECT_EQ(rows[0].task, "detection on 'test_unseen' (40 images, baseline: box prior)");
  EXPECT_EQ(rows[0].chance, "0.1250");
  EXPECT_EQ(rows[3].chance, "—");
  j.erase("metrics");
  EXPECT_THROW(eval::transfer_report_rows(j), nlohmann::json::exception);
}

TEST(ReportRows, VqaResultsShowEachQuestionTypeBesideThePrior) {
  const nlohmann::json model = {{"accuracy", 37.147},
                                {"questions", 3600},
                                {"per_question_type", {{"count", 61.38}, {"presence", 61.642}}},
                                {"per_answer_type", {{"number", 61.38}, {"yes/no", 61.642}}}};
  nlohmann::json prior = model;
  prior["accuracy"] = 31.9051;
  prior["per_question_type"].erase("presence");  // a type the prior lacks: no chance value
  nlohmann::json j = {{"task", "vqa-eval"}, {"split", "test"}, {"blind", false}, {"model", model}, {"prior", prior}};
  auto rows = eval::transfer_report_rows(j);
  ASSERT_EQ(rows.size(), 5u);  // overall, 2 question types, 2 answer types
  EXPECT_EQ(rows[0].task, "VQA on 'test' (3600 questions)");
  EXPECT_EQ(rows[0].metric, "VQA accuracy");
  EXPECT_EQ(rows[0].value, "37.15");
  EXPECT_EQ(rows[0].chance, "31.91");
  EXPECT_EQ(rows[1].metric, "VQA accuracy, question type count");
  EXPECT_EQ(rows[2].metric, "VQA accuracy, question type presence");
  EXPECT_EQ(rows[2].value, "61.64");
  EXPECT_EQ(rows[2].chance, "—");
  EXPECT_EQ(rows[4].metric, "VQA accuracy, answer type yes/no");
  j["blind"] = true;
  j.erase("prior");
  rows = eval::transfer_report_rows(j);
  EXPECT_EQ(rows[0].task, "VQA on 'test' (3600 questions, question only (blind))");
  EXPECT_EQ(rows[0].chance, "—");
  j.erase("model");
  EXPECT_THROW(eval::transfer_report_rows(j), nlohmann::json::exception);
}

TEST(ReportRows, VideoActionsAndRetrieval) {
  // video eval / video train: classification rows with the views and steps in the title.
  nlohmann::json m = {{"top1", 0.5},  {"top5", 0.75}, {"mean_per_class", 0.4},
                      {"num_samples", 20}, {"chance", {{"top1", 0.1}, {"top5", 0.5}, {"mean_per_class", 0.1}}}};
  nlohmann::json ev = {{"task", "video-actions-eval"}, {"split", "test"}, {"input", "video"},
                       {"views", {{"clips", 2}, {"crops", 3}}}, {"metrics", m}};
  auto rows = eval::transfer_report_rows(ev);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].task, "video actions on 'test' (20 clips, video input, 2 x 3 views)");
  EXPECT_EQ(rows[0].metric, "top-1 %");
  EXPECT_EQ(rows[0].value, "50.00");
  EXPECT_EQ(rows[0].chance, "10.00");
  nlohmann::json tr = ev;
  tr["task"] = "video-actions";
  tr.erase("split");
  tr["steps"] = 300;
  tr["options"] = {{"test_split", "held_out"}};
  rows = eval::transfer_report_rows(tr);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1].task, "video actions on 'held_out' (20 clips, video input, 2 x 3 views, 300 steps)");
  tr.erase("metrics");  // a run without a test split: no rows
  EXPECT_TRUE(eval::transfer_report_rows(tr).empty());
  // video retrieval / video train --task retrieval: R@1/5/10 and median rank both ways.
  auto dir = [](int64_t q, int64_t n, double r1) {
    return nlohmann::json{{"num_queries", q}, {"num_items", n}, {"R@1", r1}, {"R@5", 0.2}, {"R@10", 0.3},
                          {"median_rank", 12.5},
                          {"chance", {{"R@1", 0.01}, {"R@5", 0.05}, {"R@10", 0.1}, {"median_rank", 50.0}}}};
  };
  nlohmann::json ret = {{"task", "video-retrieval"}, {"split", "test"}, {"model", "zero-shot (inflated image tower)"},
                        {"t2v", dir(90, 100, 0.125)}, {"v2t", dir(100, 90, 0.25)}};
  rows = eval::transfer_report_rows(ret);
  ASSERT_EQ(rows.size(), 8u);
  EXPECT_EQ(rows[0].task, "video retrieval on 'test', zero-shot (inflated image tower) text→video (90 queries, 100 items)");
  EXPECT_EQ(rows[0].metric, "R@1 %");
  EXPECT_EQ(rows[0].value, "12.50");
  EXPECT_EQ(rows[0].chance, "1.00");
  EXPECT_EQ(rows[3].metric, "median rank");
  EXPECT_EQ(rows[3].value, "12.5");
  EXPECT_EQ(rows[3].chance, "50");
  EXPECT_EQ(rows[4].value, "25.00");
  nlohmann::json vt = {{"task", "video-text"}, {"steps", 1920}, {"input", "video"},
                       {"test", {{"t2v", dir(90, 100, 0.125)}, {"v2t", dir(100, 90, 0.25)}}}};
  rows = eval::transfer_report_rows(vt);
  ASSERT_EQ(rows.size(), 8u);
  EXPECT_EQ(rows[4].task, "video-text trained (1920 steps, video input) video→text (100 queries, 90 items)");
  ret.erase("t2v");
  EXPECT_THROW(eval::transfer_report_rows(ret), nlohmann::json::exception);
}

}  // namespace test_transfer
