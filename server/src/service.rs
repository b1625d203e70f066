//! gRPC service implementations: decode, check as etcd does, call the
//! engine, fill the response header. No storage logic lives here.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ferrokv_shards::lease::IdGen;
use ferrokv_shards::watch::{WatchHub, WATCHERS_SLOW_TOTAL, WATCHERS_TOTAL};
use ferrokv_shards::Engine;
use ferrokv_wal::WalMetrics;
use ferrokv_wire::conn::{Caller, Handler, HttpReply, LocalBoxFuture, ResponseSink};
use ferrokv_wire::grpc::{decode, Status};
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::Message;
use http::Method;

use crate::maintenance::Alarms;
use crate::{auth, backup, election, errors, lease, lock, members, validate};
use ferrokv::cluster::Membership;
use ferrokv_shards::membership::Change;
use ferrokv_wire::pb::v3electionpb as epb;

/// The etcd API version ferrokv implements and reports.
pub const ETCD_VERSION: &str = "3.4.23";
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";

pub struct Service {
    pub engine: Engine,
    /// Who is in the cluster and which member this is, fixed at start.
    pub membership: Arc<Membership>,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub wal_metrics: Arc<WalMetrics>,
    pub alarms: Arc<Alarms>,
    /// This core's watch fanout.
    pub hub: Rc<WatchHub>,
    /// Server-chosen lease ids of this core.
    lease_ids: RefCell<IdGen>,
    /// `--bcrypt-cost` of the passwords this member hashes.
    pub bcrypt_cost: u32,
    /// `--auth-token jwt,...`: the tokens; None for `simple` ones.
    pub jwt: Option<Arc<crate::jwt::Jwt>>,
    /// `--election-timeout`: how often a stream that requires a leader
    /// looks for one.
    pub election_timeout: std::time::Duration,
}

fn encode<M: Message>(m: &M) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

impl Service {
    pub fn new(
        engine: Engine,
        membership: Arc<Membership>,
        max_request_bytes: usize,
        max_txn_ops: usize,
        wal_metrics: Arc<WalMetrics>,
        alarms: Arc<Alarms>,
        core: usize,
    ) -> Service {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // etcd's ids carry the member id in their top 16 bits; each core
        // offsets it so cores never draw the same id.
        let lease_ids = IdGen::new(membership.local_id().wrapping_add(core as u64), unix_ms);
        Service {
            lease_ids: RefCell::new(lease_ids),
            hub: WatchHub::start(engine.clone()),
            engine,
            membership,
            max_request_bytes,
            max_txn_ops,
            wal_metrics,
            alarms,
            bcrypt_cost: ferrokv_shards::auth::DEFAULT_BCRYPT_COST,
            jwt: None,
            election_timeout: std::time::Duration::from_secs(1),
        }
    }

    pub(crate) fn next_lease_id(&self) -> i64 {
        self.lease_ids.borrow_mut().next_id()
    }

    /// A membership change, made by the leader (see `members`).
    async fn change_members(&self, request: Vec<u8>) -> Result<Change, Status> {
        if self.engine.peers().is_none() {
            // One member: no peer transport runs, so no member could be
            // reached.
            return Err(errors::engine(ferrokv_shards::Error::Internal(
                "adding members to a one-member ferrokv cluster is not supported yet: \
                 start the cluster with all its members in --initial-cluster"
                    .into(),
            )));
        }
        self.engine
            .change_members(request)
            .await
            .map_err(errors::engine)
    }

    /// A member list as `member list` shows it: every member by id;
    /// another member's name and client URLs as it told them in its peer
    /// handshake, empty until then, as etcd lists a member that has not
    /// published them yet.
    fn member_list(&self, change: &Change) -> Vec<pb::Member> {
        let heard = self.engine.peers().map(|p| p.peers()).unwrap_or_default();
        let me = self.membership.local_id();
        members::members_of(change)
            .iter()
            .map(|m| {
                let peer = heard.iter().find(|p| p.member_id == m.id && m.id != me);
                let (name, client_urls) = match peer {
                    Some(p) if !p.name.is_empty() => (p.name.clone(), p.client_urls.clone()),
                    _ if m.id == me => (
                        self.membership.local_member().name.clone(),
                        self.membership.local_member().client_urls.clone(),
                    ),
                    _ => (m.name.clone(), m.client_urls.clone()),
                };
                pb::Member {
                    id: m.id,
                    name,
                    peer_ur_ls: m.peer_urls.clone(),
                    client_ur_ls: client_urls,
                    is_learner: m.is_learner,
                }
            })
            .collect()
    }

    pub(crate) async fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.membership.cluster_id(),
            member_id: self.membership.local_id(),
            revision,
            raft_term: self.engine.leadership().term(),
        })
    }

    async fn fill(&self, h: &mut Option<pb::ResponseHeader>) {
        let rev = h
            .as_ref()
            .map_or(self.engine.sequencer().visible(), |h| h.revision);
        *h = self.header(rev).await;
    }

    /// etcd measures the request as it would be proposed to raft; the
    /// message size is that within a few header bytes.
    fn check_size(&self, msg: &Bytes) -> Result<(), Status> {
        if msg.len() > self.max_request_bytes {
            return Err(errors::request_too_large());
        }
        Ok(())
    }

    /// The engine a write checked against `info`'s auth revision goes
    /// through (see `Engine::checked_at`).
    fn writer(&self, info: &Option<ferrokv_shards::auth_view::AuthInfo>) -> ferrokv_shards::Engine {
        match info {
            Some(i) => self.engine.checked_at(i.revision),
            None => self.engine.clone(),
        }
    }

    /// Whether this member knows a cluster leader now (etcd's
    /// `s.Leader() != raft.None`, which clients' `WithRequireLeader` asks).
    fn has_leader(&self) -> bool {
        self.engine.leadership().cluster_leader() != 0
    }

    async fn call(
        self: Rc<Self>,
        method: &str,
        caller: Caller,
        msg: Bytes,
    ) -> Result<Bytes, Status> {
        if members::is_learner() && !learner_serves(method, &msg) {
            return Err(errors::not_for_learner());
        }
        if caller.require_leader && !self.has_leader() {
            return Err(errors::no_leader());
        }
        if let Some(r) = auth::call(&self, method, &caller, msg.clone()).await {
            return r;
        }
        match method {
            "/etcdserverpb.KV/Range" => {
                let r: pb::RangeRequest = decode(msg)?;
                validate::range(&r)?;
                let mut resp = self.engine.range(&r).await.map_err(errors::engine)?;
                // Checked after the read's ReadIndex, which brought this
                // member's auth store up to the leader's (as etcd checks).
                let info = auth::info(&self, &caller)?;
                auth::read(&self, &info, &r.key, &r.range_end)?;
                self.fill(&mut resp.header).await;
                Ok(encode(&resp))
            }
            "/etcdserverpb.KV/Put" => {
                self.check_size(&msg)?;
                let r: pb::PutRequest = decode(msg)?;
                validate::put(&r)?;
                if self.alarms.nospace() {
                    return Err(errors::no_space());
                }
                let info = auth::info(&self, &caller)?;
                auth::check_put(&self, &info, &r).await?;
                let mut resp = self.writer(&info).put(r).await.map_err(errors::engine)?;
                self.fill(&mut resp.header).await;
                Ok(encode(&resp))
            }
            "/etcdserverpb.KV/DeleteRange" => {
                self.check_size(&msg)?;
                let r: pb::DeleteRangeRequest = decode(msg)?;
                validate::delete(&r)?;
                let info = auth::info(&self, &caller)?;
                auth::check_delete(&self, &info, &r)?;
                let mut resp = self
                    .writer(&info)
                    .delete_range(r)
                    .await
                    .map_err(errors::engine)?;
                self.fill(&mut resp.header).await;
                Ok(encode(&resp))
            }
            "/etcdserverpb.KV/Txn" => {
                self.check_size(&msg)?;
                let r: pb::TxnRequest = decode(msg)?;
                validate::txn(&r, self.max_txn_ops)?;
                if self.alarms.nospace() && validate::has_put(&r) {
                    return Err(errors::no_space());
                }
                if ferrokv_shards::kv::is_read_only(&r) {
                    let checked = r.clone();
                    let mut resp = self.engine.txn(r).await.map_err(errors::engine)?;
                    // As a range: after the read's ReadIndex.
                    let info = auth::info(&self, &caller)?;
                    auth::check_txn(&self, &info, &checked)?;
                    self.fill(&mut resp.header).await;
                    return Ok(encode(&resp));
                }
                let info = auth::info(&self, &caller)?;
                auth::check_txn(&self, &info, &r)?;
                let mut resp = self.writer(&info).txn(r).await.map_err(errors::engine)?;
                self.fill(&mut resp.header).await;
                Ok(encode(&resp))
            }
            "/etcdserverpb.KV/Compact" => {
                let r: pb::CompactionRequest = decode(msg)?;
                let rev = self
                    .engine
                    .compact(r.revision)
                    .await
                    .map_err(errors::engine)?;
                Ok(encode(&pb::CompactionResponse {
                    header: self.header(rev).await,
                }))
            }
            "/etcdserverpb.Maintenance/Status" => {
                let _: pb::StatusRequest = decode(msg)?;
                Ok(encode(&self.status().await?))
            }
            "/etcdserverpb.Cluster/MemberList" => {
                let _: pb::MemberListRequest = decode(msg)?;
                // etcd's cluster service headers carry no revision.
                Ok(encode(&pb::MemberListResponse {
                    header: self.header(0).await,
                    members: self.member_list(&self.engine.members()),
                }))
            }
            "/etcdserverpb.Cluster/MemberAdd" => {
                let r: pb::MemberAddRequest = decode(msg)?;
                let change = self.change_members(members::add_request(&r)).await?;
                let list = self.member_list(&change);
                Ok(encode(&pb::MemberAddResponse {
                    header: self.header(0).await,
                    member: list.iter().find(|m| m.id == change.id).cloned(),
                    members: list,
                }))
            }
            "/etcdserverpb.Cluster/MemberRemove" => {
                let r: pb::MemberRemoveRequest = decode(msg)?;
                let change = self.change_members(members::remove_request(&r)).await?;
                Ok(encode(&pb::MemberRemoveResponse {
                    header: self.header(0).await,
                    members: self.member_list(&change),
                }))
            }
            "/etcdserverpb.Cluster/MemberUpdate" => {
                let r: pb::MemberUpdateRequest = decode(msg)?;
                let change = self.change_members(members::update_request(&r)).await?;
                Ok(encode(&pb::MemberUpdateResponse {
                    header: self.header(0).await,
                    members: self.member_list(&change),
                }))
            }
            "/etcdserverpb.Cluster/MemberPromote" => {
                let r: pb::MemberPromoteRequest = decode(msg)?;
                let change = self.change_members(members::promote_request(&r)).await?;
                Ok(encode(&pb::MemberPromoteResponse {
                    header: self.header(0).await,
                    members: self.member_list(&change),
                }))
            }
            "/etcdserverpb.Maintenance/Alarm" => {
                use pb::alarm_request::AlarmAction;
                let r: pb::AlarmRequest = decode(msg)?;
                auth::raw_info(&self, &caller)?;
                let nospace = pb::AlarmType::Nospace as i32;
                let member_id = self.membership.local_id();
                let mine = r.member_id == 0 || r.member_id == member_id;
                match AlarmAction::try_from(r.action) {
                    Ok(AlarmAction::Activate) if mine && r.alarm == nospace => {
                        self.alarms
                            .nospace
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(AlarmAction::Deactivate) if mine && r.alarm == nospace => {
                        let was = self
                            .alarms
                            .nospace
                            .swap(false, std::sync::atomic::Ordering::Relaxed);
                        log::info!("alarm disarm requested: NOSPACE (was active: {was})");
                    }
                    _ => {}
                }
                let alarms = if self.alarms.nospace() && (r.alarm == 0 || r.alarm == nospace) {
                    vec![pb::AlarmMember {
                        member_id,
                        alarm: nospace,
                    }]
                } else {
                    Vec::new()
                };
                // etcd 3.4's Alarm answer carries no header (3.5's does);
                // `etcdctl alarm list -w json` prints `{}` with no alarm.
                Ok(encode(&pb::AlarmResponse {
                    header: None,
                    alarms,
                }))
            }
            "/etcdserverpb.Maintenance/Defragment" => {
                auth::maintenance_admin(&self, &caller)?;
                Ok(encode(&backup::defragment(&self, msg).await?))
            }
            "/etcdserverpb.Maintenance/Hash" => {
                auth::maintenance_admin(&self, &caller)?;
                Ok(encode(&backup::hash(&self, msg).await?))
            }
            "/etcdserverpb.Maintenance/HashKV" => {
                auth::maintenance_admin(&self, &caller)?;
                Ok(encode(&backup::hash_kv(&self, msg).await?))
            }
            "/etcdserverpb.Maintenance/MoveLeader" => {
                Ok(encode(&backup::move_leader(&self, msg).await?))
            }
            "/etcdserverpb.Lease/LeaseGrant" => Ok(encode(&lease::grant(&self, msg).await?)),
            "/etcdserverpb.Lease/LeaseRevoke" => {
                let r: pb::LeaseRevokeRequest = decode(msg.clone())?;
                let info = auth::info(&self, &caller)?;
                auth::check_lease_keys(&self, &info, r.id).await?;
                Ok(encode(&lease::revoke(&self, msg).await?))
            }
            // etcd 3.4 checks nothing here (3.5 wants read on the keys).
            "/etcdserverpb.Lease/LeaseTimeToLive" => {
                Ok(encode(&lease::time_to_live(&self, msg).await?))
            }
            "/etcdserverpb.Lease/LeaseLeases" => Ok(encode(&lease::leases(&self, msg).await?)),
            "/v3lockpb.Lock/Lock" => {
                let r: ferrokv_wire::pb::v3lockpb::LockRequest = decode(msg.clone())?;
                auth::check_prefix(&self, &caller, &r.name, false)?;
                Ok(encode(&lock::lock(self.clone(), msg).await?))
            }
            "/v3lockpb.Lock/Unlock" => {
                let r: ferrokv_wire::pb::v3lockpb::UnlockRequest = decode(msg.clone())?;
                let info = auth::info(&self, &caller)?;
                auth::check_delete(
                    &self,
                    &info,
                    &pb::DeleteRangeRequest {
                        key: r.key.clone(),
                        ..Default::default()
                    },
                )?;
                Ok(encode(&lock::unlock(&self, msg).await?))
            }
            "/v3electionpb.Election/Campaign" => {
                let r: epb::CampaignRequest = decode(msg.clone())?;
                auth::check_prefix(&self, &caller, &r.name, false)?;
                Ok(encode(&election::campaign(self.clone(), msg).await?))
            }
            "/v3electionpb.Election/Proclaim" => {
                let r: epb::ProclaimRequest = decode(msg.clone())?;
                let name = r.leader.map(|l| l.name).unwrap_or_default();
                auth::check_prefix(&self, &caller, &name, false)?;
                Ok(encode(&election::proclaim(&self, msg).await?))
            }
            "/v3electionpb.Election/Leader" => {
                let r: epb::LeaderRequest = decode(msg.clone())?;
                auth::check_prefix(&self, &caller, &r.name, true)?;
                Ok(encode(&election::leader(&self, msg).await?))
            }
            "/v3electionpb.Election/Resign" => {
                let r: epb::ResignRequest = decode(msg.clone())?;
                let name = r.leader.map(|l| l.name).unwrap_or_default();
                auth::check_prefix(&self, &caller, &name, false)?;
                Ok(encode(&election::resign(&self, msg).await?))
            }
            other => Err(errors::not_implemented(other)),
        }
    }

    async fn status(&self) -> Result<pb::StatusResponse, Status> {
        let shards = self.engine.status().await.map_err(errors::engine)?;
        let rev = self.engine.sequencer().visible();
        let db: u64 = shards.iter().map(|s| s.db_size_bytes).sum();
        Ok(pb::StatusResponse {
            header: self.header(rev).await,
            version: ETCD_VERSION.to_string(),
            db_size: db as i64,
            leader: self.engine.leadership().cluster_leader(),
            raft_index: shards.iter().map(|s| s.raft_index).sum(),
            raft_term: shards.iter().map(|s| s.raft_term).max().unwrap_or(0),
            raft_applied_index: shards.iter().map(|s| s.applied_index).sum(),
            errors: if self.alarms.nospace() {
                vec![format!(
                    "memberID:{} alarm:NOSPACE ",
                    self.membership.local_id()
                )]
            } else {
                Vec::new()
            },
            db_size_in_use: db as i64,
            is_learner: members::is_learner(),
        })
    }

    async fn metrics(&self) -> String {
        let mut out = String::new();
        let shards = self.engine.status().await.unwrap_or_default();
        let has_leader = self.engine.leadership().cluster_leader() != 0;
        let leader = self.engine.leadership().serving();
        let gauge = |out: &mut String, name: &str, help: &str, v: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        };
        gauge(
            &mut out,
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            (has_leader as u8).to_string(),
        );
        gauge(
            &mut out,
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            (leader as u8).to_string(),
        );
        let counter = |out: &mut String, name: &str, help: &str, v: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        };
        counter(
            &mut out,
            "etcd_server_leader_changes_seen_total",
            "The number of leader changes seen.",
            self.engine.leadership().leader_changes().to_string(),
        );
        gauge(
            &mut out,
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed (summed over the shard groups).",
            shards.iter().map(|s| s.raft_index).sum::<u64>().to_string(),
        );
        gauge(
            &mut out,
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied (summed over the shard groups).",
            shards
                .iter()
                .map(|s| s.applied_index)
                .sum::<u64>()
                .to_string(),
        );
        gauge(
            &mut out,
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            shards
                .iter()
                .map(|s| s.proposals_pending)
                .sum::<usize>()
                .to_string(),
        );
        counter(
            &mut out,
            "etcd_server_proposals_failed_total",
            "The total number of failed proposals seen.",
            shards
                .iter()
                .map(|s| s.proposals_failed)
                .sum::<u64>()
                .to_string(),
        );
        let peers = self.engine.peers().map(|p| p.stats()).unwrap_or_default();
        // One series per peer, labelled as etcd labels them.
        let per_peer = |out: &mut String,
                        name: &str,
                        help: &str,
                        kind: &str,
                        label: &str,
                        rows: Vec<(u64, String)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (id, v) in rows {
                out.push_str(&format!("{name}{{{label}=\"{id:x}\"}} {v}\n"));
            }
        };
        per_peer(
            &mut out,
            "etcd_network_peer_sent_bytes_total",
            "The total number of bytes sent to peers.",
            "counter",
            "To",
            peers
                .iter()
                .map(|p| (p.member_id, p.sent_bytes.to_string()))
                .collect(),
        );
        per_peer(
            &mut out,
            "etcd_network_peer_received_bytes_total",
            "The total number of bytes received from peers.",
            "counter",
            "From",
            peers
                .iter()
                .map(|p| (p.member_id, p.received_bytes.to_string()))
                .collect(),
        );
        per_peer(
            &mut out,
            "etcd_network_peer_round_trip_time_seconds",
            "Round-Trip-Time between peers (smoothed, as a gauge here).",
            "gauge",
            "To",
            peers
                .iter()
                .filter_map(|p| {
                    p.round_trip
                        .map(|r| (p.member_id, r.as_secs_f64().to_string()))
                })
                .collect(),
        );
        counter(
            &mut out,
            "etcd_server_heartbeat_send_failures_total",
            "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
            peers
                .iter()
                .map(|p| p.heartbeat_send_failures)
                .sum::<u64>()
                .to_string(),
        );
        out.push_str(&format!(
            "# HELP etcd_server_id Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.\n\
             # TYPE etcd_server_id gauge\n\
             etcd_server_id{{server_id=\"{:x}\"}} 1\n",
            self.membership.local_id()
        ));
        gauge(
            &mut out,
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
            self.engine.sequencer().visible().to_string(),
        );
        gauge(
            &mut out,
            "etcd_debugging_mvcc_compact_revision",
            "The revision of the last compaction in store.",
            self.engine.sequencer().compact_revision().to_string(),
        );
        let db: u64 = shards.iter().map(|s| s.db_size_bytes).sum();
        gauge(
            &mut out,
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            db.to_string(),
        );
        let keys: usize = shards.iter().map(|s| s.keys).sum();
        gauge(
            &mut out,
            "etcd_debugging_mvcc_keys_total",
            "Total number of keys.",
            keys.to_string(),
        );
        gauge(
            &mut out,
            "ferrokv_shards",
            "Number of keyspace shards (one pinned core each).",
            shards.len().to_string(),
        );
        gauge(
            &mut out,
            "etcd_debugging_mvcc_watcher_total",
            "Total number of watchers.",
            WATCHERS_TOTAL
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string(),
        );
        gauge(
            &mut out,
            "etcd_debugging_mvcc_slow_watcher_total",
            "Total number of unsynced slow watchers.",
            WATCHERS_SLOW_TOTAL
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string(),
        );
        out.push_str(&WalMetrics::render_prometheus(&[&self.wal_metrics]));
        out.push_str(&crate::process_metrics::render());
        out
    }
}

/// etcd's `isRPCSupportedForLearner`: a learner answers Status and
/// serializable ranges; everything else goes to a voting member.
fn learner_serves(method: &str, msg: &Bytes) -> bool {
    match method {
        "/etcdserverpb.Maintenance/Status" => true,
        "/etcdserverpb.KV/Range" => {
            <pb::RangeRequest as Message>::decode(msg.clone()).is_ok_and(|r| r.serializable)
        }
        _ => false,
    }
}

impl Handler for Service {
    fn unary(
        self: Rc<Self>,
        method: String,
        caller: Caller,
        msg: Bytes,
    ) -> LocalBoxFuture<Result<Bytes, Status>> {
        Box::pin(async move { self.call(&method, caller, msg).await })
    }

    fn is_streaming(&self, method: &str) -> bool {
        matches!(
            method,
            "/etcdserverpb.Watch/Watch"
                | "/etcdserverpb.Lease/LeaseKeepAlive"
                | "/etcdserverpb.Maintenance/Snapshot"
                | "/v3electionpb.Election/Observe"
        )
    }

    fn streaming(
        self: Rc<Self>,
        method: String,
        caller: Caller,
        requests: async_channel::Receiver<Bytes>,
        sink: ResponseSink,
    ) -> LocalBoxFuture<Status> {
        Box::pin(async move {
            if members::is_learner() && method != "/etcdserverpb.Maintenance/Snapshot" {
                // etcd: a learner serves no stream but Snapshot.
                return errors::not_for_learner();
            }
            if caller.require_leader {
                if !self.has_leader() {
                    return errors::no_leader();
                }
                let monitor = self.clone().leader_lost();
                let call = self.serve_stream(method, caller, requests, sink);
                return futures_lite::future::or(call, monitor).await;
            }
            self.serve_stream(method, caller, requests, sink).await
        })
    }

    fn http(
        self: Rc<Self>,
        method: Method,
        path: String,
        _body: Bytes,
    ) -> LocalBoxFuture<Option<HttpReply>> {
        Box::pin(async move {
            let json = "application/json";
            Some(match (method, path.as_str()) {
                (Method::GET, "/health") | (Method::GET, "/readyz") | (Method::GET, "/livez") => {
                    // Healthy means a read goes through the engine now.
                    let ok = self.engine.status().await.is_ok()
                        && self.engine.leadership().cluster_leader() != 0;
                    HttpReply {
                        status: if ok { 200 } else { 503 },
                        content_type: json,
                        body: Bytes::from(if ok { "{\"health\":\"true\"}" } else { "{\"health\":\"false\"}" }),
                    }
                }
                (Method::GET, "/version") => HttpReply {
                    status: 200,
                    content_type: json,
                    body: Bytes::from(format!(
                        "{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"{ETCD_CLUSTER_VERSION}\"}}"
                    )),
                },
                (Method::GET, "/metrics") => HttpReply {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body: Bytes::from(self.metrics().await),
                },
                _ => return None,
            })
        })
    }

    fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }
}

impl Service {
    /// etcd's `monitorLeader`: once its member has known no leader for
    /// three election timeouts in a row (checked each election timeout),
    /// a stream that required one ends with `etcdserver: no leader`.
    async fn leader_lost(self: Rc<Self>) -> Status {
        let mut without = 0;
        loop {
            glommio::timer::sleep(self.election_timeout).await;
            without = if self.has_leader() { 0 } else { without + 1 };
            if without >= 3 {
                return errors::no_leader();
            }
        }
    }

    async fn serve_stream(
        self: Rc<Self>,
        method: String,
        caller: Caller,
        requests: async_channel::Receiver<Bytes>,
        sink: ResponseSink,
    ) -> Status {
        match method.as_str() {
            "/etcdserverpb.Watch/Watch" => crate::watch::serve(self, caller, requests, sink).await,
            "/etcdserverpb.Lease/LeaseKeepAlive" => lease::keep_alive(self, requests, sink).await,
            "/etcdserverpb.Maintenance/Snapshot" => {
                if let Err(status) = auth::maintenance_admin(&self, &caller) {
                    return status;
                }
                backup::snapshot(self, requests, sink).await
            }
            "/v3electionpb.Election/Observe" => {
                // The name is in the stream's first request: observe
                // checks it (see `election::observe`).
                election::observe(self, caller, requests, sink).await
            }
            _ => errors::not_implemented(&method),
        }
    }
}
