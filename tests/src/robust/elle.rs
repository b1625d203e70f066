//! An Elle-style checker for list-append histories (Kingsbury & Alvaro,
//! "Elle: Inferring Isolation Anomalies from Experimental Observations"):
//! transactions that read whole lists and append unique elements; from
//! the reads, the order in which each key's versions were installed is
//! known, so the dependencies between transactions are too, and a cycle
//! among them is an isolation anomaly.
//!
//! Input: [`Txn`]s, each with its reads (a key's whole list, as it stood
//! before the transaction's own appends: reads come first) and its
//! appends, its status (committed, aborted, unknown) and its real-time
//! interval. Elements are unique per key across the history.
//!
//! What [`check`] finds:
//! - Per key, from the committed reads: **duplicate elements** in one
//!   read; **incompatible orders** (two reads neither a prefix of the
//!   other); **unknown elements** (read, appended by no transaction);
//!   **G1a** aborted read (an element of an aborted transaction read);
//!   **G1b** intermediate read (a read ending at an element its writer
//!   followed with another append to the same key); **lost appends** (a
//!   committed append missing from the longest read of its key although a
//!   read of that key began after the append was acknowledged).
//! - The version order of a key is its longest read. Edges between the
//!   transactions in the graph (the committed ones, and those with unknown
//!   outcome whose element was read): **ww** (the writer of a version to
//!   the writer of the next one), **wr** (the writer of the last element a
//!   read saw to the reader), **rw** (a reader to the writer of the version
//!   after the one it read), **rt** (a transaction that returned before
//!   another was invoked, to it: strict serializability; the transitive
//!   reduction Elle builds, through a frontier of completed transactions).
//! - Cycles, named as Adya and Elle name them, each reported once with
//!   its transactions and edges: **G0** (ww only), **G1c** (ww and wr),
//!   **G-single** (exactly one rw), **G2** (two or more rw); a cycle that
//!   needs an rt edge is the same name with `-realtime` (serializable,
//!   not strictly). A cycle is found by a breadth-first search back from
//!   one edge's head to its tail inside a strongly connected component,
//!   trying the edge kinds from the most severe anomaly down; a clean
//!   history has only trivial components and costs no search.
//!
//! Bounds: at most [`CYCLES_PER_KIND`] cycles reported per kind, and
//! [`SEARCHES_MAX`] searches in all.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;

/// Cycles reported per anomaly kind.
pub const CYCLES_PER_KIND: usize = 3;
/// Cycle searches (one per edge tried) in all.
pub const SEARCHES_MAX: usize = 20_000;
/// Non-cycle anomalies reported per kind.
pub const FINDINGS_PER_KIND: usize = 5;

pub type Key = String;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Committed,
    Aborted,
    /// May or may not have committed (no answer).
    Unknown,
}

/// One transaction of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    /// The caller's name for it (e.g. the op's index), for reports.
    pub id: usize,
    pub client: usize,
    pub call: u64,
    /// `u64::MAX` when it did not return (unknown outcome).
    pub ret: u64,
    pub status: Status,
    /// Each key read and the whole list it held (before this
    /// transaction's appends).
    pub reads: Vec<(Key, Vec<i64>)>,
    /// Each element appended, in order.
    pub appends: Vec<(Key, i64)>,
}

impl Txn {
    /// `T3 (op #17, client 2, 0.100s..0.120s, committed): r x [1 2]; append y 5`
    pub fn describe(&self, index: usize) -> String {
        let when = |t: u64| {
            if t == u64::MAX {
                "?".to_string()
            } else {
                format!("{:.3}s", t as f64 / 1e9)
            }
        };
        let mut ops: Vec<String> = self
            .reads
            .iter()
            .map(|(k, l)| format!("r {k} {}", show_list(l)))
            .collect();
        ops.extend(self.appends.iter().map(|(k, x)| format!("append {k} {x}")));
        format!(
            "T{index} (op #{}, client {}, {}..{}, {:?}): {}",
            self.id,
            self.client,
            when(self.call),
            when(self.ret),
            self.status,
            ops.join("; ")
        )
    }
}

fn show_list(l: &[i64]) -> String {
    let xs: Vec<String> = l.iter().map(|x| x.to_string()).collect();
    format!("[{}]", xs.join(" "))
}

/// What kind of anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    G0,
    G1a,
    G1b,
    G1c,
    GSingle,
    G2,
    G0Realtime,
    G1cRealtime,
    GSingleRealtime,
    G2Realtime,
    LostAppend,
    DuplicateElements,
    IncompatibleOrder,
    UnknownElement,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::G0 => "G0 (write cycle)",
            Kind::G1a => "G1a (aborted read)",
            Kind::G1b => "G1b (intermediate read)",
            Kind::G1c => "G1c (circular information flow)",
            Kind::GSingle => "G-single (read skew: one anti-dependency)",
            Kind::G2 => "G2 (anti-dependency cycle)",
            Kind::G0Realtime => "G0-realtime",
            Kind::G1cRealtime => "G1c-realtime",
            Kind::GSingleRealtime => "G-single-realtime",
            Kind::G2Realtime => "G2-realtime",
            Kind::LostAppend => "lost append",
            Kind::DuplicateElements => "duplicate elements",
            Kind::IncompatibleOrder => "incompatible version orders",
            Kind::UnknownElement => "element no transaction appended",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One anomaly, readably.
#[derive(Clone, Debug)]
pub struct Anomaly {
    pub kind: Kind,
    /// Indices (into the checked slice) of the transactions involved.
    pub txns: Vec<usize>,
    pub text: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.text)
    }
}

/// What [`check`] found.
#[derive(Clone, Debug, Default)]
pub struct Result {
    pub anomalies: Vec<Anomaly>,
    /// Transactions in the dependency graph, and its edges.
    pub nodes: usize,
    pub edges: usize,
    pub keys: usize,
    /// The searches stopped at [`SEARCHES_MAX`]: more cycles may exist.
    pub truncated: bool,
}

impl Result {
    pub fn passed(&self) -> bool {
        self.anomalies.is_empty()
    }

    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(move |a| a.kind == kind)
    }

    /// Counts per kind, and every anomaly's text.
    pub fn report(&self) -> String {
        if self.anomalies.is_empty() {
            return format!(
                "no anomaly ({} transactions in the graph, {} edges, {} keys)\n",
                self.nodes, self.edges, self.keys
            );
        }
        let mut by: BTreeMap<Kind, usize> = BTreeMap::new();
        for a in &self.anomalies {
            *by.entry(a.kind).or_default() += 1;
        }
        let counts: Vec<String> = by.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let mut s = format!(
            "{} anomalies ({}){}\n",
            self.anomalies.len(),
            counts.join(", "),
            if self.truncated {
                "; the cycle search was cut short"
            } else {
                ""
            }
        );
        for a in &self.anomalies {
            s += &format!("{a}\n");
        }
        s
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Edge {
    Ww,
    Wr,
    Rw,
    Rt,
}

impl Edge {
    fn name(self) -> &'static str {
        match self {
            Edge::Ww => "ww",
            Edge::Wr => "wr",
            Edge::Rw => "rw",
            Edge::Rt => "rt",
        }
    }
}

/// One edge with why it is there.
#[derive(Clone, Debug)]
struct Link {
    to: usize,
    kind: Edge,
    why: String,
}

struct Graph {
    out: Vec<Vec<Link>>,
    seen: HashSet<(usize, usize, Edge)>,
    edges: usize,
}

impl Graph {
    fn new(n: usize) -> Graph {
        Graph {
            out: vec![Vec::new(); n],
            seen: HashSet::new(),
            edges: 0,
        }
    }

    fn add(&mut self, from: usize, to: usize, kind: Edge, why: impl FnOnce() -> String) {
        if from != to && self.seen.insert((from, to, kind)) {
            self.out[from].push(Link {
                to,
                kind,
                why: why(),
            });
            self.edges += 1;
        }
    }
}

/// Records one finding (capped per kind).
type Reporter<'a> = dyn FnMut(&mut Result, Kind, Vec<usize>, String) + 'a;

/// Checks a list-append history.
pub fn check(txns: &[Txn]) -> Result {
    let mut res = Result::default();
    let mut findings: HashMap<Kind, usize> = HashMap::new();
    let mut report = |res: &mut Result, kind: Kind, txns: Vec<usize>, text: String| {
        let n = findings.entry(kind).or_default();
        *n += 1;
        if *n <= FINDINGS_PER_KIND {
            res.anomalies.push(Anomaly { kind, txns, text });
        }
    };
    let d = |i: usize| txns[i].describe(i);

    // Who appended each element, and in what order per transaction.
    let mut writer: HashMap<(&str, i64), usize> = HashMap::new();
    for (i, t) in txns.iter().enumerate() {
        for (k, x) in &t.appends {
            writer.entry((k.as_str(), *x)).or_insert(i);
        }
    }
    // Committed reads per key.
    let mut reads: BTreeMap<&str, Vec<(usize, &[i64])>> = BTreeMap::new();
    for (i, t) in txns.iter().enumerate() {
        if t.status == Status::Committed {
            for (k, l) in &t.reads {
                reads.entry(k.as_str()).or_default().push((i, l));
            }
        }
    }
    for t in txns {
        for (k, _) in &t.appends {
            reads.entry(k.as_str()).or_default();
        }
    }
    res.keys = reads.len();

    // An intermediate read: its last element was followed by another
    // append of the same writer to the same key.
    let check_last = |res: &mut Result, report: &mut Reporter, k: &str, i: usize, l: &[i64]| {
        let Some(&last) = l.last() else { return };
        let Some(&w) = writer.get(&(k, last)) else {
            return;
        };
        let mine: Vec<i64> = txns[w]
            .appends
            .iter()
            .filter(|(wk, _)| wk == k)
            .map(|(_, x)| *x)
            .collect();
        if w != i && mine.last() != Some(&last) {
            let after = mine.iter().position(|x| *x == last).map_or(0, |p| p + 1);
            report(
                res,
                Kind::G1b,
                vec![i, w],
                format!(
                    "{k}: read ends at {last}, which its writer followed with {}\n  {}\n  {}",
                    show_list(&mine[after..]),
                    d(i),
                    d(w)
                ),
            );
        }
    };
    // Version orders: the longest read of each key.
    let mut order: HashMap<&str, &[i64]> = HashMap::new();
    for (k, rs) in &reads {
        let longest: &[i64] = rs
            .iter()
            .map(|(_, l)| *l)
            .max_by_key(|l| l.len())
            .unwrap_or(&[]);
        order.insert(k, longest);
        let mut ok_order = true;
        // A read that is a prefix of a read already looked at has nothing
        // new to find: only the first such longest read and the reads that
        // are not its prefixes are looked at element by element.
        let mut longest_done = false;
        for &(i, l) in rs {
            let prefix = longest.starts_with(l);
            if prefix && (l.len() < longest.len() || longest_done) {
                check_last(&mut res, &mut report, k, i, l);
                continue;
            }
            longest_done |= prefix;
            let mut seen = HashSet::new();
            if let Some(x) = l.iter().find(|x| !seen.insert(**x)) {
                report(
                    &mut res,
                    Kind::DuplicateElements,
                    vec![i],
                    format!("{k}: element {x} twice in one read\n  {}", d(i)),
                );
            }
            if ok_order && !prefix {
                ok_order = false;
                let j = rs
                    .iter()
                    .find(|(_, m)| *m == longest)
                    .map_or(i, |(j, _)| *j);
                report(
                    &mut res,
                    Kind::IncompatibleOrder,
                    vec![i, j],
                    format!(
                        "{k}: {} is not a prefix of {}\n  {}\n  {}",
                        show_list(l),
                        show_list(longest),
                        d(i),
                        d(j)
                    ),
                );
            }
            for x in l.iter() {
                match writer.get(&(*k, *x)) {
                    None => report(
                        &mut res,
                        Kind::UnknownElement,
                        vec![i],
                        format!(
                            "{k}: element {x} read, appended by no transaction\n  {}",
                            d(i)
                        ),
                    ),
                    Some(&w) if txns[w].status == Status::Aborted => report(
                        &mut res,
                        Kind::G1a,
                        vec![i, w],
                        format!(
                            "{k}: element {x} of an aborted transaction read\n  {}\n  {}",
                            d(i),
                            d(w)
                        ),
                    ),
                    _ => {}
                }
            }
            check_last(&mut res, &mut report, k, i, l);
        }
    }
    // Lost appends.
    for (w, t) in txns.iter().enumerate() {
        if t.status != Status::Committed || t.ret == u64::MAX {
            continue;
        }
        for (k, x) in &t.appends {
            if order.get(k.as_str()).is_some_and(|o| o.contains(x)) {
                continue;
            }
            let later = reads
                .get(k.as_str())
                .and_then(|rs| rs.iter().find(|(r, _)| txns[*r].call > t.ret));
            if let Some(&(r, _)) = later {
                report(
                    &mut res,
                    Kind::LostAppend,
                    vec![w, r],
                    format!(
                        "{k}: element {x} acknowledged, but no read has it, not even one begun after \
                         (the longest read: {})\n  {}\n  {}",
                        show_list(order.get(k.as_str()).copied().unwrap_or(&[])),
                        d(w),
                        d(r)
                    ),
                );
            }
        }
    }

    // The graph: committed transactions, and unknown ones whose element
    // is in a version order.
    let in_graph: Vec<bool> = txns
        .iter()
        .map(|t| match t.status {
            Status::Committed => true,
            Status::Aborted => false,
            Status::Unknown => t
                .appends
                .iter()
                .any(|(k, x)| order.get(k.as_str()).is_some_and(|o| o.contains(x))),
        })
        .collect();
    let mut g = Graph::new(txns.len());
    let node_writer = |k: &str, x: i64| writer.get(&(k, x)).copied().filter(|&w| in_graph[w]);
    for (k, o) in &order {
        for pair in o.windows(2) {
            if let (Some(a), Some(b)) = (node_writer(k, pair[0]), node_writer(k, pair[1])) {
                g.add(a, b, Edge::Ww, || {
                    format!("{k}: T{b} appended {} after T{a}'s {}", pair[1], pair[0])
                });
            }
        }
    }
    for (k, rs) in &reads {
        let o = order[k];
        for &(r, l) in rs {
            if let Some(&last) = l.last() {
                if let Some(w) = node_writer(k, last) {
                    g.add(w, r, Edge::Wr, || format!("{k}: T{r} read T{w}'s {last}"));
                }
            }
            if o.starts_with(l) {
                if let Some(&next) = o.get(l.len()) {
                    if let Some(w) = node_writer(k, next) {
                        g.add(r, w, Edge::Rw, || {
                            format!(
                                "{k}: T{r} read {}, T{w} appended the next element {next}",
                                show_list(l)
                            )
                        });
                    }
                }
            }
        }
    }
    realtime_edges(txns, &in_graph, &mut g);
    res.nodes = in_graph.iter().filter(|b| **b).count();
    res.edges = g.edges;

    cycles(txns, &g, &mut res);
    res
}

/// rt edges, transitively reduced: a transaction invoked gets an edge
/// from every completed one on the frontier; when it completes, it
/// replaces on the frontier the ones it has edges from.
fn realtime_edges(txns: &[Txn], in_graph: &[bool], g: &mut Graph) {
    let mut events: Vec<(u64, u8, usize)> = Vec::new();
    for (i, t) in txns.iter().enumerate() {
        if !in_graph[i] {
            continue;
        }
        // At equal times the invocation goes first: not "before".
        events.push((t.call, 0, i));
        if t.ret != u64::MAX {
            events.push((t.ret, 1, i));
        }
    }
    events.sort_unstable();
    let mut frontier: BTreeSet<usize> = BTreeSet::new();
    let mut preds: HashMap<usize, Vec<usize>> = HashMap::new();
    for (_, kind, i) in events {
        if kind == 0 {
            let p: Vec<usize> = frontier.iter().copied().collect();
            for &a in &p {
                g.add(a, i, Edge::Rt, || {
                    format!("T{a} returned before T{i} was invoked")
                });
            }
            preds.insert(i, p);
        } else {
            for a in preds.remove(&i).unwrap_or_default() {
                frontier.remove(&a);
            }
            frontier.insert(i);
        }
    }
}

/// Tarjan's strongly connected components (iterative): component per node.
fn components(g: &Graph) -> Vec<usize> {
    let n = g.out.len();
    let (mut index, mut low, mut comp) = (vec![usize::MAX; n], vec![0; n], vec![usize::MAX; n]);
    let (mut on_stack, mut stack) = (vec![false; n], Vec::new());
    let (mut next, mut ncomp) = (0, 0);
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (v, ref mut ei)) = work.last_mut() {
            if *ei == 0 && index[v] == usize::MAX {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(l) = g.out[v].get(*ei) {
                *ei += 1;
                let w = l.to;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(u, _)) = work.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = ncomp;
                    if w == v {
                        break;
                    }
                }
                ncomp += 1;
            }
        }
    }
    comp
}

/// The shortest path from `from` to `to` over edges of `allowed` kinds
/// inside component `c`: the (node, link index) steps.
fn path(
    g: &Graph,
    comp: &[usize],
    from: usize,
    to: usize,
    allowed: &[Edge],
) -> Option<Vec<(usize, usize)>> {
    let c = comp[from];
    let mut back: HashMap<usize, (usize, usize)> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = HashSet::from([from]);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut steps = Vec::new();
            let mut at = to;
            while at != from {
                let (p, li) = back[&at];
                steps.push((p, li));
                at = p;
            }
            steps.reverse();
            return Some(steps);
        }
        for (li, l) in g.out[v].iter().enumerate() {
            if comp[l.to] == c && allowed.contains(&l.kind) && seen.insert(l.to) {
                back.insert(l.to, (v, li));
                queue.push_back(l.to);
            }
        }
    }
    None
}

fn classify(kinds: &[Edge]) -> Kind {
    let rw = kinds.iter().filter(|k| **k == Edge::Rw).count();
    let wr = kinds.contains(&Edge::Wr);
    let rt = kinds.contains(&Edge::Rt);
    match (rt, rw, wr) {
        (false, 0, false) => Kind::G0,
        (false, 0, true) => Kind::G1c,
        (false, 1, _) => Kind::GSingle,
        (false, _, _) => Kind::G2,
        (true, 0, false) => Kind::G0Realtime,
        (true, 0, true) => Kind::G1cRealtime,
        (true, 1, _) => Kind::GSingleRealtime,
        (true, _, _) => Kind::G2Realtime,
    }
}

fn cycles(txns: &[Txn], g: &Graph, res: &mut Result) {
    let comp = components(g);
    let mut size: HashMap<usize, usize> = HashMap::new();
    for &c in &comp {
        *size.entry(c).or_default() += 1;
    }
    if size.values().all(|&s| s < 2) {
        return;
    }
    use Edge::*;
    // (edge kind to close the cycle with, kinds the path back may use),
    // from the most severe anomaly down.
    let phases: [(Edge, &[Edge]); 5] = [
        (Ww, &[Ww]),
        (Wr, &[Ww, Wr]),
        (Rw, &[Ww, Wr]),
        (Rw, &[Ww, Wr, Rw]),
        (Rt, &[Ww, Wr, Rw, Rt]),
    ];
    let mut found: HashSet<Vec<usize>> = HashSet::new();
    let mut per_kind: HashMap<Kind, usize> = HashMap::new();
    let mut searches = 0;
    for (close, allowed) in phases {
        for u in 0..g.out.len() {
            if size[&comp[u]] < 2 {
                continue;
            }
            for (li, l) in g.out[u].iter().enumerate() {
                if l.kind != close || comp[l.to] != comp[u] {
                    continue;
                }
                if searches >= SEARCHES_MAX {
                    res.truncated = true;
                    return;
                }
                searches += 1;
                let Some(mut steps) = path(g, &comp, l.to, u, allowed) else {
                    continue;
                };
                steps.insert(0, (u, li));
                let mut nodes: Vec<usize> = steps.iter().map(|(v, _)| *v).collect();
                nodes.sort_unstable();
                if !found.insert(nodes.clone()) {
                    continue;
                }
                let kinds: Vec<Edge> = steps.iter().map(|&(v, i)| g.out[v][i].kind).collect();
                let kind = classify(&kinds);
                let n = per_kind.entry(kind).or_default();
                *n += 1;
                if *n > CYCLES_PER_KIND {
                    continue;
                }
                let mut text = format!("a cycle of {} transactions\n", steps.len());
                for &(v, i) in &steps {
                    let link = &g.out[v][i];
                    text += &format!(
                        "  {}\n    -{}-> ({})\n",
                        txns[v].describe(v),
                        link.kind.name(),
                        link.why
                    );
                }
                text += &format!("  back to T{}", steps[0].0);
                res.anomalies.push(Anomaly {
                    kind,
                    txns: steps.iter().map(|(v, _)| *v).collect(),
                    text,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committed transaction at [call, ret] (ms) of `client`: ops like
    /// `r x 1 2` (x read as [1 2]; `r x` is the empty list) and `a y 3`,
    /// separated by `;`.
    fn t(client: usize, call: u64, ret: u64, ops: &str) -> Txn {
        txn(client, call, ret, Status::Committed, ops)
    }

    fn txn(client: usize, call: u64, ret: u64, status: Status, ops: &str) -> Txn {
        let mut reads = Vec::new();
        let mut appends = Vec::new();
        for op in ops.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let w: Vec<&str> = op.split_whitespace().collect();
            match w[0] {
                "r" => reads.push((
                    w[1].to_string(),
                    w[2..].iter().map(|x| x.parse().unwrap()).collect(),
                )),
                "a" => appends.push((w[1].to_string(), w[2].parse().unwrap())),
                o => panic!("unknown op {o}"),
            }
        }
        let ms = |t: u64| if t == u64::MAX { t } else { t * 1_000_000 };
        Txn {
            id: 0,
            client,
            call: ms(call),
            ret: ms(ret),
            status,
            reads,
            appends,
        }
    }

    fn kinds(txns: &[Txn]) -> Vec<Kind> {
        let mut k: Vec<Kind> = check(txns).anomalies.iter().map(|a| a.kind).collect();
        k.sort();
        k.dedup();
        k
    }

    fn flags(name: &str, txns: &[Txn], want: Kind) {
        let r = check(txns);
        assert!(
            r.of(want).next().is_some(),
            "{name}: expected {want}, got:\n{}",
            r.report()
        );
    }

    #[test]
    fn a_clean_history_passes() {
        // Sequential and concurrent transactions, reads of every state,
        // an unknown append that was seen and one that was not, an
        // aborted one nobody read.
        let h = [
            t(0, 0, 1, "a x 1; a y 1"),
            t(1, 2, 3, "r x 1; a x 2"),
            t(2, 2, 5, "r y 1; r x 1"),
            t(0, 4, 6, "r x 1 2; a y 2"),
            txn(1, 7, u64::MAX, Status::Unknown, "a x 3"),
            txn(2, 7, 8, Status::Aborted, "a y 9"),
            txn(3, 7, u64::MAX, Status::Unknown, "a z 4"),
            t(0, 10, 11, "r x 1 2 3; r y 1 2; r z"),
        ];
        let r = check(&h);
        assert!(r.passed(), "{}", r.report());
        assert_eq!(r.nodes, 6);
    }

    #[test]
    fn g0_write_cycle() {
        // x says T0 then T1; y says T1 then T0.
        flags(
            "G0",
            &[
                t(0, 0, 10, "a x 1; a y 2"),
                t(1, 0, 10, "a x 3; a y 4"),
                t(2, 11, 12, "r x 1 3; r y 4 2"),
            ],
            Kind::G0,
        );
    }

    #[test]
    fn g1c_circular_information_flow() {
        // Each reads the other's append.
        flags(
            "G1c",
            &[t(0, 0, 10, "r y 2; a x 1"), t(1, 0, 10, "r x 1; a y 2")],
            Kind::G1c,
        );
    }

    #[test]
    fn g_single_read_skew() {
        // T2 sees T1's y but not T0's x, although T1 read T0's x... T1
        // read x after T0 appended: T0 -wr-> T1 -wr-> T2 -rw-> T0.
        flags(
            "G-single",
            &[
                t(0, 0, 10, "a x 1"),
                t(1, 0, 10, "r x 1; a y 2"),
                t(2, 0, 10, "r x; r y 2"),
                t(3, 11, 12, "r x 1; r y 2"),
            ],
            Kind::GSingle,
        );
    }

    #[test]
    fn g2_write_skew() {
        // Both read the other's key empty and append to their own.
        flags(
            "G2",
            &[
                t(0, 0, 10, "r y; a x 1"),
                t(1, 0, 10, "r x; a y 2"),
                t(2, 11, 12, "r x 1; r y 2"),
            ],
            Kind::G2,
        );
    }

    #[test]
    fn realtime_stale_read() {
        // Serializable, not strictly: a read begun after the append
        // returned does not see it.
        let h = [t(0, 0, 1, "a x 1"), t(1, 2, 3, "r x"), t(2, 4, 5, "r x 1")];
        flags("stale read", &h, Kind::GSingleRealtime);
        assert!(!kinds(&h).contains(&Kind::GSingle));
    }

    #[test]
    fn g1a_aborted_read() {
        flags(
            "G1a",
            &[txn(0, 0, 1, Status::Aborted, "a x 1"), t(1, 2, 3, "r x 1")],
            Kind::G1a,
        );
    }

    #[test]
    fn g1b_intermediate_read() {
        flags(
            "G1b",
            &[
                t(0, 0, 10, "a x 1; a x 2"),
                t(1, 0, 10, "r x 1"),
                t(2, 11, 12, "r x 1 2"),
            ],
            Kind::G1b,
        );
    }

    #[test]
    fn lost_append() {
        // Acknowledged, then a later read (and every read) lacks it.
        flags(
            "lost append",
            &[
                t(0, 0, 1, "a x 1"),
                t(1, 0, 1, "a x 2"),
                t(2, 2, 3, "r x 2"),
            ],
            Kind::LostAppend,
        );
    }

    #[test]
    fn duplicates_unknown_elements_incompatible_orders() {
        let h = [
            t(0, 0, 1, "a x 1"),
            t(1, 0, 1, "a x 2"),
            t(2, 2, 3, "r x 1 1"),
            t(3, 2, 3, "r x 2 1"),
            t(4, 2, 3, "r x 1 2 7"),
        ];
        let k = kinds(&h);
        for want in [
            Kind::DuplicateElements,
            Kind::IncompatibleOrder,
            Kind::UnknownElement,
        ] {
            assert!(
                k.contains(&want),
                "{want} not in {k:?}\n{}",
                check(&h).report()
            );
        }
    }

    #[test]
    fn reports_name_the_transactions() {
        let r = check(&[
            t(0, 0, 10, "r y; a x 1"),
            t(1, 0, 10, "r x; a y 2"),
            t(2, 11, 12, "r x 1; r y 2"),
        ]);
        let text = r.report();
        assert!(text.contains("G2"), "{text}");
        assert!(text.contains("T0 (op #0, client 0"), "{text}");
        assert!(text.contains("-rw->"), "{text}");
    }

    #[test]
    fn components_and_paths() {
        let mut g = Graph::new(4);
        g.add(0, 1, Edge::Ww, String::new);
        g.add(1, 2, Edge::Wr, String::new);
        g.add(2, 0, Edge::Rw, String::new);
        g.add(2, 3, Edge::Ww, String::new);
        let c = components(&g);
        assert!(c[0] == c[1] && c[1] == c[2] && c[3] != c[0]);
        assert_eq!(
            path(&g, &c, 1, 0, &[Edge::Ww, Edge::Wr, Edge::Rw])
                .unwrap()
                .len(),
            2
        );
        assert!(path(&g, &c, 1, 0, &[Edge::Ww, Edge::Wr]).is_none());
    }
}
