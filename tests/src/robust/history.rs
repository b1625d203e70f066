//! A client history: every operation a workload issued, with when it was
//! invoked and when (and whether) it returned, in etcd's terms. What the
//! checkers read; what the runners record.
//!
//! Times are nanoseconds since the run's start on one monotonic clock
//! shared by every client of the run, so "a returned before b was invoked"
//! is `a.ret < b.call`.

/// One key-value as a response shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// What a compare of a txn looks at (etcd's `Compare.target`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

/// etcd's `Compare.result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One compare of a txn, on one key (ranges of keys are not generated).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CmpOp,
    pub target: Target,
}

/// One operation inside a txn branch, or a request on its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    /// `range_end` empty: one key; otherwise [key, range_end). `revision`
    /// 0 is the latest. `serializable`: may be served from a member's local
    /// state (then only what etcd promises of such reads is checked).
    Range {
        key: Vec<u8>,
        range_end: Vec<u8>,
        revision: i64,
        serializable: bool,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    /// `range_end` as for `Range`.
    Delete {
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    Txn {
        compares: Vec<Compare>,
        success: Vec<Request>,
        failure: Vec<Request>,
    },
    /// A lease with a client-chosen id (so the history names it before the
    /// answer), and its TTL in seconds.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// A range answering at most `limit` kvs (0: all), as the apiserver
    /// pages a list; `count` is still every matching key (etcd's `more` is
    /// `count > kvs.len()`). Fields as for `Range` (always linearizable).
    RangeLimit {
        key: Vec<u8>,
        range_end: Vec<u8>,
        revision: i64,
        limit: i64,
    },
    /// etcd's `Compact` (not physical): ranges below `revision` fail with
    /// `compacted` from then on, and watches from below it are canceled.
    Compact {
        revision: i64,
    },
}

/// What one request (or one op of a txn) answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Answer {
    Range {
        kvs: Vec<Kv>,
        /// `count` as etcd reports it (all matching keys, beyond a limit).
        count: i64,
    },
    Put {
        /// `prev_kv` was not asked for: the new revision is the header's.
        prev: Option<Kv>,
    },
    Delete {
        deleted: i64,
    },
    Txn {
        succeeded: bool,
        /// One answer per op of the branch taken.
        results: Vec<Answer>,
    },
    LeaseGrant,
    LeaseRevoke,
    Compact,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered: the response header's revision and the answer.
    Ok { revision: i64, answer: Answer },
    /// Refused with an error that means it did not happen (etcd's
    /// `requested lease not found`, `required revision has been compacted`,
    /// a validation error, ...): the message.
    Failed(String),
    /// No answer, or one that leaves the outcome open (timeout, connection
    /// cut, `leader changed`): it may or may not have taken effect, at any
    /// time after its invocation.
    Unknown(String),
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Op {
    /// The client (one at a time per client: its ops do not overlap).
    pub client: usize,
    /// Invocation time (ns since the run's start).
    pub call: u64,
    /// Return time; for an `Unknown` outcome, when the client gave up.
    pub ret: u64,
    pub request: Request,
    pub outcome: Outcome,
}

impl Op {
    /// Whether the request can change state (a txn with a write in either
    /// branch, a put, a delete, a lease call, a compaction).
    pub fn writes(&self) -> bool {
        fn writes(r: &Request) -> bool {
            match r {
                Request::Range { .. } | Request::RangeLimit { .. } => false,
                Request::Txn {
                    success, failure, ..
                } => success.iter().chain(failure).any(writes),
                _ => true,
            }
        }
        writes(&self.request)
    }
}

/// A whole history, in invocation order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    /// Ops sorted by invocation time (stable for equal times).
    pub fn sorted(mut self) -> History {
        self.ops.sort_by_key(|o| o.call);
        self
    }
}
