#!/usr/bin/env python3
"""Draws bench/validate.csv (label,mode,concurrency,rps,p50,p99,p999,errors)
as an SVG: throughput and p99 latency against concurrency, one line per
target. Plain Python, no plotting library needed.

    python3 scripts/chart.py bench/validate.csv bench/validate.svg
"""
import csv
import math
import sys
from collections import defaultdict

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def load(path):
    series = defaultdict(list)
    with open(path) as f:
        for row in csv.reader(f):
            if not row or row[0].startswith("#"):
                continue
            label, _mode, conc, rps, _p50, p99 = row[:6]
            series[label].append((int(conc), float(rps), float(p99)))
    return {k: sorted(v) for k, v in series.items()}


def panel(x0, y0, w, h, series, pick, title, ylabel, log_y=False):
    out = []
    concs = sorted({c for pts in series.values() for c, *_ in pts})
    xs = {c: x0 + 50 + i * (w - 70) / max(1, len(concs) - 1) for i, c in enumerate(concs)}
    values = [pick(p) for pts in series.values() for p in pts]
    top = max(values) * 1.1 if values else 1
    low = min(v for v in values if v > 0) / 1.5 if log_y else 0

    def y(v):
        if log_y:
            v = max(v, low)
            return y0 + h - 30 - (math.log(v / low) / math.log(top / low)) * (h - 60)
        return y0 + h - 30 - (v / top) * (h - 60)

    out.append(f'<text x="{x0 + w / 2}" y="{y0 + 16}" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>')
    out.append(f'<line x1="{x0 + 50}" y1="{y0 + h - 30}" x2="{x0 + w - 20}" y2="{y0 + h - 30}" stroke="#333"/>')
    out.append(f'<line x1="{x0 + 50}" y1="{y0 + 30}" x2="{x0 + 50}" y2="{y0 + h - 30}" stroke="#333"/>')
    for c, x in xs.items():
        out.append(f'<text x="{x}" y="{y0 + h - 12}" text-anchor="middle" font-size="11">{c}</text>')
    ticks = [low * (top / low) ** (i / 4) for i in range(5)] if log_y else [top * i / 4 for i in range(5)]
    for t in ticks:
        label = f"{t:.2f}" if t < 10 else f"{t:,.0f}"
        out.append(f'<text x="{x0 + 45}" y="{y(t) + 4}" text-anchor="end" font-size="10">{label}</text>')
        out.append(f'<line x1="{x0 + 50}" y1="{y(t)}" x2="{x0 + w - 20}" y2="{y(t)}" stroke="#eee"/>')
    out.append(f'<text x="{x0 + 12}" y="{y0 + h / 2}" font-size="11" transform="rotate(-90 {x0 + 12} {y0 + h / 2})" text-anchor="middle">{ylabel}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 4}" text-anchor="middle" font-size="11">concurrent streams</text>')
    for i, (label, pts) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{xs[c]:.1f},{y(pick((c, r, p))):.1f}" for c, r, p in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for c, r, p in pts:
            out.append(f'<circle cx="{xs[c]:.1f}" cy="{y(pick((c, r, p))):.1f}" r="3" fill="{color}"/>')
    return out


def main(src, dst):
    series = load(src)
    w, h = 460, 320
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w + 20}" height="{h + 60}" font-family="sans-serif">',
             '<rect width="100%" height="100%" fill="white"/>']
    parts += panel(0, 0, w, h, series, lambda p: p[1], "ValidateSession throughput", "requests/s")
    parts += panel(w + 20, 0, w, h, series, lambda p: p[2], "ValidateSession p99 latency", "ms (log scale)", log_y=True)
    for i, label in enumerate(sorted(series)):
        color = COLORS[i % len(COLORS)]
        x = 60 + i * 200
        parts.append(f'<rect x="{x}" y="{h + 30}" width="14" height="4" fill="{color}"/>')
        parts.append(f'<text x="{x + 20}" y="{h + 36}" font-size="12">{label}</text>')
    parts.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
