//! The list-append workload (issue 11), for the Elle-style check
//! ([`super::elle`]): each key's value is a list of integers, comma
//! separated; transactions read some keys and append unique integers to
//! others, over keys that ferrokv spreads across its shards.
//!
//! A transaction is done as an etcd user would: one Txn that compares the
//! mod_revision of every key it touches with the one the client last saw
//! (its cache), whose success branch gets the keys it reads and puts each
//! appended key's list (as cached, plus the new elements: the compare
//! makes that list a read of the transaction too), and whose failure
//! branch gets every key it touches, to refill the cache for the retry (up
//! to [`ATTEMPTS`], each with fresh elements). Read-only transactions are
//! a Txn of gets. A lost append is then impossible if the store is
//! serializable. Every attempt is one op of the history; its
//! [`AttemptMeta`] says what it meant.
//!
//! Conversion ([`elle_txns`]): a succeeded attempt is a committed
//! transaction (its gets and the lists its puts extended are its reads);
//! a compare that failed is an aborted transaction (its appends) and a
//! committed read-only one (its failure gets); an error is aborted; an
//! unknown outcome is an unknown transaction (its appends). After the
//! clients stop, one read of every key gives the final lists.
//!
//! Checks ([`check`]): the Elle-style cycle and anomaly search, and the
//! linearizability checker on the etcd history itself.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::elle::{self, Status, Txn};
use super::history::{Answer, CmpOp, Compare, History, Op, Outcome, Request, Target};
use super::kubernetes::{self, range, Conn};
use super::linearize::{self, Options, Verdict};
use super::model;
use super::workload::{prefix_now, run_faults, Clock, Fault, FaultCtx, FaultRecord, Rng};

/// Attempts of one transaction (the first and its retries on conflict).
pub const ATTEMPTS: usize = 3;
/// Attempts of the final read.
pub const FINAL_READ_ATTEMPTS: usize = 10;
/// Elements of client `c` are `c * ELEMENTS_PER_CLIENT + 1 ..`.
pub const ELEMENTS_PER_CLIENT: i64 = 1_000_000;
/// Bound on one linearizability check, for [`check`].
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// An unparsable element (shows as an element no one appended).
const GARBAGE: i64 = i64::MIN;

/// What to run.
#[derive(Clone, Debug)]
pub struct Append {
    /// Revisions may be skipped around faults (ferrokv's contract, see
    /// `workload::with_voids`); etcd never skips.
    pub voids_at_faults: bool,
    pub clients: usize,
    pub duration: Duration,
    pub settle: Duration,
    pub duration_max: Duration,
    /// Bound on one client's transactions.
    pub max_txns: usize,
    pub seed: u64,
    /// Keys `<prefix>k0 .. <prefix>k<key_count - 1>`.
    pub prefix: String,
    pub key_count: usize,
    /// Keys one transaction touches, at most.
    pub txn_keys: usize,
    pub op_timeout: Duration,
}

impl Default for Append {
    fn default() -> Append {
        Append {
            voids_at_faults: false,
            clients: 4,
            duration: Duration::from_secs(3),
            settle: Duration::from_secs(1),
            duration_max: Duration::from_secs(60),
            max_txns: 3000,
            seed: 1,
            prefix: "append/".to_string(),
            key_count: 6,
            txn_keys: 4,
            op_timeout: Duration::from_millis(1500),
        }
    }
}

impl Append {
    pub fn keys(&self) -> Vec<Vec<u8>> {
        (0..self.key_count)
            .map(|i| format!("{}k{i}", self.prefix).into_bytes())
            .collect()
    }
}

/// What one attempt meant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttemptMeta {
    /// Keys read (the success branch's gets, in order).
    pub reads: Vec<Vec<u8>>,
    /// Keys appended: the list the client had cached, and the elements
    /// added (the success branch's puts, in order, after the gets).
    pub appends: Vec<(Vec<u8>, Vec<i64>, Vec<i64>)>,
    /// The failure branch gets these (every key touched).
    pub failure_reads: Vec<Vec<u8>>,
}

/// Everything a run recorded.
#[derive(Clone, Debug)]
pub struct AppendRecording {
    /// Sorted by invocation time.
    pub history: History,
    /// One per op of `history`.
    pub meta: Vec<AttemptMeta>,
    pub faults: Vec<FaultRecord>,
    /// From the workload's `voids_at_faults`.
    pub voids_at_faults: bool,
    pub elapsed: Duration,
    pub initial_revision: i64,
    pub keys: Vec<Vec<u8>>,
}

pub fn show_list(l: &[i64]) -> String {
    let xs: Vec<String> = l.iter().map(|x| x.to_string()).collect();
    xs.join(",")
}

/// A value as a list (an absent key: empty).
pub fn parse_list(v: &[u8]) -> Vec<i64> {
    if v.is_empty() {
        return Vec::new();
    }
    String::from_utf8_lossy(v)
        .split(',')
        .map(|x| x.parse().unwrap_or(GARBAGE))
        .collect()
}

fn key_name(k: &[u8]) -> String {
    model::show_bytes(k)
}

impl AppendRecording {
    pub fn history_text(&self) -> String {
        kubernetes::history_text(&self.history)
    }

    /// The transactions as the Elle check reads them, one per line.
    pub fn txns_text(&self) -> String {
        let mut s = String::new();
        for (i, t) in elle_txns(self).iter().enumerate() {
            let _ = writeln!(s, "{}", t.describe(i));
        }
        s
    }

    /// `history.txt` and `txns.txt` into `dir`.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        kubernetes::write_files(
            dir,
            &[
                ("history.txt", self.history_text()),
                ("txns.txt", self.txns_text()),
            ],
        )
    }
}

// ---------------------------------------------------------------- client

struct Client {
    conn: Conn,
    rng: Rng,
    keys: Vec<Vec<u8>>,
    txn_keys: usize,
    /// Per key, the last (mod_revision, list) seen.
    known: HashMap<Vec<u8>, (i64, Vec<i64>)>,
    next: i64,
    meta: Vec<AttemptMeta>,
}

fn get_all(keys: &[Vec<u8>]) -> Vec<Request> {
    keys.iter().map(|k| range(k)).collect()
}

impl Client {
    fn learn(&mut self, keys: &[Vec<u8>], results: &[Answer]) {
        for (k, a) in keys.iter().zip(results) {
            if let Answer::Range { kvs, .. } = a {
                let e = kvs.first().map_or((0, Vec::new()), |kv| {
                    (kv.mod_revision, parse_list(&kv.value))
                });
                self.known.insert(k.clone(), e);
            }
        }
    }

    async fn call(&mut self, request: Request, meta: AttemptMeta) -> Outcome {
        self.meta.push(meta);
        self.conn.call(request).await
    }

    async fn step(&mut self) {
        let n = 1 + self.rng.below(self.txn_keys as u64) as usize;
        let mut touched: Vec<Vec<u8>> = Vec::new();
        while touched.len() < n.min(self.keys.len()) {
            let k = &self.keys[self.rng.below(self.keys.len() as u64) as usize];
            if !touched.contains(k) {
                touched.push(k.clone());
            }
        }
        let read_only = self.rng.below(4) == 0;
        // Per key: read it, or append one element (sometimes two).
        let mut reads = Vec::new();
        let mut appending: Vec<(Vec<u8>, usize)> = Vec::new();
        for k in &touched {
            if read_only || self.rng.below(2) == 0 {
                reads.push(k.clone());
            } else {
                appending.push((k.clone(), if self.rng.below(5) == 0 { 2 } else { 1 }));
            }
        }
        if appending.is_empty() {
            let out = self
                .call(
                    Request::Txn {
                        compares: Vec::new(),
                        success: get_all(&reads),
                        failure: Vec::new(),
                    },
                    AttemptMeta {
                        reads: reads.clone(),
                        ..AttemptMeta::default()
                    },
                )
                .await;
            if let Outcome::Ok {
                answer: Answer::Txn { results, .. },
                ..
            } = &out
            {
                self.learn(&reads, results);
            }
            return;
        }
        for _ in 0..ATTEMPTS {
            let mut meta = AttemptMeta {
                reads: reads.clone(),
                appends: Vec::new(),
                failure_reads: touched.clone(),
            };
            let mut compares = Vec::new();
            for k in &touched {
                let m = self.known.get(k).map_or(0, |(m, _)| *m);
                compares.push(Compare {
                    key: k.clone(),
                    op: CmpOp::Equal,
                    target: Target::Mod(m),
                });
            }
            let mut success = get_all(&reads);
            for (k, count) in &appending {
                let prior = self.known.get(k).map_or(Vec::new(), |(_, l)| l.clone());
                let added: Vec<i64> = (0..*count)
                    .map(|_| {
                        self.next += 1;
                        self.next
                    })
                    .collect();
                let mut list = prior.clone();
                list.extend(&added);
                success.push(Request::Put {
                    key: k.clone(),
                    value: show_list(&list).into_bytes(),
                    lease: 0,
                });
                meta.appends.push((k.clone(), prior, added));
            }
            let request = Request::Txn {
                compares,
                success,
                failure: get_all(&touched),
            };
            let out = self.call(request, meta.clone()).await;
            match &out {
                Outcome::Ok {
                    revision,
                    answer:
                        Answer::Txn {
                            succeeded: true,
                            results,
                        },
                } => {
                    self.learn(&reads, results);
                    for (k, prior, added) in meta.appends {
                        let mut l = prior;
                        l.extend(added);
                        self.known.insert(k, (*revision, l));
                    }
                    return;
                }
                Outcome::Ok {
                    answer: Answer::Txn { results, .. },
                    ..
                } => self.learn(&touched, results),
                _ => {
                    for k in &touched {
                        self.known.remove(k);
                    }
                    return;
                }
            }
        }
    }
}

impl Append {
    /// Runs the workload against `endpoints`, calling each fault with
    /// `target` at its time on this thread (as `Workload::run`).
    pub fn run<C>(
        &self,
        target: &mut C,
        endpoints: &[String],
        faults: Vec<Fault<'_, C>>,
    ) -> AppendRecording {
        assert!(!endpoints.is_empty() && self.clients > 0 && self.key_count > 0);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let clock = Clock::start();
        let (initial_revision, held) = runtime
            .block_on(prefix_now(endpoints, &self.prefix))
            .expect("no member answered a range of the run's prefix");
        assert_eq!(
            held, 0,
            "the run's prefix {} already holds keys",
            self.prefix
        );
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let deadline = started + self.duration_max;
        let keys = self.keys();
        let clients: Vec<_> = (0..self.clients)
            .map(|c| {
                let mut cl = Client {
                    conn: Conn::new(c, &endpoints[c % endpoints.len()], clock, self.op_timeout),
                    rng: Rng::new(self.seed ^ (c as u64 + 1).wrapping_mul(0xd6e8_feb8_6659_fd93)),
                    keys: keys.clone(),
                    txn_keys: self.txn_keys.max(1),
                    known: HashMap::new(),
                    next: c as i64 * ELEMENTS_PER_CLIENT,
                    meta: Vec::new(),
                };
                let (stop, max) = (stop.clone(), self.max_txns);
                runtime.spawn(async move {
                    for _ in 0..max {
                        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                            break;
                        }
                        cl.step().await;
                    }
                    (cl.conn.ops, cl.meta)
                })
            })
            .collect();
        // A fault's client calls (a compaction, a fill) join the history
        // (they take revisions, and the model checks their answers), not
        // the transactions Elle judges: no meta names a key of theirs.
        let mut fault_ctx =
            FaultCtx::new(clock, endpoints, initial_revision, self.prefix.as_bytes());
        let records = run_faults(faults, target, &mut fault_ctx, started);
        let end_at = match records.last() {
            Some(_) => self.duration.max(started.elapsed() + self.settle),
            None => self.duration,
        };
        if let Some(rest) = end_at.checked_sub(started.elapsed()) {
            thread::sleep(rest);
        }
        stop.store(true, Ordering::SeqCst);
        let mut pairs: Vec<(Op, AttemptMeta)> = std::mem::take(&mut fault_ctx.ops)
            .into_iter()
            .map(|op| (op, AttemptMeta::default()))
            .collect();
        for c in clients {
            let (ops, meta) = runtime.block_on(c).expect("client task");
            assert_eq!(ops.len(), meta.len(), "one meta per op");
            pairs.extend(ops.into_iter().zip(meta));
        }
        let elapsed = started.elapsed();
        // The final lists.
        let mut fin = Conn::new(self.clients, &endpoints[0], clock, self.op_timeout);
        for a in 0..FINAL_READ_ATTEMPTS {
            let mut c = Conn::new(
                self.clients,
                &endpoints[a % endpoints.len()],
                clock,
                self.op_timeout,
            );
            let out = runtime.block_on(c.call(Request::Txn {
                compares: Vec::new(),
                success: get_all(&keys),
                failure: Vec::new(),
            }));
            fin.ops.extend(c.ops);
            if matches!(out, Outcome::Ok { .. }) {
                break;
            }
        }
        for op in fin.ops {
            pairs.push((
                op,
                AttemptMeta {
                    reads: keys.clone(),
                    ..AttemptMeta::default()
                },
            ));
        }
        runtime.shutdown_timeout(self.op_timeout);
        pairs.sort_by_key(|(op, _)| op.call);
        let (ops, meta): (Vec<Op>, Vec<AttemptMeta>) = pairs.into_iter().unzip();
        AppendRecording {
            history: History { ops },
            meta,
            faults: records,
            voids_at_faults: self.voids_at_faults,
            elapsed,
            initial_revision,
            keys,
        }
    }
}

// -------------------------------------------------------------- checking

fn lists(keys: &[Vec<u8>], results: &[Answer]) -> Vec<(String, Vec<i64>)> {
    keys.iter()
        .zip(results)
        .map(|(k, a)| {
            let l = match a {
                Answer::Range { kvs, .. } => {
                    kvs.first().map_or(Vec::new(), |kv| parse_list(&kv.value))
                }
                _ => vec![GARBAGE],
            };
            (key_name(k), l)
        })
        .collect()
}

/// The history as Elle transactions (see the module docs); `id` is the
/// op's index in the history.
pub fn elle_txns(rec: &AppendRecording) -> Vec<Txn> {
    let mut out = Vec::new();
    for (i, (op, m)) in rec.history.ops.iter().zip(&rec.meta).enumerate() {
        let base = |status, ret| Txn {
            id: i,
            client: op.client,
            call: op.call,
            ret,
            status,
            reads: Vec::new(),
            appends: Vec::new(),
        };
        let appends: Vec<(String, i64)> = m
            .appends
            .iter()
            .flat_map(|(k, _, added)| added.iter().map(move |x| (key_name(k), *x)))
            .collect();
        match &op.outcome {
            Outcome::Ok {
                answer:
                    Answer::Txn {
                        succeeded: true,
                        results,
                    },
                ..
            } => {
                let mut t = base(Status::Committed, op.ret);
                t.reads = lists(&m.reads, results);
                t.reads.extend(
                    m.appends
                        .iter()
                        .map(|(k, prior, _)| (key_name(k), prior.clone())),
                );
                t.appends = appends;
                out.push(t);
            }
            Outcome::Ok {
                answer:
                    Answer::Txn {
                        succeeded: false,
                        results,
                    },
                ..
            } => {
                let mut aborted = base(Status::Aborted, op.ret);
                aborted.appends = appends;
                out.push(aborted);
                let mut r = base(Status::Committed, op.ret);
                r.reads = lists(&m.failure_reads, results);
                out.push(r);
            }
            Outcome::Ok { .. } | Outcome::Failed(_) => {
                if !appends.is_empty() {
                    let mut t = base(Status::Aborted, op.ret);
                    t.appends = appends;
                    out.push(t);
                }
            }
            Outcome::Unknown(_) => {
                if !appends.is_empty() {
                    let mut t = base(Status::Unknown, u64::MAX);
                    t.appends = appends;
                    out.push(t);
                }
            }
        }
    }
    out
}

/// What [`check`] found.
#[derive(Debug)]
pub struct AppendVerdicts {
    pub elle: elle::Result,
    pub elle_time: Duration,
    pub linear: Verdict,
    pub linear_time: Duration,
    pub ops: usize,
    pub counts: (usize, usize, usize),
    /// Elle transactions: committed, aborted, unknown.
    pub txns: (usize, usize, usize),
    pub faults: String,
    pub elapsed: Duration,
}

impl AppendVerdicts {
    pub fn passed(&self) -> bool {
        self.elle.passed() && self.linear.is_linearizable()
    }

    pub fn report(&self) -> String {
        let (ok, failed, unknown) = self.counts;
        let (c, a, u) = self.txns;
        let mut s = format!(
            "list-append: {} ops in {:.1}s ({ok} ok, {failed} failed, {unknown} unknown); \
             transactions: {c} committed, {a} aborted, {u} unknown\n{}",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.faults
        );
        let _ = write!(
            s,
            "elle (checked in {:.2}s): {}",
            self.elle_time.as_secs_f64(),
            self.elle.report()
        );
        let _ = writeln!(
            s,
            "linearizability: {} (checked in {:.2}s)",
            match &self.linear {
                Verdict::Linearizable => "linearizable".to_string(),
                Verdict::Violation(r) => r.summary.clone(),
                Verdict::Timeout(_) => "undecided (timeout)".to_string(),
            },
            self.linear_time.as_secs_f64()
        );
        if !self.linear.is_linearizable() {
            let _ = writeln!(s, "{}", self.linear);
        }
        s
    }
}

/// Both checks, the linearizability search bounded by [`CHECK_TIMEOUT`].
pub fn check(rec: &AppendRecording) -> AppendVerdicts {
    check_with(rec, CHECK_TIMEOUT)
}

/// Both checks on the recording's own transactions.
pub fn check_with(rec: &AppendRecording, timeout: Duration) -> AppendVerdicts {
    check_txns(rec, &elle_txns(rec), timeout)
}

/// Both checks, Elle's on `txns` (the recording's, or planted ones).
pub fn check_txns(rec: &AppendRecording, txns: &[Txn], timeout: Duration) -> AppendVerdicts {
    let started = Instant::now();
    let elle = elle::check(txns);
    let elle_time = started.elapsed();
    let started = Instant::now();
    let history = if rec.voids_at_faults {
        super::workload::with_voids_at(&rec.history, &rec.faults)
    } else {
        rec.history.clone()
    };
    let linear = linearize::check_with(
        &history,
        &Options {
            timeout,
            initial: model::State::with_contents(
                rec.initial_revision.max(1),
                Vec::new(),
                Vec::new(),
            ),
            ..Options::default()
        },
    );
    let linear_time = started.elapsed();
    let mut n = (0, 0, 0);
    for t in txns {
        match t.status {
            Status::Committed => n.0 += 1,
            Status::Aborted => n.1 += 1,
            Status::Unknown => n.2 += 1,
        }
    }
    AppendVerdicts {
        elle,
        elle_time,
        linear,
        linear_time,
        ops: rec.history.ops.len(),
        counts: kubernetes::counts(&rec.history),
        txns: n,
        faults: kubernetes::faults_text(&rec.faults),
        elapsed: rec.elapsed,
    }
}

/// The read with the longest list of some key with at least 3 elements:
/// (txn, read index).
fn longest_read(txns: &[Txn]) -> Option<(usize, usize)> {
    txns.iter()
        .enumerate()
        .filter(|(_, t)| t.status == Status::Committed)
        .flat_map(|(i, t)| {
            t.reads
                .iter()
                .enumerate()
                .map(move |(j, r)| (i, j, r.1.len()))
        })
        .filter(|&(_, _, n)| n >= 3)
        .max_by_key(|&(_, _, n)| n)
        .map(|(i, j, _)| (i, j))
}

/// Plants a lost append: a middle element removed from the longest read.
pub fn plant_dropped_append(txns: &[Txn]) -> Option<(Vec<Txn>, String)> {
    let (i, j) = longest_read(txns)?;
    let mut planted = txns.to_vec();
    let (key, l) = &mut planted[i].reads[j];
    let at = l.len() / 2;
    let x = l.remove(at);
    let what = format!("element {x} removed from T{i}'s read of {key}");
    Some((planted, what))
}

/// Plants swapped versions: two adjacent elements of the longest read
/// swapped.
pub fn plant_swapped_versions(txns: &[Txn]) -> Option<(Vec<Txn>, String)> {
    let (i, j) = longest_read(txns)?;
    let mut planted = txns.to_vec();
    let (key, l) = &mut planted[i].reads[j];
    let at = l.len() / 2;
    l.swap(at - 1, at);
    let what = format!(
        "elements {} and {} swapped in T{i}'s read of {key}",
        l[at],
        l[at - 1]
    );
    Some((planted, what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::robust::history::Kv;

    fn kv(k: &str, v: &str, m: i64) -> Kv {
        Kv {
            key: k.into(),
            value: v.into(),
            create_revision: 2,
            mod_revision: m,
            version: 1,
            lease: 0,
        }
    }

    fn get_answer(kvs: Vec<Kv>) -> Answer {
        let count = kvs.len() as i64;
        Answer::Range { kvs, count }
    }

    #[test]
    fn lists_parse_and_show() {
        assert_eq!(parse_list(b""), Vec::<i64>::new());
        assert_eq!(parse_list(b"1,22,3"), vec![1, 22, 3]);
        assert_eq!(parse_list(b"1,x"), vec![1, GARBAGE]);
        assert_eq!(show_list(&[4, 5]), "4,5");
    }

    /// One attempt of each outcome, converted.
    #[test]
    fn attempts_become_elle_transactions() {
        let (a, b) = (b"a".to_vec(), b"b".to_vec());
        let meta = AttemptMeta {
            reads: vec![a.clone()],
            appends: vec![(b.clone(), vec![1], vec![7])],
            failure_reads: vec![a.clone(), b.clone()],
        };
        let op = |outcome| Op {
            client: 3,
            call: 10,
            ret: 20,
            request: Request::Txn {
                compares: Vec::new(),
                success: Vec::new(),
                failure: Vec::new(),
            },
            outcome,
        };
        let rec = AppendRecording {
            history: History {
                ops: vec![
                    op(Outcome::Ok {
                        revision: 5,
                        answer: Answer::Txn {
                            succeeded: true,
                            results: vec![
                                get_answer(vec![kv("a", "4,5", 3)]),
                                Answer::Put { prev: None },
                            ],
                        },
                    }),
                    op(Outcome::Ok {
                        revision: 5,
                        answer: Answer::Txn {
                            succeeded: false,
                            results: vec![get_answer(vec![]), get_answer(vec![kv("b", "1,2", 4)])],
                        },
                    }),
                    op(Outcome::Unknown("timeout".into())),
                    op(Outcome::Failed("invalid".into())),
                ],
            },
            meta: vec![meta; 4],
            faults: Vec::new(),
            voids_at_faults: false,
            elapsed: Duration::ZERO,
            initial_revision: 1,
            keys: vec![a, b],
        };
        let t = elle_txns(&rec);
        let show: Vec<String> = t.iter().enumerate().map(|(i, t)| t.describe(i)).collect();
        assert_eq!(
            show,
            [
                "T0 (op #0, client 3, 0.000s..0.000s, Committed): r a [4 5]; r b [1]; append b 7",
                "T1 (op #1, client 3, 0.000s..0.000s, Aborted): append b 7",
                "T2 (op #1, client 3, 0.000s..0.000s, Committed): r a []; r b [1 2]",
                "T3 (op #2, client 3, 0.000s..?, Unknown): append b 7",
                "T4 (op #3, client 3, 0.000s..0.000s, Aborted): append b 7",
            ]
        );
    }

    #[test]
    fn plants_break_a_clean_history() {
        let t = |call: u64, ret: u64, reads: Vec<i64>, append: Option<i64>| Txn {
            id: 0,
            client: 0,
            call,
            ret,
            status: Status::Committed,
            reads: vec![("x".into(), reads)],
            appends: append.map(|x| ("x".into(), x)).into_iter().collect(),
        };
        let h = vec![
            t(0, 1, vec![], Some(1)),
            t(2, 3, vec![1], Some(2)),
            t(4, 5, vec![1, 2], Some(3)),
            t(6, 7, vec![1, 2, 3], Some(4)),
            t(8, 9, vec![1, 2, 3, 4], None),
        ];
        assert!(elle::check(&h).passed());
        for (name, planted) in [
            ("dropped", plant_dropped_append(&h)),
            ("swapped", plant_swapped_versions(&h)),
        ] {
            let (p, what) = planted.unwrap();
            let r = elle::check(&p);
            assert!(!r.passed(), "{name} ({what}) not flagged");
        }
    }
}
