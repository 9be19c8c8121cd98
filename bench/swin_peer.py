#!/usr/bin/env python3
"""Peer for bench_perf (case swin): torchvision swin_t forward from Python (Debian python3-torch/torchvision).

Writes the random-init weights it used (so the C++ side runs the *same* weights), one input batch
and the peer's output for a correctness check, and a JSON line with the measured images/s.
Usage: swin_peer.py OUT_DIR --threads N --batch B --size S --iters K [--precision fp32|bf16|amp_bf16]
"""
import argparse, copy, json, os, resource, time

import torch
import torchvision

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--batch", type=int, default=16)
p.add_argument("--size", type=int, default=224)
p.add_argument("--iters", type=int, default=5)
p.add_argument("--precision", choices=["fp32", "bf16", "amp_bf16"], default="fp32")
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
torch.set_num_threads(a.threads)
torch.manual_seed(0)
m = torchvision.models.swin_t().eval()
x = torch.randn(a.batch, 3, a.size, a.size)
torch.save(m.state_dict(), os.path.join(a.out, "swin_t.pt"))
# --precision: bf16 = weights and input bfloat16; amp_bf16 = torch.autocast("cpu") (the weights and
# the reference output saved for the C++ side are float32's in every case).
with torch.inference_mode():
    y = m(x)  # warm-up; logits [B, 1000]
    torch.save({"x": x, "y": y}, os.path.join(a.out, "swin_t_io.pt"))
    run, xin = m, x
    if a.precision == "bf16":
        run, xin = copy.deepcopy(m).to(torch.bfloat16), x.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "amp_bf16"):
        run(xin)  # warm-up in this precision
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            run(xin)
            times.append(time.perf_counter() - t0)
    times.sort()
    mid = len(times) // 2
    dt = times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid])  # median, as bench_perf
print(json.dumps({"peer": "torchvision swin_t (Python)", "precision": a.precision, "torch": torch.__version__,
                  "torchvision": torchvision.__version__, "threads": torch.get_num_threads(),
                  "batch": a.batch, "size": a.size, "sec_per_batch": dt, "images_per_s": a.batch / dt,
                  "items_per_s": a.batch / dt,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
