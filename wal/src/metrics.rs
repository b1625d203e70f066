//! WAL metrics with etcd's names, rendered in the Prometheus text exposition
//! format byte-for-byte as the Go client (`client_golang`/`expfmt`) prints it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Number of finite buckets: `prometheus.ExponentialBuckets(0.001, 2, 14)`.
pub const FSYNC_BUCKETS_LEN: usize = 14;

const FSYNC_NAME: &str = "etcd_disk_wal_fsync_duration_seconds";
const FSYNC_HELP: &str = "The latency distributions of fsync called by WAL.";
const WRITE_BYTES_NAME: &str = "etcd_disk_wal_write_bytes_total";
const WRITE_BYTES_HELP: &str = "Total number of bytes written in WAL.";

/// Upper bounds of the finite buckets, computed the way Go's
/// `ExponentialBuckets` does (repeated multiplication), so the `le` labels
/// print identically.
pub fn fsync_bucket_upper_bounds() -> [f64; FSYNC_BUCKETS_LEN] {
    let mut out = [0.0; FSYNC_BUCKETS_LEN];
    let mut v = 0.001f64;
    for b in out.iter_mut() {
        *b = v;
        v *= 2.0;
    }
    out
}

/// Histogram of WAL fdatasync latency (`etcd_disk_wal_fsync_duration_seconds`).
/// Lock-free; share one between all shards through an `Arc`.
#[derive(Debug, Default)]
pub struct FsyncHistogram {
    /// Non-cumulative counts; index `FSYNC_BUCKETS_LEN` is the `+Inf` overflow.
    buckets: [AtomicU64; FSYNC_BUCKETS_LEN + 1],
    sum_seconds_bits: AtomicU64,
    count: AtomicU64,
}

impl FsyncHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn observe(&self, seconds: f64) {
        let bounds = fsync_bucket_upper_bounds();
        // Same rule as Go: the first bucket whose upper bound is >= v.
        let idx = bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(FSYNC_BUCKETS_LEN);
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
        let mut cur = self.sum_seconds_bits.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(cur) + seconds).to_bits();
            match self.sum_seconds_bits.compare_exchange_weak(
                cur,
                new,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Number of observed fsyncs.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn sum_seconds(&self) -> f64 {
        f64::from_bits(self.sum_seconds_bits.load(Ordering::Relaxed))
    }

    /// Cumulative bucket counts (finite buckets, then `+Inf`).
    pub fn cumulative_counts(&self) -> [u64; FSYNC_BUCKETS_LEN + 1] {
        let mut out = [0u64; FSYNC_BUCKETS_LEN + 1];
        let mut acc = 0u64;
        for (o, b) in out.iter_mut().zip(self.buckets.iter()) {
            acc += b.load(Ordering::Relaxed);
            *o = acc;
        }
        out
    }

    /// Renders one histogram that merges `hists` (e.g. one per shard).
    pub fn render_prometheus(hists: &[&FsyncHistogram]) -> String {
        let mut cum = [0u64; FSYNC_BUCKETS_LEN + 1];
        let mut sum = 0.0f64;
        for h in hists {
            for (c, v) in cum.iter_mut().zip(h.cumulative_counts()) {
                *c += v;
            }
            sum += h.sum_seconds();
        }
        // The count is the +Inf bucket, as in the Go client, so the rendered
        // sample is self-consistent even while observations race.
        let count = cum[FSYNC_BUCKETS_LEN];
        let mut out = String::new();
        let _ = writeln!(out, "# HELP {FSYNC_NAME} {FSYNC_HELP}");
        let _ = writeln!(out, "# TYPE {FSYNC_NAME} histogram");
        for (b, c) in fsync_bucket_upper_bounds().iter().zip(cum.iter()) {
            let _ = writeln!(out, "{FSYNC_NAME}_bucket{{le=\"{}\"}} {c}", go_float(*b));
        }
        let _ = writeln!(out, "{FSYNC_NAME}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{FSYNC_NAME}_sum {}", go_float(sum));
        let _ = writeln!(out, "{FSYNC_NAME}_count {count}");
        out
    }
}

/// All metrics one WAL records. Share one `Arc<WalMetrics>` between shards
/// through [`crate::WalConfig::metrics`].
#[derive(Debug, Default)]
pub struct WalMetrics {
    pub fsync: FsyncHistogram,
    /// `etcd_disk_wal_write_bytes_total`: bytes of encoded records written
    /// (headers + payloads, not the alignment padding).
    pub write_bytes_total: AtomicU64,
}

impl WalMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn write_bytes_total(&self) -> u64 {
        self.write_bytes_total.load(Ordering::Relaxed)
    }

    /// Renders both metrics, merged over `all`.
    pub fn render_prometheus(all: &[&WalMetrics]) -> String {
        let hists: Vec<&FsyncHistogram> = all.iter().map(|m| &m.fsync).collect();
        let mut out = FsyncHistogram::render_prometheus(&hists);
        let bytes: u64 = all.iter().map(|m| m.write_bytes_total()).sum();
        // etcd declares this one as a gauge despite the `_total` suffix.
        let _ = writeln!(out, "# HELP {WRITE_BYTES_NAME} {WRITE_BYTES_HELP}");
        let _ = writeln!(out, "# TYPE {WRITE_BYTES_NAME} gauge");
        let _ = writeln!(out, "{WRITE_BYTES_NAME} {}", go_float(bytes as f64));
        out
    }
}

/// Formats like Go's `strconv.FormatFloat(v, 'g', -1, 64)`, which is what
/// `expfmt` uses for label values and float samples: shortest round-trip
/// digits, exponent form when the decimal exponent is < -4 or >= 6
/// (so 24576000 prints as `2.4576e+07`, as Prometheus users know it).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_matches_go() {
        assert_eq!(go_float(0.001), "0.001");
        assert_eq!(go_float(8.192), "8.192");
        assert_eq!(go_float(1.024), "1.024");
        assert_eq!(go_float(0.0), "0");
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(0.000123), "0.000123");
        assert_eq!(go_float(0.0000123), "1.23e-05");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
    }

    #[test]
    fn buckets_are_etcds() {
        let labels: Vec<String> = fsync_bucket_upper_bounds()
            .iter()
            .map(|b| go_float(*b))
            .collect();
        assert_eq!(
            labels,
            [
                "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256",
                "0.512", "1.024", "2.048", "4.096", "8.192"
            ]
        );
    }

    #[test]
    fn render_merges_histograms() {
        let a = FsyncHistogram::new();
        let b = FsyncHistogram::new();
        a.observe(0.0005);
        a.observe(0.001); // on the bound: counts in le="0.001"
        b.observe(0.003);
        b.observe(10.0);
        let text = FsyncHistogram::render_prometheus(&[&a, &b]);
        let expected = "\
# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.
# TYPE etcd_disk_wal_fsync_duration_seconds histogram
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 2
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 2
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.008\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.016\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.032\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.064\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.128\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.256\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.512\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"1.024\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"2.048\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"4.096\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"8.192\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 4
etcd_disk_wal_fsync_duration_seconds_sum 10.0045
etcd_disk_wal_fsync_duration_seconds_count 4
";
        assert_eq!(text, expected);
    }

    #[test]
    fn render_write_bytes_gauge() {
        let m = WalMetrics::new();
        m.write_bytes_total.fetch_add(4096, Ordering::Relaxed);
        let text = WalMetrics::render_prometheus(&[&m]);
        assert!(text.ends_with(
            "# HELP etcd_disk_wal_write_bytes_total Total number of bytes written in WAL.\n\
             # TYPE etcd_disk_wal_write_bytes_total gauge\n\
             etcd_disk_wal_write_bytes_total 4096\n"
        ));
    }
}
