//! The commands, one module per etcdctl area.

pub mod auth;
pub mod check;
pub mod cluster;
pub mod concurrency;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod mirror;
pub mod txn;
pub mod watch;

use crate::ctx::{emit, Ctx};
use crate::error::CmdError;

/// Runs the parsed command.
pub async fn run(ctx: Ctx) -> Result<(), CmdError> {
    match ctx.inv.command.path {
        "get" => kv::get(ctx).await,
        "put" => kv::put(ctx).await,
        "del" => kv::del(ctx).await,
        "compaction" => kv::compaction(ctx).await,
        "txn" => txn::txn(ctx).await,
        "watch" => watch::watch(ctx).await,
        "lease grant" => lease::grant(ctx).await,
        "lease revoke" => lease::revoke(ctx).await,
        "lease timetolive" => lease::time_to_live(ctx).await,
        "lease list" => lease::list(ctx).await,
        "lease keep-alive" => lease::keep_alive(ctx).await,
        "member list" => cluster::list(ctx).await,
        "member add" => cluster::add(ctx).await,
        "member remove" => cluster::remove(ctx).await,
        "member update" => cluster::update(ctx).await,
        "member promote" => cluster::promote(ctx).await,
        "endpoint health" => maintenance::health(ctx).await,
        "endpoint status" => maintenance::status(ctx).await,
        "endpoint hashkv" => maintenance::hashkv(ctx).await,
        "alarm list" => maintenance::alarm(ctx, false).await,
        "alarm disarm" => maintenance::alarm(ctx, true).await,
        "defrag" => maintenance::defrag(ctx).await,
        "snapshot save" => maintenance::snapshot_save(ctx).await,
        "snapshot status" => maintenance::snapshot_status(ctx).await,
        "snapshot restore" => maintenance::snapshot_restore(ctx).await,
        "move-leader" => maintenance::move_leader(ctx).await,
        "make-mirror" => mirror::make_mirror(ctx).await,
        "check perf" => check::perf(ctx).await,
        "check datascale" => check::datascale(ctx).await,
        "lock" => concurrency::lock(ctx).await,
        "elect" => concurrency::elect(ctx).await,
        "help" => {
            let path = ctx.inv.args.join(" ");
            if crate::cli::is_known_path(&path) {
                return emit(crate::cli::usage(&path).as_bytes());
            }
            // cobra: the complaint on stderr, then the root usage.
            let words: Vec<String> = ctx.inv.args.iter().map(|a| format!("`{a}`")).collect();
            crate::ctx::eprint_now(&format!("Unknown help topic [{}]\n", words.join(" ")));
            // The root's help flag is only added when the root itself
            // runs, so this usage lacks it.
            let usage =
                crate::cli::usage("").replace("  -h, --help[=false]\t\t\t\thelp for etcdctl\n", "");
            emit(usage.as_bytes())
        }
        "version" => emit(
            format!(
                "etcdctl version: {}\nAPI version: {}\n",
                crate::VERSION,
                crate::API_VERSION
            )
            .as_bytes(),
        ),
        p if p.starts_with("completion ") => {
            let shell = p.trim_start_matches("completion ");
            let text = crate::completion::script(shell).map_err(CmdError::bad_feature)?;
            emit(text.as_bytes())
        }
        p if p.starts_with("user ") || p.starts_with("role ") || p.starts_with("auth ") => {
            auth::run(ctx).await
        }
        other => Err(CmdError::bad_feature(format!(
            "{other}: not supported by ferroctl yet"
        ))),
    }
}
