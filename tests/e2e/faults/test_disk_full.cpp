// Issue 23, faults: a full disk during `florence data build` and `florence curate` is a clear error
// naming the file, leaves nothing half-written that looks valid, and a later run recovers. The
// disk fills through the file-size limit (`ulimit -f`, SIGXFSZ ignored): writes past it fail with
// EFBIG exactly as they fail with ENOSPC on a full disk, without needing root to mount a tmpfs.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "support/cli.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_disk_full {

namespace fs = std::filesystem;
using florence::test::fresh_scratch;
using florence::test::run_cli;

/// `florence ARGS` with at most `kib` KiB per written file; stderr in `err`.
int run_with_file_limit(const fs::path& dir, int kib, const std::string& args, std::string& err) {
  const fs::path o = dir / "stdout.txt", e = dir / "stderr.txt";
  const std::string cmd = "bash -c \"trap '' XFSZ; ulimit -f " + std::to_string(kib) + "; exec " +
                          std::string(FLORENCE_CLI) + " " + args + "\" > " + o.string() + " 2> " + e.string();
  const int rc = std::system(cmd.c_str());
  err = florence::test::read_text(e);
  return rc;
}

/// Regular files below `root` whose name ends with `suffix`, outside `skip_dir` (a folder name).
int count_files(const fs::path& root, const std::string& suffix, const std::string& skip_dir = "") {
  int n = 0;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    if (!skip_dir.empty() && it->is_directory() && it->path().filename() == skip_dir) {
      it.disable_recursion_pending();
      continue;
    }
    const std::string name = it->path().filename().string();
    if (it->is_regular_file() && name.size() >= suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      ++n;
  }
  return n;
}

TEST(DiskFull, DataBuildAndCurateFailCleanlyAndRecover) {
  const fs::path dir = fresh_scratch("disk_full");
  std::string out, err;
  // Input: 300 real Fashion-MNIST images per original split, in shards of 100.
  ASSERT_EQ(run_cli(dir, "data build fashion-mnist --limit 300 --shard-size 100 --out " + (dir / "fm").string(), out), 0);

  // data build with 64 KiB per file: the first shard (~200 KiB) cannot be written.
  const fs::path full = dir / "fm_full";
  EXPECT_NE(run_with_file_limit(dir, 64, "data build fashion-mnist --limit 300 --shard-size 100 --out " + full.string(), err),
            0);
  EXPECT_NE(err.find(full.string()), std::string::npos) << "the error does not name the file:\n" << err;
  EXPECT_NE(err.find(".tar"), std::string::npos) << err;
  EXPECT_NE(err.find("File too large"), std::string::npos) << "the error does not say why:\n" << err;
  if (fs::exists(full)) {
    EXPECT_EQ(count_files(full, ".tar"), 0) << "a shard was left as if complete";
    EXPECT_EQ(count_files(full, ".tmp"), 0) << "a partial shard was left behind";
    EXPECT_FALSE(fs::exists(full / "summary.json"));
  }

  // curate with 64 KiB per file: fails naming its temporary shard; no curated shard or report.
  const fs::path cur = dir / "curated";
  // (--stages validate: the other stages would drop Fashion-MNIST's 28-pixel images as small.)
  const std::string curate = "curate " + (dir / "fm" / "train").string() + " --stages validate --out " + cur.string();
  EXPECT_EQ(run_with_file_limit(dir, 64, curate, err), 2 << 8) << err;
  EXPECT_NE(err.find(cur.string()), std::string::npos) << "the error does not name the file:\n" << err;
  EXPECT_NE(err.find("File too large"), std::string::npos) << "the error does not say why:\n" << err;
  EXPECT_EQ(count_files(cur, ".tar", ".curate-tmp"), 0);
  EXPECT_FALSE(fs::exists(cur / "report.json"));
  // The folder is marked as an interrupted run: refused without --overwrite, replaced with it.
  EXPECT_NE(run_cli(dir, curate, out, &err), 0);
  EXPECT_NE(err.find("interrupted curate run"), std::string::npos) << err;
  ASSERT_EQ(run_cli(dir, curate + " --overwrite", out), 0);
  EXPECT_TRUE(fs::exists(cur / "report.json"));
  EXPECT_FALSE(fs::exists(cur / ".curate-tmp"));
  EXPECT_GT(count_files(cur, ".tar"), 0);
}

}  // namespace test_disk_full
