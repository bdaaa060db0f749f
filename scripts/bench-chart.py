#!/usr/bin/env python3
"""Draws docs/PERFORMANCE.md's chart from scripts/bench.sh's results.

  scripts/bench-chart.py RESULTS.jsonl OUT.svg

Two panels, from the same run: the Lambda binary and the Python peer under
128 MB's CPU share (1,000 x 1 KB records, 20 ms endpoint, 4 calls in flight)
against the network bound, and the CPU per record of each at latency 0.
Plain SVG, no plotting library: the figures are few.
"""

import json
import statistics
import sys
from html import escape


def load(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def quota_bars(rows):
    bars = []
    for label, name in (("after", "outbox-lambda"), ("before", "BEFORE build")):
        for r in rows:
            if r.get("mode") == "lambda" and r.get("cpu_share") == "128mb" and r.get("label") == label:
                walls = r.get("invocation_wall_ms") or []
                if walls:
                    bars.append((name, statistics.median(walls)))
    for r in rows:
        if r.get("mode") == "python-peer" and r.get("cpu_share") == "128mb":
            bars.append(("Python peer", r["wall_ms_median"]))
    return bars


def cpu_bars(rows):
    bars = []
    for event, label in (("dynamodb-1000x1k.json", "1 KB"), ("dynamodb-1000x16k.json", "16 KB")):
        rust = [r for r in rows if r.get("mode") == "handler" and r.get("event") == event
                and r.get("latency_ms") == 0.0 and r.get("concurrency") == 4]
        peer = [r for r in rows if r.get("mode") == "python-peer" and r.get("event") == event
                and r.get("latency_ms") == 0.0 and not r.get("cpu_share")]
        if rust:
            bars.append((f"Rust, {label}", rust[0]["cpu_us_per_record_median"]))
        if peer:
            bars.append((f"Python, {label}", peer[0]["cpu_us_per_record_median"]))
    return bars


def panel(x0, y0, width, title, unit, bars, line=None):
    out = [f'<text x="{x0}" y="{y0}" font-size="14" font-weight="bold">{escape(title)}</text>']
    if not bars:
        out.append(f'<text x="{x0}" y="{y0 + 30}" font-size="12">no figures in this run</text>')
        return out
    top = max([v for _, v in bars] + ([line[1]] if line else []))
    label_w, bar_h, gap = 130, 22, 10
    scale = (width - label_w - 110) / top
    y = y0 + 20
    for name, value in bars:
        w = max(1.0, value * scale)
        out.append(f'<text x="{x0}" y="{y + 15}" font-size="12">{escape(name)}</text>')
        out.append(f'<rect x="{x0 + label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#4a78b5"/>')
        out.append(f'<text x="{x0 + label_w + w + 5:.1f}" y="{y + 15}" font-size="12">{value:,.1f} {unit}</text>')
        y += bar_h + gap
    if line:
        name, value = line
        lx = x0 + label_w + value * scale
        out.append(f'<line x1="{lx:.1f}" y1="{y0 + 14}" x2="{lx:.1f}" y2="{y}" stroke="#c0392b" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{lx + 4:.1f}" y="{y + 12}" font-size="11" fill="#c0392b">{escape(name)}</text>')
    return out


def main():
    rows = load(sys.argv[1])
    width = 720
    quota = quota_bars(rows)
    cpu = cpu_bars(rows)
    parts = panel(20, 30, width, "Invocation wall time, 1,000 x 1 KB, 20 ms bus, 128 MB CPU share (lower is better)",
                  "ms", quota, ("network bound 500 ms", 500.0))
    y2 = 30 + 20 + (len(quota) or 1) * 32 + 60
    parts += panel(20, y2, width, "CPU per record, endpoint latency 0 (lower is better)", "µs", cpu)
    height = y2 + 20 + (len(cpu) or 1) * 32 + 20
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'] + parts + ["</svg>"]
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
