//! `ferroutl`: the offline tool (etcdutl's role), for files and stopped
//! members:
//!
//! - `snapshot status FILE [-w simple|json|fields|table]`: an etcd snapshot
//!   or a ferrokv backup, printed exactly as `etcdctl snapshot status`;
//! - `snapshot restore FILE [--data-dir D] [--name N] [--initial-cluster C]
//!   [--initial-cluster-token T] [--initial-advertise-peer-urls U]
//!   [--skip-hash-check]`: a ferrokv backup into a new member data dir;
//! - `defrag --data-dir D [--wal-dir W]`: a stopped member's shards
//!   snapshotted afresh and their logs truncated;
//! - `wal --data-dir D [--wal-dir W]`: every log record, one line each;
//! - `version`.

use std::collections::HashMap;
use std::path::PathBuf;

const USAGE: &str = "\
ferroutl: offline tool for ferrokv and etcd files

Usage:
  ferroutl snapshot status <filename> [-w simple|json|fields|table]
  ferroutl snapshot restore <filename> [--data-dir DIR] [--name NAME]
      [--initial-cluster NAME=URL,...] [--initial-cluster-token TOKEN]
      [--initial-advertise-peer-urls URL,...] [--wal-dir DIR] [--skip-hash-check]
      [--shards N]    (a ferrokv backup, or an etcd snapshot: its keys,
                       history and leases split over N shards; default
                       the cores available)
  ferroutl defrag --data-dir DIR [--wal-dir DIR]
  ferroutl wal --data-dir DIR [--wal-dir DIR]
  ferroutl version
";

/// Exit code of a usage error (etcdctl's ExitBadArgs).
const EXIT_BAD_ARGS: i32 = 3;
/// Exit code of a failed command (etcdctl's ExitError).
const EXIT_ERROR: i32 = 1;

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| ferrokv_ctl::cli::arg_from_os(&a))
        .collect();
    // The command is the first words that are not flags (etcdctl's global
    // flags may come first for `snapshot status`).
    let words: Vec<usize> = (0..argv.len())
        .filter(|i| !argv[*i].starts_with('-'))
        .take(2)
        .collect();
    let command: Vec<&str> = words.iter().map(|i| argv[*i].as_str()).collect();
    // A command's own arguments: everything but its command words.
    let rest = |n: usize| -> Vec<String> {
        argv.iter()
            .enumerate()
            .filter(|(i, _)| !words[..n].contains(i))
            .map(|(_, a)| a.clone())
            .collect()
    };
    let code = match command.as_slice() {
        ["snapshot", "status", ..] => ferrokv_ctl::main_with_args(argv),
        ["snapshot", "restore", ..] => run(&rest(2), restore),
        ["defrag", ..] => run(&rest(1), defrag),
        ["wal", ..] => run(&rest(1), wal),
        ["version", ..] => {
            println!("ferroutl version: {}", env!("CARGO_PKG_VERSION"));
            println!("API version: {}", ferrokv_ctl::API_VERSION);
            0
        }
        [] => {
            print!("{USAGE}");
            0
        }
        other => {
            eprintln!("Error: unknown command {:?}", other.join(" "));
            eprint!("{USAGE}");
            EXIT_BAD_ARGS
        }
    };
    std::process::exit(code);
}

/// Flags and positional arguments of one command.
struct Args {
    positional: Vec<String>,
    flags: HashMap<String, String>,
}

impl Args {
    fn get(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }

    fn has(&self, name: &str) -> bool {
        self.flags.contains_key(name)
    }
}

enum Failure {
    Usage(String),
    Error(String),
}

/// `--name value`, `--name=value`; `switches` take no value.
fn parse(argv: &[String], valued: &[&str], switches: &[&str]) -> Result<Args, Failure> {
    let mut out = Args {
        positional: Vec::new(),
        flags: HashMap::new(),
    };
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let Some(flag) = a.strip_prefix("--") else {
            out.positional.push(a.clone());
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if switches.contains(&name) {
            let on = inline.as_deref().unwrap_or("true");
            if on != "false" {
                out.flags.insert(name.to_string(), on.to_string());
            }
        } else if valued.contains(&name) {
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| Failure::Usage(format!("flag needs an argument: --{name}")))?,
            };
            out.flags.insert(name.to_string(), value);
        } else {
            return Err(Failure::Usage(format!("unknown flag: --{name}")));
        }
    }
    Ok(out)
}

fn run(argv: &[String], command: fn(&[String]) -> Result<String, Failure>) -> i32 {
    match command(argv) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(Failure::Usage(e)) => {
            eprintln!("Error: {e}");
            eprint!("{USAGE}");
            EXIT_BAD_ARGS
        }
        Err(Failure::Error(e)) => {
            eprintln!("Error: {e}");
            EXIT_ERROR
        }
    }
}

fn data_dirs(a: &Args) -> Result<(PathBuf, Option<PathBuf>), Failure> {
    let data_dir = a
        .get("data-dir")
        .ok_or_else(|| Failure::Usage("--data-dir is required".into()))?;
    Ok((PathBuf::from(data_dir), a.get("wal-dir").map(PathBuf::from)))
}

fn restore(argv: &[String]) -> Result<String, Failure> {
    let a = parse(
        argv,
        &[
            "data-dir",
            "wal-dir",
            "name",
            "initial-cluster",
            "initial-cluster-token",
            "initial-advertise-peer-urls",
            "shards",
        ],
        &["skip-hash-check"],
    )?;
    let [file] = a.positional.as_slice() else {
        return Err(Failure::Usage(
            "snapshot restore requires exactly one argument".into(),
        ));
    };
    ferrokv_ctl::snapshot_file::restore_member(&ferrokv_ctl::snapshot_file::RestoreRequest {
        file,
        name: a.get("name").unwrap_or("default"),
        initial_cluster: a
            .get("initial-cluster")
            .unwrap_or("default=http://localhost:2380"),
        peer_urls: a
            .get("initial-advertise-peer-urls")
            .unwrap_or("http://localhost:2380"),
        data_dir: a.get("data-dir"),
        wal_dir: a.get("wal-dir"),
        skip_hash_check: a.has("skip-hash-check"),
        shards: a
            .get("shards")
            .map(|n| {
                n.parse()
                    .map_err(|_| Failure::Usage(format!("--shards: not a number: {n:?}")))
            })
            .transpose()?,
    })
    .map_err(Failure::Error)
}

fn defrag(argv: &[String]) -> Result<String, Failure> {
    let a = parse(argv, &["data-dir", "wal-dir"], &[])?;
    if !a.positional.is_empty() {
        return Err(Failure::Usage("defrag takes no arguments".into()));
    }
    let (data_dir, wal_dir) = data_dirs(&a)?;
    // etcdutl says nothing when it worked.
    ferrokv_shards::defrag_offline(&data_dir, wal_dir.as_deref())
        .map(|()| String::new())
        .map_err(|e| {
            Failure::Error(format!(
                "Failed to defragment etcd data[{}] ({e})",
                data_dir.display()
            ))
        })
}

fn wal(argv: &[String]) -> Result<String, Failure> {
    let a = parse(argv, &["data-dir", "wal-dir"], &[])?;
    if !a.positional.is_empty() {
        return Err(Failure::Usage("wal takes no arguments".into()));
    }
    let (data_dir, wal_dir) = data_dirs(&a)?;
    ferrokv_shards::inspect::describe_wal(&data_dir, wal_dir.as_deref()).map_err(Failure::Error)
}
