// `florence report` on a small fake run folder, opened in headless Chromium (Debian `chromium`):
// the rendered DOM holds every <img> (plots, retrieval examples), each referenced PNG exists and
// decodes, the metrics table shows the eval numbers, and a screenshot of the page is not blank.
#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int sh(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return rc == -1 ? -1 : (rc >> 8);
}

std::string chromium() {
  for (const char* c : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
    if (fs::exists(c)) return c;
  return {};
}

/// The flags for a sandbox-less, offline, headless run (root in a container, no network).
std::string chromium_cmd(const fs::path& profile) {
  return chromium() + " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
                      " --disable-component-update --disable-sync --user-data-dir=" + profile.string();
}

void write_png(const fs::path& p, int seed) {
  cv::Mat img(48, 48, CV_8UC3, cv::Scalar(40 * seed % 255, 90, 200));
  cv::circle(img, {24, 24}, 10 + seed, cv::Scalar(0, 0, 0), -1);
  ASSERT_TRUE(cv::imwrite(p.string(), img));
}

}  // namespace

TEST(Report, RendersInHeadlessChromiumWithItsImages) {
  ASSERT_FALSE(chromium().empty()) << "Debian package chromium is missing (scripts/setup installs it)";
  const fs::path run = fs::path(FLORENCE_TEST_TMP) / "e2e_eval_report" / "run";
  fs::remove_all(run.parent_path());
  fs::create_directories(run / "eval" / "ret_examples");

  {  // 40 training steps over two stages
    std::ofstream m(run / "metrics.jsonl");
    for (int s = 1; s <= 40; ++s) {
      nlohmann::json j{{"step", s},          {"stage", s <= 25 ? 1 : 2}, {"loss", 4.0 * std::exp(-s / 15.0) + 0.5},
                       {"lr", 1e-3 * std::min(1.0, s / 5.0)}, {"logit_scale", 14.3 + 0.1 * s}, {"img_per_s", 120.0 + (s % 7)},
                       {"data_wait_fraction", 0.05}};
      m << j.dump() << "\n";
    }
    m << "this line is not JSON\n";
  }
  std::ofstream(run / "config.json") << R"({"model": {"name": "florence-nano"}, "total_steps": 40})";
  nlohmann::json zs = {{"task", "zero-shot"},
                       {"set", "emoji"},
                       {"model", {{"checkpoint", "runs/x/model.safetensors"}}},
                       {"metrics",
                        {{"num_samples", 6}, {"num_classes", 3}, {"classes", {"Animals & Nature", "Food & Drink", "Symbols"}},
                         {"top1", 0.5}, {"top5", 1.0}, {"mean_per_class", 0.5},
                         {"chance", {{"top1", 1.0 / 3}, {"top5", 1.0}, {"mean_per_class", 1.0 / 3}}},
                         {"p_value", {{"top1", 0.31961591220850476}, {"top5", 1.0}, {"mean_per_class", 1e-320}}},
                         {"confusion", {{2, 0, 0}, {1, 1, 0}, {1, 1, 0}}}}}};
  std::ofstream(run / "eval" / "emoji_zero_shot.json") << zs.dump(2);
  // From another checkpoint than the zero-shot result: the report warns that they are mixed.
  nlohmann::json ret = {{"task", "retrieval"}, {"set", "emoji"}, {"num_images", 5}, {"num_texts", 4},
                        {"model", {{"checkpoint", "runs/x/checkpoints/step_0000020.safetensors"}}}};
  for (const char* dir : {"image_to_text", "text_to_image"})
    ret[dir] = {{"R@1", 0.4}, {"R@5", 1.0}, {"R@10", 1.0}, {"median_rank", 2.0},
                {"chance", {{"R@1", 0.25}, {"R@5", 1.0}, {"R@10", 1.0}, {"median_rank", 2.0}}}};
  nlohmann::json ex = nlohmann::json::array();
  for (int q = 0; q < 2; ++q) {
    nlohmann::json top = nlohmann::json::array();
    for (int k = 0; k < 5; ++k) {
      const std::string name = "img_" + std::to_string(q * 5 + k) + ".png";
      write_png(run / "eval" / "ret_examples" / name, q * 5 + k);
      top.push_back({{"key", "k" + std::to_string(k)}, {"score", 0.9 - 0.1 * k}, {"correct", k == q},
                     {"image", "ret_examples/" + name}});
    }
    ex.push_back({{"query", q == 0 ? "grinning face <b>" : "red apple"}, {"rank", q + 1}, {"top", top}});
  }
  ret["examples"] = ex;
  std::ofstream(run / "eval" / "emoji_retrieval.json") << ret.dump(2);

  const fs::path log = run.parent_path() / "report.log";
  ASSERT_EQ(sh(std::string(FLORENCE_CLI) + " report " + run.string() + " > " + log.string() + " 2>&1"), 0) << read_file(log);
  const fs::path html = run / "report.html";
  ASSERT_TRUE(fs::is_regular_file(html));
  const std::string page = read_file(html);
  EXPECT_NE(page.find("grinning face &lt;b&gt;"), std::string::npos);  // escaped
  EXPECT_NE(page.find("1 line(s) of metrics.jsonl skipped"), std::string::npos);
  EXPECT_NE(page.find("these results come from 2 checkpoints: runs/x/checkpoints/step_0000020.safetensors: "
                      "emoji_retrieval.json; runs/x/model.safetensors: emoji_zero_shot.json"),
            std::string::npos);

  // Chromium: the DOM it renders.
  const fs::path dom = run.parent_path() / "dom.html", err = run.parent_path() / "chromium.log";
  ASSERT_EQ(sh(chromium_cmd(run.parent_path() / "profile1") + " --dump-dom file://" + html.string() + " > " + dom.string() +
               " 2> " + err.string()),
            0)
      << read_file(err);
  const std::string d = read_file(dom);
  EXPECT_NE(d.find("<table class=\"metrics\">"), std::string::npos);
  EXPECT_NE(d.find("40.00"), std::string::npos);  // R@1 of the fake result, in percent
  EXPECT_NE(d.find("33.33"), std::string::npos);  // zero-shot chance top-1
  EXPECT_NE(d.find("<td class=\"num\">0.32</td>"), std::string::npos);  // its p-value, 2 significant digits
  EXPECT_NE(d.find("<td class=\"num\">&lt;1e-300</td>"), std::string::npos);  // a p-value below double's range
  std::regex img_re("<img src=\"([^\"]+)\"");
  std::set<std::string> srcs;
  for (auto it = std::sregex_iterator(d.begin(), d.end(), img_re); it != std::sregex_iterator(); ++it) srcs.insert((*it)[1]);
  // 4 plots + 2 x 5 example images.
  EXPECT_EQ(srcs.size(), 14u);
  for (const char* plot : {"report_files/loss.png", "report_files/lr.png", "report_files/logit_scale.png",
                           "report_files/throughput.png"})
    EXPECT_TRUE(srcs.count(plot)) << plot;
  for (const auto& s : srcs) {
    cv::Mat img = cv::imread((run / s).string(), cv::IMREAD_UNCHANGED);
    EXPECT_FALSE(img.empty()) << s << " does not decode";
  }
  cv::Mat loss = cv::imread((run / "report_files/loss.png").string());
  ASSERT_FALSE(loss.empty());
  EXPECT_EQ(loss.cols, 640);
  EXPECT_EQ(loss.rows, 400);

  // Chromium: a screenshot of the page is not blank (several distinct colours, not uniform).
  const fs::path shot = run.parent_path() / "shot.png";
  ASSERT_EQ(sh(chromium_cmd(run.parent_path() / "profile2") + " --window-size=1280,2400 --screenshot=" + shot.string() +
               " file://" + html.string() + " > " + err.string() + " 2>&1"),
            0)
      << read_file(err);
  cv::Mat s = cv::imread(shot.string());
  ASSERT_FALSE(s.empty());
  EXPECT_EQ(s.cols, 1280);
  cv::Scalar mean, stddev;
  cv::meanStdDev(s, mean, stddev);
  EXPECT_GT(stddev[0] + stddev[1] + stddev[2], 10.0);
  // The plots are drawn: the blue loss curve (#1f77b4 in BGR ~ (180, 119, 31)) appears somewhere.
  cv::Mat mask;
  cv::inRange(s, cv::Scalar(150, 90, 0), cv::Scalar(210, 150, 70), mask);
  EXPECT_GT(cv::countNonZero(mask), 100);
}
