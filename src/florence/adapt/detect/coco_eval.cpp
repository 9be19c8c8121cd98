// COCO bbox evaluation as pycocotools COCOeval computes it; see coco_eval.h.
#include "florence/adapt/detect/coco_eval.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "florence/core/error.h"

namespace florence::detect {
namespace {

// numpy.linspace(start, stop, num): y[i] = i * ((stop - start) / (num - 1)) + start, y[-1] = stop.
std::vector<double> linspace(double start, double stop, int num) {
  std::vector<double> y(static_cast<size_t>(num));
  const double step = (stop - start) / double(num - 1);
  for (int i = 0; i < num; ++i) y[size_t(i)] = double(i) * step + start;
  y.back() = stop;
  return y;
}

// np.spacing(1): the gap between 1.0 and the next double; keeps tp / (tp + fp) finite.
constexpr double kEps = std::numeric_limits<double>::epsilon();

// Indices 0..n-1 sorted by score, highest first, ties in input order (numpy mergesort of -score).
std::vector<size_t> order_by_score(const std::vector<double>& scores) {
  std::vector<size_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), size_t(0));
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  return idx;
}

// COCOeval.evaluateImg's output for one (image, category, area range).
struct ImageEval {
  std::vector<double> dt_scores;             // [D] highest first
  std::vector<std::vector<int64_t>> dt_match;  // [T][D] matched annotation id, 0 = none
  std::vector<std::vector<char>> dt_ignore;    // [T][D]
  std::vector<char> gt_ignore;                 // [G]
};

struct Bucket {
  std::vector<const CocoAnnotation*> gt;  // file order (use_cats false: by category id, then file order)
  std::vector<size_t> dt;                 // indices into the results list, same order rule
};

}  // namespace

std::vector<double> CocoEvalParams::default_iou_thresholds() { return linspace(0.5, 0.95, 10); }
std::vector<double> CocoEvalParams::default_recall_thresholds() { return linspace(0.0, 1.0, 101); }

void CocoEvalParams::validate() const {
  auto sorted = [](const std::vector<double>& v) { return !v.empty() && std::is_sorted(v.begin(), v.end()); };
  if (!sorted(iou_thresholds)) throw Error("coco eval: iou_thresholds must be non-empty and ascending");
  if (!sorted(recall_thresholds)) throw Error("coco eval: recall_thresholds must be non-empty and ascending");
  if (max_dets.empty() || !std::is_sorted(max_dets.begin(), max_dets.end()) || max_dets.front() < 1)
    throw Error("coco eval: max_dets must be non-empty, ascending and >= 1");
  if (area_ranges.empty() || area_labels.size() != area_ranges.size())
    throw Error(fmt::format("coco eval: {} area ranges but {} labels", area_ranges.size(), area_labels.size()));
  for (const auto& r : area_ranges)
    if (!(r.first <= r.second)) throw Error(fmt::format("coco eval: area range [{}, {}] has lo > hi", r.first, r.second));
}

double coco_box_iou(const CocoBox& d, const CocoBox& g, bool crowd) {
  const double w = std::fmin(d[2] + d[0], g[2] + g[0]) - std::fmax(d[0], g[0]);
  if (w <= 0) return 0;
  const double h = std::fmin(d[3] + d[1], g[3] + g[1]) - std::fmax(d[1], g[1]);
  if (h <= 0) return 0;
  const double i = w * h, da = d[2] * d[3], ga = g[2] * g[3];
  const double u = crowd ? da : da + ga - i;
  return i / u;
}

CocoEvalResult evaluate_bbox(const CocoDataset& gt, const std::vector<CocoResult>& dt, const CocoEvalParams& p) {
  p.validate();
  // Images and categories, sorted by id (COCOeval: sorted(getImgIds()), np.unique(catIds)).
  std::vector<int64_t> img_ids, cat_ids;
  for (const auto& im : gt.images) img_ids.push_back(im.id);
  for (const auto& c : gt.categories) cat_ids.push_back(c.id);
  std::sort(img_ids.begin(), img_ids.end());
  std::sort(cat_ids.begin(), cat_ids.end());
  std::map<int64_t, size_t> img_pos, cat_pos;
  for (size_t i = 0; i < img_ids.size(); ++i) img_pos[img_ids[i]] = i;
  for (size_t k = 0; k < cat_ids.size(); ++k) cat_pos[cat_ids[k]] = k;

  const size_t I = img_ids.size();
  const size_t K = p.use_cats ? cat_ids.size() : 1;
  const size_t T = p.iou_thresholds.size(), R = p.recall_thresholds.size();
  const size_t A = p.area_ranges.size(), M = p.max_dets.size();
  const size_t max_det = size_t(p.max_dets.back());

  // Buckets per (category, image). Without categories, boxes are pooled per image in category
  // order, each category's boxes in file order (COCOeval.computeIoU with useCats = 0).
  std::vector<Bucket> buckets(K * I);
  auto bucket_of = [&](int64_t img, int64_t cat, const char* what, size_t idx) -> Bucket& {
    auto ii = img_pos.find(img);
    auto kk = cat_pos.find(cat);
    if (ii == img_pos.end() || kk == cat_pos.end())
      throw Error(fmt::format("coco eval: {}[{}] names image {} / category {} that the ground truth lacks", what, idx,
                              img, cat));
    return buckets[(p.use_cats ? kk->second : 0) * I + ii->second];
  };
  std::vector<size_t> ann_order(gt.annotations.size()), dt_order(dt.size());
  std::iota(ann_order.begin(), ann_order.end(), size_t(0));
  std::iota(dt_order.begin(), dt_order.end(), size_t(0));
  if (!p.use_cats) {
    std::stable_sort(ann_order.begin(), ann_order.end(), [&](size_t a, size_t b) {
      return gt.annotations[a].category_id < gt.annotations[b].category_id;
    });
    std::stable_sort(dt_order.begin(), dt_order.end(),
                     [&](size_t a, size_t b) { return dt[a].category_id < dt[b].category_id; });
  }
  for (size_t a : ann_order) {
    const auto& ann = gt.annotations[a];
    bucket_of(ann.image_id, ann.category_id, "annotations", a).gt.push_back(&ann);
  }
  for (size_t d : dt_order) bucket_of(dt[d].image_id, dt[d].category_id, "results", d).dt.push_back(d);

  // evaluateImg for every (category, area range, image); empty buckets stay absent (None).
  std::vector<std::vector<ImageEval>> evals(K * A * I);  // 0 or 1 element each
  for (size_t k = 0; k < K; ++k) {
    for (size_t i = 0; i < I; ++i) {
      const Bucket& b = buckets[k * I + i];
      if (b.gt.empty() && b.dt.empty()) continue;
      std::vector<double> scores;
      for (size_t d : b.dt) scores.push_back(dt[d].score);
      std::vector<size_t> dord = order_by_score(scores);
      if (dord.size() > max_det) dord.resize(max_det);
      const size_t D = dord.size(), G = b.gt.size();
      // IoU [D, G] with the ground truth in bucket order.
      std::vector<double> iou(D * G);
      for (size_t di = 0; di < D; ++di)
        for (size_t g = 0; g < G; ++g)
          iou[di * G + g] = coco_box_iou(dt[b.dt[dord[di]]].bbox, b.gt[g]->bbox, b.gt[g]->iscrowd);
      for (size_t a = 0; a < A; ++a) {
        const auto [lo, hi] = p.area_ranges[a];
        std::vector<char> ignore(G);
        for (size_t g = 0; g < G; ++g)
          ignore[g] = b.gt[g]->iscrowd || b.gt[g]->area < lo || b.gt[g]->area > hi;
        std::vector<size_t> gord(G);  // ignored last, stable
        std::iota(gord.begin(), gord.end(), size_t(0));
        std::stable_sort(gord.begin(), gord.end(), [&](size_t x, size_t y) { return ignore[x] < ignore[y]; });
        ImageEval e;
        e.gt_ignore.resize(G);
        for (size_t g = 0; g < G; ++g) e.gt_ignore[g] = ignore[gord[g]];
        e.dt_scores.resize(D);
        for (size_t di = 0; di < D; ++di) e.dt_scores[di] = dt[b.dt[dord[di]]].score;
        e.dt_match.assign(T, std::vector<int64_t>(D, 0));
        e.dt_ignore.assign(T, std::vector<char>(D, 0));
        if (D > 0 && G > 0) {
          for (size_t t = 0; t < T; ++t) {
            std::vector<int64_t> gt_match(G, 0);  // detection id (results index + 1, as loadRes)
            for (size_t di = 0; di < D; ++di) {
              double best = std::min(p.iou_thresholds[t], 1 - 1e-10);
              int64_t m = -1;
              for (size_t gi = 0; gi < G; ++gi) {
                const auto* g = b.gt[gord[gi]];
                if (gt_match[gi] > 0 && !g->iscrowd) continue;  // taken, and not a crowd
                if (m > -1 && !e.gt_ignore[size_t(m)] && e.gt_ignore[gi]) break;  // only ignored ones remain
                const double v = iou[di * G + gord[gi]];
                if (v < best) continue;
                best = v;
                m = int64_t(gi);
              }
              if (m == -1) continue;
              e.dt_ignore[t][di] = e.gt_ignore[size_t(m)];
              e.dt_match[t][di] = b.gt[gord[size_t(m)]]->id;
              gt_match[size_t(m)] = int64_t(b.dt[dord[di]]) + 1;
            }
          }
        }
        // Unmatched detections outside the area range are ignored.
        for (size_t di = 0; di < D; ++di) {
          const auto& box = dt[b.dt[dord[di]]].bbox;
          const double area = box[2] * box[3];
          if (area < lo || area > hi)
            for (size_t t = 0; t < T; ++t)
              if (e.dt_match[t][di] == 0) e.dt_ignore[t][di] = 1;
        }
        evals[(k * A + a) * I + i].push_back(std::move(e));
      }
    }
  }

  // accumulate
  CocoEvalResult r;
  r.T = int64_t(T), r.R = int64_t(R), r.K = int64_t(K), r.A = int64_t(A), r.M = int64_t(M);
  r.precision.assign(T * R * K * A * M, -1.0);
  r.recall.assign(T * K * A * M, -1.0);
  for (size_t k = 0; k < K; ++k) {
    for (size_t a = 0; a < A; ++a) {
      for (size_t m = 0; m < M; ++m) {
        const size_t md = size_t(p.max_dets[m]);
        std::vector<double> scores;
        std::vector<std::pair<const ImageEval*, size_t>> refs;  // (image eval, detection index)
        size_t npig = 0;
        bool any = false;
        for (size_t i = 0; i < I; ++i) {
          for (const ImageEval& e : evals[(k * A + a) * I + i]) {
            any = true;
            for (size_t di = 0; di < std::min(md, e.dt_scores.size()); ++di) {
              scores.push_back(e.dt_scores[di]);
              refs.emplace_back(&e, di);
            }
            npig += size_t(std::count(e.gt_ignore.begin(), e.gt_ignore.end(), char(0)));
          }
        }
        if (!any || npig == 0) continue;
        const std::vector<size_t> ord = order_by_score(scores);
        const size_t nd = ord.size();
        for (size_t t = 0; t < T; ++t) {
          std::vector<double> rc(nd), pr(nd);
          double tp = 0, fp = 0;
          for (size_t j = 0; j < nd; ++j) {
            const auto& [e, di] = refs[ord[j]];
            const bool matched = e->dt_match[t][di] != 0, ignored = e->dt_ignore[t][di] != 0;
            if (matched && !ignored) tp += 1;
            if (!matched && !ignored) fp += 1;
            rc[j] = tp / double(npig);
            pr[j] = tp / (fp + tp + kEps);
          }
          r.recall[((t * K + k) * A + a) * M + m] = nd ? rc.back() : 0.0;
          for (size_t j = nd; j-- > 1;)
            if (pr[j] > pr[j - 1]) pr[j - 1] = pr[j];
          for (size_t ri = 0; ri < R; ++ri) {
            const size_t pi = size_t(std::lower_bound(rc.begin(), rc.end(), p.recall_thresholds[ri]) - rc.begin());
            r.precision[(((t * R + ri) * K + k) * A + a) * M + m] = pi < nd ? pr[pi] : 0.0;
          }
        }
      }
    }
  }

  // summarize: means over the defined (> -1) entries.
  auto mean_of = [](const std::vector<double>& v) {
    double s = 0;
    size_t n = 0;
    for (double x : v)
      if (x > -1) s += x, ++n;
    return n ? s / double(n) : -1.0;
  };
  auto t_index = [&](double thr) -> int64_t {
    for (size_t t = 0; t < T; ++t)
      if (std::fabs(p.iou_thresholds[t] - thr) < 1e-12) return int64_t(t);
    return -1;
  };
  auto a_index = [&](const std::string& label) -> int64_t {
    for (size_t a = 0; a < A; ++a)
      if (p.area_labels[a] == label) return int64_t(a);
    return -1;
  };
  auto m_index = [&](int dets) -> int64_t {
    for (size_t m = 0; m < M; ++m)
      if (p.max_dets[m] == dets) return int64_t(m);
    return -1;
  };
  // AP (ap = true) or AR over IoU thresholds (thr < 0: all), categories in `ks` (empty: all).
  auto summarize = [&](bool ap, double thr, const std::string& area, int dets, int64_t only_k = -1) {
    const int64_t a = a_index(area), m = m_index(dets), t0 = thr < 0 ? -1 : t_index(thr);
    if (a < 0 || m < 0 || (thr >= 0 && t0 < 0)) return -1.0;
    std::vector<double> v;
    for (size_t t = 0; t < T; ++t) {
      if (t0 >= 0 && int64_t(t) != t0) continue;
      for (size_t k = 0; k < K; ++k) {
        if (only_k >= 0 && int64_t(k) != only_k) continue;
        if (ap) {
          for (size_t ri = 0; ri < R; ++ri) v.push_back(r.precision_at(int64_t(t), int64_t(ri), int64_t(k), a, m));
        } else {
          v.push_back(r.recall_at(int64_t(t), int64_t(k), a, m));
        }
      }
    }
    return mean_of(v);
  };
  const int d0 = p.max_dets[0], d1 = p.max_dets[std::min<size_t>(1, M - 1)], d2 = p.max_dets[std::min<size_t>(2, M - 1)];
  r.ap = summarize(true, -1, "all", d2);
  r.ap50 = summarize(true, 0.5, "all", d2);
  r.ap75 = summarize(true, 0.75, "all", d2);
  r.ap_small = summarize(true, -1, "small", d2);
  r.ap_medium = summarize(true, -1, "medium", d2);
  r.ap_large = summarize(true, -1, "large", d2);
  r.ar1 = summarize(false, -1, "all", d0);
  r.ar10 = summarize(false, -1, "all", d1);
  r.ar100 = summarize(false, -1, "all", d2);
  r.ar_small = summarize(false, -1, "small", d2);
  r.ar_medium = summarize(false, -1, "medium", d2);
  r.ar_large = summarize(false, -1, "large", d2);
  const int last = p.max_dets.back();
  r.category_ids = p.use_cats ? cat_ids : std::vector<int64_t>{-1};
  for (size_t k = 0; k < K; ++k) {
    r.category_ap.push_back(summarize(true, -1, "all", last, int64_t(k)));
    r.category_ap50.push_back(summarize(true, 0.5, "all", last, int64_t(k)));
    r.category_ar.push_back(summarize(false, -1, "all", last, int64_t(k)));
  }
  return r;
}

std::vector<double> CocoEvalResult::stats() const {
  return {ap, ap50, ap75, ap_small, ap_medium, ap_large, ar1, ar10, ar100, ar_small, ar_medium, ar_large};
}

std::string CocoEvalResult::summary() const {
  struct Line {
    bool ap;
    const char* iou;
    const char* area;
    int dets;
  };
  static const Line lines[12] = {{true, "0.50:0.95", "all", 100},    {true, "0.50", "all", 100},
                                 {true, "0.75", "all", 100},         {true, "0.50:0.95", "small", 100},
                                 {true, "0.50:0.95", "medium", 100}, {true, "0.50:0.95", "large", 100},
                                 {false, "0.50:0.95", "all", 1},     {false, "0.50:0.95", "all", 10},
                                 {false, "0.50:0.95", "all", 100},   {false, "0.50:0.95", "small", 100},
                                 {false, "0.50:0.95", "medium", 100}, {false, "0.50:0.95", "large", 100}};
  const auto s = stats();
  std::string out;
  for (size_t i = 0; i < 12; ++i) {
    const Line& l = lines[i];
    out += fmt::format(" {:<18} {} @[ IoU={:<9} | area={:>6} | maxDets={:>3} ] = {:0.3f}\n",
                       l.ap ? "Average Precision" : "Average Recall", l.ap ? "(AP)" : "(AR)", l.iou, l.area, l.dets,
                       s[i]);
  }
  return out;
}

nlohmann::json CocoEvalResult::to_json(const CocoDataset* gt) const {
  nlohmann::json j = {{"AP", ap},        {"AP50", ap50},   {"AP75", ap75},   {"APs", ap_small},
                      {"APm", ap_medium}, {"APl", ap_large}, {"AR1", ar1},     {"AR10", ar10},
                      {"AR100", ar100},   {"ARs", ar_small}, {"ARm", ar_medium}, {"ARl", ar_large}};
  nlohmann::json per = nlohmann::json::array();
  for (size_t k = 0; k < category_ids.size(); ++k) {
    nlohmann::json c = {{"id", category_ids[k]}, {"AP", category_ap[k]}, {"AP50", category_ap50[k]},
                        {"AR100", category_ar[k]}};
    if (gt) {
      const int64_t idx = gt->category_index(category_ids[k]);
      c["name"] = idx >= 0 ? gt->categories[size_t(idx)].name : std::string("all");
    }
    per.push_back(std::move(c));
  }
  j["per_category"] = std::move(per);
  return j;
}

}  // namespace florence::detect
