//! `ferro-robust`: the robustness suite as one command (see
//! `ferrokv_tests::robust::suite` and docs/robustness.md). Run it through
//! `scripts/robustness`, which builds the servers first.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ferrokv_tests::robust::suite::{self, Config, FaultKind, WorkloadKind};
use ferrokv_tests::server::ServerKind;

const USAGE: &str = "\
usage: ferro-robust [options]
  --target ferrokv|etcd      the servers to run (default ferrokv; etcd is the control)
  --members N                members of the cluster (default 3)
  --shards N                 ferrokv's --shards (default 2)
  --duration D               how long the whole run lasts (default 2m; e.g. 90s, 30m, 1h)
  --round D                  one round's workload (default 20s); one fault per round
  --faults LIST              all (default), none, or names separated by commas:
                             FAULTS
  --workloads LIST           etcd (default), kubernetes, append, all, or names separated by
                             commas: round n runs the n-th (mod the list)
  --seed N                   (default 1): the same seed gives the same requests and faults
  --results DIR              results folder (default robust-results/<target>-<seed>)
  --clients N --watchers N --keys N
  --no-leases                leave lease traffic out
  --check-timeout D          bound on one round's linearizability search (default 2m)
  --keep-histories           keep every round's history (default: failing rounds only)
  --stop-on-anomaly          stop at the first round with an anomaly
  --in-turn                  round n gets the n-th fault of the set (default: a seeded draw)
Exit code 0: no anomaly; 1: an anomaly (see DIR/report.md); 2: bad usage.";

fn duration(text: &str) -> Result<Duration, String> {
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("not a duration: {text:?} (use s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: not a number: {text:?}"))
}

fn parse(args: &[String]) -> Result<Config, String> {
    let mut cfg = Config::new(ServerKind::Ferrokv, PathBuf::new());
    let mut results = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => {
                cfg.kind = match value()?.as_str() {
                    "ferrokv" => ServerKind::Ferrokv,
                    "etcd" => ServerKind::Etcd,
                    t => return Err(format!("--target: ferrokv or etcd, not {t:?}")),
                }
            }
            "--members" => cfg.members = number(flag, value()?)?,
            "--shards" => cfg.shards = number(flag, value()?)?,
            "--duration" => cfg.duration = duration(value()?)?,
            "--round" => cfg.round = duration(value()?)?,
            "--faults" => cfg.faults = FaultKind::parse_set(value()?)?,
            "--workloads" => cfg.workloads = WorkloadKind::parse_set(value()?)?,
            "--seed" => cfg.seed = number(flag, value()?)?,
            "--results" => results = Some(PathBuf::from(value()?)),
            "--clients" => cfg.clients = number(flag, value()?)?,
            "--watchers" => cfg.watchers = number(flag, value()?)?,
            "--keys" => cfg.keys = number(flag, value()?)?,
            "--check-timeout" => cfg.check_timeout = duration(value()?)?,
            "--no-leases" => cfg.leases = false,
            "--keep-histories" => cfg.keep_histories = true,
            "--stop-on-anomaly" => cfg.stop_on_anomaly = true,
            "--in-turn" => cfg.in_turn = true,
            "-h" | "--help" => return Err(String::new()),
            f => return Err(format!("unknown option {f:?}")),
        }
    }
    if !(1..=5).contains(&cfg.members) {
        return Err("--members: 1 to 5".to_string());
    }
    if cfg.clients == 0 || cfg.keys == 0 || cfg.round.is_zero() {
        return Err("--clients, --keys and --round must be above 0".to_string());
    }
    cfg.results = results
        .unwrap_or_else(|| PathBuf::from(format!("robust-results/{}-{}", cfg.kind, cfg.seed)));
    Ok(cfg)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            let names = FaultKind::ALL.map(|k| k.name()).join(", ");
            if !e.is_empty() {
                eprintln!("ferro-robust: {e}");
            }
            eprintln!("{}", USAGE.replace("FAULTS", &names));
            return ExitCode::from(2);
        }
    };
    let rounds = suite::run(&cfg);
    let anomalies = rounds.iter().filter(|r| !r.problems.is_empty()).count();
    eprintln!(
        "{} round(s), {anomalies} with an anomaly; report: {}",
        rounds.len(),
        cfg.results.join("report.md").display()
    );
    if anomalies == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
