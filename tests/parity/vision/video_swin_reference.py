#!/usr/bin/env python3
"""Reference outputs of 3D shifted-window attention for tests/parity/vision/test_video_swin_parity.cpp.

Usage: video_swin_reference.py OUT_DIR
Writes OUT_DIR/attention3d.pt (torch.save, a plain dict of tensors): for each case i,
  case{i}.qkv.weight / .qkv.bias / .proj.weight / .proj.bias / .relative_position_bias_table
  case{i}.window, case{i}.shift   int64 [3] (requested, (t, h, w))
  case{i}.x   [B, T, H, W, C] input,  case{i}.y  the attention output.
The computation is the textbook Video Swin one (Liu et al. 2022), written with tensor reshapes:
pad each axis to a multiple of the window, roll by -shift, cut windows with view/permute, attention
with the relative position bias and the region mask (-100), merge windows, roll back, crop. An axis
not larger than its window becomes one window with no shift; the bias uses the effective window's
own offsets; a padded time slice is a region of its own (the conventions of video_swin_layers.h).
Needs Debian's python3-torch 1.13.
"""
import os
import sys

import torch
import torch.nn.functional as F


def effective(size, window, shift):
    win, sh = [], []
    for s, w, k in zip(size, window, shift):
        if s <= w:
            win.append(s)
            sh.append(0)
        else:
            win.append(w)
            sh.append(k)
    return win, sh


def bias_index(win, full):
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in win], indexing="ij")).flatten(1)  # 3, N
    rel = coords[:, :, None] - coords[:, None, :]
    for a in range(3):
        rel[a] += full[a] - 1
    return rel[0] * (2 * full[1] - 1) * (2 * full[2] - 1) + rel[1] * (2 * full[2] - 1) + rel[2]


def partition(t, win):
    b, tp, hp, wp = t.shape[:4]
    rest = t.shape[4:]
    t = t.view(b, tp // win[0], win[0], hp // win[1], win[1], wp // win[2], win[2], *rest)
    t = t.permute(0, 1, 3, 5, 2, 4, 6, *range(7, 7 + len(rest))).contiguous()
    return t.view(-1, win[0] * win[1] * win[2], *rest)


def region_mask(size, padded, win, sh):
    labels = torch.zeros(padded, dtype=torch.long)
    if any(sh):
        bands = [((0, -w), (-w, -s), (-s, None)) if s > 0 else ((0, None),) for w, s in zip(win, sh)]
        for i, bt in enumerate(bands[0]):
            for j, bh in enumerate(bands[1]):
                for k, bw in enumerate(bands[2]):
                    labels[slice(*bt), slice(*bh), slice(*bw)] = i * 9 + j * 3 + k
    # Padded time slices (t >= T before the roll) form a region of their own.
    pad_time = torch.zeros(padded, dtype=torch.bool)
    pad_time[size[0]:] = True
    pad_time = torch.roll(pad_time, shifts=(-sh[0],), dims=(0,))
    labels[pad_time] = 27
    lw = partition(labels[None, ..., None], win).squeeze(-1)  # nW, N
    diff = lw[:, None, :] - lw[:, :, None]
    return torch.zeros(diff.shape).masked_fill(diff != 0, -100.0)


def attention3d(x, p, window, shift, heads):
    B, T, H, W, C = x.shape
    win, sh = effective((T, H, W), window, shift)
    padded = [(s + w - 1) // w * w for s, w in zip((T, H, W), win)]
    xp = F.pad(x, (0, 0, 0, padded[2] - W, 0, padded[1] - H, 0, padded[0] - T))
    if any(sh):
        xp = torch.roll(xp, shifts=(-sh[0], -sh[1], -sh[2]), dims=(1, 2, 3))
    xw = partition(xp, win)  # B*nW, N, C
    Bw, N, _ = xw.shape
    qkv = F.linear(xw, p["qkv.weight"], p["qkv.bias"]).reshape(Bw, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (C // heads) ** -0.5, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    idx = bias_index(win, window)
    attn = attn + p["relative_position_bias_table"][idx.reshape(-1)].reshape(N, N, heads).permute(2, 0, 1)[None]
    needs_mask = any(sh) or padded[0] > T
    if needs_mask:
        mask = region_mask((T, H, W), padded, win, sh)
        nW = mask.shape[0]
        attn = attn.view(Bw // nW, nW, heads, N, N) + mask[None, :, None]
        attn = attn.view(Bw, heads, N, N)
    attn = attn.softmax(-1)
    out = F.linear((attn @ v).transpose(1, 2).reshape(Bw, N, C), p["proj.weight"], p["proj.bias"])
    nt, nh, nw = padded[0] // win[0], padded[1] // win[1], padded[2] // win[2]
    out = out.view(B, nt, nh, nw, win[0], win[1], win[2], C).permute(0, 1, 4, 2, 5, 3, 6, 7)
    out = out.reshape(B, padded[0], padded[1], padded[2], C)
    if any(sh):
        out = torch.roll(out, shifts=tuple(sh), dims=(1, 2, 3))
    return out[:, :T, :H, :W].contiguous()


CASES = [  # (size (T, H, W), window, shift)
    ((8, 8, 8), (2, 4, 4), (1, 2, 2)),    # Video Swin's case: every axis shifted, no padding
    ((4, 7, 9), (2, 3, 4), (1, 1, 2)),    # spatial padding + shift
    ((5, 6, 6), (2, 3, 3), (1, 1, 1)),    # padded time (its own region) + shift
    ((3, 4, 4), (4, 7, 7), (2, 3, 3)),    # every axis shrinks: one window, no shift
    ((6, 4, 8), (4, 4, 4), (0, 0, 0)),    # plain windows, padded time, H one window
]


def save_atomic(obj, path):
    tmp = "%s.tmp%d" % (path, os.getpid())
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    C, heads = 8, 2
    out = {}
    for i, (size, window, shift) in enumerate(CASES):
        rows = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        p = {
            "qkv.weight": torch.randn(3 * C, C) * 0.3,
            "qkv.bias": torch.randn(3 * C) * 0.3,
            "proj.weight": torch.randn(C, C) * 0.3,
            "proj.bias": torch.randn(C) * 0.3,
            "relative_position_bias_table": torch.randn(rows, heads),
        }
        x = torch.randn(2, *size, C)
        with torch.no_grad():
            y = attention3d(x, p, window, shift, heads)
        for k, v in p.items():
            out["case%d.%s" % (i, k)] = v
        out["case%d.window" % i] = torch.tensor(window, dtype=torch.long)
        out["case%d.shift" % i] = torch.tensor(shift, dtype=torch.long)
        out["case%d.x" % i] = x
        out["case%d.y" % i] = y
    save_atomic(out, os.path.join(out_dir, "attention3d.pt"))
    print("wrote", out_dir, len(CASES), "cases")


if __name__ == "__main__":
    main()
