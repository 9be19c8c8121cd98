// `florence report` on a small fake run folder, opened in headless Chromium (Debian `chromium`):
// the rendered DOM holds every <img> (plots, retrieval examples), each referenced PNG exists and
// decodes, the metrics table shows the eval numbers in `eval all`'s order with [seen] and the prompt
// setting, examples show captions and hit/miss marks, the stage line is labelled, nothing is wider
// than a 1280 px window, and a screenshot of the page is not blank.
#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_report {

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
                       {"prompt_setting", "ensemble+table"},
                       {"prompt_selection",
                        {{"split", "val"},
                         {"candidates", {{{"name", "ensemble+table"}, {"top1", 0.365}}, {{"name", "bare+names"}, {"top1", 0.077}}}},
                         {"chosen", "ensemble+table"}}},
                       {"class_names", "built-in table of emoji"},
                       {"prompt_names", {{"Animals & Nature", "animal or plant"}, {"Food & Drink", "food or drink"}, {"Symbols", "Symbols"}}},
                       {"metrics",
                        {{"num_samples", 6}, {"num_classes", 3}, {"classes", {"Animals & Nature", "Food & Drink", "Symbols"}},
                         {"top1", 0.5}, {"top5", 1.0}, {"mean_per_class", 0.5},
                         {"chance", {{"top1", 1.0 / 3}, {"top5", 1.0}, {"mean_per_class", 1.0 / 3}}},
                         {"p_value", {{"top1", 0.31961591220850476}, {"top5", 1.0}, {"mean_per_class", 1e-320}}},
                         {"confusion", {{2, 0, 0}, {1, 1, 0}, {1, 1, 0}}}}}};
  std::ofstream(run / "eval" / "emoji_zero_shot.json") << zs.dump(2);
  // Fashion-MNIST: labels seen in pretraining ([seen]); its file sorts between emoji_* and openclipart_*,
  // but its rows come first, as in `eval all`'s table.
  nlohmann::json fm = zs;
  fm["set"] = "fashion-mnist";
  fm["labels_seen_in_pretraining"] = true;
  fm["prompt_setting"] = "bare+names";
  fm["prompt_selection"]["chosen"] = "bare+names";
  fm["class_names"] = "none: the class names as they are";
  fm["metrics"]["classes"] = {"Bag", "Coat", "Sneaker"};
  fm["metrics"]["top1"] = 0.6789;
  fm["prompt_names"] = {{"Bag", "Bag"}, {"Coat", "Coat"}, {"Sneaker", "Sneaker"}};
  std::ofstream(run / "eval" / "fashion-mnist_zero_shot.json") << fm.dump(2);
  // From another checkpoint than the zero-shot result: the report warns that they are mixed.
  nlohmann::json ret = {{"task", "retrieval"}, {"set", "emoji"}, {"num_images", 5}, {"num_texts", 4},
                        {"model", {{"checkpoint", "runs/x/checkpoints/step_0000020.safetensors"}}}};
  for (const char* dir : {"image_to_text", "text_to_image"})
    ret[dir] = {{"R@1", 0.4}, {"R@5", 1.0}, {"R@10", 1.0}, {"median_rank", 2.0},
                {"chance", {{"R@1", 0.25}, {"R@5", 1.0}, {"R@10", 1.0}, {"median_rank", 2.0}}}};
  // Emoji keys are code points; each retrieved image carries its caption (the emoji's name).
  const std::vector<std::string> emoji_names{"grinning face", "red apple", "dog face", "flag: Japan", "hot pepper"};
  auto examples = [&](const std::string& prefix, const std::vector<std::string>& queries,
                      const std::function<std::pair<std::string, std::string>(int)>& key_caption) {
    nlohmann::json ex = nlohmann::json::array();
    for (int q = 0; q < int(queries.size()); ++q) {
      nlohmann::json top = nlohmann::json::array();
      for (int k = 0; k < 5; ++k) {
        const std::string name = prefix + std::to_string(q * 5 + k) + ".png";
        write_png(run / "eval" / "ret_examples" / name, q * 5 + k);
        const auto [key, caption] = key_caption(q * 5 + k);
        top.push_back({{"key", key}, {"text", caption}, {"score", 0.9 - 0.1 * k}, {"correct", k == q},
                       {"image", "ret_examples/" + name}});
      }
      ex.push_back({{"query", queries[size_t(q)]}, {"rank", q + 1}, {"hit", q == 0}, {"top", top}});
    }
    return ex;
  };
  ret["examples"] = examples("img_", {"grinning face <b>", "red apple"}, [&](int i) {
    return std::pair<std::string, std::string>{fmt::format("1f{:03x}", 0x600 + i), emoji_names[size_t(i % 5)]};
  });
  ret["example_selection"] = {{"method", "seeded"}, {"seed", 0},       {"queries", 4},     {"hits", 1},
                              {"misses", 3},        {"shown_hits", 1}, {"shown_misses", 1}};
  std::ofstream(run / "eval" / "emoji_retrieval.json") << ret.dump(2);
  // OpenClipArt: long keys (folder paths of ~85 characters) and long captions (title + keywords):
  // they must wrap inside the page, not widen it.
  nlohmann::json oca = ret;
  oca["set"] = "openclipart";
  oca["model"]["checkpoint"] = "runs/x/model.safetensors";
  std::string keywords;
  for (int w = 0; w < 40; ++w) keywords += (w ? ", " : "") + std::string("keyword") + std::to_string(w);
  oca["examples"] = examples("oca_", {"turkey platter with fruit. " + keywords, "gnome mime application. " + keywords},
                             [&](int i) {
                               return std::pair<std::string, std::string>{
                                   "computer/icons/etiquette-theme/mimetypes/gnome-mime-application-vnd.ms-powerpoint_" +
                                       std::to_string(i),
                                   "caption number " + std::to_string(i) + ". " + keywords};
                             });
  oca.erase("example_selection");  // a result of an older version: the page says how its rows came about
  std::ofstream(run / "eval" / "openclipart_retrieval.json") << oca.dump(2);

  const fs::path log = run.parent_path() / "report.log";
  ASSERT_EQ(sh(std::string(FLORENCE_CLI) + " report " + run.string() + " > " + log.string() + " 2>&1"), 0) << read_file(log);
  const fs::path html = run / "report.html";
  ASSERT_TRUE(fs::is_regular_file(html));
  const std::string page = read_file(html);
  EXPECT_NE(page.find("grinning face &lt;b&gt;"), std::string::npos);  // escaped
  EXPECT_NE(page.find("1 line(s) of metrics.jsonl skipped"), std::string::npos);
  EXPECT_NE(page.find("these results come from 2 checkpoints: runs/x/checkpoints/step_0000020.safetensors: "
                      "emoji_retrieval.json; runs/x/model.safetensors: fashion-mnist_zero_shot.json, "
                      "openclipart_retrieval.json, emoji_zero_shot.json"),
            std::string::npos)
      << page;
  // Rows in the order of `eval all`'s table: fashion-mnist, openclipart, emoji; zero-shot before retrieval.
  const size_t fm_at = page.find(">fashion-mnist</td>"), oca_at = page.find(">openclipart</td>"),
               ezs_at = page.find("zero-shot (6 images, 3 classes)"), eret_at = page.find("retrieval image→text (5 images");
  ASSERT_NE(fm_at, std::string::npos);
  EXPECT_LT(fm_at, oca_at);
  EXPECT_LT(oca_at, page.find(">emoji</td>"));
  EXPECT_LT(ezs_at, page.rfind("retrieval image→text (5 images"));
  EXPECT_NE(eret_at, std::string::npos);
  // [seen] and the prompt setting with how it was chosen; the class's prompt words beside its confusion row.
  EXPECT_NE(page.find("zero-shot <b title=\"its class labels are training targets\">[seen]</b> (6 images, 3 classes)"),
            std::string::npos);
  EXPECT_NE(page.find("prompts bare+names, chosen on val (top-1 7.70; the 2 settings scored 7.70-36.50); class words: "
                      "none: the class names as they are"),
            std::string::npos);
  EXPECT_NE(page.find("prompts ensemble+table, chosen on val (top-1 36.50; the 2 settings scored 7.70-36.50); class "
                      "words: built-in table of emoji"),
            std::string::npos);
  EXPECT_NE(page.find("0 Animals &amp; Nature <small>(“animal or plant”)</small>"), std::string::npos);
  EXPECT_NE(page.find("2 Symbols</th>"), std::string::npos);  // same words as the name: not repeated
  // Examples: how the rows were chosen, hit / miss marks, the retrieved images' captions under them.
  EXPECT_NE(page.find("Rows: 2 of the 4 text queries, drawn at random (seed 0): 1 of the 1 hits"), std::string::npos);
  EXPECT_NE(page.find("this result does not record a seeded sample"), std::string::npos);  // openclipart's
  EXPECT_NE(page.find("✓ hit</span> grinning face &lt;b&gt;"), std::string::npos);
  EXPECT_NE(page.find("✗ miss</span> red apple"), std::string::npos);
  EXPECT_NE(page.find("<div class=cap title=\"dog face\">dog face</div><div class=key>1f602 · 0.700</div>"),
            std::string::npos);
  // The stage boundary: labelled in the plots and named in their captions.
  EXPECT_NE(read_file(run / "report_files" / "plots.gp").find("set label \"stage 2 →\" at 26, graph 0.96"),
            std::string::npos);
  EXPECT_NE(page.find("vs step; dashed line: stage 2 starts at step 26</figcaption>"), std::string::npos);

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
  // 4 plots + 2 results x 2 examples x 5 images.
  EXPECT_EQ(srcs.size(), 24u);
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

  // Chromium at 1280 px: nothing is wider than the window (long captions and keys wrap). A copy of the
  // page with a script that writes the document's scroll width into the DOM it dumps.
  {
    std::string probe = page;
    const std::string script =
        "<script>document.body.setAttribute('data-scroll-width', document.documentElement.scrollWidth)</script>";
    probe.insert(probe.rfind("</body>"), script);
    const fs::path probe_html = run / "probe.html";
    std::ofstream(probe_html) << probe;
    const fs::path probe_dom = run.parent_path() / "probe_dom.html";
    ASSERT_EQ(sh(chromium_cmd(run.parent_path() / "profile3") + " --window-size=1280,2000 --dump-dom file://" +
                 probe_html.string() + " > " + probe_dom.string() + " 2> " + err.string()),
              0)
        << read_file(err);
    std::smatch m;
    const std::string pd = read_file(probe_dom);
    ASSERT_TRUE(std::regex_search(pd, m, std::regex("data-scroll-width=\"(\\d+)\""))) << pd.substr(0, 400);
    EXPECT_LE(std::stoi(m[1]), 1280);
    EXPECT_GT(std::stoi(m[1]), 600);  // a real measurement, not an empty page
  }

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

TEST(Report, DetectionRunNamesItsLossAndShowsCocoRows) {
  // A detection run: config.json "kind" names the loss plot, there is no logit scale to miss, and
  // the run's eval/detection_test.json gives COCO rows beside its baseline.
  const fs::path run = fs::path(FLORENCE_TEST_TMP) / "e2e_eval_report_detection" / "run";
  fs::remove_all(run.parent_path());
  fs::create_directories(run / "eval");
  {
    std::ofstream m(run / "metrics.jsonl");
    for (int s = 1; s <= 10; ++s)
      m << nlohmann::json{{"step", s}, {"loss", 3.0 - 0.1 * s}, {"lr", 1e-3}, {"img_per_s", 20.0}}.dump() << "\n";
  }
  std::ofstream(run / "config.json") << R"J({"kind": "detection'; system('x')", "total_steps": 10})J";
  const nlohmann::json m = {{"AP", 0.0133}, {"AP50", 0.0248}, {"AP75", 0.0126}, {"APs", 0.0104},
                            {"APm", 0.0173}, {"APl", 0.0295}, {"AR100", 0.2583}};
  std::ofstream(run / "eval" / "detection_test.json")
      << nlohmann::json{{"task", "detection"}, {"set", "det"}, {"split", "test"}, {"images", 1000}, {"metrics", m},
                        {"baseline", {{"name", "box prior"}, {"metrics", {{"AP", 0.0001}, {"AP50", 0.0004}}}}}}
             .dump();
  // A result whose "set" is not a string is named by its file instead of failing the report.
  std::ofstream(run / "eval" / "detection_val.json")
      << nlohmann::json{{"task", "detection"}, {"set", 5}, {"split", "val"}, {"images", 100}, {"metrics", m}}.dump();
  const fs::path log = run.parent_path() / "log.txt";
  ASSERT_EQ(sh(std::string(FLORENCE_CLI) + " report " + run.string() + " > " + log.string() + " 2>&1"), 0) << read_file(log);
  EXPECT_EQ(read_file(log).find("logit_scale"), std::string::npos) << read_file(log);
  EXPECT_NE(read_file(run / "report.html").find(">detection_val</td>"), std::string::npos);
  // The kind reaches gnuplot with its quotes and parentheses removed.
  EXPECT_NE(read_file(run / "report_files" / "plots.gp").find("set title 'training loss (detection systemx)'"),
            std::string::npos);
  const std::string html = read_file(run / "report.html");
  EXPECT_NE(html.find("detection on &#39;test&#39; (1000 images, baseline: box prior)"), std::string::npos) << html;
  EXPECT_NE(html.find("<td>AP50</td><td class=num>0.0248</td><td class=num>0.0004</td>"), std::string::npos);
}

}  // namespace test_report
