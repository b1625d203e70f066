#!/usr/bin/env python3
"""Turns perf/run.sh's raw ferro-bench JSON into results.json, results.md
(throughput and p99 with ferrokv/etcd ratios) and plot.svg (bars, drawn by
hand: no plotting library needed); for each sweep run (ferro-bench --sweep),
a table row per point and sweep-<name>.svg (throughput against p99, etcd and
ferrokv on one picture). Usage: report.py <results dir>."""

import json
import os
import re
import sys

SERVERS = ("etcd", "ferrokv")
COLORS = {"etcd": "#4f7cac", "ferrokv": "#d9822b"}


def watch_sh_file(f):
    """perf/watch.sh writes its own runs (watch-idle-*, watch-events-*, ...)
    into the same raw/; run.sh's watch-get runs are ours."""
    return f.startswith("watch-") and not f.startswith("watch-get-")


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
        if watch_sh_file(f):
            continue
        m = re.match(r"(.+)-(etcd|ferrokv)\.json$", f)
        if m and m.group(1) not in names:
            names.append(m.group(1))
    order = ["put-c1", "put-c16", "put-c64", "range-s-c16", "range-s-c64",
             "range-l-c16", "range-l-c64", "txn-put-c16", "txn-mixed-c16",
             "watch-get-c16", "lease-keepalive-c16", "k8s-c16"]
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
            if "points" in r:
                # A sweep: its own table (load_sweeps).
                row = None
                break
            lat = r.get("latency_us", {})
            # No successful request (e.g. a service the server lacks): no
            # latency at all, not a latency of 0.
            ms = lambda q: lat[q] / 1000.0 if q in lat else None
            row[s] = {
                "throughput_rps": r["throughput_rps"],
                "p50_ms": ms("p50"),
                "p99_ms": ms("p99"),
                "p99_9_ms": ms("p99_9"),
                "max_ms": ms("max"),
                "sent": r["requests"]["sent"],
                "failed": r["requests"]["failed"],
                "errors": {k: v["count"] for k, v in r.get("errors", {}).items()},
                "wal_fsync_p99_ms": fsync_p99_ms(os.path.join(raw, f"{name}-{s}.metrics")),
                "args": {k: r.get(k) for k in ("conns", "clients", "mode", "params")},
            }
        if row is None:
            continue
        e, f = row.get("etcd"), row.get("ferrokv")
        if e and f:
            row["throughput_ratio"] = (
                f["throughput_rps"] / e["throughput_rps"] if e["throughput_rps"] else None
            )
            row["p99_ratio"] = (
                f["p99_ms"] / e["p99_ms"] if e["p99_ms"] and f["p99_ms"] is not None else None
            )
        rows.append(row)
    return rows


def load_sweeps(outdir):
    """{name: {"param": ..., "points": [{"value", "etcd": {...}, "ferrokv": {...}}]}}"""
    raw = os.path.join(outdir, "raw")
    sweeps = {}
    for f in sorted(os.listdir(raw)):
        m = re.match(r"(.+)-(etcd|ferrokv)\.json$", f)
        if not m or watch_sh_file(f):
            continue
        try:
            r = json.load(open(os.path.join(raw, f)))
        except (OSError, ValueError):
            continue
        if "points" not in r:
            continue
        name, server = m.group(1), m.group(2)
        sw = sweeps.setdefault(name, {"param": r["sweep"]["param"], "points": {}})
        for p in r["points"]:
            lat = p.get("latency_us", {})
            sw["points"].setdefault(p["point"], {"value": p["point"]})[server] = {
                "throughput_rps": p["throughput_rps"],
                "p99_ms": lat["p99"] / 1000.0 if "p99" in lat else None,
                "failed": p["requests"]["failed"],
            }
    for sw in sweeps.values():
        sw["points"] = [sw["points"][k] for k in sorted(sw["points"])]
    return sweeps


def sweep_markdown(name, sw):
    param = sw["param"]
    out = [
        "",
        f"Sweep `{name}` over {param}:",
        "",
        f"| {param} | etcd req/s | ferrokv req/s | ratio | etcd p99 ms | ferrokv p99 ms | ratio | failed (etcd/ferrokv) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in sw["points"]:
        e, f = p.get("etcd"), p.get("ferrokv")
        tr = f["throughput_rps"] / e["throughput_rps"] if e and f and e["throughput_rps"] else None
        pr = f["p99_ms"] / e["p99_ms"] if e and f and e["p99_ms"] and f["p99_ms"] is not None else None
        out.append(
            f"| {p['value']} | {fmt(e and e['throughput_rps'], 0)} | {fmt(f and f['throughput_rps'], 0)} "
            f"| {fmt(tr, 2)} | {fmt(e and e['p99_ms'], 2)} | {fmt(f and f['p99_ms'], 2)} | {fmt(pr, 2)} "
            f"| {e['failed'] if e else 'n/a'}/{f['failed'] if f else 'n/a'} |"
        )
    out.append(f"\nPicture: `sweep-{name}.svg` (throughput against p99, one dot per {param} value).")
    return out


def sweep_svg(name, sw):
    """Throughput (x) against p99 (y), one line per server, dots labelled."""
    width, height, left, right, top, bottom = 860, 480, 80, 150, 50, 60
    series = {
        s: [
            (p[s]["throughput_rps"], p[s]["p99_ms"], p["value"])
            for p in sw["points"]
            if p.get(s) and p[s]["p99_ms"] is not None
        ]
        for s in SERVERS
    }
    xs = [x for pts in series.values() for x, _, _ in pts] or [1.0]
    ys = [y for pts in series.values() for _, y, _ in pts] or [1.0]
    xmax, ymax = max(max(xs), 1e-9) * 1.05, max(max(ys), 1e-9) * 1.05
    x0, x1, y0, y1 = left, width - right, height - bottom, top

    def sx(x):
        return x0 + (x1 - x0) * x / xmax

    def sy(y):
        return y0 - (y0 - y1) * y / ymax

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{x0}" y="24" font-size="15" font-weight="bold">{name}: throughput against p99 '
        f'({sw["param"]} sweep, same machine, loopback)</text>',
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>',
        f'<text x="{(x0 + x1) / 2}" y="{y0 + 40}" text-anchor="middle" font-size="13">throughput (req/s)</text>',
        f'<text transform="translate({x0 - 55},{(y0 + y1) / 2}) rotate(-90)" text-anchor="middle" '
        f'font-size="13">p99 latency (ms)</text>',
    ]
    for frac in (0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{x0}" y1="{sy(ymax * frac):.1f}" x2="{x1}" y2="{sy(ymax * frac):.1f}" stroke="#e4e4e4"/>')
        parts.append(f'<text x="{x0 - 6}" y="{sy(ymax * frac) + 4:.1f}" text-anchor="end">{ymax * frac:.4g}</text>')
        parts.append(f'<text x="{sx(xmax * frac):.1f}" y="{y0 + 16}" text-anchor="middle">{xmax * frac:.4g}</text>')
    for i, (s, pts) in enumerate(series.items()):
        c = COLORS[s]
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in pts)
        parts.append(f'<g class="series" data-series="{s}">')
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{line}"/>')
        for x, y, v in pts:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{c}"/>')
            parts.append(f'<text x="{sx(x) + 6:.1f}" y="{sy(y) - 6:.1f}" font-size="10">{v}</text>')
        parts.append(f'<rect x="{x1 + 20}" y="{y1 + 18 * i}" width="12" height="12" fill="{c}"/>')
        parts.append(f'<text x="{x1 + 36}" y="{y1 + 18 * i + 10}">{s}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(rows, machine, sweeps=None):
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
    for name, sw in (sweeps or {}).items():
        out += sweep_markdown(name, sw)
    out += ["", "Ratios are ferrokv / etcd: throughput above 1 and p99 below 1 favour ferrokv.",
            "Each run's latency-by-percentile picture and HdrHistogram interval log, as "
            "ferro-bench wrote them: `raw/<workload>-<server>.svg` and `.hlog`."]
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
        vals = [r[s][key] or 0 for r in rows for s in SERVERS if r.get(s)]
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
                v = r[s][key] or 0
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
    sweeps = load_sweeps(outdir)
    try:
        machine = open(os.path.join(outdir, "machine.txt")).read()
    except OSError:
        machine = ""
    json.dump({"machine": machine, "workloads": rows, "sweeps": sweeps},
              open(os.path.join(outdir, "results.json"), "w"), indent=2)
    open(os.path.join(outdir, "results.md"), "w").write(markdown(rows, machine, sweeps))
    open(os.path.join(outdir, "plot.svg"), "w").write(svg(rows))
    for name, sw in sweeps.items():
        open(os.path.join(outdir, f"sweep-{name}.svg"), "w").write(sweep_svg(name, sw))
    print(markdown(rows, "", sweeps))


if __name__ == "__main__":
    main()
