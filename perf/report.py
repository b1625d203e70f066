#!/usr/bin/env python3
"""Turns perf/run.sh's raw ferro-bench JSON into results.json, results.md
(throughput and p99 with ferrokv/etcd ratios) and plot.svg (bars, drawn by
hand: no plotting library needed). Usage: report.py <results dir>."""

import json
import os
import re
import sys

SERVERS = ("etcd", "ferrokv")
COLORS = {"etcd": "#4f7cac", "ferrokv": "#d9822b"}


def fsync_p99_ms(path):
    """p99 of etcd_disk_wal_fsync_duration_seconds from a /metrics dump: the
    upper bound of the first bucket holding 99% of the samples."""
    try:
        text = open(path).read()
    except OSError:
        return None
    buckets = {}
    for m in re.finditer(
        r'^etcd_disk_wal_fsync_duration_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\}\s+(\S+)',
        text,
        re.M,
    ):
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        buckets[le] = buckets.get(le, 0.0) + float(m.group(2))
    if not buckets:
        return None
    total = buckets.get(float("inf"), max(buckets.values()))
    if total <= 0:
        return None
    for le in sorted(buckets):
        if buckets[le] >= 0.99 * total:
            return le * 1000.0
    return None


def load(outdir):
    raw = os.path.join(outdir, "raw")
    names = []
    for f in sorted(os.listdir(raw)):
        # perf/watch.sh writes its own runs (watch-*) into the same raw/.
        if f.startswith("watch-"):
            continue
        m = re.match(r"(.+)-(etcd|ferrokv)\.json$", f)
        if m and m.group(1) not in names:
            names.append(m.group(1))
    order = ["put-c1", "put-c16", "put-c64", "range-s-c16", "range-s-c64",
             "range-l-c16", "range-l-c64", "txn-put-c16"]
    names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
    rows = []
    for name in names:
        row = {"workload": name}
        for s in SERVERS:
            path = os.path.join(raw, f"{name}-{s}.json")
            try:
                r = json.load(open(path))
            except (OSError, ValueError):
                row[s] = None
                continue
            lat = r.get("latency_us", {})
            row[s] = {
                "throughput_rps": r["throughput_rps"],
                "p50_ms": lat.get("p50", 0) / 1000.0,
                "p99_ms": lat.get("p99", 0) / 1000.0,
                "p99_9_ms": lat.get("p99_9", 0) / 1000.0,
                "max_ms": lat.get("max", 0) / 1000.0,
                "sent": r["requests"]["sent"],
                "failed": r["requests"]["failed"],
                "errors": {k: v["count"] for k, v in r.get("errors", {}).items()},
                "wal_fsync_p99_ms": fsync_p99_ms(os.path.join(raw, f"{name}-{s}.metrics")),
                "args": {k: r.get(k) for k in ("conns", "clients", "mode", "params")},
            }
        e, f = row.get("etcd"), row.get("ferrokv")
        if e and f:
            row["throughput_ratio"] = (
                f["throughput_rps"] / e["throughput_rps"] if e["throughput_rps"] else None
            )
            row["p99_ratio"] = f["p99_ms"] / e["p99_ms"] if e["p99_ms"] else None
        rows.append(row)
    return rows


def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(rows, machine):
    out = [
        "| workload | etcd req/s | ferrokv req/s | ratio | etcd p99 ms | ferrokv p99 ms | ratio | failed (etcd/ferrokv) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        e, f = r.get("etcd"), r.get("ferrokv")
        out.append(
            "| {w} | {et} | {ft} | {tr} | {ep} | {fp} | {pr} | {ef}/{ff} |".format(
                w=r["workload"],
                et=fmt(e and e["throughput_rps"], 0),
                ft=fmt(f and f["throughput_rps"], 0),
                tr=fmt(r.get("throughput_ratio"), 2),
                ep=fmt(e and e["p99_ms"], 2),
                fp=fmt(f and f["p99_ms"], 2),
                pr=fmt(r.get("p99_ratio"), 2),
                ef=e["failed"] if e else "n/a",
                ff=f["failed"] if f else "n/a",
            )
        )
    fs = [
        (r["workload"], r.get("etcd") or {}, r.get("ferrokv") or {})
        for r in rows
        if r["workload"].startswith("put")
    ]
    if fs:
        out += ["", "WAL fsync p99 during the put runs (from each server's "
                "`etcd_disk_wal_fsync_duration_seconds`, bucket upper bound):", "",
                "| workload | etcd ms | ferrokv ms |", "|---|---:|---:|"]
        for w, e, f in fs:
            out.append(f"| {w} | {fmt(e.get('wal_fsync_p99_ms'), 1)} | {fmt(f.get('wal_fsync_p99_ms'), 1)} |")
    out += ["", "Ratios are ferrokv / etcd: throughput above 1 and p99 below 1 favour ferrokv."]
    if machine:
        out += ["", "```", machine.strip(), "```"]
    return "\n".join(out) + "\n"


def svg(rows):
    """Two bar panels (throughput, p99), one group per workload."""
    w_group, bar, left, top, panel_h, gap = 90, 30, 70, 40, 220, 90
    width = left + w_group * len(rows) + 40
    height = top + 2 * panel_h + 2 * gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14">ferrokv vs etcd (same machine, loopback, single member)</text>',
    ]
    for i, s in enumerate(SERVERS):
        x = width - 170 + i * 80
        parts.append(f'<rect x="{x}" y="10" width="12" height="12" fill="{COLORS[s]}"/>')
        parts.append(f'<text x="{x + 16}" y="20">{s}</text>')
    panels = [("throughput (req/s)", "throughput_rps", 0), ("p99 latency (ms)", "p99_ms", 1)]
    for title, key, p in panels:
        y0 = top + p * (panel_h + gap)
        base = y0 + panel_h
        vals = [r[s][key] for r in rows for s in SERVERS if r.get(s)]
        vmax = max(vals) if vals and max(vals) > 0 else 1.0
        parts.append(f'<text x="{left}" y="{y0 - 6}" font-size="12">{title}</text>')
        parts.append(f'<line x1="{left}" y1="{base}" x2="{width - 20}" y2="{base}" stroke="black"/>')
        parts.append(f'<line x1="{left}" y1="{y0}" x2="{left}" y2="{base}" stroke="black"/>')
        for frac in (0.5, 1.0):
            y = base - frac * panel_h
            parts.append(f'<text x="{left - 4}" y="{y + 4}" text-anchor="end">{vmax * frac:.4g}</text>')
            parts.append(f'<line x1="{left}" y1="{y}" x2="{width - 20}" y2="{y}" stroke="#ddd"/>')
        for gi, r in enumerate(rows):
            gx = left + 10 + gi * w_group
            for si, s in enumerate(SERVERS):
                if not r.get(s):
                    continue
                v = r[s][key]
                h = panel_h * v / vmax
                x = gx + si * (bar + 2)
                parts.append(f'<rect x="{x}" y="{base - h:.1f}" width="{bar}" height="{h:.1f}" fill="{COLORS[s]}"/>')
                parts.append(f'<text x="{x + bar / 2}" y="{base - h - 3:.1f}" text-anchor="middle" font-size="9">{v:.4g}</text>')
            parts.append(f'<text x="{gx + bar}" y="{base + 14}" text-anchor="middle" font-size="10">{r["workload"]}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    outdir = sys.argv[1]
    rows = load(outdir)
    try:
        machine = open(os.path.join(outdir, "machine.txt")).read()
    except OSError:
        machine = ""
    json.dump({"machine": machine, "workloads": rows}, open(os.path.join(outdir, "results.json"), "w"), indent=2)
    open(os.path.join(outdir, "results.md"), "w").write(markdown(rows, machine))
    open(os.path.join(outdir, "plot.svg"), "w").write(svg(rows))
    print(markdown(rows, ""))


if __name__ == "__main__":
    main()
