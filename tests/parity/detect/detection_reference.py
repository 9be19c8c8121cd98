#!/usr/bin/env python3
"""References for tests/parity/detect/test_detection_parity.cpp, from Debian's PyTorch 1.13 and
torchvision 0.14 (not from our code):

  dyhead_weights.pt   one DyHead block's parameters under DynamicHead's names (float32, every
                      parameter random, GroupNorm affine terms included, so a mis-mapped name shows)
  dyhead_io.pt        a 3-level pyramid x0, x1, x2 (float32) and, computed in float64 by a small
                      PyTorch DyConv written here on torchvision.ops.deform_conv2d:
                        crop.y{l}         outputs with the coarser level's offsets cropped top-left
                        reference.y{l}    outputs with DynamicHead's buffer reinterpretation
                        crop.g{l}, crop.g_offset_w   gradients of sum_l <y_l, r_l> (r_l = crop.r{l})
                      for an even pyramid (16x12, 8x6, 4x3) and, as odd.*, an odd one (9x7, 5x4, 3x2)
  ops.pt              focal: logits/targets and torchvision.ops.sigmoid_focal_loss (reduction none);
                      giou: pred/target boxes and torchvision.ops.generalized_box_iou_loss;
                      iou: a/b boxes and torchvision.ops.box_iou;
                      nms: boxes/scores/labels and torchvision.ops.nms / batched_nms keep indices
Usage: detection_reference.py OUT_DIR
"""
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import (batched_nms, box_iou, deform_conv2d, generalized_box_iou_loss, nms,
                             sigmoid_focal_loss)

C = 32  # channels: GroupNorm(16) and DyReLU's C/4 hidden units both fit


def hard_sigmoid(x):
    return F.relu6(x + 3.0) / 6.0


class MDConv(nn.Module):
    """Holds a 3x3 modulated deformable conv's parameters; applied with torchvision's op."""

    def __init__(self, stride):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(C, C, 3, 3) * 0.05)
        self.bias = nn.Parameter(torch.randn(C) * 0.1)
        self.stride = stride

    def forward(self, x, offset, mask):
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=1, mask=mask)


class ConvNorm(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.conv = MDConv(stride)
        self.bn = nn.GroupNorm(16, C)

    def forward(self, x, offset, mask):
        return self.bn(self.conv(x, offset, mask))


class DyReLURef(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(C, C // 4), nn.ReLU(), nn.Linear(C // 4, 4 * C))

    def forward(self, x):
        h = hard_sigmoid(self.fc(x.mean(dim=(2, 3)))).view(x.shape[0], 4 * C, 1, 1)
        a1, b1, a2, b2 = torch.split(h, C, dim=1)
        return torch.maximum(x * ((a1 - 0.5) * 2 + 1) + (b1 - 0.5), x * ((a2 - 0.5) * 2) + (b2 - 0.5))


class DyConvRef(nn.Module):
    def __init__(self):
        super().__init__()
        self.DyConv = nn.ModuleList([ConvNorm(1), ConvNorm(1), ConvNorm(2)])
        self.AttnConv = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(C, 1, 1), nn.ReLU())
        self.relu = DyReLURef()
        self.offset = nn.Conv2d(C, 27, 3, padding=1)

    def forward(self, xs, mode):
        out = []
        for l, x in enumerate(xs):
            om = self.offset(x)
            off, mask = om[:, :18], om[:, 18:].sigmoid()
            feats = [self.DyConv[1](x, off, mask)]
            if l > 0:
                feats.append(self.DyConv[2](xs[l - 1], off, mask))
            if l + 1 < len(xs):
                h, w = xs[l + 1].shape[2:]
                if mode == "crop":
                    coff, cmask = off[:, :, :h, :w], mask[:, :, :h, :w]
                else:  # each image's 27xHxW buffer (9xHxW mask) read from its start at the smaller size
                    B = x.shape[0]
                    coff = om.contiguous().view(B, -1)[:, :18 * h * w].view(B, 18, h, w)
                    cmask = mask.contiguous().view(B, -1)[:, :9 * h * w].view(B, 9, h, w)
                up = self.DyConv[0](xs[l + 1], coff, cmask)
                feats.append(F.interpolate(up, size=x.shape[2:], mode="bilinear", align_corners=True))
            weighted = [f * hard_sigmoid(self.AttnConv(f)) for f in feats]
            out.append(self.relu(torch.stack(weighted).mean(0)))
        return out


def randomise(m, g):
    with torch.no_grad():
        for name, p in m.named_parameters():
            scale = 0.3 if "offset" in name else 0.2
            if name.endswith("bn.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def dyhead(out_dir, g):
    m = DyConvRef()
    randomise(m, g)
    torch.save({k: v.detach().clone() for k, v in m.state_dict().items()}, os.path.join(out_dir, "dyhead_weights.pt"))
    md = DyConvRef().double()
    md.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    io = {}
    for tag, sizes in (("even", [(16, 12), (8, 6), (4, 3)]), ("odd", [(9, 7), (5, 4), (3, 2)])):
        xs = [torch.randn(2, C, h, w, generator=g) for h, w in sizes]
        for l, x in enumerate(xs):
            io[f"{tag}.x{l}"] = x
        for mode in ("crop", "reference"):
            xd = [x.double().requires_grad_(mode == "crop") for x in xs]
            ys = md(xd, mode)
            for l, y in enumerate(ys):
                io[f"{tag}.{mode}.y{l}"] = y.detach()
            if mode == "crop":
                md.zero_grad()
                rs = [torch.randn(y.shape, generator=g) for y in ys]
                sum((y * r.double()).sum() for y, r in zip(ys, rs)).backward()
                for l in range(len(xs)):
                    io[f"{tag}.crop.r{l}"] = rs[l]
                    io[f"{tag}.crop.g{l}"] = xd[l].grad
                io[f"{tag}.crop.g_offset_w"] = md.offset.weight.grad.clone()
                io[f"{tag}.crop.g_conv0_w"] = md.DyConv[0].conv.weight.grad.clone()
    torch.save(io, os.path.join(out_dir, "dyhead_io.pt"))


def random_boxes(n, g, lo=0.0, hi=100.0):
    xy = lo + (hi - lo) * torch.rand(n, 2, generator=g)
    wh = 1 + 40 * torch.rand(n, 2, generator=g)
    return torch.cat([xy, xy + wh], 1)


def ops(out_dir, g):
    o = {}
    logits = 3 * torch.randn(64, 5, generator=g)
    targets = (torch.rand(64, 5, generator=g) < 0.2).float()
    o["focal.logits"], o["focal.targets"] = logits, targets
    o["focal.loss"] = sigmoid_focal_loss(logits.double(), targets.double(), alpha=0.25, gamma=2.0, reduction="none")
    pred, target = random_boxes(64, g), random_boxes(64, g)
    o["giou.pred"], o["giou.target"] = pred, target
    o["giou.loss"] = generalized_box_iou_loss(pred.double(), target.double(), reduction="none")
    a, b = random_boxes(20, g), random_boxes(30, g)
    o["iou.a"], o["iou.b"], o["iou.iou"] = a, b, box_iou(a.double(), b.double())
    boxes = random_boxes(300, g, 0, 200)
    scores = torch.randperm(300, generator=g).float() / 300  # distinct scores: no tie order to guess
    labels = torch.randint(0, 5, (300,), generator=g)
    o["nms.boxes"], o["nms.scores"], o["nms.labels"] = boxes, scores, labels
    o["nms.keep"] = nms(boxes, scores, 0.5)
    o["nms.batched_keep"] = batched_nms(boxes, scores, labels, 0.6)
    torch.save(o, os.path.join(out_dir, "ops.pt"))


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(11)
    dyhead(out_dir, g)
    ops(out_dir, g)


if __name__ == "__main__":
    main()
