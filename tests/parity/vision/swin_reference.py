#!/usr/bin/env python3
"""Reference outputs of torchvision's Swin-T for tests/parity/vision/test_swin_parity.cpp.

Usage: swin_reference.py OUT_DIR
Writes (torch.save, default zip format):
  OUT_DIR/weights.pt  torchvision swin_t() state dict as a plain dict (random init, torch.manual_seed(0)), torchvision key names
  OUT_DIR/io.pt       {"x224": [2,3,224,224], "y224": [2,768],
                       "x100x300": [1,3,100,300], "y100x300": [1,768]}
y* are the pooled features before the classifier: features -> norm -> permute -> avgpool -> flatten.
100x300 gives stage maps 25x75, 13x38, 7x19, 4x10: odd-size patch merging, padding to the window,
and windows shifted along W only (the padded H equals the window); 224 gives a 7x7 last stage (no shift).
Needs Debian's python3-torch 1.13 + python3-torchvision 0.14.
"""
import os
import sys

import torch
import torchvision


def pooled_features(model, x):
    h = model.features(x)
    h = model.norm(h)
    h = model.permute(h)
    h = model.avgpool(h)
    return model.flatten(h)


def save_atomic(obj, path):
    # ctest may run several test processes at once: never expose a half-written file.
    tmp = "%s.tmp%d" % (path, os.getpid())
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    model = torchvision.models.swin_t().eval()
    # Non-trivial LayerNorm affine parameters, so a swapped norm weight/bias would be caught.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    io = {}
    with torch.no_grad():
        for name, shape in (("224", (2, 3, 224, 224)), ("100x300", (1, 3, 100, 300))):
            x = torch.randn(*shape)
            io["x" + name] = x
            io["y" + name] = pooled_features(model, x)
    # A plain dict: LibTorch 1.13's torch::pickle_load cannot rebuild the OrderedDict that
    # state_dict() returns (its `_metadata` attribute), see the lead's checkpoint notes.
    save_atomic(dict(model.state_dict()), os.path.join(out_dir, "weights.pt"))
    save_atomic(io, os.path.join(out_dir, "io.pt"))
    print("wrote", out_dir, {k: tuple(v.shape) for k, v in io.items()})


if __name__ == "__main__":
    main()
