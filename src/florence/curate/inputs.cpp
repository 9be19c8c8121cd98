// The curation pipeline's inputs: which shards each input names and where each goes below the
// output folder (pipeline.h resolve_inputs).
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <unordered_map>

#include <fmt/format.h>

#include "florence/core/error.h"
#include "florence/curate/pipeline.h"
#include "florence/data/webdataset.h"

namespace fs = std::filesystem;

namespace florence::curate {

namespace {

bool dir_has_tar(const fs::path& d) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(d, ec))
    if (e.is_regular_file() && e.path().extension() == ".tar") return true;
  return false;
}

// An absolute path named as the user typed it: "." dropped, symlinks kept, but ".." resolved as the
// system does (the parent of where the path so far really leads, so "link/.." is not folded by name
// into a folder that was not read).
fs::path absolute_named(const fs::path& p) {
  fs::path a;
  for (const auto& part : fs::absolute(p)) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      std::error_code ec;
      const fs::path real = fs::weakly_canonical(a, ec);
      a = (ec ? a : real).parent_path();
    } else {
      a /= part;
    }
  }
  return a;
}

/// The leading components `a` and `b` share ("" when none).
fs::path common_prefix(const fs::path& a, const fs::path& b) {
  fs::path c;
  for (auto ia = a.begin(), ib = b.begin(); ia != a.end() && ib != b.end() && *ia == *ib; ++ia, ++ib) c /= *ia;
  return c;
}

/// The folder every path of `paths` (not empty) lies in, by name.
fs::path common_parent(const std::vector<std::string>& paths) {
  fs::path common = fs::path(paths.front()).parent_path();
  for (const auto& p : paths) common = common_prefix(common, fs::path(p).parent_path());
  return common;
}

}  // namespace

std::vector<InputShard> resolve_inputs(const std::vector<std::string>& inputs) {
  if (inputs.empty()) throw Error("curate: no input given");
  std::vector<InputShard> out;
  std::vector<std::pair<uint32_t, std::vector<std::string>>> listed;  // (input, shards)
  std::vector<fs::path> roots;
  for (uint32_t input = 0; input < inputs.size(); ++input) {
    const std::string& spec = inputs[input];
    std::vector<std::string> shards;
    fs::path root;
    std::error_code ec;
    if (fs::is_directory(spec, ec)) {
      root = fs::path(spec);
      std::vector<fs::path> subs;
      for (const auto& e : fs::directory_iterator(root, ec))
        if (e.is_directory() && dir_has_tar(e.path())) subs.push_back(e.path());
      std::sort(subs.begin(), subs.end());
      if (dir_has_tar(root)) {
        if (!subs.empty()) {
          // Reading only the top-level shards would drop the split folders' samples unnoticed.
          throw Error("curate: input '" + spec + "' holds .tar shards and also split folders with shards ('" +
                      subs.front().filename().string() + "'" + (subs.size() > 1 ? ", ..." : "") +
                      "); give the shards and each split folder as separate inputs");
        }
        shards = data::list_shards(spec);
      } else {
        for (const auto& s : subs)
          for (auto& p : data::list_shards(s.string())) shards.push_back(p);
        if (shards.empty()) throw Error("curate: input '" + spec + "' has no .tar shard (nor split folders holding shards)");
      }
    } else {
      shards = data::list_shards(spec);
      root = common_parent(shards);
    }
    // Named as given (absolute, "." and ".." folded), not resolved through symlinks: an input reached
    // through a linked folder keeps the name the user sees.
    roots.push_back(absolute_named(root.empty() ? fs::path(".") : root));
    listed.emplace_back(input, std::move(shards));
  }
  // With several inputs, each keeps its root's path below the roots' common folder as a prefix
  // (data/openclipart/train + data/emoji/train -> openclipart/train/..., emoji/train/...).
  fs::path common;
  if (roots.size() > 1) {
    common = roots.front();
    for (const auto& r : roots) common = common_prefix(common, r);
  }
  for (size_t i = 0; i < listed.size(); ++i) {
    const fs::path& root = roots[i];
    fs::path prefix;
    if (roots.size() > 1) {
      prefix = root.lexically_relative(common);
      if (prefix.empty() || prefix == ".") prefix = root.filename();  // the same root twice: collides below
      if (prefix.empty()) prefix = "input";
    }
    for (const auto& p : listed[i].second) {
      fs::path rel = absolute_named(p).lexically_relative(root);
      if (rel.empty() || rel.begin()->string() == "..") rel = fs::path(p).filename();
      out.push_back({p, (prefix / rel).lexically_normal().string(), listed[i].first});
    }
  }
  // The same file reached twice (a folder and a link to it, a hard link, or a shard in two inputs) would be read twice.
  std::unordered_map<std::string, std::string> physical;
  for (const auto& s : out) {
    struct stat st {};
    // (device, inode) names the file however it is reached (symlinks, hard links, other spellings).
    const std::string id = ::stat(s.path.c_str(), &st) == 0 ? fmt::format("{}:{}", st.st_dev, st.st_ino) : s.path;
    auto [it, fresh] = physical.emplace(id, s.path);
    if (!fresh)
      throw Error("curate: input shards '" + it->second + "' and '" + s.path + "' are the same file; list each shard once");
  }
  std::unordered_map<std::string, std::string> seen;
  for (const auto& s : out) {
    auto [it, fresh] = seen.emplace(s.out_rel, s.path);
    if (!fresh)
      throw Error("curate: input shards '" + it->second + "' and '" + s.path + "' would both be written to '" + s.out_rel +
                  "'; curate them separately or list each shard once");
  }
  return out;
}

}  // namespace florence::curate
