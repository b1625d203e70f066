//! `make-mirror`: clientv3's mirror syncer. The keys under `--prefix` are
//! copied at one revision (pages of 1000), then every later change is
//! replayed from a watch, one Txn per source revision, so the destination
//! moves through the same states as the source. Keys are renamed with
//! `--dest-prefix` / `--no-dest-prefix`; leases are not carried over (as
//! etcdctl). The number of keys and events mirrored so far is printed every
//! 30 seconds; the command runs until stopped or until it fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{
    request_op, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
    TxnResponse, WatchCreateRequest,
};
use ferrokv_wire::pb::mvccpb::event::EventType;

use crate::client::{path, Client, ClientConfig, Tls};
use crate::ctx::{emit, Ctx};
use crate::error::{CmdError, EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR};

/// The syncer's page size.
const PAGE_KEYS: i64 = 1000;
/// How often the running total is printed (`FERROCTL_MIRROR_REPORT_MS`
/// shortens it for tests).
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// The report interval, `FERROCTL_MIRROR_REPORT_MS` if set to a positive
/// number of milliseconds (tokio's interval panics on a zero period).
fn report_every(env_ms: Option<&str>) -> Duration {
    env_ms
        .and_then(|ms| ms.parse().ok())
        .filter(|&ms| ms > 0)
        .map_or(REPORT_EVERY, Duration::from_millis)
}
/// etcdctl makes these calls without a deadline; ferroctl bounds each.
const CALL_TIMEOUT_MAX: Duration = Duration::from_secs(300);
/// Pause before a lost watch stream is opened again.
const WATCH_RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// How source keys are named in the destination (Go's
/// `strings.Replace(key, prefix, dest, 1)`).
#[derive(Clone, Debug)]
struct Rename {
    prefix: Vec<u8>,
    dest: Vec<u8>,
}

impl Rename {
    fn apply(&self, key: &[u8]) -> Bytes {
        if self.prefix.is_empty() {
            return [self.dest.as_slice(), key].concat().into();
        }
        match key
            .windows(self.prefix.len())
            .position(|w| w == self.prefix.as_slice())
        {
            Some(at) => [
                &key[..at],
                self.dest.as_slice(),
                &key[at + self.prefix.len()..],
            ]
            .concat()
            .into(),
            None => Bytes::copy_from_slice(key),
        }
    }
}

pub async fn make_mirror(ctx: Ctx) -> Result<(), CmdError> {
    let [dest] = ctx.inv.args.as_slice() else {
        return Err(CmdError::bad_args(
            "make-mirror takes one destination argument",
        ));
    };
    let prefix = ctx.inv.string("prefix").into_bytes();
    let dest_prefix = ctx.inv.string("dest-prefix").into_bytes();
    let no_dest_prefix = ctx.inv.bool("no-dest-prefix");
    let file = |name: &str| {
        let v = ctx.inv.string(name);
        (!v.is_empty()).then_some(v)
    };
    let tls = Tls {
        cacert: file("dest-cacert"),
        cert: file("dest-cert"),
        key: file("dest-key"),
        skip_verify: false,
    };
    let dest_config = ClientConfig {
        endpoints: vec![dest.clone()],
        tls: (tls != Tls::default() || !ctx.inv.bool("dest-insecure-transport")).then_some(tls),
        ..ctx.config.clone()
    };
    let dest = Client::connect(&dest_config)
        .await
        .map_err(|e| CmdError::new(EXIT_BAD_CONNECTION, e))?;
    let source = ctx.client().await?;
    if no_dest_prefix && !dest_prefix.is_empty() {
        return Err(CmdError::new(
            EXIT_BAD_ARGS,
            "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one",
        ));
    }
    let rename = Rename {
        dest: if no_dest_prefix || !dest_prefix.is_empty() {
            dest_prefix
        } else {
            prefix.clone()
        },
        prefix,
    };
    let total = Arc::new(AtomicU64::new(0));
    let reporter = {
        let total = total.clone();
        let every = report_every(std::env::var("FERROCTL_MIRROR_REPORT_MS").ok().as_deref());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticker.tick().await;
                if emit(format!("{}\n", total.load(Ordering::Relaxed)).as_bytes()).is_err() {
                    return;
                }
            }
        })
    };
    let result = mirror(&source, &dest, &rename, &total).await;
    reporter.abort();
    result
}

fn rpc_error(e: &crate::client::RpcError, client: &Client) -> CmdError {
    CmdError::rpc(e, client.endpoint())
}

async fn mirror(
    source: &Client,
    dest: &Client,
    rename: &Rename,
    total: &AtomicU64,
) -> Result<(), CmdError> {
    // The syncer's base revision: whatever revision a read answers at.
    let probe: RangeResponse = source
        .unary(
            path::RANGE,
            RangeRequest {
                key: Bytes::from_static(b"foo"),
                ..Default::default()
            },
            CALL_TIMEOUT_MAX,
        )
        .await
        .map_err(|e| rpc_error(&e, source))?;
    let rev = probe.header.map_or(0, |h| h.revision);
    let (mut key, range_end) = super::kv::prefix_range(&rename.prefix);
    loop {
        let page: RangeResponse = source
            .unary(
                path::RANGE,
                RangeRequest {
                    key: key.clone().into(),
                    range_end: range_end.clone().into(),
                    limit: PAGE_KEYS,
                    revision: rev,
                    ..Default::default()
                },
                CALL_TIMEOUT_MAX,
            )
            .await
            .map_err(|e| rpc_error(&e, source))?;
        for kv in &page.kvs {
            let put = PutRequest {
                key: rename.apply(&kv.key),
                value: kv.value.clone(),
                ..Default::default()
            };
            dest.unary::<_, ferrokv_wire::pb::etcdserverpb::PutResponse>(
                path::PUT,
                put,
                CALL_TIMEOUT_MAX,
            )
            .await
            .map_err(|e| rpc_error(&e, dest))?;
            total.fetch_add(1, Ordering::Relaxed);
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                key = [last.key.as_ref(), b"\0"].concat();
            }
            _ => break,
        }
    }
    follow(source, dest, rename, total, rev + 1).await
}

/// Replays every change from `start` on, one destination Txn per source
/// revision; a lost stream is reopened after the last revision applied.
async fn follow(
    source: &Client,
    dest: &Client,
    rename: &Rename,
    total: &AtomicU64,
    mut start: i64,
) -> Result<(), CmdError> {
    let (key, range_end) = super::kv::prefix_range(&rename.prefix);
    loop {
        let create = WatchCreateRequest {
            key: key.clone().into(),
            range_end: range_end.clone().into(),
            start_revision: start,
            ..Default::default()
        };
        let Some((_tx, mut rx)) = source.watch(create).await else {
            return Err(CmdError::error("watch stream closed"));
        };
        while let Some(msg) = rx.recv().await {
            let resp = match msg {
                Ok(r) => r,
                Err(e) if e.is_transient() => break,
                Err(e) => return Err(CmdError::new(EXIT_ERROR, e.message())),
            };
            if resp.compact_revision != 0 {
                return Err(CmdError::new(
                    EXIT_ERROR,
                    "etcdserver: mvcc: required revision has been compacted",
                ));
            }
            if resp.canceled {
                return Err(CmdError::new(EXIT_ERROR, resp.cancel_reason));
            }
            let mut ops = Vec::new();
            let mut ops_rev = 0;
            for ev in &resp.events {
                let Some(kv) = &ev.kv else { continue };
                if ops_rev != 0 && kv.mod_revision > ops_rev {
                    apply(dest, std::mem::take(&mut ops)).await?;
                    start = ops_rev + 1;
                }
                ops_rev = kv.mod_revision;
                let request = if ev.r#type == EventType::Delete as i32 {
                    request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                        key: rename.apply(&kv.key),
                        ..Default::default()
                    })
                } else {
                    request_op::Request::RequestPut(PutRequest {
                        key: rename.apply(&kv.key),
                        value: kv.value.clone(),
                        ..Default::default()
                    })
                };
                ops.push(RequestOp {
                    request: Some(request),
                });
                total.fetch_add(1, Ordering::Relaxed);
            }
            if !ops.is_empty() {
                apply(dest, ops).await?;
                start = ops_rev + 1;
            }
        }
        // As clientv3's watcher: a lost stream is opened again where it
        // stopped, for as long as it takes.
        tokio::time::sleep(WATCH_RECONNECT_PAUSE).await;
        source.fail_over();
    }
}

async fn apply(dest: &Client, ops: Vec<RequestOp>) -> Result<(), CmdError> {
    let txn = TxnRequest {
        success: ops,
        ..Default::default()
    };
    dest.unary::<_, TxnResponse>(path::TXN, txn, CALL_TIMEOUT_MAX)
        .await
        .map(|_| ())
        .map_err(|e| rpc_error(&e, dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rename(prefix: &str, dest: &str, key: &str) -> String {
        let r = Rename {
            prefix: prefix.into(),
            dest: dest.into(),
        };
        String::from_utf8(r.apply(key.as_bytes()).to_vec()).unwrap()
    }

    #[test]
    fn a_zero_or_bad_report_interval_is_the_default() {
        assert_eq!(report_every(None), REPORT_EVERY);
        assert_eq!(report_every(Some("0")), REPORT_EVERY);
        assert_eq!(report_every(Some("soon")), REPORT_EVERY);
        assert_eq!(report_every(Some("250")), Duration::from_millis(250));
    }

    #[test]
    fn keys_are_renamed_as_go_strings_replace_once() {
        assert_eq!(rename("", "", "/a/b"), "/a/b");
        assert_eq!(rename("", "x", "/a/b"), "x/a/b");
        assert_eq!(rename("/a/", "/z/", "/a/b/a/"), "/z/b/a/");
        assert_eq!(rename("/a/", "", "/a/b"), "b");
        assert_eq!(rename("/a/", "/a/", "/a/b"), "/a/b");
    }
}
