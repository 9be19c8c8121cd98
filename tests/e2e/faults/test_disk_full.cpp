// Issue 23, faults: a full disk during `florence data build`, `curate`, `pretrain` and `index build`
// is a clear error naming the file, leaves nothing half-written that looks valid, and a later run
// recovers. The disk fills through the file-size limit (`ulimit -f`, SIGXFSZ ignored): writes past
// it fail with EFBIG exactly as they fail with ENOSPC on a full disk, without needing root to mount
// a tmpfs. A read-only output folder is refused with the path named, for the same four commands.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <unistd.h>

#include "support/cli.h"
#include "support/vocab.h"

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

/// 300 real Fashion-MNIST images per original split in shards of 100, built once per process:
/// DIR/fm/{train,val,test}/00000N.tar.
const fs::path& fashion_mnist() {
  static const fs::path fm = [] {
    const fs::path dir = fresh_scratch("disk_full_data");
    std::string out;
    const int rc = run_cli(dir, "data build fashion-mnist --limit 300 --shard-size 100 --out " + (dir / "fm").string(), out);
    if (rc != 0) throw std::runtime_error("data build fashion-mnist failed");
    return dir / "fm";
  }();
  return fm;
}

/// Path -> size of every file below `root` (to show that inputs are untouched).
std::map<std::string, uintmax_t> listing(const fs::path& root) {
  std::map<std::string, uintmax_t> m;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) m[fs::relative(e.path(), root).string()] = e.file_size();
  return m;
}

/// Files below `root` whose name contains `part`.
int count_named(const fs::path& root, const std::string& part) {
  int n = 0;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.path().filename().string().find(part) != std::string::npos) ++n;
  return n;
}

TEST(DiskFull, DataBuildAndCurateFailCleanlyAndRecover) {
  const fs::path dir = fresh_scratch("disk_full");
  std::string out, err;
  fs::create_directories(dir / "fm");
  fs::copy(fashion_mnist(), dir / "fm", fs::copy_options::recursive);

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

  // 100 KiB per file over all three splits: the val shard (43 KB) is finished, the others fail.
  // Finished shards stay in .curate-tmp until every shard is written, so nothing in the output
  // folder looks like curated output (before: val/000000.tar sat there without a report, and the
  // rerun with --overwrite refused it as a file curate did not write).
  const fs::path cur2 = dir / "curated_all";
  const std::string curate_all = "curate " + (dir / "fm").string() + " --stages validate --out " + cur2.string();
  EXPECT_EQ(run_with_file_limit(dir, 100, curate_all, err), 2 << 8) << err;
  EXPECT_NE(err.find("File too large"), std::string::npos) << err;
  EXPECT_EQ(count_files(cur2, ".tar", ".curate-tmp"), 0) << "a curated shard was published before the run finished";
  EXPECT_FALSE(fs::exists(cur2 / "report.json"));
  ASSERT_EQ(run_cli(dir, curate_all + " --overwrite", out), 0);
  EXPECT_EQ(count_files(cur2, ".tar", ".curate-tmp"), 7);  // train 3, val 1, test 3
  EXPECT_FALSE(fs::exists(cur2 / ".curate-tmp"));
}

// pretrain: the optimizer state of the first checkpoint cannot be written (florence-nano with the
// CLIP vocabulary: ~68 MB of AdamW moments, 34 MB of weights; 4 MiB per file lets the run's small
// files and the 1.3 MB vocabulary copy through). The error names the file; no checkpoint, no
// `latest`, no temporary file is left; the same command without the limit then runs. Resumed from a
// complete checkpoint, a failing next checkpoint leaves `latest` on the old one, which resumes.
TEST(DiskFull, PretrainKeepsTheLastCheckpointAndResumes) {
  const fs::path dir = fresh_scratch("disk_full_pretrain");
  const auto inputs = listing(fashion_mnist());
  const std::string args = "--threads 2 pretrain --model florence-nano --vocab " + ::test::clip_vocab() + " --shards " +
                           (fashion_mnist() / "train").string() +
                           " --batch-size 16 --steps 4 --ckpt-every 2 --workers 1 --no-progress";
  std::string out, err;
  const fs::path run = dir / "run";
  EXPECT_EQ(run_with_file_limit(dir, 4096, args + " --out " + run.string(), err), 2 << 8) << err;
  const fs::path first = run / "checkpoints" / "step_0000002.optim.safetensors";
  EXPECT_NE(err.find("cannot write '" + first.string() + "'"), std::string::npos) << err;
  EXPECT_NE(err.find("File too large"), std::string::npos) << err;
  EXPECT_TRUE(fs::is_empty(run / "checkpoints")) << "a checkpoint, `latest` or a temporary file was left";
  EXPECT_FALSE(fs::exists(run / "model.safetensors"));
  ASSERT_EQ(run_cli(dir, args + " --out " + run.string(), out), 0) << "the same command without the limit";
  EXPECT_TRUE(fs::exists(run / "model.safetensors"));

  const fs::path run2 = dir / "run2";
  ASSERT_EQ(run_cli(dir, args + " --stop-after-steps 2 --out " + run2.string(), out), 0);
  ASSERT_EQ(florence::test::read_text(run2 / "checkpoints" / "latest"), "step_0000002.safetensors\n");
  EXPECT_EQ(run_with_file_limit(dir, 4096, "--threads 2 pretrain --no-progress --resume " + run2.string(), err), 2 << 8)
      << err;
  EXPECT_NE(err.find("cannot write '" + (run2 / "checkpoints" / "step_0000003.optim.safetensors").string() + "'"),
            std::string::npos)
      << err;
  EXPECT_EQ(florence::test::read_text(run2 / "checkpoints" / "latest"), "step_0000002.safetensors\n");
  EXPECT_EQ(count_named(run2, "step_0000003"), 0);
  EXPECT_EQ(count_named(run2, ".tmp"), 0);
  ASSERT_EQ(run_cli(dir, "--threads 2 pretrain --no-progress --resume " + run2.string(), out), 0);
  EXPECT_EQ(florence::test::read_text(run2 / "checkpoints" / "latest"), "step_0000004.safetensors\n");
  EXPECT_TRUE(fs::exists(run2 / "model.safetensors"));
  EXPECT_EQ(listing(fashion_mnist()), inputs) << "the input shards changed";
}

// index build: with 48 KiB per file the first chunk's embeddings (~51 KB) cannot be written; with
// 64 KiB the chunks are written and the FAISS index (~148 KB) is not. Either way the error names
// the file, nothing half-written is left, `index info` says what is unfinished, and the same
// command finishes the index.
TEST(DiskFull, IndexBuildFailsCleanlyAndResumes) {
  const fs::path dir = fresh_scratch("disk_full_index");
  std::string out, err;
  // A florence-nano checkpoint (2 steps on the shards are enough: the test is about the files).
  const fs::path run = dir / "run";
  ASSERT_EQ(run_cli(dir, "--threads 2 pretrain --model florence-nano --vocab " + ::test::clip_vocab() + " --shards " +
                             (fashion_mnist() / "train").string() +
                             " --batch-size 16 --steps 2 --workers 1 --no-progress --out " + run.string(),
                    out),
            0);
  const std::string build = "--threads 2 index build --checkpoint " + (run / "model.safetensors").string() + " " +
                            (fashion_mnist() / "train").string() + " --progress 0 --out ";
  // 48 KiB: the first chunk's embeddings.
  const fs::path idx = dir / "idx";
  EXPECT_EQ(run_with_file_limit(dir, 48, build + idx.string(), err), 2 << 8) << err;
  EXPECT_NE(err.find("cannot write '" + (idx / "chunks" / "000000.npy").string() + "'"), std::string::npos) << err;
  EXPECT_NE(err.find("File too large"), std::string::npos) << err;
  EXPECT_TRUE(fs::is_empty(idx / "chunks")) << "a partial chunk or temporary file was left";
  ASSERT_EQ(run_cli(dir, "index info " + idx.string(), out), 0);
  EXPECT_NE(out.find("UNFINISHED `index build`: 0 of 3 chunks done"), std::string::npos) << out;
  ASSERT_EQ(run_cli(dir, build + idx.string(), out), 0);
  ASSERT_EQ(run_cli(dir, "index info " + idx.string(), out), 0);
  EXPECT_NE(out.find("288 images"), std::string::npos) << out;  // the train split: 300 less 12 held out as val
  EXPECT_NE(out.find("vector index: Flat"), std::string::npos) << out;

  // 1 KiB: even the first index.json's plan cannot be written; the same command then builds the
  // index (before: "already holds an index built from null").
  const fs::path idx1 = dir / "idx1";
  EXPECT_EQ(run_with_file_limit(dir, 1, build + idx1.string(), err), 2 << 8) << err;
  EXPECT_NE(err.find("cannot write '" + (idx1 / "index.json").string() + "'"), std::string::npos) << err;
  ASSERT_EQ(run_cli(dir, build + idx1.string(), out), 0);
  ASSERT_EQ(run_cli(dir, "index info " + idx1.string(), out), 0);
  EXPECT_NE(out.find("288 images"), std::string::npos) << out;

  // 64 KiB: every chunk is written, the FAISS index is not.
  const fs::path idx2 = dir / "idx2";
  EXPECT_EQ(run_with_file_limit(dir, 64, build + idx2.string(), err), 2 << 8) << err;
  EXPECT_NE(err.find("cannot write '" + (idx2 / "knn.index").string() + "'"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(idx2 / "knn.index"));
  EXPECT_EQ(count_named(idx2, ".tmp"), 0);
  ASSERT_EQ(run_cli(dir, "index info " + idx2.string(), out), 0);
  EXPECT_NE(out.find("vector index: none yet"), std::string::npos) << out;
  ASSERT_EQ(run_cli(dir, build + idx2.string(), out), 0);
  ASSERT_EQ(run_cli(dir, "index info " + idx2.string(), out), 0);
  EXPECT_NE(out.find("vector index: Flat"), std::string::npos) << out;
}

// A read-only output folder: each command exits with an error naming the folder and the reason,
// and writes nothing. Root ignores file permissions, so as root the commands run as `nobody`
// (setpriv, util-linux).
TEST(ReadOnlyOutput, EveryWritingCommandNamesTheFolder) {
  const fs::path dir = fresh_scratch("read_only_out");
  std::string prefix;
  if (::geteuid() == 0) {
    if (std::system("command -v setpriv > /dev/null") != 0) GTEST_SKIP() << "running as root without setpriv";
    prefix = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  }
  // A checkpoint for `index build` (written before the folder is locked).
  std::string out, err;
  const fs::path run = dir / "run";
  const std::string pretrain = "--threads 2 pretrain --model florence-nano --vocab " + ::test::clip_vocab() +
                               " --shards " + (fashion_mnist() / "train").string() +
                               " --batch-size 16 --steps 1 --workers 1 --no-progress --out ";
  ASSERT_EQ(run_cli(dir, pretrain + run.string(), out), 0);
  const fs::path ro = dir / "ro";
  fs::create_directories(ro);
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read | fs::perms::group_exec |
                          fs::perms::others_read | fs::perms::others_exec);
  const std::string fm = fashion_mnist().string();
  const std::map<std::string, std::string> commands = {
      {"fm", "data build fashion-mnist --limit 300 --shard-size 100 --out "},
      {"curated", "curate " + fm + "/train --stages validate --out "},
      {"run", pretrain},
      {"idx", "--threads 2 index build --checkpoint " + (run / "model.safetensors").string() + " " + fm +
                  "/train --progress 0 --out "}};
  const auto inputs = listing(fashion_mnist());
  for (const auto& [name, args] : commands) {
    const fs::path o = dir / "stdout.txt", e = dir / "stderr.txt";
    const std::string cmd = prefix + std::string(FLORENCE_CLI) + " " + args + (ro / name).string() + " > " + o.string() +
                            " 2> " + e.string();
    EXPECT_EQ(std::system(cmd.c_str()), 2 << 8) << cmd;
    err = florence::test::read_text(e);
    EXPECT_NE(err.find((ro / name).string()), std::string::npos) << name << ": the error does not name the folder:\n" << err;
    EXPECT_NE(err.find("Permission denied"), std::string::npos) << name << ": the error does not say why:\n" << err;
  }
  EXPECT_TRUE(fs::is_empty(ro));
  EXPECT_EQ(listing(fashion_mnist()), inputs);
}

// A corrupt checkpoint (cut short, a flipped header byte, a forged header length) given to `embed`,
// `convert` and `pretrain --resume`: exit status 2 with the file named, never a crash; `convert`
// writes nothing.
TEST(CorruptCheckpoint, EmbedConvertAndResumeRefuseItByName) {
  const fs::path dir = fresh_scratch("corrupt_checkpoint");
  std::string out, err;
  const fs::path run = dir / "run";
  ASSERT_EQ(run_cli(dir,
                    "--threads 2 pretrain --model florence-nano --vocab " + ::test::clip_vocab() + " --shards " +
                        (fashion_mnist() / "train").string() +
                        " --batch-size 16 --steps 2 --ckpt-every 1 --workers 1 --no-progress --out " + run.string(),
                    out),
            0);
  const std::string good = florence::test::read_text(run / "model.safetensors");
  auto corrupt = [&](const std::string& name, std::string bytes) {
    const fs::path p = dir / (name + ".safetensors");
    std::ofstream(p, std::ios::binary) << bytes;
    fs::copy_file(run / "model.json", dir / (name + ".json"), fs::copy_options::overwrite_existing);
    return p;
  };
  std::string flipped = good;
  flipped[12] = char(0xFF);  // inside the JSON header: not UTF-8 / not JSON any more
  std::string forged = good;
  for (int i = 0; i < 8; ++i) forged[size_t(i)] = char(0x7F);  // header length far past the end
  const std::vector<fs::path> bad = {corrupt("cut", good.substr(0, good.size() / 2)), corrupt("flipped", flipped),
                                     corrupt("forged", forged)};
  for (const fs::path& b : bad) {
    EXPECT_EQ(run_cli(dir, "embed --checkpoint " + b.string() + " --text hello --out " + (dir / "e.safetensors").string(), out, &err),
              2 << 8)
        << err;
    EXPECT_NE(err.find(b.string()), std::string::npos) << "embed does not name the file:\n" << err;
    const fs::path converted = dir / "converted.safetensors";
    EXPECT_EQ(run_cli(dir, "convert " + b.string() + " " + converted.string() + " --model florence-nano", out, &err),
              2 << 8)
        << err;
    EXPECT_NE(err.find(b.string()), std::string::npos) << "convert does not name the file:\n" << err;
    EXPECT_FALSE(fs::exists(converted));
  }
  // Resume from a checkpoint whose weights, then whose optimizer state, were cut short.
  for (const char* file : {"step_0000002.safetensors", "step_0000002.optim.safetensors"}) {
    const fs::path victim = run / "checkpoints" / file;
    const std::string whole = florence::test::read_text(victim);
    std::ofstream(victim, std::ios::binary | std::ios::trunc) << whole.substr(0, whole.size() / 3);
    EXPECT_EQ(run_cli(dir, "--threads 2 pretrain --no-progress --resume " + run.string(), out, &err), 2 << 8) << err;
    EXPECT_NE(err.find(victim.string()), std::string::npos) << "resume does not name " << file << ":\n" << err;
    std::ofstream(victim, std::ios::binary | std::ios::trunc) << whole;
  }
}

}  // namespace test_disk_full
