//! The Cluster service's member changes (etcd's MemberAdd, MemberRemove,
//! MemberUpdate, MemberPromote): etcd's checks and records, as the
//! engine's [`Planner`]; and what a change in force does on this member
//! (the peer set, the answer to a joining member, leaving the cluster).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ferrokv::cluster::{self, Member, Membership};
use ferrokv_raft::peer::PeerHandle;
use ferrokv_shards::membership::ConfChangeType;
use ferrokv_shards::membership::{self as ms, Change, ClusterView, Planned, Planner};
use ferrokv_shards::Error;
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::Message;
use serde::{Deserialize, Serialize};

const ADD: u8 = 1;
const REMOVE: u8 = 2;
const UPDATE: u8 = 3;
const PROMOTE: u8 = 4;

/// etcd 3.4 allows one learner at a time (`maxLearners`).
const LEARNERS_MAX: usize = 1;

/// A change request as the engine carries it to the leader: a kind byte,
/// then the gRPC request.
pub fn add_request(r: &pb::MemberAddRequest) -> Vec<u8> {
    tagged(ADD, r)
}
pub fn remove_request(r: &pb::MemberRemoveRequest) -> Vec<u8> {
    tagged(REMOVE, r)
}
pub fn update_request(r: &pb::MemberUpdateRequest) -> Vec<u8> {
    tagged(UPDATE, r)
}
pub fn promote_request(r: &pb::MemberPromoteRequest) -> Vec<u8> {
    tagged(PROMOTE, r)
}

fn tagged<M: Message>(kind: u8, r: &M) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&r.encode_to_vec());
    out
}

/// A member list as a change carries it: the members, and the ids ever
/// removed (etcd keeps them: a removed member is refused for good).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberList {
    pub members: Vec<Member>,
    #[serde(default)]
    pub removed: Vec<String>,
}

impl MemberList {
    pub fn removed_ids(&self) -> BTreeSet<u64> {
        self.removed
            .iter()
            .filter_map(|s| parse_hex(s).ok())
            .collect()
    }
}

pub fn encode_list(list: &MemberList) -> Vec<u8> {
    serde_json::to_vec(list).unwrap_or_default()
}

/// A list as encoded by [`encode_list`] (or, before removed ids were kept,
/// the bare array of members).
pub fn decode_list(b: &[u8]) -> Result<MemberList, String> {
    serde_json::from_slice(b)
        .or_else(|_| {
            serde_json::from_slice::<Vec<Member>>(b).map(|members| MemberList {
                members,
                removed: Vec::new(),
            })
        })
        .map_err(|e| format!("member list: {e}"))
}

/// What a running member tells one that joins (`--initial-cluster-state
/// existing`), over the peer port.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct JoinAnswer {
    pub cluster_id: String,
    /// The voters every group's log starts from (the bootstrap members).
    pub bootstrap_voters: Vec<String>,
    /// The version of the member list below.
    pub version: u64,
    pub members: Vec<Member>,
    #[serde(default)]
    pub removed: Vec<String>,
}

fn hex(id: u64) -> String {
    format!("{id:x}")
}

pub fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s, 16).map_err(|e| format!("member id {s:?}: {e}"))
}

/// The member list to show: `change`'s, as recorded.
pub fn members_of(change: &Change) -> Vec<Member> {
    list_of(change).members
}

pub fn list_of(change: &Change) -> MemberList {
    decode_list(&change.members).unwrap_or_else(|e| {
        log::error!("membership: change {}: {e}", change.version);
        MemberList::default()
    })
}

/// Whether this member is a learner now (one member per process: the
/// gRPC services read it on every request, so it is kept at hand).
static LEARNER: AtomicBool = AtomicBool::new(false);

pub fn is_learner() -> bool {
    LEARNER.load(Ordering::Relaxed)
}

fn note_role(members: &[Member], me: u64) {
    let learner = members.iter().any(|m| m.id == me && m.is_learner);
    LEARNER.store(learner, Ordering::Relaxed);
}

fn refuse(msg: &str) -> Error {
    Error::Membership(msg.to_string())
}

/// The server's side of membership changes on this member.
pub struct Members {
    membership: Arc<Membership>,
    /// `--peer-*` TLS is needed to dial https peer URLs.
    peer_tls: bool,
}

impl Members {
    pub fn new(membership: Arc<Membership>, peer_tls: bool) -> Members {
        note_role(membership.members(), membership.local_id());
        Members {
            membership,
            peer_tls,
        }
    }

    fn answer(&self, change: &Change) -> Vec<u8> {
        let list = list_of(change);
        let a = JoinAnswer {
            cluster_id: hex(self.membership.cluster_id()),
            bootstrap_voters: self
                .membership
                .bootstrap_voters()
                .iter()
                .map(|v| hex(*v))
                .collect(),
            version: change.version,
            members: list.members,
            removed: list.removed,
        };
        serde_json::to_vec(&a).unwrap_or_default()
    }

    /// The peer set follows every list some group of this member has
    /// applied (a group that has a new voter must reach it before the
    /// others have it too): members dialed, removed ones dropped and
    /// refused from now on, changed URLs redialed.
    fn follow(&self, peers: &PeerHandle, lists: &[Change]) {
        let me = self.membership.local_id();
        let mut newest: BTreeMap<u64, Member> = BTreeMap::new();
        let mut removed = BTreeSet::new();
        for c in lists {
            let list = list_of(c);
            removed.extend(list.removed_ids());
            for m in list.members {
                newest.insert(m.id, m);
            }
        }
        for id in &removed {
            newest.remove(id);
            peers.remove_peer(*id);
        }
        for m in newest.values().filter(|m| m.id != me) {
            self.dial(peers, m);
        }
        for p in peers.peers() {
            if !newest.contains_key(&p.member_id) {
                peers.remove_peer(p.member_id);
            }
        }
    }

    /// Adds (or updates) a peer. Host names are resolved off this core, and
    /// again until they resolve (a new member's name may exist only once it
    /// runs); IP URLs at once.
    fn dial(&self, peers: &PeerHandle, m: &Member) {
        let numeric = m.peer_urls.iter().all(|u| {
            url::Url::parse(u).is_ok_and(|p| {
                matches!(
                    p.host(),
                    Some(url::Host::Ipv4(_)) | Some(url::Host::Ipv6(_))
                )
            })
        });
        let add = {
            let (peers, m, tls) = (peers.clone(), m.clone(), self.peer_tls);
            move || match crate::peer_addrs_of(&m.peer_urls, tls) {
                Ok(addrs) => {
                    if let Err(e) = peers.add_peer(m.id, addrs) {
                        log::warn!("membership: cannot add member {:x}: {e}", m.id);
                    }
                    true
                }
                Err(e) => {
                    log::warn!("membership: member {:x}: {e}", m.id);
                    false
                }
            }
        };
        if numeric {
            add();
            return;
        }
        // `thread::spawn` panics when the OS refuses a thread (a limit on
        // threads, memory): this runs on a core, so refuse only the dial.
        let resolver = std::thread::Builder::new()
            .name("ferrokv-resolve".into())
            .spawn(move || {
                for _ in 0..DIAL_RESOLVE_TRIES {
                    if add() {
                        return;
                    }
                    std::thread::sleep(DIAL_RESOLVE_RETRY);
                }
            });
        if let Err(e) = resolver {
            log::warn!(
                "membership: member {:x}: cannot start a thread to resolve its peer URLs: {e}",
                m.id
            );
        }
    }
}

/// How often and how long a member's peer host name is tried.
const DIAL_RESOLVE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);
const DIAL_RESOLVE_TRIES: u32 = 300;

impl Planner for Members {
    fn plan(&self, current: &[u8], request: &[u8], view: &ClusterView) -> Result<Planned, Error> {
        let list = decode_list(current).map_err(Error::Internal)?;
        let removed = list.removed_ids();
        let mut members = list.members;
        // etcd's publish, at the next change: what members told in their
        // handshakes goes into the record (and counts them as started).
        for m in members.iter_mut() {
            if let Some((name, client_urls)) = view.names.get(&m.id) {
                if !name.is_empty() {
                    m.name = name.clone();
                    m.client_urls = client_urls.clone();
                }
            }
        }
        let mut view = view.clone();
        view.started
            .extend(members.iter().filter(|m| !m.name.is_empty()).map(|m| m.id));
        let (&kind, body) = request
            .split_first()
            .ok_or_else(|| Error::Internal("empty member request".into()))?;
        let step = plan_step(members, &removed, kind, body, &view)?;
        let mut removed: Vec<u64> = removed.into_iter().collect();
        if step.conf == ConfChangeType::RemoveNode {
            removed.push(step.id);
        }
        let after = MemberList {
            members: step.members,
            removed: removed.iter().map(|id| hex(*id)).collect(),
        };
        Ok(Planned {
            conf: step.conf,
            id: step.id,
            members: encode_list(&after),
            // etcd lets a leader remove itself or move its own URLs; here
            // it hands over first (see `Planned::not_by_leader`).
            not_by_leader: step.id == view.me && matches!(kind, REMOVE | UPDATE),
        })
    }

    fn changed(&self, completed: &Change, lists: &[Change], peers: Option<&PeerHandle>) {
        let members = members_of(completed);
        let me = self.membership.local_id();
        note_role(&members, me);
        if let Some(p) = peers {
            self.follow(p, lists);
            let _ = p.set_members(self.answer(completed));
        }
        if !members.iter().any(|m| m.id == me) && !members.is_empty() {
            crate::leave_cluster("the member has been permanently removed from the cluster");
        }
    }
}

/// What one request does to the member list (before the removed ids and
/// the encoding, which `Members::plan` adds).
#[derive(Debug)]
struct Step {
    conf: ConfChangeType,
    id: u64,
    members: Vec<Member>,
}

fn plan_step(
    members: Vec<Member>,
    removed: &BTreeSet<u64>,
    kind: u8,
    body: &[u8],
    view: &ClusterView,
) -> Result<Step, Error> {
    let bad = |e: prost::DecodeError| Error::Internal(format!("member request: {e}"));
    match kind {
        ADD => plan_add(
            members,
            removed,
            pb::MemberAddRequest::decode(body).map_err(bad)?,
            view,
        ),
        REMOVE => plan_remove(
            members,
            pb::MemberRemoveRequest::decode(body).map_err(bad)?.id,
            view,
        ),
        UPDATE => plan_update(members, pb::MemberUpdateRequest::decode(body).map_err(bad)?),
        PROMOTE => plan_promote(
            members,
            pb::MemberPromoteRequest::decode(body).map_err(bad)?.id,
            view,
        ),
        k => Err(Error::Internal(format!("unknown member request {k}"))),
    }
}

fn voters(members: &[Member]) -> impl Iterator<Item = &Member> {
    members.iter().filter(|m| !m.is_learner)
}

/// etcd's `isConnectedFullySince`: every voter is connected to the leader.
fn check_healthy(members: &[Member], view: &ClusterView) -> Result<(), Error> {
    if voters(members).all(|m| view.active.contains(&m.id)) {
        Ok(())
    } else {
        Err(refuse(ms::UNHEALTHY))
    }
}

fn normalized_urls(urls: &[String]) -> Result<Vec<String>, Error> {
    if urls.is_empty() {
        return Err(refuse(ms::BAD_URLS));
    }
    cluster::normalize_urls(urls).map_err(|_| refuse(ms::BAD_URLS))
}

fn url_taken(members: &[Member], urls: &[String], except: u64) -> bool {
    members
        .iter()
        .filter(|m| m.id != except)
        .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
}

fn plan_add(
    mut members: Vec<Member>,
    removed: &BTreeSet<u64>,
    r: pb::MemberAddRequest,
    view: &ClusterView,
) -> Result<Step, Error> {
    let urls = normalized_urls(&r.peer_ur_ls)?;
    if !r.is_learner {
        // etcd's `IsReadyToAddVotingMember`: the started voters must be a
        // quorum of the cluster the new voter makes.
        let n = voters(&members).count() + 1;
        let started = voters(&members)
            .filter(|m| view.started.contains(&m.id))
            .count();
        let restore_case = started == 1 && n == 2;
        if !restore_case && started < n / 2 + 1 {
            return Err(refuse(ms::NOT_ENOUGH_STARTED));
        }
    }
    check_healthy(&members, view)?;
    // etcd names a new member by its URLs and the time (`NewMember` with
    // an empty cluster name).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The same URLs again within a second would get a removed member's
    // id, which stays refused: take the next second's.
    let id = (now..now + 60)
        .map(|t| cluster::member_id(&urls, &t.to_string()))
        .find(|id| !removed.contains(id) && *id != 0)
        .ok_or_else(|| refuse(ms::MEMBER_EXISTS))?;
    if members.iter().any(|m| m.id == id) {
        return Err(refuse(ms::MEMBER_EXISTS));
    }
    if url_taken(&members, &urls, 0) {
        return Err(refuse(ms::PEER_URL_EXISTS));
    }
    if r.is_learner && members.iter().filter(|m| m.is_learner).count() >= LEARNERS_MAX {
        return Err(refuse(ms::TOO_MANY_LEARNERS));
    }
    members.push(Member {
        id,
        name: String::new(),
        peer_urls: urls,
        client_urls: Vec::new(),
        is_learner: r.is_learner,
    });
    members.sort_by_key(|m| m.id);
    Ok(Step {
        conf: if r.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        },
        id,
        members,
    })
}

fn plan_remove(mut members: Vec<Member>, id: u64, view: &ClusterView) -> Result<Step, Error> {
    let learner = members.iter().any(|m| m.id == id && m.is_learner);
    if !learner {
        // etcd's `IsReadyToRemoveVotingMember`: the started voters left
        // are a quorum of what is left.
        let rest: Vec<&Member> = voters(&members).filter(|m| m.id != id).collect();
        let started = rest.iter().filter(|m| view.started.contains(&m.id)).count();
        if started < rest.len() / 2 + 1 {
            return Err(refuse(ms::NOT_ENOUGH_STARTED));
        }
        // A member that is down is safe to remove; otherwise the members
        // up after it must still be a quorum.
        if id == view.me || view.active.contains(&id) {
            let n = voters(&members).count();
            let active = voters(&members)
                .filter(|m| view.active.contains(&m.id))
                .count();
            if active - 1 < 1 + (n - 1) / 2 {
                return Err(refuse(ms::UNHEALTHY));
            }
        }
    }
    let Some(pos) = members.iter().position(|m| m.id == id) else {
        return Err(refuse(ms::MEMBER_NOT_FOUND));
    };
    members.remove(pos);
    Ok(Step {
        conf: ConfChangeType::RemoveNode,
        id,
        members,
    })
}

fn plan_update(mut members: Vec<Member>, r: pb::MemberUpdateRequest) -> Result<Step, Error> {
    let urls = normalized_urls(&r.peer_ur_ls)?;
    let Some(pos) = members.iter().position(|m| m.id == r.id) else {
        return Err(refuse(ms::MEMBER_NOT_FOUND));
    };
    if url_taken(&members, &urls, r.id) {
        return Err(refuse(ms::PEER_URL_EXISTS));
    }
    let m = &mut members[pos];
    m.peer_urls = urls;
    // Raft's part is a no-op: the member keeps its place in every group.
    let conf = if m.is_learner {
        ConfChangeType::AddLearnerNode
    } else {
        ConfChangeType::AddNode
    };
    Ok(Step {
        conf,
        id: r.id,
        members,
    })
}

fn plan_promote(mut members: Vec<Member>, id: u64, view: &ClusterView) -> Result<Step, Error> {
    let learner = members.iter().any(|m| m.id == id && m.is_learner);
    if learner && !view.in_sync.contains(&id) {
        return Err(refuse(ms::LEARNER_NOT_READY));
    }
    // etcd's `IsReadyToPromoteMember`: the learner counted as started.
    let n = voters(&members).count() + 1;
    let started = voters(&members)
        .filter(|m| view.started.contains(&m.id))
        .count()
        + 1;
    if started < n / 2 + 1 {
        return Err(refuse(ms::NOT_ENOUGH_STARTED));
    }
    let Some(m) = members.iter_mut().find(|m| m.id == id) else {
        return Err(refuse(ms::MEMBER_NOT_FOUND));
    };
    if !m.is_learner {
        return Err(refuse(ms::NOT_LEARNER));
    }
    m.is_learner = false;
    Ok(Step {
        conf: ConfChangeType::AddNode,
        id,
        members,
    })
}

/// etcd's `ValidateClusterAndAssignIDs` for a member joining with
/// `--initial-cluster-state existing`: the running cluster's members must
/// be the ones `--initial-cluster` names (by peer URLs), and this member
/// one of them, added but not yet started.
pub fn join(
    answer: &JoinAnswer,
    urls_map: &cluster::UrlsMap,
    name: &str,
) -> Result<Membership, String> {
    let cluster_id = parse_hex(&answer.cluster_id)?;
    let describe = || {
        let ms: Vec<String> = answer
            .members
            .iter()
            .map(|m| format!("{:x}={}", m.id, m.peer_urls.join(",")))
            .collect();
        format!("{{ClusterID:{cluster_id:x} Members:[{}]}}", ms.join(" "))
    };
    if answer.members.len() != urls_map.0.len() {
        return Err(format!(
            "error validating peerURLs {}: member count is unequal",
            describe()
        ));
    }
    let mut local_id = None;
    for (n, urls) in &urls_map.0 {
        let mut want = urls.clone();
        want.sort();
        let found = answer.members.iter().find(|m| {
            let mut have = m.peer_urls.clone();
            have.sort();
            have == want
        });
        match found {
            Some(m) if n == name => local_id = Some(m.id),
            Some(_) => {}
            None => {
                return Err(format!(
                    "error validating peerURLs {}: PeerURLs: no match found for existing member ({n}={})",
                    describe(),
                    urls.join(",")
                ))
            }
        }
    }
    let local_id = local_id.ok_or_else(|| {
        format!("couldn't find local name {name:?} in the initial cluster configuration")
    })?;
    let voters = answer
        .bootstrap_voters
        .iter()
        .map(|v| parse_hex(v))
        .collect::<Result<Vec<u64>, String>>()?;
    let joined = cluster::Joined {
        version: answer.version,
        removed: answer.removed.clone(),
    };
    Membership::joined(cluster_id, local_id, answer.members.clone(), voters, joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, learner: bool, url: &str) -> Member {
        Member {
            id,
            name: format!("m{id}"),
            peer_urls: vec![url.to_string()],
            client_urls: Vec::new(),
            is_learner: learner,
        }
    }

    fn three() -> Vec<Member> {
        vec![
            m(1, false, "http://127.0.0.1:2380"),
            m(2, false, "http://127.0.0.2:2380"),
            m(3, false, "http://127.0.0.3:2380"),
        ]
    }

    fn all_up() -> ClusterView {
        ClusterView {
            me: 1,
            active: [1, 2, 3].into(),
            started: [1, 2, 3].into(),
            in_sync: BTreeSet::new(),
            names: BTreeMap::new(),
        }
    }

    fn add(url: &str, learner: bool) -> pb::MemberAddRequest {
        pb::MemberAddRequest {
            peer_ur_ls: vec![url.to_string()],
            is_learner: learner,
        }
    }

    fn msg(r: Result<Step, Error>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(p) => format!("planned {:?}", p.conf),
        }
    }

    #[test]
    fn add_checks_as_etcd_does() {
        let p = plan_add(
            three(),
            &BTreeSet::new(),
            add("http://127.0.0.4:2380", true),
            &all_up(),
        )
        .unwrap();
        assert_eq!(p.conf, ConfChangeType::AddLearnerNode);
        let after = p.members.clone();
        assert_eq!(after.len(), 4);
        assert!(after
            .iter()
            .any(|x| x.id == p.id && x.is_learner && x.name.is_empty()));
        assert_eq!(
            msg(plan_add(
                three(),
                &BTreeSet::new(),
                add("http://127.0.0.2:2380", false),
                &all_up()
            )),
            ms::PEER_URL_EXISTS
        );
        assert_eq!(
            msg(plan_add(
                after.clone(),
                &BTreeSet::new(),
                add("http://127.0.0.5:2380", true),
                &all_up()
            )),
            ms::TOO_MANY_LEARNERS
        );
        assert_eq!(
            msg(plan_add(
                three(),
                &BTreeSet::new(),
                add("not a url", false),
                &all_up()
            )),
            ms::BAD_URLS
        );
        let mut down = all_up();
        down.active.remove(&3);
        assert_eq!(
            msg(plan_add(
                three(),
                &BTreeSet::new(),
                add("http://127.0.0.4:2380", true),
                &down
            )),
            ms::UNHEALTHY
        );
        // One voter added and never started: a fifth still has a quorum
        // of started ones; with two unstarted, a sixth has not.
        let mut more = three();
        more.push(m(4, false, "http://127.0.0.4:2380"));
        let mut view = all_up();
        view.active.insert(4);
        assert!(plan_add(
            more.clone(),
            &BTreeSet::new(),
            add("http://127.0.0.5:2380", false),
            &view
        )
        .is_ok());
        more.push(m(5, false, "http://127.0.0.5:2380"));
        view.active.insert(5);
        assert_eq!(
            msg(plan_add(
                more,
                &BTreeSet::new(),
                add("http://127.0.0.6:2380", false),
                &view
            )),
            ms::NOT_ENOUGH_STARTED
        );
    }

    #[test]
    fn remove_update_promote_check_as_etcd_does() {
        assert_eq!(
            msg(plan_remove(three(), 9, &all_up())),
            ms::MEMBER_NOT_FOUND
        );
        let p = plan_remove(three(), 3, &all_up()).unwrap();
        assert_eq!(p.members.len(), 2);
        // With one voter down, removing another one that is up leaves no
        // quorum up.
        let mut down = all_up();
        down.active.remove(&3);
        assert_eq!(msg(plan_remove(three(), 2, &down)), ms::UNHEALTHY);
        // The one that is down may go.
        assert!(plan_remove(three(), 3, &down).is_ok());

        let r = pb::MemberUpdateRequest {
            id: 2,
            peer_ur_ls: vec!["http://127.0.0.3:2380".into()],
        };
        assert_eq!(msg(plan_update(three(), r)), ms::PEER_URL_EXISTS);
        let r = pb::MemberUpdateRequest {
            id: 2,
            peer_ur_ls: vec!["http://127.0.0.9:2380".into()],
        };
        let p = plan_update(three(), r).unwrap();
        assert_eq!(p.conf, ConfChangeType::AddNode);

        let mut four = three();
        four.push(m(4, true, "http://127.0.0.4:2380"));
        assert_eq!(
            msg(plan_promote(four.clone(), 4, &all_up())),
            ms::LEARNER_NOT_READY
        );
        assert_eq!(
            msg(plan_promote(four.clone(), 2, &all_up())),
            ms::NOT_LEARNER
        );
        assert_eq!(
            msg(plan_promote(four.clone(), 9, &all_up())),
            ms::MEMBER_NOT_FOUND
        );
        let mut ready = all_up();
        ready.in_sync.insert(4);
        let p = plan_promote(four, 4, &ready).unwrap();
        assert!(p.members.iter().all(|x| !x.is_learner));
    }

    #[test]
    fn join_finds_this_member_by_its_urls() {
        let mut members = three();
        members[2].name = String::new();
        let answer = JoinAnswer {
            cluster_id: "abc".into(),
            bootstrap_voters: vec!["1".into(), "2".into()],
            version: 1,
            members,
            removed: Vec::new(),
        };
        let map = cluster::UrlsMap::parse(
            "a=http://127.0.0.1:2380,b=http://127.0.0.2:2380,c=http://127.0.0.3:2380",
        )
        .unwrap();
        let got = join(&answer, &map, "c").unwrap();
        assert_eq!(got.local_id(), 3);
        assert_eq!(got.cluster_id(), 0xabc);
        assert_eq!(got.bootstrap_voters(), &[1, 2]);
        let short =
            cluster::UrlsMap::parse("a=http://127.0.0.1:2380,c=http://127.0.0.3:2380").unwrap();
        assert!(join(&answer, &short, "c")
            .unwrap_err()
            .contains("member count is unequal"));
        let other = cluster::UrlsMap::parse(
            "a=http://127.0.0.1:2380,b=http://127.0.0.2:2380,c=http://127.0.0.7:2380",
        )
        .unwrap();
        assert!(join(&answer, &other, "c")
            .unwrap_err()
            .contains("no match found"));
    }
}
