//! Flags, `ETCD_*` environment variables and `--config-file`, with etcd's
//! names and defaults. Precedence as etcd: a config file, when given,
//! replaces flags and environment; otherwise flags win over environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferrokv::cluster::{self, ClusterState};

#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub wal_dir: Option<PathBuf>,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    /// Normalized and sorted as etcd's URL flags (the text member ids
    /// hash).
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--initial-cluster` as given: parsed only when a member bootstraps
    /// (`cluster::bootstrap`), as etcd parses it only then.
    pub initial_cluster: String,
    pub initial_cluster_state: ClusterState,
    /// May be empty: etcd hashes an empty token as given.
    pub initial_cluster_token: String,
    pub snapshot_count: u64,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub quota_backend_bytes: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub auto_compaction_mode: String,
    pub auto_compaction_retention: String,
    pub log_level: String,
    pub shards: usize,
    /// TLS for `https://` client URLs (`--cert-file`, `--key-file`,
    /// `--trusted-ca-file`, `--client-cert-auth`).
    pub client_tls: Option<ferrokv_wire::tls::TlsFlags>,
    /// TLS for `https://` peer URLs (`--peer-cert-file`, `--peer-key-file`,
    /// `--peer-trusted-ca-file`, `--peer-client-cert-auth`).
    pub peer_tls: Option<ferrokv_wire::tls::TlsFlags>,
    /// `--cipher-suites`, Go's names (also in both `*_tls`); checked at
    /// start by `ferrokv_wire::tls::crypto_provider`, TLS or not, as etcd.
    pub cipher_suites: Vec<String>,
    /// `--auto-tls` with no `--cert-file`/`--key-file`: main makes a
    /// self-signed pair under `<data-dir>/fixtures/client`.
    pub client_auto_tls: bool,
    /// `--peer-auto-tls` likewise, `<data-dir>/fixtures/peer`.
    pub peer_auto_tls: bool,
    /// `--auth-token`: `simple` or `jwt,...` (read by `jwt::Jwt::from_flag`
    /// at start, since it names key files).
    pub auth_token: String,
    /// `--auth-token-ttl`, seconds.
    pub auth_token_ttl: u64,
    /// `--bcrypt-cost`.
    pub bcrypt_cost: u32,
}

/// One accepted option: its etcd name, whether it takes a value, help text.
struct Opt {
    name: &'static str,
    boolean: bool,
    help: &'static str,
}

const OPTS: &[Opt] = &[
    Opt { name: "name", boolean: false, help: "Human-readable name for this member." },
    Opt { name: "data-dir", boolean: false, help: "Path to the data directory." },
    Opt { name: "wal-dir", boolean: false, help: "Path to the dedicated wal directory." },
    Opt { name: "listen-client-urls", boolean: false, help: "List of URLs to listen on for client traffic." },
    Opt { name: "advertise-client-urls", boolean: false, help: "List of this member's client URLs to advertise to the public." },
    Opt { name: "listen-peer-urls", boolean: false, help: "List of URLs to listen on for peer traffic." },
    Opt { name: "initial-advertise-peer-urls", boolean: false, help: "List of this member's peer URLs to advertise to the rest of the cluster." },
    Opt { name: "initial-cluster", boolean: false, help: "Initial cluster configuration for bootstrapping." },
    Opt { name: "initial-cluster-state", boolean: false, help: "Initial cluster state ('new' or 'existing')." },
    Opt { name: "initial-cluster-token", boolean: false, help: "Initial cluster token for the etcd cluster during bootstrap." },
    Opt { name: "snapshot-count", boolean: false, help: "Number of committed transactions to trigger a snapshot to disk." },
    Opt { name: "heartbeat-interval", boolean: false, help: "Time (in milliseconds) of a heartbeat interval." },
    Opt { name: "election-timeout", boolean: false, help: "Time (in milliseconds) for an election to timeout." },
    Opt { name: "quota-backend-bytes", boolean: false, help: "Raise alarms when backend size exceeds the given quota (0 defaults to low space quota)." },
    Opt { name: "max-request-bytes", boolean: false, help: "Maximum client request size in bytes the server will accept." },
    Opt { name: "max-txn-ops", boolean: false, help: "Maximum number of operations permitted in a transaction." },
    Opt { name: "auto-compaction-mode", boolean: false, help: "Interpret 'auto-compaction-retention' one of: periodic|revision." },
    Opt { name: "auto-compaction-retention", boolean: false, help: "Auto compaction retention for mvcc key value store. 0 means disable auto compaction." },
    Opt { name: "log-level", boolean: false, help: "Configures log level. Only supports debug, info, warn, error, panic, or fatal." },
    Opt { name: "logger", boolean: false, help: "Accepted for compatibility; ferrokv has one logger." },
    Opt { name: "log-outputs", boolean: false, help: "Accepted for compatibility; ferrokv logs to stderr." },
    Opt { name: "enable-v2", boolean: true, help: "Accepted for compatibility; the v2 API is not served." },
    Opt { name: "cert-file", boolean: false, help: "Path to the client server TLS cert file." },
    Opt { name: "key-file", boolean: false, help: "Path to the client server TLS key file." },
    Opt { name: "trusted-ca-file", boolean: false, help: "Path to the client server TLS trusted CA cert file." },
    Opt { name: "client-cert-auth", boolean: true, help: "Enable client cert authentication." },
    Opt { name: "peer-cert-file", boolean: false, help: "Path to the peer server TLS cert file." },
    Opt { name: "peer-key-file", boolean: false, help: "Path to the peer server TLS key file." },
    Opt { name: "peer-trusted-ca-file", boolean: false, help: "Path to the peer server TLS trusted CA file." },
    Opt { name: "peer-client-cert-auth", boolean: true, help: "Enable peer client cert authentication." },
    Opt { name: "client-crl-file", boolean: false, help: "Path to the client certificate revocation list file." },
    Opt { name: "client-cert-allowed-hostname", boolean: false, help: "Allowed TLS hostname for client cert authentication." },
    Opt { name: "auto-tls", boolean: true, help: "Client TLS using generated certificates." },
    Opt { name: "peer-crl-file", boolean: false, help: "Path to the peer certificate revocation list file." },
    Opt { name: "peer-cert-allowed-cn", boolean: false, help: "Required CN for client certs connecting to the peer endpoint." },
    Opt { name: "peer-cert-allowed-hostname", boolean: false, help: "Allowed TLS hostname for inter peer authentication." },
    Opt { name: "peer-auto-tls", boolean: true, help: "Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided." },
    Opt { name: "cipher-suites", boolean: false, help: "Comma-separated list of supported TLS cipher suites between client/server and peers (empty will be auto-populated by Go). TLS 1.3 suites are always enabled, as in Go." },
    Opt { name: "auth-token", boolean: false, help: "Specify auth token specific options: 'simple' or 'jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...'." },
    Opt { name: "auth-token-ttl", boolean: false, help: "The lifetime in seconds of the auth token." },
    Opt { name: "bcrypt-cost", boolean: false, help: "Specify bcrypt algorithm cost factor for auth password hashing." },
    Opt { name: "shards", boolean: false, help: "ferrokv: number of keyspace shards, one pinned core each (default: cores available). Fixed when the data dir is created." },
    Opt { name: "config-file", boolean: false, help: "Path to the server configuration file (YAML, etcd's keys)." },
];

pub enum Parsed {
    Run(Box<Config>),
    Help(String),
    Version,
}

pub fn usage() -> String {
    let mut s = String::from("Usage:\n\n  ferrokv [flags]\n\nStart a ferrokv member (an etcd v3 compatible server).\n\nFlags:\n");
    for o in OPTS {
        s.push_str(&format!("  --{}\n      {}\n", o.name, o.help));
    }
    s.push_str("  --version\n      Print the version and exit.\n");
    s
}

fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.replace('-', "_").to_uppercase())
}

/// Parse argv (without the program name) and the environment.
/// Where a setting came from: etcd words its errors by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Flag,
    Env,
    File,
}

/// The settings given, each with where it came from.
type Given = BTreeMap<&'static str, (String, Source)>;

pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, String> {
    let mut given: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let Some(body) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            return Err(format!("'{a}' is not a valid flag"));
        };
        if body == "h" || body == "help" {
            return Ok(Parsed::Help(usage()));
        }
        if body == "version" {
            return Ok(Parsed::Version);
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(opt) = OPTS.iter().find(|o| o.name == name) else {
            return Err(format!("flag provided but not defined: -{name}"));
        };
        let value = match (inline, opt.boolean) {
            (Some(v), _) => v,
            (None, true) => "true".to_string(),
            (None, false) => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("flag needs an argument: -{name}"))?
            }
        };
        given.insert(opt.name, value);
        i += 1;
    }
    let mut vals: Given = BTreeMap::new();
    let config_file = given
        .get("config-file")
        .cloned()
        .or_else(|| env(&env_name("config-file")));
    if let Some(path) = config_file {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read config file {path}: {e}"))?;
        let doc: BTreeMap<String, serde_yaml::Value> = serde_yaml::from_str(&text)
            .map_err(|e| format!("config file {path} is not valid YAML: {e}"))?;
        for (k, v) in doc {
            let Some(opt) = OPTS.iter().find(|o| o.name == k) else {
                log::warn!("config file {path}: unknown key {k:?} ignored");
                continue;
            };
            let s = match v {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::Null => continue,
                serde_yaml::Value::Sequence(items) if opt.name == "cipher-suites" => items
                    .iter()
                    .map(|i| match i {
                        serde_yaml::Value::String(s) => Ok(s.clone()),
                        other => Err(format!(
                            "config file {path}: {k}: unsupported value {other:?}"
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                other => {
                    return Err(format!(
                        "config file {path}: {k}: unsupported value {other:?}"
                    ))
                }
            };
            vals.insert(opt.name, (s, Source::File));
        }
    } else {
        for o in OPTS {
            // etcd reads a variable only when it is set to something.
            if let Some(v) = env(&env_name(o.name)).filter(|v| !v.is_empty()) {
                vals.insert(o.name, (v, Source::Env));
            }
        }
        vals.extend(given.into_iter().map(|(k, v)| (k, (v, Source::Flag))));
    }
    build(&vals).map(|c| Parsed::Run(Box::new(c)))
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

/// etcd's (Go flag package's) words for a value a setting cannot take.
fn invalid(vals: &Given, k: &str, why: &str) -> String {
    let (v, source) = vals
        .get(k)
        .map_or(("", Source::Flag), |(v, s)| (v.as_str(), *s));
    match source {
        Source::Env => format!("invalid value {v:?} for {}: {why}", env_name(k)),
        Source::Flag | Source::File => format!("invalid value {v:?} for flag -{k}: {why}"),
    }
}

/// An etcd URL-list setting (`--initial-advertise-peer-urls`, ...):
/// each URL checked and normalized, duplicates dropped, sorted.
fn urls(vals: &Given, k: &str, default: &str) -> Result<Vec<String>, String> {
    let given = vals.get(k).map_or(default, |(v, _)| v.as_str());
    let mut out = cluster::normalize_urls(&given.split(',').collect::<Vec<_>>())
        .map_err(|e| invalid(vals, k, &e))?;
    out.dedup();
    Ok(out)
}

fn num<T: std::str::FromStr>(vals: &Given, k: &str, default: T) -> Result<T, String> {
    match vals.get(k).map(|(v, _)| v) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("invalid value {v:?} for flag -{k}")),
    }
}

/// etcd's `--initial-cluster` default, before it is made from `--name`.
const DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";
/// etcd's bound on `--election-timeout` (embed's `maxElectionMs`): a
/// configuration etcd refuses to start with is refused here too.
const ELECTION_TIMEOUT_MAX_MS: u64 = 50_000;

fn build(vals: &Given) -> Result<Config, String> {
    let get = |k: &str, d: &str| {
        vals.get(k)
            .map_or_else(|| d.to_string(), |(v, _)| v.clone())
    };
    let file = |k: &str| {
        vals.get(k)
            .filter(|(v, _)| !v.is_empty())
            .map(|(v, _)| PathBuf::from(v))
    };
    let cipher_suites = list(&get("cipher-suites", ""));
    let client_tls = tls_flags(vals, "", &cipher_suites)?;
    let peer_tls = tls_flags(vals, "peer-", &cipher_suites)?;
    let on = |k: &str| vals.get(k).is_some_and(|(v, _)| v == "true");
    // etcd: auto TLS is ignored (with a warning) when files are given.
    let client_auto_tls = on("auto-tls") && client_tls.is_none();
    let peer_auto_tls = on("peer-auto-tls") && peer_tls.is_none();
    if on("auto-tls") && client_tls.is_some() {
        log::warn!("ignoring client auto TLS since certs given");
    }
    if on("peer-auto-tls") && peer_tls.is_some() {
        log::warn!("ignoring peer auto TLS since certs given");
    }
    let name = get("name", cluster::DEFAULT_NAME);
    let initial_advertise_peer_urls = urls(
        vals,
        "initial-advertise-peer-urls",
        cluster::DEFAULT_ADVERTISE_PEER_URL,
    )?;
    // etcd: a member named other than "default" whose --initial-cluster
    // is the default gets one made of its name and advertised peer URLs.
    let mut initial_cluster = get("initial-cluster", DEFAULT_INITIAL_CLUSTER);
    if name != cluster::DEFAULT_NAME && initial_cluster == DEFAULT_INITIAL_CLUSTER {
        let n = if name.is_empty() {
            cluster::DEFAULT_NAME
        } else {
            &name
        };
        initial_cluster = initial_advertise_peer_urls
            .iter()
            .map(|u| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(",");
    }
    let initial_cluster_state = ClusterState::parse(&get("initial-cluster-state", "new"))
        .ok_or_else(|| invalid(vals, "initial-cluster-state", "invalid value"))?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let cfg = Config {
        data_dir: PathBuf::from(get("data-dir", &format!("{name}.ferrokv"))),
        wal_dir: file("wal-dir"),
        // Listening on 127.0.0.1 is etcd's localhost without the IPv6 half.
        listen_client_urls: list(&get("listen-client-urls", "http://127.0.0.1:2379")),
        advertise_client_urls: urls(vals, "advertise-client-urls", "http://localhost:2379")?,
        listen_peer_urls: list(&get("listen-peer-urls", "http://127.0.0.1:2380")),
        initial_advertise_peer_urls,
        initial_cluster,
        initial_cluster_state,
        initial_cluster_token: get("initial-cluster-token", cluster::DEFAULT_TOKEN),
        snapshot_count: num(vals, "snapshot-count", 100_000)?,
        heartbeat_interval_ms: num(vals, "heartbeat-interval", 100)?,
        election_timeout_ms: num(vals, "election-timeout", 1000)?,
        quota_backend_bytes: num(vals, "quota-backend-bytes", 0)?,
        max_request_bytes: num(vals, "max-request-bytes", 1_572_864)?,
        max_txn_ops: num(vals, "max-txn-ops", 128)?,
        auto_compaction_mode: get("auto-compaction-mode", "periodic"),
        auto_compaction_retention: get("auto-compaction-retention", "0"),
        log_level: get("log-level", "info"),
        shards: num(vals, "shards", cores)?,
        client_tls,
        peer_tls,
        cipher_suites,
        client_auto_tls,
        peer_auto_tls,
        auth_token: get("auth-token", "simple"),
        auth_token_ttl: num(vals, "auth-token-ttl", 300)?,
        bcrypt_cost: num(vals, "bcrypt-cost", 10)?,
        name,
    };
    if !(4..=31).contains(&cfg.bcrypt_cost) {
        // etcd: bcrypt.MinCost..=bcrypt.MaxCost.
        return Err(format!(
            "invalid bcrypt-cost: {} (must be between 4 and 31)",
            cfg.bcrypt_cost
        ));
    }
    if cfg.shards == 0 || cfg.shards > 1024 {
        return Err(format!(
            "--shards must be between 1 and 1024, got {}",
            cfg.shards
        ));
    }
    for u in cfg
        .listen_client_urls
        .iter()
        .chain(cfg.listen_peer_urls.iter())
    {
        listen_addr(u)?;
    }
    for u in &cfg.listen_client_urls {
        if is_tls_url(u) && cfg.client_tls.is_none() && !cfg.client_auto_tls {
            return Err(format!(
                "TLS key/cert (--cert-file, --key-file) must be provided for client url {u} with HTTPS scheme"
            ));
        }
    }
    for u in &cfg.listen_peer_urls {
        if is_tls_url(u) && cfg.peer_tls.is_none() && !cfg.peer_auto_tls {
            let host = url::Url::parse(u).map_or_else(
                |_| u.clone(),
                |p| format!("{}:{}", p.host_str().unwrap_or(""), p.port().unwrap_or(0)),
            );
            return Err(format!(
                "cannot listen on TLS for {host}: KeyFile and CertFile are not presented"
            ));
        }
    }
    if !matches!(cfg.auto_compaction_mode.as_str(), "periodic" | "revision") {
        return Err(format!(
            "unknown auto-compaction-mode {:?}",
            cfg.auto_compaction_mode
        ));
    }
    Ok(cfg)
}

/// etcd's TLS flags of one kind, `--{kind}cert-file`, `--{kind}key-file`,
/// `--{kind}trusted-ca-file`, `--{kind}client-cert-auth`, the CRL file
/// (`--client-crl-file`, `--peer-crl-file`) and the allowed names
/// (`--client-cert-allowed-hostname`, `--peer-cert-allowed-cn`,
/// `--peer-cert-allowed-hostname`): `kind` is "" for the client port,
/// "peer-" between members. `None` when neither a certificate nor a key is
/// given (a trusted CA alone is then unused, as in etcd); the files are
/// read later, where they are used.
fn tls_flags(
    vals: &Given,
    kind: &str,
    cipher_suites: &[String],
) -> Result<Option<ferrokv_wire::tls::TlsFlags>, String> {
    let get = |k: &str| {
        vals.get(k)
            .filter(|(v, _)| !v.is_empty())
            .map(|(v, _)| v.clone())
    };
    let own = |k: &str| get(&format!("{kind}{k}"));
    let named = if kind.is_empty() { "client-" } else { kind };
    match (own("cert-file"), own("key-file")) {
        (Some(cert), Some(key)) => Ok(Some(ferrokv_wire::tls::TlsFlags {
            cert_file: PathBuf::from(cert),
            key_file: PathBuf::from(key),
            trusted_ca_file: own("trusted-ca-file").map(PathBuf::from),
            client_cert_auth: own("client-cert-auth").is_some_and(|v| v == "true"),
            crl_file: get(&format!("{named}crl-file")).map(PathBuf::from),
            cipher_suites: cipher_suites.to_vec(),
            allowed_cn: get(&format!("{named}cert-allowed-cn")),
            allowed_hostname: get(&format!("{named}cert-allowed-hostname")),
            self_signed: false,
        })),
        (None, None) => Ok(None),
        (cert, key) => Err(format!(
            "KeyFile and CertFile must both be present[key: {}, cert: {}]",
            key.unwrap_or_default(),
            cert.unwrap_or_default()
        )),
    }
}

/// `http://host:port` -> a socket address to bind. Names other than
/// localhost are not resolved: etcd also requires IPs in listen URLs.
/// Whether clients on this URL speak TLS.
/// The checks etcd's embed `Config.Validate` makes of flags that parsed:
/// etcd answers them with "error verifying flags, ..." and exit code 1,
/// not the usage error's 2.
pub fn verify(cfg: &Config) -> Result<(), String> {
    if cfg.heartbeat_interval_ms == 0
        || cfg.election_timeout_ms < cfg.heartbeat_interval_ms.saturating_mul(5)
    {
        return Err(format!(
            "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
            cfg.election_timeout_ms, cfg.heartbeat_interval_ms
        ));
    }
    if cfg.election_timeout_ms > ELECTION_TIMEOUT_MAX_MS {
        return Err(format!(
            "--election-timeout[{}ms] is too long, and should be set less than {ELECTION_TIMEOUT_MAX_MS}ms",
            cfg.election_timeout_ms
        ));
    }
    Ok(())
}

pub fn is_tls_url(u: &str) -> bool {
    u.starts_with("https://")
}

pub fn listen_addr(u: &str) -> Result<std::net::SocketAddr, String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("invalid URL {u:?}: {e}"))?;
    match parsed.scheme() {
        "http" | "unix" | "https" => {}
        s => {
            return Err(format!(
                "URL scheme must be http, https, unix, or unixs: {s}"
            ))
        }
    }
    let port = parsed
        .port()
        .ok_or_else(|| format!("{u}: missing port in address"))?;
    let host = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => std::net::IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => std::net::IpAddr::V6(ip),
        Some(url::Host::Domain("localhost")) => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        _ => return Err(format!("listen URL {u} must use an IP address")),
    };
    Ok(std::net::SocketAddr::new(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match parse(&args, &|k| env.get(k).cloned())? {
            Parsed::Run(c) => verify(&c).map(|()| *c),
            _ => Err("not a run".into()),
        }
    }

    #[test]
    fn an_election_timeout_above_etcds_bound_is_refused_in_its_words() {
        assert!(run(&["--election-timeout", "50000"], &[]).is_ok());
        assert_eq!(
            run(&["--election-timeout", "50001"], &[]).unwrap_err(),
            "--election-timeout[50001ms] is too long, and should be set less than 50000ms"
        );
    }

    #[test]
    fn a_heartbeat_too_large_to_multiply_is_refused_in_etcds_words() {
        // 5 × the heartbeat overflowed u64 (a panic in a debug build, a
        // wrapped product that let the check pass in release).
        let hb = (u64::MAX / 5 + 1).to_string();
        assert_eq!(
            run(&["--heartbeat-interval", &hb, "--election-timeout", "1000"], &[]).unwrap_err(),
            format!(
                "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[{hb}ms]"
            )
        );
    }

    #[test]
    fn auth_flags_as_etcd_names_them() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(
            (c.auth_token.as_str(), c.auth_token_ttl, c.bcrypt_cost),
            ("simple", 300, 10)
        );
        let c = run(
            &["--auth-token-ttl", "5"],
            &[("ETCD_BCRYPT_COST", "4"), ("ETCD_AUTH_TOKEN", "simple")],
        )
        .unwrap();
        assert_eq!((c.auth_token_ttl, c.bcrypt_cost), (5, 4));
        let c = run(&["--auth-token", "jwt,pub-key=a,sign-method=RS256"], &[]).unwrap();
        assert_eq!(c.auth_token, "jwt,pub-key=a,sign-method=RS256");
        let e = run(&["--bcrypt-cost", "3"], &[]).unwrap_err();
        assert!(e.contains("invalid bcrypt-cost"), "{e}");
    }

    #[test]
    fn https_client_urls_need_a_key_and_certificate() {
        let e = run(&["--listen-client-urls", "https://127.0.0.1:2379"], &[]).unwrap_err();
        assert!(
            e.contains("must be provided for client url https://127.0.0.1:2379"),
            "{e}"
        );
        let e = run(&["--cert-file", "c.pem"], &[]).unwrap_err();
        assert_eq!(
            e,
            "KeyFile and CertFile must both be present[key: , cert: c.pem]"
        );
        let c = run(
            &[
                "--listen-client-urls",
                "https://127.0.0.1:2379",
                "--cert-file",
                "c.pem",
                "--key-file",
                "k.pem",
                "--trusted-ca-file",
                "ca.pem",
                "--client-cert-auth",
            ],
            &[],
        )
        .unwrap();
        let tls = c.client_tls.unwrap();
        assert!(tls.client_cert_auth);
        assert_eq!(tls.trusted_ca_file, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn cipher_suites_crls_allowed_names_and_auto_tls() {
        let suites = "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384";
        let want = vec![
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string(),
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".to_string(),
        ];
        let c = run(
            &[
                "--cipher-suites",
                suites,
                "--cert-file=c.pem",
                "--key-file=k.pem",
                "--client-crl-file=c.crl",
                "--client-cert-allowed-hostname=client.example",
                "--peer-cert-file=p.pem",
                "--peer-key-file=p.key",
                "--peer-crl-file=p.crl",
                "--peer-cert-allowed-cn=member",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.cipher_suites, want);
        let (client, peer) = (c.client_tls.unwrap(), c.peer_tls.unwrap());
        assert_eq!(client.cipher_suites, want);
        assert_eq!(peer.cipher_suites, want);
        assert_eq!(client.crl_file, Some(PathBuf::from("c.crl")));
        assert_eq!(peer.crl_file, Some(PathBuf::from("p.crl")));
        assert_eq!(client.allowed_hostname.as_deref(), Some("client.example"));
        assert_eq!(
            (client.allowed_cn, peer.allowed_cn.as_deref()),
            (None, Some("member"))
        );
        // The environment, and etcd's YAML list in a config file.
        let c = run(&[], &[("ETCD_CIPHER_SUITES", suites)]).unwrap();
        assert_eq!(c.cipher_suites, want);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "cipher-suites:\n  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n  - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n\
             auto-tls: true\npeer-auto-tls: true\n\
             listen-client-urls: https://127.0.0.1:2379\nlisten-peer-urls: https://127.0.0.1:2380\n",
        )
        .unwrap();
        let c = run(&["--config-file", file.to_str().unwrap()], &[]).unwrap();
        assert_eq!(c.cipher_suites, want);
        // https URLs without files are fine with auto TLS.
        assert!(c.client_auto_tls && c.peer_auto_tls);
        assert_eq!((c.client_tls, c.peer_tls), (None, None));
        // Given files win over auto TLS, as in etcd.
        let c = run(
            &["--auto-tls", "--cert-file=c.pem", "--key-file=k.pem"],
            &[],
        )
        .unwrap();
        assert!(!c.client_auto_tls);
    }

    #[test]
    fn peer_tls_flags_as_etcd_reads_them() {
        let https = "https://127.0.0.1:2380";
        // An https peer listener needs a key and certificate (etcd's words).
        let e = run(&["--listen-peer-urls", https], &[]).unwrap_err();
        assert_eq!(
            e,
            "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
        );
        let e = run(&["--peer-key-file", "k.pem"], &[]).unwrap_err();
        assert_eq!(
            e,
            "KeyFile and CertFile must both be present[key: k.pem, cert: ]"
        );
        // Flags, environment and config file alike.
        let want = ferrokv_wire::tls::TlsFlags {
            cert_file: PathBuf::from("p.pem"),
            key_file: PathBuf::from("p.key"),
            trusted_ca_file: Some(PathBuf::from("ca.pem")),
            client_cert_auth: true,
            ..Default::default()
        };
        let c = run(
            &[
                "--listen-peer-urls",
                https,
                "--peer-cert-file=p.pem",
                "--peer-key-file",
                "p.key",
                "--peer-trusted-ca-file",
                "ca.pem",
                "--peer-client-cert-auth",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.peer_tls.as_ref(), Some(&want));
        assert_eq!(c.client_tls, None);
        let c = run(
            &[],
            &[
                ("ETCD_LISTEN_PEER_URLS", https),
                ("ETCD_PEER_CERT_FILE", "p.pem"),
                ("ETCD_PEER_KEY_FILE", "p.key"),
                ("ETCD_PEER_TRUSTED_CA_FILE", "ca.pem"),
                ("ETCD_PEER_CLIENT_CERT_AUTH", "true"),
            ],
        )
        .unwrap();
        assert_eq!(c.peer_tls.as_ref(), Some(&want));
        let dir = std::env::temp_dir().join(format!("ferrokv-peer-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yml");
        std::fs::write(
            &f,
            format!(
                "listen-peer-urls: {https}\npeer-cert-file: p.pem\npeer-key-file: p.key\n\
                 peer-trusted-ca-file: ca.pem\npeer-client-cert-auth: true\n"
            ),
        )
        .unwrap();
        let c = run(&["--config-file", f.to_str().unwrap()], &[]).unwrap();
        assert_eq!(c.peer_tls, Some(want));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_arguments_is_one_member_on_loopback() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.ferrokv"));
        assert_eq!(c.listen_client_urls, vec!["http://127.0.0.1:2379"]);
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
    }

    #[test]
    fn flags_win_over_environment_both_forms() {
        let c = run(
            &["--name=a", "-data-dir", "/x", "--shards", "3"],
            &[("ETCD_NAME", "b"), ("ETCD_SNAPSHOT_COUNT", "7")],
        )
        .unwrap();
        assert_eq!(c.name, "a");
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.snapshot_count, 7);
        assert_eq!(c.shards, 3);
    }

    #[test]
    fn unknown_flag_and_bad_values_are_errors_in_etcd_words() {
        assert_eq!(
            run(&["--nope"], &[]).unwrap_err(),
            "flag provided but not defined: -nope"
        );
        assert!(run(&["--snapshot-count", "x"], &[])
            .unwrap_err()
            .contains("snapshot-count"));
        assert!(run(&["--name"], &[])
            .unwrap_err()
            .contains("needs an argument"));
    }

    #[test]
    fn initial_cluster_defaults_as_etcd() {
        // No arguments: etcd's default member, whose ids are etcd's.
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.initial_cluster, "default=http://localhost:2380");
        assert_eq!(c.initial_advertise_peer_urls, vec!["http://localhost:2380"]);
        assert_eq!(c.advertise_client_urls, vec!["http://localhost:2379"]);
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
        assert_eq!(c.initial_cluster_state, ClusterState::New);
        // Another name: the initial cluster is made of it and the
        // advertised peer URLs (sorted, duplicates dropped).
        let c = run(
            &[
                "--name=m1",
                "--initial-advertise-peer-urls=http://127.0.0.1:2381,HTTP://127.0.0.1:2380,http://127.0.0.1:2381",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            c.initial_advertise_peer_urls,
            vec!["http://127.0.0.1:2380", "http://127.0.0.1:2381"]
        );
        assert_eq!(
            c.initial_cluster,
            "m1=http://127.0.0.1:2380,m1=http://127.0.0.1:2381"
        );
        // The default name keeps etcd's default cluster (which the
        // bootstrap checks then refuse, as etcd does).
        let c = run(
            &["--initial-advertise-peer-urls=http://127.0.0.1:2390"],
            &[],
        )
        .unwrap();
        assert_eq!(c.initial_cluster, "default=http://localhost:2380");
    }

    #[test]
    fn cluster_flags_are_refused_in_etcd_words() {
        assert_eq!(
            run(&["--initial-cluster-state", "foo"], &[]).unwrap_err(),
            "invalid value \"foo\" for flag -initial-cluster-state: invalid value"
        );
        assert_eq!(
            run(&[], &[("ETCD_INITIAL_CLUSTER_STATE", "foo")]).unwrap_err(),
            "invalid value \"foo\" for ETCD_INITIAL_CLUSTER_STATE: invalid value"
        );
        let c = run(&["--initial-cluster-state=existing"], &[]).unwrap();
        assert_eq!(c.initial_cluster_state, ClusterState::Existing);
        assert_eq!(
            run(&["--initial-advertise-peer-urls", "127.0.0.1:2380"], &[]).unwrap_err(),
            "invalid value \"127.0.0.1:2380\" for flag -initial-advertise-peer-urls: \
             parse \"127.0.0.1:2380\": first path segment in URL cannot contain colon"
        );
        // An empty token is a token (etcd hashes it as given); an empty
        // variable is no setting at all (etcd ignores it).
        let c = run(&["--initial-cluster-token="], &[]).unwrap();
        assert_eq!(c.initial_cluster_token, "");
        let c = run(&[], &[("ETCD_INITIAL_CLUSTER_TOKEN", "")]).unwrap();
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
    }

    #[test]
    fn config_file_replaces_flags() {
        let dir = std::env::temp_dir().join(format!("ferrokv-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yml");
        std::fs::write(
            &f,
            "name: fromfile\nsnapshot-count: 42\nlisten-client-urls: http://127.0.0.1:12379\n",
        )
        .unwrap();
        let c = run(&["--config-file", f.to_str().unwrap()], &[]).unwrap();
        assert_eq!(c.name, "fromfile");
        assert_eq!(c.snapshot_count, 42);
        assert_eq!(c.listen_client_urls, vec!["http://127.0.0.1:12379"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
