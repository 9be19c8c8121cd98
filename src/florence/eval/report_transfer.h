#pragma once
// Rows of the `florence report` metrics table for the transfer results: "linear-probe" and
// "few-shot" (florence eval ...), "finetune" and "finetune-retrieval" (florence finetune), and the
// adapters' COCO box mAP ("detection", "zero-shot detection": florence detect eval / zero-shot) and
// VQA accuracy ("vqa-eval": florence vqa eval / vqa train).
#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

namespace florence::eval {

struct ReportRow {
  std::string task, metric, value, chance;  ///< value / chance already formatted
};

/// The table rows of one result file's JSON; empty when `result` is not a transfer result.
/// Throws nlohmann::json::exception when a transfer result lacks an expected field (the report
/// turns that into a warning).
std::vector<ReportRow> transfer_report_rows(const nlohmann::json& result);

/// The rows of a retrieval result object (image→text then text→image: R@1/5/10, median rank), the
/// task cell starting with `prefix`. Throws nlohmann::json::exception when a field is missing.
std::vector<ReportRow> retrieval_report_rows(const nlohmann::json& retrieval, const std::string& prefix);

}  // namespace florence::eval
