#!/usr/bin/env python3
"""Self time per operator from a LibTorch legacy-profiler chrome trace (bench_perf --profile).

Usage: profile_summary.py TRACE.json [--top 15]
Self time = an event's duration minus the durations of the events nested directly in it on the
same thread. Prints the top operators by self time with their share of all self time.
"""
import argparse
import json
from collections import defaultdict

ap = argparse.ArgumentParser()
ap.add_argument("trace")
ap.add_argument("--top", type=int, default=15)
a = ap.parse_args()
events = json.load(open(a.trace))
if isinstance(events, dict):
    events = events.get("traceEvents", [])
spans = defaultdict(list)
for e in events:
    if e.get("ph") == "X" and "dur" in e:
        spans[e.get("tid", 0)].append((float(e["ts"]), float(e["dur"]), e["name"]))
self_time, calls = defaultdict(float), defaultdict(int)
for tid, ev in spans.items():
    ev.sort(key=lambda t: (t[0], -t[1]))
    stack = []  # [end, name, child_time]
    def close(item):
        end, name, dur, child = item
        self_time[name] += max(0.0, dur - child)
    for ts, dur, name in ev:
        while stack and ts >= stack[-1][0] - 1e-9:
            close(stack.pop())
        if stack:
            stack[-1][3] += dur
        stack.append([ts + dur, name, dur, 0.0])
        calls[name] += 1
    while stack:
        close(stack.pop())
total = sum(self_time.values()) or 1.0
print(f"{'operator':<40} {'calls':>6} {'self ms':>9} {'share':>6}")
for name, t in sorted(self_time.items(), key=lambda kv: -kv[1])[: a.top]:
    print(f"{name:<40} {calls[name]:>6} {t / 1000:>9.1f} {100 * t / total:>5.1f}%")
print(f"{'total':<40} {'':>6} {total / 1000:>9.1f}")
