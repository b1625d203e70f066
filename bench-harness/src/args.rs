//! Command line: `ferro-bench <workload> [flags]`, flags as `--name value` or
//! `--name=value`, in any order around the workload name.

use std::time::Duration;

pub const USAGE: &str = "\
ferro-bench: load generator for any etcd v3 endpoint (ferrokv or etcd)

usage: ferro-bench <workload> [flags]

workloads:
  put        Put keys (--key-size, --val-size, --key-space, --sequential-keys)
  range      Range: one key, or a prefix page with --prefix [--limit N];
             --consistency l (linearizable, default) or s (serializable);
             the key space is written first (--preload, not measured)
  txn-put    Kubernetes-style update: Txn(mod_revision(key) == last seen)
             then Put, else Range (learns the current mod_revision)
  watch-idle N idle watchers held open (memory per watcher, --server-pid)
  watch      W watchers on a prefix, one writer at --rate: event latency
             (own flags: ferro-bench watch --help)

connection and load shape:
  --endpoints A[,B..]   host:port or http://host:port (default 127.0.0.1:2379)
  --conns N             gRPC (HTTP/2) connections (default 1)
  --clients N           concurrent in-flight requests, spread over the
                        connections (default 1)
  --total N             stop after N measured requests
  --duration D          measured run time (default 10s; with --total, an
                        upper bound, default 300s)
  --rate R              open loop: R requests/s on a fixed schedule, latency
                        measured from each request's intended send time;
                        --clients bounds the requests in flight
  --warmup D            run this long first, not measured (default 0s)
  --timeout D           per-request deadline (default 5s)
  --dial-timeout D      TCP connect deadline (default 2s)
  --grace D             after the measured window, how long in-flight
                        requests may still finish (default timeout + 1s);
                        the whole run ends by preload + warmup + duration
                        + grace whatever the server does
  --threads N           client runtime threads (default: cores)

workload parameters:
  --key-size B          key bytes (default 32), as --key-prefix + zero-padded
                        decimal key number
  --key-prefix P        (default /bench/)
  --val-size B          value bytes (default 256)
  --key-space N         distinct keys (default 10000)
  --sequential-keys     keys in order instead of uniformly random
  --consistency l|s     range consistency (default l)
  --prefix              range: a page from a random key to the prefix end
  --limit N             page size for --prefix (default 100)
  --preload N           range: keys written before the run (default:
                        --key-space; 0 to skip)
  --seed S              random seed (default 1)

output:
  --json                one JSON object on stdout instead of the text summary
  --no-progress         no live progress line (it is only shown when stdout
                        is a terminal anyway)

Durations: 10s, 500ms, 2m, or plain seconds. Exit status: 0 when at least one
request succeeded, 1 when none did (the summary is printed either way), 2 on
bad arguments.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Put,
    Range,
    TxnPut,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Range => "range",
            Workload::TxnPut => "txn-put",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Args {
    pub workload: Workload,
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    pub total: Option<u64>,
    pub duration: Duration,
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub timeout: Duration,
    pub dial_timeout: Duration,
    pub grace: Duration,
    pub threads: usize,
    pub key_size: usize,
    pub key_prefix: String,
    pub val_size: usize,
    pub key_space: u64,
    pub sequential_keys: bool,
    pub serializable: bool,
    pub prefix: bool,
    pub limit: i64,
    pub preload: u64,
    pub seed: u64,
    pub json: bool,
    pub progress: bool,
}

/// Upper bound on the requests one open-loop run schedules (the schedule is
/// queued in memory, 16 bytes per request).
const OPEN_LOOP_REQUESTS_MAX: f64 = 50_000_000.0;
const CLIENTS_MAX: usize = 100_000;
const CONNS_MAX: usize = 10_000;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?} (try 10s, 500ms, 2m)"))?;
    if !(v.is_finite() && v >= 0.0) || v * scale > 1e7 {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: cannot parse {v:?} as a number"))
}

/// Normalizes `host:port` / `http://host:port` to a URI tonic accepts.
fn endpoint_uri(e: &str) -> Result<String, String> {
    let e = e.trim().trim_end_matches('/');
    if e.is_empty() {
        return Err("empty endpoint".into());
    }
    if e.starts_with("https://") {
        return Err(format!("{e}: TLS is not supported yet by ferro-bench"));
    }
    Ok(if e.starts_with("http://") {
        e.to_string()
    } else {
        format!("http://{e}")
    })
}

pub fn parse(argv: &[String]) -> Result<Args, String> {
    let mut workload = None;
    let mut endpoints = vec!["http://127.0.0.1:2379".to_string()];
    let mut conns = 1usize;
    let mut clients = 1usize;
    let mut total = None;
    let mut duration = None;
    let mut rate = None;
    let mut warmup = Duration::ZERO;
    let mut timeout = Duration::from_secs(5);
    let mut dial_timeout = Duration::from_secs(2);
    let mut grace = None;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut key_size = 32usize;
    let mut key_prefix = "/bench/".to_string();
    let mut val_size = 256usize;
    let mut key_space = 10_000u64;
    let mut sequential_keys = false;
    let mut consistency = "l".to_string();
    let mut prefix = false;
    let mut limit = 100i64;
    let mut preload = None;
    let mut seed = 1u64;
    let mut json = false;
    let mut progress = true;

    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Err(String::new());
        }
        let Some(flag) = arg.strip_prefix("--") else {
            if workload.is_some() {
                return Err(format!("unexpected argument {arg:?}"));
            }
            workload = Some(match arg.as_str() {
                "put" => Workload::Put,
                "range" => Workload::Range,
                "txn-put" => Workload::TxnPut,
                "txn-mixed" | "watch" | "watch-get" | "lease-keepalive" | "k8s" => {
                    return Err(format!("workload {arg:?} is not implemented yet"))
                }
                _ => return Err(format!("unknown workload {arg:?}")),
            });
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        match name {
            "json" | "sequential-keys" | "prefix" | "no-progress" => {
                if inline.is_some() {
                    return Err(format!("--{name} takes no value"));
                }
                match name {
                    "json" => json = true,
                    "sequential-keys" => sequential_keys = true,
                    "prefix" => prefix = true,
                    _ => progress = false,
                }
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("--{name} needs a value"))?,
        };
        let v = value.as_str();
        match name {
            "endpoints" => {
                endpoints = v
                    .split(',')
                    .map(endpoint_uri)
                    .collect::<Result<Vec<_>, _>>()?
            }
            "conns" => conns = parse_num(name, v)?,
            "clients" => clients = parse_num(name, v)?,
            "total" => total = Some(parse_num(name, v)?),
            "duration" => duration = Some(parse_duration(v)?),
            "rate" => rate = Some(parse_num::<f64>(name, v)?),
            "warmup" => warmup = parse_duration(v)?,
            "timeout" => timeout = parse_duration(v)?,
            "dial-timeout" => dial_timeout = parse_duration(v)?,
            "grace" => grace = Some(parse_duration(v)?),
            "threads" => threads = parse_num(name, v)?,
            "key-size" => key_size = parse_num(name, v)?,
            "key-prefix" => key_prefix = v.to_string(),
            "val-size" => val_size = parse_num(name, v)?,
            "key-space" => key_space = parse_num(name, v)?,
            "consistency" => consistency = v.to_string(),
            "limit" => limit = parse_num(name, v)?,
            "preload" => preload = Some(parse_num(name, v)?),
            "seed" => seed = parse_num(name, v)?,
            _ => return Err(format!("unknown flag --{name}")),
        }
    }

    let workload = workload.ok_or("no workload given (put, range, txn-put)")?;
    if !(1..=CONNS_MAX).contains(&conns) {
        return Err(format!("--conns must be 1..={CONNS_MAX}"));
    }
    if !(1..=CLIENTS_MAX).contains(&clients) {
        return Err(format!("--clients must be 1..={CLIENTS_MAX}"));
    }
    if threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if timeout.is_zero() {
        return Err("--timeout must be positive".into());
    }
    if total == Some(0) {
        return Err("--total must be at least 1".into());
    }
    let duration = duration.unwrap_or(if total.is_some() {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(10)
    });
    if duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    if let Some(r) = rate {
        if !(r.is_finite() && r > 0.0) {
            return Err("--rate must be positive".into());
        }
        let scheduled = r * (duration + warmup).as_secs_f64();
        if scheduled > OPEN_LOOP_REQUESTS_MAX {
            return Err(format!(
                "--rate x (--warmup + --duration) schedules {scheduled:.0} requests; the bound is {OPEN_LOOP_REQUESTS_MAX:.0}"
            ));
        }
    }
    if key_space == 0 {
        return Err("--key-space must be at least 1".into());
    }
    let digits = (key_space - 1).max(1).ilog10() as usize + 1;
    if key_size < key_prefix.len() + digits {
        return Err(format!(
            "--key-size {key_size} is too small for prefix {key_prefix:?} and {key_space} keys \
             (needs {})",
            key_prefix.len() + digits
        ));
    }
    let serializable = match consistency.as_str() {
        "l" | "linearizable" => false,
        "s" | "serializable" => true,
        other => return Err(format!("--consistency must be l or s, not {other:?}")),
    };
    if limit < 0 {
        return Err("--limit must not be negative".into());
    }
    let preload = match workload {
        Workload::Range => preload.unwrap_or(key_space).min(key_space),
        _ => preload.unwrap_or(0).min(key_space),
    };
    Ok(Args {
        workload,
        endpoints,
        conns,
        clients,
        total,
        duration,
        rate,
        warmup,
        timeout,
        dial_timeout,
        grace: grace.unwrap_or(timeout + Duration::from_secs(1)),
        threads,
        key_size,
        key_prefix,
        val_size,
        key_space,
        sequential_keys,
        serializable,
        prefix,
        limit,
        preload,
        seed,
        json,
        progress,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn flags_both_forms_and_defaults() {
        let a = args("--clients=16 put --conns 4 --endpoints 10.0.0.1:2379,http://h:1").unwrap();
        assert_eq!(a.workload, Workload::Put);
        assert_eq!((a.conns, a.clients), (4, 16));
        assert_eq!(a.endpoints, ["http://10.0.0.1:2379", "http://h:1"]);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.grace, Duration::from_secs(6));
        let a = args("range --consistency s --total 5").unwrap();
        assert!(a.serializable);
        assert_eq!(a.preload, a.key_space);
        assert_eq!(a.duration, Duration::from_secs(300));
    }

    #[test]
    fn bad_input_is_rejected() {
        assert!(args("put --clients 0").is_err());
        assert!(args("put --key-size 3").is_err());
        assert!(args("put --rate 0").is_err());
        assert!(args("watch").unwrap_err().contains("not implemented"));
        assert!(args("put --bogus 1").is_err());
        assert!(args("put --endpoints https://x:1").is_err());
        assert!(args("--json").is_err());
    }
}
