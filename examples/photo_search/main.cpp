// Photo search without a server: ranks a folder's images (read with OpenCV) by a text query, or
// queries an index built by `florence index build` with --index.
//   photo_search [--model M] [--vocab V] [--k K] CHECKPOINT FOLDER QUERY
//   photo_search [--model M] [--vocab V] [--k K] --index DIR CHECKPOINT QUERY
// Output, best first: RANK <tab> COSINE <tab> PATH (the index's key with --index)
#include <opencv2/imgcodecs.hpp>

#include <cstdio>

#include "common.h"

int main(int argc, char** argv) {
  const char* usage =
      "usage: photo_search [--model M] [--vocab V] [--k K] CHECKPOINT FOLDER QUERY\n"
      "       photo_search [--model M] [--vocab V] [--k K] --index DIR CHECKPOINT QUERY\n";
  example::Args a = example::parse(argc, argv, usage, 2);
  if (a.positional.size() != (a.index.empty() ? 3u : 2u) || a.k < 1) {
    std::cerr << usage;
    return 2;
  }
  try {
    a.model.checkpoint = a.positional[0];
    const florence::Model model = florence::Model::load(a.model);
    const torch::Tensor query = model.embed_texts({a.positional.back()});  // [1, D]

    if (!a.index.empty()) {
      const florence::ImageIndex index = florence::ImageIndex::open(a.index);
      const auto hits = index.search(query, a.k)[0];
      for (size_t r = 0; r < hits.size(); ++r) std::printf("%zu\t%.6f\t%s\n", r + 1, hits[r].score, hits[r].key.c_str());
      return 0;
    }
    // One image at a time, as a program holding decoded frames would (cv::Mat in OpenCV's BGR
    // order; IMREAD_UNCHANGED keeps alpha, which the model composites on white).
    std::vector<std::string> paths;
    std::vector<torch::Tensor> rows;
    for (const auto& p : example::images_in(a.positional[1])) {
      const cv::Mat image = cv::imread(p, cv::IMREAD_UNCHANGED);
      if (image.empty()) {
        std::fprintf(stderr, "photo_search: skipped %s (not readable by OpenCV)\n", p.c_str());
        continue;
      }
      paths.push_back(p);
      rows.push_back(model.embed_image(image));
    }
    if (rows.empty()) throw florence::Error("no readable images in " + a.positional[1]);
    const torch::Tensor scores = florence::similarity(torch::cat(rows), query).squeeze(1);  // [N]
    const auto [best, idx] = scores.topk(std::min<int64_t>(a.k, scores.size(0)));
    for (int64_t r = 0; r < best.size(0); ++r)
      std::printf("%lld\t%.6f\t%s\n", (long long)(r + 1), best[r].item<double>(), paths[idx[r].item<int64_t>()].c_str());
  } catch (const std::exception& e) {  // florence::Error for bad input; std::filesystem errors while listing
    std::cerr << "photo_search: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
