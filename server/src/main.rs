//! `ferrokv`: one member of a ferrokv cluster, speaking the etcd v3 API.

mod auth;
mod backup;
mod concurrency;
mod config;
mod election;
mod errors;
mod jwt;
mod lease;
mod lock;
mod logger;
mod maintenance;
mod members;
mod process_metrics;
mod service;
mod validate;
mod watch;

use std::rc::Rc;
use std::sync::Arc;

use ferrokv_wal::WalMetrics;

use config::{listen_addr, Config, Parsed};
use ferrokv::cluster::{self, Membership, Opened};
use service::Service;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A refusal at startup (configuration, before any member state is
/// written, or state this member cannot serve from): exit.
fn fail(e: String) -> ! {
    eprintln!("{e}");
    std::process::exit(1);
}

/// The membership this start serves: the one the data dir keeps, a new
/// one from the flags after etcd's bootstrap checks, or, for a member
/// joining a running cluster, what its members say (with the version of
/// their member list).
fn membership_of(cfg: &Config) -> Membership {
    let flags = cluster::BootstrapFlags {
        name: &cfg.name,
        initial_cluster: &cfg.initial_cluster,
        initial_cluster_state: cfg.initial_cluster_state,
        initial_cluster_token: &cfg.initial_cluster_token,
        advertise_peer_urls: &cfg.initial_advertise_peer_urls,
        advertise_client_urls: &cfg.advertise_client_urls,
    };
    let member_dir = cluster::member_dir(&cfg.data_dir);
    let opened = cluster::OnDisk::read(&member_dir)
        .and_then(|on_disk| cluster::open(on_disk, &flags, &cluster::resolve_system))
        .unwrap_or_else(|e| fail(e));
    let (membership, write) = match opened {
        Opened::Restarted {
            membership,
            published,
        } => {
            log::info!(
                "restarting member {:x} in cluster {:x} from {} (--initial-cluster flags ignored)",
                membership.local_id(),
                membership.cluster_id(),
                member_dir.join(cluster::CLUSTER_FILE).display()
            );
            (membership, published)
        }
        Opened::Bootstrapped(membership) => (membership, true),
        Opened::Join(urls_map) => {
            let mut membership = join_cluster(cfg, &urls_map).unwrap_or_else(|e| fail(e));
            membership.publish_local(&cfg.name, &cfg.advertise_client_urls);
            log::info!(
                "joining cluster {:x} as member {:x} (member list version {})",
                membership.cluster_id(),
                membership.local_id(),
                membership.joined_at().map_or(0, |j| j.version)
            );
            (membership, true)
        }
    };
    if write {
        if let Err(e) = membership.save(&member_dir) {
            fail(e);
        }
    }
    for m in membership.members() {
        log::info!(
            "member {:x} [{}] in cluster {:x}",
            m.id,
            m.peer_urls.join(","),
            membership.cluster_id()
        );
    }
    membership
}

/// How long a joining member keeps asking the running members (etcd asks
/// each once, for a second).
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// etcd's `GetClusterFromRemotePeers` and `ValidateClusterAndAssignIDs`:
/// ask the other members `--initial-cluster` names for the member list,
/// and find this member in it by its peer URLs.
fn join_cluster(cfg: &Config, urls_map: &cluster::UrlsMap) -> Result<Membership, String> {
    let tls = peer_tls(cfg)?;
    let deadline = std::time::Instant::now() + JOIN_WAIT;
    let mut last = String::from("no other member in --initial-cluster");
    loop {
        for (name, urls) in &urls_map.0 {
            if *name == cfg.name {
                continue;
            }
            for u in urls {
                for addr in peer_addrs(u)? {
                    let asked = ferrokv_raft::peer::query_members(
                        &addr,
                        tls.as_ref(),
                        cfg.shards as u32,
                        std::time::Duration::from_secs(1),
                    );
                    match asked {
                        Ok((cluster_id, body)) => {
                            let answer: members::JoinAnswer = serde_json::from_slice(&body)
                                .map_err(|e| format!("member list from {u}: {e}"))?;
                            if members::parse_hex(&answer.cluster_id)? != cluster_id {
                                return Err(format!("member list from {u}: cluster id differs"));
                            }
                            // A member that has not yet applied this one's
                            // addition answers too early: ask again.
                            match members::join(&answer, urls_map, &cfg.name) {
                                Ok(m) => return Ok(m),
                                Err(e) => {
                                    log::warn!("member list from {u}: {e}");
                                    last = e;
                                }
                            }
                        }
                        Err(e) => {
                            log::warn!("could not get cluster response from {u}: {e}");
                            last = e;
                        }
                    }
                }
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "cannot fetch cluster info from peer urls: could not retrieve cluster information from the given URLs ({last})"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Checks `--cipher-suites` (TLS or not, as etcd: `unexpected TLS cipher
/// suite "NAME"`, exit 1) and makes `--auto-tls` / `--peer-auto-tls`'s
/// self-signed pairs under `<data-dir>/fixtures/{client,peer}` for the
/// hosts of the listen URLs, as etcd's `ClientSelfCert`/`PeerSelfCert`.
fn tls_setup(cfg: &mut Config) -> Result<(), String> {
    for name in ferrokv_wire::tls::unimplemented_cipher_suites(&cfg.cipher_suites)? {
        log::warn!(
            "--cipher-suites: {name} is not implemented by ferrokv (rustls); it is never negotiated"
        );
    }
    let fixtures = cfg.data_dir.join("fixtures");
    let cipher_suites = cfg.cipher_suites.clone();
    let auto = |dir: &str, urls: &[String]| {
        ferrokv_wire::tls::self_cert(&fixtures.join(dir), urls).map(|(cert_file, key_file)| {
            ferrokv_wire::tls::TlsFlags {
                cert_file,
                key_file,
                cipher_suites: cipher_suites.clone(),
                self_signed: true,
                ..Default::default()
            }
        })
    };
    if cfg.client_auto_tls {
        cfg.client_tls = Some(auto("client", &cfg.listen_client_urls)?);
    }
    if cfg.peer_auto_tls {
        cfg.peer_tls = Some(auto("peer", &cfg.listen_peer_urls)?);
    }
    Ok(())
}

/// `--peer-*` TLS, read whenever given, as etcd reads it, so a bad file
/// fails the start of a one-member cluster too (in etcd's words).
fn peer_tls(cfg: &Config) -> Result<Option<ferrokv_raft::peer::PeerTls>, String> {
    cfg.peer_tls
        .as_ref()
        .map(ferrokv_raft::peer::PeerTls::from_flags)
        .transpose()
}

/// The peer addresses of a member's peer URLs; https needs peer TLS.
pub(crate) fn peer_addrs_of(
    urls: &[String],
    tls: bool,
) -> Result<Vec<ferrokv_raft::peer::PeerAddr>, String> {
    let mut addrs = Vec::new();
    for u in urls {
        if config::is_tls_url(u) && !tls {
            return Err(format!(
                "peer URL {u} is https: TLS between members needs --peer-cert-file, --peer-key-file and --peer-trusted-ca-file"
            ));
        }
        addrs.extend(peer_addrs(u)?);
    }
    Ok(addrs)
}

/// How often a starting member asks again to catch up with the leader.
const CATCH_UP_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Waits until this member has applied everything the cluster had
/// committed when it asked (a ReadIndex round through the leader, auth
/// store included): a member restarted, or wiped and added again, must not
/// answer a serializable read from state older than what its clients
/// already saw (etcd serves clients only once its `publish` entry, written
/// after it started, is applied here). Waits as long as there is no
/// leader, as etcd does; a one-member cluster needs no round.
async fn caught_up(engine: &ferrokv_shards::Engine, core: usize) {
    let mut tries = 0u64;
    while let Err(e) = engine.read_barrier().await {
        if tries.is_multiple_of(50) {
            log::info!("core {core}: not serving clients before catching up with the leader: {e}");
        }
        tries += 1;
        glommio::timer::sleep(CATCH_UP_RETRY).await;
    }
}

/// A member removed while it could not hear of it (down, cut off) learns
/// it from the members that refuse it, as etcd's does from their answers.
async fn watch_removal(engine: ferrokv_shards::Engine) {
    loop {
        glommio::timer::sleep(std::time::Duration::from_secs(1)).await;
        if let Some(by) = engine.peers().and_then(|p| p.removed_by_peer()) {
            log::error!("member {by:x} says this member was removed from the cluster");
            leave_cluster("the member has been permanently removed from the cluster");
        }
    }
}

/// etcd stops a member once it is removed from the cluster: after a
/// moment, so the change it applied reaches the others.
pub(crate) fn leave_cluster(why: &'static str) {
    static LEAVING: std::sync::Once = std::sync::Once::new();
    LEAVING.call_once(|| {
        log::error!("{why}; this member stops");
        eprintln!("ferrokv: {why}");
        let delayed = std::thread::Builder::new()
            .name("ferrokv-leave".into())
            .spawn(|| {
                std::thread::sleep(std::time::Duration::from_secs(1));
                std::process::exit(0);
            });
        // No thread from the OS: stop at once rather than panic a core.
        if delayed.is_err() {
            std::process::exit(0);
        }
    });
}

/// The engine's view of the membership: ids, voters and, with peers, the
/// peer transport's addresses (peer URLs resolved once, at start) and its
/// TLS (on the https URLs).
fn members_of(cfg: &Config, membership: &Membership) -> Result<ferrokv_shards::Members, String> {
    use ferrokv_raft::peer::ListenAddr;
    let me = membership.local_id();
    let voters = membership.voter_ids();
    let bootstrap_voters = membership.bootstrap_voters().to_vec();
    let tls = peer_tls(cfg)?;
    let mut pc =
        ferrokv_raft::peer::PeerConfig::new(membership.cluster_id(), me, cfg.shards as u32);
    for u in &cfg.listen_peer_urls {
        pc.listen.push(ListenAddr {
            addr: listen_addr(u)?,
            tls: config::is_tls_url(u),
        });
    }
    for (id, urls) in membership.peer_urls() {
        if id == me {
            continue;
        }
        if urls.iter().any(|u| config::is_tls_url(u)) && tls.as_ref().is_some_and(|t| !t.can_dial())
        {
            return Err(format!(
                "peer URL {} is https: --peer-trusted-ca-file is needed to verify the member's certificate",
                urls.join(",")
            ));
        }
        pc.peers.insert(id, peer_addrs_of(urls, tls.is_some())?);
    }
    if tls.is_some() && !pc.listen.iter().any(|l| l.tls) {
        log::warn!(
            "--peer-cert-file and --peer-key-file are given but no --listen-peer-urls is https: this member accepts plain TCP from its peers"
        );
    }
    pc.tls = tls;
    pc.name = cfg.name.clone();
    pc.client_urls = cfg.advertise_client_urls.clone();
    Ok(ferrokv_shards::Members {
        member_id: me,
        voters,
        bootstrap_voters,
        peer: Some(pc),
    })
}

/// The socket addresses of a peer URL (host names resolved now); for an
/// https URL, TLS verifying the certificate for its host.
fn peer_addrs(u: &str) -> Result<Vec<ferrokv_raft::peer::PeerAddr>, String> {
    use std::net::ToSocketAddrs;
    let parsed = url::Url::parse(u).map_err(|e| format!("invalid peer URL {u:?}: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("peer URL {u}: missing host"))?;
    let port = parsed
        .port()
        .ok_or_else(|| format!("peer URL {u}: missing port in address"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tls_name = config::is_tls_url(u).then(|| host.to_string());
    (host, port)
        .to_socket_addrs()
        .map(|a| {
            a.map(|addr| ferrokv_raft::peer::PeerAddr {
                addr,
                tls_name: tls_name.clone(),
            })
            .collect()
        })
        .map_err(|e| format!("peer URL {u}: cannot resolve: {e}"))
}

/// systemd `Type=notify`: READY=1 once every listener is bound.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
        if let Err(e) = sock.send_to(b"READY=1", &path) {
            log::warn!("sd_notify failed: {e}");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = match config::parse(&args, &|k| std::env::var(k).ok()) {
        Ok(Parsed::Run(c)) => *c,
        Ok(Parsed::Help(u)) => {
            print!("{u}");
            return;
        }
        Ok(Parsed::Version) => {
            println!(
                "ferrokv Version: {}\netcd API Version: {}",
                env!("CARGO_PKG_VERSION"),
                service::ETCD_VERSION
            );
            return;
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("Try 'ferrokv --help' for more information.");
            std::process::exit(2);
        }
    };
    if let Err(e) = config::verify(&cfg) {
        eprintln!("error verifying flags, {e}. See 'ferrokv --help'.");
        std::process::exit(1);
    }
    logger::init(&cfg.log_level);
    if let Err(e) = tls_setup(&mut cfg) {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let mut addrs = Vec::new();
    let mut tls_addrs = Vec::new();
    for u in &cfg.listen_client_urls {
        match listen_addr(u) {
            Ok(a) => {
                addrs.push(a);
                if config::is_tls_url(u) {
                    tls_addrs.push(a);
                }
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    }
    // Refuse to start when another server listens on a client port: every
    // core's listener sets SO_REUSEPORT, so a plain bind would not notice.
    // A connect probe does. It retries for a bounded time because a member
    // killed with -9 keeps its listeners a moment after exit: io_uring tears
    // its ring (which holds the sockets) down asynchronously.
    for a in &addrs {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::net::TcpStream::connect_timeout(a, std::time::Duration::from_millis(200)).is_ok()
        {
            if std::time::Instant::now() > deadline {
                eprintln!("listen tcp {a}: bind: address already in use");
                std::process::exit(1);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let retention = match maintenance::parse_retention(
        &cfg.auto_compaction_mode,
        &cfg.auto_compaction_retention,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let tls = match cfg
        .client_tls
        .as_ref()
        .map(ferrokv_wire::tls::server_config)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let quota_backend_bytes = cfg.quota_backend_bytes;
    let alarms = Arc::new(maintenance::Alarms::default());
    let mut membership = membership_of(&cfg);
    // The member list in force: the last change every shard group applied
    // (or, before any, the bootstrap list; or what a joining member was
    // told).
    let tracker = match ferrokv_shards::membership::load(&cfg.data_dir) {
        Ok(Some(t)) => t,
        Ok(None) => {
            // Before any change: the bootstrap list, or what a joining
            // member was told (kept in its cluster file).
            let joined = membership.joined_at().cloned();
            let base = ferrokv_shards::membership::Change {
                version: joined.as_ref().map_or(0, |j| j.version),
                conf: ferrokv_shards::membership::ConfChangeType::AddNode,
                id: 0,
                members: members::encode_list(&members::MemberList {
                    members: membership.members().to_vec(),
                    removed: joined.map(|j| j.removed).unwrap_or_default(),
                }),
            };
            ferrokv_shards::membership::Tracker::new(cfg.shards as u32, base)
        }
        Err(e) => fail(e),
    };
    let current = members::members_of(tracker.completed());
    if !current.iter().any(|m| m.id == membership.local_id()) {
        fail(format!(
            "member {:x}: the member has been permanently removed from the cluster",
            membership.local_id()
        ));
    }
    membership.set_members(current);
    let membership = Arc::new(membership);
    let changes = Arc::new(ferrokv_shards::membership::MemberChanges::new(
        cfg.data_dir.clone(),
        tracker,
        Arc::new(members::Members::new(
            membership.clone(),
            cfg.peer_tls.is_some(),
        )),
    ));
    let wal_metrics = Arc::new(WalMetrics::default());
    log::info!(
        "ferrokv {} starting: name={} data-dir={} shards={} client-urls={}",
        env!("CARGO_PKG_VERSION"),
        cfg.name,
        cfg.data_dir.display(),
        cfg.shards,
        cfg.listen_client_urls.join(",")
    );
    let members = match members_of(&cfg, &membership) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let auth = Arc::new(ferrokv_shards::auth_view::AuthView::new(
        std::time::Duration::from_secs(cfg.auth_token_ttl),
    ));
    let engine_cfg = ferrokv_shards::Config {
        members,
        data_dir: cfg.data_dir.clone(),
        wal_dir: cfg.wal_dir.clone(),
        shards: cfg.shards,
        snapshot_count: cfg.snapshot_count,
        wal_metrics: wal_metrics.clone(),
        heartbeat_interval_ms: cfg.heartbeat_interval_ms,
        election_ticks: (cfg.election_timeout_ms / cfg.heartbeat_interval_ms.max(1)) as usize,
        changes,
        auth: auth.clone(),
    };
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shards = cfg.shards;
    let (max_request_bytes, max_txn_ops) = (cfg.max_request_bytes, cfg.max_txn_ops);
    let bcrypt_cost = cfg.bcrypt_cost;
    let election_timeout = std::time::Duration::from_millis(cfg.election_timeout_ms);
    let jwt = match jwt::Jwt::from_flag(&cfg.auth_token) {
        Ok(j) => j.map(Arc::new),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let result = ferrokv_shards::run(engine_cfg, move |engine, core| {
        let (tls, tls_addrs, jwt) = (tls.clone(), tls_addrs.clone(), jwt.clone());
        let (addrs, membership, wal_metrics, ready, alarms) = (
            addrs.clone(),
            membership.clone(),
            wal_metrics.clone(),
            ready.clone(),
            alarms.clone(),
        );
        async move {
            if core == 0 {
                glommio::spawn_local(maintenance::enforce_quota(
                    engine.clone(),
                    quota_backend_bytes,
                    alarms.clone(),
                ))
                .detach();
                if let Some(r) = retention {
                    glommio::spawn_local(maintenance::auto_compact(engine.clone(), r)).detach();
                }
                glommio::spawn_local(watch_removal(engine.clone())).detach();
            }
            if engine.peers().is_some() {
                caught_up(&engine, core).await;
            }
            let mut service = Service::new(
                engine,
                membership,
                max_request_bytes,
                max_txn_ops,
                wal_metrics,
                alarms,
                core,
            );
            service.bcrypt_cost = bcrypt_cost;
            service.election_timeout = election_timeout;
            service.jwt = jwt;
            let service = Rc::new(service);
            let mut listeners = Vec::new();
            for a in &addrs {
                // TLS on the https URLs (the config checked their keys).
                let acceptor = tls
                    .clone()
                    .filter(|_| tls_addrs.contains(a))
                    .map(futures_rustls::TlsAcceptor::from);
                match glommio::net::TcpListener::bind(a) {
                    Ok(l) => listeners.push((l, acceptor)),
                    Err(e) => {
                        log::error!("core {core}: listen tcp {a}: {e}");
                        std::process::exit(1);
                    }
                }
            }
            if ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == shards {
                log::info!("ready to serve client requests on {addrs:?}");
                notify_ready();
            }
            let mut tasks = Vec::new();
            for (l, acceptor) in listeners {
                let service = service.clone();
                tasks.push(glommio::spawn_local(async move {
                    loop {
                        match l.accept().await {
                            Ok(stream) => {
                                let service = service.clone();
                                match &acceptor {
                                    Some(a) => glommio::spawn_local(ferrokv_wire::conn::serve_tls(
                                        stream,
                                        a.clone(),
                                        service,
                                    ))
                                    .detach(),
                                    None => glommio::spawn_local(ferrokv_wire::conn::serve(
                                        stream, service,
                                    ))
                                    .detach(),
                                };
                            }
                            Err(e) => {
                                // Out of descriptors and the like: back off
                                // rather than spin.
                                log::warn!("accept: {e}");
                                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
                            }
                        }
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
        }
    });
    if let Err(e) = result {
        eprintln!("ferrokv: {e}");
        std::process::exit(1);
    }
}
