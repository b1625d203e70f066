//! What runs beside the clients: watchers that count the events they
//! receive (`watch-get`, `k8s`), and `k8s`'s periodic compaction. Both stop
//! when the run's clients are done, and are aborted at the run bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{WatchRequest, WatchResponse};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::args::{Args, Workload};
use crate::ops::{self, Shared};
use crate::run::{join_until, record};
use crate::stats::{lock, Errors, Recorder};
use crate::watch::{create_from, share};

#[derive(Default)]
struct WatchCounts {
    created: AtomicU64,
    canceled: AtomicU64,
    events: AtomicU64,
    /// Responses carrying a compact_revision: a watcher whose start was
    /// compacted away before it caught up.
    compacted: AtomicU64,
    /// Streams that failed to open or ended with an error, by status.
    errors: Mutex<Errors>,
}

pub struct Background {
    tasks: Vec<JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
    watch: Option<(Arc<WatchCounts>, usize, usize)>,
}

/// When the run measures: for the compactor, whose requests count only
/// inside the measured window.
pub struct Window {
    pub measure_start: Instant,
    pub end: Instant,
}

/// Starts the workload's background tasks (none for most workloads).
/// `first_revision`: watch-get's watchers start there, so they replay the
/// preloaded history (etcd's "unsynced" watchers) while the gets run.
pub fn start(
    args: &Args,
    channels: &[Channel],
    shared: &Arc<Shared>,
    rec: &Arc<Recorder>,
    window: Window,
    first_revision: i64,
) -> Background {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let watchers = match args.workload {
        Workload::WatchGet | Workload::K8s => args.watchers,
        _ => 0,
    };
    let watch = (watchers > 0).then(|| {
        let counts = Arc::new(WatchCounts::default());
        let streams = args.streams.min(watchers);
        let mut next = 0usize;
        for s in 0..streams {
            let n = share(watchers, streams, s);
            let creates: Vec<WatchRequest> = (next..next + n)
                .map(|i| watch_create(args, i, first_revision))
                .collect();
            next += n;
            let channel = channels[s % channels.len()].clone();
            let (counts, mut stopped, timeout) = (counts.clone(), stopped.clone(), args.timeout);
            tasks.push(tokio::spawn(async move {
                let opened = tokio::time::timeout(
                    timeout,
                    ops::open_bidi::<WatchRequest, WatchResponse>(
                        channel,
                        "/etcdserverpb.Watch/Watch",
                        creates,
                    ),
                )
                .await;
                let (_tx, mut inbound) = match opened {
                    Ok(Ok(o)) => o,
                    Ok(Err(status)) => return add_error(&counts, &status),
                    Err(_) => {
                        return add_error(
                            &counts,
                            &tonic::Status::deadline_exceeded("watch stream did not open"),
                        )
                    }
                };
                loop {
                    let msg = tokio::select! {
                        m = inbound.message() => m,
                        _ = stopped.changed() => return,
                    };
                    match msg {
                        Ok(Some(m)) => {
                            counts
                                .created
                                .fetch_add(u64::from(m.created), Ordering::Relaxed);
                            counts
                                .canceled
                                .fetch_add(u64::from(m.canceled), Ordering::Relaxed);
                            counts
                                .compacted
                                .fetch_add(u64::from(m.compact_revision > 0), Ordering::Relaxed);
                            counts
                                .events
                                .fetch_add(m.events.len() as u64, Ordering::Relaxed);
                        }
                        Ok(None) => {
                            return add_error(
                                &counts,
                                &tonic::Status::unavailable("watch stream ended"),
                            )
                        }
                        Err(status) => return add_error(&counts, &status),
                    }
                }
            }));
        }
        (counts, watchers, streams)
    });
    if args.workload == Workload::K8s && !args.compact_interval.is_zero() {
        tasks.push(compactor(args, channels, shared, rec, window, stopped));
    }
    Background { tasks, stop, watch }
}

fn add_error(counts: &WatchCounts, status: &tonic::Status) {
    lock(&counts.errors).add_status(status);
}

fn watch_create(args: &Args, i: usize, first_revision: i64) -> WatchRequest {
    if args.workload == Workload::K8s {
        let prefix = args.resource_prefix(i % args.resources);
        let end = ops::prefix_end(prefix.as_bytes());
        create_from(Bytes::from(prefix), end, 0)
    } else {
        let prefix = Bytes::from(args.key_prefix.clone());
        let end = ops::prefix_end(&prefix);
        create_from(prefix, end, first_revision)
    }
}

/// The apiserver's compactor: every interval, compact to the revision it
/// saw one interval earlier, so watchers and lists have an interval's grace.
fn compactor(
    args: &Args,
    channels: &[Channel],
    shared: &Arc<Shared>,
    rec: &Arc<Recorder>,
    window: Window,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (channel, shared, rec) = (channels[0].clone(), shared.clone(), rec.clone());
    let (every, timeout) = (args.compact_interval, args.timeout);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        let mut seen_before = 0i64;
        let mut compacted = 0i64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => return,
            }
            let now = Instant::now();
            if now >= window.end {
                return;
            }
            if seen_before > compacted {
                let measured = now >= window.measure_start;
                if measured {
                    rec.on_sent();
                }
                let r = ops::compact(&channel, seen_before, timeout).await;
                if r.is_ok() {
                    compacted = seen_before;
                }
                if measured {
                    record(&rec, "compact", r.map(|_| ops::Outcome::default()), now);
                }
            }
            seen_before = shared.revision.load(Ordering::Relaxed);
        }
    })
}

impl Background {
    /// Stops the tasks (waiting until `deadline` at most) and reports what
    /// the watchers saw, if there were any.
    pub async fn finish(self, deadline: Instant) -> Option<Value> {
        let _ = self.stop.send(true);
        join_until(self.tasks, deadline).await;
        let (counts, watchers, streams) = self.watch?;
        let errors = lock(&counts.errors).clone();
        Some(json!({
            "watchers": watchers,
            "streams": streams,
            "created": counts.created.load(Ordering::SeqCst),
            "canceled": counts.canceled.load(Ordering::SeqCst),
            "compacted": counts.compacted.load(Ordering::SeqCst),
            "events": counts.events.load(Ordering::SeqCst),
            "stream_errors": crate::report::errors_json(&errors),
        }))
    }
}

/// Bound on how long stopping the background may take past the clients.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
