//! lease grant / revoke / timetolive / list / keep-alive.

use std::time::Duration;

use ferrokv_wire::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

use crate::client::{path, Client, RpcError};
use crate::ctx::{emit, Ctx};
use crate::error::{CmdError, EXIT_BAD_CONNECTION};
use crate::printer::Format;

/// etcdctl's `leaseFromArgs`: a hex lease id.
pub fn lease_from_arg(arg: &str) -> Result<i64, CmdError> {
    super::kv::parse_hex_id(arg)
        .map_err(|e| CmdError::bad_args(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

/// etcdctl calls the lease RPCs other than grant and revoke without a
/// deadline (`context.TODO()`); ferroctl bounds them anyway, generously.
const LEASE_CALL_TIMEOUT_MAX: Duration = Duration::from_secs(300);

/// Pause before a keep-alive stream that lost its server is reopened.
pub const KEEP_ALIVE_RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// etcd's `MaxLeaseTTL`: no server grants a longer lease.
const LEASE_TTL_MAX_S: u64 = 9_000_000_000;

/// Until when a renewal the server answered with `ttl_s` holds, from now.
/// The TTL is the server's word: one past etcd's maximum (a faulty or
/// hostile server's `i64::MAX`) is clamped, since an `Instant` that far
/// ahead overflows and would panic the client.
pub fn renewal_deadline(ttl_s: i64) -> tokio::time::Instant {
    let ttl_s = u64::try_from(ttl_s).unwrap_or(0).min(LEASE_TTL_MAX_S);
    tokio::time::Instant::now() + Duration::from_secs(ttl_s)
}

pub async fn grant(ctx: Ctx) -> Result<(), CmdError> {
    if ctx.inv.args.len() != 1 {
        return Err(CmdError::bad_args("lease grant command needs TTL argument"));
    }
    let ttl = super::kv::parse_decimal(&ctx.inv.args[0])
        .map_err(|e| CmdError::bad_args(format!("bad TTL ({e})")))?;
    let client = ctx.client().await?;
    let resp: LeaseGrantResponse = client
        .unary(
            path::LEASE_GRANT,
            LeaseGrantRequest { ttl, id: 0 },
            ctx.command_timeout,
        )
        .await
        .map_err(|e| {
            CmdError::rpc_wrapped(&e, client.endpoint(), |m| {
                format!("failed to grant lease ({m})")
            })
        })?;
    emit(&ctx.printer.grant(&resp)?)
}

pub async fn revoke(ctx: Ctx) -> Result<(), CmdError> {
    if ctx.inv.args.len() != 1 {
        return Err(CmdError::bad_args("lease revoke command needs 1 argument"));
    }
    let id = lease_from_arg(&ctx.inv.args[0])?;
    let client = ctx.client().await?;
    let resp: LeaseRevokeResponse = client
        .unary(
            path::LEASE_REVOKE,
            LeaseRevokeRequest { id },
            ctx.command_timeout,
        )
        .await
        .map_err(|e| {
            CmdError::rpc_wrapped(&e, client.endpoint(), |m| {
                format!("failed to revoke lease ({m})")
            })
        })?;
    emit(&ctx.printer.revoke(id, &resp)?)
}

pub async fn time_to_live(ctx: Ctx) -> Result<(), CmdError> {
    if ctx.inv.args.len() != 1 {
        return Err(CmdError::bad_args(
            "lease timetolive command needs lease ID as argument",
        ));
    }
    let keys = ctx.inv.bool("keys");
    let id = lease_from_arg(&ctx.inv.args[0])?;
    let client = ctx.client().await?;
    let resp: LeaseTimeToLiveResponse = client
        .unary(
            path::LEASE_TIME_TO_LIVE,
            LeaseTimeToLiveRequest { id, keys },
            LEASE_CALL_TIMEOUT_MAX,
        )
        .await
        .map_err(|e| bad_connection(&e, &client))?;
    emit(&ctx.printer.time_to_live(&resp, keys)?)
}

fn bad_connection(e: &RpcError, client: &Client) -> CmdError {
    let mut err = CmdError::rpc(e, client.endpoint());
    err.code = EXIT_BAD_CONNECTION;
    err
}

pub async fn list(ctx: Ctx) -> Result<(), CmdError> {
    let client = ctx.client().await?;
    let resp: LeaseLeasesResponse = client
        .unary(
            path::LEASE_LEASES,
            LeaseLeasesRequest {},
            LEASE_CALL_TIMEOUT_MAX,
        )
        .await
        .map_err(|e| bad_connection(&e, &client))?;
    emit(&ctx.printer.leases(&resp)?)
}

pub async fn keep_alive(ctx: Ctx) -> Result<(), CmdError> {
    if ctx.inv.args.len() != 1 {
        return Err(CmdError::bad_args(
            "lease keep-alive command needs lease ID as argument",
        ));
    }
    let id = lease_from_arg(&ctx.inv.args[0])?;
    let client = ctx.client().await?;
    let stream_err = |e: RpcError| CmdError::new(EXIT_BAD_CONNECTION, e.message());
    let (tx, mut rx) =
        client.bidi::<LeaseKeepAliveRequest, LeaseKeepAliveResponse>(path::LEASE_KEEP_ALIVE);
    let not_found = || CmdError::new(EXIT_BAD_CONNECTION, "etcdserver: requested lease not found");
    if ctx.inv.bool("once") {
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            return Err(not_found());
        }
        let resp = match tokio::time::timeout(ctx.command_timeout, rx.recv()).await {
            Ok(Some(r)) => r.map_err(stream_err)?,
            Ok(None) => return Err(not_found()),
            Err(_) => {
                return Err(CmdError::new(
                    EXIT_BAD_CONNECTION,
                    "context deadline exceeded",
                ))
            }
        };
        if resp.ttl <= 0 {
            return Err(not_found());
        }
        return emit(&ctx.printer.keep_alive(&resp)?);
    }
    // clientv3 renews every TTL/3 (at least every 500ms) until the lease
    // is gone, then the loop ends.
    let (mut tx, mut rx) = (tx, rx);
    let mut next_send = tokio::time::Instant::now();
    // As clientv3: the lease is given up once its TTL has passed since the
    // last renewal; until then a lost stream is reopened (to the next
    // endpoint, if any).
    let mut renewed_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep_until(next_send).await;
        let answer = if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            None
        } else {
            match tokio::time::timeout(ctx.command_timeout, rx.recv()).await {
                Ok(Some(Ok(r))) => Some(r),
                Ok(Some(Err(e))) if !e.is_transient() => return Err(stream_err(e)),
                _ => None,
            }
        };
        let Some(resp) = answer else {
            match renewed_until {
                Some(until) if tokio::time::Instant::now() < until => {
                    client.fail_over();
                    (tx, rx) = client.bidi::<LeaseKeepAliveRequest, LeaseKeepAliveResponse>(
                        path::LEASE_KEEP_ALIVE,
                    );
                    next_send = tokio::time::Instant::now() + KEEP_ALIVE_RECONNECT_PAUSE;
                    continue;
                }
                _ => break,
            }
        };
        if resp.ttl <= 0 {
            break;
        }
        emit(&ctx.printer.keep_alive(&resp)?)?;
        renewed_until = Some(renewal_deadline(resp.ttl));
        let every = Duration::from_millis(((resp.ttl as u64).saturating_mul(1000) / 3).max(500));
        next_send = tokio::time::Instant::now() + every;
    }
    if ctx.printer.format == Format::Simple {
        emit(format!("lease {id:016x} expired or revoked.\n").as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_ttl_past_etcds_maximum_is_no_panic() {
        let now = tokio::time::Instant::now();
        let far = renewal_deadline(i64::MAX);
        assert!(far >= now + Duration::from_secs(LEASE_TTL_MAX_S));
        assert!(far < now + Duration::from_secs(LEASE_TTL_MAX_S + 60));
        assert!(renewal_deadline(-1) < now + Duration::from_secs(60));
    }
}
