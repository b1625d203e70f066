//! `--hdr-out`: the measured latencies as an HdrHistogram interval log,
//! the format HdrHistogram's own tools read (HistogramLogAnalyzer,
//! `hdrhistogram` in any language): one V2 deflate-compressed histogram per
//! `--hdr-interval`, in microseconds, each tagged with its sweep point (or
//! the workload's name), timestamps from the first measured window's start.
//! A workload with several kinds of operation (k8s, txn-mixed...) also gets
//! one histogram per kind and interval, tagged `<tag>/<kind>`, so a log
//! reader can plot each kind apart.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;

use crate::report::Point;

pub fn log_bytes(points: &[Point]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let base = points
        .first()
        .map_or(UNIX_EPOCH, |p| p.report.measure_started);
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment("ferro-bench latencies of successful requests, in microseconds")
        .with_start_time(base)
        .with_base_time(base)
        // The Interval_Max column in milliseconds, for people reading it.
        .with_max_value_divisor(1000.0);
    if let Some(p) = points.first() {
        builder.add_comment(&format!(
            "workload {} against {}",
            p.args.workload.name(),
            p.args.endpoints.join(",")
        ));
    }
    let mut writer = builder
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| format!("hdr log: {e}"))?;
    for p in points {
        let label = if p.args.sweep.is_some() {
            p.label()
        } else {
            p.args.workload.name().to_string()
        };
        let tag = Tag::new(&label);
        let offset = p
            .report
            .measure_started
            .duration_since(base)
            .unwrap_or(Duration::ZERO);
        let by_kind = p.report.measured.kinds.len() > 1;
        for i in &p.report.measured.intervals {
            writer
                .write_histogram(&i.latency_us, offset + i.start, i.length, tag)
                .map_err(|e| format!("hdr log: {e}"))?;
            if !by_kind {
                continue;
            }
            for (kind, h) in &i.kinds {
                let kind_label = format!("{label}/{kind}");
                writer
                    .write_histogram(h, offset + i.start, i.length, Tag::new(&kind_label))
                    .map_err(|e| format!("hdr log: {e}"))?;
            }
        }
    }
    Ok(out)
}

pub fn write(path: &Path, points: &[Point]) -> Result<(), String> {
    let bytes = log_bytes(points)?;
    std::fs::write(path, bytes).map_err(|e| format!("--hdr-out {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use base64::Engine;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::Histogram;

    use super::*;
    use crate::run::Report;
    use crate::stats::{new_histogram, Interval, Recorder};

    fn point(sweep: &str, value: f64, started: SystemTime, samples: &[u64]) -> Point {
        let args = crate::args::parse(
            &format!("put --sweep {sweep}")
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let mut measured = Recorder::default().finish();
        for (n, chunk) in samples.chunks(2).enumerate() {
            let mut h = new_histogram();
            for &s in chunk {
                h.record(s).unwrap();
            }
            measured.intervals.push(Interval {
                start: Duration::from_secs(n as u64),
                length: Duration::from_secs(1),
                latency_us: h,
                kinds: Default::default(),
            });
        }
        Point {
            value,
            args,
            report: Report {
                measured,
                elapsed: Duration::from_secs(2),
                measure_started: started,
                preload: None,
                cut_off: false,
                watch: None,
                auth_error: None,
            },
        }
    }

    #[test]
    fn the_log_reads_back_with_hdrhistogram() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let points = [
            point("clients=1,8", 1.0, t, &[100, 200, 300]),
            point(
                "clients=1,8",
                8.0,
                t + Duration::from_secs(5),
                &[1000, 5000],
            ),
        ];
        let bytes = log_bytes(&points).unwrap();
        let mut intervals = Vec::new();
        let mut deserializer = Deserializer::new();
        for entry in IntervalLogIterator::new(&bytes) {
            if let LogEntry::Interval(i) = entry.unwrap() {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(i.encoded_histogram())
                    .unwrap();
                let h: Histogram<u64> = deserializer.deserialize(&mut &raw[..]).unwrap();
                intervals.push((
                    i.tag().map(|t| t.as_str().to_string()),
                    i.start_timestamp(),
                    h.len(),
                    h.max(),
                ));
            }
        }
        assert_eq!(intervals.len(), 3, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(intervals[0].0.as_deref(), Some("clients=1"));
        assert_eq!(intervals[0].2, 2);
        assert_eq!(intervals[1].1, Duration::from_secs(1));
        assert_eq!(intervals[2].0.as_deref(), Some("clients=8"));
        assert_eq!(intervals[2].1, Duration::from_secs(5));
        assert!(h_close(intervals[2].3, 5000));
    }

    #[test]
    fn mixed_workloads_get_a_histogram_per_kind() {
        let mut p = point("clients=1", 1.0, UNIX_EPOCH, &[100, 200]);
        p.args.sweep = None;
        p.args.workload = crate::args::Workload::K8s;
        for kind in ["get", "list"] {
            let mut h = new_histogram();
            h.record(50).unwrap();
            p.report.measured.intervals[0].kinds.insert(kind, h);
            p.report.measured.kinds.insert(kind, Default::default());
        }
        let bytes = log_bytes(&[p]).unwrap();
        let tags: Vec<String> = IntervalLogIterator::new(&bytes)
            .filter_map(|e| match e.unwrap() {
                LogEntry::Interval(i) => i.tag().map(|t| t.as_str().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(tags, ["k8s", "k8s/get", "k8s/list"]);
    }

    fn h_close(v: u64, want: u64) -> bool {
        v.abs_diff(want) <= want / 100
    }
}
