//! What a run measured: request counts, latencies of successful requests in
//! an hdrhistogram (microseconds), failures by gRPC status code, the same
//! per kind of operation (a mixed workload's `get`, `list`, `update`...),
//! and optionally the latencies cut into time intervals for `--hdr-out`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::Status;

/// Largest latency the histogram resolves; larger ones are recorded as this.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant decimal digits kept by the histogram.
const LATENCY_SIGFIG: u8 = 3;
/// Longest error message kept as a sample per status code.
const ERROR_SAMPLE_CHARS_MAX: usize = 200;
/// Upper bound on the intervals kept for `--hdr-out` (one per
/// `--hdr-interval`, so a day at 1 s); later ones are merged into the last.
pub const INTERVALS_MAX: usize = 100_000;

#[derive(Clone, Debug, Default)]
pub struct ErrorCount {
    pub count: u64,
    /// The first message seen with this code.
    pub sample: String,
}

/// Locks a mutex shared by a run's tasks even if one of them panicked
/// holding it: a half-updated count matters less than losing the report.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIG).expect("valid histogram bounds")
}

/// Error counts by gRPC status code name (`Unavailable`, `DeadlineExceeded`).
#[derive(Clone, Debug, Default)]
pub struct Errors(pub BTreeMap<String, ErrorCount>);

impl Errors {
    pub fn add(&mut self, code: &str, message: &str, n: u64) {
        let e = self.0.entry(code.to_string()).or_default();
        if e.count == 0 {
            e.sample = message.chars().take(ERROR_SAMPLE_CHARS_MAX).collect();
        }
        e.count += n;
    }

    pub fn add_status(&mut self, status: &Status) {
        self.add(&format!("{:?}", status.code()), status.message(), 1);
    }

    pub fn total(&self) -> u64 {
        self.0.values().map(|e| e.count).sum()
    }
}

/// One kind of operation's share of a run. Its sent count is succeeded +
/// failed: an operation cut off by the run bound never learnt its kind, so it
/// only appears in the run's totals (as `Cancelled`).
#[derive(Clone)]
pub struct KindStats {
    pub succeeded: u64,
    pub failed: u64,
    pub compare_failed: u64,
    pub latency_us: Histogram<u64>,
    pub errors: Errors,
}

impl Default for KindStats {
    fn default() -> Self {
        KindStats {
            succeeded: 0,
            failed: 0,
            compare_failed: 0,
            latency_us: new_histogram(),
            errors: Errors::default(),
        }
    }
}

/// The successful latencies of one time slice of the measured window.
#[derive(Clone)]
pub struct Interval {
    /// From the start of the measured window.
    pub start: Duration,
    pub length: Duration,
    pub latency_us: Histogram<u64>,
    /// The same samples by kind of operation.
    pub kinds: BTreeMap<&'static str, Histogram<u64>>,
}

/// Shared by all client tasks of one run. Counters are atomics so the
/// progress line can read them; the histograms and error tables sit behind
/// one mutex taken once per completed request.
pub struct Recorder {
    pub sent: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub compare_failed: AtomicU64,
    inner: Mutex<Inner>,
}

struct Inner {
    latency_us: Histogram<u64>,
    errors: Errors,
    last_done: Option<Instant>,
    kinds: BTreeMap<&'static str, KindStats>,
    intervals_origin: Option<Instant>,
    interval_start: Option<Instant>,
    interval: Histogram<u64>,
    interval_kinds: BTreeMap<&'static str, Histogram<u64>>,
    intervals: Vec<Interval>,
}

/// A snapshot of a finished run's measurements.
pub struct Measured {
    pub sent: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub compare_failed: u64,
    pub latency_us: Histogram<u64>,
    pub errors: Errors,
    pub last_done: Option<Instant>,
    pub kinds: BTreeMap<&'static str, KindStats>,
    pub intervals: Vec<Interval>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            sent: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            compare_failed: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                latency_us: new_histogram(),
                errors: Errors::default(),
                last_done: None,
                kinds: BTreeMap::new(),
                intervals_origin: None,
                interval_start: None,
                interval: new_histogram(),
                interval_kinds: BTreeMap::new(),
                intervals: Vec::new(),
            }),
        }
    }
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    pub fn on_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn on_success(
        &self,
        kind: &'static str,
        latency: Duration,
        done: Instant,
        compare_failed: bool,
    ) {
        let us = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        {
            let mut inner = self.lock();
            inner.latency_us.saturating_record(us);
            inner.interval.saturating_record(us);
            inner
                .interval_kinds
                .entry(kind)
                .or_insert_with(new_histogram)
                .saturating_record(us);
            inner.last_done = Some(inner.last_done.map_or(done, |t| t.max(done)));
            let k = inner.kinds.entry(kind).or_default();
            k.succeeded += 1;
            k.compare_failed += u64::from(compare_failed);
            k.latency_us.saturating_record(us);
        }
        if compare_failed {
            self.compare_failed.fetch_add(1, Ordering::Relaxed);
        }
        self.succeeded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn on_failure(&self, kind: &'static str, status: &Status, done: Instant) {
        {
            let mut inner = self.lock();
            inner.errors.add_status(status);
            inner.last_done = Some(inner.last_done.map_or(done, |t| t.max(done)));
            let k = inner.kinds.entry(kind).or_default();
            k.failed += 1;
            k.errors.add_status(status);
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts the interval clock (the beginning of the measured window).
    pub fn start_intervals(&self, at: Instant) {
        let mut inner = self.lock();
        inner.intervals_origin = Some(at);
        inner.interval_start = Some(at);
    }

    /// Closes the current interval at `at` and opens the next one.
    pub fn cut_interval(&self, at: Instant) {
        let mut inner = self.lock();
        let Some(start) = inner.interval_start else {
            return;
        };
        let origin = inner.intervals_origin.unwrap_or(start);
        let length = at.saturating_duration_since(start);
        if length.is_zero() && inner.interval.is_empty() {
            return;
        }
        let hist = std::mem::replace(&mut inner.interval, new_histogram());
        let kinds = std::mem::take(&mut inner.interval_kinds);
        if inner.intervals.len() >= INTERVALS_MAX {
            if let Some(last) = inner.intervals.last_mut() {
                let _ = last.latency_us.add(&hist);
                for (kind, h) in kinds {
                    let _ = last.kinds.entry(kind).or_insert_with(new_histogram).add(&h);
                }
                last.length += length;
            }
        } else {
            inner.intervals.push(Interval {
                start: start.saturating_duration_since(origin),
                length,
                latency_us: hist,
                kinds,
            });
        }
        inner.interval_start = Some(at);
    }

    /// Requests sent but never finished (only when the run bound cut them
    /// off) are counted as failures with code `Cancelled`, so that
    /// sent = succeeded + failed always holds in a report.
    pub fn finish(&self) -> Measured {
        let mut inner = self.lock();
        let sent = self.sent.load(Ordering::SeqCst);
        let succeeded = self.succeeded.load(Ordering::SeqCst);
        let mut failed = self.failed.load(Ordering::SeqCst);
        let unfinished = sent.saturating_sub(succeeded + failed);
        if unfinished > 0 {
            inner.errors.add(
                "Cancelled",
                "still in flight when the run's time bound expired",
                unfinished,
            );
            failed += unfinished;
        }
        debug_assert_eq!(inner.latency_us.len(), succeeded);
        debug_assert_eq!(inner.errors.total(), failed);
        Measured {
            sent,
            succeeded,
            failed,
            compare_failed: self.compare_failed.load(Ordering::SeqCst),
            latency_us: inner.latency_us.clone(),
            errors: inner.errors.clone(),
            last_done: inner.last_done,
            kinds: inner.kinds.clone(),
            intervals: inner.intervals.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_add_up_to_the_totals_and_intervals_cover_the_samples() {
        let rec = Recorder::default();
        let t0 = Instant::now();
        rec.start_intervals(t0);
        for i in 0..10u64 {
            rec.on_sent();
            let kind = if i % 3 == 0 { "list" } else { "get" };
            if i == 4 {
                rec.on_failure(kind, &Status::unavailable("down"), Instant::now());
            } else {
                rec.on_success(
                    kind,
                    Duration::from_micros(100 * (i + 1)),
                    Instant::now(),
                    i == 5,
                );
            }
            if i == 6 {
                rec.cut_interval(t0 + Duration::from_secs(1));
            }
        }
        rec.on_sent(); // cut off by the run bound
        rec.cut_interval(t0 + Duration::from_secs(2));
        let m = rec.finish();
        assert_eq!((m.sent, m.succeeded, m.failed), (11, 9, 2));
        assert_eq!(m.errors.0["Cancelled"].count, 1);
        let kinds_ok: u64 = m.kinds.values().map(|k| k.succeeded).sum();
        let kinds_failed: u64 = m.kinds.values().map(|k| k.failed).sum();
        assert_eq!((kinds_ok, kinds_failed), (9, 1));
        assert_eq!(m.kinds["get"].errors.0["Unavailable"].count, 1);
        assert_eq!(m.kinds["get"].compare_failed, 1);
        assert_eq!(m.intervals.len(), 2);
        assert_eq!(m.intervals[0].start, Duration::ZERO);
        assert_eq!(m.intervals[1].start, Duration::from_secs(1));
        let in_intervals: u64 = m.intervals.iter().map(|i| i.latency_us.len()).sum();
        assert_eq!(in_intervals, 9);
        let by_kind: u64 = m
            .intervals
            .iter()
            .flat_map(|i| i.kinds.values())
            .map(|h| h.len())
            .sum();
        assert_eq!(by_kind, 9);
        assert_eq!(m.intervals[0].kinds["list"].len(), 3);
    }
}
