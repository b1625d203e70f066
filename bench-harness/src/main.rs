//! `ferro-bench`: a load generator for any etcd v3 endpoint. It speaks only
//! the public etcd v3 gRPC API, so the same run drives ferrokv or etcd.
//! See `ferro-bench --help` and perf/README.md.

mod args;
mod background;
mod hdr;
mod mix;
mod ops;
mod plot;
mod report;
mod run;
mod stats;
mod watch;

use std::process::ExitCode;

use args::{Args, SweepParam};
use report::Point;

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
    let points = runtime.block_on(run_points(&args));
    // Requests cut off by the run bound may still hold tasks; do not wait.
    runtime.shutdown_background();

    let text = if args.json {
        let v = if args.sweep.is_some() {
            report::sweep_json(&points)
        } else {
            report::run_json(&points[0].args, &points[0].report)
        };
        match serde_json::to_string_pretty(&v) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("ferro-bench: cannot encode the JSON report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else if args.sweep.is_some() {
        report::sweep_text(&points)
    } else {
        report::run_text(&points[0].args, &points[0].report)
    };
    print!("{text}");
    let mut ok = true;
    if let Some(path) = &args.hdr_out {
        if let Err(e) = hdr::write(path, &points) {
            eprintln!("ferro-bench: {e}");
            ok = false;
        }
    }
    if let Some(path) = &args.plot {
        if let Err(e) = plot::write(path, &points) {
            eprintln!("ferro-bench: {e}");
            ok = false;
        }
    }
    if ok && points.iter().any(|p| p.report.measured.succeeded > 0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The run, or one run per sweep point. The key space is written once,
/// before the first point, except for watch-get, whose watchers replay the
/// preload and so need it at every point.
async fn run_points(args: &Args) -> Vec<Point> {
    let Some(sweep) = &args.sweep else {
        let report = run::run(args, "").await;
        return vec![Point {
            value: args.clients as f64,
            args: args.clone(),
            report,
        }];
    };
    let mut points = Vec::with_capacity(sweep.values.len());
    for (i, &value) in sweep.values.iter().enumerate() {
        let mut a = args.clone();
        match sweep.param {
            SweepParam::Clients => a.clients = value as usize,
            SweepParam::Rate => a.rate = Some(value),
        }
        if i > 0 && a.workload != args::Workload::WatchGet {
            a.preload = 0;
        }
        let label = format!("{}={value} ", sweep.param.name());
        let report = run::run(&a, &label).await;
        points.push(Point {
            value,
            args: a,
            report,
        });
    }
    points
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
                match serde_json::to_string_pretty(&v) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("ferro-bench: cannot encode the JSON report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
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
