#pragma once
// The tiny METER config shared by the vlp unit and parity tests (tests/ is on their include path).
#include "florence/adapt/vlp/meter_config.h"

namespace florence::test {

inline constexpr int kTinySot = 98, kTinyEot = 99;  // int: torch::tensor({...}) lists need one type

/// Tiny towers (16 px CoSwin: 2x2 = 4 image tokens of 32 channels; 1-layer 32-wide text over a
/// 100-id vocabulary, context 16) with a 2-layer 32-wide fusion (4 heads, FFN 64), 5 answers, no
/// dropout: fast enough to train in a unit test. tests/parity/vlp/meter_reference.py is run with
/// these dimensions.
inline vlp::MeterConfig tiny_meter_config() {
  vlp::MeterConfig c;
  c.name = "tiny";
  c.towers.vision.embed_dim = 16;
  c.towers.vision.depths = {1, 1};
  c.towers.vision.num_heads = {1, 2};
  c.towers.vision.window_size = 2;
  c.towers.vision.drop_path_rate = 0.0;
  c.towers.vision.image_size = 16;
  c.towers.text.vocab_size = 100;
  c.towers.text.context_length = 16;
  c.towers.text.width = 32;
  c.towers.text.heads = 4;
  c.towers.text.layers = 1;
  c.towers.text.sot_token = kTinySot;
  c.towers.text.eot_token = kTinyEot;
  c.towers.embed_dim = 16;
  c.hidden = 32;
  c.heads = 4;
  c.layers = 2;
  c.intermediate = 64;
  c.dropout = 0.0;
  c.num_answers = 5;
  return c;
}

}  // namespace florence::test
