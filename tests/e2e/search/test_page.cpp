// The search page of `florence serve` in headless Chromium (driven over the DevTools protocol):
// it loads, a typed text query renders result images (all decoded), clicking a result searches by
// it, dropping an image file searches by the image, a deep link (?q=) runs its query, a caption
// holding HTML is shown as text, and no console error, exception or failed load happens. The
// server runs as the real binary and stops cleanly on SIGINT. A screenshot is kept in the
// scratch folder (page.png).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <regex>
#include <thread>

#include "e2e/search/cdp.h"
#include "e2e/search/fixtures.h"
#include "florence/search/query.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_page {

using namespace florence;
namespace ts = florence::test::search;
namespace fs = std::filesystem;

namespace {

/// Whether process `pid` runs (a zombie, exited but not yet reaped by its new parent, does not).
bool alive(pid_t pid) {
  const std::string stat = ts::read_file("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

/// Starts `florence serve` in the background; returns its pid and fills `port`.
pid_t start_server(const fs::path& root, const std::string& args, int& port) {
  const fs::path out = root / "serve.out", pidf = root / "serve.pid";
  if (ts::sh(std::string(FLORENCE_CLI) + " serve --port 0 " + args + " > " + out.string() + " 2> " + (root / "serve.err").string() +
             " & echo $! > " + pidf.string()) != 0)
    return -1;
  const pid_t pid = pid_t(std::stol(ts::read_file(pidf)));
  const std::regex re(R"(listening on http://127\.0\.0\.1:(\d+)/)");
  for (int i = 0; i < 600; ++i) {
    std::smatch m;
    const std::string text = ts::read_file(out);
    if (std::regex_search(text, m, re)) {
      port = std::stoi(m[1]);
      return pid;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

}  // namespace

TEST(SearchPage, TextQueryClickDropAndDeepLinkInHeadlessChromium) {
  ASSERT_TRUE(fs::exists("/usr/bin/chromium")) << "Debian package chromium is missing (scripts/setup installs it)";
  const fs::path root = ts::scratch("e2e_search_page");
  const std::string ckpt = ts::tiny_checkpoint(root);
  ts::write_shards(root / "shards", 40, 20);
  {  // one more shard whose caption is HTML: it must be shown as text
    data::ShardWriter w((root / "shards").string(), {1000, int64_t(256) << 20, "hostile-%d.tar"});
    data::Sample s;
    s.key = "hostile";
    s.image = ts::png(ts::picture(99));
    s.image_ext = "png";
    s.text = "<img src=x onerror=\"window.__xss=1\"> bold <b>claim</b>";
    w.write(s);
  }
  const fs::path idx = root / "pictures";
  ASSERT_EQ(ts::sh(std::string(FLORENCE_CLI) + " index build --progress 0 --out " + idx.string() + " --checkpoint " + ckpt + " " +
                   (root / "shards").string() + " > " + (root / "build.log").string() + " 2>&1"),
            0)
      << ts::read_file(root / "build.log");
  int port = 0;
  const pid_t server = start_server(root, "--index " + idx.string(), port);
  ASSERT_GT(server, 0) << ts::read_file(root / "serve.err");
  const std::string base = "http://127.0.0.1:" + std::to_string(port) + "/";

  {
    ts::Chromium chrome(root / "profile", root / "chromium.log");
    const std::string s = chrome.open(base);
    ASSERT_TRUE(chrome.wait_for(s, "document.readyState === 'complete' && document.querySelectorAll('#index option').length === 1"))
        << ts::read_file(root / "chromium.log");
    EXPECT_EQ(chrome.eval(s, "document.querySelector('#info').textContent.startsWith('41 images, 128-d, Flat')"), true)
        << chrome.eval(s, "document.querySelector('#info').textContent");

    // Type a query and press the Search button with the mouse.
    chrome.eval(s, "document.querySelector('#q').focus()");
    chrome.call("Input.insertText", {{"text", "a red disc"}}, s);
    const nlohmann::json btn = chrome.eval(
        s, "(() => { const r = document.querySelector('button[type=submit]').getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()");
    chrome.click(s, btn[0], btn[1]);
    ASSERT_TRUE(chrome.wait_for(s, "document.querySelector('#results').dataset.state === 'done' && "
                                   "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"));
    EXPECT_EQ(chrome.eval(s, "document.querySelectorAll('#results figure').length"), 24);
    EXPECT_EQ(chrome.eval(s, "document.querySelectorAll('#results img').length"), 24);
    EXPECT_EQ(chrome.eval(s, "document.querySelector('#status').textContent.startsWith('24 results for \\u201ca red disc\\u201d')"), true)
        << chrome.eval(s, "document.querySelector('#status').textContent");
    EXPECT_EQ(chrome.eval(s, "location.search"), "?index=pictures&q=a+red+disc");
    // Scores shown best first.
    EXPECT_EQ(chrome.eval(s, "(() => { const v = [...document.querySelectorAll('.score')].map(e => parseFloat(e.textContent)); "
                             "return v.every((x, i) => i === 0 || v[i - 1] >= x); })()"),
              true);

    // Click the third result: a search by that image, which comes back first with cosine 1.
    const nlohmann::json third = chrome.eval(
        s, "(() => { const f = document.querySelectorAll('#results figure')[2]; const r = f.getBoundingClientRect(); "
           "return [f.dataset.id, r.x + r.width / 2, r.y + r.height / 2]; })()");
    chrome.click(s, third[1], third[2]);
    ASSERT_TRUE(chrome.wait_for(s, "document.querySelector('#status').textContent.includes('images like #" +
                                       third[0].get<std::string>() + "') && document.querySelector('#results').dataset.state === 'done'"));
    EXPECT_EQ(chrome.eval(s, "document.querySelector('#results figure').dataset.id"), third[0]);
    EXPECT_EQ(chrome.eval(s, "document.querySelector('#results .score').textContent"), "1.000");

    // Drop an image file (the stored picture of img0005) onto the drop target.
    chrome.eval(s, "(async () => { const b = await (await fetch('/images/pictures/5')).blob(); const dt = new DataTransfer(); "
                   "dt.items.add(new File([b], 'five.png', {type: 'image/png'})); "
                   "document.querySelector('#drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); "
                   "return true; })()");
    ASSERT_TRUE(chrome.wait_for(s, "document.querySelector('#status').textContent.includes('five.png') && "
                                   "document.querySelector('#results').dataset.state === 'done'"));
    EXPECT_EQ(chrome.eval(s, "document.querySelector('#results .key').textContent"), "img0005");

    // The hostile caption (row 40: its shard sorts last) is text, not markup.
    chrome.call("Page.navigate", {{"url", base + "?id=40"}}, s);
    ASSERT_TRUE(chrome.wait_for(s, "document.querySelector('#results') && document.querySelector('#results').dataset.state === 'done'"));
    EXPECT_EQ(chrome.eval(s, "document.querySelector('#results .cap').textContent"),
              "<img src=x onerror=\"window.__xss=1\"> bold <b>claim</b>");
    EXPECT_EQ(chrome.eval(s, "document.querySelectorAll('#results .cap *').length"), 0);
    EXPECT_EQ(chrome.eval(s, "window.__xss === undefined"), true);

    // A deep link runs its query on load.
    chrome.call("Page.navigate", {{"url", base + "?q=square"}}, s);
    ASSERT_TRUE(chrome.wait_for(s, "document.querySelector('#results') && document.querySelector('#results').dataset.state === 'done' && "
                                   "document.querySelector('#q').value === 'square'"));
    ASSERT_TRUE(chrome.wait_for(s, "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"));

    // What the page looks like.
    const nlohmann::json shot = chrome.call("Page.captureScreenshot", {{"format", "png"}}, s);
    const std::vector<uint8_t> png = search::decode_base64(shot["data"].get<std::string>());
    cv::Mat img = cv::imdecode(png, cv::IMREAD_COLOR);
    ASSERT_FALSE(img.empty());
    cv::imwrite((root / "page.png").string(), img);
    cv::Scalar mean, stddev;
    cv::meanStdDev(img, mean, stddev);
    EXPECT_GT(stddev[0] + stddev[1] + stddev[2], 10.0);

    const std::vector<std::string> problems = chrome.problems();
    EXPECT_TRUE(problems.empty()) << problems.size() << " problem(s), first: " << (problems.empty() ? "" : problems[0]);
  }

  // SIGINT: the server stops.
  ::kill(server, SIGINT);
  for (int i = 0; i < 200 && alive(server); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  EXPECT_FALSE(alive(server)) << "the server did not stop on SIGINT";
  if (alive(server)) ::kill(server, SIGKILL);
}

}  // namespace test_page
