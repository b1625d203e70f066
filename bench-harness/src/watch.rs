//! The watch workloads, separate from the request/response loop of `run.rs`:
//!
//! - `watch-idle`: open `--watchers` watchers, each on its own key, spread
//!   over `--streams` gRPC watch streams on `--conns` connections; wait for
//!   every `created`; hold them `--hold`. With `--server-pid`, the server's
//!   VmRSS is read before connecting and at the end of the hold, and the
//!   report gives bytes per watcher = delta / watchers.
//! - `watch`: `--watchers` watchers on one prefix; one writer puts keys under
//!   it at `--rate` puts/s, `--total` puts (bounded by `--duration`); each
//!   event's latency is measured at each watcher from the put's acknowledge
//!   (an event that arrives before its ack counts as 0 and is counted as
//!   `before_ack`) and from the put's send.
//!
//! Every phase is bounded: creation by `--timeout`, the writer by
//! `--duration`, the drain by `--grace`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{
    watch_request, WatchCreateRequest, WatchRequest, WatchResponse,
};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::args::parse_duration;
use crate::stats::{lock, new_histogram};

pub const USAGE: &str = "\
ferro-bench watch-idle|watch [flags]

  watch-idle  --watchers N (default 10000) watchers, each on its own key
              (created with create_request, waiting for each `created`),
              over --streams S (default 100) watch streams on --conns C
              (default 4) connections, held --hold D (default 10s);
              --server-pid P reads /proc/P/status VmRSS before connecting
              and at the end of the hold: bytes per watcher = delta / N
  watch       --watchers W (default 1000) on --key-prefix (default
              /bench-watch/) over --streams/--conns; one writer puts
              --total N keys (default 200) at --rate R puts/s (default 20),
              --val-size B (default 64); latency from each put's ack (and
              from its send) to each watcher's receipt of the event
  common      --endpoints, --timeout D (setup deadline, default 120s),
              --duration D (writer bound, default 60s), --grace D (event
              drain after the last put, default 5s), --dial-timeout,
              --threads, --user NAME[:PASSWORD], --password,
              --cacert, --cert, --key, --json";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Idle,
    Events,
}

#[derive(Clone, Debug)]
pub struct WatchArgs {
    pub mode: Mode,
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub streams: usize,
    pub watchers: usize,
    pub hold: Duration,
    pub server_pid: Option<u32>,
    pub key_prefix: String,
    pub rate: f64,
    pub total: u64,
    pub val_size: usize,
    pub timeout: Duration,
    pub duration: Duration,
    pub grace: Duration,
    pub dial_timeout: Duration,
    pub user: Option<(String, String)>,
    pub tls: crate::args::Tls,
    pub threads: usize,
    pub json: bool,
}

/// True when the workload named in argv is one of this module's: a
/// `watch`/`watch-idle` word that is not the value of a preceding flag.
pub fn is_watch(argv: &[String]) -> bool {
    const NO_VALUE: [&str; 5] = [
        "--json",
        "--no-progress",
        "--prefix",
        "--sequential-keys",
        "-h",
    ];
    argv.iter().enumerate().any(|(i, a)| {
        (a == "watch" || a == "watch-idle")
            && (i == 0 || {
                let prev = argv[i - 1].as_str();
                !prev.starts_with("--") || prev.contains('=') || NO_VALUE.contains(&prev)
            })
    })
}

const WATCHERS_MAX: usize = 1_000_000;
const TOTAL_MAX: u64 = 1_000_000;

pub fn parse(argv: &[String]) -> Result<WatchArgs, String> {
    let mut a = WatchArgs {
        mode: Mode::Idle,
        endpoints: vec!["127.0.0.1:2379".into()],
        conns: 4,
        streams: 100,
        watchers: 0,
        hold: Duration::from_secs(10),
        server_pid: None,
        key_prefix: "/bench-watch/".into(),
        rate: 20.0,
        total: 200,
        val_size: 64,
        timeout: Duration::from_secs(120),
        duration: Duration::from_secs(60),
        grace: Duration::from_secs(5),
        dial_timeout: Duration::from_secs(2),
        user: None,
        tls: crate::args::Tls::default(),
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        json: false,
    };
    let mut mode = None;
    let (mut user, mut password) = (None, None);
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Err(String::new());
        }
        let Some(flag) = arg.strip_prefix("--") else {
            if mode.is_some() {
                return Err(format!("unexpected argument {arg:?}"));
            }
            mode = Some(match arg.as_str() {
                "watch-idle" => Mode::Idle,
                "watch" => Mode::Events,
                _ => return Err(format!("unknown workload {arg:?}")),
            });
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if name == "json" || name == "no-progress" {
            if inline.is_some() {
                return Err(format!("--{name} takes no value"));
            }
            a.json |= name == "json";
            continue;
        }
        let v = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("--{name} needs a value"))?,
        };
        let num = |v: &str| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("--{name}: cannot parse {v:?} as a number"))
        };
        match name {
            "endpoints" => a.endpoints = v.split(',').map(str::to_string).collect(),
            _ if a.tls.flag(name, &v)? => {}
            "user" => user = Some(v),
            "password" => password = Some(v),
            "conns" => a.conns = num(&v)? as usize,
            "streams" => a.streams = num(&v)? as usize,
            "watchers" => a.watchers = num(&v)? as usize,
            "hold" => a.hold = parse_duration(&v)?,
            "server-pid" => a.server_pid = Some(num(&v)? as u32),
            "key-prefix" => a.key_prefix = v,
            "rate" => {
                a.rate = v
                    .parse()
                    .map_err(|_| format!("--rate: cannot parse {v:?}"))?
            }
            "total" => a.total = num(&v)?,
            "val-size" => a.val_size = num(&v)? as usize,
            "timeout" => a.timeout = parse_duration(&v)?,
            "duration" => a.duration = parse_duration(&v)?,
            "grace" => a.grace = parse_duration(&v)?,
            "dial-timeout" => a.dial_timeout = parse_duration(&v)?,
            "threads" => a.threads = num(&v)? as usize,
            _ => return Err(format!("unknown flag --{name} for the watch workloads")),
        }
    }
    a.mode = mode.ok_or("no workload given")?;
    a.user = crate::args::parse_user(user, password)?;
    a.tls.check()?;
    a.endpoints = a
        .endpoints
        .iter()
        .map(|e| crate::args::endpoint_uri(e, &a.tls))
        .collect::<Result<_, _>>()?;
    if a.watchers == 0 {
        a.watchers = if a.mode == Mode::Idle { 10_000 } else { 1_000 };
    }
    if a.watchers > WATCHERS_MAX {
        return Err(format!("--watchers must be 1..={WATCHERS_MAX}"));
    }
    if a.conns == 0 || a.streams == 0 || a.threads == 0 {
        return Err("--conns, --streams and --threads must be at least 1".into());
    }
    if a.streams < a.conns {
        return Err("--streams must be at least --conns".into());
    }
    if a.streams > a.watchers {
        return Err("--streams must not exceed --watchers".into());
    }
    if !(a.rate.is_finite() && a.rate > 0.0) {
        return Err("--rate must be positive".into());
    }
    if a.total == 0 || a.total > TOTAL_MAX {
        return Err(format!("--total must be 1..={TOTAL_MAX}"));
    }
    if a.timeout.is_zero() || a.duration.is_zero() {
        return Err("--timeout and --duration must be positive".into());
    }
    Ok(a)
}

/// VmRSS of a process in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(n * 1024),
        _ => None,
    }
}

/// Bytes per watcher from two RSS readings (negative when the RSS shrank).
pub fn per_watcher(before: u64, held: u64, watchers: usize) -> f64 {
    (held as f64 - before as f64) / watchers.max(1) as f64
}

/// Watchers of stream `s` out of `streams` when `total` are spread evenly.
pub fn share(total: usize, streams: usize, s: usize) -> usize {
    total / streams + usize::from(s < total % streams)
}

/// The sequence number a `watch` put encodes after the prefix.
pub fn seq_of(key: &[u8], prefix: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.strip_prefix(prefix)?)
        .ok()?
        .parse()
        .ok()
}

type Inbound = tonic::Streaming<WatchResponse>;

async fn open_stream(
    channel: Channel,
    first: Vec<WatchRequest>,
) -> Result<(async_channel::Sender<WatchRequest>, Inbound), tonic::Status> {
    crate::ops::open_bidi(channel, "/etcdserverpb.Watch/Watch", first).await
}

fn create(key: Bytes, range_end: Bytes) -> WatchRequest {
    create_from(key, range_end, 0)
}

/// A watch create request from `start_revision` (0: from now).
pub fn create_from(key: Bytes, range_end: Bytes, start_revision: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key,
                range_end,
                start_revision,
                ..Default::default()
            },
        )),
    }
}

/// Waits for `n` `created` responses. Returns how many were created.
async fn create_all(inbound: &mut Inbound, n: usize) -> Result<usize, String> {
    let mut created = 0;
    while created < n {
        match inbound.message().await {
            Ok(Some(m)) if m.created => created += 1,
            Ok(Some(m)) if m.canceled => {
                return Err(format!("watch canceled: {}", m.cancel_reason));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("watch stream ended".into()),
            Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
        }
    }
    Ok(created)
}

struct Opened {
    tx: async_channel::Sender<WatchRequest>,
    inbound: Inbound,
}

/// Opens `--streams` streams and creates the watchers on them, all in
/// parallel, within `--timeout`. Returns the streams and the setup time.
async fn setup(
    a: &WatchArgs,
    channels: &[Channel],
    keys: impl Fn(usize) -> (Bytes, Bytes),
) -> Result<(Vec<Opened>, Duration), String> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut next = 0usize;
    for s in 0..a.streams {
        let n = share(a.watchers, a.streams, s);
        let reqs: Vec<_> = (next..next + n)
            .map(|i| {
                let (k, e) = keys(i);
                create(k, e)
            })
            .collect();
        next += n;
        let channel = channels[s % channels.len()].clone();
        tasks.push(tokio::spawn(async move {
            let n = reqs.len();
            let (tx, mut inbound) = open_stream(channel, reqs)
                .await
                .map_err(|s| format!("open watch stream: {:?}: {}", s.code(), s.message()))?;
            create_all(&mut inbound, n).await?;
            Ok::<_, String>(Opened { tx, inbound })
        }));
    }
    let all = async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.map_err(|e| e.to_string())??);
        }
        Ok::<_, String>(out)
    };
    match tokio::time::timeout(a.timeout, all).await {
        Ok(Ok(v)) => Ok((v, start.elapsed())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "watchers not all created within --timeout {:?}",
            a.timeout
        )),
    }
}

pub async fn run(a: &WatchArgs) -> Result<Value, String> {
    let channels = crate::run::connect(&a.endpoints, &a.tls, a.conns, a.dial_timeout, 0)?;
    if let Some((name, password)) = &a.user {
        crate::ops::authenticate(&channels[0], name, password, a.timeout)
            .await
            .map_err(|s| format!("authenticate as {name}: {:?}: {}", s.code(), s.message()))?;
    }
    match a.mode {
        Mode::Idle => run_idle(a, &channels).await,
        Mode::Events => run_events(a, &channels).await,
    }
}

async fn run_idle(a: &WatchArgs, channels: &[Channel]) -> Result<Value, String> {
    let rss_before = a.server_pid.and_then(rss_bytes);
    let prefix = a.key_prefix.clone();
    let (opened, setup_time) = setup(a, channels, |i| {
        (Bytes::from(format!("{prefix}idle/{i:08}")), Bytes::new())
    })
    .await?;
    let rss_created = a.server_pid.and_then(rss_bytes);
    tokio::time::sleep(a.hold).await;
    let rss_held = a.server_pid.and_then(rss_bytes);
    drop(opened);
    let mut v = json!({
        "workload": "watch-idle",
        "watchers": a.watchers,
        "streams": a.streams,
        "conns": a.conns,
        "setup_secs": setup_time.as_secs_f64(),
        "created_per_sec": a.watchers as f64 / setup_time.as_secs_f64().max(1e-9),
        "hold_secs": a.hold.as_secs_f64(),
    });
    if let (Some(b), Some(c), Some(h)) = (rss_before, rss_created, rss_held) {
        v["rss_before"] = json!(b);
        v["rss_created"] = json!(c);
        v["rss_held"] = json!(h);
        v["bytes_per_watcher"] = json!(per_watcher(b, h, a.watchers).round());
    }
    Ok(v)
}

fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

async fn run_events(a: &WatchArgs, channels: &[Channel]) -> Result<Value, String> {
    let prefix = Bytes::from(a.key_prefix.clone());
    let end = crate::ops::prefix_end(&prefix);
    let p2 = prefix.clone();
    let (opened, setup_time) = setup(a, channels, move |_| (p2.clone(), end.clone())).await?;

    let epoch = Instant::now();
    let total = a.total as usize;
    // Nanoseconds since `epoch` + 1 (0 = not yet) of each put's send and ack.
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicU64::new(0));
    let merged = Arc::new(Mutex::new((
        new_histogram(),
        new_histogram(),
        0u64,
        0u64,
        0u64,
    )));
    let last_event = Arc::new(AtomicU64::new(0));

    let mut readers = Vec::new();
    let mut holders = Vec::new();
    for o in opened {
        let Opened { tx, mut inbound } = o;
        holders.push(tx);
        let (sent, acked, stop, merged, last_event, prefix) = (
            sent.clone(),
            acked.clone(),
            stop.clone(),
            merged.clone(),
            last_event.clone(),
            prefix.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut from_ack = new_histogram();
            let mut from_send = new_histogram();
            let (mut events, mut before_ack, mut unknown) = (0u64, 0u64, 0u64);
            loop {
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    _ = async { while stop.load(Ordering::Relaxed) == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await } } => break,
                };
                let Ok(Some(m)) = msg else { break };
                let t = now_ns(epoch) + 1;
                for ev in &m.events {
                    events += 1;
                    let Some(seq) = ev.kv.as_ref().and_then(|kv| seq_of(&kv.key, &prefix)) else {
                        unknown += 1;
                        continue;
                    };
                    let Some(s) = sent.get(seq as usize) else {
                        unknown += 1;
                        continue;
                    };
                    let s = s.load(Ordering::Acquire);
                    if s > 0 {
                        let _ = from_send.record(t.saturating_sub(s) / 1000);
                    }
                    let k = acked[seq as usize].load(Ordering::Acquire);
                    if k == 0 || k > t {
                        before_ack += 1;
                        let _ = from_ack.record(0);
                    } else {
                        let _ = from_ack.record((t - k) / 1000);
                    }
                }
                if !m.events.is_empty() {
                    last_event.fetch_max(t, Ordering::Relaxed);
                }
            }
            let mut g = lock(&merged);
            let _ = g.0.add(&from_ack);
            let _ = g.1.add(&from_send);
            g.2 += events;
            g.3 += before_ack;
            g.4 += unknown;
        }));
    }

    // The writer: open loop at --rate, one put at a time in flight per
    // schedule slot (spawned), bounded by --duration.
    let value = crate::ops::value_bytes(a.val_size, 1);
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let write_start = tokio::time::Instant::now();
    let deadline = write_start + a.duration;
    let put_timeout = Duration::from_secs(5);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let put_lat = Arc::new(Mutex::new(new_histogram()));
    let mut puts = Vec::new();
    let mut scheduled = 0u64;
    for i in 0..a.total {
        let at = write_start + interval.mul_f64(i as f64);
        if at >= deadline {
            break;
        }
        tokio::time::sleep_until(at).await;
        scheduled += 1;
        let ch = channels[0].clone();
        let key = Bytes::from(format!("{}{i}", a.key_prefix));
        let (sent, acked, ok, failed, put_lat, value) = (
            sent.clone(),
            acked.clone(),
            ok.clone(),
            failed.clone(),
            put_lat.clone(),
            value.clone(),
        );
        puts.push(tokio::spawn(async move {
            let s = now_ns(epoch) + 1;
            sent[i as usize].store(s, Ordering::Release);
            let r = crate::ops::put(&ch, key, value, put_timeout).await;
            let k = now_ns(epoch) + 1;
            acked[i as usize].store(k, Ordering::Release);
            if r.is_ok() {
                ok.fetch_add(1, Ordering::Relaxed);
                let _ = lock(&put_lat).record((k - s) / 1000);
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for p in puts {
        let _ = tokio::time::timeout_at(deadline + put_timeout, p).await;
    }
    let write_secs = write_start.elapsed().as_secs_f64();
    let acked_n = ok.load(Ordering::SeqCst);
    let expected = acked_n * a.watchers as u64;
    // Drain: until every expected event arrived or --grace passed.
    let drain_end = tokio::time::Instant::now() + a.grace;
    loop {
        if tokio::time::Instant::now() >= drain_end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Stop early once the last event is older than 1 s and puts are done.
        let last = last_event.load(Ordering::Relaxed);
        if last > 0 && now_ns(epoch).saturating_sub(last) > 1_000_000_000 {
            break;
        }
    }
    stop.store(1, Ordering::SeqCst);
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    drop(holders);
    let g = lock(&merged);
    let first_put = sent
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .find(|&s| s > 0)
        .unwrap_or(1);
    let span = last_event.load(Ordering::Relaxed).saturating_sub(first_put) as f64 / 1e9;
    let put_lat = lock(&put_lat);
    Ok(json!({
        "workload": "watch",
        "watchers": a.watchers,
        "streams": a.streams,
        "conns": a.conns,
        "setup_secs": setup_time.as_secs_f64(),
        "rate": a.rate,
        "puts_scheduled": scheduled,
        "puts_acked": acked_n,
        "puts_failed": failed.load(Ordering::SeqCst),
        "write_secs": write_secs,
        "events_expected": expected,
        "events_received": g.2,
        "events_before_ack": g.3,
        "events_unknown": g.4,
        "events_per_sec": if span > 0.0 { g.2 as f64 / span } else { 0.0 },
        "latency_from_ack_us": hist_json(&g.0),
        "latency_from_send_us": hist_json(&g.1),
        "put_latency_us": hist_json(&put_lat),
    }))
}

fn hist_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "p50": h.value_at_percentile(50.0),
        "p99": h.value_at_percentile(99.0),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

/// The text summary: the JSON's fields, one per line.
pub fn to_text(v: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(m) = v {
        for (k, v) in m {
            out.push_str(&format!("{k}: {v}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<WatchArgs, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn parses_both_modes() {
        let a =
            args("watch-idle --watchers 100000 --streams 1000 --conns 10 --hold 5s --server-pid 7")
                .unwrap();
        assert_eq!(a.mode, Mode::Idle);
        assert_eq!((a.watchers, a.streams, a.conns), (100_000, 1000, 10));
        assert_eq!(a.hold, Duration::from_secs(5));
        assert_eq!(a.server_pid, Some(7));
        let a = args("--rate=50 watch --total 10 --json").unwrap();
        assert_eq!(a.mode, Mode::Events);
        assert_eq!((a.rate, a.total, a.watchers), (50.0, 10, 1000));
        assert!(a.json);
        assert!(args("watch --streams 2 --conns 3").is_err());
        assert!(args("watch --watchers 5 --streams 10 --conns 1").is_err());
        assert!(args("watch --rate 0").is_err());
        assert!(args("watch --total 0").is_err());
        assert!(args("watch --bogus 1").is_err());
        assert!(args("--json").is_err());
        assert!(is_watch(&["watch-idle".to_string()]));
        let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert!(!is_watch(&v("put")));
        assert!(!is_watch(&v("put --key-prefix watch")));
        assert!(is_watch(&v("--json watch --total 3")));
        assert!(is_watch(&v("--rate=5 watch")));
    }

    #[test]
    fn rss_and_per_watcher() {
        let s = "Name:\tetcd\nVmPeak:\t  10 kB\nVmRSS:\t   2048 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(s), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(per_watcher(1000, 3000, 4), 500.0);
        assert_eq!(per_watcher(3000, 1000, 4), -500.0);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn spread_and_keys() {
        let n: usize = (0..7).map(|s| share(100, 7, s)).sum();
        assert_eq!(n, 100);
        assert_eq!(share(100, 7, 0), 15);
        assert_eq!(share(100, 7, 6), 14);
        assert_eq!(seq_of(b"/p/42", b"/p/"), Some(42));
        assert_eq!(seq_of(b"/q/42", b"/p/"), None);
        assert_eq!(seq_of(b"/p/x", b"/p/"), None);
    }
}
