#!/usr/bin/env python3
"""Reference for tests/parity/detect/test_deform_conv_parity.cpp: torchvision.ops.deform_conv2d
(Debian python3-torchvision 0.14) output and the gradients of input, offset, mask, weight and bias.

Each case draws float32 tensors (seeded), then runs torchvision on their float64 copies, so the
reference carries no float32 rounding of its own; the C++ test runs the same float32 values (and
their float64 copies) through our kernel. Cases cover taps pushed outside the image (offsets of
several pixels), non-integer and exactly integer offsets (taps landing on -1 and H exactly),
strides, paddings, dilations, non-square kernels, offset groups, weight groups, no mask / no bias.

Writes OUT/cases.pt: {"<name>.<field>": tensor}, fields input, offset, mask (absent = None),
weight, bias (absent = None), geo (int64 [sh, sw, ph, pw, dh, dw]), grad_out, out, g_input,
g_offset, g_mask, g_weight, g_bias.
Usage: deform_conv_reference.py OUT_DIR
"""
import os
import sys

import torch
from torchvision.ops import deform_conv2d

# name: B, C, H, W, O, (kh, kw), stride, padding, dilation, offset groups, weight groups,
#       offset kind, mask, bias
CASES = {
    "basic": (2, 8, 9, 9, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, "normal2", True, True),
    "stride2_dil2_og2": (1, 8, 11, 13, 4, (3, 3), (2, 2), (1, 1), (2, 2), 2, 1, "normal2", True, True),
    "rect_wgroups": (2, 8, 10, 7, 6, (3, 2), (2, 1), (1, 0), (1, 2), 4, 2, "normal2", True, True),
    "far_outside": (1, 4, 7, 7, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, "wide", True, True),
    "integer_offsets": (2, 4, 6, 8, 3, (3, 3), (1, 1), (1, 1), (1, 1), 2, 1, "integer", True, True),
    "no_mask_no_bias": (1, 6, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), 3, 1, "normal2", False, False),
    "dyhead_like": (1, 32, 12, 10, 32, (3, 3), (2, 2), (1, 1), (1, 1), 1, 1, "normal2", True, True),
}


def out_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    saved = {}
    for name, (B, C, H, W, O, (kh, kw), st, pad, dil, og, wg, kind, use_mask, use_bias) in CASES.items():
        Ho, Wo = out_size(H, kh, st[0], pad[0], dil[0]), out_size(W, kw, st[1], pad[1], dil[1])
        K = kh * kw
        x = torch.randn(B, C, H, W, generator=g)
        if kind == "normal2":  # non-integer offsets, a few pixels: some taps leave the image
            off = 2.0 * torch.randn(B, 2 * og * K, Ho, Wo, generator=g)
        elif kind == "wide":  # most taps far outside, some partly inside
            off = (torch.rand(B, 2 * og * K, Ho, Wo, generator=g) - 0.5) * 24.0
        else:  # exact integers in [-3, 3]: taps on grid points, on -1 and on H/W exactly
            off = torch.randint(-3, 4, (B, 2 * og * K, Ho, Wo), generator=g).float()
        mask = torch.rand(B, og * K, Ho, Wo, generator=g) if use_mask else None
        w = torch.randn(O, C // wg, kh, kw, generator=g) * 0.2
        b = torch.randn(O, generator=g) if use_bias else None
        gout = torch.randn(B, O, Ho, Wo, generator=g)

        def d(t):
            return None if t is None else t.double().requires_grad_(True)

        xd, offd, maskd, wd, bd = d(x), d(off), d(mask), d(w), d(b)
        y = deform_conv2d(xd, offd, wd, bd, stride=st, padding=pad, dilation=dil, mask=maskd)
        (y * gout.double()).sum().backward()
        fields = {"input": x, "offset": off, "mask": mask, "weight": w, "bias": b, "grad_out": gout,
                  "geo": torch.tensor([st[0], st[1], pad[0], pad[1], dil[0], dil[1]], dtype=torch.int64),
                  "out": y.detach(), "g_input": xd.grad, "g_offset": offd.grad,
                  "g_mask": None if maskd is None else maskd.grad, "g_weight": wd.grad,
                  "g_bias": None if bd is None else bd.grad}
        for k, v in fields.items():
            if v is not None:
                saved[f"{name}.{k}"] = v.contiguous()
    torch.save(saved, os.path.join(out_dir, "cases.pt"))


if __name__ == "__main__":
    main()
