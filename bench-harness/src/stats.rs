//! What a run measured: request counts, latencies of successful requests in
//! an hdrhistogram (microseconds), failures by gRPC status code.

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

#[derive(Clone, Debug, Default)]
pub struct ErrorCount {
    pub count: u64,
    /// The first message seen with this code.
    pub sample: String,
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

/// Shared by all client tasks of one run. Counters are atomics so the
/// progress line can read them; the histogram and error table sit behind one
/// mutex taken once per completed request.
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
            }),
        }
    }
}

impl Recorder {
    pub fn on_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn on_success(&self, latency: Duration, done: Instant, compare_failed: bool) {
        let us = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        {
            let mut inner = self.inner.lock().expect("recorder lock");
            inner.latency_us.saturating_record(us);
            inner.last_done = Some(inner.last_done.map_or(done, |t| t.max(done)));
        }
        if compare_failed {
            self.compare_failed.fetch_add(1, Ordering::Relaxed);
        }
        self.succeeded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn on_failure(&self, status: &Status, done: Instant) {
        {
            let mut inner = self.inner.lock().expect("recorder lock");
            inner.errors.add_status(status);
            inner.last_done = Some(inner.last_done.map_or(done, |t| t.max(done)));
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests sent but never finished (only when the run bound cut them
    /// off) are counted as failures with code `Cancelled`, so that
    /// sent = succeeded + failed always holds in a report.
    pub fn finish(&self) -> Measured {
        let mut inner = self.inner.lock().expect("recorder lock");
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
        }
    }
}
