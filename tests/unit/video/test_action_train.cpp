// The action set manifest reader of `florence video train|eval` (action_train.h): good lines are
// read with absolute paths and class names, bad lines are counted skips by reason, and a set
// without classes.txt / the split file / two classes is a clear error.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "florence/adapt/video/action_train.h"
#include "florence/core/error.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_action_train {

using namespace florence;
namespace fs = std::filesystem;

namespace {

fs::path fresh(const std::string& name) {
  const fs::path d = fs::path(FLORENCE_TEST_TMP) / "unit_action_train" / name;
  fs::remove_all(d);
  fs::create_directories(d / "clips");
  return d;
}

}  // namespace

TEST(ActionManifest, ReadsGoodLinesAndCountsBadOnes) {
  const fs::path d = fresh("manifest");
  std::ofstream(d / "classes.txt") << "move_left\nmove_right\r\ngrow\n";
  std::ofstream(d / "clips" / "a.avi") << "x";
  std::ofstream(d / "clips" / "b.avi") << "x";
  std::ofstream(d / "test.jsonl") << R"({"path": "clips/a.avi", "label": 1, "caption": "a red car moves to the right"})"
                                  << "\n\n"
                                  << "{broken\n"
                                  << R"({"path": "clips/b.avi", "label": 3})" << "\n"
                                  << R"({"path": "clips/b.avi", "label": "1"})" << "\n"
                                  << R"({"label": 0})" << "\n"
                                  << R"({"path": "clips/none.avi", "label": 0})" << "\n"
                                  << R"({"path": "clips/b.avi", "label": 2})" << "\n";
  const video::ActionSplit s = video::read_action_split(d.string(), "test");
  ASSERT_EQ(s.classes, (std::vector<std::string>{"move_left", "move_right", "grow"}));
  ASSERT_EQ(s.clips.size(), 2u);
  EXPECT_EQ(s.clips[0].path, (d / "clips" / "a.avi").string());
  EXPECT_EQ(s.clips[0].label, 1);
  EXPECT_EQ(s.clips[0].action, "move_right");
  EXPECT_EQ(s.clips[0].caption, "a red car moves to the right");
  EXPECT_EQ(s.clips[1].action, "grow");
  EXPECT_EQ(s.clips[1].caption, "");
  EXPECT_EQ(s.skipped.at("bad_json"), 2);   // "{broken" and the line without "path"
  EXPECT_EQ(s.skipped.at("bad_label"), 2);  // 3 is out of range, "1" is not an integer
  EXPECT_EQ(s.skipped.at("missing_file"), 1);
}

TEST(ActionManifest, MissingPiecesAreClearErrors) {
  const fs::path d = fresh("errors");
  try {
    video::read_action_split(d.string(), "test");
    FAIL() << "no classes.txt must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("classes.txt"), std::string::npos) << e.what();
  }
  std::ofstream(d / "classes.txt") << "only_one\n";
  std::ofstream(d / "test.jsonl") << "";
  try {
    video::read_action_split(d.string(), "train");
    FAIL() << "a missing split must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train.jsonl"), std::string::npos) << e.what();
  }
  try {
    video::read_action_split(d.string(), "test");
    FAIL() << "one class must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1 class"), std::string::npos) << e.what();
  }
}

}  // namespace test_action_train
