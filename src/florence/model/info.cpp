#include "florence/model/info.h"

namespace florence::model {
namespace {

int64_t ceil_to(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
int64_t conv_out(int64_t in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

}  // namespace

Counts count_vision(const vision::SwinConfig& c, int height, int width) {
  Counts n;
  const bool swin = c.variant == "swin";
  const int64_t C = c.embed_dim;
  const int64_t W = c.window_size;
  // Stem: conv (+bias) and optional LayerNorm.
  const int k0 = c.patch_embed.kernel;
  int64_t h = conv_out(height, k0, c.patch_embed.stride, c.patch_embed.padding);
  int64_t w = conv_out(width, k0, c.patch_embed.stride, c.patch_embed.padding);
  n.params += int64_t(c.in_chans) * C * k0 * k0 + C + (c.patch_norm ? 2 * C : 0);
  n.macs += double(h * w) * C * c.in_chans * k0 * k0;
  for (int i = 0; i < c.num_stages(); ++i) {
    const int64_t d = c.stage_dim(i);
    const int64_t hid = static_cast<int64_t>(d * c.mlp_ratio);
    const int64_t heads = c.num_heads[i];
    const int64_t tokens = h * w;
    const int64_t padded = ceil_to(h, W) * ceil_to(w, W);
    int64_t block = 2 * d                                   // norm1
                    + 3 * d * d + (c.qkv_bias ? 3 * d : 0)  // qkv
                    + d * d + d                             // proj
                    + (2 * W - 1) * (2 * W - 1) * heads     // relative position bias table
                    + 2 * d                                 // norm2
                    + d * hid + hid + hid * d + d;          // mlp
    if (c.layer_scale_init > 0) block += 2 * d;
    n.params += block * c.depths[i];
    const double block_macs = double(padded) * 3 * d * d     // qkv (on padded windows)
                              + 2.0 * double(padded) * W * W * d  // q k^T and attn v
                              + double(padded) * d * d         // proj
                              + 2.0 * double(tokens) * d * hid;  // mlp
    n.macs += block_macs * c.depths[i];
    if (i + 1 < c.num_stages()) {
      if (swin) {
        const int64_t h2 = (h + 1) / 2, w2 = (w + 1) / 2;
        n.params += 2 * 4 * d + 4 * d * 2 * d;
        n.macs += double(h2 * w2) * 4 * d * 2 * d;
        h = h2;
        w = w2;
      } else {
        const int k = c.downsample.kernel;
        const int64_t h2 = conv_out(h, k, c.downsample.stride, c.downsample.padding);
        const int64_t w2 = conv_out(w, k, c.downsample.stride, c.downsample.padding);
        n.params += d * 2 * d * k * k + 2 * d + 2 * 2 * d;
        n.macs += double(h2 * w2) * 2 * d * d * k * k;
        h = h2;
        w = w2;
      }
    }
  }
  const int64_t f = c.num_features();
  n.params += 2 * f;  // final norm
  if (c.num_classes > 0) {
    n.params += f * c.num_classes + c.num_classes;
    n.macs += double(f) * c.num_classes;
  }
  return n;
}

Counts count_text(const text::TextConfig& c, int length) {
  Counts n;
  const int64_t L = length > 0 ? length : c.context_length;
  const int64_t Wd = c.width;
  const int64_t hid = static_cast<int64_t>(Wd * c.mlp_ratio);
  n.params += int64_t(c.vocab_size) * Wd + int64_t(c.context_length) * Wd;
  const int64_t block = 2 * Wd + 3 * Wd * Wd + 3 * Wd + Wd * Wd + Wd + 2 * Wd + Wd * hid + hid + hid * Wd + Wd;
  n.params += block * c.layers + 2 * Wd;
  const double block_macs = double(L) * 4 * Wd * Wd + 2.0 * L * L * Wd + 2.0 * L * Wd * hid;
  n.macs += block_macs * c.layers;
  return n;
}

int64_t count_heads(const FlorenceConfig& c) {
  return int64_t(c.vision.num_features()) * c.embed_dim + int64_t(c.text.width) * c.embed_dim + 1;
}

}  // namespace florence::model
