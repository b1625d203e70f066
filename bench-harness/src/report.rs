//! A run's (or a sweep's) summary: text for people, JSON for machines.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::args::{self, Args, Workload};
use crate::run::Report;
use crate::stats;

pub const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9)];

/// One point of a sweep: the value swept, the arguments it ran with, what
/// it measured.
pub struct Point {
    pub value: f64,
    pub args: Args,
    pub report: Report,
}

impl Point {
    /// `clients=64`, `rate=1000`: the point's name in tables, tags and plots.
    pub fn label(&self) -> String {
        match &self.args.sweep {
            Some(sw) => format!("{}={}", sw.param.name(), self.value),
            None => "all".into(),
        }
    }
}

pub fn throughput(report: &Report) -> f64 {
    let secs = report.elapsed.as_secs_f64();
    if secs > 0.0 {
        report.measured.succeeded as f64 / secs
    } else {
        0.0
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn latency_json(h: &Histogram<u64>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("count".into(), json!(h.len()));
    if !h.is_empty() {
        m.insert("min".into(), json!(h.min()));
        m.insert("mean".into(), json!(round1(h.mean())));
        for (name, q) in PERCENTILES {
            m.insert(name.into(), json!(h.value_at_percentile(q)));
        }
        m.insert("max".into(), json!(h.max()));
    }
    Value::Object(m)
}

pub fn errors_json(errors: &stats::Errors) -> Value {
    Value::Object(
        errors
            .0
            .iter()
            .map(|(code, e)| (code.clone(), json!({"count": e.count, "sample": e.sample})))
            .collect(),
    )
}

fn params_json(a: &Args) -> Value {
    let mut p = json!({
        "key_size": a.key_size,
        "key_prefix": a.key_prefix,
        "val_size": a.val_size,
        "key_space": a.key_space,
        "sequential_keys": a.sequential_keys,
        "preload": a.preload,
    });
    let consistency = if a.serializable {
        "serializable"
    } else {
        "linearizable"
    };
    match a.workload {
        Workload::Range => {
            p["consistency"] = json!(consistency);
            p["prefix"] = json!(a.prefix);
            if a.prefix {
                p["limit"] = json!(a.limit);
            }
        }
        Workload::TxnMixed => {
            p["consistency"] = json!(consistency);
            p["read_ratio"] = json!(a.read_ratio);
        }
        Workload::WatchGet => {
            p["consistency"] = json!(consistency);
            p["watchers"] = json!(a.watchers);
            p["streams"] = json!(a.streams);
        }
        Workload::LeaseKeepalive => {
            p["leases"] = json!(a.leases);
            p["lease_ttl_s"] = json!(a.lease_ttl_s);
            p["churn"] = json!(a.churn);
        }
        Workload::K8s => {
            p["mix"] = json!(a.mix.to_string());
            p["resources"] = json!(a.resources);
            p["limit"] = json!(a.limit);
            p["watchers"] = json!(a.watchers);
            p["streams"] = json!(a.streams);
            p["lease_ttl_s"] = json!(a.lease_ttl_s);
            p["events_per_lease"] = json!(a.events_per_lease);
            p["compact_interval_s"] = json!(a.compact_interval.as_secs_f64());
        }
        Workload::Put | Workload::TxnPut => {}
    }
    p
}

/// Whether a workload's compare failures are worth a line.
fn has_compares(w: Workload) -> bool {
    matches!(w, Workload::TxnPut | Workload::TxnMixed | Workload::K8s)
}

pub fn run_json(a: &Args, r: &Report) -> Value {
    let m = &r.measured;
    let secs = r.elapsed.as_secs_f64();
    let ops: serde_json::Map<String, Value> = m
        .kinds
        .iter()
        .map(|(kind, k)| {
            let mut o = json!({
                "sent": k.succeeded + k.failed,
                "succeeded": k.succeeded,
                "failed": k.failed,
                "throughput_rps": if secs > 0.0 { round1(k.succeeded as f64 / secs) } else { 0.0 },
                "latency_us": latency_json(&k.latency_us),
                "errors": errors_json(&k.errors),
            });
            if has_compares(a.workload) {
                o["compare_failed"] = json!(k.compare_failed);
            }
            (kind.to_string(), o)
        })
        .collect();
    let mut v = json!({
        "tool": "ferro-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "workload": a.workload.name(),
        "params": params_json(a),
        "endpoints": a.endpoints,
        "conns": a.conns,
        "clients": a.clients,
        "mode": if a.rate.is_some() { "open" } else { "closed" },
        "rate": a.rate,
        "total": a.total,
        "warmup_s": a.warmup.as_secs_f64(),
        "duration_s": a.duration.as_secs_f64(),
        "timeout_s": a.timeout.as_secs_f64(),
        "elapsed_s": secs,
        "requests": {"sent": m.sent, "succeeded": m.succeeded, "failed": m.failed},
        "throughput_rps": round1(throughput(r)),
        "latency_us": latency_json(&m.latency_us),
        "errors": errors_json(&m.errors),
        "ops": ops,
        "cut_off_by_run_bound": r.cut_off,
    });
    if has_compares(a.workload) {
        v["txn"] = json!({"compare_failed": m.compare_failed});
    }
    if let Some(w) = &r.watch {
        v["watch"] = w.clone();
    }
    if let Some(e) = &r.auth_error {
        v["auth_error"] = json!(e);
    }
    if let Some(p) = &r.preload {
        v["preload"] = json!({
            "keys": p.keys,
            "written": p.written,
            "first_revision": p.first_revision,
            "leases": p.leases,
            "granted": p.granted,
            "elapsed_s": p.elapsed.as_secs_f64(),
            "errors": errors_json(&p.errors),
        });
    }
    v
}

/// A whole number as a JSON integer (clients=8, not 8.0).
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

pub fn sweep_json(points: &[Point]) -> Value {
    let Some(first) = points.first() else {
        return json!({"tool": "ferro-bench", "points": []});
    };
    let sweep = first.args.sweep.as_ref();
    json!({
        "tool": "ferro-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "workload": first.args.workload.name(),
        "sweep": {
            "param": sweep.map_or("", |s| s.param.name()),
            "values": sweep.map(|s| s.values.iter().map(|&x| number(x)).collect::<Vec<_>>()),
        },
        "points": points
            .iter()
            .map(|p| {
                let mut v = run_json(&p.args, &p.report);
                v["point"] = number(p.value);
                v
            })
            .collect::<Vec<_>>(),
    })
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn latency_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "(no successful requests)".into();
    }
    let mut line = String::new();
    for (name, q) in PERCENTILES {
        let _ = write!(
            line,
            "{} {} ",
            name.replace('_', "."),
            ms(h.value_at_percentile(q))
        );
    }
    let _ = write!(line, " max {}  mean {:.3}", ms(h.max()), h.mean() / 1000.0);
    line
}

pub fn run_text(a: &Args, r: &Report) -> String {
    let m = &r.measured;
    let mut s = String::new();
    let shape = match a.rate {
        Some(rate) => format!("open loop at {rate} req/s, up to {} in flight", a.clients),
        None => format!("closed loop, {} clients", a.clients),
    };
    let _ = writeln!(
        s,
        "ferro-bench {} against {} ({} conns, {shape})",
        a.workload.name(),
        a.endpoints.join(","),
        a.conns
    );
    if let Some(p) = &r.preload {
        let failed = if p.errors.total() > 0 {
            format!(", {} failed", p.errors.total())
        } else {
            String::new()
        };
        let leases = if p.leases > 0 {
            let sep = if p.keys > 0 { ", " } else { "" };
            format!("{sep}{}/{} leases", p.granted, p.leases)
        } else {
            String::new()
        };
        let keys = if p.keys > 0 || p.leases == 0 {
            format!("{}/{} keys", p.written, p.keys)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  setup        {}{leases} in {:.2} s{failed}",
            keys,
            p.elapsed.as_secs_f64(),
        );
    }
    let _ = writeln!(
        s,
        "  elapsed      {:.2} s measured (after {:.2} s warm-up){}",
        r.elapsed.as_secs_f64(),
        a.warmup.as_secs_f64(),
        if r.cut_off {
            "; cut off by the run bound"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "  requests     sent {}  succeeded {}  failed {}",
        m.sent, m.succeeded, m.failed
    );
    if has_compares(a.workload) {
        let _ = writeln!(s, "  txn          compare failed {}", m.compare_failed);
    }
    let _ = writeln!(s, "  throughput   {:.1} req/s", throughput(r));
    let _ = writeln!(s, "  latency ms   {}", latency_line(&m.latency_us));
    if m.kinds.len() > 1 {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        for (kind, k) in &m.kinds {
            let _ = writeln!(
                s,
                "  {kind:<12} ok {} failed {}  {:.1}/s  {}",
                k.succeeded,
                k.failed,
                k.succeeded as f64 / secs,
                latency_line(&k.latency_us)
            );
        }
    }
    if let Some(w) = &r.watch {
        let _ = writeln!(
            s,
            "  watch        {} watchers on {} streams: created {}, events {}, canceled {}, \
             compacted {}",
            w["watchers"], w["streams"], w["created"], w["events"], w["canceled"], w["compacted"]
        );
        if let Some(errs) = w["stream_errors"].as_object() {
            for (code, e) in errs {
                let _ = writeln!(s, "  watch err    {code}: {} ({})", e["count"], e["sample"]);
            }
        }
    }
    if let Some(e) = &r.auth_error {
        let _ = writeln!(s, "  auth error   {e}");
    }
    for (code, e) in &m.errors.0 {
        let _ = writeln!(s, "  error        {code}: {} ({})", e.count, e.sample);
    }
    if let Some(p) = &r.preload {
        for (code, e) in &p.errors.0 {
            let _ = writeln!(s, "  setup err    {code}: {} ({})", e.count, e.sample);
        }
    }
    s
}

/// A sweep's summary: one row per point, then each point's errors.
pub fn sweep_text(points: &[Point]) -> String {
    let Some(first) = points.first() else {
        return String::new();
    };
    let a = &first.args;
    let param = a.sweep.as_ref().map_or("point", |s| s.param.name());
    let mut s = String::new();
    let shape = match a.sweep.as_ref().map(|s| s.param) {
        Some(args::SweepParam::Rate) => {
            format!(
                "{} conns, open loop, up to {} in flight",
                a.conns, a.clients
            )
        }
        _ => format!("{} conns, closed loop", a.conns),
    };
    let _ = writeln!(
        s,
        "ferro-bench {} against {} ({shape}), sweep over {param}",
        a.workload.name(),
        a.endpoints.join(","),
    );
    let _ = writeln!(
        s,
        "{param:>10} {:>9} {:>9} {:>7} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "sent", "ok", "failed", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for p in points {
        let m = &p.report.measured;
        let h = &m.latency_us;
        let q = |x: f64| {
            if h.is_empty() {
                "-".into()
            } else {
                ms(h.value_at_percentile(x))
            }
        };
        let _ = writeln!(
            s,
            "{:>10} {:>9} {:>9} {:>7} {:>11.1} {:>9} {:>9} {:>9} {:>9} {:>9}",
            p.value,
            m.sent,
            m.succeeded,
            m.failed,
            throughput(&p.report),
            q(50.0),
            q(90.0),
            q(99.0),
            q(99.9),
            if h.is_empty() {
                "-".into()
            } else {
                ms(h.max())
            }
        );
    }
    for p in points {
        for (code, e) in &p.report.measured.errors.0 {
            let _ = writeln!(
                s,
                "  {}: error {code}: {} ({})",
                p.label(),
                e.count,
                e.sample
            );
        }
    }
    s
}
