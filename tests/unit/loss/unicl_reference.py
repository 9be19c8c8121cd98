#!/usr/bin/env python3
"""Independent NumPy reference for the UniCL loss (Yang et al., CVPR 2022, Sec. 3).

Written from the paper's equations with explicit loops (no shared code with the C++ side):
for every anchor, the softmax runs over all N candidates of the other modality and the
log-probabilities of its positives P(i) = {k : y_k = y_i} are averaged.

Usage: unicl_reference.py INPUT.json
  INPUT.json: {"u": [[...]...], "v": [[...]...], "labels": [...], "tau": float}
Prints one JSON line: {"i2t": ..., "t2i": ..., "sum": ..., "mean": ...} (float64).
"""
import json
import sys

import numpy as np


def log_softmax_row(x):
    m = np.max(x)
    return x - (m + np.log(np.sum(np.exp(x - m))))


def one_direction(anchors, candidates, labels, tau):
    n = anchors.shape[0]
    total = 0.0
    for i in range(n):
        scores = np.array([tau * float(np.dot(anchors[i], candidates[k])) for k in range(n)])
        lp = log_softmax_row(scores)
        positives = [k for k in range(n) if labels[k] == labels[i]]
        total += -sum(lp[k] for k in positives) / len(positives)
    return total / n


def main():
    with open(sys.argv[1]) as f:
        data = json.load(f)
    u = np.asarray(data["u"], dtype=np.float64)
    v = np.asarray(data["v"], dtype=np.float64)
    labels = [int(y) for y in data["labels"]]
    tau = float(data["tau"])
    i2t = one_direction(u, v, labels, tau)
    t2i = one_direction(v, u, labels, tau)
    print(json.dumps({"i2t": i2t, "t2i": t2i, "sum": i2t + t2i, "mean": (i2t + t2i) / 2}))


if __name__ == "__main__":
    main()
