//! Command line: `ferro-bench <workload> [flags]`, flags as `--name value` or
//! `--name=value`, in any order around the workload name.

use std::path::PathBuf;
use std::time::Duration;

use crate::mix::Mix;

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
  txn-mixed  reads (Range of one key, --consistency) and txn-put writes on
             the same random keys, --read-ratio F of them reads; a read
             teaches the client the key's mod_revision, as in Kubernetes
  watch-get  --watchers W over --streams S watch the key prefix from the
             first preloaded revision (so they replay --key-space events,
             unsynced) while the clients Range the watched keys
             (etcd benchmark's watch-get); reports events received
  lease-keepalive
             --leases N leases (TTL --lease-ttl) granted first, kept alive
             by the clients, each over its own LeaseKeepAlive stream
             (latency = keep-alive round trip); --churn F of the operations
             grant a new lease or revoke the client's oldest
  k8s        a mix modelled on the Kubernetes API server (--mix): gets,
             paginated lists of a resource prefix (--limit, continue at the
             first page's revision), create/update/delete via Txn on
             mod_revision (an update retries after a conflict, as
             GuaranteedUpdate does), events put with a lease reused for
             --events-per-lease events; --watchers on the --resources
             prefixes count events; every --compact-interval, a Compact to
             the revision seen one interval earlier. Lease errors (a server
             without the Lease service) are counted and events go on
             without a lease
  watch-idle N idle watchers held open (memory per watcher, --server-pid)
  watch      W watchers on a prefix, one writer at --rate: event latency
             (own flags: ferro-bench watch --help)

connection and load shape:
  --endpoints A[,B..]   host:port, http://host:port or https://host:port
                        (default 127.0.0.1:2379)
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
                        the whole run ends by setup + warmup + duration
                        + grace whatever the server does
  --threads N           client runtime threads (default: cores)
  --user NAME[:PASSWORD] authenticate first (etcd's Auth.Authenticate) and
                        send the token with every request, as etcdctl does
  --password P          the password, when not given with --user
  --cacert FILE         TLS: verify the server with this CA (PEM); without
                        it, https endpoints are verified with the system's
                        roots
  --cert FILE --key FILE
                        TLS: the client certificate and key (PEM), for a
                        server that wants client certificates
                        (a bare host:port is https once a TLS file is given)

workload parameters:
  --key-size B          key bytes (default 32), as --key-prefix + zero-padded
                        decimal key number
  --key-prefix P        (default /bench/; k8s /registry/)
  --val-size B          value bytes (default 256)
  --key-space N         distinct keys (default 10000)
  --sequential-keys     keys in order instead of uniformly random
  --consistency l|s     range consistency (default l)
  --prefix              range: a page from a random key to the prefix end
  --limit N             page size for range --prefix and k8s lists
                        (default 100)
  --preload N           range, txn-mixed, watch-get, k8s: keys written
                        before the run (default: --key-space; 0 to skip)
  --seed S              random seed (default 1)
  --read-ratio F        txn-mixed: fraction of reads (default 0.5)
  --watchers N          watch-get (default 100), k8s (default --resources)
  --streams N           watch streams for them (default: min(10, watchers))
  --leases N            lease-keepalive: leases kept alive (default 1000)
  --lease-ttl S         lease TTL in seconds (default 60; k8s 3600)
  --churn F             lease-keepalive: fraction of grant/revoke (0.1)
  --mix M               k8s weights (default
                        get=30,list=5,create=5,update=40,delete=5,event=15)
  --resources N         k8s: resource prefixes /registry/r<i>/ (default 4),
                        --key-space objects preloaded over them
  --events-per-lease N  k8s: events attached to one lease (default 100)
  --compact-interval D  k8s: compaction period (default 5s; 0 = never)

sweep:
  --sweep clients=1,8,64,256,1024   one run per value (also rate=...),
                        one row each in the summary, the JSON and the plot;
                        the key space is preloaded once, before the first

output:
  --json                one JSON object on stdout instead of the text summary
  --hdr-out FILE        the latencies as an HdrHistogram interval log (V2
                        compressed histograms, one per --hdr-interval,
                        default 1s; tagged with the sweep point)
  --plot FILE.svg       an SVG a browser opens: latency by percentile on a
                        log \"nines\" axis (one line per operation kind, or per
                        sweep point), and for a sweep throughput against p99
  --no-progress         no live progress line (it is only shown when stderr
                        is a terminal anyway)

Durations: 10s, 500ms, 2m, or plain seconds. Exit status: 0 when at least one
request succeeded, 1 when none did (the summary is printed either way), 2 on
bad arguments.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Put,
    Range,
    TxnPut,
    TxnMixed,
    WatchGet,
    LeaseKeepalive,
    K8s,
}

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::Put,
        Workload::Range,
        Workload::TxnPut,
        Workload::TxnMixed,
        Workload::WatchGet,
        Workload::LeaseKeepalive,
        Workload::K8s,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Range => "range",
            Workload::TxnPut => "txn-put",
            Workload::TxnMixed => "txn-mixed",
            Workload::WatchGet => "watch-get",
            Workload::LeaseKeepalive => "lease-keepalive",
            Workload::K8s => "k8s",
        }
    }

    /// Workloads that need the key space written before the run.
    fn preloads(self) -> bool {
        matches!(
            self,
            Workload::Range | Workload::TxnMixed | Workload::WatchGet | Workload::K8s
        )
    }
}

/// What `--sweep` varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepParam {
    Clients,
    Rate,
}

impl SweepParam {
    pub fn name(self) -> &'static str {
        match self {
            SweepParam::Clients => "clients",
            SweepParam::Rate => "rate",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    pub param: SweepParam,
    pub values: Vec<f64>,
}

/// Upper bound on the points of one sweep.
const SWEEP_POINTS_MAX: usize = 64;

pub fn parse_sweep(s: &str) -> Result<Sweep, String> {
    let (name, list) = s
        .split_once('=')
        .ok_or_else(|| format!("--sweep {s:?}: expected clients=1,8,64 or rate=100,1000"))?;
    let param = match name.trim() {
        "clients" => SweepParam::Clients,
        "rate" => SweepParam::Rate,
        other => return Err(format!("--sweep: cannot sweep {other:?} (clients or rate)")),
    };
    let values = list
        .split(',')
        .map(|v| {
            let x: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("--sweep: {v:?} is not a number"))?;
            let whole = param != SweepParam::Clients || x.fract() == 0.0;
            if !(x.is_finite() && x > 0.0 && whole) {
                return Err(format!(
                    "--sweep: {v:?} must be a positive {}",
                    if param == SweepParam::Clients {
                        "whole number"
                    } else {
                        "number"
                    }
                ));
            }
            Ok(x)
        })
        .collect::<Result<Vec<f64>, String>>()?;
    if values.is_empty() || values.len() > SWEEP_POINTS_MAX {
        return Err(format!("--sweep: 1 to {SWEEP_POINTS_MAX} values"));
    }
    Ok(Sweep { param, values })
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
    /// `--user`/`--password`: (name, password).
    pub user: Option<(String, String)>,
    pub tls: Tls,
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
    pub read_ratio: f64,
    pub watchers: usize,
    pub streams: usize,
    pub leases: usize,
    pub lease_ttl_s: i64,
    pub churn: f64,
    pub mix: Mix,
    pub resources: usize,
    pub events_per_lease: u64,
    /// Zero: no compaction.
    pub compact_interval: Duration,
    pub sweep: Option<Sweep>,
    pub hdr_out: Option<PathBuf>,
    pub hdr_interval: Duration,
    pub plot: Option<PathBuf>,
}

impl Args {
    /// The `k8s` key of object `n` of resource `res`, or of another kind of
    /// workload's key `n`: the prefix, then the number zero-padded to
    /// `--key-size` bytes.
    pub fn key(&self, res: Option<usize>, n: u64) -> bytes::Bytes {
        let head = match res {
            Some(r) => format!("{}{}", self.key_prefix, resource_dir(r)),
            None => self.key_prefix.clone(),
        };
        let width = self.key_size.saturating_sub(head.len());
        format!("{head}{n:0width$}").into()
    }

    /// The key prefix of `k8s` resource `res`.
    pub fn resource_prefix(&self, res: usize) -> String {
        format!("{}{}", self.key_prefix, resource_dir(res))
    }
}

fn resource_dir(res: usize) -> String {
    format!("r{res}/")
}

/// Upper bound on the requests one open-loop run schedules (the schedule is
/// queued in memory, 16 bytes per request).
const OPEN_LOOP_REQUESTS_MAX: f64 = 50_000_000.0;
const CLIENTS_MAX: usize = 100_000;
const CONNS_MAX: usize = 10_000;
const WATCHERS_MAX: usize = 1_000_000;
const LEASES_MAX: usize = 1_000_000;
const RESOURCES_MAX: usize = 1000;
/// etcd's largest lease TTL (its `MaxLeaseTTL`, 9,000,000,000 s) is far
/// above anything a run needs; a year keeps the arithmetic small.
const LEASE_TTL_S_MAX: i64 = 365 * 24 * 3600;

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

/// etcdctl's `--user name[:password]` and `--password`.
pub fn parse_user(
    user: Option<String>,
    password: Option<String>,
) -> Result<Option<(String, String)>, String> {
    let Some(user) = user else {
        return match password {
            Some(_) => Err("--password needs --user".into()),
            None => Ok(None),
        };
    };
    let (name, inline) = match user.split_once(':') {
        Some((n, p)) => (n.to_string(), Some(p.to_string())),
        None => (user, None),
    };
    if name.is_empty() {
        return Err("--user: empty user name".into());
    }
    match (inline, password) {
        (Some(_), Some(_)) => {
            Err("--password given twice (--user name:password and --password)".into())
        }
        (Some(p), None) | (None, Some(p)) => Ok(Some((name, p))),
        (None, None) => {
            Err("--user NAME needs a password (--user NAME:PASSWORD or --password)".into())
        }
    }
}

/// Normalizes `host:port` / `http(s)://host:port` to a URI tonic accepts;
/// a bare `host:port` is https when TLS files were given, as in etcdctl.
pub fn endpoint_uri(e: &str, tls: &Tls) -> Result<String, String> {
    let e = e.trim().trim_end_matches('/');
    if e.is_empty() {
        return Err("empty endpoint".into());
    }
    Ok(if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else if tls.is_set() {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    })
}

/// etcdctl's transport security flags: PEM files of the CA that signed the
/// server's certificate and of the client's own certificate and key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

impl Tls {
    pub fn is_set(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Takes `--name value` if it is a TLS flag; false if it is not one.
    pub fn flag(&mut self, name: &str, value: &str) -> Result<bool, String> {
        match name {
            "cacert" => self.cacert = Some(value.to_string()),
            "cert" => self.cert = Some(value.to_string()),
            "key" => self.key = Some(value.to_string()),
            // etcdctl's default; only has an effect without TLS files.
            "insecure-transport" => {}
            "insecure-skip-tls-verify" => {
                return Err(
                    "--insecure-skip-tls-verify is not supported by ferro-bench: \
                     pass the server's CA with --cacert"
                        .into(),
                )
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.cert.is_some() != self.key.is_some() {
            return Err("--cert and --key go together".into());
        }
        Ok(())
    }
}

pub fn parse(argv: &[String]) -> Result<Args, String> {
    let mut workload = None;
    let mut endpoints = vec!["127.0.0.1:2379".to_string()];
    let mut tls = Tls::default();
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
    let mut user: Option<String> = None;
    let mut password: Option<String> = None;
    let mut key_size = 32usize;
    let mut key_prefix: Option<String> = None;
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
    let mut read_ratio = 0.5f64;
    let mut watchers: Option<usize> = None;
    let mut streams: Option<usize> = None;
    let mut leases = 1000usize;
    let mut lease_ttl_s: Option<i64> = None;
    let mut churn = 0.1f64;
    let mut mix = Mix::default();
    let mut resources = 4usize;
    let mut events_per_lease = 100u64;
    let mut compact_interval = Duration::from_secs(5);
    let mut sweep = None;
    let mut hdr_out = None;
    let mut hdr_interval = Duration::from_secs(1);
    let mut plot = None;

    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Err(String::new());
        }
        let Some(flag) = arg.strip_prefix("--") else {
            if workload.is_some() {
                return Err(format!("unexpected argument {arg:?}"));
            }
            workload = Some(
                *Workload::ALL
                    .iter()
                    .find(|w| w.name() == arg)
                    .ok_or_else(|| format!("unknown workload {arg:?}"))?,
            );
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
            "endpoints" => endpoints = v.split(',').map(str::to_string).collect(),
            _ if tls.flag(name, v)? => {}
            "user" => user = Some(v.to_string()),
            "password" => password = Some(v.to_string()),
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
            "key-prefix" => key_prefix = Some(v.to_string()),
            "val-size" => val_size = parse_num(name, v)?,
            "key-space" => key_space = parse_num(name, v)?,
            "consistency" => consistency = v.to_string(),
            "limit" => limit = parse_num(name, v)?,
            "preload" => preload = Some(parse_num(name, v)?),
            "seed" => seed = parse_num(name, v)?,
            "read-ratio" => read_ratio = parse_num(name, v)?,
            "watchers" => watchers = Some(parse_num(name, v)?),
            "streams" => streams = Some(parse_num(name, v)?),
            "leases" => leases = parse_num(name, v)?,
            "lease-ttl" => lease_ttl_s = Some(parse_num(name, v)?),
            "churn" => churn = parse_num(name, v)?,
            "mix" => mix = Mix::parse(v)?,
            "resources" => resources = parse_num(name, v)?,
            "events-per-lease" => events_per_lease = parse_num(name, v)?,
            "compact-interval" => compact_interval = parse_duration(v)?,
            "sweep" => sweep = Some(parse_sweep(v)?),
            "hdr-out" => hdr_out = Some(PathBuf::from(v)),
            "hdr-interval" => hdr_interval = parse_duration(v)?,
            "plot" => plot = Some(PathBuf::from(v)),
            _ => return Err(format!("unknown flag --{name}")),
        }
    }

    let workload = workload.ok_or(
        "no workload given (put, range, txn-put, txn-mixed, watch-get, lease-keepalive, k8s, \
         watch, watch-idle)",
    )?;
    let key_prefix = key_prefix.unwrap_or_else(|| {
        if workload == Workload::K8s {
            "/registry/".into()
        } else {
            "/bench/".into()
        }
    });
    let user = parse_user(user, password)?;
    tls.check()?;
    let endpoints = endpoints
        .iter()
        .map(|e| endpoint_uri(e, &tls))
        .collect::<Result<Vec<_>, _>>()?;
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
    if !(1..=RESOURCES_MAX).contains(&resources) {
        return Err(format!("--resources must be 1..={RESOURCES_MAX}"));
    }
    let digits = (key_space - 1).max(1).ilog10() as usize + 1;
    let head = if workload == Workload::K8s {
        key_prefix.len() + resource_dir(resources - 1).len()
    } else {
        key_prefix.len()
    };
    if key_size < head + digits {
        return Err(format!(
            "--key-size {key_size} is too small for prefix {key_prefix:?} and {key_space} keys \
             (needs {})",
            head + digits
        ));
    }
    for (flag, f) in [("--read-ratio", read_ratio), ("--churn", churn)] {
        if !(0.0..=1.0).contains(&f) {
            return Err(format!("{flag} must be between 0 and 1"));
        }
    }
    let watchers = watchers.unwrap_or(match workload {
        Workload::K8s => resources,
        _ => 100,
    });
    if watchers > WATCHERS_MAX || (workload == Workload::WatchGet && watchers == 0) {
        return Err(format!("--watchers must be 1..={WATCHERS_MAX}"));
    }
    let streams = streams.unwrap_or(watchers.clamp(1, 10));
    if streams == 0 || (watchers > 0 && streams > watchers) {
        return Err("--streams must be 1..=--watchers".into());
    }
    if !(1..=LEASES_MAX).contains(&leases) {
        return Err(format!("--leases must be 1..={LEASES_MAX}"));
    }
    let lease_ttl_s = lease_ttl_s.unwrap_or(if workload == Workload::K8s { 3600 } else { 60 });
    if !(1..=LEASE_TTL_S_MAX).contains(&lease_ttl_s) {
        return Err(format!("--lease-ttl must be 1..={LEASE_TTL_S_MAX} seconds"));
    }
    if events_per_lease == 0 {
        return Err("--events-per-lease must be at least 1".into());
    }
    if hdr_interval < Duration::from_millis(10) {
        return Err("--hdr-interval must be at least 10ms".into());
    }
    if let Some(sw) = &sweep {
        if sw.param == SweepParam::Clients {
            if let Some(&c) = sw.values.iter().find(|&&c| c as usize > CLIENTS_MAX) {
                return Err(format!(
                    "--sweep clients={c}: --clients must be 1..={CLIENTS_MAX}"
                ));
            }
        }
        if sw.param == SweepParam::Rate {
            if let Some(&r) = sw
                .values
                .iter()
                .find(|&&r| r * (duration + warmup).as_secs_f64() > OPEN_LOOP_REQUESTS_MAX)
            {
                return Err(format!(
                    "--sweep rate={r} schedules more than {OPEN_LOOP_REQUESTS_MAX:.0} requests"
                ));
            }
        }
    }
    let serializable = match consistency.as_str() {
        "l" | "linearizable" => false,
        "s" | "serializable" => true,
        other => return Err(format!("--consistency must be l or s, not {other:?}")),
    };
    if limit < 0 {
        return Err("--limit must not be negative".into());
    }
    let preload = if workload.preloads() {
        preload.unwrap_or(key_space).min(key_space)
    } else {
        preload.unwrap_or(0).min(key_space)
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
        user,
        tls,
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
        read_ratio,
        watchers,
        streams,
        leases,
        lease_ttl_s,
        churn,
        mix,
        resources,
        events_per_lease,
        compact_interval,
        sweep,
        hdr_out,
        hdr_interval,
        plot,
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
        assert!(args("watch-all").unwrap_err().contains("unknown workload"));
        assert!(args("put --bogus 1").is_err());
        assert_eq!(
            args("put --endpoints https://x:1").unwrap().endpoints,
            ["https://x:1"]
        );
        let a = args("put --endpoints x:1,http://y:2 --cacert ca.pem").unwrap();
        assert_eq!(a.endpoints, ["https://x:1", "http://y:2"]);
        assert_eq!(a.tls.cacert.as_deref(), Some("ca.pem"));
        assert!(args("put --cert c.pem").is_err(), "--cert needs --key");
        assert!(args("put --insecure-skip-tls-verify").is_err());
        assert!(args("--json").is_err());
        assert!(args("txn-mixed --read-ratio 1.5").is_err());
        assert!(args("lease-keepalive --churn -0.1").is_err());
        assert!(args("lease-keepalive --leases 0").is_err());
        assert!(args("lease-keepalive --lease-ttl 0").is_err());
        assert!(args("watch-get --watchers 0").is_err());
        assert!(args("watch-get --watchers 5 --streams 6").is_err());
        assert!(args("k8s --mix get=0").is_err());
        assert!(args("k8s --resources 0").is_err());
        assert!(args("k8s --key-size 12").is_err());
        assert!(args("put --sweep clients=0").is_err());
        assert!(args("put --sweep clients=1.5").is_err());
        assert!(args("put --sweep conns=1").is_err());
        assert!(args("put --sweep clients=").is_err());
        assert!(args("put --sweep rate=1e9").is_err());
        assert!(args("put --hdr-interval 1ms").is_err());
    }

    #[test]
    fn new_workloads_and_their_defaults() {
        for w in Workload::ALL {
            let a = args(w.name()).unwrap();
            assert_eq!(a.workload, w);
            assert_eq!(a.preload > 0, w.preloads(), "{}", w.name());
        }
        let a = args("txn-mixed --read-ratio 0.9").unwrap();
        assert_eq!(a.read_ratio, 0.9);
        let a = args("watch-get --watchers 50").unwrap();
        assert_eq!((a.watchers, a.streams), (50, 10));
        let a = args("lease-keepalive --leases 20 --lease-ttl 30 --churn 0").unwrap();
        assert_eq!((a.leases, a.lease_ttl_s, a.churn), (20, 30, 0.0));
        let a = args("k8s --mix list=1,get=2 --compact-interval 0").unwrap();
        assert_eq!(a.key_prefix, "/registry/");
        assert_eq!((a.watchers, a.streams, a.resources), (4, 4, 4));
        assert_eq!(a.lease_ttl_s, 3600);
        assert_eq!(a.mix.to_string(), "get=2,list=1");
        assert!(a.compact_interval.is_zero());
        assert_eq!(&a.key(Some(3), 7)[..], b"/registry/r3/0000000000000000007");
        assert_eq!(a.key(Some(3), 7).len(), a.key_size);
        assert_eq!(a.resource_prefix(3), "/registry/r3/");
        assert_eq!(args("k8s --watchers 0").unwrap().watchers, 0);
    }

    #[test]
    fn users() {
        let a = args("put --user root:secret").unwrap();
        assert_eq!(a.user, Some(("root".into(), "secret".into())));
        let a = args("put --user root --password p:w").unwrap();
        assert_eq!(a.user, Some(("root".into(), "p:w".into())));
        assert_eq!(args("put").unwrap().user, None);
        assert!(args("put --user root").is_err());
        assert!(args("put --password x").is_err());
        assert!(args("put --user :x").is_err());
        assert!(args("put --user a:b --password c").is_err());
    }

    #[test]
    fn sweeps() {
        let a = args("put --sweep clients=1,8,64 --hdr-out h.log --plot p.svg").unwrap();
        let sw = a.sweep.unwrap();
        assert_eq!(sw.param, SweepParam::Clients);
        assert_eq!(sw.values, [1.0, 8.0, 64.0]);
        assert_eq!(a.hdr_out.unwrap(), PathBuf::from("h.log"));
        assert_eq!(a.plot.unwrap(), PathBuf::from("p.svg"));
        let sw = parse_sweep("rate=100, 250.5").unwrap();
        assert_eq!(
            (sw.param, sw.values),
            (SweepParam::Rate, vec![100.0, 250.5])
        );
    }
}
