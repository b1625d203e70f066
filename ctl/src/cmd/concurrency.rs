//! `lock` and `elect`: etcd's concurrency recipes, interoperable with
//! etcdctl's own `lock`/`elect` on the same names.

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{RangeRequest, RangeResponse};

use crate::client::path;
use crate::concurrency::{self, Session, SESSION_TTL_DEFAULT_S};
use crate::ctx::{emit, Ctx};
use crate::error::CmdError;

/// Resolves on SIGINT or SIGTERM, as etcdctl's `signal.Notify`.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn recipe_err(e: concurrency::RecipeError) -> CmdError {
    CmdError::error(e.message())
}

pub async fn lock(ctx: Ctx) -> Result<(), CmdError> {
    if ctx.inv.args.is_empty() {
        return Err(CmdError::bad_args(
            "lock takes a lock name argument and an optional command to execute",
        ));
    }
    let name = crate::cli::arg_bytes(&ctx.inv.args[0]);
    let command: Vec<String> = ctx.inv.args[1..].to_vec();
    let client = ctx.client().await?;
    let ttl = ctx.inv.int("ttl");
    let session = Session::new(&client, ttl, ctx.command_timeout)
        .await
        .map_err(|e| CmdError::error(e.message()))?;
    let acquired = tokio::select! {
        // etcd's Mutex calls through clientv3's interceptor, which logs
        // a refused call (its Election surfaces the error without it).
        r = concurrency::lock(&session, &name) => r.map_err(|e| match e {
            concurrency::RecipeError::Rpc(e) => CmdError::rpc(&e, client.endpoint()),
            other => recipe_err(other),
        }),
        _ = interrupted() => Err(CmdError::error("context canceled")),
    };
    let guard = match acquired {
        Ok(g) => g,
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    };
    if let Some((program, args)) = command.split_first() {
        let status = tokio::process::Command::new(program)
            .args(args)
            .env(
                "ETCD_LOCK_KEY",
                String::from_utf8_lossy(&guard.key).into_owned(),
            )
            .env("ETCD_LOCK_REV", guard.header.revision.to_string())
            .status()
            .await;
        let unlocked = concurrency::delete(&client, guard.key.clone(), ctx.command_timeout).await;
        session.close().await;
        return match status {
            Ok(s) if s.success() => unlocked.map_err(|e| CmdError::error(e.message())),
            Ok(s) => Err(CmdError::error(match s.code() {
                Some(code) => format!("exit status {code}"),
                None => "signal: killed".to_string(),
            })),
            Err(e) => Err(CmdError::error(super::watch::exec_error(program, &e))),
        };
    }
    let held: RangeResponse = ctx
        .call(
            &client,
            path::RANGE,
            RangeRequest {
                key: guard.key.clone(),
                ..Default::default()
            },
        )
        .await?;
    if held.kvs.is_empty() {
        session.close().await;
        return Err(CmdError::error("lock lost on init"));
    }
    emit(&ctx.printer.get(&held)?)?;
    tokio::select! {
        _ = interrupted() => {
            let r = concurrency::delete(&client, guard.key, ctx.command_timeout).await;
            session.close().await;
            r.map_err(|e| CmdError::error(e.message()))
        }
        _ = session.expired() => Err(CmdError::error("session expired")),
    }
}

pub async fn elect(ctx: Ctx) -> Result<(), CmdError> {
    let args = &ctx.inv.args;
    if args.len() != 1 && args.len() != 2 {
        return Err(CmdError::bad_args(
            "elect takes one election name argument and an optional proposal argument",
        ));
    }
    let listen = ctx.inv.bool("listen");
    if args.len() == 1 && !listen {
        return Err(CmdError::bad_args("no proposal argument but -l not set"));
    }
    if args.len() == 2 && listen {
        return Err(CmdError::bad_args("proposal given but -l is set"));
    }
    let name = crate::cli::arg_bytes(&args[0]);
    let client = ctx.client().await?;
    if listen {
        let printer = ctx.printer;
        let observed = tokio::select! {
            r = concurrency::observe(&client, &name, ctx.command_timeout, |resp| {
                printer
                    .get(&resp)
                    .map_err(|e| e.message)
                    .and_then(|bytes| emit(&bytes).map_err(|e| e.message))
            }) => r,
            _ = interrupted() => return Ok(()),
        };
        return match observed {
            Ok(()) | Err(_) => Err(CmdError::error("elect: observer lost")),
        };
    }
    let value = crate::cli::arg_bytes(&args[1]);
    let session = Session::new(&client, SESSION_TTL_DEFAULT_S, ctx.command_timeout)
        .await
        .map_err(|e| CmdError::error(e.message()))?;
    let elected = tokio::select! {
        r = concurrency::campaign(&session, &name, &value) => r.map_err(recipe_err),
        _ = interrupted() => Err(CmdError::error("context canceled")),
    };
    let key: Bytes = match elected {
        Ok(k) => k,
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    };
    let resp: RangeResponse = ctx
        .call(
            &client,
            path::RANGE,
            RangeRequest {
                key: key.clone(),
                ..Default::default()
            },
        )
        .await?;
    emit(&ctx.printer.get(&resp)?)?;
    tokio::select! {
        _ = interrupted() => {}
        _ = session.expired() => return Err(CmdError::error("elect: session expired")),
    }
    // Resign: the leader key goes, the next entrant takes over.
    let r = concurrency::delete(&client, key, ctx.command_timeout).await;
    session.close().await;
    r.map_err(|e| CmdError::error(e.message()))
}
