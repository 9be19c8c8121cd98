#pragma once
// Turning a query into model input: image bytes (a file, or base64 in a request) into the
// checkpoint's eval preprocessing, with a pixel limit. Shared by `florence search` and the server.
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "florence/core/error.h"

namespace florence::eval {
struct EvalModel;
}

namespace florence::search {

/// Standard base64 (RFC 4648 §4, '+' '/', '=' padding) into bytes, decoded by OpenSSL
/// (EVP_DecodeBlock). A "data:<mime>;base64," prefix (what a browser's FileReader gives) is
/// dropped first; ASCII whitespace is ignored. Throws florence::Error on any other character,
/// a length that is not a multiple of 4 after whitespace is removed, misplaced padding, or empty
/// input.
std::vector<uint8_t> decode_base64(std::string_view text);

/// Image bytes that decode, but with more than the allowed pixels.
class TooManyPixels : public Error {
 public:
  using Error::Error;
};

/// Decodes encoded image bytes (PNG / JPEG / WebP / BMP / TIFF / PNM) and applies the model's
/// eval preprocessing (resize shorter side, centre crop, mean/std: eval/encode.h). Returns
/// [1, 3, S, S] float32. Throws TooManyPixels above max_pixels (checked from the header before
/// decoding when the format allows), florence::Error when the bytes are not a decodable image.
torch::Tensor preprocess_image(const eval::EvalModel& m, const std::vector<uint8_t>& bytes, int64_t max_pixels);

}  // namespace florence::search
