// Embeds every image of a folder and the texts given, and prints each image's nearest text.
//   embed_folder [--model M] [--vocab V] CHECKPOINT FOLDER TEXT [TEXT...]
// Output, one line per image (sorted by path): PATH <tab> NEAREST TEXT <tab> COSINE
#include <cstdio>

#include "common.h"

int main(int argc, char** argv) {
  const char* usage = "usage: embed_folder [--model M] [--vocab V] CHECKPOINT FOLDER TEXT [TEXT...]\n";
  example::Args a = example::parse(argc, argv, usage, 3);
  try {
    a.model.checkpoint = a.positional[0];
    const florence::Model model = florence::Model::load(a.model);
    const std::vector<std::string> paths = example::images_in(a.positional[1]);
    const std::vector<std::string> texts(a.positional.begin() + 2, a.positional.end());
    if (paths.empty()) throw florence::Error("no images in " + a.positional[1]);

    const torch::Tensor images = model.embed_image_files(paths);  // [N, D], unit rows
    const torch::Tensor words = model.embed_texts(texts);          // [M, D]
    const torch::Tensor cos = florence::similarity(images, words); // [N, M]
    const auto [best, idx] = cos.max(1);
    for (size_t i = 0; i < paths.size(); ++i)
      std::printf("%s\t%s\t%.6f\n", paths[i].c_str(), texts[idx[i].item<int64_t>()].c_str(), best[i].item<double>());
  } catch (const std::exception& e) {  // florence::Error for bad input; std::filesystem errors while listing
    std::cerr << "embed_folder: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
