//! Watch fanout: one hub per core (etcd's `watchableStore`, split over
//! shards). See `docs/watch.md` for the model and its bounds.
//!
//! When the visible revision advances from V0 to V1 the hub reads the events
//! of (V0, V1] once for its core from every shard, merges them by (revision,
//! sub revision) and hands each *synced* watcher the events of each revision
//! that match it, as one response per revision. A watcher whose stream has
//! more than `WATCH_EVENTS_PENDING_MAX` events queued is moved to *unsynced*
//! instead of growing its queue; unsynced watchers (also those created with
//! a start revision the hub already passed) catch up from history in the
//! background and rejoin the synced set once they reach the hub. Writers
//! never wait for watchers.
//!
//! Matching is indexed: watchers of one key are found by a hash lookup per
//! event, only range watchers are tested one by one. Each event is encoded
//! to protobuf at most once per shape (with or without prev_kv) for all the
//! watchers of this core (`SharedEvent::encoded`).

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use ferrokv_mvcc::{Event, EventKind, Revision};
use ferrokv_wire::pb::mvccpb;
use ferrokv_wire::Message;
use futures_channel::oneshot;

use crate::error::Error;
use crate::kv::{shard_of, to_pb, Engine};
use crate::shard::{EventsArgs, ShardMsg};

/// Events one watcher may have queued for its client before it is moved
/// to the unsynced (catch-up from history) path. One revision is always
/// delivered whole, so a queue can exceed this by one revision's events.
pub const WATCH_EVENTS_PENDING_MAX: usize = 1024;
/// Revisions one history read covers at most (etcd `watchBatchMaxRevs`).
pub const WATCH_FETCH_REVISIONS_MAX: i64 = 1000;
/// Events one hub read returns at most (cut at a revision boundary).
pub const WATCH_FETCH_EVENTS_MAX: usize = 10_000;
/// Unsynced watchers caught up per round (etcd `maxWatchersPerSync`).
pub const WATCH_UNSYNCED_PER_ROUND_MAX: usize = 512;
/// How often unsynced watchers are retried without being woken.
pub const WATCH_RESYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Watchers on this member (`etcd_debugging_mvcc_watcher_total`).
pub static WATCHERS_TOTAL: AtomicI64 = AtomicI64::new(0);
/// Unsynced watchers (`etcd_debugging_mvcc_slow_watcher_total`).
pub static WATCHERS_SLOW_TOTAL: AtomicI64 = AtomicI64::new(0);

/// The keys a watcher covers, after etcd's normalization of a create
/// request (empty key = `\0`; range_end `\0` = every key from `key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    Key(Vec<u8>),
    From(Vec<u8>),
    Between(Vec<u8>, Vec<u8>),
}

/// Why a watch cannot be created; the texts are etcd's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
}

impl KeyRange {
    pub fn from_request(key: &[u8], range_end: &[u8]) -> Result<KeyRange, WatchError> {
        let key = if key.is_empty() {
            vec![0]
        } else {
            key.to_vec()
        };
        match range_end {
            [] => Ok(KeyRange::Key(key)),
            [0] => Ok(KeyRange::From(key)),
            end if key.as_slice() < end => Ok(KeyRange::Between(key, end.to_vec())),
            _ => Err(WatchError::EmptyRange),
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Key(key) => k == key.as_slice(),
            KeyRange::From(key) => k >= key.as_slice(),
            KeyRange::Between(key, end) => k >= key.as_slice() && k < end.as_slice(),
        }
    }

    /// The same range in the (key, range_end) form of `Store::events`.
    fn store_args(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            KeyRange::Key(k) => (k.clone(), Vec::new()),
            KeyRange::From(k) => (k.clone(), vec![0]),
            KeyRange::Between(k, e) => (k.clone(), e.clone()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub range: KeyRange,
    /// 0: from the next revision (live only).
    pub start_rev: i64,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
}

impl WatchSpec {
    fn matches(&self, e: &Event) -> bool {
        let filtered = match e.kind {
            EventKind::Put => self.no_put,
            EventKind::Delete => self.no_delete,
        };
        !filtered && self.range.contains(&e.kv.key)
    }
}

/// An event shared by every watcher of a core that receives it, with its
/// protobuf encoding made once per shape on first use.
#[derive(Debug)]
pub struct SharedEvent {
    pub event: Event,
    /// `mvccpb.Event` bytes without and with prev_kv.
    encoded: [OnceCell<Bytes>; 2],
}

impl SharedEvent {
    pub fn new(event: Event) -> Rc<SharedEvent> {
        Rc::new(SharedEvent {
            event,
            encoded: [OnceCell::new(), OnceCell::new()],
        })
    }

    /// The event as etcd sends it; prev_kv only when the watcher asked.
    pub fn to_pb(&self, prev_kv: bool) -> mvccpb::Event {
        let e = &self.event;
        mvccpb::Event {
            r#type: match e.kind {
                EventKind::Put => mvccpb::event::EventType::Put as i32,
                EventKind::Delete => mvccpb::event::EventType::Delete as i32,
            },
            kv: Some(to_pb(e.kv.clone())),
            prev_kv: if prev_kv {
                e.prev_kv.clone().map(to_pb)
            } else {
                None
            },
        }
    }

    /// [`Self::to_pb`] encoded, computed once per shape.
    pub fn encoded(&self, prev_kv: bool) -> Bytes {
        // Without a previous value both shapes are the same bytes.
        let shape = usize::from(prev_kv && self.event.prev_kv.is_some());
        self.encoded[shape]
            .get_or_init(|| Bytes::from(self.to_pb(prev_kv).encode_to_vec()))
            .clone()
    }
}

/// One response for a client stream, produced by the hub or the stream.
#[derive(Debug, Default)]
pub struct WatchOut {
    pub watch_id: i64,
    pub header_rev: i64,
    pub events: Vec<Rc<SharedEvent>>,
    pub created: bool,
    pub canceled: bool,
    pub compact_revision: i64,
    pub cancel_reason: String,
    /// The hub watcher whose pending count `events` hold.
    pub hub_key: Option<u64>,
}

/// The responses queued for one client stream. Events are bounded per
/// watcher by the hub; control responses by the stream, which stops reading
/// requests while too many are queued.
#[derive(Default)]
pub struct WatchStream {
    items: RefCell<VecDeque<WatchOut>>,
    ready: event_listener::Event,
}

impl WatchStream {
    pub fn push(&self, out: WatchOut) {
        self.items.borrow_mut().push_back(out);
        self.ready.notify(1);
    }

    pub fn len(&self) -> usize {
        self.items.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.borrow().is_empty()
    }

    /// The next queued response. Cancel-safe: an item is taken only in the
    /// poll that returns it.
    pub async fn next(&self) -> WatchOut {
        loop {
            if let Some(o) = self.items.borrow_mut().pop_front() {
                return o;
            }
            let l = self.ready.listen();
            if !self.is_empty() {
                continue;
            }
            l.await;
        }
    }
}

struct Watcher {
    spec: WatchSpec,
    watch_id: i64,
    stream: Rc<WatchStream>,
    /// The lowest revision this watcher still needs.
    min_rev: i64,
    synced: bool,
    /// Events queued on the stream and not yet sent.
    pending_events: usize,
    /// A catch-up read is in flight.
    busy: bool,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        WATCHERS_TOTAL.fetch_sub(1, Relaxed);
        if !self.synced {
            WATCHERS_SLOW_TOTAL.fetch_sub(1, Relaxed);
        }
    }
}

/// Which watchers an event on a key can concern: watchers of one key are
/// found by hash, only range watchers (prefix, from-key, interval) are
/// tested one by one.
#[derive(Default)]
pub struct WatcherIndex {
    by_key: HashMap<Box<[u8]>, Ids>,
    ranged: BTreeMap<u64, KeyRange>,
}

/// The watchers of one key: almost always one, so no collection for it
/// (idle watchers are counted in bytes).
enum Ids {
    One(u64),
    Many(Vec<u64>),
}

impl WatcherIndex {
    pub fn insert(&mut self, id: u64, range: &KeyRange) {
        match range {
            KeyRange::Key(k) => match self.by_key.get_mut(k.as_slice()) {
                None => {
                    self.by_key
                        .insert(k.clone().into_boxed_slice(), Ids::One(id));
                }
                Some(ids) => match ids {
                    Ids::One(first) => *ids = Ids::Many(vec![*first, id]),
                    Ids::Many(v) => v.push(id),
                },
            },
            _ => {
                self.ranged.insert(id, range.clone());
            }
        }
    }

    pub fn remove(&mut self, id: u64, range: &KeyRange) {
        match range {
            KeyRange::Key(k) => {
                let emptied = match self.by_key.get_mut(k.as_slice()) {
                    None => false,
                    Some(Ids::One(only)) => *only == id,
                    Some(ids @ Ids::Many(_)) => {
                        if let Ids::Many(v) = ids {
                            v.retain(|x| *x != id);
                            if let [last] = v[..] {
                                *ids = Ids::One(last);
                            }
                        }
                        false
                    }
                };
                if emptied {
                    self.by_key.remove(k.as_slice());
                }
            }
            _ => {
                self.ranged.remove(&id);
            }
        }
    }

    /// Appends the watchers whose key or range holds `key`: the single-key
    /// ones first, then the range ones, each in id order.
    pub fn candidates(&self, key: &[u8], out: &mut Vec<u64>) {
        match self.by_key.get(key) {
            Some(Ids::One(id)) => out.push(*id),
            Some(Ids::Many(v)) => out.extend(v.iter().copied()),
            None => {}
        }
        out.extend(
            self.ranged
                .iter()
                .filter(|(_, r)| r.contains(key))
                .map(|(id, _)| *id),
        );
    }

    pub fn clear(&mut self) {
        self.by_key.clear();
        self.ranged.clear();
    }
}

struct HubState {
    /// Every event <= this was handed to the watchers synced at the time.
    hub_rev: i64,
    next_key: u64,
    watchers: BTreeMap<u64, Watcher>,
    index: WatcherIndex,
    /// Watchers that asked for prev_kv: reads fetch it only if any did.
    prev_kv_watchers: usize,
}

impl HubState {
    fn insert(&mut self, key: u64, w: Watcher) {
        self.index.insert(key, &w.spec.range);
        if w.spec.prev_kv {
            self.prev_kv_watchers += 1;
        }
        self.watchers.insert(key, w);
    }

    fn remove(&mut self, key: u64) -> bool {
        let Some(w) = self.watchers.remove(&key) else {
            return false;
        };
        self.index.remove(key, &w.spec.range);
        if w.spec.prev_kv {
            self.prev_kv_watchers -= 1;
        }
        true
    }
}

pub struct WatchHub {
    engine: Engine,
    state: RefCell<HubState>,
    resync: event_listener::Event,
    stopped: Cell<bool>,
}

impl WatchHub {
    /// A hub for this core, with its dispatch and catch-up tasks running.
    pub fn start(engine: Engine) -> Rc<WatchHub> {
        let hub = Rc::new(WatchHub {
            state: RefCell::new(HubState {
                hub_rev: engine.sequencer().visible(),
                next_key: 0,
                watchers: BTreeMap::new(),
                index: WatcherIndex::default(),
                prev_kv_watchers: 0,
            }),
            engine,
            resync: event_listener::Event::new(),
            stopped: Cell::new(false),
        });
        glommio::spawn_local(hub.clone().dispatch_loop()).detach();
        glommio::spawn_local(hub.clone().resync_loop()).detach();
        hub
    }

    /// The revision up to which every synced watcher has been served.
    pub fn rev(&self) -> i64 {
        self.state.borrow().hub_rev
    }

    /// Register a watcher whose responses go to `stream`. Returns its hub key.
    pub fn watch(&self, stream: &Rc<WatchStream>, watch_id: i64, spec: WatchSpec) -> u64 {
        let mut st = self.state.borrow_mut();
        let start = if spec.start_rev <= 0 {
            self.engine.sequencer().visible() + 1
        } else {
            spec.start_rev
        };
        // As etcd: a start after everything dispatched is live at once;
        // an older one replays history first.
        let synced = start > st.hub_rev;
        let key = st.next_key;
        st.next_key += 1;
        WATCHERS_TOTAL.fetch_add(1, Relaxed);
        if !synced {
            WATCHERS_SLOW_TOTAL.fetch_add(1, Relaxed);
        }
        st.insert(
            key,
            Watcher {
                spec,
                watch_id,
                stream: stream.clone(),
                min_rev: start,
                synced,
                pending_events: 0,
                busy: false,
            },
        );
        if !synced {
            self.resync.notify(1);
        }
        key
    }

    pub fn cancel(&self, key: u64) -> bool {
        self.state.borrow_mut().remove(key)
    }

    /// The stream sent `n` events of watcher `key`.
    pub fn sent(&self, key: u64, n: usize) {
        let mut st = self.state.borrow_mut();
        if let Some(w) = st.watchers.get_mut(&key) {
            debug_assert!(w.pending_events >= n);
            w.pending_events = w.pending_events.saturating_sub(n);
            if !w.synced && w.pending_events <= WATCH_EVENTS_PENDING_MAX / 2 {
                self.resync.notify(1);
            }
        }
    }

    /// The revision a progress notification for `key` may report: only a
    /// synced watcher has seen everything up to the hub's revision.
    pub fn progress(&self, key: u64) -> Option<i64> {
        let st = self.state.borrow();
        st.watchers
            .get(&key)
            .filter(|w| w.synced)
            .map(|_| st.hub_rev)
    }

    /// Stop serving (tests): the loops end at their next wake-up.
    pub fn stop(&self) {
        self.stopped.set(true);
        let mut st = self.state.borrow_mut();
        st.watchers.clear();
        st.index.clear();
        st.prev_kv_watchers = 0;
        self.resync.notify(usize::MAX);
    }

    /// Read events in `from..=to` on `range` from every shard that can hold
    /// them, merged in (revision, sub) order. Returns them with the last
    /// revision they fully cover.
    async fn fetch(
        &self,
        range: &KeyRange,
        from: i64,
        to: i64,
        prev_kv: bool,
        events_max: usize,
    ) -> Result<(Vec<(Revision, Event)>, i64), Error> {
        let shards: Vec<u32> = match range {
            KeyRange::Key(k) => vec![shard_of(k, self.engine.shard_count())],
            _ => (0..self.engine.shard_count()).collect(),
        };
        let (key, range_end) = range.store_args();
        let mut waits = Vec::with_capacity(shards.len());
        for s in shards {
            let (tx, rx) = oneshot::channel();
            let args = EventsArgs {
                key: key.clone(),
                range_end: range_end.clone(),
                from,
                to,
                prev_kv,
                events_max,
            };
            self.engine.send(s, ShardMsg::Events(args, tx)).await?;
            waits.push(rx);
        }
        let mut all = Vec::new();
        let mut covered = to;
        for w in waits {
            let (evs, c) = w
                .await
                .map_err(|_| Error::Internal("shard stopped".into()))?
                .map_err(|e| match e {
                    ferrokv_mvcc::Error::Compacted => Error::Compacted,
                    other => Error::Internal(other.to_string()),
                })?;
            covered = covered.min(c);
            all.extend(evs);
        }
        all.retain(|(r, _)| r.main <= covered);
        all.sort_by_key(|(r, _)| *r);
        debug_assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        Ok((all, covered))
    }

    async fn dispatch_loop(self: Rc<Self>) {
        while !self.stopped.get() {
            let from = self.rev() + 1;
            self.engine.sequencer().wait_visible(from).await;
            let visible = self.engine.sequencer().visible();
            let (any, prev_kv) = {
                let st = self.state.borrow();
                // Counted, not scanned: this runs once per visible
                // revision step, with possibly 100k idle watchers here.
                (!st.watchers.is_empty(), st.prev_kv_watchers > 0)
            };
            if !any {
                // Nobody to serve: a later watcher starting below this
                // revision replays from history.
                self.state.borrow_mut().hub_rev = visible;
                continue;
            }
            let to = visible.min(from - 1 + WATCH_FETCH_REVISIONS_MAX);
            let all = KeyRange::From(vec![0]);
            match self
                .fetch(&all, from, to, prev_kv, WATCH_FETCH_EVENTS_MAX)
                .await
            {
                Ok((evs, covered)) => self.dispatch(evs, covered),
                Err(Error::Compacted) => {
                    // History this core had not dispatched yet is gone: every
                    // synced watcher takes the catch-up path, which cancels
                    // it with the compaction revision as etcd does.
                    let mut st = self.state.borrow_mut();
                    for w in st.watchers.values_mut().filter(|w| w.synced) {
                        w.synced = false;
                        w.min_rev = w.min_rev.max(from);
                        WATCHERS_SLOW_TOTAL.fetch_add(1, Relaxed);
                    }
                    st.hub_rev = to;
                    self.resync.notify(usize::MAX);
                }
                Err(e) => {
                    log::warn!("watch hub: reading events {from}..={to}: {e}");
                    glommio::timer::sleep(WATCH_RESYNC_INTERVAL).await;
                }
            }
        }
    }

    /// Hand the events of revisions up to `covered` (all read, merged) to
    /// the synced watchers: one response per watcher and revision.
    fn dispatch(&self, evs: Vec<(Revision, Event)>, covered: i64) {
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        debug_assert!(covered > st.hub_rev);
        let evs: Vec<(i64, Rc<SharedEvent>)> = evs
            .into_iter()
            .map(|(r, e)| (r.main, SharedEvent::new(e)))
            .collect();
        let mut slow = false;
        let mut candidates = Vec::new();
        let mut i = 0;
        while i < evs.len() {
            let rev = evs[i].0;
            let mut j = i;
            while j < evs.len() && evs[j].0 == rev {
                j += 1;
            }
            // Per watcher, the events of this revision it matches, in
            // event (sub revision) order: (watcher, event index) pairs,
            // sorted stably by watcher (a sort, not a map: one revision may
            // concern every one of 100k watchers).
            let mut pairs: Vec<(u64, usize)> = Vec::new();
            for (n, (_, e)) in evs[i..j].iter().enumerate() {
                candidates.clear();
                st.index.candidates(&e.event.kv.key, &mut candidates);
                for key in &candidates {
                    let Some(w) = st.watchers.get(key) else {
                        continue;
                    };
                    if w.synced && rev >= w.min_rev && w.spec.matches(&e.event) {
                        pairs.push((*key, i + n));
                    }
                }
            }
            if j - i > 1 {
                pairs.sort_by_key(|(key, _)| *key);
            }
            let mut p = 0;
            while p < pairs.len() {
                let key = pairs[p].0;
                let mut sel = Vec::new();
                while p < pairs.len() && pairs[p].0 == key {
                    sel.push(evs[pairs[p].1].1.clone());
                    p += 1;
                }
                let Some(w) = st.watchers.get_mut(&key) else {
                    continue;
                };
                if w.pending_events > 0 && w.pending_events + sel.len() > WATCH_EVENTS_PENDING_MAX {
                    // The client is not keeping up: stop queueing, catch up
                    // from history once it drains (etcd's slow watchers).
                    w.synced = false;
                    w.min_rev = rev;
                    WATCHERS_SLOW_TOTAL.fetch_add(1, Relaxed);
                    slow = true;
                    continue;
                }
                w.pending_events += sel.len();
                w.min_rev = rev + 1;
                w.stream.push(WatchOut {
                    watch_id: w.watch_id,
                    header_rev: rev,
                    events: sel,
                    hub_key: Some(key),
                    ..WatchOut::default()
                });
            }
            i = j;
        }
        // A synced watcher's min_rev is not advanced here (that would touch
        // every idle watcher per step): below hub_rev it is stale and
        // harmless, since later events are all above hub_rev.
        st.hub_rev = covered;
        if slow {
            self.resync.notify(usize::MAX);
        }
    }

    async fn resync_loop(self: Rc<Self>) {
        while !self.stopped.get() {
            let listener = self.resync.listen();
            let ready: Vec<u64> = {
                let st = self.state.borrow();
                st.watchers
                    .iter()
                    .filter(|(_, w)| {
                        !w.synced && !w.busy && w.pending_events <= WATCH_EVENTS_PENDING_MAX / 2
                    })
                    .map(|(k, _)| *k)
                    .take(WATCH_UNSYNCED_PER_ROUND_MAX)
                    .collect()
            };
            if ready.is_empty() {
                futures_lite::future::or(listener, glommio::timer::sleep(WATCH_RESYNC_INTERVAL))
                    .await;
                continue;
            }
            drop(listener);
            for key in ready {
                self.catch_up(key).await;
            }
        }
    }

    /// One bounded history read for an unsynced watcher.
    async fn catch_up(&self, key: u64) {
        let (range, from, prev_kv, budget, target) = {
            let mut st = self.state.borrow_mut();
            let target = st.hub_rev;
            let Some(w) = st.watchers.get_mut(&key) else {
                return;
            };
            if w.synced || w.busy {
                return;
            }
            if w.min_rev > target {
                w.synced = true;
                WATCHERS_SLOW_TOTAL.fetch_sub(1, Relaxed);
                return;
            }
            w.busy = true;
            (
                w.spec.range.clone(),
                w.min_rev,
                w.spec.prev_kv,
                WATCH_EVENTS_PENDING_MAX
                    .saturating_sub(w.pending_events)
                    .max(1),
                target,
            )
        };
        let to = target.min(from - 1 + WATCH_FETCH_REVISIONS_MAX);
        let compacted = from < self.engine.sequencer().compact_revision();
        let result = if compacted {
            Err(Error::Compacted)
        } else {
            self.fetch(&range, from, to, prev_kv, budget).await
        };
        let mut st = self.state.borrow_mut();
        let hub_rev = st.hub_rev;
        let Some(w) = st.watchers.get_mut(&key) else {
            return;
        };
        w.busy = false;
        match result {
            Ok((evs, covered)) => {
                let sel: Vec<Rc<SharedEvent>> = evs
                    .into_iter()
                    .filter(|(_, e)| w.spec.matches(e))
                    .map(|(_, e)| SharedEvent::new(e))
                    .collect();
                if !sel.is_empty() {
                    w.pending_events += sel.len();
                    // As etcd: a catch-up response carries the current
                    // revision, and may hold several revisions' events.
                    w.stream.push(WatchOut {
                        watch_id: w.watch_id,
                        header_rev: hub_rev,
                        events: sel,
                        hub_key: Some(key),
                        ..WatchOut::default()
                    });
                }
                w.min_rev = covered + 1;
                if w.min_rev > hub_rev {
                    w.synced = true;
                    WATCHERS_SLOW_TOTAL.fetch_sub(1, Relaxed);
                }
            }
            Err(Error::Compacted) => {
                // etcd sends the compaction revision (header revision 0) and
                // drops the watcher; the client sees it canceled.
                w.stream.push(WatchOut {
                    watch_id: w.watch_id,
                    header_rev: 0,
                    canceled: true,
                    compact_revision: self.engine.sequencer().compact_revision(),
                    ..WatchOut::default()
                });
                st.remove(key);
            }
            Err(e) => {
                log::warn!("watch hub: catch-up read {from}..={to}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_finds_exactly_the_watchers_whose_range_holds_the_key() {
        let ranges = [
            KeyRange::from_request(b"a", b"").unwrap(),
            KeyRange::from_request(b"a", b"b").unwrap(),
            KeyRange::from_request(b"m", b"\0").unwrap(),
            KeyRange::from_request(b"a", b"").unwrap(),
            KeyRange::from_request(b"", b"\0").unwrap(),
        ];
        let mut idx = WatcherIndex::default();
        for (id, r) in ranges.iter().enumerate() {
            idx.insert(id as u64, r);
        }
        let find = |idx: &WatcherIndex, key: &[u8]| {
            let mut out = Vec::new();
            idx.candidates(key, &mut out);
            out.sort_unstable();
            out
        };
        for key in [&b"a"[..], b"ab", b"b", b"m", b"zz", b"\0"] {
            let want: Vec<u64> = (0..ranges.len() as u64)
                .filter(|i| ranges[*i as usize].contains(key))
                .collect();
            assert_eq!(find(&idx, key), want, "key {key:?}");
        }
        idx.remove(0, &ranges[0]);
        idx.remove(1, &ranges[1]);
        assert_eq!(find(&idx, b"a"), vec![3, 4]);
        idx.remove(3, &ranges[3]);
        assert!(idx.by_key.is_empty(), "an emptied key leaves no entry");
    }

    #[test]
    fn key_range_normalization_matches_etcd() {
        assert_eq!(
            KeyRange::from_request(b"", b"").unwrap(),
            KeyRange::Key(vec![0])
        );
        assert_eq!(
            KeyRange::from_request(b"", b"\0").unwrap(),
            KeyRange::From(vec![0])
        );
        assert_eq!(
            KeyRange::from_request(b"a", b"b").unwrap(),
            KeyRange::Between(b"a".to_vec(), b"b".to_vec())
        );
        assert_eq!(
            KeyRange::from_request(b"b", b"a"),
            Err(WatchError::EmptyRange)
        );
        assert_eq!(
            KeyRange::from_request(b"a", b"a"),
            Err(WatchError::EmptyRange)
        );
        let r = KeyRange::from_request(b"foo", b"fop").unwrap();
        assert!(r.contains(b"foo") && r.contains(b"foo/x") && !r.contains(b"fop"));
        let f = KeyRange::from_request(b"b", b"\0").unwrap();
        assert!(f.contains(b"b") && f.contains(b"zzz") && !f.contains(b"a"));
        let k = KeyRange::from_request(b"k", b"").unwrap();
        assert!(k.contains(b"k") && !k.contains(b"k2"));
    }
}
