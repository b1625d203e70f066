//! Watch validators (issue 11), named after etcd's watch guarantees: the
//! responses that watch sessions received, checked against the events the
//! committed history says etcd would have emitted. Sans-IO: the recorders
//! fill [`WatchSession`]s, a model (or the sessions themselves) gives
//! [`CommittedEvents`], and [`validate`] returns [`Violation`]s.
//!
//! What each validator checks, exactly (one [`Guarantee`] each):
//!
//! - [`ordered`]: within a session, event revisions never decrease (within a
//!   response or across responses, so the events of one revision are
//!   contiguous); no event has a revision above its response's header
//!   revision (a header of 0 counts as not recorded).
//! - [`unique`]: no (revision, key) is delivered twice in one session.
//! - [`atomic`]: the events of one revision arrive in one response (etcd's
//!   `fragment` off), so revisions strictly increase from one response to
//!   the next; and a revision that is delivered is delivered whole: every
//!   committed event of it that the session watches is in that response.
//! - [`reliable`]: no gap. Over the revisions the session covered (see
//!   [`WatchSession::coverage`]: from `start_revision`, or for a watch from
//!   "now" from its first bound, up to its last event or progress
//!   notification) every committed event of its range and filters was
//!   delivered.
//! - [`resumable`]: a watch from revision r > 0 delivers nothing below r,
//!   and the lowest revision it delivers at or above r is that of the
//!   first committed event it watches from r on (no skip); a session marked
//!   as resuming another ([`WatchSession::resumes`]) watches the same range,
//!   filters and prev_kv and starts exactly one past what the predecessor
//!   covered (its last event or progress revision), so the chain neither
//!   skips nor repeats.
//! - [`bookmarkable`]: a progress notification at header h carries no
//!   events, never goes back (below an earlier one or below an event already
//!   delivered), no event after it has a revision <= h, and every committed
//!   event the session watches in [first, h] was delivered before it.
//! - [`prev_kv`]: without prev_kv requested none is sent; with it, prev_kv
//!   equals the key's state before the event's revision per the committed
//!   history (absent for a create); it may be missing only where that state
//!   may have been compacted (a compaction at or above the event revision,
//!   or compactions unknown); where the history does not know the previous
//!   state, prev_kv is checked against the event itself (same key, older
//!   mod_revision, same create_revision and version + 1 for a put, none for
//!   a version-1 put).
//! - [`filters`]: every delivered event is in the session's key range and
//!   not of a filtered kind (no_put, no_delete).
//! - [`compaction`]: a watch created (`call`) after a compaction at c
//!   finished, from a start revision < c, delivers no events nor progress
//!   and is canceled with compact_revision >= c; a cancel with a
//!   compact_revision names a compaction that was made (when compactions are
//!   known) and is justified (the watcher still needed a revision below it);
//!   compact_revision is only set on a canceling response; a canceling
//!   response carries no events, and nothing follows it.
//! - [`committed`]: the session's events, in order, equal the committed
//!   events of its range and filters over the revisions it covered (kind,
//!   the whole kv, and prev_kv as above); every delivered event that the
//!   history knows has its committed content. This is the summary check:
//!   it fails whenever the delivered sequence differs at all.
//!
//! Not checked: the order of events inside one revision (compared as a set
//! by key; ferrokv merges shards by sub revision, the model may not know
//! it); header revisions of event-carrying responses beyond "not below their
//! events" (etcd sends its current revision there while more revisions are
//! pending, so they prove nothing); fragmented responses; `created`
//! responses beyond their header giving where a watch from 0 starts;
//! whether progress notifications arrive at all, or when; time of delivery
//! (no liveness: a session that stopped early covers less); lease expiry
//! and compaction are seen only through the committed events and the
//! [`Compaction`] list the caller gives.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::history::Kv;

// ---------------------------------------------------------------------------
// What a watcher received
// ---------------------------------------------------------------------------

/// etcd's `mvccpb.Event.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    Put,
    Delete,
}

/// One event as a watch response carries it. For a delete, `kv` holds only
/// the key and `mod_revision` (the delete's revision), as etcd sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: Kv,
    pub prev_kv: Option<Kv>,
}

impl WatchEvent {
    /// The revision the event belongs to (`kv.mod_revision`).
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }

    pub fn key(&self) -> &[u8] {
        &self.kv.key
    }
}

/// One response of a watch stream, for one watcher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchResponse {
    /// The response header's revision (0: not recorded).
    pub header_revision: i64,
    pub events: Vec<WatchEvent>,
    pub compact_revision: i64,
    pub canceled: bool,
    /// The `created` response answering the watch request (no events).
    pub created: bool,
    /// A progress notification: no events, and the header revision says
    /// everything up to it was delivered. A stream-wide one (etcd's
    /// `watch_id -1`, sent only when every watcher of the stream is synced)
    /// is recorded in every session of the stream.
    pub progress_notify: bool,
    /// When it was received (ns, the history's clock).
    pub time: u64,
}

/// etcd's `WatchCreateRequest.filters`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Filters {
    pub no_put: bool,
    pub no_delete: bool,
}

/// One watcher, from its create request to its last response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSession {
    pub client: usize,
    pub key: Vec<u8>,
    /// As in etcd: empty = `key` alone, `"\0"` = every key >= `key`,
    /// otherwise [key, range_end).
    pub range_end: Vec<u8>,
    /// 0: from "now" (the revision after the current one).
    pub start_revision: i64,
    pub prev_kv: bool,
    pub filters: Filters,
    /// When the watch request was sent (ns, the history's clock).
    pub call: u64,
    /// This watch resumes the session at this index (of the slice given to
    /// the validators) after a break, from its last covered revision + 1.
    pub resumes: Option<usize>,
    pub responses: Vec<WatchResponse>,
}

impl WatchSession {
    /// A session with no responses yet.
    pub fn new(client: usize, key: &[u8], range_end: &[u8], start_revision: i64) -> Self {
        WatchSession {
            client,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            start_revision,
            ..Default::default()
        }
    }

    /// Whether `key` is in the watched range.
    pub fn in_range(&self, key: &[u8]) -> bool {
        in_span(&self.key, &self.range_end, key)
    }

    /// Whether an event of this kind on this key is one the watcher asked
    /// for (range and filters).
    pub fn wants(&self, kind: EventKind, key: &[u8]) -> bool {
        self.in_range(key)
            && match kind {
                EventKind::Put => !self.filters.no_put,
                EventKind::Delete => !self.filters.no_delete,
            }
    }

    /// Every delivered event with its response index and index in it.
    pub fn events(&self) -> impl Iterator<Item = (usize, usize, &WatchEvent)> {
        self.responses
            .iter()
            .enumerate()
            .flat_map(|(ri, r)| r.events.iter().enumerate().map(move |(ei, e)| (ri, ei, e)))
    }

    /// The first revision the session is answerable for: `start_revision`,
    /// or for a watch from "now" the lower of its first event's revision
    /// and (header + 1) of a created/progress response before any event.
    pub fn first_revision(&self) -> Option<i64> {
        self.first_with_reason().map(|(r, _)| r)
    }

    /// The last revision the session is answerable for: the highest of its
    /// events' revisions and of its progress notifications' headers.
    pub fn last_revision(&self) -> Option<i64> {
        self.last_with_reason().map(|(r, _)| r)
    }

    /// [first, last] when not empty: the revisions over which the session
    /// must have delivered every committed event it watches.
    pub fn coverage(&self) -> Option<(i64, i64)> {
        let (f, l) = (self.first_revision()?, self.last_revision()?);
        (f <= l).then_some((f, l))
    }

    fn first_with_reason(&self) -> Option<(i64, String)> {
        if self.start_revision > 0 {
            return Some((self.start_revision, "start_revision".into()));
        }
        let event = self
            .events()
            .next()
            .map(|(ri, _, e)| (e.revision(), format!("first event (response {ri})")));
        let bound = self
            .responses
            .iter()
            .enumerate()
            .take_while(|(_, r)| r.events.is_empty())
            .find(|(_, r)| r.created || r.progress_notify)
            .map(|(ri, r)| {
                let what = if r.created { "created" } else { "progress" };
                (
                    r.header_revision + 1,
                    format!("{what} header + 1 (response {ri})"),
                )
            });
        match (event, bound) {
            (Some(e), Some(b)) => Some(if b.0 <= e.0 { b } else { e }),
            (e, b) => e.or(b),
        }
    }

    fn last_with_reason(&self) -> Option<(i64, String)> {
        let mut best: Option<(i64, String)> = None;
        for (ri, r) in self.responses.iter().enumerate() {
            let mut cand = r
                .events
                .iter()
                .map(|e| e.revision())
                .max()
                .map(|rev| (rev, format!("event (response {ri})")));
            if r.progress_notify && r.events.is_empty() {
                cand = Some((
                    r.header_revision,
                    format!("progress notification (response {ri})"),
                ));
            }
            if let Some(c) = cand {
                if best.as_ref().is_none_or(|b| c.0 >= b.0) {
                    best = Some(c);
                }
            }
        }
        best
    }

    /// "client 1, prefix [a, b) from 5, prev_kv, no_put" for messages.
    pub fn describe(&self) -> String {
        let range = if self.range_end.is_empty() {
            format!("key {}", k(&self.key))
        } else if self.range_end == [0] {
            format!("keys >= {}", k(&self.key))
        } else {
            format!("[{}, {})", k(&self.key), k(&self.range_end))
        };
        let mut s = format!("client {}, {range}, from ", self.client);
        if self.start_revision > 0 {
            s += &self.start_revision.to_string();
        } else {
            s += "now";
        }
        if self.prev_kv {
            s += ", prev_kv";
        }
        if self.filters.no_put {
            s += ", no_put";
        }
        if self.filters.no_delete {
            s += ", no_delete";
        }
        if let Some(p) = self.resumes {
            s += &format!(", resumes session {p}");
        }
        s
    }
}

// ---------------------------------------------------------------------------
// What was committed
// ---------------------------------------------------------------------------

/// What the history says of a key's state just before an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Prev {
    /// The key did not exist (the event is a create, or the key was deleted).
    Absent,
    /// The key's kv before the event.
    Kv(Kv),
    /// Not known (a history rebuilt from watchers that did not see it).
    Unknown,
}

/// One event etcd would emit for a committed revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommittedEvent {
    pub kind: EventKind,
    /// As a watcher receives it (a delete: key and mod_revision only).
    pub kv: Kv,
    pub prev: Prev,
}

impl CommittedEvent {
    /// The event as a watcher with (or without) prev_kv receives it
    /// (an unknown previous state gives no prev_kv).
    pub fn to_watch_event(&self, with_prev_kv: bool) -> WatchEvent {
        WatchEvent {
            kind: self.kind,
            kv: self.kv.clone(),
            prev_kv: match (&self.prev, with_prev_kv) {
                (Prev::Kv(p), true) => Some(p.clone()),
                _ => None,
            },
        }
    }
}

/// One write of a committed revision, for [`CommittedEvents::from_changes`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    /// Of a key that exists (a delete of nothing emits no event).
    Delete { key: Vec<u8> },
}

/// A compaction that was made (its Compact call may or may not have
/// answered: a compaction whose outcome is unknown is listed too, with
/// `done: u64::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Compaction {
    pub revision: i64,
    /// When every member that may serve a watch has applied it (ns, the
    /// history's clock): a watch created later from below `revision` must
    /// be canceled. One member: when the Compact call returned. A cluster:
    /// a follower applies it later than the leader answers, so pass a time
    /// known to be after every member applied it, or `u64::MAX` to check
    /// only the cancels that were sent.
    pub done: u64,
}

/// A key range as etcd gives one: `range_end` empty = `key` alone, `"\0"`
/// = every key >= `key`, otherwise [key, range_end).
pub type Span = (Vec<u8>, Vec<u8>);

/// Whether `k` is in the span (`key`, `range_end`).
pub fn in_span(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
    if range_end.is_empty() {
        k == key
    } else if range_end == [0] {
        k >= key
    } else {
        k >= key && k < range_end
    }
}

/// The spans `sessions` watch: the keys whose changes their union
/// ([`CommittedEvents::from_sessions`]) can be complete for. A fault may
/// write outside them (the full-disk fault's fill).
pub fn spans(sessions: &[WatchSession]) -> Vec<Span> {
    let mut out: Vec<Span> = sessions
        .iter()
        .map(|s| (s.key.clone(), s.range_end.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether any of `spans` holds `k`.
pub fn in_spans(spans: &[Span], k: &[u8]) -> bool {
    spans.iter().any(|(key, end)| in_span(key, end, k))
}

/// Per revision, the events etcd would emit for it, plus the compactions
/// made. Built from a model's replay of the linearizable history
/// ([`from_events`](Self::from_events), [`from_changes`](Self::from_changes))
/// or from the watch sessions themselves ([`from_sessions`](Self::from_sessions)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommittedEvents {
    revisions: BTreeMap<i64, Vec<CommittedEvent>>,
    /// `None`: not known (then compaction claims are not checked and a
    /// missing prev_kv is tolerated); `Some`: every compaction made.
    compactions: Option<Vec<Compaction>>,
    /// The keys these events can be complete for (`None`: every key; from
    /// sessions: the spans they watch).
    watched: Option<Vec<Span>>,
}

impl CommittedEvents {
    /// From the events of each revision, as a model computed them.
    /// Revisions must increase; in each, keys are unique and every kv's
    /// mod_revision is the revision. Compactions: none made (add them with
    /// [`with_compaction`](Self::with_compaction)).
    pub fn from_events<I>(revisions: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = (i64, Vec<CommittedEvent>)>,
    {
        let mut map = BTreeMap::new();
        let mut last = 0;
        for (rev, events) in revisions {
            if rev <= last {
                return Err(format!(
                    "revision {rev} after {last}: revisions must increase from 1"
                ));
            }
            last = rev;
            let mut keys = HashSet::new();
            for e in &events {
                if e.kv.mod_revision != rev {
                    return Err(format!(
                        "revision {rev}: event on {} has mod_revision {}",
                        k(&e.kv.key),
                        e.kv.mod_revision
                    ));
                }
                if !keys.insert(e.kv.key.clone()) {
                    return Err(format!("revision {rev}: two events on {}", k(&e.kv.key)));
                }
                if e.kind == EventKind::Delete
                    && (e.kv.create_revision != 0
                        || e.kv.version != 0
                        || e.kv.lease != 0
                        || !e.kv.value.is_empty())
                {
                    return Err(format!(
                        "revision {rev}: delete of {} carries more than key and mod_revision \
                         (etcd sends only those)",
                        k(&e.kv.key)
                    ));
                }
                if let Prev::Kv(p) = &e.prev {
                    if p.key != e.kv.key || p.mod_revision >= rev {
                        return Err(format!(
                            "revision {rev}: prev of {} is {}",
                            k(&e.kv.key),
                            kv_str(p)
                        ));
                    }
                }
            }
            if !events.is_empty() {
                map.insert(rev, events);
            }
        }
        Ok(CommittedEvents {
            revisions: map,
            compactions: Some(Vec::new()),
            watched: None,
        }
        .into_sorted())
    }

    /// By replaying writes from an empty store: kvs (create_revision,
    /// version) and prev states are computed.
    pub fn from_changes<I>(revisions: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = (i64, Vec<Change>)>,
    {
        Self::from_changes_on(Vec::new(), revisions)
    }

    /// As [`from_changes`](Self::from_changes), from a store that already
    /// holds `initial` (each with a mod_revision below the first change).
    pub fn from_changes_on<I>(initial: Vec<Kv>, revisions: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = (i64, Vec<Change>)>,
    {
        let mut state: BTreeMap<Vec<u8>, Kv> =
            initial.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        let mut out = Vec::new();
        for (rev, changes) in revisions {
            if let Some(kv) = state.values().find(|kv| kv.mod_revision >= rev) {
                return Err(format!(
                    "revision {rev}: the store already holds {}",
                    kv_str(kv)
                ));
            }
            let mut events = Vec::new();
            for c in changes {
                match c {
                    Change::Put { key, value, lease } => {
                        let prev = state.get(&key).cloned();
                        let kv = Kv {
                            key: key.clone(),
                            value,
                            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                            mod_revision: rev,
                            version: prev.as_ref().map_or(1, |p| p.version + 1),
                            lease,
                        };
                        state.insert(key, kv.clone());
                        events.push(CommittedEvent {
                            kind: EventKind::Put,
                            kv,
                            prev: prev.map_or(Prev::Absent, Prev::Kv),
                        });
                    }
                    Change::Delete { key } => {
                        let Some(prev) = state.remove(&key) else {
                            return Err(format!(
                                "revision {rev}: delete of {} which does not exist (no event)",
                                k(&key)
                            ));
                        };
                        events.push(CommittedEvent {
                            kind: EventKind::Delete,
                            kv: Kv {
                                key,
                                value: Vec::new(),
                                create_revision: 0,
                                mod_revision: rev,
                                version: 0,
                                lease: 0,
                            },
                            prev: Prev::Kv(prev),
                        });
                    }
                }
            }
            out.push((rev, events));
        }
        Self::from_events(out)
    }

    /// The union of what the sessions received: each (revision, key) once.
    /// Where sessions disagree (kind, kv, or two different prev_kvs) a
    /// [`Guarantee::Committed`] violation names both; the first session's
    /// version is kept. Previous states are known where a prev_kv watcher
    /// delivered one, or where a put is a create (version 1); otherwise
    /// unknown. Compactions: unknown.
    pub fn from_sessions(sessions: &[WatchSession]) -> (Self, Vec<Violation>) {
        let mut seen: BTreeMap<(i64, Vec<u8>), (CommittedEvent, usize, usize)> = BTreeMap::new();
        let mut out = Vec::new();
        for (si, s) in sessions.iter().enumerate() {
            for (ri, _, e) in s.events() {
                let prev = match (&e.prev_kv, e.kind, e.kv.version) {
                    (Some(p), _, _) if s.prev_kv => Prev::Kv(p.clone()),
                    (_, EventKind::Put, 1) => Prev::Absent,
                    _ => Prev::Unknown,
                };
                let key = (e.revision(), e.kv.key.clone());
                match seen.get_mut(&key) {
                    None => {
                        let ce = CommittedEvent {
                            kind: e.kind,
                            kv: e.kv.clone(),
                            prev,
                        };
                        seen.insert(key, (ce, si, ri));
                    }
                    Some((ce, osi, ori)) => {
                        let mut diff = Vec::new();
                        if ce.kind != e.kind || ce.kv != e.kv {
                            diff.push(format!(
                                "{} vs {}",
                                ev_str(ce.kind, &ce.kv),
                                ev_str(e.kind, &e.kv)
                            ));
                        }
                        match (&ce.prev, &prev) {
                            (Prev::Unknown, p) => ce.prev = p.clone(),
                            (_, Prev::Unknown) => {}
                            (a, b) if a != b => {
                                diff.push(format!("prev {} vs {}", prev_str(a), prev_str(b)))
                            }
                            _ => {}
                        }
                        if !diff.is_empty() {
                            out.push(violation(
                                Guarantee::Committed,
                                si,
                                s,
                                Some(ri),
                                Some(e.revision()),
                                format!(
                                    "watchers disagree on {}@{}: session {osi} response {ori} \
                                     got {}",
                                    k(&e.kv.key),
                                    e.revision(),
                                    diff.join("; ")
                                ),
                            ));
                        }
                    }
                }
            }
        }
        let mut revisions: BTreeMap<i64, Vec<CommittedEvent>> = BTreeMap::new();
        for ((rev, _), (ce, _, _)) in seen {
            revisions.entry(rev).or_default().push(ce);
        }
        (
            CommittedEvents {
                revisions,
                compactions: None,
                watched: Some(spans(sessions)),
            },
            out,
        )
    }

    /// The keys these events can be complete for (`None`: every key).
    pub fn watched(&self) -> Option<&[Span]> {
        self.watched.as_deref()
    }

    /// Whether these events can hold `key`'s changes.
    pub fn watches(&self, key: &[u8]) -> bool {
        self.watched.as_deref().is_none_or(|w| in_spans(w, key))
    }

    /// Adds a compaction that was made (and makes compactions known).
    pub fn with_compaction(mut self, revision: i64, done: u64) -> Self {
        self.compactions
            .get_or_insert_with(Vec::new)
            .push(Compaction { revision, done });
        self
    }

    /// Compactions are not known (e.g. auto-compaction ran): compaction
    /// claims are not checked and a missing prev_kv is tolerated.
    pub fn compactions_unknown(mut self) -> Self {
        self.compactions = None;
        self
    }

    pub fn compactions(&self) -> Option<&[Compaction]> {
        self.compactions.as_deref()
    }

    /// The events of one revision (empty if none).
    pub fn at(&self, revision: i64) -> &[CommittedEvent] {
        self.revisions.get(&revision).map_or(&[], |v| v.as_slice())
    }

    pub fn get(&self, revision: i64, key: &[u8]) -> Option<&CommittedEvent> {
        self.at(revision).iter().find(|e| e.kv.key == key)
    }

    /// Every event in revision order (within a revision, by key).
    pub fn iter(&self) -> impl Iterator<Item = (i64, &CommittedEvent)> {
        self.revisions
            .iter()
            .flat_map(|(r, es)| es.iter().map(move |e| (*r, e)))
    }

    /// Every put, (key, value) → its revision, for the linearizability
    /// checker ([`super::linearize::Options::committed_puts`]).
    pub fn puts(&self) -> super::linearize::CommittedPuts {
        self.iter()
            .filter(|(_, e)| e.kind == EventKind::Put)
            .map(|(r, e)| ((e.kv.key.clone(), e.kv.value.clone()), r))
            .collect()
    }

    /// The events of revisions [first, last] that `session` watches.
    pub fn expected<'a>(
        &'a self,
        session: &'a WatchSession,
        first: i64,
        last: i64,
    ) -> impl Iterator<Item = (i64, &'a CommittedEvent)> + 'a {
        self.revisions
            .range(first..=last.max(first))
            .filter(move |_| first <= last)
            .flat_map(|(r, es)| es.iter().map(move |e| (*r, e)))
            .filter(move |(_, e)| session.wants(e.kind, &e.kv.key))
    }

    pub fn last_revision(&self) -> Option<i64> {
        self.revisions.keys().next_back().copied()
    }

    /// Whether the state before `revision` may be compacted away (so etcd
    /// may omit prev_kv): a compaction at or above it, or compactions unknown.
    fn prev_may_be_compacted(&self, revision: i64) -> bool {
        match &self.compactions {
            None => true,
            Some(cs) => cs.iter().any(|c| c.revision >= revision),
        }
    }

    fn into_sorted(mut self) -> Self {
        for es in self.revisions.values_mut() {
            es.sort_by(|a, b| a.kv.key.cmp(&b.kv.key));
        }
        self
    }
}

// ---------------------------------------------------------------------------
// Violations
// ---------------------------------------------------------------------------

/// The guarantee a violation breaks (etcd's names, plus the checks of
/// prev_kv, filters, compaction and equality with the committed history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Guarantee {
    Ordered,
    Unique,
    Atomic,
    Reliable,
    Resumable,
    Bookmarkable,
    PrevKv,
    Filter,
    Compaction,
    Committed,
}

impl Guarantee {
    pub const ALL: [Guarantee; 10] = [
        Guarantee::Ordered,
        Guarantee::Unique,
        Guarantee::Atomic,
        Guarantee::Reliable,
        Guarantee::Resumable,
        Guarantee::Bookmarkable,
        Guarantee::PrevKv,
        Guarantee::Filter,
        Guarantee::Compaction,
        Guarantee::Committed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Guarantee::Ordered => "ordered",
            Guarantee::Unique => "unique",
            Guarantee::Atomic => "atomic",
            Guarantee::Reliable => "reliable",
            Guarantee::Resumable => "resumable",
            Guarantee::Bookmarkable => "bookmarkable",
            Guarantee::PrevKv => "prev_kv",
            Guarantee::Filter => "filter",
            Guarantee::Compaction => "compaction",
            Guarantee::Committed => "committed",
        }
    }

    /// What the guarantee promises, in one line.
    pub fn promise(self) -> &'static str {
        match self {
            Guarantee::Ordered => "events arrive in revision order",
            Guarantee::Unique => "an event is delivered once",
            Guarantee::Atomic => "the events of one revision arrive together, in one response",
            Guarantee::Reliable => "no committed event inside the watched window is skipped",
            Guarantee::Resumable => {
                "a watch from revision r delivers exactly the committed events from r on"
            }
            Guarantee::Bookmarkable => {
                "a progress notification at h follows every event <= h and precedes none"
            }
            Guarantee::PrevKv => "prev_kv is the key's state before the event",
            Guarantee::Filter => "only events of the watched range and kinds are delivered",
            Guarantee::Compaction => {
                "a watch from a compacted revision is canceled with compact_revision"
            }
            Guarantee::Committed => "a watcher's events equal the committed history",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken guarantee, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub guarantee: Guarantee,
    /// Index of the session in the slice given to the validator.
    pub session: usize,
    pub client: usize,
    /// [`WatchSession::describe`] of the session.
    pub watch: String,
    pub response: Option<usize>,
    pub revision: Option<i64>,
    /// What was seen and what was expected.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] session {} ({})",
            self.guarantee, self.session, self.watch
        )?;
        if let Some(r) = self.response {
            write!(f, " response {r}")?;
        }
        if let Some(r) = self.revision {
            write!(f, " revision {r}")?;
        }
        write!(f, ": {}", self.message)
    }
}

fn violation(
    guarantee: Guarantee,
    si: usize,
    s: &WatchSession,
    response: Option<usize>,
    revision: Option<i64>,
    message: String,
) -> Violation {
    Violation {
        guarantee,
        session: si,
        client: s.client,
        watch: s.describe(),
        response,
        revision,
        message,
    }
}

/// A readable report: per guarantee (in [`Guarantee::ALL`] order) the
/// count, its promise and at most `per_guarantee` violations.
pub fn report(violations: &[Violation], per_guarantee: usize) -> String {
    if violations.is_empty() {
        return "watch: no violations\n".into();
    }
    let mut s = format!("watch: {} violation(s)\n", violations.len());
    for g in Guarantee::ALL {
        let of: Vec<&Violation> = violations.iter().filter(|v| v.guarantee == g).collect();
        if of.is_empty() {
            continue;
        }
        s += &format!("broke {g} ({}): {}\n", g.promise(), of.len());
        for v in of.iter().take(per_guarantee) {
            s += &format!("  {v}\n");
        }
        if of.len() > per_guarantee {
            s += &format!("  ... {} more\n", of.len() - per_guarantee);
        }
    }
    s
}

// ---------------------------------------------------------------------------
// Validators
// ---------------------------------------------------------------------------

/// Every validator below, in [`Guarantee::ALL`] order.
pub fn validate(sessions: &[WatchSession], committed: &CommittedEvents) -> Vec<Violation> {
    let mut out = ordered(sessions);
    out.extend(unique(sessions));
    out.extend(atomic(sessions, committed));
    out.extend(reliable(sessions, committed));
    out.extend(resumable(sessions, committed));
    out.extend(bookmarkable(sessions, committed));
    out.extend(prev_kv(sessions, committed));
    out.extend(filters(sessions));
    out.extend(compaction(sessions, committed));
    out.extend(self::committed(sessions, committed));
    out
}

/// Revisions never decrease along a session; no event above its
/// response's header revision.
pub fn ordered(sessions: &[WatchSession]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (si, s) in sessions.iter().enumerate() {
        let mut last: Option<(i64, usize)> = None;
        for (ri, _, e) in s.events() {
            let rev = e.revision();
            if let Some((lr, lri)) = last {
                if rev < lr {
                    out.push(violation(
                        Guarantee::Ordered,
                        si,
                        s,
                        Some(ri),
                        Some(rev),
                        format!(
                            "{} arrives after an event of revision {lr} (response {lri})",
                            ev_str(e.kind, &e.kv)
                        ),
                    ));
                }
            }
            if last.is_none_or(|(lr, _)| rev >= lr) {
                last = Some((rev, ri));
            }
            let h = s.responses[ri].header_revision;
            if h != 0 && rev > h {
                out.push(violation(
                    Guarantee::Ordered,
                    si,
                    s,
                    Some(ri),
                    Some(rev),
                    format!(
                        "{} is above its response's header revision {h}",
                        ev_str(e.kind, &e.kv)
                    ),
                ));
            }
        }
    }
    out
}

/// No (revision, key) twice in a session.
pub fn unique(sessions: &[WatchSession]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (si, s) in sessions.iter().enumerate() {
        let mut seen: HashMap<(i64, &[u8]), (usize, usize)> = HashMap::new();
        for (ri, ei, e) in s.events() {
            if let Some((ori, oei)) = seen.insert((e.revision(), e.key()), (ri, ei)) {
                out.push(violation(
                    Guarantee::Unique,
                    si,
                    s,
                    Some(ri),
                    Some(e.revision()),
                    format!(
                        "{} delivered again (first at response {ori} event {oei})",
                        ev_str(e.kind, &e.kv)
                    ),
                ));
            }
        }
    }
    out
}

/// One revision in one response, and whole.
pub fn atomic(sessions: &[WatchSession], committed: &CommittedEvents) -> Vec<Violation> {
    let mut out = Vec::new();
    for (si, s) in sessions.iter().enumerate() {
        // revision -> responses carrying it (in order), keys delivered
        let mut by_rev: BTreeMap<i64, (Vec<usize>, HashSet<&[u8]>)> = BTreeMap::new();
        for (ri, _, e) in s.events() {
            let entry = by_rev.entry(e.revision()).or_default();
            if entry.0.last() != Some(&ri) {
                entry.0.push(ri);
            }
            entry.1.insert(e.key());
        }
        for (rev, (resps, keys)) in &by_rev {
            if resps.len() > 1 {
                out.push(violation(
                    Guarantee::Atomic,
                    si,
                    s,
                    Some(resps[1]),
                    Some(*rev),
                    format!("revision {rev} split across responses {resps:?}"),
                ));
            }
            let missing: Vec<String> = committed
                .at(*rev)
                .iter()
                .filter(|c| s.wants(c.kind, &c.kv.key) && !keys.contains(c.kv.key.as_slice()))
                .map(|c| ev_str(c.kind, &c.kv))
                .collect();
            if !missing.is_empty() {
                out.push(violation(
                    Guarantee::Atomic,
                    si,
                    s,
                    Some(resps[0]),
                    Some(*rev),
                    format!(
                        "revision {rev} delivered incompletely: committed {} never delivered",
                        missing.join(", ")
                    ),
                ));
            }
        }
    }
    out
}

/// No committed event of the covered window skipped.
pub fn reliable(sessions: &[WatchSession], committed: &CommittedEvents) -> Vec<Violation> {
    let mut out = Vec::new();
    for (si, s) in sessions.iter().enumerate() {
        let (Some((first, fwhy)), Some((last, lwhy))) =
            (s.first_with_reason(), s.last_with_reason())
        else {
            continue;
        };
        let delivered: HashSet<(i64, &[u8])> = s
            .events()
            .map(|(_, _, e)| (e.revision(), e.key()))
            .collect();
        for (rev, c) in committed.expected(s, first, last) {
            if !delivered.contains(&(rev, c.kv.key.as_slice())) {
                out.push(violation(
                    Guarantee::Reliable,
                    si,
                    s,
                    None,
                    Some(rev),
                    format!(
                        "committed {} not delivered; the session covered {first} ({fwhy}) \
                         ..= {last} ({lwhy})",
                        ev_str(c.kind, &c.kv)
                    ),
                ));
            }
        }
    }
    out
}

/// A watch from r starts exactly at r; a resumed watch continues exactly
/// where its predecessor stopped.
pub fn resumable(sessions: &[WatchSession], committed: &CommittedEvents) -> Vec<Violation> {
    let mut out = Vec::new();
    for (si, s) in sessions.iter().enumerate() {
        if let Some(pi) = s.resumes {
            out.extend(resume_link(sessions, si, s, pi));
        }
        let start = s.start_revision;
        if start <= 0 {
            continue;
        }
        for (ri, _, e) in s.events().filter(|(_, _, e)| e.revision() < start) {
            out.push(violation(
                Guarantee::Resumable,
                si,
                s,
                Some(ri),
                Some(e.revision()),
                format!(
                    "{} is below the watch's start revision {start}",
                    ev_str(e.kind, &e.kv)
                ),
            ));
        }
        // The lowest delivered revision from `start` on (a reordering is
        // `ordered`'s to report, not a skip).
        let Some((ri, _, got)) = s
            .events()
            .filter(|(_, _, e)| e.revision() >= start)
            .min_by_key(|(_, _, e)| e.revision())
        else {
            continue;
        };
        let want = committed
            .iter()
            .skip_while(|(r, _)| *r < start)
            .find(|(_, c)| s.wants(c.kind, &c.kv.key));
        if let Some((wrev, w)) = want {
            if got.revision() > wrev {
                out.push(violation(
                    Guarantee::Resumable,
                    si,
                    s,
                    Some(ri),
                    Some(got.revision()),
                    format!(
                        "first event from {start} is {}, but the first committed event it \
                         watches from {start} is {}",
                        ev_str(got.kind, &got.kv),
                        ev_str(w.kind, &w.kv)
                    ),
                ));
            }
        }
    }
    out
}

fn resume_link(
    sessions: &[WatchSession],
    si: usize,
    s: &WatchSession,
    pi: usize,
) -> Vec<Violation> {
    let bad = |msg: String| vec![violation(Guarantee::Resumable, si, s, None, None, msg)];
    let Some(p) = sessions.get(pi).filter(|_| pi != si) else {
        return bad(format!(
            "resumes session {pi}, which is not another session of the run"
        ));
    };
    if p.key != s.key
        || p.range_end != s.range_end
        || p.filters != s.filters
        || p.prev_kv != s.prev_kv
    {
        return bad(format!(
            "resumes session {pi} ({}) with a different range, filters or prev_kv",
            p.describe()
        ));
    }
    let want = match p.last_with_reason() {
        Some((last, why)) => Some((
            last + 1,
            format!("its last covered revision {last} ({why}) + 1"),
        )),
        None if p.start_revision > 0 => Some((
            p.start_revision,
            "its start revision (it covered nothing)".to_string(),
        )),
        None => None,
    };
    match want {
        Some((want, why)) if s.start_revision != want => {
            let what = if s.start_revision > want {
                format!(
                    "revisions {want}..={} are watched by neither",
                    s.start_revision - 1
                )
            } else {
                format!(
                    "revisions {}..={} are delivered twice",
                    s.start_revision,
                    want - 1
                )
            };
            bad(format!(
                "resumes session {pi} from {}, expected {want}: {why}; {what}",
                s.start_revision
            ))
        }
        _ => Vec::new(),
    }
}

/// Progress notifications are true bookmarks.
pub fn bookmarkable(sessions: &[WatchSession], committed: &CommittedEvents) -> Vec<Violation> {
    let mut out = Vec::new();
    for (si, s) in sessions.iter().enumerate() {
        let first = s.first_revision();
        let all: HashSet<(i64, &[u8])> = s
            .events()
            .map(|(_, _, e)| (e.revision(), e.key()))
            .collect();
        let mut so_far: HashSet<(i64, &[u8])> = HashSet::new();
        let mut reported: HashSet<(i64, &[u8])> = HashSet::new();
        let mut progress: Option<(i64, usize)> = None;
        let mut last_event: Option<(i64, usize)> = None;
        for (ri, r) in s.responses.iter().enumerate() {
            for e in &r.events {
                if let Some((h, pri)) = progress {
                    if e.revision() <= h {
                        out.push(violation(
                            Guarantee::Bookmarkable,
                            si,
                            s,
                            Some(ri),
                            Some(e.revision()),
                            format!(
                                "{} arrives after the progress notification at {h} (response {pri})",
                                ev_str(e.kind, &e.kv)
                            ),
                        ));
                    }
                }
                so_far.insert((e.revision(), e.key()));
                if last_event.is_none_or(|(lr, _)| e.revision() > lr) {
                    last_event = Some((e.revision(), ri));
                }
            }
            if !r.progress_notify {
                continue;
            }
            let h = r.header_revision;
            let at =
                |msg: String| violation(Guarantee::Bookmarkable, si, s, Some(ri), Some(h), msg);
            if !r.events.is_empty() {
                out.push(at(format!(
                    "progress notification carries {} event(s)",
                    r.events.len()
                )));
                continue;
            }
            if let Some((ph, pri)) = progress {
                if h < ph {
                    out.push(at(format!(
                        "progress notification at {h} after one at {ph} (response {pri})"
                    )));
                }
            }
            if let Some((lr, lri)) = last_event {
                if h < lr {
                    out.push(at(format!(
                        "progress notification at {h} after an event of revision {lr} (response {lri})"
                    )));
                }
            }
            if let Some(first) = first {
                for (rev, c) in committed.expected(s, first, h) {
                    let key = (rev, c.kv.key.as_slice());
                    if !so_far.contains(&key) && !all.contains(&key) && reported.insert(key) {
                        out.push(at(format!(
                            "progress notification at {h}, but committed {} was never delivered",
                            ev_str(c.kind, &c.kv)
                        )));
                    }
                }
            }
            if progress.is_none_or(|(ph, _)| h >= ph) {
                progress = Some((h, ri));
            }
        }
    }
    out
}

/// What is wrong with a delivered event's prev_kv given the committed
/// event, if anything.
fn prev_problem(
    s: &WatchSession,
    e: &WatchEvent,
    c: &CommittedEvent,
    committed: &CommittedEvents,
) -> Option<String> {
    if !s.prev_kv {
        return e
            .prev_kv
            .as_ref()
            .map(|p| format!("prev_kv {} delivered but not requested", kv_str(p)));
    }
    match (&c.prev, &e.prev_kv) {
        (Prev::Unknown, _) => None,
        (Prev::Absent, None) => None,
        (Prev::Absent, Some(p)) => Some(format!(
            "prev_kv {}, but the key did not exist before revision {}",
            kv_str(p),
            e.revision()
        )),
        (Prev::Kv(want), Some(p)) if p != want => Some(format!(
            "prev_kv {}, expected {} (the committed state before revision {})",
            kv_str(p),
            kv_str(want),
            e.revision()
        )),
        (Prev::Kv(_), Some(_)) => None,
        (Prev::Kv(want), None) if !committed.prev_may_be_compacted(e.revision()) => Some(format!(
            "prev_kv missing, expected {} (no compaction removed it)",
            kv_str(want)
        )),
        (Prev::Kv(_), None) => None,
    }
}

/// prev_kv checked against the event alone (when the history does not know
/// the previous state).
fn prev_self_problem(e: &WatchEvent) -> Option<String> {
    let p = e.prev_kv.as_ref()?;
    let wrong = if p.key != e.kv.key {
        Some("is of another key")
    } else if p.mod_revision >= e.revision() {
        Some("is not older than the event")
    } else if e.kind == EventKind::Put && e.kv.version == 1 {
        Some("is given for a create (version 1)")
    } else if e.kind == EventKind::Put
        && (p.create_revision != e.kv.create_revision || p.version + 1 != e.kv.version)
    {
        Some("does not precede the put (create_revision, version)")
    } else {
        None
    };
    wrong.map(|w| format!("prev_kv {} {w}: {}", kv_str(p), ev_str(e.kind, &e.kv)))
}

/// prev_kv as requested and as committed.
pub fn prev_kv(sessions: &[WatchSession], committed: &CommittedEvents) -> Vec<Violation> {
    let mut out = Vec::new();
    for (si, s) in sessions.iter().enumerate() {
        for (ri, _, e) in s.events() {
            let problem = match committed.get(e.revision(), e.key()) {
                Some(c) if s.prev_kv && c.prev == Prev::Unknown => prev_self_problem(e),
                Some(c) => prev_problem(s, e, c, committed),
                None if !s.prev_kv => e
                    .prev_kv
                    .as_ref()
                    .map(|p| format!("prev_kv {} delivered but not requested", kv_str(p))),
                None => prev_self_problem(e),
            };
            if let Some(m) = problem {
                out.push(violation(
                    Guarantee::PrevKv,
                    si,
                    s,
                    Some(ri),
                    Some(e.revision()),
                    format!("{}: {m}", ev_str(e.kind, &e.kv)),
                ));
            }
        }
    }
    out
}

/// Only the watched range and kinds.
pub fn filters(sessions: &[WatchSession]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (si, s) in sessions.iter().enumerate() {
        for (ri, _, e) in s.events() {
            let why = if !s.in_range(e.key()) {
                Some("outside the watched range")
            } else if !s.wants(e.kind, e.key()) {
                Some(if e.kind == EventKind::Put {
                    "a put, filtered by no_put"
                } else {
                    "a delete, filtered by no_delete"
                })
            } else {
                None
            };
            if let Some(why) = why {
                out.push(violation(
                    Guarantee::Filter,
                    si,
                    s,
                    Some(ri),
                    Some(e.revision()),
                    format!("{} delivered: {why}", ev_str(e.kind, &e.kv)),
                ));
            }
        }
    }
    out
}

/// compact_revision and cancel semantics.
pub fn compaction(sessions: &[WatchSession], committed: &CommittedEvents) -> Vec<Violation> {
    let mut out = Vec::new();
    for (si, s) in sessions.iter().enumerate() {
        let at = |ri: Option<usize>, rev: Option<i64>, msg: String| {
            violation(Guarantee::Compaction, si, s, ri, rev, msg)
        };
        let cancel = s.responses.iter().position(|r| r.canceled);
        for (ri, r) in s.responses.iter().enumerate() {
            if r.compact_revision != 0 && !r.canceled {
                out.push(at(
                    Some(ri),
                    Some(r.compact_revision),
                    format!(
                        "compact_revision {} on a response that does not cancel the watch",
                        r.compact_revision
                    ),
                ));
            }
            if let Some(ci) = cancel.filter(|ci| ri > *ci) {
                out.push(at(
                    Some(ri),
                    None,
                    format!("response after the watch was canceled (response {ci})"),
                ));
            }
        }
        if let Some(ci) = cancel {
            let r = &s.responses[ci];
            if !r.events.is_empty() {
                out.push(at(
                    Some(ci),
                    None,
                    format!("canceling response carries {} event(s)", r.events.len()),
                ));
            }
            let c = r.compact_revision;
            if c > 0 {
                if let Some(cs) = committed.compactions() {
                    if !cs.iter().any(|x| x.revision == c) {
                        out.push(at(
                            Some(ci),
                            Some(c),
                            format!(
                                "canceled with compact_revision {c}, but no compaction at {c} was \
                                 made (made: {:?})",
                                cs.iter().map(|x| x.revision).collect::<Vec<_>>()
                            ),
                        ));
                    }
                }
                // The next revision the watcher still needed when canceled.
                let before = WatchSession {
                    responses: s.responses[..ci].to_vec(),
                    ..s.clone()
                };
                let next = match before.last_revision() {
                    Some(l) => Some((l + 1).max(s.start_revision)),
                    None if s.start_revision > 0 => Some(s.start_revision),
                    None => None,
                };
                if let Some(next) = next.filter(|n| *n >= c) {
                    out.push(at(
                        Some(ci),
                        Some(c),
                        format!(
                            "canceled as compacted at {c}, but the watcher needed revisions from \
                             {next} on, which a compaction at {c} keeps"
                        ),
                    ));
                }
            }
        }
        // A watch from below a compaction that had finished when it was
        // created must be canceled at once.
        let Some(cs) = committed.compactions() else {
            continue;
        };
        if s.start_revision <= 0 {
            continue;
        }
        let Some(c0) = cs
            .iter()
            .filter(|c| c.done < s.call && s.start_revision < c.revision)
            .max_by_key(|c| c.revision)
        else {
            continue;
        };
        let why = format!(
            "the watch from {} was created after the compaction at {} finished (t={} < {})",
            s.start_revision, c0.revision, c0.done, s.call
        );
        let end = cancel.unwrap_or(s.responses.len());
        for (ri, r) in s.responses[..end].iter().enumerate() {
            if !r.events.is_empty() {
                out.push(at(
                    Some(ri),
                    Some(r.events[0].revision()),
                    format!(
                        "{} event(s) delivered; expected a cancel: {why}",
                        r.events.len()
                    ),
                ));
            } else if r.progress_notify {
                out.push(at(
                    Some(ri),
                    Some(r.header_revision),
                    format!("progress notification delivered; expected a cancel: {why}"),
                ));
            }
        }
        match cancel {
            Some(ci) if s.responses[ci].compact_revision < c0.revision => out.push(at(
                Some(ci),
                Some(s.responses[ci].compact_revision),
                format!(
                    "canceled with compact_revision {}, expected >= {}: {why}",
                    s.responses[ci].compact_revision, c0.revision
                ),
            )),
            Some(_) => {}
            None if s.responses.iter().any(|r| !r.created) => out.push(at(
                None,
                None,
                format!(
                    "never canceled; expected a cancel with compact_revision >= {}: {why}",
                    c0.revision
                ),
            )),
            None => {}
        }
    }
    out
}

/// Content of a delivered event against its committed event.
fn content_problem(
    s: &WatchSession,
    e: &WatchEvent,
    c: &CommittedEvent,
    committed: &CommittedEvents,
) -> Option<String> {
    if c.kind != e.kind || c.kv != e.kv {
        return Some(format!(
            "delivered {}, committed {}",
            ev_full(e.kind, &e.kv),
            ev_full(c.kind, &c.kv)
        ));
    }
    prev_problem(s, e, c, committed)
}

/// The delivered sequence equals the committed one over the covered window.
pub fn committed(sessions: &[WatchSession], committed: &CommittedEvents) -> Vec<Violation> {
    let mut out = Vec::new();
    for (si, s) in sessions.iter().enumerate() {
        for (ri, _, e) in s.events() {
            if let Some(c) = committed.get(e.revision(), e.key()) {
                if let Some(m) = content_problem(s, e, c, committed) {
                    out.push(violation(
                        Guarantee::Committed,
                        si,
                        s,
                        Some(ri),
                        Some(e.revision()),
                        m,
                    ));
                }
            }
        }
        let got: Vec<(i64, Vec<u8>)> = normalized(s.events().map(|(_, _, e)| e).collect())
            .into_iter()
            .map(|e| (e.revision(), e.kv.key.clone()))
            .collect();
        let (first, last) = match s.coverage() {
            Some(c) => c,
            None if got.is_empty() => continue,
            None => (1, 0),
        };
        let want: Vec<(i64, Vec<u8>)> = committed
            .expected(s, first, last)
            .map(|(r, c)| (r, c.kv.key.clone()))
            .collect();
        if got == want {
            continue;
        }
        let mut count: BTreeMap<&(i64, Vec<u8>), i64> = BTreeMap::new();
        for w in &want {
            *count.entry(w).or_default() += 1;
        }
        for g in &got {
            *count.entry(g).or_default() -= 1;
        }
        let show = |items: Vec<&(i64, Vec<u8>)>| -> String {
            let mut v: Vec<String> = items
                .iter()
                .take(5)
                .map(|(r, k_)| format!("{}@{r}", k(k_)))
                .collect();
            if items.len() > 5 {
                v.push(format!("... {} more", items.len() - 5));
            }
            v.join(", ")
        };
        let missing: Vec<_> = count
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k_, _)| *k_)
            .collect();
        let extra: Vec<_> = count
            .iter()
            .filter(|(_, n)| **n < 0)
            .map(|(k_, _)| *k_)
            .collect();
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("{} missing ({})", missing.len(), show(missing)));
        }
        if !extra.is_empty() {
            parts.push(format!(
                "{} unexpected or repeated ({})",
                extra.len(),
                show(extra)
            ));
        }
        if parts.is_empty() {
            let i = got.iter().zip(&want).position(|(g, w)| g != w).unwrap_or(0);
            parts.push(format!(
                "same events in another order: position {i} has {}@{}, committed order has {}@{}",
                k(&got[i].1),
                got[i].0,
                k(&want[i].1),
                want[i].0
            ));
        }
        out.push(violation(
            Guarantee::Committed,
            si,
            s,
            None,
            None,
            format!(
                "delivered {} event(s), the committed history has {} over revisions {first}..={last}: {}",
                got.len(),
                want.len(),
                parts.join("; ")
            ),
        ));
    }
    out
}

/// Events with each run of one revision sorted by key (order inside a
/// revision is not checked).
fn normalized(mut events: Vec<&WatchEvent>) -> Vec<&WatchEvent> {
    let mut i = 0;
    while i < events.len() {
        let rev = events[i].revision();
        let j = i + events[i..]
            .iter()
            .take_while(|e| e.revision() == rev)
            .count();
        events[i..j].sort_by(|a, b| a.kv.key.cmp(&b.kv.key));
        i = j;
    }
    events
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

fn k(b: &[u8]) -> String {
    format!("\"{}\"", b.escape_ascii())
}

fn kv_str(kv: &Kv) -> String {
    format!(
        "{}={} (create {}, mod {}, version {}, lease {})",
        k(&kv.key),
        k(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
}

fn ev_str(kind: EventKind, kv: &Kv) -> String {
    match kind {
        EventKind::Put => format!("Put {}={}@{}", k(&kv.key), k(&kv.value), kv.mod_revision),
        EventKind::Delete => format!("Delete {}@{}", k(&kv.key), kv.mod_revision),
    }
}

fn ev_full(kind: EventKind, kv: &Kv) -> String {
    format!("{kind:?} {}", kv_str(kv))
}

fn prev_str(p: &Prev) -> String {
    match p {
        Prev::Absent => "none".into(),
        Prev::Kv(kv) => kv_str(kv),
        Prev::Unknown => "unknown".into(),
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// The revisions in (from, to] that no session covered.
pub fn uncovered(sessions: &[WatchSession], from: i64, to: i64) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64)> = sessions.iter().filter_map(|s| s.coverage()).collect();
    spans.sort_unstable();
    let mut gaps = Vec::new();
    let mut next = from + 1;
    for (a, b) in spans {
        if a > next && next <= to {
            gaps.push((next, (a - 1).min(to)));
        }
        next = next.max(b + 1);
    }
    if next <= to {
        gaps.push((next, to));
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use Guarantee::*;

    fn put(key: &str, value: &str) -> Change {
        Change::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }

    fn del(key: &str) -> Change {
        Change::Delete { key: key.into() }
    }

    /// a, b, c, d over revisions 2..=8, with a two-key txn at 4 and a
    /// two-key delete at 8.
    fn history() -> CommittedEvents {
        CommittedEvents::from_changes(vec![
            (2, vec![put("a", "1")]),
            (3, vec![put("b", "1")]),
            (4, vec![put("a", "2"), put("c", "1")]),
            (5, vec![del("b")]),
            (6, vec![put("b", "2")]),
            (7, vec![put("d", "1")]),
            (8, vec![del("a"), del("c")]),
        ])
        .unwrap()
    }

    /// Every key.
    fn all(start: i64) -> WatchSession {
        WatchSession::new(0, b"", b"\0", start)
    }

    /// The session as a correct server answers it over [first, last]:
    /// `per` revisions per response (header = its last revision), then a
    /// progress notification at `last` if asked.
    fn deliver(
        mut s: WatchSession,
        c: &CommittedEvents,
        first: i64,
        last: i64,
        per: usize,
        progress: bool,
    ) -> WatchSession {
        let mut by_rev: BTreeMap<i64, Vec<WatchEvent>> = BTreeMap::new();
        for (r, e) in c.expected(&s, first, last) {
            by_rev
                .entry(r)
                .or_default()
                .push(e.to_watch_event(s.prev_kv));
        }
        let revs: Vec<_> = by_rev.into_iter().collect();
        for (t, chunk) in (s.call + 1..).zip(revs.chunks(per)) {
            s.responses.push(WatchResponse {
                header_revision: chunk.last().unwrap().0,
                events: chunk.iter().flat_map(|(_, es)| es.clone()).collect(),
                time: t,
                ..Default::default()
            });
        }
        if progress {
            s.responses.push(progress_at(last));
        }
        s
    }

    fn progress_at(h: i64) -> WatchResponse {
        WatchResponse {
            header_revision: h,
            progress_notify: true,
            ..Default::default()
        }
    }

    fn with_prev(mut s: WatchSession) -> WatchSession {
        s.prev_kv = true;
        s
    }

    /// Response and event index of (revision, key) in a session.
    fn find(s: &WatchSession, rev: i64, key: &str) -> (usize, usize) {
        s.events()
            .find(|(_, _, e)| e.revision() == rev && e.key() == key.as_bytes())
            .map(|(r, i, _)| (r, i))
            .unwrap_or_else(|| panic!("no {key}@{rev}"))
    }

    fn remove(mut s: WatchSession, rev: i64, key: &str) -> WatchSession {
        let (r, i) = find(&s, rev, key);
        s.responses[r].events.remove(i);
        s.responses
            .retain(|r| !r.events.is_empty() || r.progress_notify || r.created);
        s
    }

    fn edit(
        mut s: WatchSession,
        rev: i64,
        key: &str,
        f: impl FnOnce(&mut WatchEvent),
    ) -> WatchSession {
        let (r, i) = find(&s, rev, key);
        f(&mut s.responses[r].events[i]);
        s
    }

    struct Case {
        name: &'static str,
        committed: CommittedEvents,
        sessions: Vec<WatchSession>,
        /// Exactly the guarantees that must be reported broken.
        broken: Vec<Guarantee>,
    }

    fn cases() -> Vec<Case> {
        let h = history();
        let full = || deliver(with_prev(all(2)), &h, 2, 8, 1, true);
        let case = |name, sessions, broken| Case {
            name,
            committed: h.clone(),
            sessions,
            broken,
        };
        let compacted = h.clone().with_compaction(5, 100);
        let mut v = vec![
            // ---- correct sessions ----
            case(
                "all keys, one revision per response, progress",
                vec![full()],
                vec![],
            ),
            case(
                "all keys, batched responses, no prev_kv",
                vec![deliver(all(2), &h, 2, 8, 3, true)],
                vec![],
            ),
            case(
                "range [a, c) with no_delete, from 3",
                vec![{
                    let mut s = WatchSession::new(1, b"a", b"c", 3);
                    s.filters.no_delete = true;
                    deliver(s, &h, 3, 8, 2, true)
                }],
                vec![],
            ),
            case(
                "key b, no_put, prev_kv",
                vec![{
                    let mut s = with_prev(WatchSession::new(2, b"b", b"", 2));
                    s.filters.no_put = true;
                    deliver(s, &h, 2, 8, 1, true)
                }],
                vec![],
            ),
            case(
                "key b from now: created at 4, then 5..=8",
                vec![{
                    let mut s = WatchSession::new(3, b"b", b"", 0);
                    s.responses.push(WatchResponse {
                        header_revision: 4,
                        created: true,
                        ..Default::default()
                    });
                    deliver(s, &h, 5, 8, 1, true)
                }],
                vec![],
            ),
            case(
                "all keys from now: created at 5 (read after the watch began at 4)",
                vec![{
                    let mut s = WatchSession::new(3, b"", b"\0", 0);
                    s.responses.push(WatchResponse {
                        header_revision: 5,
                        created: true,
                        ..Default::default()
                    });
                    deliver(s, &h, 4, 8, 2, true)
                }],
                vec![],
            ),
            case(
                "key b from now: the first event after created is dropped",
                vec![{
                    let mut s = WatchSession::new(3, b"b", b"", 0);
                    s.responses.push(WatchResponse {
                        header_revision: 4,
                        created: true,
                        ..Default::default()
                    });
                    remove(deliver(s, &h, 5, 8, 1, false), 5, "b")
                }],
                vec![Reliable, Committed],
            ),
            case(
                "unwatched key: only progress notifications",
                vec![{
                    let mut s = WatchSession::new(4, b"zz", b"", 2);
                    s.responses
                        .extend([progress_at(3), progress_at(3), progress_at(8)]);
                    s
                }],
                vec![],
            ),
            case(
                "progress below the start revision",
                vec![{
                    let mut s = WatchSession::new(4, b"b", b"", 6);
                    s.responses.push(progress_at(2));
                    deliver(s, &h, 6, 8, 1, true)
                }],
                vec![],
            ),
            case(
                "stopped early: the last events are not owed",
                vec![deliver(all(2), &h, 2, 5, 1, false)],
                vec![],
            ),
            case(
                "resumed watch: 2..=4, then 5..=8",
                vec![deliver(all(2), &h, 2, 4, 1, false), {
                    let mut s = all(5);
                    s.resumes = Some(0);
                    deliver(s, &h, 5, 8, 2, true)
                }],
                vec![],
            ),
            case(
                "resumed watch after a progress notification",
                vec![deliver(all(2), &h, 2, 5, 1, true), {
                    let mut s = all(6);
                    s.resumes = Some(0);
                    deliver(s, &h, 6, 8, 1, true)
                }],
                vec![],
            ),
            // ---- planted violations ----
            case(
                "event dropped",
                vec![remove(full(), 5, "b")],
                vec![Reliable, Bookmarkable, Committed],
            ),
            case(
                "event dropped from a two-key revision",
                vec![remove(full(), 4, "c")],
                vec![Atomic, Reliable, Bookmarkable, Committed],
            ),
            case(
                "last event dropped before the progress notification",
                vec![remove(full(), 7, "d")],
                vec![Reliable, Bookmarkable, Committed],
            ),
            case(
                "event duplicated in its response",
                vec![{
                    let mut s = full();
                    let (r, i) = find(&s, 3, "b");
                    let e = s.responses[r].events[i].clone();
                    s.responses[r].events.push(e);
                    s
                }],
                vec![Unique, Committed],
            ),
            case(
                "event duplicated in a later response",
                vec![{
                    let mut s = full();
                    let (r, i) = find(&s, 3, "b");
                    let e = s.responses[r].events[i].clone();
                    let (r4, _) = find(&s, 4, "a");
                    s.responses.insert(
                        r4 + 1,
                        WatchResponse {
                            header_revision: 4,
                            events: vec![e],
                            ..Default::default()
                        },
                    );
                    s
                }],
                vec![Ordered, Unique, Atomic, Committed],
            ),
            case(
                "responses reordered",
                vec![{
                    let mut s = full();
                    s.responses.swap(1, 2);
                    s.responses[1].header_revision = 4;
                    s
                }],
                vec![Ordered, Committed],
            ),
            case(
                "events reordered inside one response",
                vec![{
                    let mut s = deliver(all(2), &h, 2, 8, 3, true);
                    s.responses[0].events.reverse();
                    s
                }],
                vec![Ordered, Committed],
            ),
            case(
                "one revision split across two responses",
                vec![{
                    let mut s = full();
                    let (r, i) = find(&s, 4, "c");
                    let e = s.responses[r].events.remove(i);
                    s.responses.insert(
                        r + 1,
                        WatchResponse {
                            header_revision: 4,
                            events: vec![e],
                            ..Default::default()
                        },
                    );
                    s
                }],
                vec![Atomic],
            ),
            case(
                "event above its response's header",
                vec![{
                    let mut s = full();
                    s.responses[0].header_revision = 1;
                    s
                }],
                vec![Ordered],
            ),
            case(
                "progress notification before an event it covers",
                vec![{
                    let mut s = full();
                    let (r, _) = find(&s, 6, "b");
                    s.responses.insert(r, progress_at(6));
                    s
                }],
                vec![Bookmarkable],
            ),
            case(
                "progress notification below an event already delivered",
                vec![{
                    let mut s = full();
                    let (r, _) = find(&s, 6, "b");
                    s.responses.insert(r + 1, progress_at(5));
                    s
                }],
                vec![Bookmarkable],
            ),
            case(
                "progress notification goes back",
                vec![{
                    let mut s = full();
                    s.responses.push(progress_at(7));
                    s
                }],
                vec![Bookmarkable],
            ),
            case(
                "progress notification with events",
                vec![{
                    let mut s = full();
                    let (r, _) = find(&s, 7, "d");
                    s.responses[r].progress_notify = true;
                    s
                }],
                vec![Bookmarkable],
            ),
            case(
                "progress-only session misses an event",
                vec![{
                    let mut s = WatchSession::new(4, b"d", b"", 2);
                    s.responses.extend([progress_at(3), progress_at(8)]);
                    s
                }],
                vec![Reliable, Bookmarkable, Committed],
            ),
            case(
                "wrong prev_kv value",
                vec![edit(full(), 4, "a", |e| {
                    e.prev_kv.as_mut().unwrap().value = b"x".to_vec()
                })],
                vec![PrevKv, Committed],
            ),
            case(
                "prev_kv missing with no compaction",
                vec![edit(full(), 8, "a", |e| e.prev_kv = None)],
                vec![PrevKv, Committed],
            ),
            case(
                "prev_kv on a create",
                vec![edit(full(), 6, "b", |e| {
                    e.prev_kv = Some(Kv {
                        key: b"b".to_vec(),
                        value: b"1".to_vec(),
                        create_revision: 3,
                        mod_revision: 3,
                        version: 1,
                        lease: 0,
                    })
                })],
                vec![PrevKv, Committed],
            ),
            case(
                "prev_kv not requested but delivered",
                vec![{
                    let s = deliver(all(2), &h, 2, 8, 1, true);
                    let p = h.get(4, b"a").unwrap().to_watch_event(true).prev_kv;
                    edit(s, 4, "a", |e| e.prev_kv = p)
                }],
                vec![PrevKv, Committed],
            ),
            case(
                "filtered delete delivered",
                vec![{
                    let mut s = WatchSession::new(1, b"a", b"c", 2);
                    s.filters.no_delete = true;
                    let mut s = deliver(s, &h, 2, 8, 1, false);
                    s.responses.push(WatchResponse {
                        header_revision: 8,
                        events: h
                            .at(8)
                            .iter()
                            .filter(|e| e.kv.key == b"a")
                            .map(|e| e.to_watch_event(false))
                            .collect(),
                        ..Default::default()
                    });
                    s
                }],
                vec![Filter, Committed],
            ),
            case(
                "event outside the range delivered",
                vec![{
                    let mut s = deliver(WatchSession::new(1, b"a", b"c", 2), &h, 2, 8, 1, true);
                    let (r, _) = find(&s, 6, "b");
                    s.responses.insert(
                        r + 1,
                        WatchResponse {
                            header_revision: 7,
                            events: vec![h.get(7, b"d").unwrap().to_watch_event(false)],
                            ..Default::default()
                        },
                    );
                    s
                }],
                vec![Filter, Committed],
            ),
            case(
                "invented event",
                vec![{
                    let mut s = full();
                    s.responses[1].events.push(WatchEvent {
                        kind: EventKind::Put,
                        kv: Kv {
                            key: b"z".to_vec(),
                            value: b"1".to_vec(),
                            create_revision: 3,
                            mod_revision: 3,
                            version: 1,
                            lease: 0,
                        },
                        prev_kv: None,
                    });
                    s
                }],
                vec![Committed],
            ),
            case(
                "wrong value",
                vec![edit(full(), 6, "b", |e| e.kv.value = b"x".to_vec())],
                vec![Committed],
            ),
            case(
                "watch from 4 starts at 2",
                vec![{
                    let mut s = deliver(all(2), &h, 2, 8, 1, true);
                    s.start_revision = 4;
                    s
                }],
                vec![Resumable, Committed],
            ),
            case(
                "resumed watch skips an event",
                vec![deliver(all(2), &h, 2, 4, 1, false), {
                    let mut s = all(5);
                    s.resumes = Some(0);
                    remove(deliver(s, &h, 5, 8, 1, true), 5, "b")
                }],
                vec![Resumable, Reliable, Bookmarkable, Committed],
            ),
            case(
                "resumed watch repeats an event",
                vec![deliver(all(2), &h, 2, 4, 1, false), {
                    let mut s = all(5);
                    s.resumes = Some(0);
                    let mut s = deliver(s, &h, 5, 8, 1, true);
                    let again = deliver(all(4), &h, 4, 4, 1, false).responses.remove(0);
                    s.responses.insert(0, again);
                    s
                }],
                vec![Resumable, Committed],
            ),
            case(
                "resumed from the wrong revision",
                vec![deliver(all(2), &h, 2, 4, 1, false), {
                    let mut s = all(6);
                    s.resumes = Some(0);
                    deliver(s, &h, 6, 8, 1, true)
                }],
                vec![Resumable],
            ),
            case(
                "resumed with another range",
                vec![deliver(all(2), &h, 2, 4, 1, false), {
                    let mut s = WatchSession::new(0, b"a", b"", 5);
                    s.resumes = Some(0);
                    deliver(s, &h, 5, 8, 1, true)
                }],
                vec![Resumable],
            ),
        ];
        // ---- compaction at 5, finished at t=100 ----
        let ccase = |name, sessions, broken| Case {
            name,
            committed: compacted.clone(),
            sessions,
            broken,
        };
        let created = |s: &mut WatchSession| {
            s.responses.push(WatchResponse {
                header_revision: 8,
                created: true,
                ..Default::default()
            })
        };
        let cancel = |c: i64| WatchResponse {
            canceled: true,
            compact_revision: c,
            ..Default::default()
        };
        v.extend([
            ccase(
                "watch from a compacted revision is canceled",
                vec![{
                    let mut s = all(3);
                    s.call = 200;
                    created(&mut s);
                    s.responses.push(cancel(5));
                    s
                }],
                vec![],
            ),
            ccase(
                "watch from the compaction revision is served",
                vec![{
                    let mut s = all(5);
                    s.call = 200;
                    deliver(s, &compacted, 5, 8, 1, true)
                }],
                vec![],
            ),
            ccase(
                "watch created before the compaction is served, prev_kv may be missing at <= 5",
                vec![{
                    let mut s = with_prev(all(2));
                    s.call = 50;
                    edit(deliver(s, &compacted, 2, 8, 1, true), 4, "a", |e| {
                        e.prev_kv = None
                    })
                }],
                vec![],
            ),
            ccase(
                "slow watcher canceled while it still needed compacted revisions",
                vec![{
                    let mut s = all(2);
                    s.call = 50;
                    let mut s = deliver(s, &compacted, 2, 3, 1, false);
                    s.responses.push(cancel(5));
                    s
                }],
                vec![],
            ),
            ccase(
                "prev_kv missing above the compaction",
                vec![{
                    let mut s = with_prev(all(2));
                    s.call = 50;
                    edit(deliver(s, &compacted, 2, 8, 1, true), 8, "a", |e| {
                        e.prev_kv = None
                    })
                }],
                vec![PrevKv, Committed],
            ),
            ccase(
                "watch from a compacted revision delivers events",
                vec![{
                    let mut s = all(3);
                    s.call = 200;
                    created(&mut s);
                    deliver(s, &compacted, 3, 8, 1, true)
                }],
                vec![Compaction],
            ),
            ccase(
                "canceled though not compacted",
                vec![{
                    let mut s = all(6);
                    s.call = 200;
                    created(&mut s);
                    s.responses.push(cancel(5));
                    s
                }],
                vec![Compaction],
            ),
            ccase(
                "canceled at a compaction never made",
                vec![{
                    let mut s = all(2);
                    s.call = 200;
                    created(&mut s);
                    s.responses.push(cancel(6));
                    s
                }],
                vec![Compaction],
            ),
            ccase(
                "cancel below the compaction already made",
                vec![{
                    let mut s = all(2);
                    s.call = 200;
                    created(&mut s);
                    s.responses.push(cancel(3));
                    s
                }],
                vec![Compaction],
            ),
            ccase(
                "events after a cancel",
                vec![{
                    let mut s = all(3);
                    s.call = 200;
                    created(&mut s);
                    s.responses.push(cancel(5));
                    deliver(s, &compacted, 5, 8, 1, false)
                }],
                // and so the events 3..=4 it skipped
                vec![Compaction, Reliable, Resumable, Committed],
            ),
        ]);
        v
    }

    #[test]
    fn cases_report_exactly_the_broken_guarantees() {
        let mut failures = Vec::new();
        for c in cases() {
            let vs = validate(&c.sessions, &c.committed);
            let got: BTreeSet<Guarantee> = vs.iter().map(|v| v.guarantee).collect();
            let want: BTreeSet<Guarantee> = c.broken.iter().copied().collect();
            if got != want {
                failures.push(format!(
                    "{}: want {:?}, got {:?}\n{}",
                    c.name,
                    want,
                    got,
                    report(&vs, 10)
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Prints every case's report, to read the messages:
    /// `cargo test -p ferrokv-tests --lib robust::watch::tests::print_reports -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn print_reports() {
        for c in cases() {
            println!(
                "== {}\n{}",
                c.name,
                report(&validate(&c.sessions, &c.committed), 10)
            );
        }
    }

    #[test]
    fn messages_locate_the_violation() {
        let h = history();
        let s = remove(deliver(all(2), &h, 2, 8, 1, true), 5, "b");
        let vs = reliable(&[s], &h);
        assert_eq!(vs.len(), 1);
        let v = &vs[0];
        assert_eq!((v.session, v.revision), (0, Some(5)));
        let text = v.to_string();
        assert!(text.contains("[reliable] session 0"), "{text}");
        assert!(text.contains("Delete \"b\"@5 not delivered"), "{text}");
        assert!(
            text.contains("covered 2 (start_revision) ..= 8 (progress notification"),
            "{text}"
        );
        let r = report(&vs, 5);
        assert!(r.contains("broke reliable"), "{r}");
    }

    #[test]
    fn committed_from_changes_computes_kvs_and_prev() {
        let h = history();
        let a4 = h.get(4, b"a").unwrap();
        assert_eq!((a4.kv.create_revision, a4.kv.version), (2, 2));
        assert!(matches!(&a4.prev, Prev::Kv(p) if p.mod_revision == 2 && p.value == b"1"));
        let b6 = h.get(6, b"b").unwrap();
        assert_eq!(
            (b6.kv.create_revision, b6.kv.version, &b6.prev),
            (6, 1, &Prev::Absent)
        );
        let d8 = h.get(8, b"c").unwrap();
        assert_eq!(d8.kind, EventKind::Delete);
        assert_eq!((d8.kv.create_revision, d8.kv.version), (0, 0));
        assert_eq!(h.at(8).len(), 2);
        assert_eq!(h.last_revision(), Some(8));

        assert!(CommittedEvents::from_changes(vec![(2, vec![del("a")])]).is_err());
        assert!(CommittedEvents::from_changes(vec![(3, vec![]), (3, vec![])]).is_err());
        assert!(
            CommittedEvents::from_changes(vec![(2, vec![put("a", "1"), put("a", "2")])]).is_err()
        );
        let initial = vec![Kv {
            key: b"a".to_vec(),
            value: b"0".to_vec(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        }];
        let h2 = CommittedEvents::from_changes_on(initial.clone(), vec![(2, vec![put("a", "1")])])
            .unwrap();
        assert_eq!(h2.get(2, b"a").unwrap().kv.version, 2);
        assert!(CommittedEvents::from_changes_on(initial, vec![(1, vec![put("a", "1")])]).is_err());
    }

    #[test]
    fn history_rebuilt_from_sessions() {
        let h = history();
        let sessions = vec![
            deliver(with_prev(all(2)), &h, 2, 8, 1, true),
            deliver(WatchSession::new(1, b"b", b"", 2), &h, 2, 8, 1, true),
            deliver(WatchSession::new(2, b"a", b"c", 3), &h, 3, 8, 2, false),
        ];
        let (rebuilt, conflicts) = CommittedEvents::from_sessions(&sessions);
        assert!(conflicts.is_empty(), "{}", report(&conflicts, 10));
        let rebuilt = rebuilt.with_compaction(1, 0); // compactions known: none that matter
        let vs = validate(&sessions, &rebuilt);
        assert!(vs.is_empty(), "{}", report(&vs, 10));
        // prev states: known from the prev_kv watcher
        assert_eq!(
            rebuilt.get(4, b"a").unwrap().prev,
            h.get(4, b"a").unwrap().prev
        );

        // A gap in one watcher is caught because another saw the event.
        let mut gappy = sessions.clone();
        gappy[1] = remove(gappy[1].clone(), 5, "b");
        let (rebuilt, conflicts) = CommittedEvents::from_sessions(&gappy);
        assert!(conflicts.is_empty());
        let got: BTreeSet<_> = validate(&gappy, &rebuilt)
            .iter()
            .map(|v| (v.session, v.guarantee))
            .collect();
        assert_eq!(
            got,
            BTreeSet::from([(1, Reliable), (1, Bookmarkable), (1, Committed)])
        );

        // Watchers that disagree are reported.
        let mut split = sessions.clone();
        split[1] = edit(split[1].clone(), 6, "b", |e| e.kv.value = b"x".to_vec());
        let (_, conflicts) = CommittedEvents::from_sessions(&split);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].guarantee, Committed);
        assert!(
            conflicts[0]
                .message
                .contains("watchers disagree on \"b\"@6"),
            "{}",
            conflicts[0]
        );

        // Without a prev_kv watcher, a prev_kv is checked against the event.
        let mut lone = vec![with_prev(WatchSession::new(0, b"a", b"", 2))];
        lone[0] = deliver(lone[0].clone(), &h, 2, 8, 1, true);
        lone[0].prev_kv = false; // the union must not learn prev states from it
        let (rebuilt, _) = CommittedEvents::from_sessions(&lone);
        assert_eq!(rebuilt.get(4, b"a").unwrap().prev, Prev::Unknown);
        lone[0].prev_kv = true;
        lone[0] = edit(lone[0].clone(), 4, "a", |e| {
            e.prev_kv.as_mut().unwrap().version = 5
        });
        let vs = prev_kv(&lone, &rebuilt);
        assert_eq!(vs.len(), 1, "{}", report(&vs, 10));
        assert!(
            vs[0].message.contains("does not precede the put"),
            "{}",
            vs[0]
        );
    }

    #[test]
    fn coverage_of_sessions() {
        let h = history();
        let s = deliver(all(3), &h, 3, 6, 1, false);
        assert_eq!(s.coverage(), Some((3, 6)));
        let mut now = WatchSession::new(0, b"a", b"", 0);
        assert_eq!(now.coverage(), None);
        now.responses.push(progress_at(4));
        assert_eq!(now.coverage(), None); // [5, 4]: nothing owed yet
        now.responses.push(progress_at(7));
        assert_eq!(now.coverage(), Some((5, 7)));
        assert!(WatchSession::new(0, b"a", b"", 0).in_range(b"a"));
        assert!(!WatchSession::new(0, b"a", b"", 0).in_range(b"ab"));
        assert!(WatchSession::new(0, b"a", b"\0", 0).in_range(b"zz"));
        assert!(!WatchSession::new(0, b"b", b"c", 0).in_range(b"c"));
    }
}
