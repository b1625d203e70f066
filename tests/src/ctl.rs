//! Golden tests for `ferroctl`: a script (the format of [`crate::script`])
//! runs with the real etcdctl against one fresh server and with ferroctl
//! against a second, identically started server of the same kind; every
//! step must print the same stdout and stderr and exit with the same code.
//!
//! Two servers rather than one, because a script writes: running it twice
//! against one server would shift every revision of the second run. Both
//! servers start empty with the same flags, so a deterministic server gives
//! both clients the same answers; what differs between the two (ids,
//! addresses) is normalized as in the compat suite.
//!
//! `$TMP` in a script is a scratch directory of its own for each run
//! (e.g. `snapshot save $TMP/s.db`), shown as `$TMP` in outputs.

use std::path::Path;

use crate::normalize::Normalizer;
use crate::script::{compare_runs, parse_script, run_script_with};
use crate::server::{
    etcd_bin, ferroctl_bin, ferrokv_bin, ServerKind, ServerOptions, ServerProcess,
};

/// `--name` of both servers, so that `member list` output can match.
const GOLDEN_MEMBER_NAME: &str = "golden";

/// `tests/testdata/ctl`.
pub fn ctl_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join("ctl")
}

fn start(kind: ServerKind, dir: &Path) -> ServerProcess {
    let options = ServerOptions {
        name: Some(GOLDEN_MEMBER_NAME.to_string()),
        ..ServerOptions::default()
    };
    let binary = match kind {
        ServerKind::Etcd => etcd_bin(),
        ServerKind::Ferrokv => ferrokv_bin().unwrap_or_else(|e| panic!("{e}")),
    };
    ServerProcess::start(kind, binary, dir, options)
}

/// ferroctl's flags from etcdctl 3.5 (see docs/ctl.md).
fn is_etcdctl_35_flag(arg: &str) -> bool {
    const FLAGS: &[&str] = &[
        "--count-only",
        "--min-mod-rev",
        "--max-mod-rev",
        "--min-create-rev",
        "--max-create-rev",
        "--progress-notify",
    ];
    FLAGS
        .iter()
        .any(|f| arg == *f || arg.starts_with(&format!("{f}=")))
}

/// Runs one script file with etcdctl and with ferroctl against two fresh
/// servers of `kind`; panics with a step-by-step report on any difference.
pub fn run_ctl_golden_file(path: &Path, kind: ServerKind) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let mut script = parse_script(&name, &text).unwrap_or_else(|e| panic!("{e}"));
    // Flags etcdctl 3.5 added (and ferroctl accepts) are usage errors for
    // etcdctl 3.4: such steps say nothing about ferroctl's fidelity.
    script
        .steps
        .retain(|step| !step.args.iter().any(|a| is_etcdctl_35_flag(a)));
    let ferroctl = ferroctl_bin().unwrap_or_else(|e| panic!("{e}"));

    let dir = tempfile::Builder::new()
        .prefix("ferrokv-ctl-golden-")
        .tempdir()
        .expect("create tempdir");
    let scratch = |label: &str| {
        let p = dir.path().join(label);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        vec![("TMP".to_string(), p.display().to_string())]
    };
    // Both servers run for the whole test and are killed on drop, also
    // when a step panics, before the tempdir is removed.
    let reference_server = start(kind, dir.path());
    let candidate_server = start(kind, dir.path());

    let normalizer = |server: &ServerProcess| {
        let mut n = Normalizer::for_server(server);
        n.add_keys(&script.normalize_keys);
        // `member add/update/remove` print the cluster id in hex.
        if let Some((cluster_id, _)) = server.ids() {
            n.add_literal(&format!("{cluster_id:x}"), "<cluster_id>");
        }
        n
    };
    let ref_norm = normalizer(&reference_server);
    let cand_norm = normalizer(&candidate_server);

    let ref_out = run_script_with(
        &script,
        &reference_server,
        &ref_norm,
        &crate::etcdctl_bin(),
        &scratch("etcdctl"),
    );
    let cand_out = run_script_with(
        &script,
        &candidate_server,
        &cand_norm,
        &ferroctl,
        &scratch("ferroctl"),
    );
    if std::env::var_os("FERROKV_COMPAT_SHOW").is_some() {
        for (step, (a, b)) in script.steps.iter().zip(ref_out.iter().zip(&cand_out)) {
            eprintln!("$ {}  [exit {} / {}]", step.text, a.code, b.code);
            eprint!("{}{}", a.stdout, a.stderr);
        }
    }
    let ref_label = format!("etcdctl on {kind}");
    let cand_label = format!("ferroctl on {kind}");
    if let Err(report) = compare_runs(&script, (&ref_label, &ref_out), (&cand_label, &cand_out)) {
        panic!("{report}");
    }
    eprintln!(
        "{name}: {} steps identical with etcdctl and ferroctl on {kind}",
        script.steps.len()
    );
}
