#!/usr/bin/env python3
"""Peer for bench_deform_conv: torchvision.ops.deform_conv2d (Debian python3-torchvision) on the
shapes bench_deform_conv passes, same thread count, timed the same way (median of --iters runs
after one warm-up): forward without autograd, and forward + backward of all five inputs.

Also writes OUT/check.pt for the first shape (inputs and torchvision's forward output) so the C++
side can confirm both compute the same thing.
Usage: deform_conv_peer.py OUT_DIR --threads N --iters K --shapes '[[B, C, H, W, O], ...]'
Prints one JSON line: {"peer", "torch", "torchvision", "threads", "cases": [{"shape", "fwd_s", "fwdbwd_s"}]}.
"""
import argparse
import json
import os
import statistics
import time

import torch
import torchvision
from torchvision.ops import deform_conv2d

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--iters", type=int, default=5)
p.add_argument("--shapes", required=True)
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
torch.set_num_threads(a.threads)
torch.manual_seed(0)


def timed(fn, iters):
    fn()  # warm-up
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


cases = []
for i, (B, C, H, W, O) in enumerate(json.loads(a.shapes)):
    x = torch.randn(B, C, H, W)
    off = 2.0 * torch.randn(B, 18, H, W)
    mask = torch.rand(B, 9, H, W)
    w = torch.randn(O, C, 3, 3) * 0.02
    b = torch.randn(O)
    if i == 0:
        with torch.no_grad():
            y = deform_conv2d(x, off, w, b, padding=1, mask=mask)
        torch.save({"x": x, "offset": off, "mask": mask, "weight": w, "bias": b, "out": y},
                   os.path.join(a.out, "check.pt"))

    def fwd():
        with torch.no_grad():
            deform_conv2d(x, off, w, b, padding=1, mask=mask)

    leaves = [t.clone().requires_grad_(True) for t in (x, off, mask, w, b)]
    gout = torch.randn(B, O, H, W)

    def fwdbwd():
        for t in leaves:
            t.grad = None
        y = deform_conv2d(leaves[0], leaves[1], leaves[3], leaves[4], padding=1, mask=leaves[2])
        y.backward(gout)

    cases.append({"shape": [B, C, H, W, O], "fwd_s": timed(fwd, a.iters), "fwdbwd_s": timed(fwdbwd, a.iters)})

print(json.dumps({"peer": "torchvision.ops.deform_conv2d (Python)", "torch": torch.__version__,
                  "torchvision": torchvision.__version__, "threads": torch.get_num_threads(), "cases": cases}))
