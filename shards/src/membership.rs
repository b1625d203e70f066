//! Membership changes: one change for every shard group.
//!
//! Every shard group has the same members. A change (etcd's member add,
//! promote, remove, update) is a raft conf change proposed in every group,
//! each carrying the same [`Change`]: its version (one more than the last
//! change), the raft change, and the whole member list after it (opaque
//! here: the server's records). A member applies it to its view of the
//! cluster only once *every* group of this member has applied it, so a
//! change that some groups have and others lack is never visible (member
//! list, the peer set). Changes are made one at a time, by the serving
//! leader; a leader that finds one half-made (its predecessor failed
//! midway) proposes it in the groups that lack it before anything else.
//!
//! What each group applied is durable in `member/changes` before the apply
//! returns, and a shard's snapshot carries the last change its group
//! applied (a member brought up to date by snapshot learns it there). The
//! member list of version v is known from any group's change v.
//!
//! See docs/membership.md.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ferrokv_raft::peer::PeerHandle;
pub use raft::eraftpb::ConfChangeType;

use crate::Error;

// etcd's refusals of member changes (api/v3rpc/rpctypes), which clients
// match on.
pub const MEMBER_EXISTS: &str = "etcdserver: member ID already exist";
pub const PEER_URL_EXISTS: &str = "etcdserver: Peer URLs already exists";
pub const NOT_ENOUGH_STARTED: &str =
    "etcdserver: re-configuration failed due to not enough started members";
pub const BAD_URLS: &str = "etcdserver: given member URLs are invalid";
pub const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
pub const NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
pub const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
pub const TOO_MANY_LEARNERS: &str = "etcdserver: too many learner members in cluster";
pub const UNHEALTHY: &str = "etcdserver: unhealthy cluster";

/// Every refusal above.
pub const REFUSALS: &[&str] = &[
    MEMBER_EXISTS,
    PEER_URL_EXISTS,
    NOT_ENOUGH_STARTED,
    BAD_URLS,
    MEMBER_NOT_FOUND,
    NOT_LEARNER,
    LEARNER_NOT_READY,
    TOO_MANY_LEARNERS,
    UNHEALTHY,
];

/// One membership change as every group's conf change carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// 1 + the version of the change before it; 0 is the bootstrap list.
    pub version: u64,
    /// What raft does in each group.
    pub conf: ConfChangeType,
    /// The member raft adds, promotes or removes.
    pub id: u64,
    /// The member list after the change, as the server encodes it.
    pub members: Vec<u8>,
}

const CHANGE_V1: u8 = 1;

impl Change {
    /// `v1 | version u64 | conf u8 | id u64 | members`, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + self.members.len());
        out.push(CHANGE_V1);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.push(self.conf as u8);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.members);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Change, String> {
        if b.len() < 18 || b[0] != CHANGE_V1 {
            return Err(format!(
                "membership change: unknown layout ({} bytes, version byte {:?})",
                b.len(),
                b.first()
            ));
        }
        let int = |s: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        };
        let conf = match b[9] {
            0 => ConfChangeType::AddNode,
            1 => ConfChangeType::RemoveNode,
            2 => ConfChangeType::AddLearnerNode,
            t => return Err(format!("membership change: unknown raft change {t}")),
        };
        Ok(Change {
            version: int(&b[1..9]),
            conf,
            id: int(&b[10..18]),
            members: b[18..].to_vec(),
        })
    }
}

/// Which change each group of this member has applied (sans-IO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    /// Per group, the version of the last change it applied.
    groups: Vec<u64>,
    /// The changes from the completed one (applied by every group) up.
    changes: BTreeMap<u64, Change>,
}

impl Tracker {
    /// Every group at `base` (the bootstrap list, or what a joining member
    /// was told).
    pub fn new(shards: u32, base: Change) -> Tracker {
        Tracker {
            groups: vec![base.version; shards as usize],
            changes: BTreeMap::from([(base.version, base)]),
        }
    }

    /// The change every group has applied: what this member shows.
    pub fn completed(&self) -> &Change {
        let v = self.groups.iter().copied().min().unwrap_or(0);
        // `applied` keeps the completed version's change.
        &self.changes[&v]
    }

    /// Group `group` applied `change` (again, perhaps: a replay, a snapshot
    /// that folded it in). Returns the newly completed change, if this
    /// completes one.
    pub fn applied(&mut self, group: u32, change: Change) -> Option<Change> {
        let g = group as usize;
        if g >= self.groups.len() || change.version <= self.groups[g] {
            return None;
        }
        let before = self.completed().version;
        self.groups[g] = change.version;
        self.changes.entry(change.version).or_insert(change);
        let after = self.completed().version;
        if after == before {
            return None;
        }
        self.changes = self.changes.split_off(&after);
        Some(self.changes[&after].clone())
    }

    /// The newest change some groups applied and others not yet, and the
    /// groups that lack it.
    pub fn pending(&self) -> Option<(Change, Vec<u32>)> {
        let (v, c) = self.changes.iter().next_back()?;
        let lacking: Vec<u32> = (0..self.groups.len() as u32)
            .filter(|g| self.groups[*g as usize] < *v)
            .collect();
        (!lacking.is_empty()).then(|| (c.clone(), lacking))
    }

    /// Every change from the completed one up, oldest first.
    pub fn lists(&self) -> Vec<Change> {
        self.changes.values().cloned().collect()
    }

    /// What [`Planner::changed`] is told: the completed change and every
    /// list from it up.
    fn in_force(&self) -> (Change, Vec<Change>) {
        (self.completed().clone(), self.lists())
    }

    /// The last change group `group` applied.
    pub fn of_group(&self, group: u32) -> Option<&Change> {
        let v = self.groups.get(group as usize)?;
        self.changes.get(v)
    }

    /// `n u32 | version u64 * n | count u32 | (len u32 | change)*`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.groups.len() as u32).to_le_bytes());
        for v in &self.groups {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.changes.len() as u32).to_le_bytes());
        for c in self.changes.values() {
            let e = c.encode();
            out.extend_from_slice(&(e.len() as u32).to_le_bytes());
            out.extend_from_slice(&e);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Tracker, String> {
        let mut r = b;
        let mut take = |n: usize| -> Result<&[u8], String> {
            if r.len() < n {
                return Err("membership changes: cut short".to_string());
            }
            let (a, rest) = r.split_at(n);
            r = rest;
            Ok(a)
        };
        let u32_of = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let n = u32_of(take(4)?) as usize;
        let mut groups = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let mut a = [0u8; 8];
            a.copy_from_slice(take(8)?);
            groups.push(u64::from_le_bytes(a));
        }
        let count = u32_of(take(4)?) as usize;
        let mut changes = BTreeMap::new();
        for _ in 0..count {
            let len = u32_of(take(4)?) as usize;
            let c = Change::decode(take(len)?)?;
            changes.insert(c.version, c);
        }
        let t = Tracker { groups, changes };
        let min = t.groups.iter().copied().min();
        match min {
            Some(v)
                if t.changes.contains_key(&v)
                    && t.groups.iter().all(|g| t.changes.contains_key(g)) =>
            {
                Ok(t)
            }
            _ => Err("membership changes: a group's change is missing".to_string()),
        }
    }
}

/// The file that keeps the tracker: `<data-dir>/member/changes`.
pub fn changes_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("changes")
}

/// The tracker this data dir keeps, if any change was ever recorded.
pub fn load(data_dir: &Path) -> Result<Option<Tracker>, String> {
    let path = changes_path(data_dir);
    match std::fs::read(&path) {
        Ok(b) => Tracker::decode(&b)
            .map(Some)
            .map_err(|e| format!("{} is corrupt: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `t` durably (temporary file, fsync, rename, directory fsync).
pub fn save(data_dir: &Path, t: &Tracker) -> Result<(), String> {
    let path = changes_path(data_dir);
    let dir = path.parent().unwrap_or(data_dir).to_path_buf();
    let tmp = path.with_extension("tmp");
    let fail = |p: &Path, e: std::io::Error| format!("cannot write {}: {e}", p.display());
    std::fs::create_dir_all(&dir).map_err(|e| fail(&dir, e))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| fail(&tmp, e))?;
    f.write_all(&t.encode()).map_err(|e| fail(&tmp, e))?;
    f.sync_all().map_err(|e| fail(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| fail(&path, e))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(&dir, e))
}

/// What the leader knows of the members when it plans a change.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub me: u64,
    /// Members connected to this one now (this one included).
    pub active: BTreeSet<u64>,
    /// Members that have ever told this one their name (started members),
    /// this one included.
    pub started: BTreeSet<u64>,
    /// Learners whose log is close enough to the leader's in every group to
    /// be promoted (etcd: 90 % of the leader's).
    pub in_sync: BTreeSet<u64>,
    /// Name and client URLs each member told in its handshake.
    pub names: BTreeMap<u64, (String, Vec<String>)>,
}

/// A change planned by the server's rules.
#[derive(Debug, Clone)]
pub struct Planned {
    pub conf: ConfChangeType,
    pub id: u64,
    /// The member list after it.
    pub members: Vec<u8>,
    /// The change cuts the leader off while it is made (it removes the
    /// leader, or moves its peer URLs, which the others redial as each of
    /// their groups applies it): another member must make it.
    pub not_by_leader: bool,
}

/// The server's rules for a change request (etcd's checks and records):
/// on the serving leader, given the current member list.
pub trait Planner: Send + Sync {
    /// The change `request` makes to `current`, or etcd's refusal.
    fn plan(&self, current: &[u8], request: &[u8], view: &ClusterView) -> Result<Planned, Error>;
    /// What this member's groups applied changed (or the peer transport
    /// started): `completed` is in force (every group applied it), `lists`
    /// every change from it up that some group applied; `peers` is the
    /// transport, if it runs.
    fn changed(&self, completed: &Change, lists: &[Change], peers: Option<&PeerHandle>);
}

/// The planner of a member opened by an offline tool.
struct Offline;

impl Planner for Offline {
    fn plan(&self, _: &[u8], _: &[u8], _: &ClusterView) -> Result<Planned, Error> {
        Err(Error::Internal(
            "membership changes need a running member".into(),
        ))
    }
    fn changed(&self, _: &Change, _: &[Change], _: Option<&PeerHandle>) {}
}

/// This member's membership state, shared by every core.
pub struct MemberChanges {
    data_dir: PathBuf,
    tracker: Mutex<Tracker>,
    planner: Arc<dyn Planner>,
    /// A change is being made here (the leader makes one at a time).
    busy: AtomicBool,
}

impl MemberChanges {
    pub fn new(data_dir: PathBuf, tracker: Tracker, planner: Arc<dyn Planner>) -> MemberChanges {
        MemberChanges {
            data_dir,
            tracker: Mutex::new(tracker),
            planner,
            busy: AtomicBool::new(false),
        }
    }

    /// For a tool that opens a member's data offline: the state the data
    /// dir keeps, and no changes made.
    pub fn offline(data_dir: &Path, shards: u32) -> Result<MemberChanges, String> {
        let tracker = load(data_dir)?.unwrap_or_else(|| {
            Tracker::new(
                shards,
                Change {
                    version: 0,
                    conf: ConfChangeType::AddNode,
                    id: 0,
                    members: Vec::new(),
                },
            )
        });
        Ok(MemberChanges::new(
            data_dir.to_path_buf(),
            tracker,
            Arc::new(Offline),
        ))
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn planner(&self) -> &dyn Planner {
        &*self.planner
    }

    /// Group `group` applied `change`: recorded durably before this
    /// returns; a change every group now has is handed to the server.
    pub fn applied(
        &self,
        group: u32,
        change: Change,
        peers: Option<&PeerHandle>,
    ) -> Result<(), String> {
        let (done, state) = {
            let mut t = self.tracker();
            let before = t.clone();
            let done = t.applied(group, change);
            if *t == before {
                return Ok(());
            }
            save(&self.data_dir, &t)?;
            (done, t.in_force())
        };
        if let Some(c) = done {
            log::info!(
                "membership: change {} (member {:x}, {:?}) applied in every group",
                c.version,
                c.id,
                c.conf
            );
        }
        self.planner.changed(&state.0, &state.1, peers);
        Ok(())
    }

    /// The peer transport started: it learns the members.
    pub fn peers_started(&self, peers: &PeerHandle) {
        let (completed, lists) = self.tracker().in_force();
        self.planner.changed(&completed, &lists, Some(peers));
    }

    pub fn completed(&self) -> Change {
        self.tracker().completed().clone()
    }

    pub fn pending(&self) -> Option<(Change, Vec<u32>)> {
        self.tracker().pending()
    }

    pub fn of_group(&self, group: u32) -> Option<Change> {
        self.tracker().of_group(group).cloned()
    }

    /// Takes the right to make a change (None while another is made); it
    /// is given back when the turn is dropped, however the change ends (a
    /// client that went away drops it midway).
    pub(crate) fn begin(&self) -> Option<Turn<'_>> {
        (!self.busy.swap(true, Ordering::AcqRel)).then_some(Turn(self))
    }
}

/// The right to make a membership change on this member.
pub(crate) struct Turn<'a>(&'a MemberChanges);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(version: u64, id: u64) -> Change {
        Change {
            version,
            conf: ConfChangeType::AddLearnerNode,
            id,
            members: format!("list{version}").into_bytes(),
        }
    }

    #[test]
    fn change_round_trips_and_garbage_is_refused() {
        let c = ch(7, 0xabcd);
        assert_eq!(Change::decode(&c.encode()).unwrap(), c);
        assert!(Change::decode(&c.encode()[..10]).is_err());
        let mut bad = c.encode();
        bad[9] = 9;
        assert!(Change::decode(&bad).is_err());
        assert!(Change::decode(&[]).is_err());
    }

    #[test]
    fn a_change_completes_once_every_group_applied_it() {
        let mut t = Tracker::new(3, ch(0, 0));
        assert_eq!(t.applied(1, ch(1, 4)), None);
        assert_eq!(t.completed().version, 0);
        assert_eq!(t.pending(), Some((ch(1, 4), vec![0, 2])));
        // A replay of what group 1 has is nothing new.
        assert_eq!(t.applied(1, ch(1, 4)), None);
        assert_eq!(t.applied(0, ch(1, 4)), None);
        assert_eq!(t.applied(2, ch(1, 4)), Some(ch(1, 4)));
        assert_eq!(t.completed(), &ch(1, 4));
        assert_eq!(t.pending(), None);
        // Older changes are dropped once a newer one is complete.
        assert_eq!(t.changes.len(), 1);
    }

    #[test]
    fn a_group_may_skip_versions_through_a_snapshot() {
        let mut t = Tracker::new(2, ch(0, 0));
        t.applied(0, ch(1, 4));
        t.applied(0, ch(2, 5));
        // Group 1 installs a snapshot that folded both in.
        assert_eq!(t.applied(1, ch(2, 5)), Some(ch(2, 5)));
        assert_eq!(t.completed().version, 2);
    }

    #[test]
    fn tracker_round_trips_and_damage_is_refused() {
        let mut t = Tracker::new(3, ch(0, 0));
        t.applied(2, ch(1, 4));
        let b = t.encode();
        assert_eq!(Tracker::decode(&b).unwrap(), t);
        for cut in [0, 3, 10, b.len() - 1] {
            assert!(Tracker::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
    }
}
