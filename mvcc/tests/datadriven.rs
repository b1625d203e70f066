//! Data-driven tests: scripts under `testdata/` of store commands, each
//! followed by `----` and the expected printed output.
//!
//! Commands (keys are plain words; `\0` is the zero byte):
//! - `put K V [lease=N]`, `del K`: a one-op transaction at last revision + 1
//! - `txn REV OP; OP; ...` with OP `put K V [lease=N]` or `del K`
//! - `range K [END] [rev=N] [limit=N] [keys_only] [count_only]`
//! - `get K`, `live K [END]`, `leases ID`, `status`
//! - `compact REV`
//! - `rollback REV`: drop every write above REV (a voided speculative write)
//! - `events K [END] from=N [to=N] [prev_kv]` (`to` defaults to last revision)
//! - `snapshot`: write a snapshot, reopen it, continue on the reopened store
//!
//! Set `REWRITE=1` to regenerate the expected output in place.

use std::fmt::Write as _;
use std::path::Path;

use ferrokv_mvcc::{Event, EventKind, KeyValue, RangeResult, Store, WriteOp};

fn key_arg(s: &str) -> Vec<u8> {
    if s == "\\0" {
        vec![0]
    } else {
        s.as_bytes().to_vec()
    }
}

fn fmt_kv(kv: &KeyValue) -> String {
    let mut s = format!(
        "{}={} c={} m={} v={}",
        String::from_utf8_lossy(&kv.key),
        String::from_utf8_lossy(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version
    );
    if kv.lease != 0 {
        let _ = write!(s, " l={}", kv.lease);
    }
    s
}

fn fmt_event(e: &Event) -> String {
    let prev = e.prev_kv.as_ref().map_or("-".to_string(), fmt_kv);
    match e.kind {
        EventKind::Put => format!("put {} prev=[{}]", fmt_kv(&e.kv), prev),
        EventKind::Delete => {
            assert_eq!(e.kv.create_revision, 0);
            assert_eq!(e.kv.version, 0);
            assert!(e.kv.value.is_empty());
            format!(
                "del {} m={} prev=[{}]",
                String::from_utf8_lossy(&e.kv.key),
                e.kv.mod_revision,
                prev
            )
        }
    }
}

fn parse_op(words: &[&str]) -> WriteOp {
    match words {
        ["put", k, v, rest @ ..] => {
            let lease = rest
                .iter()
                .find_map(|w| w.strip_prefix("lease="))
                .map_or(0, |n| n.parse().unwrap());
            WriteOp::Put {
                key: key_arg(k),
                value: v.as_bytes().to_vec(),
                lease,
            }
        }
        ["del", k] => WriteOp::Delete { key: key_arg(k) },
        _ => panic!("bad op {words:?}"),
    }
}

/// Splits `K [END] opts...` into key, range end and the remaining options.
fn range_args<'a>(words: &[&'a str]) -> (Vec<u8>, Vec<u8>, Vec<&'a str>) {
    let key = key_arg(words[0]);
    let mut end = Vec::new();
    let mut opts = Vec::new();
    for (i, w) in words[1..].iter().enumerate() {
        if i == 0 && !w.contains('=') && !matches!(*w, "keys_only" | "count_only" | "prev_kv") {
            end = key_arg(w);
        } else {
            opts.push(*w);
        }
    }
    (key, end, opts)
}

fn opt<'a>(opts: &[&'a str], name: &str) -> Option<&'a str> {
    opts.iter()
        .find_map(|o| o.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

fn fmt_range(r: &RangeResult) -> String {
    let mut s = String::new();
    for kv in &r.kvs {
        let _ = writeln!(s, "{}", fmt_kv(kv));
    }
    let _ = write!(s, "count={}", r.count);
    s
}

fn run(store: &mut Store, dir: &Path, cmd: &str) -> String {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let events = |evs: Vec<Event>| {
        if evs.is_empty() {
            "no events".to_string()
        } else {
            evs.iter().map(fmt_event).collect::<Vec<_>>().join("\n")
        }
    };
    match words[0] {
        "put" | "del" => {
            let rev = store.last_revision() + 1;
            events(store.apply(rev, &[parse_op(&words)]))
        }
        "txn" => {
            let rev: i64 = words[1].parse().unwrap();
            let rest = cmd.splitn(3, char::is_whitespace).nth(2).unwrap_or("");
            let ops: Vec<WriteOp> = rest
                .split(';')
                .map(|o| o.split_whitespace().collect::<Vec<_>>())
                .filter(|w| !w.is_empty())
                .map(|w| parse_op(&w))
                .collect();
            events(store.apply(rev, &ops))
        }
        "range" => {
            let (k, e, opts) = range_args(&words[1..]);
            let rev = opt(&opts, "rev").map_or(0, |v| v.parse().unwrap());
            let limit = opt(&opts, "limit").map_or(0, |v| v.parse().unwrap());
            match store.range(
                &k,
                &e,
                rev,
                limit,
                opts.contains(&"keys_only"),
                opts.contains(&"count_only"),
            ) {
                Ok(r) => fmt_range(&r),
                Err(err) => format!("error: {err}"),
            }
        }
        "events" => {
            let (k, e, opts) = range_args(&words[1..]);
            let from = opt(&opts, "from").map_or(1, |v| v.parse().unwrap());
            let to = opt(&opts, "to").map_or(store.last_revision(), |v| v.parse().unwrap());
            match store.events(&k, &e, from, to, opts.contains(&"prev_kv")) {
                Ok(evs) => events(evs),
                Err(err) => format!("error: {err}"),
            }
        }
        "get" => store
            .get(&key_arg(words[1]))
            .map_or("none".to_string(), |kv| fmt_kv(&kv)),
        "live" => {
            let (k, e, _) = range_args(&words[1..]);
            let keys: Vec<String> = store
                .live_keys(&k, &e)
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            format!("[{}]", keys.join(" "))
        }
        "leases" => {
            let keys: Vec<String> = store
                .keys_with_lease(words[1].parse().unwrap())
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            format!("[{}]", keys.join(" "))
        }
        "compact" => match store.compact(words[1].parse().unwrap()) {
            Ok(()) => "ok".to_string(),
            Err(err) => format!("error: {err}"),
        },
        "rollback" => match store.rollback_above(words[1].parse().unwrap()) {
            Ok(()) => "ok".to_string(),
            Err(err) => format!("error: {err}"),
        },
        "status" => format!(
            "last={} compact={} keys={}",
            store.last_revision(),
            store.compact_revision(),
            store.key_count()
        ),
        "snapshot" => {
            let path = dir.join("snap");
            store.write_snapshot(&path, 0, b"").unwrap();
            let (s, _, _) = Store::open_snapshot(&path).unwrap();
            *store = s;
            format!(
                "ok last={} compact={}",
                store.last_revision(),
                store.compact_revision()
            )
        }
        other => panic!("unknown command {other}"),
    }
}

fn run_file(path: &Path) -> (String, String) {
    let input = std::fs::read_to_string(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::new();
    let mut rewritten = String::new();
    let mut lines = input.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            rewritten.push_str(line);
            rewritten.push('\n');
            continue;
        }
        assert_eq!(
            lines.next(),
            Some("----"),
            "{}: missing ---- after {line}",
            path.display()
        );
        while lines.peek().is_some_and(|l| !l.trim().is_empty()) {
            lines.next();
        }
        let out = run(&mut store, dir.path(), line);
        let _ = write!(rewritten, "{line}\n----\n{out}\n");
    }
    (input, rewritten)
}

#[test]
fn testdata() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let rewrite = std::env::var_os("REWRITE").is_some();
    let mut failed = Vec::new();
    for f in &files {
        let (want, got) = run_file(f);
        if rewrite {
            std::fs::write(f, &got).unwrap();
        } else if want != got {
            eprintln!(
                "=== {} ===\n--- expected\n{want}\n--- got\n{got}",
                f.display()
            );
            failed.push(f.display().to_string());
        }
    }
    assert!(failed.is_empty(), "data-driven mismatches in {failed:?}");
}
