//! etcdctl's checks. `check perf`: for the duration of a load model,
//! `clients` writers put 1 KiB values under random 256-byte keys below
//! `--prefix` at the model's rate; then the clean-up and the verdicts
//! (PASS/FAIL on throughput, slowest request, standard deviation).
//! `check datascale`: a model's number of 512-byte keys with 512-byte
//! values written as fast as its clients go, and the server's resident
//! memory (its `/metrics`) before and after.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DefragmentRequest, DefragmentResponse,
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
};

use crate::client::{path, Client, RpcError};
use crate::ctx::{emit, Ctx};
use crate::error::{CmdError, EXIT_ERROR};

/// etcdctl's model names and their aliases.
fn model(name: &str) -> Option<&'static str> {
    Some(match name {
        "s" | "small" => "s",
        "m" | "medium" => "m",
        "l" | "large" => "l",
        "xl" | "xLarge" => "xl",
        _ => return None,
    })
}

/// etcdctl's perf load models: (writes/s, clients).
fn load_model(name: &str) -> Option<(u64, usize)> {
    Some(match model(name)? {
        "s" => (150, 50),
        "m" => (1000, 200),
        "l" => (8000, 500),
        _ => (15000, 1000),
    })
}

/// etcdctl's datascale models: (keys, clients).
fn datascale_model(name: &str) -> Option<(usize, usize)> {
    Some(match model(name)? {
        "s" => (10_000, 50),
        "m" => (100_000, 200),
        "l" => (1_000_000, 500),
        _ => (3_000_000, 1000),
    })
}

/// Every model runs this long in etcdctl. `FERROCTL_CHECK_PERF_DURATION`
/// (a Go duration) shortens it for tests; etcdctl has no such knob.
const CHECK_PERF_DURATION: Duration = Duration::from_secs(60);
/// Connections shared by the writers (etcdctl opens one per writer).
const CHECK_PERF_CONNECTIONS_MAX: usize = 16;
const KEY_SIZE: usize = 256;
const VALUE_SIZE: usize = 1024;
const DATASCALE_KEY_SIZE: usize = 512;
const DATASCALE_VALUE_SIZE: usize = 512;
/// etcdctl's bound on the clean-up, compaction and defragmentation calls.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// A `/metrics` page larger than this is not read further.
const METRICS_BYTES_MAX: u64 = 16 << 20;

pub async fn perf(ctx: Ctx) -> Result<(), CmdError> {
    let load = ctx.inv.string("load");
    let Some((limit, clients)) = load_model(&load) else {
        return Err(CmdError::bad_feature(format!("unknown load option {load}")));
    };
    let duration = std::env::var("FERROCTL_CHECK_PERF_DURATION")
        .ok()
        .and_then(|d| crate::gofmt::parse_duration(&d).ok())
        .unwrap_or(CHECK_PERF_DURATION);
    let prefix = ctx.inv.string("prefix");
    let conns = connect_to_empty_prefix(&ctx, &prefix, clients).await?;
    let first = conns[0].clone();

    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let interval = Duration::from_secs_f64(1.0 / limit as f64);
    let next_slot = Arc::new(Mutex::new(tokio::time::Instant::now()));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let errors = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let mut workers = Vec::new();
    for i in 0..clients {
        let conn = conns[i % conns.len()].clone();
        let (prefix, next_slot, latencies, errors) = (
            prefix.clone(),
            next_slot.clone(),
            latencies.clone(),
            errors.clone(),
        );
        let timeout = ctx.command_timeout;
        let mut rng = splitmix(i as u64 ^ started.elapsed().as_nanos() as u64);
        workers.push(tokio::spawn(async move {
            loop {
                // A shared token bucket of one: the writers together stay
                // at the model's rate.
                let slot = {
                    let Ok(mut next) = next_slot.lock() else {
                        return;
                    };
                    let slot = (*next).max(tokio::time::Instant::now());
                    *next = slot + interval;
                    slot
                };
                if slot >= deadline {
                    return;
                }
                tokio::time::sleep_until(slot).await;
                rng = splitmix(rng);
                let mut key = prefix.clone().into_bytes();
                let mut raw = vec![0u8; KEY_SIZE];
                raw[..8].copy_from_slice(&rng.to_le_bytes());
                key.extend_from_slice(&raw);
                let req = PutRequest {
                    key: Bytes::from(key),
                    value: Bytes::from(vec![0u8; VALUE_SIZE]),
                    ..Default::default()
                };
                let sent = Instant::now();
                let result: Result<PutResponse, _> = conn.unary(path::PUT, req, timeout).await;
                match result {
                    Ok(_) => {
                        if let Ok(mut l) = latencies.lock() {
                            l.push(sent.elapsed().as_secs_f64());
                        }
                    }
                    Err(e) => {
                        if let Ok(mut errs) = errors.lock() {
                            *errs.entry(e.message()).or_default() += 1;
                        }
                    }
                }
            }
        }));
    }
    let progress = std::io::stdout().is_terminal();
    let total_s = duration.as_secs().max(1);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut elapsed_s = 0;
    while tokio::time::Instant::now() < deadline {
        ticker.tick().await;
        if progress {
            let pct = (elapsed_s as f64 / total_s as f64 * 100.0).min(100.0);
            emit(
                format!(
                    "\r {elapsed_s} / {total_s} {}! {pct:.2}%",
                    "o".repeat(elapsed_s as usize % 40)
                )
                .as_bytes(),
            )?;
        }
        elapsed_s += 1;
    }
    for w in workers {
        let _ = w.await;
    }
    if progress {
        emit(format!("\r {total_s} / {total_s} 100.00%\n\n").as_bytes())?;
    }
    let took_s = started.elapsed().as_secs_f64();
    let lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    let rps = lat.len() as f64 / took_s;
    let slowest = lat.iter().copied().fold(0.0, f64::max);
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().sum::<f64>() / lat.len() as f64
    };
    let stddev = if lat.is_empty() {
        0.0
    } else {
        (lat.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / lat.len() as f64).sqrt()
    };

    // As etcdctl: the clean-up (and its compaction, defragmentation)
    // before the verdicts.
    match delete_prefix(&first, &prefix).await {
        Ok(revision) => {
            if ctx.inv.bool("auto-compact") {
                compact(&first, revision).await?;
            }
        }
        Err(e) => emit(
            format!(
                "FAIL: Cleanup failed during key deletion: ERROR({})\n",
                e.message()
            )
            .as_bytes(),
        )?,
    }
    if ctx.inv.bool("auto-defrag") {
        defrag_all(&ctx).await?;
    }

    let mut out = String::new();
    let mut ok = true;
    let errs = errors.lock().map(|e| e.clone()).unwrap_or_default();
    if !errs.is_empty() {
        out.push_str("FAIL: too many errors\n");
        for (e, n) in &errs {
            out.push_str(&format!("FAIL: ERROR({e}) -> {n}\n"));
        }
        ok = false;
    }
    if rps / limit as f64 <= 0.9 {
        out.push_str(&format!(
            "FAIL: Throughput too low: {} writes/s\n",
            rps as u64 + 1
        ));
        ok = false;
    } else {
        out.push_str(&format!(
            "PASS: Throughput is {} writes/s\n",
            rps as u64 + 1
        ));
    }
    if slowest > 0.5 {
        out.push_str(&format!("Slowest request took too long: {slowest:.6}s\n"));
        ok = false;
    } else {
        out.push_str(&format!("PASS: Slowest request took {slowest:.6}s\n"));
    }
    if stddev > 0.1 {
        out.push_str(&format!("Stddev too high: {stddev:.6}s\n"));
        ok = false;
    } else {
        out.push_str(&format!("PASS: Stddev is {stddev:.6}s\n"));
    }
    out.push_str(if ok { "PASS\n" } else { "FAIL\n" });
    emit(out.as_bytes())?;
    if !ok {
        return Err(CmdError {
            code: EXIT_ERROR,
            message: String::new(),
            log: None,
        });
    }
    Ok(())
}

/// The connections the writers share, once it is known that `prefix`
/// holds no keys (etcdctl refuses to write over existing ones).
async fn connect_to_empty_prefix(
    ctx: &Ctx,
    prefix: &str,
    clients: usize,
) -> Result<Vec<Client>, CmdError> {
    let mut conns = Vec::new();
    for _ in 0..clients.clamp(1, CHECK_PERF_CONNECTIONS_MAX) {
        conns.push(ctx.client().await?);
    }
    let existing: RangeResponse = ctx
        .call(
            &conns[0],
            path::RANGE,
            RangeRequest {
                key: Bytes::from(prefix.to_string()),
                range_end: Bytes::from(super::kv::prefix_end(prefix.as_bytes())),
                limit: 1,
                ..Default::default()
            },
        )
        .await?;
    if !existing.kvs.is_empty() {
        return Err(CmdError::invalid_input(format!(
            "prefix {} has keys. Delete with etcdctl del --prefix {prefix} first",
            crate::gofmt::quote(prefix.as_bytes())
        )));
    }
    Ok(conns)
}

/// etcdctl's clean-up: every key under `prefix` deleted; the revision.
async fn delete_prefix(client: &Client, prefix: &str) -> Result<i64, RpcError> {
    let deleted: DeleteRangeResponse = client
        .unary(
            path::DELETE_RANGE,
            DeleteRangeRequest {
                key: Bytes::from(prefix.to_string()),
                range_end: Bytes::from(super::kv::prefix_end(prefix.as_bytes())),
                ..Default::default()
            },
            CLEANUP_TIMEOUT,
        )
        .await?;
    Ok(deleted.header.map_or(0, |h| h.revision))
}

/// etcdctl's `compact` helper (physical, 30 s), with its two lines.
async fn compact(client: &Client, revision: i64) -> Result<(), CmdError> {
    emit(format!("Compacting with revision {revision}\n").as_bytes())?;
    let _: CompactionResponse = client
        .unary(
            path::COMPACT,
            CompactionRequest {
                revision,
                physical: true,
            },
            CLEANUP_TIMEOUT,
        )
        .await
        .map_err(|e| CmdError::rpc(&e, client.endpoint()))?;
    emit(format!("Compacted with revision {revision}\n").as_bytes())
}

/// etcdctl's `defrag` helper on every endpoint, with its two lines each.
async fn defrag_all(ctx: &Ctx) -> Result<(), CmdError> {
    for ep in ctx.config.endpoints.clone() {
        emit(format!("Defragmenting {}\n", crate::gofmt::quote(ep.as_bytes())).as_bytes())?;
        let c = ctx.client_for(&ep).await?;
        c.unary::<_, DefragmentResponse>(path::DEFRAGMENT, DefragmentRequest {}, CLEANUP_TIMEOUT)
            .await
            .map_err(|e| CmdError::rpc(&e, &ep))?;
        emit(format!("Defragmented {}\n", crate::gofmt::quote(ep.as_bytes())).as_bytes())?;
    }
    Ok(())
}

/// `process_resident_memory_bytes` from the endpoint's `/metrics`, as
/// etcdctl reads it (plain HTTP); what went wrong, in etcdctl's words.
async fn resident_memory(endpoint: &str) -> Result<f64, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const KEY: &str = "process_resident_memory_bytes";
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    if host.starts_with("https://") {
        return Err("fetch error: /metrics over TLS is not supported by ferroctl yet".into());
    }
    let url = format!("http://{host}/metrics");
    let fetch = async {
        let mut conn = tokio::net::TcpStream::connect(&host).await?;
        conn.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut body = Vec::new();
        conn.take(METRICS_BYTES_MAX).read_to_end(&mut body).await?;
        Ok::<Vec<u8>, std::io::Error>(body)
    };
    let body = match tokio::time::timeout(CLEANUP_TIMEOUT, fetch).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(format!("fetch error: Get {url:?}: {e}")),
        Err(_) => return Err(format!("fetch error: Get {url:?}: timeout")),
    };
    let text = String::from_utf8_lossy(&body);
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(KEY))
        .map(str::trim)
        .ok_or_else(|| format!("could not find: {KEY}"))?;
    value
        .parse()
        .map_err(|_| format!("parse error: strconv.ParseFloat: parsing {value:?}: invalid syntax"))
}

pub async fn datascale(ctx: Ctx) -> Result<(), CmdError> {
    let load = ctx.inv.string("load");
    let Some((keys, clients)) = datascale_model(&load) else {
        return Err(CmdError::bad_feature(format!("unknown load option {load}")));
    };
    let prefix = ctx.inv.string("prefix");
    let conns = connect_to_empty_prefix(&ctx, &prefix, clients).await?;
    let first = conns[0].clone();
    let endpoint = ctx.config.endpoints.first().cloned().unwrap_or_default();
    let memory_failed = |when: &str, why: String| {
        let _ = emit(format!("{why}\nFAIL: Could not read process_resident_memory_bytes {when} the put operations.\n").as_bytes());
        CmdError {
            code: EXIT_ERROR,
            message: String::new(),
            log: None,
        }
    };
    let before = resident_memory(&endpoint)
        .await
        .map_err(|e| memory_failed("before", e))?;
    emit(
        format!(
            "Start data scale check for work load [{keys} key-value pairs, {} bytes per key-value, {clients} concurrent clients].\n",
            DATASCALE_KEY_SIZE + DATASCALE_VALUE_SIZE
        )
        .as_bytes(),
    )?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let seed = Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
    let mut workers = Vec::new();
    for i in 0..clients {
        let conn = conns[i % conns.len()].clone();
        let (prefix, next, errors) = (prefix.clone(), next.clone(), errors.clone());
        let timeout = ctx.command_timeout;
        let mut rng = splitmix(seed ^ i as u64);
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < keys {
                rng = splitmix(rng);
                let mut key = prefix.clone().into_bytes();
                let mut raw = vec![0u8; DATASCALE_KEY_SIZE];
                raw[..8].copy_from_slice(&rng.to_le_bytes());
                key.extend_from_slice(&raw);
                let req = PutRequest {
                    key: Bytes::from(key),
                    value: Bytes::from(vec![0u8; DATASCALE_VALUE_SIZE]),
                    ..Default::default()
                };
                let result: Result<PutResponse, _> = conn.unary(path::PUT, req, timeout).await;
                if let Err(e) = result {
                    if let Ok(mut errs) = errors.lock() {
                        *errs.entry(e.message()).or_default() += 1;
                    }
                }
            }
        }));
    }
    let progress = std::io::stdout().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    while workers.iter().any(|w| !w.is_finished()) {
        ticker.tick().await;
        if progress {
            let done = next.load(std::sync::atomic::Ordering::Relaxed).min(keys);
            let pct = done as f64 / keys as f64 * 100.0;
            emit(format!("\r {done} / {keys} {pct:6.2}%").as_bytes())?;
        }
    }
    for w in workers {
        let _ = w.await;
    }
    if progress {
        emit(format!("\r {keys} / {keys} 100.00%\n").as_bytes())?;
    }
    let after = resident_memory(&endpoint)
        .await
        .map_err(|e| memory_failed("after", e))?;
    let revision = delete_prefix(&first, &prefix)
        .await
        .map_err(|e| CmdError::rpc(&e, first.endpoint()))?;
    if ctx.inv.bool("auto-compact") {
        compact(&first, revision).await?;
    }
    if ctx.inv.bool("auto-defrag") {
        defrag_all(&ctx).await?;
    }
    let errs = errors.lock().map(|e| e.clone()).unwrap_or_default();
    if !errs.is_empty() {
        let mut out = String::from("FAIL: too many errors\n");
        for (e, n) in &errs {
            out.push_str(&format!("FAIL: ERROR({e}) -> {n}\n"));
        }
        emit(out.as_bytes())?;
        return Err(CmdError {
            code: EXIT_ERROR,
            message: String::new(),
            log: None,
        });
    }
    let mb = (after - before) / (1024.0 * 1024.0);
    emit(format!("PASS: Approximate system memory used : {mb:.2} MB.\n").as_bytes())
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
