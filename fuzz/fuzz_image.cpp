// Fuzz harness: what an image in a request or a shard goes through before the model: base64
// (search/query.h decode_base64, as in POST /knn and /embed), then decoding with the pixel limit
// (data/transforms.h decode_rgb) and the emoji corpus' compositing (data/corpus.h).
// First byte % 3: 0 raw image bytes, 1 base64 text of an image, 2 raw bytes to composite_on_white_png.
#include <opencv2/core.hpp>

#include "florence/data/corpus.h"
#include "florence/data/transforms.h"
#include "florence/search/query.h"
#include "fuzz.h"

FLORENCE_FUZZ_TARGET(image) {
  using namespace florence;
  if (size == 0) return 0;
  data::DecodeOptions opt;
  opt.max_pixels = int64_t(1) << 22;  // 4 Mpx: bounds the work per input
  std::vector<uint8_t> bytes(data + 1, data + size);
  const int mode = data[0] % 3;
  fuzz::refuse_ok([&] {
    if (mode == 1) bytes = search::decode_base64(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
    if (mode == 2) {
      (void)data::composite_on_white_png(bytes, 32);
      return;
    }
    const cv::Mat rgb = data::decode_rgb(bytes, opt);
    fuzz::check(rgb.type() == CV_8UC3 && !rgb.empty(), "image: decode_rgb returned no 8-bit RGB image");
    fuzz::check(int64_t(rgb.rows) * rgb.cols <= opt.max_pixels, "image: the pixel limit was passed");
  });
  return 0;
}
