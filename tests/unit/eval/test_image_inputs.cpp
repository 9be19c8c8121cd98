// eval::image_inputs over folders: what is read, what is skipped and counted (issue 23: a .gif in a
// folder was passed over without a word).
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>

#include "florence/core/error.h"
#include "florence/eval/embed.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_image_inputs {

using namespace florence;
namespace fs = std::filesystem;

TEST(ImageInputs, UnsupportedFormatsInAFolderAreCountedAndNamedWhenGiven) {
  const fs::path dir = fs::path(FLORENCE_TEST_TMP) / "image_inputs";
  fs::remove_all(dir);
  fs::create_directories(dir / "sub");
  std::vector<uint8_t> png;
  cv::imencode(".png", cv::Mat(4, 4, CV_8UC3, cv::Scalar(10, 20, 30)), png);
  std::ofstream(dir / "a.png", std::ios::binary).write(reinterpret_cast<const char*>(png.data()), png.size());
  std::ofstream(dir / "sub" / "b.PNG", std::ios::binary).write(reinterpret_cast<const char*>(png.data()), png.size());
  std::ofstream(dir / "anim.gif") << "GIF89a";
  std::ofstream(dir / "sub" / "logo.svg") << "<svg/>";
  std::ofstream(dir / "notes.txt") << "not an image";

  const auto src = eval::image_inputs({dir.string()});
  ASSERT_EQ(src->num_parts(), 4u);  // a.png, anim.gif, sub/b.PNG, sub/logo.svg (sorted); notes.txt is not an image
  std::vector<std::string> read;
  data::SkipCounts skips;
  for (size_t i = 0; i < src->num_parts(); ++i)
    src->read_part(i, [&](data::Sample& s) { read.push_back(fs::path(s.key).filename().string()); return true; }, skips);
  EXPECT_EQ(read, (std::vector<std::string>{"a.png", "b.PNG"}));
  EXPECT_EQ(skips["unsupported_format"], 2);

  try {
    eval::image_inputs({(dir / "anim.gif").string()});
    FAIL() << "a .gif given by name was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(".gif is not a supported image format"), std::string::npos) << e.what();
  }
}

}  // namespace test_image_inputs
