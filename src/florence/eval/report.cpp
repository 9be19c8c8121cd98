// florence report: static HTML page with training curves (gnuplot), eval tables, confusion
// matrices and retrieval examples (see report.h).
#include "florence/eval/report.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/eval/metrics.h"
#include "florence/eval/report_transfer.h"
#include "florence/eval/standard.h"

namespace fs = std::filesystem;

namespace florence::eval {

std::string html_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

namespace {

std::string shell_quote(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return o + "'";
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Series {
  std::vector<double> step;
  std::map<std::string, std::vector<double>> cols;  // NaN = missing
  std::vector<std::pair<double, std::string>> stage_changes;  // (step, new stage)
};

const std::vector<std::string> kColumns = {"loss", "lr", "logit_scale", "img_per_s", "data_wait_fraction"};

Series read_metrics(const fs::path& path, ReportResult& res) {
  Series s;
  for (const auto& c : kColumns) s.cols[c];
  std::ifstream in(path);
  std::string line, last_stage;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      if (res.bad_metrics_lines++ < 5) spdlog::warn("report: {}:{} is not valid JSON, skipped", path.string(), n);
      continue;
    }
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number()) {
      if (res.bad_metrics_lines++ < 5) spdlog::warn("report: {}:{} has no numeric \"step\", skipped", path.string(), n);
      continue;
    }
    const double step = j["step"].get<double>();
    s.step.push_back(step);
    for (const auto& c : kColumns) {
      double v = std::nan("");
      if (j.contains(c) && j[c].is_number()) v = j[c].get<double>();
      s.cols[c].push_back(v);
    }
    if (j.contains("stage")) {
      const std::string st = j["stage"].is_string() ? j["stage"].get<std::string>() : j["stage"].dump();
      if (!last_stage.empty() && st != last_stage) s.stage_changes.emplace_back(step, st);
      last_stage = st;
    }
    res.metrics_lines++;
  }
  if (res.bad_metrics_lines > 0)
    res.warnings.push_back(fmt::format("{} line(s) of metrics.jsonl skipped (invalid JSON or no step)", res.bad_metrics_lines));
  return s;
}

/// "stage 2" for a stage value, reduced to letters, digits, ' ', '-', '.' (it goes into a gnuplot string).
std::string stage_label(const std::string& stage) {
  std::string v;
  for (char c : stage)
    if (std::isalnum(static_cast<unsigned char>(c)) || c == ' ' || c == '-' || c == '.') v += c;
  return "stage " + (v.empty() ? std::string("?") : v);
}

struct Plot {
  std::string column, file, title, ylabel;
  bool logy = false;
};

/// Writes metrics.tsv + plots.gp into `dir`, runs gnuplot there; returns the PNGs produced.
/// `kind`: config.json's "kind" ("" for pretraining, whose config has none): names the loss, and only
/// pretraining has a logit scale to miss.
std::vector<std::pair<Plot, std::string>> make_plots(const Series& s, const fs::path& dir, const ReportOptions& o,
                                                     const std::string& kind, ReportResult& res) {
  const bool pretraining = kind.empty() || kind == "pretrain";
  const std::vector<Plot> plots = {{"loss", "loss.png", pretraining ? "training loss (UniCL)" : "training loss (" + kind + ")",
                                    "loss", false},
                                   {"lr", "lr.png", "learning rate", "lr", false},
                                   {"logit_scale", "logit_scale.png", "logit scale", "logit scale", false},
                                   {"img_per_s", "throughput.png", "throughput", "images / s", false}};
  {
    std::ofstream tsv(dir / "metrics.tsv");
    tsv << "# step";
    for (const auto& c : kColumns) tsv << '\t' << c;
    tsv << '\n';
    for (size_t i = 0; i < s.step.size(); ++i) {
      tsv << fmt::format("{}", s.step[i]);
      for (const auto& c : kColumns) {
        const double v = s.cols.at(c)[i];
        tsv << '\t' << (std::isfinite(v) ? fmt::format("{:.9g}", v) : std::string("?"));
      }
      tsv << '\n';
    }
  }
  std::string gp =
      "# generated by florence report\n"
      "set terminal pngcairo size 640,400 enhanced font 'sans,10'\n"
      "set datafile separator '\\t'\n"
      "set datafile missing '?'\n"
      "set grid\nset key off\nset xlabel 'step'\n";
  for (const auto& [step, stage] : s.stage_changes) {
    gp += fmt::format("set arrow from {0}, graph 0 to {0}, graph 1 nohead dashtype 2 lc rgb '#888888'\n", step);
    gp += fmt::format("set label \"{1} →\" at {0}, graph 0.96 left offset 0.4,0 noenhanced "
                      "tc rgb '#555555' font ',9'\n",
                      step, stage_label(stage));
  }
  std::vector<std::pair<Plot, std::string>> made;
  for (const auto& p : plots) {
    const auto& v = s.cols.at(p.column);
    const auto finite = std::count_if(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
    if (finite == 0) {
      if (pretraining || p.column != "logit_scale")
        res.warnings.push_back("no '" + p.column + "' values in metrics.jsonl: plot '" + p.title + "' left out");
      continue;
    }
    const int col = 2 + int(std::find(kColumns.begin(), kColumns.end(), p.column) - kColumns.begin());
    gp += fmt::format("set output '{}'\nset title '{}'\nset ylabel '{}'\nplot 'metrics.tsv' using 1:{} with {} lw 1.5 lc rgb '#1f77b4'\n",
                      p.file, p.title, p.ylabel, col, finite == 1 ? "points pt 7" : "lines");
    made.emplace_back(p, (dir / p.file).string());
  }
  gp += "set output\n";
  {
    std::ofstream f(dir / "plots.gp");
    f << gp;
  }
  if (made.empty()) return made;
  for (const auto& [p, file] : made) fs::remove(file);
  const std::string cmd = "cd " + shell_quote(dir.string()) + " && " + shell_quote(o.gnuplot) + " plots.gp > plots.log 2>&1";
  const int rc = std::system(cmd.c_str());
  std::vector<std::pair<Plot, std::string>> ok;
  for (const auto& m : made)
    if (fs::is_regular_file(m.second) && fs::file_size(m.second) > 0) ok.push_back(m);
  if (rc != 0 || ok.size() != made.size()) {
    std::string log = read_all(dir / "plots.log");
    if (log.size() > 400) log = log.substr(0, 400) + "...";
    res.warnings.push_back(fmt::format("gnuplot failed (exit status {}; install Debian gnuplot with scripts/setup): {}", rc, log));
  }
  return ok;
}

std::string pct(double v) { return fmt::format("{:.2f}", 100.0 * v); }

// The one-sided p-value against chance of a zero-shot metric (metrics.h), or "" when the result has none.
std::string p_value(const nlohmann::json& metrics, const char* key) {
  if (!metrics.contains("p_value") || !metrics["p_value"].contains(key) || !metrics["p_value"][key].is_number()) return "";
  return format_p_value(metrics["p_value"][key].get<double>());
}

std::string confusion_table(const nlohmann::json& m, const nlohmann::json& prompt_names) {
  const auto classes = m.at("classes").get<std::vector<std::string>>();
  const auto conf = m.at("confusion").get<std::vector<std::vector<int64_t>>>();
  std::string h = "<table class=conf><tr><th>true \\ predicted</th>";
  for (size_t c = 0; c < classes.size(); ++c)
    h += "<th title=\"" + html_escape(classes[c]) + "\">" + std::to_string(c) + "</th>";
  h += "<th>n</th><th>acc %</th></tr>\n";
  for (size_t t = 0; t < conf.size(); ++t) {
    int64_t row = 0;
    for (int64_t v : conf[t]) row += v;
    // The words the class was put into the prompts as, where they differ from its name.
    std::string words;
    if (prompt_names.is_object() && prompt_names.contains(classes[t]) && prompt_names[classes[t]].is_string() &&
        prompt_names[classes[t]].get<std::string>() != classes[t])
      words = " <small>(“" + html_escape(prompt_names[classes[t]].get<std::string>()) + "”)</small>";
    h += "<tr><th class=cls>" + std::to_string(t) + " " + html_escape(classes[t]) + words + "</th>";
    for (size_t p = 0; p < conf[t].size(); ++p) {
      const double f = row > 0 ? double(conf[t][p]) / double(row) : 0.0;
      const int shade = int(std::lround(255 - 200 * f));
      h += fmt::format("<td style=\"background:rgb({0},{0},255)\"{1}>{2}</td>", shade, p == t ? " class=diag" : "",
                       conf[t][p]);
    }
    h += "<td class=num>" + std::to_string(row) + "</td><td class=num>" +
         (row > 0 ? pct(double(conf[t][t]) / double(row)) : std::string("-")) + "</td></tr>\n";
  }
  return h + "</table>\n";
}

/// Metrics-table rows: `task` is HTML (escaped by whoever builds it), the rest is plain text.
struct TableRow {
  std::string set, task_html, metric, value, chance, p;
};

/// The table, consecutive rows of one set (and of one task within it) merged into one cell (rowspan).
std::string metrics_table(const std::vector<TableRow>& rows) {
  std::string h = "<table class=metrics><tr><th>set</th><th>task</th><th>metric</th><th>value</th><th>chance</th>"
                  "<th>p vs chance</th></tr>\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const TableRow& r = rows[i];
    h += "<tr>";
    if (i == 0 || rows[i - 1].set != r.set) {
      size_t n = 1;
      while (i + n < rows.size() && rows[i + n].set == r.set) ++n;
      h += fmt::format("<td rowspan={}>{}</td>", n, html_escape(r.set));
    }
    if (i == 0 || rows[i - 1].set != r.set || rows[i - 1].task_html != r.task_html) {
      size_t n = 1;
      while (i + n < rows.size() && rows[i + n].set == r.set && rows[i + n].task_html == r.task_html) ++n;
      h += fmt::format("<td rowspan={} class=task>{}</td>", n, r.task_html);
    }
    h += "<td>" + html_escape(r.metric) + "</td><td class=num>" + html_escape(r.value) + "</td><td class=num>" +
         html_escape(r.chance) + "</td><td class=num>" + html_escape(r.p) + "</td></tr>\n";
  }
  return h + "</table>\n";
}

/// The task cell of a zero-shot result: counts, "[seen]" where its labels are pretraining targets,
/// and the prompt setting with how it was chosen (standard.h describe_prompt_choice).
std::string zero_shot_task_html(const nlohmann::json& j) {
  const auto& m = j.at("metrics");
  std::string h = "zero-shot";
  if (j.value("labels_seen_in_pretraining", false)) h += " <b title=\"its class labels are training targets\">[seen]</b>";
  h += fmt::format(" ({} images, {} classes)", m.at("num_samples").get<int64_t>(), m.at("num_classes").get<int64_t>());
  if (const std::string p = describe_prompt_choice(j); !p.empty()) h += "<br><small>" + html_escape(p) + "</small>";
  return h;
}

/// `s` cut to at most `max` characters (UTF-8 aware) with "…" when cut.
std::string shorten(const std::string& s, size_t max) {
  size_t chars = 0, i = 0;
  for (; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80 && chars++ == max) break;
  }
  return i >= s.size() ? s : s.substr(0, i) + "…";
}

/// The sentence above a retrieval result's examples: how its rows were chosen.
std::string example_selection_html(const nlohmann::json& j, size_t shown) {
  if (!j.contains("example_selection") || !j["example_selection"].is_object())
    return "<p class=note>Rows: text queries evenly spaced over the test texts (this result does not record a "
           "seeded sample; run <code>florence eval</code> again for one with hits and misses).</p>\n";
  const auto& s = j["example_selection"];
  std::string r1;
  if (j.contains("text_to_image") && j["text_to_image"].contains("R@1"))
    r1 = fmt::format("; text→image R@1 is {}%, so hits are shown more often than they occur",
                     pct(j["text_to_image"]["R@1"].get<double>()));
  return fmt::format("<p class=note>Rows: {} of the {} text queries, drawn at random (seed {}): {} of the {} hits "
                     "(first image correct, ✓) and {} of the {} misses (✗){}. Green outline: a correct image; under "
                     "each image its caption, key and cosine score.</p>\n",
                     shown, s.value("queries", 0), s.value("seed", 0), s.value("shown_hits", 0), s.value("hits", 0),
                     s.value("shown_misses", 0), s.value("misses", 0), r1);
}

}  // namespace

ReportResult write_report(const ReportOptions& o) {
  const fs::path run(o.run_dir);
  if (!fs::is_directory(run)) throw Error("report: '" + o.run_dir + "' is not a directory");
  ReportResult res;
  const fs::path files = run / "report_files";
  fs::create_directories(files);

  std::string body;
  // ---- training curves
  body += "<h2>Training</h2>\n";
  const fs::path metrics = run / "metrics.jsonl";
  if (fs::is_regular_file(metrics)) {
    Series s = read_metrics(metrics, res);
    if (s.step.empty()) {
      res.warnings.push_back("metrics.jsonl has no usable line");
    } else {
      const double last_loss = s.cols.at("loss").back();
      body += fmt::format("<p>{} logged steps (step {} to {}), last loss {}.</p>\n", s.step.size(), s.step.front(),
                          s.step.back(), std::isfinite(last_loss) ? fmt::format("{:.4f}", last_loss) : std::string("-"));
      std::string kind;  // the training task (config.json "kind"; absent for pretraining)
      try {
        if (fs::is_regular_file(run / "config.json")) {
          const auto cfg = nlohmann::json::parse(read_all(run / "config.json"));
          if (cfg.is_object() && cfg.contains("kind") && cfg["kind"].is_string())
            for (char c : cfg["kind"].get<std::string>())  // it goes into a gnuplot string: plain characters only
              if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ' ') kind += c;
        }
      } catch (const nlohmann::json::exception&) {
        res.warnings.push_back("config.json is not valid JSON");
      }
      auto plots = make_plots(s, files, o, kind, res);
      body += "<div class=plots>\n";
      std::string stages;  // the dashed lines of the plots
      for (const auto& [step, stage] : s.stage_changes)
        stages += fmt::format("{}{} starts at step {}", stages.empty() ? "; dashed line: " : ", ", stage_label(stage), step);
      for (const auto& [p, file] : plots) {
        body += "<figure><img src=\"report_files/" + p.file + "\" alt=\"" + html_escape(p.title) + "\" width=640 height=400><figcaption>" +
                html_escape(p.title + " vs step" + stages) + "</figcaption></figure>\n";
        res.images.push_back(fs::absolute(file).string());
      }
      body += "</div>\n";
    }
  } else {
    res.warnings.push_back("no metrics.jsonl in the run folder: no training curves");
  }

  // ---- eval results, in the order of `florence eval all`'s table (standard sets, zero-shot then
  // retrieval), other sets and tasks after them by name
  struct Result {
    fs::path path;
    nlohmann::json j;
    std::tuple<size_t, std::string, int, std::string> order;
  };
  std::vector<Result> results;
  if (fs::is_directory(run / "eval"))
    for (const auto& e : fs::directory_iterator(run / "eval")) {
      if (!e.is_regular_file() || e.path().extension() != ".json") continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(read_all(e.path()));
      } catch (const nlohmann::json::exception&) {
        res.warnings.push_back("eval result " + e.path().filename().string() + " is not valid JSON: skipped");
        continue;
      }
      if (!j.is_object() || !j.contains("task")) continue;  // e.g. summary.json of `eval all`
      // A "set" that is not a string names the row by its file, as a missing one does.
      const std::string set = j.contains("set") && j["set"].is_string() ? j["set"].get<std::string>()
                                                                        : e.path().stem().string();
      const std::string task = j["task"].is_string() ? j["task"].get<std::string>() : "";
      const auto& std_sets = standard_sets();
      const size_t set_rank = size_t(std::find_if(std_sets.begin(), std_sets.end(), [&](const StandardSet& s) { return s.name == set; }) -
                                     std_sets.begin());
      const std::vector<std::string> tasks{"zero-shot",          "retrieval",          "linear-probe",   "few-shot",
                                           "finetune",           "finetune-retrieval", "detection", "zero-shot detection",
                                           "vqa-eval"};
      const int task_rank = int(std::find(tasks.begin(), tasks.end(), task) - tasks.begin());
      results.push_back({e.path(), std::move(j), {set_rank, set, task_rank, e.path().filename().string()}});
    }
  std::sort(results.begin(), results.end(), [](const Result& a, const Result& b) { return a.order < b.order; });
  std::map<std::string, std::vector<std::string>> checkpoints;  // checkpoint -> result files that name it
  std::vector<TableRow> table;
  std::string details;
  int64_t ex_id = 0;
  for (const auto& [path, j, order] : results) {
    const std::string task = j["task"].is_string() ? j["task"].get<std::string>() : "";
    const std::string set = std::get<1>(order);
    if (j.contains("model") && j["model"].is_object() && j["model"].contains("checkpoint") && j["model"]["checkpoint"].is_string())
      checkpoints[j["model"]["checkpoint"].get<std::string>()].push_back(path.filename().string());
    try {
      if (task == "zero-shot") {
        const auto& m = j.at("metrics");
        const auto& ch = m.at("chance");
        const std::string t = zero_shot_task_html(j);
        for (const auto& [key, label] : {std::pair<const char*, const char*>{"top1", "top-1 %"}, {"top5", "top-5 %"},
                                         {"mean_per_class", "mean per-class %"}})
          table.push_back({set, t, label, pct(m.at(key).get<double>()), pct(ch.at(key).get<double>()), p_value(m, key)});
        details += "<h3>Confusion matrix: " + html_escape(set) + " (zero-shot, rows = true class; the words in its prompts "
                   "in quotes where they differ from the class name)</h3>\n" +
                   confusion_table(m, j.value("prompt_names", nlohmann::json::object()));
      } else if (task == "retrieval") {
        for (const auto& r : retrieval_report_rows(j, "retrieval "))  // report_transfer.h
          table.push_back({set, html_escape(r.task), r.metric, r.value, r.chance, ""});
        if (j.contains("examples") && !j["examples"].empty()) {
          const size_t shown = std::min<size_t>(j["examples"].size(), size_t(std::max<int64_t>(o.max_examples, 0)));
          details += "<h3>Retrieval examples: " + html_escape(set) + " (text query → its top-5 images)</h3>\n" +
                     example_selection_html(j, shown) + "<table class=ex>\n";
          for (size_t e = 0; e < shown; ++e) {
            const auto& ex = j["examples"][e];
            const bool hit = ex.contains("hit") ? ex.value("hit", false) : ex.value("rank", 0) == 1;
            details += std::string("<tr><td class=query><span class=") + (hit ? "\"mark hit\">✓ hit" : "\"mark miss\">✗ miss") +
                       "</span> " + html_escape(ex.value("query", "")) + "<br><small>rank of its first correct image: " +
                       (ex.contains("rank") ? ex["rank"].dump() : std::string("?")) + "</small></td>";
            int64_t k = 0;
            for (const auto& t : ex.value("top", nlohmann::json::array())) {
              const bool correct = t.value("correct", false);
              const std::string key = t.value("key", ""), caption = t.value("text", "");
              std::string cell = "<td class=\"" + std::string(correct ? "hit" : "miss") + "\">";
              const std::string src = t.value("image", "");
              fs::path img = src.empty() ? fs::path() : (fs::path(src).is_absolute() ? fs::path(src) : path.parent_path() / src);
              if (!src.empty() && fs::is_regular_file(img)) {
                const std::string name = fmt::format("ex_{}_{}.png", ex_id, k);
                fs::copy_file(img, files / name, fs::copy_options::overwrite_existing);
                res.images.push_back(fs::absolute(files / name).string());
                cell += "<img src=\"report_files/" + name + "\" alt=\"" + html_escape(caption.empty() ? key : caption) +
                        "\" width=96 height=96>";
              } else {
                cell += "<div class=noimg>no image</div>";
                if (!src.empty()) res.warnings.push_back("retrieval example image missing: " + img.string());
              }
              if (!caption.empty())
                cell += "<div class=cap title=\"" + html_escape(caption) + "\">" + html_escape(shorten(caption, 90)) + "</div>";
              cell += fmt::format("<div class=key>{} · {:.3f}</div></td>", html_escape(key), t.value("score", 0.0));
              details += cell;
              ++k;
            }
            details += "</tr>\n";
            ++ex_id;
          }
          details += "</table>\n";
        }
      } else if (const auto rows = transfer_report_rows(j); !rows.empty()) {  // report_transfer.h
        for (const auto& r : rows) table.push_back({set, html_escape(r.task), r.metric, r.value, r.chance, ""});
      } else {
        continue;
      }
      res.eval_results++;
    } catch (const nlohmann::json::exception& e) {
      res.warnings.push_back("eval result " + path.filename().string() + " lacks an expected field (" + e.what() + "): skipped");
    }
  }
  body += "<h2>Evaluation (held-out)</h2>\n";
  if (checkpoints.size() > 1) {  // e.g. results of an older checkpoint left beside new ones
    std::string which;
    for (const auto& [ckpt, files] : checkpoints)
      which += (which.empty() ? "" : "; ") + ckpt + ": " + fmt::format("{}", fmt::join(files, ", "));
    res.warnings.push_back("the eval results come from " + std::to_string(checkpoints.size()) + " checkpoints (" + which +
                           "); run `florence eval all` again for one checkpoint");
    body += "<p><b>Warning:</b> these results come from " + std::to_string(checkpoints.size()) + " checkpoints: " +
            html_escape(which) + ".</p>\n";
  }
  if (table.empty()) {
    res.warnings.push_back("no eval results in " + (run / "eval").string() + " (run `florence eval all ... --out-dir RUN_DIR/eval`)");
    body += "<p>No evaluation results.</p>\n";
  } else {
    body += metrics_table(table) +
            "<p><small>Chance: what a uniformly random ranking scores on the same queries (exact, see "
            "src/florence/eval/metrics.h); for detection rows, the baseline named in the task cell (COCO mAP of "
            "random boxes drawn from the training boxes); for VQA rows, the prior baseline (the most frequent training "
            "answer of each question type, scored with the official VQA accuracy). Ties count against the model. p vs chance (zero-shot): the probability that "
            "uniform random guessing scores at least as high (binomial, exact; mean per class simulated). [seen]: the "
            "set's class labels are pretraining targets (Fashion-MNIST through <code>--labelled</code>), so that row is "
            "not zero-shot transfer. Prompts: the template set (<code>ensemble</code> or <code>bare</code> words) and "
            "the class words (<code>table</code>: the built-in or given class-name table; <code>names</code>: the "
            "class names as they are), chosen by top-1 on the val split, never on the reported one.</small></p>\n" +
            details;
  }

  // ---- config
  if (fs::is_regular_file(run / "config.json")) {
    body += "<h2>Configuration</h2>\n<details><summary>config.json</summary><pre>" + html_escape(read_all(run / "config.json")) +
            "</pre></details>\n";
  }
  for (const auto& w : res.warnings) spdlog::warn("report: {}", w);

  std::string html =
      "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>florence report: " + html_escape(run.filename().string()) +
      "</title>\n<style>\n"
      // Nothing may be wider than the window (1280 px is checked in tests/e2e/eval/test_report.cpp): long
      // captions, keys and paths break anywhere, images shrink, the example grid has fixed columns.
      "body{font-family:sans-serif;margin:2em;max-width:1400px;overflow-wrap:anywhere}\n"
      "img{max-width:100%;height:auto}pre{white-space:pre-wrap}\n"
      "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}\n"
      "td{vertical-align:top}td.num{text-align:right;white-space:nowrap}td.task{max-width:34em}\n"
      ".conf td{text-align:right;min-width:2em}.conf td.diag{font-weight:bold}\n"
      ".conf th.cls{text-align:left}.plots{display:flex;flex-wrap:wrap;gap:1em}\n"
      ".plots figure{margin:0;max-width:100%}.note{font-size:13px;color:#333}\n"
      "table.ex{table-layout:fixed;width:100%}.ex td{text-align:center}.ex td.query{text-align:left;width:22%}\n"
      ".ex td.hit img{outline:3px solid #2a2}.ex td.miss img{outline:1px solid #ccc}\n"
      ".ex .cap{font-size:12px;margin-top:3px}.ex .key{font-size:11px;color:#777}\n"
      ".mark{font-weight:bold;white-space:nowrap}.mark.hit{color:#2a2}.mark.miss{color:#b33}\n"
      ".noimg{width:96px;height:96px;background:#eee;margin:auto}.warn{color:#a50}\n</style></head><body>\n"
      "<h1>florence report: " + html_escape(fs::absolute(run).lexically_normal().string()) + "</h1>\n";
  if (!res.warnings.empty()) {
    html += "<ul class=warn>\n";
    for (const auto& w : res.warnings) html += "<li>" + html_escape(w) + "</li>\n";
    html += "</ul>\n";
  }
  html += body + "</body></html>\n";
  res.html_path = (run / "report.html").string();
  core::write_text_atomic(res.html_path, html);
  return res;
}

}  // namespace florence::eval
