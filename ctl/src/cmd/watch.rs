//! `watch`: one Watch stream; with `-i`, watches and progress requests
//! read from stdin share it; with `-- cmd args`, the command runs once per
//! event with etcdctl's `ETCD_WATCH_*` environment.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{
    watch_request, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::io::AsyncBufReadExt;

use crate::cli::Invocation;
use crate::client::path;
use crate::ctx::{emit, eprint_now, Ctx};
use crate::error::{CmdError, EXIT_BAD_ARGS, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_INVALID_INPUT};

const ERR_BAD_ARGS_NUM: &str = "bad number of arguments";
const ERR_CONFLICT_ENV: &str = "bad number of arguments (found conflicting environment key)";
const ERR_SEPARATOR: &str = "bad number of arguments (found separator --, but no commands)";

/// A watch to create and the command to run per event.
#[derive(Debug, PartialEq, Eq)]
pub struct WatchSpec {
    pub create: WatchCreateRequest,
    pub exec: Vec<String>,
}

/// etcdctl's `parseWatchArgs` + `getWatchChan` on an already parsed
/// command line (`watch` or one interactive `watch ...` line).
pub fn watch_spec(inv: &Invocation, env_key: &str, env_range: &str) -> Result<WatchSpec, String> {
    let (watch_args, exec) = match inv.dash_at {
        Some(at) => (inv.args[..at].to_vec(), inv.args[at..].to_vec()),
        None => (inv.args.clone(), Vec::new()),
    };
    if inv.dash_at.is_some() && exec.is_empty() {
        return Err(ERR_SEPARATOR.into());
    }
    if !env_key.is_empty() && !watch_args.is_empty() && (inv.dash_at.is_some() || exec.is_empty()) {
        return Err(ERR_CONFLICT_ENV.into());
    }
    if watch_args.is_empty() && env_key.is_empty() {
        return Err(ERR_BAD_ARGS_NUM.into());
    }
    match watch_args.len() {
        1 if !env_range.is_empty() => return Err(ERR_CONFLICT_ENV.into()),
        2 if !env_key.is_empty() || !env_range.is_empty() => return Err(ERR_CONFLICT_ENV.into()),
        _ => {}
    }
    let args = if watch_args.is_empty() {
        vec![env_key.to_string(), env_range.to_string()]
    } else {
        watch_args
    };
    let prefix = inv.bool("prefix");
    let mut key = crate::cli::arg_bytes(&args[0]);
    let mut end = Vec::new();
    if args.len() == 2 {
        if prefix {
            return Err("`range_end` and `--prefix` are mutually exclusive".into());
        }
        end = crate::cli::arg_bytes(&args[1]);
    }
    if prefix {
        (key, end) = super::kv::prefix_range(&key);
    }
    Ok(WatchSpec {
        create: WatchCreateRequest {
            key: Bytes::from(key),
            range_end: Bytes::from(end),
            start_revision: inv.int("rev"),
            progress_notify: inv.bool("progress-notify"),
            prev_kv: inv.bool("prev-kv"),
            ..Default::default()
        },
        exec,
    })
}

/// Pause before reconnecting a watch stream that lost its server.
const WATCH_RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// One watch of a run and where to resume it.
struct Watching {
    create: WatchCreateRequest,
    exec: Vec<String>,
    /// The first revision not yet delivered (0 until known).
    next_rev: i64,
    active: bool,
}

impl Watching {
    fn new(spec: WatchSpec) -> Self {
        Watching {
            next_rev: spec.create.start_revision,
            create: spec.create,
            exec: spec.exec,
            active: true,
        }
    }

    fn resume(&self) -> WatchRequest {
        let mut create = self.create.clone();
        if self.next_rev > 0 {
            create.start_revision = self.next_rev;
        }
        crate::client::create_watch(create)
    }
}

fn create(spec: &WatchSpec) -> WatchRequest {
    crate::client::create_watch(spec.create.clone())
}

/// clientv3's `WatchResponse.Err()` text for a canceled watch.
fn cancel_text(r: &WatchResponse) -> String {
    if r.compact_revision != 0 {
        return "etcdserver: mvcc: required revision has been compacted".into();
    }
    if !r.cancel_reason.is_empty() {
        // etcd's own texts, and gRPC error texts (an auth refusal's reason
        // is `rpc error: code = ... desc = ...`), as etcdctl prints them.
        if r.cancel_reason.starts_with("etcdserver: ") || r.cancel_reason.starts_with("rpc error: ")
        {
            return r.cancel_reason.clone();
        }
        return format!(
            "rpc error: code = FailedPrecondition desc = {}",
            r.cancel_reason
        );
    }
    "etcdserver: mvcc: required revision is a future revision".into()
}

pub async fn watch(ctx: Ctx) -> Result<(), CmdError> {
    let env_key = std::env::var("ETCDCTL_WATCH_KEY").unwrap_or_default();
    let env_range = std::env::var("ETCDCTL_WATCH_RANGE_END").unwrap_or_default();
    if env_key.is_empty() && !env_range.is_empty() {
        return Err(CmdError::bad_args(format!(
            "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
            crate::gofmt::quote(env_range.as_bytes())
        )));
    }
    let interactive = ctx.inv.bool("interactive");
    let first = if interactive {
        None
    } else {
        Some(watch_spec(&ctx.inv, &env_key, &env_range).map_err(CmdError::bad_args)?)
    };
    let client = ctx.client().await?;
    let (mut tx, mut rx) = client.bidi::<WatchRequest, WatchResponse>(path::WATCH);
    // Every watch of this run, in creation order; `pending` holds those
    // sent but not yet confirmed (the server confirms in order).
    let mut watches: Vec<Watching> = Vec::new();
    let mut pending: VecDeque<usize> = VecDeque::new();
    let mut by_id: HashMap<i64, usize> = HashMap::new();
    let closed = || CmdError::error("watch stream closed");
    if let Some(spec) = first {
        tx.send(create(&spec)).await.map_err(|_| closed())?;
        watches.push(Watching::new(spec));
        pending.push_back(0);
    }
    let mut stdin = interactive.then(|| tokio::io::BufReader::new(tokio::io::stdin()).lines());
    let mut live = watches.len();
    loop {
        tokio::select! {
            line = async { match stdin.as_mut() { Some(l) => l.next_line().await, None => std::future::pending().await } } => {
                let line = match line {
                    Ok(Some(line)) => line,
                    Ok(None) => return Err(CmdError::new(EXIT_INVALID_INPUT, "Error reading watch request line: EOF")),
                    Err(e) => return Err(CmdError::new(EXIT_INVALID_INPUT, format!("Error reading watch request line: {e}"))),
                };
                let args = super::txn::argify(&line);
                match args.first().map(String::as_str) {
                    None => eprint_now(&format!("Invalid command: {line} (watch and progress supported)\n")),
                    Some("watch") => {
                        if args.len() < 2 && env_key.is_empty() {
                            eprint_now(&format!("Invalid command {line} (command type or key is not provided)\n"));
                            continue;
                        }
                        let inv = match crate::cli::parse(&args) {
                            Ok(inv) => inv,
                            Err(crate::cli::ParseError::Flag { message, .. }) => return Err(CmdError::bad_args(message)),
                            Err(_) => return Err(CmdError::bad_args(ERR_BAD_ARGS_NUM)),
                        };
                        let spec = match watch_spec(&inv, &env_key, &env_range) {
                            Ok(s) => s,
                            Err(e) if e.starts_with("`range_end`") => {
                                eprint_now(&format!("Invalid command {line} ({e})\n"));
                                continue;
                            }
                            Err(e) => return Err(CmdError::new(EXIT_BAD_ARGS, e)),
                        };
                        tx.send(create(&spec)).await.map_err(|_| closed())?;
                        watches.push(Watching::new(spec));
                        pending.push_back(watches.len() - 1);
                        live += 1;
                    }
                    Some("progress") => {
                        let req = WatchRequest {
                            request_union: Some(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})),
                        };
                        tx.send(req).await.map_err(|_| closed())?;
                    }
                    Some(_) => eprint_now(&format!("Invalid command {line} (only support watch)\n")),
                }
            }
            msg = rx.recv() => {
                let resp = match msg {
                    Some(Ok(r)) => r,
                    None => break,
                    Some(Err(e)) if e.is_transient() => {
                        // As clientv3: reconnect (to the next endpoint, if
                        // any) and resume every watch after the last
                        // revision it delivered, for as long as it takes.
                        tokio::time::sleep(WATCH_RECONNECT_PAUSE).await;
                        client.fail_over();
                        (tx, rx) = client.bidi::<WatchRequest, WatchResponse>(path::WATCH);
                        pending.clear();
                        by_id.clear();
                        for (i, w) in watches.iter().enumerate().filter(|(_, w)| w.active) {
                            tx.send(w.resume()).await.map_err(|_| closed())?;
                            pending.push_back(i);
                        }
                        continue;
                    }
                    Some(Err(e)) => return Err(CmdError::error(e.message())),
                };
                let index = if resp.created {
                    let index = pending.pop_front();
                    if let Some(i) = index {
                        by_id.insert(resp.watch_id, i);
                        let w = &mut watches[i];
                        if w.next_rev == 0 {
                            w.next_rev = resp.header.as_ref().map_or(0, |h| h.revision) + 1;
                        }
                    }
                    if !resp.canceled {
                        continue;
                    }
                    index
                } else {
                    by_id.get(&resp.watch_id).copied()
                };
                if let (Some(i), Some(last)) = (index, resp.events.last()) {
                    watches[i].next_rev = last.kv.as_ref().map_or(0, |kv| kv.mod_revision) + 1;
                }
                if resp.canceled {
                    eprint_now(&format!("watch was canceled ({})\n", cancel_text(&resp)));
                }
                let progress = resp.events.is_empty()
                    && !resp.canceled
                    && resp.compact_revision == 0
                    && resp.header.as_ref().is_some_and(|h| h.revision != 0);
                if progress {
                    let rev = resp.header.as_ref().map_or(0, |h| h.revision);
                    if let Some(i) = index {
                        watches[i].next_rev = watches[i].next_rev.max(rev + 1);
                    }
                    emit(format!("progress notify: {rev}\n").as_bytes())?;
                }
                emit(&ctx.printer.watch(&resp)?)?;
                if let Some(w) = index.map(|i| &watches[i]).filter(|w| !w.exec.is_empty()) {
                    run_exec(&w.exec, &resp).await?;
                }
                if resp.canceled {
                    if let Some(i) = index {
                        watches[i].active = false;
                    }
                    by_id.remove(&resp.watch_id);
                    live = live.saturating_sub(1);
                    if live == 0 && !interactive {
                        break;
                    }
                }
            }
        }
    }
    Err(CmdError::new(
        EXIT_INTERRUPTED,
        "watch is canceled by the server",
    ))
}

/// Runs the `-- cmd` once per event, as etcdctl's `printWatchCh`.
async fn run_exec(exec: &[String], resp: &WatchResponse) -> Result<(), CmdError> {
    let revision = resp.header.as_ref().map_or(0, |h| h.revision);
    for ev in &resp.events {
        let kv = ev.kv.clone().unwrap_or_default();
        let ty = if ev.r#type == 1 { "DELETE" } else { "PUT" };
        let status = tokio::process::Command::new(&exec[0])
            .args(&exec[1..])
            .env("ETCD_WATCH_REVISION", revision.to_string())
            .env("ETCD_WATCH_EVENT_TYPE", format!("\"{ty}\""))
            .env("ETCD_WATCH_KEY", crate::gofmt::quote(&kv.key))
            .env("ETCD_WATCH_VALUE", crate::gofmt::quote(&kv.value))
            .status()
            .await;
        let failure = match status {
            Ok(s) if s.success() => continue,
            Ok(s) => match s.code() {
                Some(code) => format!("exit status {code}"),
                None => "signal: killed".to_string(),
            },
            Err(e) => exec_error(&exec[0], &e),
        };
        let quoted: Vec<String> = exec
            .iter()
            .map(|a| crate::gofmt::quote(a.as_bytes()))
            .collect();
        eprint_now(&format!(
            "command [{}] error ({failure})\n",
            quoted.join(" ")
        ));
        return Err(CmdError {
            code: EXIT_ERROR,
            message: String::new(),
            log: None,
        });
    }
    Ok(())
}

/// Go's `exec.Cmd.Run` error for a command that could not start.
pub fn exec_error(program: &str, err: &std::io::Error) -> String {
    if !program.contains('/') && err.kind() == std::io::ErrorKind::NotFound {
        return format!(
            "exec: {}: executable file not found in $PATH",
            crate::gofmt::quote(program.as_bytes())
        );
    }
    crate::gofmt::io_error("fork/exec", program, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(line: &str) -> Result<WatchSpec, String> {
        let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        watch_spec(&crate::cli::parse(&argv).unwrap(), "", "")
    }

    #[test]
    fn watch_args_like_etcdctl() {
        let s = spec("watch foo -- echo hi").unwrap();
        assert_eq!(&s.create.key[..], b"foo");
        assert_eq!(s.exec, vec!["echo", "hi"]);
        let s = spec("watch --prefix foo --rev 3 --prev-kv").unwrap();
        assert_eq!(&s.create.range_end[..], b"fop");
        assert_eq!((s.create.start_revision, s.create.prev_kv), (3, true));
        assert_eq!(spec("watch").unwrap_err(), ERR_BAD_ARGS_NUM);
        // etcdctl 3.4 takes a range only from exactly two words: with
        // three it watches the first key alone.
        assert!(spec("watch a b c").unwrap().create.range_end.is_empty());
        assert_eq!(spec("watch foo --").unwrap_err(), ERR_SEPARATOR);
        assert_eq!(spec("watch -- echo").unwrap_err(), ERR_BAD_ARGS_NUM);
        assert_eq!(
            spec("watch --prefix a b").unwrap_err(),
            "`range_end` and `--prefix` are mutually exclusive"
        );
    }
}
