#!/usr/bin/env python3
"""Turns perf/run.sh's raw ferro-bench JSON into results.json, results.md
(throughput and p99 with ferrokv/etcd ratios) and plot.svg (bars, drawn by
hand: no plotting library needed); for each sweep run (ferro-bench --sweep),
a table row per point and sweep-<name>.svg (throughput against p99, etcd and
ferrokv on one picture); for perf/cluster.sh's runs also the failover time
(raw/failover-*) and the load and CPU time of each run (raw/loadavg.txt,
raw/cpu.txt). Usage: report.py <results dir>."""

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
    order = ["put-c1", "put-c16", "put-c64", "put-c1024", "range-s-c16", "range-s-c64",
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


def hlog_intervals(path):
    """(absolute start s, length s, max ms) of each interval of a
    ferro-bench --hdr-out log; an interval with no acknowledged request has
    max 0 (ferro-bench writes empty intervals too)."""
    base, out = 0.0, []
    for line in open(path):
        m = re.match(r"#\[BaseTime: ([0-9.]+)", line)
        if m:
            base = float(m.group(1))
            continue
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split(",")
        if fields[0].startswith("Tag="):
            fields = fields[1:]
        out.append((base + float(fields[0]), float(fields[1]), float(fields[2])))
    return out


def failover_run(base):
    """One failover run (raw/failover-<server>[-<n>]-*), or None."""
    try:
        info = dict(l.split(None, 1) for l in open(base + "-kill.txt").read().splitlines() if l.strip())
    except OSError:
        return None
    kill = float(info["kill"])
    r = {"killed_leader": info.get("killed_leader"), "new_leader": info.get("new_leader"),
         "probe_timeout": info.get("probe_timeout")}
    try:
        attempts = [tuple(float(x) for x in l.split()) for l in open(base + "-probe.txt") if l.strip()]
    except OSError:
        attempts = []
    before = sorted(e - st for st, e, rc in attempts if e <= kill and rc == 0)
    after = [(st, e, rc) for st, e, rc in attempts if st >= kill]
    first = next((a for a in after if a[2] == 0), None)
    failed = [a for a in after if first is None or a[0] < first[0]]
    r["probe"] = {
        "attempts_before_kill": sum(1 for st, e, rc in attempts if e <= kill),
        "ok_before_kill": len(before),
        "attempt_ms_before_kill_median": before[len(before) // 2] * 1000 if before else None,
        "failed_attempts_after_kill": len(failed),
        # The leader served between the last failed try's start and the
        # first successful try's end.
        "last_failed_try_started_s": failed[-1][0] - kill if failed else None,
        "first_ack_after_kill_s": first[1] - kill if first else None,
        "last_attempt_after_kill_s": after[-1][1] - kill if after else None,
    }
    try:
        iv = hlog_intervals(base + "-load.hlog")
    except OSError:
        iv = []
    h = {"interval_s": iv[0][1] if iv else None, "first_ack_after_kill_s": None,
         "empty_intervals": 0}
    i = next((k for k, (st, ln, mx) in enumerate(iv) if st + ln > kill), None)
    if i is not None:
        while i < len(iv) and iv[i][2] > 0:  # acks of requests already committed
            i += 1
        j = i
        while j < len(iv) and iv[j][2] == 0:
            j += 1
        h["empty_intervals"] = j - i
        if j < len(iv):
            h["first_ack_after_kill_s"] = [iv[j][0] - kill, iv[j][0] + iv[j][1] - kill]
    r["bench_intervals"] = h
    try:
        lj = json.load(open(base + "-load.json"))
        r["load"] = {
            "throughput_rps": lj["throughput_rps"],
            "sent": lj["requests"]["sent"],
            "failed": lj["requests"]["failed"],
            "errors": {k: v["count"] for k, v in lj.get("errors", {}).items()},
            "error_samples": {k: v.get("sample") for k, v in lj.get("errors", {}).items()},
        }
    except (OSError, ValueError, KeyError):
        r["load"] = None
    return r


def failover(outdir):
    """perf/cluster.sh's failover runs: {server: {"runs": [...], "median_s"}}.
    Two measures of the time from the leader's kill -9 to the first
    acknowledged write after it: the etcdctl probe loop's first put *started*
    after the kill that succeeded (its end - kill), and from ferro-bench's
    100 ms intervals the first interval with an acknowledged put after the
    empty ones that follow the kill (its start and end - kill)."""
    raw = os.path.join(outdir, "raw")
    res = {}
    for s in SERVERS:
        names = sorted(
            {m.group(1) for f in os.listdir(raw)
             for m in [re.match(rf"(failover-{s}(?:-\d+)?)-kill\.txt$", f)] if m},
            key=lambda n: int(n.rsplit("-", 1)[1]) if n[-1].isdigit() else 0,
        )
        rs = [r for r in (failover_run(os.path.join(raw, n)) for n in names) if r]
        if not rs:
            continue
        acks = sorted(r["probe"]["first_ack_after_kill_s"] for r in rs
                      if r["probe"]["first_ack_after_kill_s"] is not None)
        res[s] = {"runs": rs, "probe_first_ack_median_s": acks[len(acks) // 2] if acks else None}
    return res


def failover_markdown(fo):
    if not fo:
        return []
    out = ["", "Failover: kill -9 of the leader under put load (64 clients, on the two "
           "followers, ferro-bench `--timeout 1s`); one value per kill, in order:", "",
           "| | " + " | ".join(SERVERS) + " |", "|---|" + "---|" * len(SERVERS)]

    def cell(s, f):
        runs = (fo.get(s) or {}).get("runs") or []
        vals = []
        for r in runs:
            try:
                vals.append(f(r))
            except (KeyError, TypeError, IndexError):
                vals.append("n/a")
        return "; ".join(vals) or "n/a"

    rows = [
        ("killed leader -> new leader", lambda r: f"{r['killed_leader']} -> {r['new_leader']}"),
        ("kill to first acknowledged put, etcdctl probe, s",
         lambda r: fmt(r["probe"]["first_ack_after_kill_s"], 2)),
        ("the last failed probe started at, s",
         lambda r: fmt(r["probe"]["last_failed_try_started_s"], 2)),
        ("probe tries failed after the kill", lambda r: str(r["probe"]["failed_attempts_after_kill"])),
        ("a probe put before the kill, median ms", lambda r: fmt(r["probe"]["attempt_ms_before_kill_median"], 0)),
        ("kill to first 100 ms interval with an ack, ferro-bench, s",
         lambda r: "{:.1f}-{:.1f}".format(*r["bench_intervals"]["first_ack_after_kill_s"])),
        ("load: req/s over the whole run", lambda r: fmt(r["load"]["throughput_rps"], 0)),
        ("load: failed requests by code",
         lambda r: ", ".join(f"{k} {v}" for k, v in r["load"]["errors"].items()) or "0"),
    ]
    for label, f in rows:
        out.append(f"| {label} | " + " | ".join(cell(s, f) for s in SERVERS) + " |")
    out.append("| median kill to first acknowledged put (probe), s | " + " | ".join(
        fmt((fo.get(s) or {}).get("probe_first_ack_median_s"), 2) for s in SERVERS) + " |")
    return out


def runs(outdir):
    """Load average at each run's start (and end, cluster.sh) and CPU
    seconds over it: machine busy, the members, ferro-bench, the rest."""
    raw = os.path.join(outdir, "raw")
    res = []
    try:
        lines = open(os.path.join(raw, "loadavg.txt")).read().splitlines()
    except OSError:
        return res
    cpu = {}
    try:
        for l in open(os.path.join(raw, "cpu.txt")):
            f = l.split()
            if len(f) >= 10:
                t0, t1, m0, m1, c0, c1, bu, bs = map(float, f[2:10])
                cpu[(f[0], f[1])] = {"wall_s": t1 - t0, "machine_cpu_s": m1 - m0,
                                     "members_cpu_s": c1 - c0, "bench_cpu_s": bu + bs,
                                     "others_cpu_s": (m1 - m0) - (c1 - c0) - (bu + bs)}
    except OSError:
        pass
    for l in lines:
        f = l.split()
        r = {"run": f[0], "server": f[1]}
        if len(f) >= 10 and f[2] == "start":
            r["load_start"], r["load_end"] = f[3:6], f[7:10]
        else:
            r["load_start"] = f[2:5]
        r.update(cpu.get((f[0], f[1]), {}))
        res.append(r)
    return res


def runs_markdown(rs):
    if not rs or "load_end" not in rs[0]:
        return []
    out = ["", "Load average (1, 5, 15 min) at each run's start and end, and CPU seconds "
           "over the run (2 cores: at most 2 per second): the whole machine, the three "
           "members, ferro-bench, everything else (other people's work):", "",
           "| run | server | load at start | load at end | wall s | machine CPU s "
           "| members | ferro-bench | others |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rs:
        out.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["run"], r["server"], " ".join(r["load_start"]), " ".join(r.get("load_end", [])),
            fmt(r.get("wall_s"), 1), fmt(r.get("machine_cpu_s"), 1), fmt(r.get("members_cpu_s"), 1),
            fmt(r.get("bench_cpu_s"), 1), fmt(r.get("others_cpu_s"), 1)))
    return out


def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def load_floor(outdir):
    """raw/floor.json (perf/floor.py --json), if the run measured it."""
    p = os.path.join(outdir, "raw", "floor.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def floor_markdown(floor):
    if not floor:
        return []
    out = ["", f"The disk's floor, same filesystem, right after the runs "
           f"(`perf/floor.py`: {floor.get('count', '?')} appends of 4 KiB each way):", "",
           "| file, write | p50 ms | p90 ms | p99 ms |", "|---|---:|---:|---:|"]
    for way, s in floor.items():
        if isinstance(s, dict):
            out.append(f"| {way} | {fmt(s['p50_ms'], 3)} | {fmt(s['p90_ms'], 3)} | {fmt(s['p99_ms'], 3)} |")
    return out


def markdown(rows, machine, sweeps=None, fo=None, rs=None, floor=None):
    out = [
        "| workload | etcd req/s | ferrokv req/s | ratio | etcd p50 ms | ferrokv p50 ms "
        "| etcd p99 ms | ferrokv p99 ms | ratio | failed (etcd/ferrokv) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        e, f = r.get("etcd"), r.get("ferrokv")
        out.append(
            "| {w} | {et} | {ft} | {tr} | {e50} | {f50} | {ep} | {fp} | {pr} | {ef}/{ff} |".format(
                w=r["workload"],
                et=fmt(e and e["throughput_rps"], 0),
                ft=fmt(f and f["throughput_rps"], 0),
                tr=fmt(r.get("throughput_ratio"), 2),
                e50=fmt(e and e["p50_ms"], 2),
                f50=fmt(f and f["p50_ms"], 2),
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
    out += floor_markdown(floor)
    for name, sw in (sweeps or {}).items():
        out += sweep_markdown(name, sw)
    out += failover_markdown(fo)
    out += runs_markdown(rs)
    out += ["", "Ratios are ferrokv / etcd: throughput above 1 and p99 below 1 favour ferrokv.",
            "Each run's latency-by-percentile picture and HdrHistogram interval log, as "
            "ferro-bench wrote them: `raw/<workload>-<server>.svg` and `.hlog`."]
    if machine:
        out += ["", "```", machine.strip(), "```"]
    return "\n".join(out) + "\n"


def topology(machine):
    """machine.txt's `topology:` line (perf/cluster.sh), else run.sh's."""
    m = re.search(r"^topology: (.+)$", machine or "", re.M)
    return m.group(1) if m else "single member"


def svg(rows, title="single member"):
    """Two bar panels (throughput, p99), one group per workload."""
    w_group, bar, left, top, panel_h, gap = 90, 30, 70, 40, 220, 90
    width = max(left + w_group * len(rows) + 40, 640)
    height = top + 2 * panel_h + 2 * gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14">ferrokv vs etcd (same machine, loopback, {title})</text>',
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
    fo = failover(outdir)
    rs = runs(outdir)
    floor = load_floor(outdir)
    result = {"machine": machine, "workloads": rows, "sweeps": sweeps}
    if floor:
        result["disk_floor"] = floor
    if fo:
        result["failover"] = fo
    if rs:
        result["runs"] = rs
    json.dump(result, open(os.path.join(outdir, "results.json"), "w"), indent=2)
    open(os.path.join(outdir, "results.md"), "w").write(markdown(rows, machine, sweeps, fo, rs, floor))
    open(os.path.join(outdir, "plot.svg"), "w").write(svg(rows, topology(machine)))
    for name, sw in sweeps.items():
        open(os.path.join(outdir, f"sweep-{name}.svg"), "w").write(sweep_svg(name, sw))
    print(markdown(rows, "", sweeps, fo, rs, floor))


if __name__ == "__main__":
    main()
