#!/usr/bin/env python3
"""Peer for bench_perf (case swin): torchvision swin_t forward from Python (Debian python3-torch/torchvision).

Writes the random-init weights it used (so the C++ side runs the *same* weights), one input batch
and the peer's output for a correctness check, and a JSON line with the measured images/s.
Usage: swin_peer.py OUT_DIR --threads N --batch B --size S --iters K
"""
import argparse, json, os, resource, time

import torch
import torchvision

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--batch", type=int, default=16)
p.add_argument("--size", type=int, default=224)
p.add_argument("--iters", type=int, default=5)
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
torch.set_num_threads(a.threads)
torch.manual_seed(0)
m = torchvision.models.swin_t().eval()
x = torch.randn(a.batch, 3, a.size, a.size)
torch.save(m.state_dict(), os.path.join(a.out, "swin_t.pt"))
with torch.inference_mode():
    y = m(x)  # warm-up; logits [B, 1000]
    torch.save({"x": x, "y": y}, os.path.join(a.out, "swin_t_io.pt"))
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        m(x)
        times.append(time.perf_counter() - t0)
    times.sort()
    mid = len(times) // 2
    dt = times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid])  # median, as bench_perf
print(json.dumps({"peer": "torchvision swin_t (Python)", "torch": torch.__version__,
                  "torchvision": torchvision.__version__, "threads": torch.get_num_threads(),
                  "batch": a.batch, "size": a.size, "sec_per_batch": dt, "images_per_s": a.batch / dt,
                  "items_per_s": a.batch / dt,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
