// Zero-shot classification of the images given on the command line with free-form labels.
//   zero_shot [--model M] [--vocab V] CHECKPOINT LABEL,LABEL[,...] IMAGE [IMAGE...]
// Output, one line per image: PATH <tab> TOP LABEL <tab> p(label 1) p(label 2) ... (label order as given)
#include <cstdio>
#include <sstream>

#include "common.h"

int main(int argc, char** argv) {
  const char* usage = "usage: zero_shot [--model M] [--vocab V] CHECKPOINT LABEL,LABEL[,...] IMAGE [IMAGE...]\n";
  example::Args a = example::parse(argc, argv, usage, 3);
  try {
    a.model.checkpoint = a.positional[0];
    std::vector<std::string> labels;
    std::stringstream csv(a.positional[1]);
    for (std::string l; std::getline(csv, l, ',');) labels.push_back(l);
    const std::vector<std::string> paths(a.positional.begin() + 2, a.positional.end());

    const florence::Model model = florence::Model::load(a.model);
    const torch::Tensor probs = model.zero_shot(model.embed_image_files(paths), labels);  // [N, L], rows sum to 1
    for (size_t i = 0; i < paths.size(); ++i) {
      const int64_t top = probs[i].argmax().item<int64_t>();
      std::printf("%s\t%s\t", paths[i].c_str(), labels[top].c_str());
      for (size_t l = 0; l < labels.size(); ++l) std::printf(l ? " %.6f" : "%.6f", probs[i][l].item<double>());
      std::printf("\n");
    }
  } catch (const std::exception& e) {  // florence::Error for bad input; std::filesystem errors while listing
    std::cerr << "zero_shot: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
