//! Load shapes: closed loop (each client sends its next request when the
//! previous one finishes) and open loop (requests on a fixed schedule,
//! latency measured from the intended send time, so a slow server cannot
//! hide its queueing by slowing the generator down: no coordinated omission).
//!
//! Time bounds: every request has a client-side deadline (`--timeout`);
//! clients stop issuing at the end of the measured window; the run is cut
//! off at window end + `--grace` whatever happens. The setup phase (keys
//! written, leases granted) has its own bound, [`PRELOAD_TIME_MAX`].

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Status;

use crate::args::{Args, Workload};
use crate::background::{self, Window};
use crate::ops::{self, Client, Kind, Shared};
use crate::stats::{lock, Errors, Measured, Recorder};

/// Upper bound on the time spent setting up a run (writing the key space,
/// granting leases).
pub const PRELOAD_TIME_MAX: Duration = Duration::from_secs(120);
/// Concurrent puts while preloading.
const PRELOAD_CLIENTS_MAX: usize = 64;
/// Requests a tonic channel queues before `ready()` waits.
const CHANNEL_BUFFER_MIN: usize = 1024;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

pub struct Preload {
    pub keys: u64,
    pub written: u64,
    /// The revision of the first key written (watch-get's watchers start
    /// there); 0 when none was.
    pub first_revision: i64,
    pub leases: u64,
    pub granted: u64,
    pub errors: Errors,
    pub elapsed: Duration,
}

pub struct Report {
    pub measured: Measured,
    /// Wall-clock time of the measured window's start (for `--hdr-out`).
    pub measure_started: std::time::SystemTime,
    /// From the end of warm-up to the last measured completion.
    pub elapsed: Duration,
    pub preload: Option<Preload>,
    /// The run bound expired with requests still in flight.
    pub cut_off: bool,
    /// What the background tasks saw (watch-get's and k8s's watchers).
    pub watch: Option<serde_json::Value>,
    /// `--user` given and authentication failed: the run went on without a
    /// token (its requests' failures say what the server thought of that).
    pub auth_error: Option<String>,
}

/// `conns` lazy channels over the endpoints, round-robin, each able to
/// queue `in_flight` requests.
pub fn connect(
    endpoints: &[String],
    tls: &crate::args::Tls,
    conns: usize,
    dial_timeout: Duration,
    in_flight: usize,
) -> Result<Vec<Channel>, String> {
    let tls_config = tls_config(tls)?;
    (0..conns)
        .map(|i| {
            let uri = &endpoints[i % endpoints.len()];
            let mut endpoint = Endpoint::from_shared(uri.clone())
                .map_err(|e| format!("endpoint {uri}: {e}"))?
                .connect_timeout(dial_timeout)
                .tcp_nodelay(true)
                .buffer_size(in_flight.max(CHANNEL_BUFFER_MIN));
            if uri.starts_with("https://") {
                endpoint = endpoint
                    .tls_config(tls_config.clone())
                    .map_err(|e| format!("endpoint {uri}: TLS: {e}"))?;
            }
            // Lazy: an unreachable endpoint fails each request with
            // Unavailable (counted), instead of aborting the run.
            Ok(endpoint.connect_lazy())
        })
        .collect()
}

/// The client side of TLS from etcdctl's flags: the CA (or the system's
/// roots) and, when given, the client's certificate.
fn tls_config(tls: &crate::args::Tls) -> Result<ClientTlsConfig, String> {
    let read =
        |flag: &str, path: &str| std::fs::read(path).map_err(|e| format!("--{flag} {path}: {e}"));
    let mut config = ClientTlsConfig::new();
    config = match &tls.cacert {
        Some(path) => config.ca_certificate(Certificate::from_pem(read("cacert", path)?)),
        None => config.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        config = config.identity(Identity::from_pem(read("cert", cert)?, read("key", key)?));
    }
    Ok(config)
}

/// Writes `--preload` keys and, for lease-keepalive, grants `--leases`
/// leases, with up to [`PRELOAD_CLIENTS_MAX`] requests in flight, within
/// [`PRELOAD_TIME_MAX`]. Failures are counted, not fatal: the run then
/// measures what the server does without them.
async fn setup(args: &Args, channels: &[Channel]) -> (Option<Preload>, Shared) {
    let leases = if args.workload == Workload::LeaseKeepalive {
        args.leases as u64
    } else {
        0
    };
    if args.preload == 0 && leases == 0 {
        return (None, Shared::default());
    }
    let start = Instant::now();
    let deadline = start + PRELOAD_TIME_MAX;
    let next = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let first_revision = Arc::new(AtomicI64::new(i64::MAX));
    let give_up = Arc::new(AtomicBool::new(false));
    let granted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = Arc::new(std::sync::Mutex::new(Errors::default()));
    let value = ops::value_bytes(args.val_size, args.seed);
    let keys = args.preload;
    // One failed request per setup client, and no success: the server is
    // unreachable, stalled or lacks the service, so setup gives up.
    let setup_clients = args.clients.min(PRELOAD_CLIENTS_MAX);
    let tasks: Vec<JoinHandle<()>> = (0..setup_clients)
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            let client = Client::new(args, 0, value.clone(), Arc::default());
            let (next, written, errors) = (next.clone(), written.clone(), errors.clone());
            let (first_revision, granted) = (first_revision.clone(), granted.clone());
            let give_up = give_up.clone();
            let (timeout, ttl) = (args.timeout, args.lease_ttl_s);
            let value = value.clone();
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= keys.saturating_add(leases)
                        || Instant::now() >= deadline
                        || give_up.load(Ordering::Relaxed)
                    {
                        return;
                    }
                    let r = if n < keys {
                        ops::put(&channel, client.key(n), value.clone(), timeout)
                            .await
                            .map(|resp| {
                                written.fetch_add(1, Ordering::Relaxed);
                                let rev = resp.header.map_or(i64::MAX, |h| h.revision);
                                first_revision.fetch_min(rev, Ordering::Relaxed);
                            })
                    } else {
                        ops::lease_grant(&channel, ttl, timeout)
                            .await
                            .map(|id| lock(&granted).push(id))
                    };
                    if let Err(status) = r {
                        let mut errors = lock(&errors);
                        errors.add_status(&status);
                        if errors.total() >= setup_clients as u64
                            && written.load(Ordering::Relaxed) == 0
                            && lock(&granted).is_empty()
                        {
                            give_up.store(true, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    join_until(tasks, deadline + args.timeout).await;
    let granted = std::mem::take(&mut *lock(&granted));
    let first = first_revision.load(Ordering::SeqCst);
    let preload = Preload {
        keys,
        written: written.load(Ordering::SeqCst),
        first_revision: if first == i64::MAX { 0 } else { first },
        leases,
        granted: granted.len() as u64,
        errors: lock(&errors).clone(),
        elapsed: start.elapsed(),
    };
    let shared = Shared {
        leases: granted,
        ..Default::default()
    };
    (Some(preload), shared)
}

/// Waits for the tasks until `deadline`, then aborts the rest. Returns true
/// if any had to be aborted.
pub async fn join_until(tasks: Vec<JoinHandle<()>>, deadline: Instant) -> bool {
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

pub fn record(rec: &Recorder, kind: Kind, result: Result<ops::Outcome, Status>, from: Instant) {
    let done = Instant::now();
    match result {
        Ok(outcome) => rec.on_success(kind, done - from, done.into_std(), outcome.compare_failed),
        Err(status) => rec.on_failure(kind, &status, done.into_std()),
    }
}

/// One run; `label` prefixes the progress line (a sweep's point).
pub async fn run(args: &Args, label: &str) -> Report {
    let channels = match connect(
        &args.endpoints,
        &args.tls,
        args.conns,
        args.dial_timeout,
        args.clients,
    ) {
        Ok(c) => c,
        Err(e) => unreachable!("endpoints are validated when parsed: {e}"),
    };
    let auth_error = match &args.user {
        Some((name, password)) => ops::authenticate(&channels[0], name, password, args.timeout)
            .await
            .err()
            .map(|s| format!("authenticate as {name}: {:?}: {}", s.code(), s.message())),
        None => None,
    };
    let (preload, shared) = setup(args, &channels).await;
    let shared = Arc::new(shared);

    let rec = Arc::new(Recorder::default());
    let t0 = Instant::now();
    let measure_started = std::time::SystemTime::now() + args.warmup;
    let measure_start = t0 + args.warmup;
    let end = measure_start + args.duration;
    let hard_end = end + args.grace;
    let value = ops::value_bytes(args.val_size, args.seed);
    let background = background::start(
        args,
        &channels,
        &shared,
        &rec,
        Window { measure_start, end },
        preload.as_ref().map_or(0, |p| p.first_revision),
    );

    let mut tasks = Vec::with_capacity(args.clients + 1);
    match args.rate {
        None => {
            let tickets = Arc::new(AtomicU64::new(0));
            for i in 0..args.clients {
                let channel = channels[i % channels.len()].clone();
                let mut client = Client::new(args, i, value.clone(), shared.clone());
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
                        let (kind, result) = client.op(&channel, timeout).await;
                        record(&rec, kind, result, start);
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
                let mut client = Client::new(args, i, value.clone(), shared.clone());
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
                        let (kind, result) = if now >= deadline {
                            (
                                "queued",
                                Err(Status::deadline_exceeded(format!(
                                    "waited in the client queue past its {timeout:?} deadline \
                                     (all --clients busy)"
                                ))),
                            )
                        } else {
                            client.op(&channel, deadline - now).await
                        };
                        record(&rec, kind, result, intended);
                    }
                }));
            }
        }
    }

    let intervals = {
        let (rec, every) = (rec.clone(), args.hdr_interval);
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_start).await;
            rec.start_intervals(measure_start.into_std());
            let mut tick = tokio::time::interval_at(measure_start + every, every);
            loop {
                let now = tick.tick().await;
                rec.cut_interval(now.into_std());
            }
        })
    };

    // On stderr, and only on a terminal: piped or redirected runs (scripts,
    // tests) get nothing but their summary.
    let progress = (args.progress && std::io::stderr().is_terminal()).then(|| {
        let rec = rec.clone();
        let label = label.to_string();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(t0 + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
            let mut last = 0u64;
            loop {
                let now = tick.tick().await;
                let ok = rec.succeeded.load(Ordering::Relaxed);
                let failed = rec.failed.load(Ordering::Relaxed);
                let phase = if now < measure_start { " warm-up" } else { "" };
                eprint!(
                    "\r\x1b[2K{label}[{:6.1}s]{phase} sent {} ok {ok} failed {failed}  {} req/s",
                    (now - t0).as_secs_f64(),
                    rec.sent.load(Ordering::Relaxed),
                    ok - last
                );
                let _ = std::io::stderr().flush();
                last = ok;
            }
        })
    });

    let cut_off = join_until(tasks, hard_end).await;
    let watch = background
        .finish((Instant::now() + background::STOP_GRACE).min(hard_end.max(Instant::now())))
        .await;
    intervals.abort();
    if let Some(p) = progress {
        p.abort();
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
    let now = Instant::now();
    if now > measure_start {
        rec.cut_interval(now.into_std());
    }
    let measured = rec.finish();
    let last = measured
        .last_done
        .map(Instant::from_std)
        .unwrap_or_else(Instant::now);
    Report {
        elapsed: last.saturating_duration_since(measure_start),
        measured,
        measure_started,
        preload,
        cut_off,
        watch,
        auth_error,
    }
}
