#!/usr/bin/env python3
"""Median requests/s and p99 per label in a loadgen CSV, and each label's
ratio to the baseline's median (the figures BENCHMARKS.md quotes).

    python3 scripts/ratios.py bench/headline.csv
"""
import csv
import statistics
import sys
from collections import defaultdict

rows = defaultdict(list)
with open(sys.argv[1]) as f:
    for r in csv.reader(f):
        if r and not r[0].startswith("#"):
            rows[r[0]].append((float(r[3]), float(r[5]), int(r[7]), float(r[4])))
print(f"{'target':<16} {'rounds':>6} {'median req/s':>13} {'ratio':>6} {'median p50 ms':>14} {'median p99 ms':>14} {'errors':>7}")
def base_of(label):
    """The baseline a label is compared with: `x/1` (one stream) with `baseline/1`."""
    key = "baseline/1" if label.endswith("/1") and "baseline/1" in rows else "baseline"
    return statistics.median(p[0] for p in rows[key])


for label, pts in rows.items():
    base = base_of(label)
    rps = statistics.median(p[0] for p in pts)
    p99 = statistics.median(p[1] for p in pts)
    p50 = statistics.median(p[3] for p in pts)
    errors = sum(p[2] for p in pts)
    print(f"{label:<16} {len(pts):>6} {rps:>13,.0f} {rps / base:>6.2f} {p50:>14.3f} {p99:>14.2f} {errors:>7}")
