//! `ferro-bench`: a load generator for any etcd v3 endpoint. It speaks only
//! the public etcd v3 gRPC API, so the same run drives ferrokv or etcd.
//! See `ferro-bench --help` and perf/README.md.

mod args;
mod ops;
mod run;
mod stats;
mod watch;

use std::process::ExitCode;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use args::Args;
use run::Report;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if watch::is_watch(&argv) {
        return watch_main(&argv);
    }
    let args = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ferro-bench: {e}\n(ferro-bench --help lists workloads and flags)");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = client_runtime(args.threads) else {
        return ExitCode::FAILURE;
    };
    let report = runtime.block_on(run::run(&args));
    // Requests cut off by the run bound may still hold tasks; do not wait.
    runtime.shutdown_background();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&args, &report)).expect("json")
        );
    } else {
        print!("{}", to_text(&args, &report));
    }
    if report.measured.succeeded > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9)];

fn throughput(report: &Report) -> f64 {
    let secs = report.elapsed.as_secs_f64();
    if secs > 0.0 {
        report.measured.succeeded as f64 / secs
    } else {
        0.0
    }
}

fn latency_json(h: &Histogram<u64>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("count".into(), json!(h.len()));
    if !h.is_empty() {
        m.insert("min".into(), json!(h.min()));
        m.insert("mean".into(), json!((h.mean() * 10.0).round() / 10.0));
        for (name, q) in PERCENTILES {
            m.insert(name.into(), json!(h.value_at_percentile(q)));
        }
        m.insert("max".into(), json!(h.max()));
    }
    Value::Object(m)
}

fn errors_json(errors: &stats::Errors) -> Value {
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
    });
    if a.workload == args::Workload::Range {
        p["consistency"] = json!(if a.serializable {
            "serializable"
        } else {
            "linearizable"
        });
        p["prefix"] = json!(a.prefix);
        if a.prefix {
            p["limit"] = json!(a.limit);
        }
        p["preload"] = json!(a.preload);
    }
    p
}

fn to_json(a: &Args, r: &Report) -> Value {
    let m = &r.measured;
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
        "elapsed_s": r.elapsed.as_secs_f64(),
        "requests": {"sent": m.sent, "succeeded": m.succeeded, "failed": m.failed},
        "throughput_rps": (throughput(r) * 10.0).round() / 10.0,
        "latency_us": latency_json(&m.latency_us),
        "errors": errors_json(&m.errors),
        "cut_off_by_run_bound": r.cut_off,
    });
    if a.workload == args::Workload::TxnPut {
        v["txn"] = json!({"compare_failed": m.compare_failed});
    }
    if let Some(p) = &r.preload {
        v["preload"] = json!({
            "keys": p.keys,
            "written": p.written,
            "elapsed_s": p.elapsed.as_secs_f64(),
            "errors": errors_json(&p.errors),
        });
    }
    v
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn to_text(a: &Args, r: &Report) -> String {
    use std::fmt::Write;
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
        let _ = writeln!(
            s,
            "  preload      {}/{} keys in {:.2} s{}",
            p.written,
            p.keys,
            p.elapsed.as_secs_f64(),
            if p.errors.total() > 0 {
                format!(", {} failed", p.errors.total())
            } else {
                String::new()
            }
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
    if a.workload == args::Workload::TxnPut {
        let _ = writeln!(s, "  txn          compare failed {}", m.compare_failed);
    }
    let _ = writeln!(s, "  throughput   {:.1} req/s", throughput(r));
    let h = &m.latency_us;
    if h.is_empty() {
        let _ = writeln!(s, "  latency      (no successful requests)");
    } else {
        let mut line = String::from("  latency ms  ");
        for (name, q) in PERCENTILES {
            let _ = write!(
                line,
                " {} {}",
                name.replace('_', "."),
                ms(h.value_at_percentile(q))
            );
        }
        let _ = writeln!(
            s,
            "{line}  max {}  mean {:.3}",
            ms(h.max()),
            h.mean() / 1000.0
        );
    }
    for (code, e) in &m.errors.0 {
        let _ = writeln!(s, "  error        {code}: {} ({})", e.count, e.sample);
    }
    if let Some(p) = &r.preload {
        for (code, e) in &p.errors.0 {
            let _ = writeln!(s, "  preload err  {code}: {} ({})", e.count, e.sample);
        }
    }
    s
}

/// `watch-idle` and `watch` (bench-harness/src/watch.rs).
fn watch_main(argv: &[String]) -> ExitCode {
    let a = match watch::parse(argv) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{}", watch::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ferro-bench: {e}\n{}", watch::USAGE);
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = client_runtime(a.threads) else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(watch::run(&a));
    runtime.shutdown_background();
    match result {
        Ok(v) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                print!("{}", watch::to_text(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferro-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The tokio runtime the gRPC clients run on; None (after saying why) when
/// it cannot start.
fn client_runtime(threads: usize) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("ferro-bench: cannot start the client runtime: {e}");
            None
        }
    }
}
