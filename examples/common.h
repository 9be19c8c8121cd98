#pragma once
// Shared by the examples: the common flags and listing a folder's images.
#include <florence/florence.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace example {

/// Splits argv into positionals and the flags --model M, --vocab V, --device D, --k K, --index DIR.
struct Args {
  florence::ModelOptions model;
  std::vector<std::string> positional;
  int k = 5;
  std::string index;
};

/// Exits with status 2 and the usage text when fewer than `min_positional` positionals are given.
inline Args parse(int argc, char** argv, const char* usage, size_t min_positional) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << s << " needs a value\n" << usage;
        std::exit(2);
      }
      return argv[++i];
    };
    if (s == "--model") a.model.model = value();
    else if (s == "--vocab") a.model.vocab = value();
    else if (s == "--device") a.model.device = value();
    else if (s == "--k") {
      const std::string v = value();
      try {
        size_t used = 0;
        a.k = std::stoi(v, &used);
        if (used != v.size()) throw std::invalid_argument(v);
      } catch (const std::exception&) {
        std::cerr << "--k needs a whole number, got '" << v << "'\n" << usage;
        std::exit(2);
      }
    }
    else if (s == "--index") a.index = value();
    else if (s == "-h" || s == "--help") {
      std::cout << usage;
      std::exit(0);
    } else a.positional.push_back(s);
  }
  if (a.positional.size() < min_positional) {
    std::cerr << usage;
    std::exit(2);
  }
  return a;
}

/// Image files below `dir` (by extension, any case), sorted by path. Throws florence::Error when
/// `dir` is not a folder.
inline std::vector<std::string> images_in(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw florence::Error("'" + dir + "' is not a folder");
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".webp" || ext == ".bmp") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace example
