//! endpoint health / status / hashkv, alarm, defrag, snapshot save,
//! move-leader: the commands that visit each endpoint (or, with
//! `--cluster`, each member's client URLs) one by one.

use std::io::Write;
use std::time::Instant;

use ferrokv_wire::pb::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, MemberListRequest, MemberListResponse, MoveLeaderRequest, MoveLeaderResponse,
    RangeRequest, RangeResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};

use crate::client::path;
use crate::ctx::{emit, eprint_now, Ctx};
use crate::error::{CmdError, EXIT_ERROR, EXIT_INTERRUPTED};
use crate::printer::{EpHealth, Format};

/// `--endpoints`, or with `--cluster` every client URL of every member.
async fn endpoints(ctx: &Ctx) -> Result<Vec<String>, CmdError> {
    if !ctx.inv.bool("cluster") {
        return Ok(ctx.config.endpoints.clone());
    }
    let client = ctx.client().await?;
    let resp: MemberListResponse = ctx
        .call(&client, path::MEMBER_LIST, MemberListRequest {})
        .await?;
    let mut eps = Vec::new();
    for m in resp.members {
        eps.extend(m.client_ur_ls);
    }
    Ok(eps)
}

pub async fn health(ctx: Ctx) -> Result<(), CmdError> {
    ctx.check_settings()?;
    let mut list = Vec::new();
    for ep in endpoints(&ctx).await? {
        let client = ctx.client_for(&ep).await?;
        let started = Instant::now();
        // Any answer to a linearizable read (even "permission denied")
        // means a quorum committed it.
        let read = client
            .unary::<_, RangeResponse>(
                path::RANGE,
                RangeRequest {
                    key: bytes::Bytes::from_static(b"health"),
                    ..Default::default()
                },
                ctx.command_timeout,
            )
            .await;
        let took = crate::gofmt::duration(started.elapsed());
        let mut h = EpHealth {
            endpoint: ep.clone(),
            health: false,
            took,
            error: String::new(),
        };
        match read {
            Ok(_) => h.health = true,
            Err(e) if e.message() == "etcdserver: permission denied" => h.health = true,
            Err(e) => {
                eprint_now(&format!("{}\n", crate::error::retry_warning(&e, &ep)));
                h.error = e.message();
            }
        }
        if h.health {
            let alarms = client
                .unary::<_, AlarmResponse>(
                    path::ALARM,
                    AlarmRequest::default(),
                    ctx.command_timeout,
                )
                .await;
            match alarms {
                Ok(a) if !a.alarms.is_empty() => {
                    h.health = false;
                    h.error = "Active Alarm(s): ".into();
                    for m in &a.alarms {
                        h.error.push_str(match m.alarm {
                            1 => "NOSPACE ",
                            2 => "CORRUPT ",
                            _ => "UNKNOWN ",
                        });
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    h.health = false;
                    h.error = "Unable to fetch the alarm list".into();
                }
            }
        }
        list.push(h);
    }
    if ctx.printer.format == Format::Simple {
        for h in &list {
            if h.error.is_empty() {
                eprint_now(&format!(
                    "{} is healthy: successfully committed proposal: took = {}\n",
                    h.endpoint, h.took
                ));
            } else {
                eprint_now(&format!(
                    "{} is unhealthy: failed to commit proposal: {}\n",
                    h.endpoint, h.error
                ));
            }
        }
    } else {
        emit(&ctx.printer.endpoint_health(&list)?)?;
    }
    if list.iter().any(|h| !h.error.is_empty()) {
        return Err(CmdError::error("unhealthy cluster"));
    }
    Ok(())
}

pub async fn status(ctx: Ctx) -> Result<(), CmdError> {
    let mut list = Vec::new();
    let mut failed = false;
    for ep in endpoints(&ctx).await? {
        let client = ctx.client_for(&ep).await?;
        match client
            .unary::<_, StatusResponse>(path::STATUS, StatusRequest {}, ctx.command_timeout)
            .await
        {
            Ok(resp) => list.push((ep, resp)),
            Err(e) => {
                failed = true;
                eprint_now(&format!(
                    "{}\nFailed to get the status of endpoint {ep} ({})\n",
                    crate::error::retry_warning_direct(&e, &ep),
                    e.message()
                ));
            }
        }
    }
    emit(&ctx.printer.endpoint_status(&list)?)?;
    if failed {
        return Err(silent_exit(EXIT_ERROR));
    }
    Ok(())
}

pub async fn hashkv(ctx: Ctx) -> Result<(), CmdError> {
    let revision = ctx.inv.int("rev");
    let mut list = Vec::new();
    let mut failed = None;
    for ep in endpoints(&ctx).await? {
        let client = ctx.client_for(&ep).await?;
        match client
            .unary::<_, HashKvResponse>(
                path::HASH_KV,
                HashKvRequest { revision },
                ctx.command_timeout,
            )
            .await
        {
            Ok(resp) => list.push((ep, resp)),
            Err(e) => {
                failed = Some(e.message());
                eprint_now(&format!(
                    "{}\nFailed to get the hash of endpoint {ep} ({})\n",
                    crate::error::retry_warning_direct(&e, &ep),
                    e.message()
                ));
            }
        }
    }
    emit(&ctx.printer.endpoint_hashkv(&list)?)?;
    if let Some(message) = failed {
        return Err(CmdError::error(message));
    }
    Ok(())
}

/// An exit with a code and nothing more on stderr (etcdctl's `os.Exit`).
fn silent_exit(code: i32) -> CmdError {
    CmdError {
        code,
        message: String::new(),
        log: None,
    }
}

pub async fn alarm(ctx: Ctx, disarm: bool) -> Result<(), CmdError> {
    let client = ctx.client().await?;
    let list: AlarmResponse = ctx
        .call(&client, path::ALARM, AlarmRequest::default())
        .await?;
    if !disarm {
        return emit(&ctx.printer.alarm(&list)?);
    }
    // clientv3's AlarmDisarm without a member: list, then disarm each; the
    // combined response has no header.
    let mut out = AlarmResponse::default();
    for a in &list.alarms {
        let req = AlarmRequest {
            action: 2,
            member_id: a.member_id,
            alarm: a.alarm,
        };
        let resp: AlarmResponse = ctx.call(&client, path::ALARM, req).await?;
        out.alarms.extend(resp.alarms);
    }
    emit(&ctx.printer.alarm(&out)?)
}

pub async fn defrag(ctx: Ctx) -> Result<(), CmdError> {
    let data_dir = ctx.inv.string("data-dir");
    if !data_dir.is_empty() {
        // etcdctl 3.4 defragments a stopped member's files itself (3.5
        // moved this to etcdutl; ferroutl has it too), silently when it
        // works.
        let dir = std::path::PathBuf::from(&data_dir);
        let done = tokio::task::spawn_blocking(move || ferrokv_shards::defrag_offline(&dir, None))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        return done.map_err(|e| {
            eprint_now(&format!(
                "Failed to defragment etcd data[{data_dir}] ({e})\n"
            ));
            silent_exit(EXIT_ERROR)
        });
    }
    let mut failures = 0;
    let all = endpoints(&ctx).await?;
    // Which member is being worked on, on a terminal only: piped output
    // stays exactly etcdctl's.
    let progress = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal()
    };
    for (i, ep) in all.iter().enumerate() {
        let ep = ep.clone();
        if progress {
            eprint_now(&format!(
                "\rdefragmenting etcd member[{ep}] ({}/{})...",
                i + 1,
                all.len()
            ));
        }
        let client = ctx.client_for(&ep).await?;
        let outcome = client
            .unary::<_, DefragmentResponse>(
                path::DEFRAGMENT,
                DefragmentRequest {},
                ctx.command_timeout,
            )
            .await;
        if progress {
            eprint_now("\r\x1b[K");
        }
        match outcome {
            Ok(_) => emit(format!("Finished defragmenting etcd member[{ep}]\n").as_bytes())?,
            Err(e) => {
                failures += 1;
                eprint_now(&format!(
                    "{}\nFailed to defragment etcd member[{ep}] ({})\n",
                    crate::error::retry_warning_direct(&e, &ep),
                    e.message()
                ));
            }
        }
    }
    if failures != 0 {
        return Err(silent_exit(EXIT_ERROR));
    }
    Ok(())
}

/// zap's warning line (ISO timestamp, as clientv3's logger writes it).
fn zap_warn(caller: &str, msg: &str, fields: &[(&str, String)]) -> String {
    zap_info(caller, msg, fields, true).replacen("\"level\":\"info\"", "\"level\":\"warn\"", 1)
}

/// zap's production logger line, as etcdctl's snapshot code logs.
fn zap_info(caller: &str, msg: &str, fields: &[(&str, String)], iso_ts: bool) -> String {
    let now = std::time::SystemTime::now();
    let ts = if iso_ts {
        crate::gofmt::json_string(&crate::gofmt::zap_timestamp(now))
    } else {
        let since = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{}", since.as_secs_f64())
    };
    let mut line = format!(
        "{{\"level\":\"info\",\"ts\":{ts},\"caller\":{},\"msg\":{}",
        crate::gofmt::json_string(caller),
        crate::gofmt::json_string(msg)
    );
    for (k, v) in fields {
        line.push_str(&format!(",{}:{v}", crate::gofmt::json_string(k)));
    }
    line.push_str("}\n");
    line
}

pub async fn snapshot_save(ctx: Ctx) -> Result<(), CmdError> {
    if ctx.inv.args.len() != 1 {
        return Err(CmdError::bad_args("snapshot save expects one argument"));
    }
    let target = ctx.inv.args[0].clone();
    if ctx.config.endpoints.len() != 1 {
        return Err(CmdError::new(
            EXIT_INTERRUPTED,
            format!(
                "snapshot must be requested to one selected node, not multiple [{}]",
                ctx.config.endpoints.join(" ")
            ),
        ));
    }
    let ep = ctx.config.endpoints[0].clone();
    let js = crate::gofmt::json_string;
    let part = format!("{target}.part");
    let mut file = std::fs::File::create(&part).map_err(|e| {
        CmdError::new(
            EXIT_INTERRUPTED,
            format!(
                "could not open {part} ({})",
                crate::gofmt::io_error("open", &part, &e)
            ),
        )
    })?;
    eprint_now(&zap_info(
        "snapshot/v3_snapshot.go:119",
        "created temporary db file",
        &[("path", js(&part))],
        false,
    ));
    let client = ctx.client().await?;
    let started = Instant::now();
    // Without an explicit --command-timeout, etcdctl sets no deadline on
    // a snapshot; ferroctl bounds it by a day so nothing waits forever.
    let deadline = if ctx.inv.is_set("command-timeout") {
        ctx.command_timeout
    } else {
        std::time::Duration::from_secs(24 * 3600)
    };
    // grpc-go opens a stream without waiting for the server, so etcdctl
    // logs these two lines before any answer, also when the call fails.
    eprint_now(&zap_info(
        "clientv3/maintenance.go:200",
        "opened snapshot stream; downloading",
        &[],
        true,
    ));
    eprint_now(&zap_info(
        "snapshot/v3_snapshot.go:127",
        "fetching snapshot",
        &[("endpoint", js(&ep))],
        false,
    ));
    let stream_failed = |status: tonic::Status| {
        let text = crate::client::status_text(&status);
        let grpc = crate::client::RpcError::from_status(status).grpc_text();
        eprint_now(&zap_warn(
            "clientv3/maintenance.go:210",
            "failed to receive from snapshot stream; closing",
            &[("error", js(&grpc))],
        ));
        text
    };
    // A running byte count on a terminal only: piped output stays exactly
    // etcdctl's.
    let progress = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal()
    };
    let fetch = async {
        let mut grpc = tonic::client::Grpc::new(client.channel());
        grpc.ready().await.map_err(|e| e.to_string())?;
        let codec = tonic_prost::ProstCodec::<SnapshotRequest, SnapshotResponse>::default();
        let mut stream = grpc
            .server_streaming(
                client.with_token(tonic::Request::new(SnapshotRequest {})),
                tonic::codegen::http::uri::PathAndQuery::from_static(path::SNAPSHOT),
                codec,
            )
            .await
            .map_err(stream_failed)?
            .into_inner();
        let mut size: u64 = 0;
        while let Some(chunk) = stream.message().await.map_err(stream_failed)? {
            file.write_all(&chunk.blob)
                .map_err(|e| crate::gofmt::io_error("write", &part, &e))?;
            size += chunk.blob.len() as u64;
            if progress {
                eprint_now(&format!(
                    "\rdownloading snapshot: {}",
                    crate::gofmt::human_bytes(size)
                ));
            }
        }
        if progress {
            // Clear the progress line before the log lines go on.
            eprint_now("\r\x1b[K");
        }
        eprint_now(&zap_info(
            "clientv3/maintenance.go:208",
            "completed snapshot read; closing",
            &[],
            true,
        ));
        file.sync_all()
            .map_err(|e| crate::gofmt::io_error("sync", &part, &e))?;
        Ok::<u64, String>(size)
    };
    let size = match tokio::time::timeout(deadline, fetch).await {
        Ok(Ok(size)) => size,
        Ok(Err(e)) => return Err(CmdError::new(EXIT_INTERRUPTED, e)),
        Err(_) => return Err(CmdError::new(EXIT_INTERRUPTED, "context deadline exceeded")),
    };
    eprint_now(&zap_info(
        "snapshot/v3_snapshot.go:142",
        "fetched snapshot",
        &[
            ("endpoint", js(&ep)),
            ("size", js(&crate::gofmt::human_bytes(size))),
            ("took", format!("{}", started.elapsed().as_secs_f64())),
        ],
        false,
    ));
    std::fs::rename(&part, &target).map_err(|e| {
        CmdError::new(
            EXIT_INTERRUPTED,
            format!("could not rename {part} to {target} ({e})"),
        )
    })?;
    eprint_now(&zap_info(
        "snapshot/v3_snapshot.go:152",
        "saved",
        &[("path", js(&target))],
        false,
    ));
    emit(format!("Snapshot saved at {target}\n").as_bytes())
}

/// etcdctl 3.4's `snapshot restore` (3.5 moved it to etcdutl; ferroutl
/// has the same): a ferrokv backup into a new member data dir.
pub async fn snapshot_restore(ctx: Ctx) -> Result<(), CmdError> {
    let [file] = ctx.inv.args.as_slice() else {
        return Err(CmdError::bad_args(
            "snapshot restore requires exactly one argument",
        ));
    };
    let inv = &ctx.inv;
    let given = |name: &str| inv.is_set(name).then(|| inv.string(name));
    let cluster = inv.string("initial-cluster");
    let (data_dir, wal_dir) = (
        given("data-dir").filter(|d| !d.is_empty()),
        given("wal-dir").filter(|d| !d.is_empty()),
    );
    let (name, peer_urls) = (
        inv.string("name"),
        inv.string("initial-advertise-peer-urls"),
    );
    let req = crate::snapshot_file::RestoreRequest {
        file,
        name: &name,
        initial_cluster: &cluster,
        peer_urls: &peer_urls,
        data_dir: data_dir.as_deref(),
        wal_dir: wal_dir.as_deref(),
        skip_hash_check: inv.bool("skip-hash-check"),
        shards: match given("shards") {
            Some(n) => Some(
                n.parse()
                    .map_err(|_| CmdError::bad_args(format!("--shards: not a number: {n:?}")))?,
            ),
            None => None,
        },
    };
    let text = crate::snapshot_file::restore_member(&req).map_err(CmdError::error)?;
    emit(text.as_bytes())
}

pub async fn move_leader(ctx: Ctx) -> Result<(), CmdError> {
    if ctx.inv.args.len() != 1 {
        return Err(CmdError::bad_args("move-leader command needs 1 argument"));
    }
    let arg = &ctx.inv.args[0];
    let target = u64::from_str_radix(arg, 16).map_err(|_| {
        CmdError::bad_args(format!(
            "strconv.ParseUint: parsing {}: invalid syntax",
            crate::gofmt::quote(arg.as_bytes())
        ))
    })?;
    for ep in ctx.config.endpoints.clone() {
        let client = ctx.client_for(&ep).await?;
        let status: StatusResponse = ctx.call(&client, path::STATUS, StatusRequest {}).await?;
        let member_id = status.header.as_ref().map_or(0, |h| h.member_id);
        if member_id == status.leader {
            let _: MoveLeaderResponse = ctx
                .call(
                    &client,
                    path::MOVE_LEADER,
                    MoveLeaderRequest { target_id: target },
                )
                .await?;
            return emit(
                format!(
                    "Leadership transferred from {:x} to {target:x}\n",
                    status.leader
                )
                .as_bytes(),
            );
        }
    }
    Err(CmdError::bad_args(format!(
        "no leader endpoint given at [{}]",
        ctx.config.endpoints.join(" ")
    )))
}

pub async fn snapshot_status(ctx: Ctx) -> Result<(), CmdError> {
    if ctx.inv.args.len() != 1 {
        return Err(CmdError::bad_args(
            "snapshot status requires exactly one argument",
        ));
    }
    let file = &ctx.inv.args[0];
    let data = std::fs::read(file)
        .map_err(|e| CmdError::error(crate::gofmt::io_error("stat", file, &e)))?;
    let st = crate::snapshot_file::status(&data).map_err(CmdError::error)?;
    let size = crate::gofmt::human_bytes(u64::try_from(st.total_size).unwrap_or(0));
    let out = match ctx.printer.format {
        Format::Simple => format!("{:x}, {}, {}, {size}\n", st.hash, st.revision, st.total_key),
        Format::Json => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            st.hash, st.revision, st.total_key, st.total_size
        ),
        Format::Fields => format!(
            "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
            st.hash, st.revision, st.total_key, st.total_size
        ),
        Format::Table => crate::table::ascii_table(
            &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
            &[vec![
                format!("{:x}", st.hash),
                st.revision.to_string(),
                st.total_key.to_string(),
                size,
            ]],
        ),
        Format::Protobuf => {
            return Err(CmdError::bad_feature(
                "protobuf not supported as output format",
            ))
        }
    };
    emit(out.as_bytes())
}
