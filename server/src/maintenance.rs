//! Background duties of core 0: the backend quota (NOSPACE alarm) and
//! auto-compaction, with etcd's flags and behaviour.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrokv_shards::Engine;

/// etcd's default quota when `--quota-backend-bytes` is 0: 2 GiB.
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;
/// How often the store size is compared with the quota.
const QUOTA_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// etcd's revision-mode compactor looks every five minutes.
const REVISION_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

/// Alarms raised on this member, shared by every core.
#[derive(Default)]
pub struct Alarms {
    pub nospace: AtomicBool,
}

impl Alarms {
    pub fn nospace(&self) -> bool {
        self.nospace.load(Ordering::Relaxed)
    }
}

/// Raise NOSPACE when the store outgrows the quota. Like etcd, the alarm
/// stays until an operator disarms it (`etcdctl alarm disarm`) after
/// compacting and defragmenting.
pub async fn enforce_quota(engine: Engine, quota_bytes: u64, alarms: std::sync::Arc<Alarms>) {
    let quota = if quota_bytes == 0 {
        QUOTA_BACKEND_BYTES_DEFAULT
    } else {
        quota_bytes
    };
    loop {
        glommio::timer::sleep(QUOTA_CHECK_INTERVAL).await;
        let Ok(shards) = engine.status().await else {
            continue;
        };
        let size: u64 = shards.iter().map(|s| s.db_size_bytes).sum();
        if size > quota && !alarms.nospace.swap(true, Ordering::Relaxed) {
            log::warn!(
                "alarm raised: NOSPACE (database size {size} bytes exceeds quota {quota} bytes)"
            );
        }
    }
}

/// `--auto-compaction-retention` as etcd reads it: a bare number is hours in
/// periodic mode and a revision count in revision mode; periodic also takes
/// Go durations ("30m", "1h30m", "10s").
pub fn parse_retention(mode: &str, s: &str) -> Result<Option<Retention>, String> {
    let s = s.trim();
    if mode == "revision" {
        let n: i64 = s
            .parse()
            .map_err(|_| format!("invalid auto-compaction-retention {s:?} for mode revision"))?;
        return Ok((n > 0).then_some(Retention::Revisions(n)));
    }
    if let Ok(hours) = s.parse::<u64>() {
        let secs = hours
            .checked_mul(3600)
            .ok_or_else(|| format!("invalid auto-compaction-retention {s:?}"))?;
        return Ok((hours > 0).then(|| Retention::Period(Duration::from_secs(secs))));
    }
    let d =
        parse_go_duration(s).ok_or_else(|| format!("invalid auto-compaction-retention {s:?}"))?;
    Ok((!d.is_zero()).then_some(Retention::Period(d)))
}

/// Go's `time.ParseDuration` for non-negative values ("1h30m", "5m",
/// "0.5s"); None for anything else, an absurd value included.
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if (c == 'm' || c == 'u' || c == 'n') && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        let secs = match unit.as_str() {
            "h" => v * 3600.0,
            "m" => v * 60.0,
            "s" => v,
            "ms" => v / 1e3,
            "us" => v / 1e6,
            "ns" => v / 1e9,
            _ => return None,
        };
        total = total.checked_add(Duration::try_from_secs_f64(secs).ok()?)?;
        any = true;
    }
    (any && num.is_empty()).then_some(total)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Retention {
    Revisions(i64),
    Period(Duration),
}

/// Keep history for the retention: periodic mode compacts to the revision
/// that was current one retention period ago, checking every tenth of it
/// (at most hourly); revision mode keeps the last N revisions.
pub async fn auto_compact(engine: Engine, retention: Retention) {
    match retention {
        Retention::Revisions(n) => loop {
            glommio::timer::sleep(REVISION_COMPACTION_INTERVAL).await;
            let target = engine.sequencer().visible() - n;
            compact(&engine, target).await;
        },
        Retention::Period(period) => {
            let tick = (period / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
            // Samples of (time, revision), bounded by the retention window.
            let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
            loop {
                let now = Instant::now();
                samples.push_back((now, engine.sequencer().visible()));
                let mut target = None;
                while samples
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) >= period)
                {
                    target = samples.pop_front().map(|(_, r)| r);
                }
                if let Some(rev) = target {
                    compact(&engine, rev).await;
                }
                glommio::timer::sleep(tick).await;
            }
        }
    }
}

async fn compact(engine: &Engine, rev: i64) {
    // As etcd's compactor: only the leader compacts (for the cluster).
    if !engine.leadership().serving() {
        return;
    }
    if rev <= engine.sequencer().compact_revision() || rev <= 1 {
        return;
    }
    match engine.compact(rev).await {
        Ok(_) => log::info!("auto-compaction: compacted at revision {rev}"),
        Err(e) => log::warn!("auto-compaction at revision {rev} failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_as_etcd_reads_it() {
        assert_eq!(parse_retention("periodic", "0").unwrap(), None);
        assert_eq!(
            parse_retention("periodic", "1").unwrap(),
            Some(Retention::Period(Duration::from_secs(3600)))
        );
        assert_eq!(
            parse_retention("periodic", "1h30m").unwrap(),
            Some(Retention::Period(Duration::from_secs(5400)))
        );
        assert_eq!(
            parse_retention("periodic", "10s").unwrap(),
            Some(Retention::Period(Duration::from_secs(10)))
        );
        assert_eq!(
            parse_retention("revision", "1000").unwrap(),
            Some(Retention::Revisions(1000))
        );
        assert!(parse_retention("revision", "1h").is_err());
        assert!(parse_retention("periodic", "soon").is_err());
    }

    #[test]
    fn retention_too_large_for_a_duration_is_refused() {
        // Hours past u64::MAX / 3600 overflowed the product (a panic in a
        // debug build); a Go duration past Duration::MAX is refused too.
        let hours = (u64::MAX / 3600 + 1).to_string();
        assert_eq!(
            parse_retention("periodic", &hours),
            Err(format!("invalid auto-compaction-retention {hours:?}"))
        );
        assert!(parse_retention("periodic", "99999999999999999999h").is_err());
    }
}
