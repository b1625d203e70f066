//! Client transactions in the simulation, evaluated by the real evaluator
//! (`ferrokv_shards::kv::eval`) against a member's shard states, and what
//! is checked of them once the run has converged.
//!
//! Keys name their group (`"1/k3"` lives in group 1), so a transaction's
//! groups are chosen by its keys, as ferrokv's are by their hash.

use std::cell::RefCell;

use ferrokv_mvcc::{EventKind, RangeResult, WriteOp};
use ferrokv_shards::kv::eval::{self, View};
use ferrokv_shards::kv::lease_shard;
use ferrokv_shards::record::Part;
use ferrokv_shards::sequencer::Sequencer;
use ferrokv_shards::state::ShardState;
use ferrokv_shards::Error;
use ferrokv_wire::pb::etcdserverpb as pb;
use futures_lite::future;

use super::rng::Rng;

/// Keys per group: few, so compares race and keys are overwritten.
const KEYS_PER_GROUP: usize = 4;

pub fn key(group: usize, k: usize) -> Vec<u8> {
    format!("{group}/k{k}").into_bytes()
}

/// The group a key lives in (its prefix).
pub fn group_of(key: &[u8]) -> usize {
    key.iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0, |n, b| n * 10 + usize::from(b - b'0'))
}

/// One group's state as a view sees it: a leader's (writes go there) or a
/// converged member's (read at a revision).
pub enum Slot<'a> {
    Writing(&'a mut ShardState, u64),
    Reading(&'a ShardState),
}

/// The member's shards as the evaluator's view (the engine's is
/// `kv::write::Shards`).
pub struct SimView<'a> {
    slots: RefCell<Vec<Slot<'a>>>,
    seq: &'a Sequencer,
    at: Option<i64>,
}

impl<'a> SimView<'a> {
    /// The latest state of a leader's groups, each led in its term.
    pub fn leader(states: Vec<(&'a mut ShardState, u64)>, seq: &'a Sequencer) -> Self {
        SimView {
            slots: RefCell::new(
                states
                    .into_iter()
                    .map(|(s, term)| Slot::Writing(s, term))
                    .collect(),
            ),
            seq,
            at: None,
        }
    }

    /// Converged states read at revision `at`.
    pub fn at(states: Vec<&'a ShardState>, seq: &'a Sequencer, at: i64) -> Self {
        SimView {
            slots: RefCell::new(states.into_iter().map(Slot::Reading).collect()),
            seq,
            at: Some(at),
        }
    }

    fn with<T>(&self, group: usize, f: impl FnOnce(&ShardState) -> T) -> Result<T, Error> {
        let slots = self.slots.borrow();
        match slots.get(group) {
            Some(Slot::Writing(s, _)) => Ok(f(s)),
            Some(Slot::Reading(s)) => Ok(f(s)),
            None => Err(Error::Internal(format!("no group {group}"))),
        }
    }
}

impl View for SimView<'_> {
    fn at(&self) -> Option<i64> {
        self.at
    }

    fn seq(&self) -> &Sequencer {
        self.seq
    }

    fn shard_of(&self, key: &[u8]) -> u32 {
        group_of(key) as u32
    }

    async fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        rev: i64,
        limit: usize,
        keys_only: bool,
        count_only: bool,
    ) -> Result<RangeResult, Error> {
        if self.at.is_some() && rev <= 0 {
            // Read at a revision: none yet is the empty store (0 is not
            // "latest" here).
            return Ok(RangeResult::default());
        }
        let groups: Vec<usize> = if range_end.is_empty() {
            vec![group_of(key)]
        } else {
            (0..self.slots.borrow().len()).collect()
        };
        let mut results = Vec::with_capacity(groups.len());
        for g in groups {
            results.push(self.with(g, |s| {
                s.store
                    .range(key, range_end, rev, limit, keys_only, count_only)
            })??);
        }
        Ok(eval::merge(results, limit))
    }

    async fn lease_exists(&self, id: i64) -> Result<bool, Error> {
        let n = self.slots.borrow().len() as u32;
        self.with(lease_shard(id, n) as usize, |s| s.leases.contains(id))
    }

    async fn apply(
        &self,
        shard: u32,
        rev: i64,
        first_sub: i64,
        ops: &[WriteOp],
    ) -> Result<(), Error> {
        match self.slots.borrow_mut().get_mut(shard as usize) {
            Some(Slot::Writing(s, term)) => {
                s.apply(rev, first_sub, ops, *term);
                Ok(())
            }
            _ => Err(Error::Internal(format!(
                "group {shard} is not written here"
            ))),
        }
    }
}

/// A client's transaction, drawn from the seed: puts in one or two groups,
/// a compare-and-swap on a key's mod revision (a Get on failure, as
/// Kubernetes' updates), a delete, or a put-or-delete on a key's version.
/// `guess` is a mod revision the client believes the compared key has;
/// its puts attach the keys to `lease` (0: none).
pub fn request(rng: &mut Rng, groups: usize, t: usize, guess: i64, lease: i64) -> pb::TxnRequest {
    let value = format!("t{t}").into_bytes();
    let g = rng.below(groups);
    let a = key(g, rng.below(KEYS_PER_GROUP));
    let other = if groups > 1 {
        (g + 1 + rng.below(groups - 1)) % groups
    } else {
        g
    };
    let b = key(other, rng.below(KEYS_PER_GROUP));
    let put = |k: &[u8]| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: k.to_vec().into(),
            value: value.clone().into(),
            lease,
            ..Default::default()
        })),
    };
    let delete = |k: &[u8]| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: k.to_vec().into(),
                ..Default::default()
            },
        )),
    };
    let get = |k: &[u8]| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
            key: k.to_vec().into(),
            ..Default::default()
        })),
    };
    let compare = |target: pb::compare::CompareTarget,
                   result: pb::compare::CompareResult,
                   union: pb::compare::TargetUnion| pb::Compare {
        key: a.clone().into(),
        target: target as i32,
        result: result as i32,
        target_union: Some(union),
        ..Default::default()
    };
    let mut puts = vec![put(&a)];
    if a != b && rng.chance(50) {
        puts.push(put(&b));
    }
    match rng.below(10) {
        0..=3 => pb::TxnRequest {
            success: puts,
            ..Default::default()
        },
        4..=6 => pb::TxnRequest {
            compare: vec![compare(
                pb::compare::CompareTarget::Mod,
                pb::compare::CompareResult::Equal,
                pb::compare::TargetUnion::ModRevision(guess),
            )],
            success: puts,
            failure: vec![get(&a)],
        },
        7 => pb::TxnRequest {
            success: vec![delete(&a)],
            ..Default::default()
        },
        _ => pb::TxnRequest {
            compare: vec![compare(
                pb::compare::CompareTarget::Version,
                pb::compare::CompareResult::Greater,
                pb::compare::TargetUnion::Version(0),
            )],
            success: vec![delete(&a)],
            failure: puts,
        },
    }
}

/// The key a request compares or writes first (the client's guess of its
/// mod revision is taken from it).
pub fn first_key(t: &pb::TxnRequest) -> Vec<u8> {
    if let Some(c) = t.compare.first() {
        return c.key.to_vec();
    }
    t.success
        .iter()
        .find_map(|op| match &op.request {
            Some(pb::request_op::Request::RequestPut(p)) => Some(p.key.to_vec()),
            Some(pb::request_op::Request::RequestDeleteRange(d)) => Some(d.key.to_vec()),
            _ => None,
        })
        .unwrap_or_default()
}

/// What the evaluator made of a request on a leader.
pub struct Evaluated {
    pub succeeded: bool,
    pub responses: Vec<pb::ResponseOp>,
    pub st: eval::WriteState,
}

/// Evaluates `t` against a leader's latest state, applying its writes
/// ahead of the log, as the coordinator does under its fences. The inner
/// error is the evaluator's refusal of a request that applied nothing (a
/// put to a lease that is not in its table).
pub fn evaluate(
    view: &SimView<'_>,
    t: &pb::TxnRequest,
) -> Result<Result<Evaluated, Error>, String> {
    match future::block_on(future::poll_once(eval::evaluate(view, t))) {
        Some(Ok((path, st, responses))) => Ok(Ok(Evaluated {
            succeeded: path.succeeded,
            responses,
            st,
        })),
        Some(Err((e @ Error::LeaseNotFound, None))) => Ok(Err(e)),
        Some(Err((e, _))) => Err(format!("the evaluator refused a transaction: {e}")),
        None => Err("the evaluator waited (the sequencer held back a revision)".into()),
    }
}

/// A lease revoke's deletes of `keys` at one revision, applied ahead of
/// the log in their groups, with a part in the lease's group
/// (`eval::revoke_deletes`, as `Engine::lease_revoke_here` runs it under
/// its fences).
pub fn revoke_deletes(
    view: &SimView<'_>,
    keys: &[Vec<u8>],
    lease_group: u32,
    st: &mut eval::WriteState,
) -> Result<(), String> {
    let run = eval::revoke_deletes(view, keys.iter(), lease_group, st);
    match future::block_on(future::poll_once(run)) {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(format!("a lease revoke's deletes were refused: {e}")),
        None => Err("a lease revoke waited (the sequencer held back a revision)".into()),
    }
}

/// Whether every op of `part` is in `st`'s history at `rev`.
pub fn held(st: &ShardState, part: &Part, rev: i64) -> Result<bool, String> {
    if rev > st.store.last_revision() {
        return Ok(false);
    }
    for op in &part.ops {
        let (key, value) = match op {
            WriteOp::Put { key, value, .. } => (key, Some(value)),
            WriteOp::Delete { key } => (key, None),
        };
        let events = st
            .store
            .events_with_rev(key, &[], rev, rev, false)
            .map_err(|e| format!("group {}: {e}", part.shard))?;
        let found = events.iter().any(|(r, e)| {
            r.main == rev
                && match value {
                    Some(v) => e.kind == EventKind::Put && e.kv.value == *v,
                    None => e.kind == EventKind::Delete,
                }
        });
        if !found {
            return Ok(false);
        }
    }
    Ok(true)
}

/// An acknowledged answer agrees with the converged history: its compares
/// give the same branch against the state it was ordered after (`at`:
/// the revision before its own, or its header when it wrote nothing), and
/// the ranges of a branch that wrote nothing return that state.
pub fn check_answer(
    view: &SimView<'_>,
    t: &pb::TxnRequest,
    succeeded: bool,
    responses: &[pb::ResponseOp],
    wrote: bool,
) -> Result<(), String> {
    let at = view
        .at()
        .ok_or("the answer is checked against a revision")?;
    let path = future::block_on(future::poll_once(eval::compare_path(view, t)))
        .ok_or("the compares waited")?
        .map_err(|e| format!("compares at {at}: {e}"))?;
    if path.succeeded != succeeded {
        return Err(format!(
            "answered succeeded={succeeded}, but at revision {at} the compares give {}",
            path.succeeded
        ));
    }
    if wrote {
        return Ok(());
    }
    let ops = if succeeded { &t.success } else { &t.failure };
    for (op, resp) in ops.iter().zip(responses) {
        let (
            Some(pb::request_op::Request::RequestRange(r)),
            Some(pb::response_op::Response::ResponseRange(got)),
        ) = (&op.request, &resp.response)
        else {
            continue;
        };
        let want = future::block_on(future::poll_once(eval::range_at(view, r, at, at)))
            .ok_or("the range waited")?
            .map_err(|e| format!("range at {at}: {e}"))?;
        if (&got.kvs, got.count, got.more) != (&want.kvs, want.count, want.more) {
            return Err(format!(
                "its range answered {:?}, the history at revision {at} holds {:?}",
                got.kvs, want.kvs
            ));
        }
    }
    Ok(())
}
