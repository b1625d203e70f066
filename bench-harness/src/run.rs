//! Load shapes: closed loop (each client sends its next request when the
//! previous one finishes) and open loop (requests on a fixed schedule,
//! latency measured from the intended send time, so a slow server cannot
//! hide its queueing by slowing the generator down: no coordinated omission).
//!
//! Time bounds: every request has a client-side deadline (`--timeout`);
//! clients stop issuing at the end of the measured window; the run is cut
//! off at window end + `--grace` whatever happens. The preload phase has its
//! own bound, [`PRELOAD_TIME_MAX`].

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::args::Args;
use crate::ops::{self, Client};
use crate::stats::{Errors, Measured, Recorder};

/// Upper bound on the time spent writing the key space before a run.
pub const PRELOAD_TIME_MAX: Duration = Duration::from_secs(120);
/// Concurrent puts while preloading.
const PRELOAD_CLIENTS_MAX: usize = 64;
/// Requests a tonic channel queues before `ready()` waits.
const CHANNEL_BUFFER_MIN: usize = 1024;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

pub struct Preload {
    pub keys: u64,
    pub written: u64,
    pub errors: Errors,
    pub elapsed: Duration,
}

pub struct Report {
    pub measured: Measured,
    /// From the end of warm-up to the last measured completion.
    pub elapsed: Duration,
    pub preload: Option<Preload>,
    /// The run bound expired with requests still in flight.
    pub cut_off: bool,
}

pub fn connect(args: &Args) -> Result<Vec<Channel>, String> {
    (0..args.conns)
        .map(|i| {
            let uri = &args.endpoints[i % args.endpoints.len()];
            let endpoint = Endpoint::from_shared(uri.clone())
                .map_err(|e| format!("endpoint {uri}: {e}"))?
                .connect_timeout(args.dial_timeout)
                .tcp_nodelay(true)
                .buffer_size(args.clients.max(CHANNEL_BUFFER_MIN));
            // Lazy: an unreachable endpoint fails each request with
            // Unavailable (counted), instead of aborting the run.
            Ok(endpoint.connect_lazy())
        })
        .collect()
}

async fn preload(args: &Args, channels: &[Channel]) -> Preload {
    let start = Instant::now();
    let deadline = start + PRELOAD_TIME_MAX;
    let next = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Errors::default()));
    let value = ops::value_bytes(args.val_size, args.seed);
    let tasks: Vec<JoinHandle<()>> = (0..args.clients.min(PRELOAD_CLIENTS_MAX))
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            let client = Client::new(args, 0, value.clone());
            let (next, written, errors) = (next.clone(), written.clone(), errors.clone());
            let (keys, timeout) = (args.preload, args.timeout);
            let value = value.clone();
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= keys || Instant::now() >= deadline {
                        return;
                    }
                    match ops::put(&channel, client.key(n), value.clone(), timeout).await {
                        Ok(_) => {
                            written.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) => errors.lock().expect("errors lock").add_status(&status),
                    }
                }
            })
        })
        .collect();
    join_until(tasks, deadline + args.timeout).await;
    let errors = errors.lock().expect("errors lock").clone();
    Preload {
        keys: args.preload,
        written: written.load(Ordering::SeqCst),
        errors,
        elapsed: start.elapsed(),
    }
}

/// Waits for the tasks until `deadline`, then aborts the rest. Returns true
/// if any had to be aborted.
async fn join_until(tasks: Vec<JoinHandle<()>>, deadline: Instant) -> bool {
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let all = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout_at(deadline, all).await.is_ok() {
        return false;
    }
    for a in &aborts {
        a.abort();
    }
    true
}

fn record(rec: &Recorder, result: Result<ops::Outcome, Status>, from: Instant) {
    let done = Instant::now();
    match result {
        Ok(outcome) => rec.on_success(done - from, done.into_std(), outcome.compare_failed),
        Err(status) => rec.on_failure(&status, done.into_std()),
    }
}

pub async fn run(args: &Args) -> Report {
    let channels = match connect(args) {
        Ok(c) => c,
        Err(e) => unreachable!("endpoints are validated when parsed: {e}"),
    };
    let preload = if args.preload > 0 {
        Some(preload(args, &channels).await)
    } else {
        None
    };

    let rec = Arc::new(Recorder::default());
    let t0 = Instant::now();
    let measure_start = t0 + args.warmup;
    let end = measure_start + args.duration;
    let hard_end = end + args.grace;
    let value = ops::value_bytes(args.val_size, args.seed);

    let mut tasks = Vec::with_capacity(args.clients + 1);
    match args.rate {
        None => {
            let tickets = Arc::new(AtomicU64::new(0));
            for i in 0..args.clients {
                let channel = channels[i % channels.len()].clone();
                let mut client = Client::new(args, i, value.clone());
                let (rec, tickets) = (rec.clone(), tickets.clone());
                let (total, timeout) = (args.total, args.timeout);
                tasks.push(tokio::spawn(async move {
                    loop {
                        let start = Instant::now();
                        if start >= end {
                            return;
                        }
                        if start < measure_start {
                            let _ = client.op(&channel, timeout).await;
                            continue;
                        }
                        if let Some(total) = total {
                            if tickets.fetch_add(1, Ordering::Relaxed) >= total {
                                return;
                            }
                        }
                        rec.on_sent();
                        let result = client.op(&channel, timeout).await;
                        record(&rec, result, start);
                    }
                }));
            }
        }
        Some(rate) => {
            // The schedule is queued whole if the server falls behind: its
            // length is bounded by rate x (warmup + duration), checked when
            // the arguments are parsed.
            let (tx, rx) = async_channel::unbounded::<(Instant, bool)>();
            let interval = Duration::from_secs_f64(1.0 / rate);
            let total = args.total;
            tasks.push(tokio::spawn(async move {
                let mut measured_scheduled = 0u64;
                for i in 0u64.. {
                    let intended = t0 + interval.mul_f64(i as f64);
                    if intended >= end || total.is_some_and(|t| measured_scheduled >= t) {
                        return;
                    }
                    let measured = intended >= measure_start;
                    measured_scheduled += u64::from(measured);
                    tokio::time::sleep_until(intended).await;
                    if tx.send((intended, measured)).await.is_err() {
                        return;
                    }
                }
            }));
            for i in 0..args.clients {
                let channel = channels[i % channels.len()].clone();
                let mut client = Client::new(args, i, value.clone());
                let (rec, rx) = (rec.clone(), rx.clone());
                let timeout = args.timeout;
                tasks.push(tokio::spawn(async move {
                    while let Ok((intended, measured)) = rx.recv().await {
                        // The deadline runs from the intended send time: a
                        // request that waited in the client queue past it
                        // has failed, as it would have for a real caller.
                        let deadline = intended + timeout;
                        let now = Instant::now();
                        if !measured {
                            if now < deadline {
                                let _ = client.op(&channel, deadline - now).await;
                            }
                            continue;
                        }
                        rec.on_sent();
                        let result = if now >= deadline {
                            Err(Status::deadline_exceeded(format!(
                                "waited in the client queue past its {timeout:?} deadline \
                                 (all --clients busy)"
                            )))
                        } else {
                            client.op(&channel, deadline - now).await
                        };
                        record(&rec, result, intended);
                    }
                }));
            }
        }
    }

    let progress = (args.progress && !args.json && std::io::stdout().is_terminal()).then(|| {
        let rec = rec.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(t0 + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
            let mut last = 0u64;
            loop {
                let now = tick.tick().await;
                let ok = rec.succeeded.load(Ordering::Relaxed);
                let failed = rec.failed.load(Ordering::Relaxed);
                let phase = if now < measure_start { "warm-up" } else { "" };
                print!(
                    "\r\x1b[2K[{:6.1}s] {phase} sent {} ok {ok} failed {failed}  {} req/s",
                    (now - t0).as_secs_f64(),
                    rec.sent.load(Ordering::Relaxed),
                    ok - last
                );
                let _ = std::io::stdout().flush();
                last = ok;
            }
        })
    });

    let cut_off = join_until(tasks, hard_end).await;
    if let Some(p) = progress {
        p.abort();
        print!("\r\x1b[2K");
        let _ = std::io::stdout().flush();
    }
    let measured = rec.finish();
    let last = measured
        .last_done
        .map(Instant::from_std)
        .unwrap_or_else(Instant::now);
    Report {
        elapsed: last.saturating_duration_since(measure_start),
        measured,
        preload,
        cut_off,
    }
}
