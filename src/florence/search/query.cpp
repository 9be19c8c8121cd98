// Query input helpers (see query.h).
#include "florence/search/query.h"

#include <openssl/evp.h>
#include <torch/torch.h>

#include <random>

#include "florence/data/loader.h"
#include "florence/data/transforms.h"
#include "florence/eval/encode.h"

namespace florence::search {

std::vector<uint8_t> decode_base64(std::string_view text) {
  if (text.rfind("data:", 0) == 0) {
    const size_t comma = text.find(',');
    if (comma == std::string_view::npos || text.substr(0, comma).find(";base64") == std::string_view::npos)
      throw Error("base64: a data: URL must be of the form data:<type>;base64,<data>");
    text.remove_prefix(comma + 1);
  }
  std::string clean;
  clean.reserve(text.size());
  for (char c : text)
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') clean.push_back(c);
  if (clean.empty()) throw Error("base64: empty");
  if (clean.size() % 4 != 0) throw Error("base64: length " + std::to_string(clean.size()) + " is not a multiple of 4");
  size_t pad = 0;
  while (pad < 2 && clean[clean.size() - 1 - pad] == '=') ++pad;
  if (clean.find('=') < clean.size() - pad) throw Error("base64: '=' padding inside the data");
  std::vector<uint8_t> out(clean.size() / 4 * 3);
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(clean.data()), int(clean.size()));
  if (n < 0) throw Error("base64: invalid character in the data");
  out.resize(size_t(n) - pad);  // EVP_DecodeBlock counts the padding as zero bytes
  return out;
}

torch::Tensor preprocess_image(const eval::EvalModel& m, const std::vector<uint8_t>& bytes, int64_t max_pixels) {
  data::TransformOptions to = eval::eval_loader_options(m, false).transform_options();
  to.decode.max_pixels = max_pixels;
  const data::ImageTransform tf(to);
  std::mt19937_64 rng(0);  // eval transform: unused
  try {
    return tf(bytes, rng).unsqueeze(0);
  } catch (const data::ImageTooLarge& e) {
    throw TooManyPixels(e.what());
  } catch (const Error& e) {
    throw Error(std::string("not a decodable image: ") + e.what());
  }
}

}  // namespace florence::search
