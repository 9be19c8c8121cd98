#pragma once
// `florence report RUN_DIR`: a static HTML page RUN_DIR/report.html for a pretraining run.
//
// Inputs (each optional; what is missing is stated on the page and logged):
//   RUN_DIR/metrics.jsonl   one JSON object per training step (florence pretrain): step, stage,
//                           loss, lr, logit_scale, img_per_s, data_wait_fraction, ...
//   RUN_DIR/config.json     the run's configuration (shown collapsed)
//   RUN_DIR/eval/*.json     result files of `florence eval` (task "zero-shot" / "retrieval"; the
//                           transfer tasks "linear-probe", "few-shot", "finetune",
//                           "finetune-retrieval" and the adapters' "detection" / "zero-shot detection"
//                           add rows through report_transfer.h)
// Outputs, all next to the page (RUN_DIR/report_files/):
//   metrics.tsv + plots.gp  the data and the gnuplot script (Debian `gnuplot`, pngcairo terminal)
//   loss.png lr.png logit_scale.png throughput.png   training curves vs step (a stage change is a
//                           dashed line labelled "stage N ->", also named in the figure caption)
//   ex_<e>_<k>.png          retrieval example images, copied from the eval result's example files
// The metrics table lists every eval number next to its chance level, in the order of `florence eval
// all`'s table (fashion-mnist, openclipart, emoji; zero-shot before retrieval; then other sets and
// tasks by name). A zero-shot row shows "[seen]" when its labels are pretraining targets and the
// prompt setting with how it was chosen (standard.h describe_prompt_choice); its confusion matrix
// follows as an HTML table (cell shade = row-normalised count; the class's prompt words in quotes).
// Each retrieval result adds a grid of query text -> top-5 images, each with its caption, key and
// score (correct ones outlined green), the rows marked hit / miss and the page saying how they were
// sampled (retrieval.h "example_selection"). The page fits a 1280 px wide window (long texts wrap).
#include <cstdint>
#include <string>
#include <vector>

namespace florence::eval {

struct ReportOptions {
  std::string run_dir;
  std::string gnuplot = "gnuplot";  ///< executable name or path
  int64_t max_examples = 8;         ///< retrieval example rows per result
};

struct ReportResult {
  std::string html_path;                ///< RUN_DIR/report.html
  std::vector<std::string> images;      ///< every image file the page references (absolute)
  int64_t metrics_lines = 0;            ///< metrics.jsonl lines used
  int64_t bad_metrics_lines = 0;        ///< lines skipped (invalid JSON / no numeric step), logged
  int64_t eval_results = 0;             ///< eval result files shown
  std::vector<std::string> warnings;    ///< also logged and shown on the page
};

/// Builds the page (written atomically). Throws florence::Error when run_dir is not a directory
/// or the page cannot be written. Missing inputs, bad lines and a failing gnuplot are warnings.
ReportResult write_report(const ReportOptions& options);

/// HTML-escapes & < > " '.
std::string html_escape(const std::string& s);

}  // namespace florence::eval
