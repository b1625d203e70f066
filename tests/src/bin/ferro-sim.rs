//! `ferro-sim`: runs the deterministic simulation (`ferrokv_tests::sim`)
//! over a range of seeds, or replays one seed step by step.
//!
//!     ferro-sim [--seeds N] [--first S] [--seed S --trace] [--keep-going]
//!               [--members M] [--spares K] [--groups G] [--steps K]
//!               [--no-faults | --pauses-only]
//!
//! Exit code 0 when every seed passed; otherwise the first failing seed's
//! report (with the command that replays it), or with `--keep-going` one
//! line per failing seed and their count.

use ferrokv_tests::sim::{run, Options};

fn main() {
    let mut opts = Options::default();
    let mut first = 0u64;
    let mut seeds = 100u64;
    let mut one: Option<u64> = None;
    let mut keep_going = false;
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, flag: &str| -> u64 {
        v.and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            eprintln!("ferro-sim: {flag} needs a number");
            std::process::exit(2)
        })
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seeds" => seeds = num(args.next(), "--seeds"),
            "--first" => first = num(args.next(), "--first"),
            "--seed" => one = Some(num(args.next(), "--seed")),
            "--members" => opts.members = num(args.next(), "--members") as usize,
            "--spares" => opts.spares = num(args.next(), "--spares") as usize,
            "--groups" => opts.groups = num(args.next(), "--groups") as usize,
            "--steps" => opts.steps = num(args.next(), "--steps") as usize,
            "--no-faults" => opts.faults = false,
            "--pauses-only" => opts.pauses_only = true,
            "--trace" => opts.trace = true,
            "--keep-going" => keep_going = true,
            "-h" | "--help" => {
                println!(
                    "ferro-sim [--seeds N] [--first S] [--seed S --trace] [--keep-going] \
                     [--members M] [--spares K] [--groups G] [--steps K] [--no-faults | --pauses-only]"
                );
                return;
            }
            other => {
                eprintln!("ferro-sim: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    if opts.members == 0 || opts.groups == 0 {
        eprintln!("ferro-sim: --members and --groups must be at least 1");
        std::process::exit(2);
    }
    let range = match one {
        Some(s) => s..s + 1,
        None => first..first + seeds,
    };
    let started = std::time::Instant::now();
    let (mut acked, mut crashes, mut elections, mut failed) = (0, 0, 0, 0u64);
    let (mut snapshots, mut disk_fulls) = (0, 0);
    let (mut compactions, mut grants, mut revokes, mut expiries) = (0, 0, 0, 0);
    for seed in range.clone() {
        match run(seed, &opts) {
            Ok(out) => {
                for l in &out.trace {
                    println!("{l}");
                }
                acked += out.acked;
                crashes += out.crashes;
                elections += out.elections;
                snapshots += out.snapshots;
                disk_fulls += out.disk_fulls;
                compactions += out.store_compactions;
                grants += out.lease_grants;
                revokes += out.lease_revokes;
                expiries += out.lease_expiries;
                if one.is_some() {
                    println!(
                        "seed {seed}: {} steps, {} proposals, {} acknowledged, {} elections, \
                         {} crashes ({} torn tails), {} logs failed on a full disk, {} log compactions, \
                         {} snapshots installed, {} reads, {} membership changes, {} messages, \
                         {} store compactions, {} lease grants, {} revokes, {} expiries, \
                         trace hash {:016x}",
                        out.steps,
                        out.proposals,
                        out.acked,
                        out.elections,
                        out.crashes,
                        out.torn_tails,
                        out.disk_fulls,
                        out.compactions,
                        out.snapshots,
                        out.reads,
                        out.changes,
                        out.messages,
                        out.store_compactions,
                        out.lease_grants,
                        out.lease_revokes,
                        out.lease_expiries,
                        out.trace_hash
                    );
                }
            }
            Err(f) if keep_going => {
                failed += 1;
                println!("seed {} step {}: {}", f.seed, f.step, f.what);
            }
            Err(f) => {
                for l in &f.trace {
                    println!("{l}");
                }
                eprintln!("{f}");
                std::process::exit(1);
            }
        }
    }
    let n = range.end - range.start;
    println!(
        "{} of {n} seeds passed ({}..{}) in {:.1} s: {acked} acknowledged proposals, \
         {elections} elections, {crashes} crashes, {snapshots} snapshots installed, \
         {disk_fulls} logs failed on a full disk, {compactions} store compactions, \
         {grants} lease grants, {revokes} lease revokes, {expiries} lease expiries",
        n - failed,
        range.start,
        range.end,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
